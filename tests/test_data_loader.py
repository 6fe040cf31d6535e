"""DataLoader: batching, seeded shuffling, normalization, transforms, prefetch thread, device."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tinycnn import backend
from tinycnn.data import (
    ArrayDataset,
    DataLoader,
    RandomCrop,
    compute_mean_std,
)


def coded(n: int = 50, c: int = 1, h: int = 4, w: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose pixel (0, 0, 0) is the image index, labels = index % 10."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x, (np.arange(n) % 10).astype(np.uint8)


def ids(xb: np.ndarray) -> list[int]:
    return np.rint(xb[:, 0, 0, 0] * 255).astype(int).tolist()


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tinycnn-prefetch"]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_in_order_with_a_short_last_batch(prefetch: int) -> None:
    x, y = coded(50)
    loader = DataLoader((x, y), batch_size=16, prefetch=prefetch)
    batches = list(loader)
    assert len(loader) == 4 and len(batches) == 4
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    xb, yb = batches[0]
    assert xb.dtype == np.float32 and xb.shape == (16, 1, 4, 4)
    assert yb.dtype == np.int64
    np.testing.assert_allclose(xb, x[:16] / 255.0, rtol=1e-6)
    assert sum((ids(b[0]) for b in batches), []) == list(range(50))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_drop_last() -> None:
    x, y = coded(50)
    loader = DataLoader((x, y), batch_size=16, drop_last=True, shuffle=True, seed=0)
    sizes = [len(b[1]) for b in loader]
    assert len(loader) == 3 and sizes == [16, 16, 16]
    assert len(DataLoader((x, y), batch_size=10, drop_last=True)) == 5


def test_seeded_shuffle_repeats_exactly_per_epoch_sequence() -> None:
    x, y = coded(40)

    def epochs(seed: int, k: int = 3) -> list[list[int]]:
        loader = DataLoader((x, y), batch_size=7, shuffle=True, seed=seed)
        return [sum((ids(xb) for xb, _ in loader), []) for _ in range(k)]

    a, b = epochs(1), epochs(1)
    assert a == b
    for order in a:
        assert sorted(order) == list(range(40))  # every image once per epoch
    assert a[0] != a[1] and a[1] != a[2]  # a fresh order every epoch
    assert epochs(2)[0] != a[0]


def test_labels_follow_their_images_when_shuffled() -> None:
    x, y = coded(30)
    for xb, yb in DataLoader((x, y), batch_size=8, shuffle=True, seed=3):
        np.testing.assert_array_equal(yb, np.array(ids(xb)) % 10)


def test_normalization_per_channel() -> None:
    rng = np.random.default_rng(5)
    x = np.stack([rng.integers(0, 100, size=(200, 6, 6)), rng.integers(100, 256, size=(200, 6, 6)),
                  rng.integers(0, 256, size=(200, 6, 6))], axis=1).astype(np.uint8)
    y = np.zeros(200, dtype=np.int64)
    mean, std = compute_mean_std((x, y), chunk=64)
    scaled = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 2, 3)), rtol=1e-8)
    out = np.concatenate([xb for xb, _ in DataLoader((x, y), batch_size=64, mean=mean, std=std)])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1.0, atol=1e-4)


def test_mean_std_arguments_are_checked() -> None:
    x, y = coded(10, c=3)
    with pytest.raises(ValueError, match="mean needs 1 or 3 values"):
        DataLoader((x, y), mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="std must be > 0"):
        DataLoader((x, y), mean=0.5, std=0.0)
    xb, _ = next(iter(DataLoader((x, y), batch_size=10, mean=0.5, std=0.25)))
    np.testing.assert_allclose(xb, (x / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-6)


def test_inputs_datasets_pairs_and_grayscale_without_channel() -> None:
    x, y = coded(12)
    from_ds = next(iter(DataLoader(ArrayDataset(x, y), batch_size=12)))[0]
    from_hw = next(iter(DataLoader((x[:, 0], y), batch_size=12)))[0]
    np.testing.assert_array_equal(from_ds, from_hw)
    floats = next(iter(DataLoader((x.astype(np.float32) / 255, y), batch_size=12)))[0]
    np.testing.assert_allclose(floats, from_ds)  # float input is not divided again
    with pytest.raises(TypeError, match="data and .targets"):
        DataLoader(object())
    with pytest.raises(ValueError, match="differ in length"):
        DataLoader((x, y[:5]))


def test_transform_runs_in_the_prefetch_thread_and_is_seeded() -> None:
    x, y = coded(64, h=8, w=8)
    seen = []

    def spy(xb: np.ndarray) -> np.ndarray:
        seen.append(threading.current_thread().name)
        return xb[..., ::-1]

    list(DataLoader((x, y), batch_size=16, transform=spy))
    assert seen == ["tinycnn-prefetch"] * 4

    def run(prefetch: int) -> np.ndarray:
        aug = RandomCrop(8, padding=2)
        loader = DataLoader((x, y), batch_size=16, shuffle=True, seed=9, transform=aug,
                            prefetch=prefetch)
        return np.concatenate([xb for _ in range(2) for xb, _ in loader])

    a, b, c = run(2), run(2), run(0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # the thread changes nothing but timing
    plain = DataLoader((x, y), batch_size=16, shuffle=True, seed=9)
    assert not np.array_equal(a, np.concatenate([xb for _ in range(2) for xb, _ in plain]))


def test_early_break_stops_the_thread() -> None:
    x, y = coded(200)
    before = len(prefetch_threads())
    loader = DataLoader((x, y), batch_size=4, prefetch=3)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    deadline = time.monotonic() + 2.0
    while len(prefetch_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(prefetch_threads()) == before
    assert len(list(loader)) == 50  # the loader still works after an early stop


def test_errors_in_the_thread_reach_the_caller() -> None:
    x, y = coded(40)

    def broken(xb: np.ndarray) -> np.ndarray:
        raise RuntimeError("augmentation exploded")

    with pytest.raises(RuntimeError, match="augmentation exploded"):
        list(DataLoader((x, y), batch_size=8, transform=broken))
    time.sleep(0.05)
    assert prefetch_threads() == []


def test_prefetch_overlaps_loading_with_the_step() -> None:
    x, y = coded(80)
    delay = 0.03

    def slow(xb: np.ndarray) -> np.ndarray:
        time.sleep(delay)  # stands in for loading/augmenting; sleeping frees the core
        return xb

    def epoch(prefetch: int) -> float:
        start = time.perf_counter()
        for _ in DataLoader((x, y), batch_size=8, transform=slow, prefetch=prefetch):
            time.sleep(delay)  # stands in for the training step
        return time.perf_counter() - start

    serial, overlapped = epoch(0), epoch(2)
    # 10 batches: serial ~ 0.6 s, overlapped ~ 0.33 s.
    assert overlapped < 0.8 * serial, (serial, overlapped)


def test_gpu_device() -> None:
    x, y = coded(20)
    if not backend.gpu_available():
        with pytest.raises(backend.DeviceError):
            DataLoader((x, y), device="gpu")
        pytest.skip("no CUDA GPU visible to CuPy: only the clear-error path was checked")
    xb, yb = next(iter(DataLoader((x, y), batch_size=8, device="gpu", mean=0.5, std=0.5)))
    assert backend.is_gpu_array(xb) and backend.is_gpu_array(yb)
    np.testing.assert_allclose(backend.to_device(xb, "cpu"), (x[:8] / 255.0 - 0.5) / 0.5,
                               rtol=1e-5, atol=1e-6)
