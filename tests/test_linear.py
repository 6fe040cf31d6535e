"""Affine (Linear): gradient checks, values, layouts, dtypes, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.layers import Affine, Linear
from tinycnn.module import BackwardBeforeForwardError, LayerInputError

RNG = np.random.default_rng(21)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    fan_in=st.integers(1, 6),
    fan_out=st.integers(1, 6),
    bias=st.booleans(),
    training=st.booleans(),
    seed=st.integers(0, 999),
)
def test_gradcheck_affine(n, fan_in, fan_out, bias, training, seed):
    rng = np.random.default_rng(seed)
    layer = Affine(fan_in, fan_out, bias=bias, rng=rng).train(training)
    if bias:
        layer.bias.data[...] = rng.normal(size=fan_out)
    assert gradcheck(layer, rng.normal(size=(n, fan_in)), seed=seed) < 1e-6


def test_values_and_gradients_match_the_definition():
    layer = Affine(4, 3, dtype=np.float64, rng=RNG)
    layer.bias.data[...] = RNG.normal(size=3)
    x, g = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 3))
    g_before = g.copy()
    w, b = layer.weight.data, layer.bias.data
    y = layer(x)
    expected = np.array([[b[o] + sum(x[i, k] * w[o, k] for k in range(4)) for o in range(3)]
                         for i in range(5)])
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    dx = layer.backward(g)
    np.testing.assert_allclose(dx, g @ w, rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, g.T @ x, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, g.sum(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(g, g_before)


def test_pytorch_layout_and_names():
    layer = Linear(4, 3)
    assert Linear is Affine
    assert layer.weight.shape == (3, 4) and layer.bias.shape == (3,)
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert list(Affine(4, 3, bias=False).state_dict()) == ["weight"]


def test_matches_pytorch_linear():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed; parity test skipped")
    ref = torch.nn.Linear(4, 3).double()
    layer = Affine(4, 3, dtype=np.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x, g = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 3))
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer(x), yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-12)


def test_gradients_accumulate_and_frozen_parameters_get_none():
    layer = Affine(3, 2, dtype=np.float64, rng=RNG)
    x, g = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 2))
    layer(x)
    layer.backward(g)
    first = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * first)
    layer.zero_grad()
    layer.weight.requires_grad = False
    layer(x)
    layer.backward(g)
    assert layer.weight.grad is None and layer.bias.grad is not None


def test_float32_stays_float32():
    layer = Affine(5, 3)
    x = RNG.normal(size=(4, 5)).astype(np.float32)
    y = layer(x)
    dx = layer.backward(RNG.normal(size=(4, 3)).astype(np.float32))
    assert layer.weight.dtype == y.dtype == dx.dtype == np.float32
    assert layer.weight.grad.dtype == layer.bias.grad.dtype == np.float32


@pytest.mark.parametrize(
    "x, pattern",
    [
        (np.ones((2, 5, 1), np.float32), r"Affine expected 5 features.*got 1.*\(2, 5, 1\)"),
        (np.ones((2, 4), np.float32), r"Affine expected 5 features.*got 4"),
        (np.ones((2, 5, 3, 3), np.float32), r"Affine expected 5 features.*Flatten\(\)"),
        (np.float32(1.0), r"Affine expected a 1-D input"),
        (np.ones((2, 5), np.int64), r"Affine expected a floating-point.*int64"),
    ],
)
def test_bad_inputs_name_the_layer(x, pattern):
    with pytest.raises(LayerInputError, match=pattern):
        Affine(5, 3)(x)


def test_backward_before_forward():
    with pytest.raises(BackwardBeforeForwardError, match="Affine"):
        Affine(2, 2).backward(np.ones((1, 2), np.float32))


def test_macs_and_seeded_init():
    assert Affine(7, 3).macs((10, 7), (10, 3)) == 10 * 7 * 3
    a = Affine(6, 4, rng=np.random.default_rng(0))
    b = Affine(6, 4, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, np.zeros(4, np.float32))


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (2, 1, 3, 4), (0, 4)])
def test_acts_on_the_last_axis_like_pytorch_linear(shape):
    """(*, in_features) -> (*, out_features): each leading index is one row of x W^T + b."""
    layer = Affine(4, 3, dtype=np.float64, rng=RNG)
    layer.bias.data[...] = RNG.normal(size=3)
    x = RNG.normal(size=shape)
    g = RNG.normal(size=shape[:-1] + (3,))
    y = layer(x)
    rows = x.reshape(-1, 4)
    assert y.shape == shape[:-1] + (3,)
    np.testing.assert_allclose(y.reshape(-1, 3), rows @ layer.weight.data.T + layer.bias.data)
    dx = layer.backward(g)
    assert dx.shape == shape
    np.testing.assert_allclose(layer.weight.grad, g.reshape(-1, 3).T @ rows, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, g.reshape(-1, 3).sum(axis=0), atol=1e-12)
    assert Affine(4, 3).macs(shape, shape[:-1] + (3,)) == int(np.prod(shape[:-1])) * 12


@pytest.mark.parametrize("shape", [(3,), (2, 3, 3)])
def test_gradcheck_affine_on_other_ranks(shape):
    rng = np.random.default_rng(5)
    layer = Affine(3, 2, rng=rng)
    layer.bias.data[...] = rng.normal(size=2)
    assert gradcheck(layer, rng.normal(size=shape), seed=5) < 1e-6


def test_matches_pytorch_linear_on_3d_input():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed; parity test skipped")
    ref = torch.nn.Linear(4, 3).double()
    layer = Affine(4, 3, dtype=np.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x, g = RNG.normal(size=(2, 5, 4)), RNG.normal(size=(2, 5, 3))
    xt = torch.tensor(x, requires_grad=True)
    ref(xt).backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer(x), ref(xt).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-12)
