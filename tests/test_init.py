"""He and Xavier initializers: fans, spreads and bounds on large draws, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinycnn.init import INITIALIZERS, fans, initialize

SHAPE = (200, 40, 3, 3)  # 72,000 values: fan_in 360, fan_out 1800


def test_fans_follow_pytorch():
    assert fans((30, 20)) == (20, 30)
    assert fans((16, 8, 3, 5)) == (8 * 15, 16 * 15)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fans((5,))


@pytest.mark.parametrize(
    "method, std",
    [
        ("he_normal", math.sqrt(2 / 360)),
        ("he_uniform", math.sqrt(2 / 360)),
        ("xavier_normal", math.sqrt(2 / (360 + 1800))),
        ("xavier_uniform", math.sqrt(2 / (360 + 1800))),
    ],
)
def test_spread_matches_the_formula(method, std):
    w = initialize(SHAPE, method, np.random.default_rng(0), np.float64)
    assert w.shape == SHAPE
    assert abs(w.mean()) < 4 * std / math.sqrt(w.size)
    assert abs(w.std() / std - 1) < 0.02
    if method.endswith("uniform"):
        bound = std * math.sqrt(3)  # a uniform on [-b, b] has std b / sqrt(3)
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.999 * bound
        # flat histogram: each quarter of [-b, b] holds a quarter of the values
        counts = np.histogram(w, bins=4, range=(-bound, bound))[0] / w.size
        np.testing.assert_allclose(counts, 0.25, atol=0.01)
    else:
        # normal: about 68.3 % within one std
        assert abs(np.mean(np.abs(w) < std) - 0.6827) < 0.01


@pytest.mark.parametrize("method", INITIALIZERS)
def test_gain_scales_the_spread(method):
    a = initialize((300, 300), method, np.random.default_rng(1), np.float64)
    b = initialize((300, 300), method, np.random.default_rng(1), np.float64, gain=3.0)
    default_gain = math.sqrt(2) if method.startswith("he") else 1.0
    np.testing.assert_allclose(b, a * 3.0 / default_gain, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", INITIALIZERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_and_seeding(method, dtype):
    a = initialize((8, 4, 3, 3), method, np.random.default_rng(5), dtype)
    b = initialize((8, 4, 3, 3), method, np.random.default_rng(5), dtype)
    c = initialize((8, 4, 3, 3), method, np.random.default_rng(6), dtype)
    assert a.dtype == dtype
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown initializer 'kaiming'.*he_normal"):
        initialize((3, 3), "kaiming")


@pytest.mark.parametrize("method", INITIALIZERS)
def test_float32_weights_are_drawn_in_float32(method):
    """A float64 draw cast to float32 peaked at 3x the weight (1.15 GiB for 381 MiB);
    drawing in float32 and scaling in place peaks at the weight itself."""
    import tracemalloc

    shape = (1000, 2500)  # 10 MB in float32
    nbytes = 4 * 1000 * 2500
    tracemalloc.start()
    try:
        w = initialize(shape, method, np.random.default_rng(0), np.float32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.dtype == np.float32
    assert peak < 1.1 * nbytes, f"peak {peak / nbytes:.2f}x the weight"


def test_seeded_float32_draws_are_fixed():
    """Seeded results stay deterministic across versions: these are the first values."""
    w = initialize((2, 3), "he_normal", np.random.default_rng(0), np.float32)
    expected = np.random.default_rng(0).standard_normal((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(w, expected * np.float32(math.sqrt(2.0 / 3)))
