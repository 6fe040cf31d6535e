"""Mini-batches for training: seeded shuffling, augmentation, normalization, prefetching.

Each batch goes through, in this order: gather the images (uint8 ``(B, C, H, W)``), convert
to float32 and scale uint8 pixels to [0, 1], apply ``transform`` (a batch augmentation
from :mod:`tinycnn.data.augment`), normalize each channel with ``(x - mean) / std``, and
move to ``device``. A background thread prepares the next ``prefetch`` batches while the
training step runs on the current one (NumPy releases the GIL inside its array loops).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.data.augment import Transform
from tinycnn.data.dataset import as_arrays

_END = object()


class _Failure:
    """An exception raised in the prefetch thread, carried over to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _images(x: np.ndarray, who: str) -> np.ndarray:
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{who}: expected images (N, C, H, W) or (N, H, W), got shape {x.shape}")
    return x


def compute_mean_std(dataset_or_arrays: Any, chunk: int = 4096) -> tuple[tuple[float, ...],
                                                                         tuple[float, ...]]:
    """Per-channel mean and std of a dataset's pixels, in [0, 1] units for uint8 images.

    Accumulated in float64 over chunks of ``chunk`` images, so the float copy of the whole
    dataset is never made. Pass the result to ``DataLoader(mean=..., std=...)``.
    """
    x, _ = as_arrays(dataset_or_arrays)
    x = _images(x, "compute_mean_std")
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    c = x.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].astype(np.float64) * scale
        total += part.sum(axis=(0, 2, 3))
        total_sq += np.square(part).sum(axis=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    var = np.maximum(total_sq / count - mean ** 2, 0.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in np.sqrt(var))


def _per_channel(value: float | Sequence[float] | None, channels: int, name: str) -> Any:
    if value is None:
        return None
    arr = np.atleast_1d(np.asarray(value, dtype=np.float32))
    if arr.ndim != 1 or len(arr) not in (1, channels):
        raise ValueError(f"DataLoader: {name} needs 1 or {channels} values (one per channel), "
                         f"got {np.shape(value)}")
    return np.broadcast_to(arr, (channels,)).reshape(1, channels, 1, 1).copy()


class DataLoader:
    """Iterate over ``(x, y)`` mini-batches: x float32 ``(B, C, H, W)``, y int64 ``(B,)``.

    ``dataset``: anything with ``.data`` and ``.targets`` (every tinycnn dataset), or an
    ``(X, y)`` pair. uint8 images are scaled to [0, 1]; float images are taken as they are.
    ``shuffle`` draws a new order every epoch from a generator seeded by ``seed``: two
    loaders with the same seed give the same sequence of epochs. ``transform`` gets the
    float batch and a generator (``transform(x, rng)`` for a
    :class:`~tinycnn.data.augment.Transform`, ``transform(x)`` for any other callable).
    ``mean``/``std``: one value per channel (or one for all), see :func:`compute_mean_std`.
    ``prefetch``: batches prepared ahead in a background thread (0: no thread).
    ``device="gpu"`` moves each batch with :func:`tinycnn.backend.to_device`.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 64,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        transform: Any = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        prefetch: int = 2,
        device: str = "cpu",
    ) -> None:
        x, y = as_arrays(dataset)
        self.x = _images(x, "DataLoader")
        self.y = np.asarray(y, dtype=np.int64)
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.transform = transform
        channels = self.x.shape[1]
        self.mean = _per_channel(mean, channels, "mean")
        self.std = _per_channel(std, channels, "std")
        if self.std is not None and np.any(self.std <= 0):
            raise ValueError(f"DataLoader: std must be > 0, got {std}")
        self.prefetch = max(int(prefetch), 0)
        self.device = backend.check_device(device)
        if self.device == "gpu":
            backend.require_gpu()  # fail here, with the reason, not inside the thread
        self.scale = np.float32(1.0 / 255.0) if self.x.dtype == np.uint8 else None
        # Independent streams for the order and for augmentation, both from one seed.
        order_seed, aug_seed = np.random.SeedSequence(seed).spawn(2)
        self._order_rng = np.random.default_rng(order_seed)
        self._aug_rng = np.random.default_rng(aug_seed)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _index_batches(self) -> list[Any]:
        n = len(self.y)
        stop = len(self) * self.batch_size if self.drop_last else n
        if self.shuffle:
            order = self._order_rng.permutation(n)
            return [order[i:i + self.batch_size] for i in range(0, stop, self.batch_size)]
        return [slice(i, min(i + self.batch_size, n)) for i in range(0, stop, self.batch_size)]

    def make_batch(self, index: Any) -> tuple[Any, Any]:
        """Build one batch from an index array or slice (what the prefetch thread runs)."""
        x = self.x[index].astype(np.float32)
        if self.scale is not None:
            x *= self.scale
        if self.transform is not None:
            if isinstance(self.transform, Transform):
                x = self.transform(x, self._aug_rng)
            else:
                x = self.transform(x)
            x = np.asarray(x, dtype=np.float32)
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        y = self.y[index]
        if self.device == "gpu":
            return backend.to_device(x, "gpu"), backend.to_device(y, "gpu")
        return x, y

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        batches = self._index_batches()  # drawn here, so the order never depends on threads
        if self.prefetch == 0:
            return (self.make_batch(b) for b in batches)
        return self._prefetched(batches)

    def _prefetched(self, batches: list[Any]) -> Iterator[tuple[Any, Any]]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: Any) -> bool:
            # Wait for room, but give up as soon as the consumer has gone away.
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for b in batches:
                    if not put(self.make_batch(b)):
                        return
                put(_END)
            except BaseException as exc:  # handed to the consumer, raised there
                put(_Failure(exc))

        worker = threading.Thread(target=work, name="tinycnn-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            # Runs on normal end, on an exception, and when the loop breaks early
            # (the generator is closed): stop the worker and wait for it.
            stop.set()
            worker.join()

    def __repr__(self) -> str:
        return (f"DataLoader(n={len(self.y)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, batches={len(self)}, device={self.device!r})")
