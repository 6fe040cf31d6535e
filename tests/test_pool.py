"""MaxPool2D, AvgPool2D, GlobalAvgPool2D: gradient checks, loop oracles, ties, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import engine
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.layers import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from tinycnn.module import BackwardBeforeForwardError, LayerInputError


def tie_free(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Distinct values 0.1 apart (far beyond gradcheck's eps), in random order."""
    return (rng.permutation(int(np.prod(shape))) * 0.1 - 3.0).reshape(shape)


def naive_pool(x, kernel, stride, padding, kind):
    """Direct definition with loops; returns (y, dy/dx routing for max as a list of hits)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    fill = -np.inf if kind == "max" else 0.0
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.empty((n, c, oh, ow))
    winners = {}
    for b in range(n):
        for ch in range(c):
            for r in range(oh):
                for s in range(ow):
                    best, where, total = -np.inf, None, 0.0
                    for i in range(kh):
                        for j in range(kw):
                            v = xpad[b, ch, r * sh + i, s * sw + j]
                            total += v
                            if v > best:  # strict: the first maximum keeps its place
                                best, where = v, (r * sh + i - ph, s * sw + j - pw)
                    y[b, ch, r, s] = best if kind == "max" else total / (kh * kw)
                    winners[b, ch, r, s] = where
    return y, winners


def naive_maxpool_backward(g, x_shape, winners):
    dx = np.zeros(x_shape)
    for (b, ch, r, s), (i, j) in winners.items():
        dx[b, ch, i, j] += g[b, ch, r, s]
    return dx


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    h = max(1, kernel[0] - 2 * padding[0]) + draw(st.integers(0, 4))
    w = max(1, kernel[1] - 2 * padding[1]) + draw(st.integers(0, 4))
    return {
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "x_shape": (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w),
        "train": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


POOLS = {"max": MaxPool2D, "avg": AvgPool2D}


@pytest.mark.parametrize("kind", ["max", "avg"])
@settings(max_examples=25, deadline=None)
@given(case=pool_cases())
def test_pool_gradcheck_random_configs(kernel_set, kind, case):
    rng = np.random.default_rng(case["seed"])
    layer = POOLS[kind](case["kernel"], case["stride"], case["padding"]).train(case["train"])
    x = tie_free(case["x_shape"], rng)
    with engine(kernel_set, layer):
        assert gradcheck(layer, x, seed=case["seed"]) < 1e-6


@pytest.mark.parametrize("kind", ["max", "avg"])
@settings(max_examples=25, deadline=None)
@given(case=pool_cases())
def test_pool_matches_naive_loops(kernel_set, kind, case):
    rng = np.random.default_rng(case["seed"])
    layer = POOLS[kind](case["kernel"], case["stride"], case["padding"])
    # ties are allowed here: values rounded to one decimal repeat often
    x = np.round(rng.standard_normal(case["x_shape"]), 1)
    stride = case["kernel"] if case["stride"] is None else case["stride"]
    expected, winners = naive_pool(x, case["kernel"], stride, case["padding"], kind)
    with engine(kernel_set, layer):
        y = layer(x)
        g = rng.standard_normal(y.shape)
        dx = layer.backward(g)
    assert y.shape == expected.shape == layer.output_shape(x.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    if kind == "max":
        np.testing.assert_allclose(dx, naive_maxpool_backward(g, x.shape, winners), rtol=1e-12)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (MaxPool2D(2), (2, 3, 6, 6)),
        (MaxPool2D(3, stride=2, padding=1), (2, 2, 7, 5)),
        (MaxPool2D((2, 3), stride=(1, 2), padding=(1, 1)), (1, 2, 5, 6)),
        (AvgPool2D(2), (2, 3, 6, 6)),
        (AvgPool2D(3, stride=1, padding=1), (2, 2, 5, 5)),
        (AvgPool2D((3, 2), stride=(2, 1), padding=(1, 0)), (1, 2, 6, 4)),
        (GlobalAvgPool2D(), (2, 3, 4, 5)),
        (GlobalAvgPool2D(), (3, 2, 1, 1)),
    ],
    ids=repr,
)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_pool_gradcheck_explicit(kernel_set, layer, shape, train):
    x = tie_free(shape, np.random.default_rng(0))
    with engine(kernel_set, layer):
        result = gradcheck(layer.train(train), x, max_entries=None, return_result=True)
    assert set(result.errors) == {"input"}
    assert result.worst < 1e-6


def test_maxpool_ties_first_maximum_wins(kernel_set):
    # overlapping 2x2 windows over a constant image: every window is one big tie
    x = np.full((1, 1, 3, 3), 5.0)
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    layer = MaxPool2D(2, stride=1)
    with engine(kernel_set, layer):
        y = layer(x)
        dx = layer.backward(g)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 5.0))
    # each window's whole gradient lands on its top-left pixel (first in row-major order)
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 2.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])

    # a tie later in the window: [[1, 7], [7, 2]] -> the 7 at (0, 1) wins, not the one at (1, 0)
    x2 = np.array([[[[1.0, 7.0], [7.0, 2.0]]]])
    single = MaxPool2D(2)
    with engine(kernel_set, single):
        single(x2)
        dx2 = single.backward(np.array([[[[1.0]]]]))
    np.testing.assert_array_equal(dx2[0, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_maxpool_padding_never_wins_and_avgpool_counts_padding(kernel_set):
    x = -1.0 - tie_free((1, 1, 4, 4), np.random.default_rng(0)) - 3.0  # all negative
    max_pool, avg_pool = MaxPool2D(2, stride=2, padding=1), AvgPool2D(2, stride=2, padding=1)
    with engine(kernel_set, max_pool, avg_pool):
        y_max = max_pool(x)
        y_avg = avg_pool(x)
    assert y_max.shape == y_avg.shape == (1, 1, 3, 3)
    assert (y_max < 0).all()
    assert y_max[0, 0, 0, 0] == x[0, 0, 0, 0]
    # the top-left window holds one real pixel and three zeros of padding: divisor 4
    assert y_avg[0, 0, 0, 0] == pytest.approx(x[0, 0, 0, 0] / 4)
    assert y_avg[0, 0, 1, 1] == pytest.approx(x[0, 0, 1:3, 1:3].mean())


def test_global_avg_pool_values_and_grad():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    layer = GlobalAvgPool2D()
    y = layer(x)
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y, x.reshape(2, 3, -1).sum(axis=-1) / 20, rtol=1e-13)
    g = rng.standard_normal((2, 3))
    dx = layer.backward(g)
    assert dx.shape == x.shape and dx.flags.writeable
    np.testing.assert_allclose(dx, np.repeat(g / 20, 20).reshape(x.shape), rtol=1e-13)


@pytest.mark.parametrize(
    "layer", [MaxPool2D(2), AvgPool2D(3, 1, 1), GlobalAvgPool2D()], ids=repr
)
def test_float32_stays_float32(kernel_set, layer):
    x = tie_free((2, 3, 6, 6), np.random.default_rng(0)).astype(np.float32)
    with engine(kernel_set, layer):
        y = layer(x)
        dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float32
    assert dx.shape == x.shape


def test_default_stride_is_kernel_size_and_repr():
    assert MaxPool2D(3).stride == (3, 3)
    assert AvgPool2D((2, 3)).stride == (2, 3)
    assert MaxPool2D(2, 1).stride == (1, 1)
    expected = "MaxPool2D(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))"
    assert repr(MaxPool2D(3, 2, 1)) == expected
    assert repr(GlobalAvgPool2D()) == "GlobalAvgPool2D()"


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_padding_larger_than_half_kernel_is_rejected(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: padding must be at most half"):
        cls(3, padding=2)
    with pytest.raises(ValueError, match="at most half"):
        cls((2, 4), padding=(2, 1))
    assert cls((2, 4), padding=(1, 2)).padding == (1, 2)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_bad_inputs(cls):
    layer = cls(3, padding=1)
    with pytest.raises(LayerInputError, match=rf"{cls.__name__} expected a padded input of "
                                              r"at least 3x3 .* got 2x5"):
        cls(3)(np.zeros((1, 1, 2, 5)))
    assert layer(np.zeros((1, 1, 1, 1))).shape == (1, 1, 1, 1)  # 1 + 2*1 padding fits 3
    with pytest.raises(LayerInputError, match=rf"{cls.__name__} expected a 4-D input"):
        layer(np.zeros((4, 4)))
    with pytest.raises(LayerInputError, match="floating-point"):
        layer(np.zeros((1, 1, 4, 4), dtype=np.int32))


def test_global_avg_pool_bad_inputs():
    with pytest.raises(LayerInputError, match=r"GlobalAvgPool2D expected a 4-D input"):
        GlobalAvgPool2D()(np.zeros((2, 3)))
    with pytest.raises(LayerInputError, match=r"GlobalAvgPool2D expected a non-empty H x W"):
        GlobalAvgPool2D()(np.zeros((2, 3, 0, 4)))


@pytest.mark.parametrize("layer", [MaxPool2D(2), AvgPool2D(2), GlobalAvgPool2D()], ids=repr)
def test_backward_before_forward(layer):
    name = type(layer).__name__
    with pytest.raises(BackwardBeforeForwardError, match=rf"{name}\.backward\(\) called before"):
        layer.backward(np.zeros((1, 1, 1, 1)))


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, 2, 0), (3, 2, 1), (2, 1, 0)])
def test_maxpool_propagates_nan_wherever_it_is_in_the_window(kernel_set, kernel, stride,
                                                              padding):
    """A NaN anywhere in a window makes that output NaN (PyTorch does the same), and the
    window's gradient goes to the NaN."""
    rng = np.random.default_rng(0)
    for pos in range(4):
        x = tie_free((1, 1, 4, 4), rng)
        x[0, 0, pos // 2, pos % 2] = np.nan
        layer = MaxPool2D(kernel, stride, padding)
        with engine(kernel_set, layer):
            y = layer(x)
            dx = layer.backward(np.ones_like(y))
        assert np.isnan(y[0, 0, 0, 0]), f"NaN at window position {pos} was dropped"
        assert dx[0, 0, pos // 2, pos % 2] >= 1
