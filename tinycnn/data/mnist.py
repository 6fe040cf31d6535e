"""MNIST and Fashion-MNIST from their IDX files, with an embedded MNIST subset as fallback.

Files are looked for in ``root/mnist/`` (``root/fashion-mnist/``) and in ``root`` itself,
either as the canonical ``.gz`` downloads or already extracted. ``root`` defaults to
``$TINYCNN_DATA``, else the per-user cache (see :func:`tinycnn.data.download.data_root`).

IDX format (all integers big-endian): magic ``0x0000TTDD`` (``TT`` element type, ``DD``
number of dimensions), then one uint32 per dimension, then the elements in C order.
Images are magic 2051 ``(N, 28, 28)`` uint8, labels magic 2049 ``(N,)`` uint8.
"""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from tinycnn.data.dataset import (
    ArrayDataset,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetWarning,
)
from tinycnn.data.download import DownloadError, data_root, download_file, manual_fix

IDX_IMAGES = 2051
IDX_LABELS = 2049
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

EMBEDDED_PATH = Path(__file__).resolve().parent / "embedded" / "mnist_subset.npz"


# Deflate shrinks data at most about 1,032-fold: a .gz whose header announces more than
# this many bytes per compressed byte cannot hold what it promises.
_MAX_GZIP_RATIO = 1100


def _idx_header(first4: bytes, source: str, magic: int | None) -> tuple[np.dtype, int]:
    """Check the 4 magic bytes; return the element dtype and the number of dimensions."""
    if len(first4) < 4:
        raise DatasetFormatError(f"{source}: {len(first4)} bytes is too short for an IDX header")
    got_magic = int.from_bytes(first4[:4], "big")
    type_code, ndim = first4[2], first4[3]
    if magic is not None and got_magic != magic:
        raise DatasetFormatError(
            f"{source}: IDX magic number {got_magic} (0x{got_magic:08x}), expected {magic} "
            f"(0x{magic:08x}); this is not an IDX "
            f"{'image' if magic == IDX_IMAGES else 'label'} file"
        )
    if first4[:2] != b"\x00\x00" or type_code not in _IDX_TYPES or ndim == 0:
        raise DatasetFormatError(f"{source}: not an IDX file (magic 0x{got_magic:08x})")
    return np.dtype(_IDX_TYPES[type_code]), ndim


def _idx_dims(raw: bytes, ndim: int, source: str) -> tuple[int, ...]:
    if len(raw) < 4 * ndim:
        raise DatasetFormatError(f"{source}: truncated IDX header ({4 + len(raw)} of "
                                 f"{4 + 4 * ndim} bytes)")
    return tuple(int.from_bytes(raw[4 * i: 4 * i + 4], "big") for i in range(ndim))


def _check_item_shape(dims: tuple[int, ...], item_shape: Sequence[int] | None,
                      source: str) -> None:
    if item_shape is not None and tuple(dims[1:]) != tuple(item_shape):
        raise DatasetFormatError(
            f"{source}: items of shape {tuple(dims[1:])}, expected {tuple(item_shape)}; the file "
            "holds another dataset than its name says"
        )


def _size_mismatch(source: str, dims: tuple[int, ...], expected: int, body: int) -> str:
    what = "truncated" if body < expected else "too long"
    return (f"{source}: {what}: the header says shape {dims} ({expected} bytes of data) but "
            f"the file holds {body} bytes after the header")


def parse_idx(raw: bytes, source: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Decode IDX bytes into a native-endian array of the shape the header gives.

    ``magic``: the magic number required (2051 images, 2049 labels), or None for any.
    Raises :class:`DatasetFormatError` for a bad magic, a short header, or a body whose
    size differs from what the header promises.
    """
    dtype, ndim = _idx_header(raw[:4], source, magic)
    dims = _idx_dims(raw[4: 4 + 4 * ndim], ndim, source)
    header = 4 + 4 * ndim
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(raw) - header
    if body != expected:
        raise DatasetFormatError(_size_mismatch(source, dims, expected, body))
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _read_exactly(stream: IO[bytes], n: int) -> bytearray:
    """Up to ``n`` bytes in 1 MiB reads: never more memory than the header announced."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        count = stream.readinto(view[got: got + (1 << 20)])  # type: ignore[attr-defined]
        if not count:
            break
        got += count
    del view
    del buf[got:]
    return buf


def read_idx(path: str | os.PathLike, magic: int | None = None,
             item_shape: Sequence[int] | None = None) -> np.ndarray:
    """Read an IDX file, gzipped or not (told by its magic bytes, not its name).

    The header is checked before the body is read, and the body is streamed into an array
    of the size the header announces, never more: a corrupt or hostile file fails fast
    without inflating gigabytes. ``item_shape``: the shape every item must have (e.g.
    ``(28, 28)``), checked from the header too. Raises :class:`DatasetFormatError`.
    """
    path = Path(path)
    source = str(path)
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        try:
            stream: IO[bytes] = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
            dtype, ndim = _idx_header(stream.read(4), source, magic)
            dims = _idx_dims(stream.read(4 * ndim), ndim, source)
            _check_item_shape(dims, item_shape, source)
            expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            header = 4 + 4 * ndim
            if not compressed and file_size - header != expected:
                raise DatasetFormatError(_size_mismatch(source, dims, expected,
                                                        file_size - header))
            if compressed and expected > _MAX_GZIP_RATIO * file_size + (1 << 20):
                raise DatasetFormatError(
                    f"{source}: truncated: the header says shape {dims} ({expected:,} bytes of "
                    f"data), more than a {file_size:,}-byte gzip file can hold")
            body = _read_exactly(stream, expected)
            extra = len(stream.read(1)) if len(body) == expected else 0
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetFormatError(f"{path}: broken gzip data ({exc}); delete it and fetch it "
                                     "again") from exc
    if len(body) != expected or extra:
        got = len(body) + extra
        raise DatasetFormatError(_size_mismatch(source, dims, expected, got) +
                                 (" or more" if extra else ""))
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def load_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike,
                  num_classes: int = 10,
                  image_shape: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 1, H, W)`` uint8 and labels ``(N,)`` int64 from an IDX pair, cross-checked.

    ``image_shape``: the ``(H, W)`` every image must have, or None for any.
    """
    images = read_idx(images_path, IDX_IMAGES, image_shape)
    labels = read_idx(labels_path, IDX_LABELS)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetFormatError(f"{images_path}: expected uint8 images (N, H, W), got "
                                 f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetFormatError(f"{labels_path}: expected uint8 labels (N,), got "
                                 f"{labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DatasetFormatError(f"{images_path} holds {len(images)} images but {labels_path} "
                                 f"holds {len(labels)} labels")
    if labels.size and labels.max() >= num_classes:
        raise DatasetFormatError(f"{labels_path}: label {int(labels.max())} outside 0.."
                                 f"{num_classes - 1}")
    return images[:, None], labels.astype(np.int64)


def load_embedded_mnist(train: bool = True,
                        path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST subset shipped with tinycnn: ``(images (N, 1, 28, 28) uint8, labels int64)``.

    Built by ``python -m tinycnn.data.build_embedded``: 10,000 training images (the first
    1,000 of each digit in file order) and 2,000 test images (the first 200 of each digit).
    """
    path = Path(path) if path is not None else EMBEDDED_PATH
    if not path.is_file():
        raise DatasetNotFoundError(
            f"the embedded MNIST subset {path} is missing; rebuild it with "
            "python -m tinycnn.data.build_embedded --source <folder with the MNIST .gz files>"
        )
    split = "train" if train else "test"
    with np.load(path, allow_pickle=False) as npz:
        images, labels = npz[f"x_{split}"], npz[f"y_{split}"]
    return images[:, None], labels.astype(np.int64)


class _IDXDataset(ArrayDataset):
    """Shared loading logic of MNIST-format datasets."""

    name = ""
    cli_name = ""
    folder = ""
    urls: tuple[str, ...] = ()
    md5s: dict[str, str] = {}
    sizes: dict[str, int] = {}

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        download: bool = False,
        fallback: str | None = None,
    ) -> None:
        if fallback not in (None, "embedded"):
            raise ValueError(f"fallback must be None or 'embedded', got {fallback!r}")
        if fallback == "embedded" and not isinstance(self, MNIST):
            raise ValueError(f"{self.name} has no embedded subset; only MNIST has one")
        self.root = data_root(root)
        self.train = train
        prefix = "train" if train else "t10k"
        stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        self.search_dirs = [self.root / self.folder, self.root]
        found = [self._locate(stem) for stem in stems]
        problem = None
        if None in found and download:
            try:
                found = [p or self._download(stem + ".gz")
                         for p, stem in zip(found, stems, strict=True)]
            except DownloadError as exc:
                problem = exc
                found = [self._locate(stem) for stem in stems]  # a file that did arrive
        if None in found or problem is not None:
            missing = [stem for p, stem in zip(found, stems, strict=True) if p is None]
            message = self._not_found_message(missing, problem)
            if fallback != "embedded":
                raise DatasetNotFoundError(
                    message, dataset=self.cli_name, folder=self.root / self.folder,
                    missing=[s + ".gz" for s in missing], searched=self.search_dirs,
                    download_error=problem)
            warnings.warn(
                f"{message}\nUsing the embedded MNIST subset instead (10,000 training / "
                f"2,000 test images): results are not comparable with full-MNIST figures.",
                DatasetWarning, stacklevel=2,
            )
            images, labels = load_embedded_mnist(train)
            self.source = "embedded"
        else:
            images, labels = load_idx_pair(*found, num_classes=len(self.classes),
                                           image_shape=(28, 28))
            self.source = str(found[0].parent)
        super().__init__(images, labels)

    @property
    def is_subset(self) -> bool:
        """True when the data is the embedded subset, not the full dataset."""
        return self.source == "embedded"

    def _locate(self, stem: str) -> Path | None:
        for folder in self.search_dirs:
            for name in (stem + ".gz", stem):
                if (folder / name).is_file():
                    return folder / name
        return None

    def _download(self, filename: str) -> Path:
        return download_file([u + filename for u in self.urls],
                             self.root / self.folder / filename, md5=self.md5s[filename],
                             size=self.sizes.get(filename))

    def _not_found_message(self, missing: list[str], problem: Exception | None) -> str:
        split = "training" if self.train else "test"
        where = ", ".join(str(d) for d in self.search_dirs)
        names = ", ".join(f"{s}(.gz)" for s in missing)
        text = f"{self.name} {split} set not found: looked for {names} in {where}."
        if problem is not None:
            attempts = getattr(problem, "attempts", str(problem))
            text += f"\nThe download failed:\n{attempts}"
        else:
            text += " Pass download=True to fetch it."
        todo = [(s + ".gz", [u + s + ".gz" for u in self.urls], self.md5s[s + ".gz"])
                for s in missing]
        text += "\n" + manual_fix(todo, self.root / self.folder)
        return text

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, n={len(self)}, source={self.source!r})"


class MNIST(_IDXDataset):
    """The MNIST digits: ``data`` uint8 ``(N, 1, 28, 28)``, ``targets`` int64 ``(N,)``.

    60,000 training / 10,000 test images. ``download=True`` fetches missing files (the
    canonical host, then a mirror, md5-checked). ``fallback="embedded"`` uses the
    subset shipped with tinycnn, with a :class:`DatasetWarning`, when the files are not
    found; ``is_subset`` then says so.
    """

    name = "MNIST"
    cli_name = "mnist"
    folder = "mnist"
    classes = [str(d) for d in range(10)]
    urls = (
        "http://yann.lecun.com/exdb/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    )
    md5s = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    sizes = {
        "train-images-idx3-ubyte.gz": 9_912_422,
        "train-labels-idx1-ubyte.gz": 28_881,
        "t10k-images-idx3-ubyte.gz": 1_648_877,
        "t10k-labels-idx1-ubyte.gz": 4_542,
    }


class FashionMNIST(_IDXDataset):
    """Zalando's Fashion-MNIST, same format and shapes as :class:`MNIST` (no embedded subset)."""

    name = "Fashion-MNIST"
    cli_name = "fashion-mnist"
    folder = "fashion-mnist"
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
    urls = (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    )
    md5s = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    sizes = {
        "train-images-idx3-ubyte.gz": 26_421_880,
        "train-labels-idx1-ubyte.gz": 29_515,
        "t10k-images-idx3-ubyte.gz": 4_422_102,
        "t10k-labels-idx1-ubyte.gz": 5_148,
    }


def load_mnist(root: str | os.PathLike | None = None, train: bool = True,
               allow_embedded: bool = True, download: bool = False) -> MNIST:
    """Full MNIST when its files are found, else (``allow_embedded``) the embedded subset.

    The fallback emits a :class:`DatasetWarning` naming the missing files and the folders
    searched; check ``dataset.is_subset`` to know which one you got.
    """
    kwargs: dict[str, Any] = {"fallback": "embedded"} if allow_embedded else {}
    return MNIST(root, train=train, download=download, **kwargs)
