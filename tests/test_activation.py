"""Activations: values, derivatives, gradient checks, numerical stability, bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.layers import LeakyReLU, ReLU, Sigmoid, Tanh
from tinycnn.module import BackwardBeforeForwardError, LayerInputError

RNG = np.random.default_rng(5)

LAYERS = {
    "ReLU": ReLU,
    "LeakyReLU": LeakyReLU,
    "LeakyReLU(0.2)": lambda: LeakyReLU(0.2),
    "Sigmoid": Sigmoid,
    "Tanh": Tanh,
}


def reference(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y, dy/dx) straight from the definitions, in float64."""
    if name == "ReLU":
        return np.maximum(x, 0), (x > 0).astype(float)
    if name.startswith("LeakyReLU"):
        slope = 0.2 if "0.2" in name else 0.01
        return np.where(x > 0, x, slope * x), np.where(x > 0, 1.0, slope)
    if name == "Sigmoid":
        s = 1 / (1 + np.exp(-x))
        return s, s * (1 - s)
    t = np.tanh(x)
    return t, 1 - t**2


def away_from_kinks(x: np.ndarray) -> np.ndarray:
    """Move values at least 0.05 away from 0, where ReLU-like functions have a kink."""
    return x + np.where(x >= 0, 0.05, -0.05)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(LAYERS)), shape=shapes, training=st.booleans(),
       seed=st.integers(0, 999))
def test_gradcheck(name, shape, training, seed):
    x = away_from_kinks(np.random.default_rng(seed).normal(0, 2, size=shape))
    layer = LAYERS[name]().train(training)
    assert gradcheck(layer, x, seed=seed) < 1e-6


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_values_and_derivatives_match_the_definitions(name):
    x = away_from_kinks(RNG.normal(0, 3, size=(4, 3, 5)))
    g = RNG.normal(size=x.shape)
    g_before = g.copy()
    layer = LAYERS[name]()
    y_ref, d_ref = reference(name, x)
    np.testing.assert_allclose(layer(x), y_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(layer.backward(g), g * d_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(g, g_before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_tanh_are_stable_for_large_inputs(dtype):
    x = np.array([-1e4, -800.0, -100.0, -30.0, 0.0, 30.0, 100.0, 800.0, 1e4], dtype=dtype)
    # underflow to 0 is the right answer (and silent by default); overflow would be a bug
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        s = Sigmoid()
        y = s(x)
        dx = s.backward(np.ones_like(x))
        t = Tanh()
        yt = t(x)
        dt = t.backward(np.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert y[0] == 0 and y[-1] == 1 and y[4] == 0.5
    assert np.all(np.diff(y) >= 0)
    np.testing.assert_allclose(y[3], 1 / (1 + np.exp(30.0)), rtol=1e-5)  # tiny, not flushed
    assert yt[0] == -1 and yt[-1] == 1 and np.all(np.isfinite(dt))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_float32_stays_float32(name):
    layer = LAYERS[name]()
    x = RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)
    assert layer(x).dtype == np.float32
    assert layer.backward(x).dtype == np.float32


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize(
    "x, pattern",
    [
        (np.ones((2, 3), np.int32), r"floating.*int32"),
        (np.float32(1.0).reshape(()), r"got shape \(\)"),
        (np.ones((1,) * 6, np.float32), r"got shape \(1, 1, 1, 1, 1, 1\)"),
        ([1.0, 2.0], r"expected an array.*list"),
    ],
)
def test_bad_inputs_name_the_layer(name, x, pattern):
    layer = LAYERS[name]()
    with pytest.raises(LayerInputError, match=rf"{type(layer).__name__} .*{pattern}"):
        layer(x)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_backward_before_forward(name):
    layer = LAYERS[name]()
    with pytest.raises(BackwardBeforeForwardError, match=type(layer).__name__):
        layer.backward(np.ones((2, 2)))


@pytest.mark.parametrize("cls", [ReLU, LeakyReLU, Sigmoid, Tanh])
def test_derivative_is_in_the_docstring(cls):
    doc = " ".join(cls.__doc__.split())
    assert "Backward: dL/dx" in doc or r"Backward: :math:`\partial L/\partial x" in doc


@pytest.mark.parametrize("size", [6, 70_000], ids=["small", "large"])
def test_relu_propagates_nan_like_pytorch(kernel_set: str, size: int) -> None:
    """ReLU(nan) is nan (PyTorch too); its gradient there is 0, like at any x <= 0."""
    import tinycnn

    x = np.linspace(-1, 1, size).astype(np.float32)
    x[1] = np.nan
    layer = tinycnn.accelerate(ReLU())
    with tinycnn.use_kernels(kernel_set):
        y = layer(x[None])
        dx = layer.backward(np.ones_like(y))
    assert np.isnan(y[0, 1]) and np.isnan(y).sum() == 1
    assert dx[0, 1] == 0 and np.isfinite(dx).all()
