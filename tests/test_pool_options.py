"""MaxPool2D(ceil_mode=True) and AvgPool2D(ceil_mode, count_include_pad): PyTorch's output
size rule and values in float64 over random configurations, gradient checks, the
accelerated twins (which run the reference code for what their kernels lack)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
from tinycnn.gradcheck import gradcheck
from tinycnn.layers import AvgPool2D, MaxPool2D
from tinycnn.layers.pool import pool_out_size
from tinycnn.module import LayerInputError

try:
    import torch
except ImportError:  # the comparisons with PyTorch skip, saying why
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


@st.composite
def pool_cases(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)),
             draw(st.integers(max(1, k[0] - 2 * p[0]), 9)),
             draw(st.integers(max(1, k[1] - 2 * p[1]), 9)))
    options = dict(ceil_mode=draw(st.booleans()))
    avg = draw(st.booleans())
    if avg:
        options["count_include_pad"] = draw(st.booleans())
    return avg, dict(kernel_size=k, stride=s, padding=p, **options), shape


def _tie_free(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Distinct values (a max-pool's gradient is not defined at ties)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape) + rng.normal(
        0, 1e-3, shape)


@needs_torch
@settings(max_examples=150, deadline=None)
@given(case=pool_cases())
def test_matches_pytorch(case):
    avg, kwargs, shape = case
    x = _tie_free(shape)
    ours = (AvgPool2D if avg else MaxPool2D)(**kwargs)
    theirs = (torch.nn.AvgPool2d if avg else torch.nn.MaxPool2d)(**kwargs)
    xt = torch.from_numpy(x).requires_grad_(True)
    want = theirs(xt)
    y = ours(x)
    assert y.shape == tuple(want.shape) == ours.output_shape(shape)
    np.testing.assert_allclose(y, want.detach().numpy(), rtol=1e-6, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(y.shape)
    want.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-6, atol=1e-12)
    fast = tinycnn.accelerate((AvgPool2D if avg else MaxPool2D)(**kwargs))
    np.testing.assert_allclose(fast(x), y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fast.backward(g), xt.grad.numpy(), rtol=1e-6, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(case=pool_cases())
def test_gradcheck(case):
    avg, kwargs, shape = case
    layer = (AvgPool2D if avg else MaxPool2D)(**kwargs)
    assert gradcheck(layer, _tie_free(shape, 2), tol=1e-6) < 1e-6


def test_ceil_mode_output_size_rule():
    # 8 wide, 3/2: floor 3 windows, ceil 4 (the last starts at 6, inside the input)
    assert pool_out_size(8, 3, 2, 0) == 3 and pool_out_size(8, 3, 2, 0, ceil_mode=True) == 4
    # 5 wide, kernel 2 stride 2 pad 1: ceil would give 4, whose last window starts at 6 - 1
    # = 5, in the right padding, so 3
    assert pool_out_size(5, 2, 2, 1, ceil_mode=True) == 3
    # an input smaller than the kernel still gives one window in ceil mode, as in PyTorch
    assert MaxPool2D(3, 2, ceil_mode=True)(np.ones((1, 1, 2, 2))).shape == (1, 1, 1, 1)
    with pytest.raises(LayerInputError, match="MaxPool2D expected a padded input of at least"):
        MaxPool2D(3, 2)(np.ones((1, 1, 2, 2)))


def test_average_divisors():
    x = np.ones((1, 1, 3, 3))
    # with zero padding counted, border windows average in zeros; without, they are 1
    np.testing.assert_allclose(AvgPool2D(3, 1, 1)(x)[0, 0, 0, 0], 4 / 9)
    np.testing.assert_allclose(AvgPool2D(3, 1, 1, count_include_pad=False)(x), np.ones_like(x))
    # ceil mode: the overhang past the padding never counts, even with count_include_pad
    np.testing.assert_allclose(AvgPool2D(2, 2, ceil_mode=True)(x), np.ones((1, 1, 2, 2)))


def test_options_are_checked_and_shown():
    with pytest.raises(TypeError, match="MaxPool2D: ceil_mode must be True or False"):
        MaxPool2D(2, ceil_mode="yes")
    with pytest.raises(TypeError, match="AvgPool2D: count_include_pad must be True or False"):
        AvgPool2D(2, count_include_pad=None)
    assert "ceil_mode=True" in repr(MaxPool2D(2, ceil_mode=True))
    assert "count_include_pad=False" in repr(AvgPool2D(2, count_include_pad=False))
    assert "ceil_mode" not in repr(MaxPool2D(2))


def test_float32_is_preserved():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)
    for layer in (MaxPool2D(2, ceil_mode=True), AvgPool2D(3, 2, 1, True, False)):
        y = layer(x)
        assert y.dtype == np.float32
        assert layer.backward(np.ones_like(y)).dtype == np.float32
