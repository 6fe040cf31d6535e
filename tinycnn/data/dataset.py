"""In-memory datasets: the common base, errors, and a seeded train/validation split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class DatasetFormatError(ValueError):
    """A dataset file is not in the format it claims (bad magic, wrong size, bad labels)."""


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where tinycnn looked; the message says where to put them.

    Besides the message (worded for Python users), the attributes let a front end such as
    the command line word its own advice: ``dataset`` (``"mnist"``, ``"fashion-mnist"``,
    ``"cifar10"``), ``folder`` (where the files belong), ``missing`` (file names),
    ``searched`` (folders looked in) and ``download_error`` (the failed download, if one was
    tried).
    """

    def __init__(self, message: str, *, dataset: str | None = None, folder: Any = None,
                 missing: Sequence[str] = (), searched: Sequence[Any] = (),
                 download_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.folder = folder
        self.missing = list(missing)
        self.searched = list(searched)
        self.download_error = download_error

    __str__ = BaseException.__str__  # OSError's own would print the args tuple's first item


class DatasetWarning(UserWarning):
    """Loading went ahead with less than what was asked (embedded subset, partial test set)."""


class ArrayDataset:
    """Images and labels held in memory.

    ``data``: uint8 ``(N, C, H, W)`` (``(N, H, W)`` gets a channel axis); ``targets``:
    int64 ``(N,)``. Indexing with an int gives ``(image (C, H, W), label int)``; with a
    slice or an index array it gives the two arrays. Every dataset in :mod:`tinycnn.data`
    is one of these.
    """

    classes: list[str] = []

    def __init__(self, data: Any, targets: Any, classes: list[str] | None = None) -> None:
        data = np.asarray(data)
        targets = np.asarray(targets, dtype=np.int64)
        if data.ndim == 3:  # (N, H, W) grayscale: add the channel axis
            data = data[:, None]
        if data.ndim != 4 or targets.ndim != 1 or len(data) != len(targets):
            raise ValueError(
                f"{type(self).__name__}: expected data (N, C, H, W) and targets (N,), got "
                f"data {data.shape} and targets {targets.shape}"
            )
        self.data = data
        self.targets = targets
        if classes is not None:
            self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: Any) -> tuple[Any, Any]:
        if isinstance(index, (int, np.integer)):
            return self.data[index], int(self.targets[index])
        return self.data[index], self.targets[index]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, image shape={tuple(self.data.shape[1:])}, "
                f"classes={len(self.classes)})")


def as_arrays(dataset_or_arrays: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(data, targets)`` from a dataset with ``.data``/``.targets`` or an ``(X, y)`` pair."""
    if hasattr(dataset_or_arrays, "data") and hasattr(dataset_or_arrays, "targets"):
        return np.asarray(dataset_or_arrays.data), np.asarray(dataset_or_arrays.targets)
    if isinstance(dataset_or_arrays, (tuple, list)) and len(dataset_or_arrays) == 2:
        x, y = dataset_or_arrays
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"X and y differ in length: {len(x)} images, {len(y)} labels")
        return x, y
    raise TypeError(
        "expected a dataset with .data and .targets, or an (X, y) pair of arrays; got "
        f"{type(dataset_or_arrays).__name__}"
    )


def train_val_split(
    dataset_or_arrays: Any,
    val_size: int | float,
    seed: int | None = 0,
    stratify: bool = False,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Hold out a validation set from a training set: ``(train, val)`` datasets.

    ``val_size``: a number of images, or a fraction in (0, 1). The split is a seeded
    random permutation (the same seed gives the same split); ``stratify=True`` takes
    the same fraction from every class instead. Both parts keep the order of the source.
    """
    x, y = as_arrays(dataset_or_arrays)
    n = len(y)
    n_val = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if not 0 < n_val < n:
        raise ValueError(f"val_size={val_size!r} gives {n_val} of {n} images; need 0 < val < {n}")
    rng = np.random.default_rng(seed)
    if stratify:
        labels = np.unique(y)
        # Largest-remainder share per class so the sizes add up to n_val exactly.
        counts = np.array([np.sum(y == c) for c in labels])
        exact = counts * n_val / n
        take = np.floor(exact).astype(np.int64)
        extra = np.argsort(-(exact - take), kind="stable")[: n_val - take.sum()]
        take[extra] += 1
        val_idx = np.concatenate([
            rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(labels, take, strict=True)
        ])
    else:
        val_idx = rng.permutation(n)[:n_val]
    is_val = np.zeros(n, dtype=bool)
    is_val[val_idx] = True
    classes = getattr(dataset_or_arrays, "classes", None)
    train = ArrayDataset(x[~is_val], y[~is_val], classes)
    val = ArrayDataset(x[is_val], y[is_val], classes)
    return train, val
