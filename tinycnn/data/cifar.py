"""CIFAR-10 from its binary version (never the pickled one: no pickle is ever loaded).

Binary format: each ``.bin`` file is a run of 3,073-byte records with no header, one
label byte (0..9) then 1,024 red, 1,024 green and 1,024 blue bytes, each plane 32x32
row by row. ``data_batch_1..5.bin`` hold the 50,000 training images, ``test_batch.bin``
the 10,000 test images.

Batches are read from ``root/cifar-10/cifar-10-batches-bin/``, ``root/cifar-10-batches-bin/``,
or straight from the members of ``cifar-10-binary.tar.gz`` (in ``root/cifar-10/`` or
``root``). When ``test_batch.bin`` is absent but ``partial-test/test_batch_first1000.bin``
is present (the shared data of this project), that partial test set is loaded with a
:class:`~tinycnn.data.dataset.DatasetWarning`.
"""

from __future__ import annotations

import os
import tarfile
import warnings
from pathlib import Path

import numpy as np

from tinycnn.data.dataset import (
    ArrayDataset,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetWarning,
    train_val_split,
)
from tinycnn.data.download import DownloadError, data_root, download_file, manual_fix

__all__ = ["CIFAR10", "parse_cifar_batch", "train_val_split"]

RECORD = 1 + 3 * 32 * 32
BATCH_RECORDS = 10_000
ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_SIZE = 170_052_171
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
PARTIAL_TEST = ("partial-test", "test_batch_first1000.bin", "test_labels.bin")


def parse_cifar_batch(raw: bytes, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Records to ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``.

    Raises :class:`DatasetFormatError` when the size is not a whole number of 3,073-byte
    records or a label byte is outside 0..9.
    """
    if len(raw) == 0 or len(raw) % RECORD:
        raise DatasetFormatError(
            f"{source}: {len(raw)} bytes is not a whole number of {RECORD}-byte CIFAR-10 "
            f"records ({len(raw) // RECORD} records and {len(raw) % RECORD} bytes left over); "
            "the file is truncated or not a CIFAR-10 binary batch"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.flatnonzero(labels > 9)[0])
        raise DatasetFormatError(f"{source}: record {bad} has label byte {labels[bad]}, "
                                 "expected 0..9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()
    return images, labels


def _check_batch_size(size: int, source: str) -> None:
    """Refuse a batch larger than any real one before reading it into memory."""
    if size > BATCH_RECORDS * RECORD:
        raise DatasetFormatError(f"{source}: {size:,} bytes, more than the {BATCH_RECORDS:,} "
                                 "records of a CIFAR-10 batch; not a CIFAR-10 binary batch")


class CIFAR10(ArrayDataset):
    """CIFAR-10: ``data`` uint8 ``(N, 3, 32, 32)``, ``targets`` int64 ``(N,)``.

    ``train=True`` gives the 50,000 training images, ``train=False`` the 10,000 test
    images (or the 1,000-image partial test set, with a warning; ``is_partial`` then says
    so). ``download=True`` fetches ``cifar-10-binary.tar.gz`` (md5-checked) into
    ``root/cifar-10/`` and reads its members. Use :func:`train_val_split` for a
    validation set held out from the training images.
    """

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck"]

    def __init__(self, root: str | os.PathLike | None = None, train: bool = True,
                 download: bool = False) -> None:
        self.root = data_root(root)
        self.train = train
        self.is_partial = False
        self.search_dirs = [self.root / "cifar-10" / "cifar-10-batches-bin",
                            self.root / "cifar-10-batches-bin"]
        names = TRAIN_FILES if train else (TEST_FILE,)
        raws = self._read_all(names)
        if raws is None and download:
            try:
                self._fetch_archive()
                raws = self._read_all(names)
            except DatasetNotFoundError:
                if train or self._read_partial(probe=True) is None:
                    raise
        if raws is None and not train:
            partial = self._read_partial()
            if partial is not None:
                super().__init__(*partial)
                return
        if raws is None:
            raise DatasetNotFoundError(
                self._not_found_message(names), dataset="cifar10", folder=self.root / "cifar-10",
                missing=[ARCHIVE], searched=self.search_dirs)
        parts = [parse_cifar_batch(raw, src) for src, raw in raws]
        super().__init__(np.concatenate([p[0] for p in parts]),
                         np.concatenate([p[1] for p in parts]))

    def _archives(self) -> list[Path]:
        return [p for p in (self.root / "cifar-10" / ARCHIVE, self.root / ARCHIVE) if p.is_file()]

    def _read_all(self, names: tuple[str, ...]) -> list[tuple[str, bytes]] | None:
        """``(source, bytes)`` of every named batch, from one folder or one archive, or None."""
        for folder in self.search_dirs:
            if all((folder / n).is_file() for n in names):
                self.source = str(folder)
                for n in names:
                    _check_batch_size((folder / n).stat().st_size, str(folder / n))
                return [(str(folder / n), (folder / n).read_bytes()) for n in names]
        for archive in self._archives():
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    # Members are read by name, never extracted: no archive path is trusted.
                    members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                    if all(n in members for n in names):
                        for n in names:
                            _check_batch_size(members[n].size, f"{archive}:{members[n].name}")
                        self.source = str(archive)
                        return [(f"{archive}:{members[n].name}",
                                 tar.extractfile(members[n]).read()) for n in names]
            except (tarfile.TarError, OSError, EOFError) as exc:
                # A truncated or foreign archive put there by hand: say which file, no traceback.
                raise DatasetFormatError(f"{archive}: not a readable {ARCHIVE} ({exc}); delete "
                                         "it and fetch it again") from exc
        return None

    def _read_partial(self, probe: bool = False) -> tuple[np.ndarray, np.ndarray] | Path | None:
        """The partial test set (with a warning), or only its path when ``probe``."""
        folder_name, images_name, labels_name = PARTIAL_TEST
        for folder in (self.root / "cifar-10" / folder_name, self.root / folder_name):
            path = folder / images_name
            if not path.is_file():
                continue
            if probe:
                return path
            images, labels = parse_cifar_batch(path.read_bytes(), str(path))
            all_labels = folder / labels_name
            if all_labels.is_file():
                canonical = np.frombuffer(all_labels.read_bytes(), dtype=np.uint8)
                if not np.array_equal(canonical[: len(labels)], labels):
                    raise DatasetFormatError(f"{path}: its labels disagree with the first "
                                             f"{len(labels)} labels in {all_labels}")
            warnings.warn(
                f"CIFAR-10 {TEST_FILE} not found in {', '.join(map(str, self.search_dirs))} "
                f"or a {ARCHIVE}; loading the PARTIAL test set {path} instead: only the first "
                f"{len(labels)} of the 10,000 test images. Accuracy on it is not the "
                "standard CIFAR-10 test accuracy.",
                DatasetWarning, stacklevel=3,
            )
            self.is_partial = True
            self.source = str(path)
            return images, labels
        return None

    def _fetch_archive(self) -> None:
        dest = self.root / "cifar-10" / ARCHIVE
        try:
            download_file(ARCHIVE_URLS, dest, md5=ARCHIVE_MD5, size=ARCHIVE_SIZE)
        except DownloadError as exc:
            raise DatasetNotFoundError(
                f"CIFAR-10 could not be downloaded:\n{exc}", dataset="cifar10",
                folder=self.root / "cifar-10", missing=[ARCHIVE],
                searched=self.search_dirs, download_error=exc) from exc

    def _not_found_message(self, names: tuple[str, ...]) -> str:
        split = "training" if self.train else "test"
        where = ", ".join(str(d) for d in self.search_dirs)
        archives = f"{self.root / 'cifar-10' / ARCHIVE}, {self.root / ARCHIVE}"
        return (
            f"CIFAR-10 {split} set not found: looked for {', '.join(names)} in {where}, and "
            f"inside {archives}. Pass download=True to fetch it.\n"
            + manual_fix([(ARCHIVE, ARCHIVE_URLS, ARCHIVE_MD5)], self.root / "cifar-10")
            + f"\n(or its extracted folder cifar-10-batches-bin/ in {self.root / 'cifar-10'})"
        )

    def __repr__(self) -> str:
        split = "train" if self.train else ("partial test" if self.is_partial else "test")
        return f"CIFAR10({split}, n={len(self)}, source={self.source!r})"
