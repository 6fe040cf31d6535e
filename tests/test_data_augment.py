"""Batch augmentations: shapes, identities, exact geometry, statistics and speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tinycnn.data import (
    Compose,
    Cutout,
    GaussianNoise,
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    affine_sample,
)


def batch(n: int = 8, c: int = 3, h: int = 10, w: int = 10, seed: int = 0,
          dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).random((n, c, h, w)).astype(dtype)


ALL = [
    RandomCrop(8, padding=2),
    RandomHorizontalFlip(),
    RandomRotation(15),
    RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
    GaussianNoise(0.1),
    Cutout(4),
]


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_and_dtype(t: object, dtype: type) -> None:
    x = batch(dtype=dtype)
    out = t(x, np.random.default_rng(0))
    expected = (8, 3, 8, 8) if isinstance(t, RandomCrop) else x.shape
    assert out.shape == expected and out.dtype == dtype
    assert np.array_equal(x, batch(dtype=dtype))  # the input is never modified


@pytest.mark.parametrize("t", ALL, ids=lambda t: type(t).__name__)
def test_same_generator_state_gives_same_output(t: object) -> None:
    x = batch()
    a = t(x, np.random.default_rng(42))
    b = t(x, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)


def test_rejects_non_batches() -> None:
    with pytest.raises(ValueError, match=r"RandomCrop: expected a batch \(N, C, H, W\)"):
        RandomCrop(4)(np.zeros((3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="larger than the padded image"):
        RandomCrop(20, padding=2)(batch())


def test_identity_cases() -> None:
    x = batch()
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(RandomRotation(0)(x, rng), x)
    np.testing.assert_array_equal(RandomAffine(0)(x, rng), x)
    np.testing.assert_array_equal(RandomCrop(10, padding=0)(x, rng), x)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x, rng), x)
    np.testing.assert_array_equal(GaussianNoise(0.0)(x, rng), x)
    np.testing.assert_allclose(RandomRotation((360, 360))(x, rng), x, atol=1e-5)


def test_flip_mirrors_and_twice_is_identity() -> None:
    x = batch()
    flip = RandomHorizontalFlip(p=1.0)
    once = flip(x, np.random.default_rng(0))
    np.testing.assert_array_equal(once, x[..., ::-1])
    np.testing.assert_array_equal(flip(once, np.random.default_rng(1)), x)
    half = RandomHorizontalFlip(p=0.5)(batch(n=2000, c=1, h=2, w=3), np.random.default_rng(2))
    src = batch(n=2000, c=1, h=2, w=3)
    flipped = np.all(half == src[..., ::-1], axis=(1, 2, 3))
    kept = np.all(half == src, axis=(1, 2, 3))
    assert np.all(flipped | kept)
    assert 0.45 < flipped.mean() < 0.55


def test_crop_is_a_window_of_the_zero_padded_image() -> None:
    x = batch(n=64, c=2, h=6, w=7)
    p = 2
    out = RandomCrop((6, 7), padding=p)(x, np.random.default_rng(3))
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    offsets = set()
    for i in range(len(x)):  # the check loops; the transform does not
        hits = [(oy, ox) for oy in range(2 * p + 1) for ox in range(2 * p + 1)
                if np.array_equal(out[i], padded[i, :, oy:oy + 6, ox:ox + 7])]
        assert hits, f"image {i} is not a window of its padded image"
        offsets.update(hits)
    assert len(offsets) > 10  # offsets really vary across the batch


def test_rotation_by_90_degrees_is_rot90() -> None:
    x = batch(n=4, c=2, h=9, w=9)
    out = RandomRotation((90, 90))(x, np.random.default_rng(0))
    # Positive angles turn counter-clockwise as displayed, like np.rot90 on (rows, cols).
    np.testing.assert_allclose(out, np.rot90(x, k=1, axes=(2, 3)), atol=1e-5)
    out = RandomRotation((-90, -90))(x, np.random.default_rng(0))
    np.testing.assert_allclose(out, np.rot90(x, k=-1, axes=(2, 3)), atol=1e-5)


def test_rotation_angles_vary_per_image() -> None:
    x = np.repeat(batch(n=1, c=1, h=12, w=12), 16, axis=0)
    out = RandomRotation(30)(x, np.random.default_rng(0))
    distinct = {out[i].tobytes() for i in range(16)}
    assert len(distinct) == 16


def test_integer_translation_shifts_with_zero_fill() -> None:
    x = batch(n=2, c=1, h=6, w=8)
    out = affine_sample(x, np.zeros(2), np.array([2.0, -1.0]), np.array([0.0, 3.0]), np.ones(2))
    expected0 = np.zeros_like(x[0])
    expected0[..., 2:] = x[0][..., :-2]
    np.testing.assert_allclose(out[0], expected0, atol=1e-6)
    expected1 = np.zeros_like(x[1])
    expected1[:, 3:, :-1] = x[1][:, :-3, 1:]
    np.testing.assert_allclose(out[1], expected1, atol=1e-6)


def test_half_pixel_shift_is_bilinear_average() -> None:
    x = batch(n=1, c=1, h=4, w=6, dtype=np.float64)
    out = affine_sample(x, np.zeros(1), np.array([0.5]), np.zeros(1), np.ones(1))
    np.testing.assert_allclose(out[0, 0, :, 1:], (x[0, 0, :, :-1] + x[0, 0, :, 1:]) / 2)
    np.testing.assert_allclose(out[0, 0, :, 0], x[0, 0, :, 0] / 2)  # half from the zero fill


def test_scale_two_magnifies_about_the_centre() -> None:
    x = batch(n=1, c=1, h=5, w=5, dtype=np.float64)
    out = affine_sample(x, np.zeros(1), np.zeros(1), np.zeros(1), np.full(1, 2.0))
    assert out[0, 0, 2, 2] == pytest.approx(x[0, 0, 2, 2])
    # Output pixel (0, 0) is 2 px from the centre each way: it reads input (1, 1).
    assert out[0, 0, 0, 0] == pytest.approx(x[0, 0, 1, 1])


def test_cutout_zeroes_exactly_a_square() -> None:
    n, size, h = 300, 5, 16
    x = np.ones((n, 2, h, h), dtype=np.float32)
    out = Cutout(size)(x, np.random.default_rng(0))
    full = 0
    for i in range(n):  # checking loops over images; the transform does not
        zero = out[i, 0] == 0
        np.testing.assert_array_equal(out[i, 1] == 0, zero)  # same square in every channel
        rows, cols = np.flatnonzero(zero.any(1)), np.flatnonzero(zero.any(0))
        assert 1 <= len(rows) <= size and 1 <= len(cols) <= size
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        box = np.zeros_like(zero)
        box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        np.testing.assert_array_equal(zero, box)  # a filled rectangle, nothing else
        assert np.all(out[i][:, ~zero] == 1)
        full += len(rows) == size and len(cols) == size
    assert full > n // 2  # away from the border the whole size x size square is cut


def test_gaussian_noise_statistics() -> None:
    x = np.full((64, 3, 16, 16), 0.5, dtype=np.float32)
    out = GaussianNoise(0.2)(x, np.random.default_rng(0))
    noise = (out - x).astype(np.float64)
    assert abs(noise.mean()) < 0.005
    assert noise.std() == pytest.approx(0.2, rel=0.02)
    assert abs(np.corrcoef(noise[:, 0].ravel(), noise[:, 1].ravel())[0, 1]) < 0.03


def test_compose_applies_in_order_and_shares_the_generator() -> None:
    x = batch()
    pipeline = Compose([RandomHorizontalFlip(p=1.0), RandomCrop(6, padding=0),
                        lambda b: b * 2.0])
    out = pipeline(x, np.random.default_rng(0))
    assert out.shape == (8, 3, 6, 6)
    assert set(np.unique(np.round(out / 2.0, 6))) <= set(np.unique(np.round(x, 6)))
    seeded_a = Compose([RandomRotation(20), Cutout(3)], seed=5)(x)
    seeded_b = Compose([RandomRotation(20), Cutout(3)], seed=5)(x)
    np.testing.assert_array_equal(seeded_a, seeded_b)


def test_vectorized_batch_of_512_is_fast() -> None:
    x = batch(n=512, c=3, h=32, w=32)
    pipeline = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(),
                        RandomAffine(15, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                        GaussianNoise(0.05), Cutout(8)])
    rng = np.random.default_rng(0)
    pipeline(x[:8], rng)  # warm-up
    start = time.perf_counter()
    out = pipeline(x, rng)
    elapsed = time.perf_counter() - start
    assert out.shape == x.shape
    # A per-image Python loop with bilinear sampling would take seconds; the batched
    # version takes a few tens of milliseconds. The bound is loose for a busy 2-core box.
    assert elapsed < 1.0, f"512 images took {elapsed:.3f} s"
