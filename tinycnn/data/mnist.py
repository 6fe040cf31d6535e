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
from pathlib import Path
from typing import Any

import numpy as np

from tinycnn.data.dataset import (
    ArrayDataset,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetWarning,
)
from tinycnn.data.download import DownloadError, data_root, download, manual_fix

IDX_IMAGES = 2051
IDX_LABELS = 2049
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

EMBEDDED_PATH = Path(__file__).resolve().parent / "embedded" / "mnist_subset.npz"


def read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes, gunzipped when it is gzip data (told by its magic, not its name)."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: broken gzip data ({exc}); delete it and fetch it "
                                 "again") from exc


def parse_idx(raw: bytes, source: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Decode IDX bytes into a native-endian array of the shape the header gives.

    ``magic``: the magic number required (2051 images, 2049 labels), or None for any.
    Raises :class:`DatasetFormatError` for a bad magic, a short header, or a body whose
    size differs from what the header promises.
    """
    if len(raw) < 4:
        raise DatasetFormatError(f"{source}: {len(raw)} bytes is too short for an IDX header")
    got_magic = int.from_bytes(raw[:4], "big")
    type_code, ndim = raw[2], raw[3]
    if magic is not None and got_magic != magic:
        raise DatasetFormatError(
            f"{source}: IDX magic number {got_magic} (0x{got_magic:08x}), expected {magic} "
            f"(0x{magic:08x}); this is not an IDX "
            f"{'image' if magic == IDX_IMAGES else 'label'} file"
        )
    if raw[:2] != b"\x00\x00" or type_code not in _IDX_TYPES or ndim == 0:
        raise DatasetFormatError(f"{source}: not an IDX file (magic 0x{got_magic:08x})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{source}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(raw) - header
    if body != expected:
        what = "truncated" if body < expected else "too long"
        raise DatasetFormatError(
            f"{source}: {what}: the header says shape {dims} ({expected} bytes of data) but "
            f"the file holds {body} bytes after the header"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Read an IDX file, gzipped or not; see :func:`parse_idx`."""
    return parse_idx(read_bytes(path), str(path), magic)


def load_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike,
                  num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 1, H, W)`` uint8 and labels ``(N,)`` int64 from an IDX pair, cross-checked."""
    images = read_idx(images_path, IDX_IMAGES)
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
    folder = ""
    urls: tuple[str, ...] = ()
    md5s: dict[str, str] = {}

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
                raise DatasetNotFoundError(message)
            warnings.warn(
                f"{message}\nUsing the embedded MNIST subset instead (10,000 training / "
                f"2,000 test images): results are not comparable with full-MNIST figures.",
                DatasetWarning, stacklevel=2,
            )
            images, labels = load_embedded_mnist(train)
            self.source = "embedded"
        else:
            images, labels = load_idx_pair(*found, num_classes=len(self.classes))
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
        return download([u + filename for u in self.urls], self.root / self.folder / filename,
                        md5=self.md5s[filename])

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


class FashionMNIST(_IDXDataset):
    """Zalando's Fashion-MNIST, same format and shapes as :class:`MNIST` (no embedded subset)."""

    name = "Fashion-MNIST"
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


def load_mnist(root: str | os.PathLike | None = None, train: bool = True,
               allow_embedded: bool = True, download: bool = False) -> MNIST:
    """Full MNIST when its files are found, else (``allow_embedded``) the embedded subset.

    The fallback emits a :class:`DatasetWarning` naming the missing files and the folders
    searched; check ``dataset.is_subset`` to know which one you got.
    """
    kwargs: dict[str, Any] = {"fallback": "embedded"} if allow_embedded else {}
    return MNIST(root, train=train, download=download, **kwargs)
