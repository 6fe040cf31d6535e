"""ConvTranspose2D: gradient checks, PyTorch parity, the adjoint identity, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import engine
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.layers import Conv2D, ConvTranspose2D
from tinycnn.module import BackwardBeforeForwardError, LayerInputError

try:
    import torch
except ImportError:  # the parity tests skip, saying why
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


@st.composite
def tconv_cases(draw):
    """A random valid ConvTranspose2D configuration and an input shape."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 1)))
    out_pad = tuple(
        draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
    )
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    bias = draw(st.booleans())
    layer_args = dict(
        in_channels=cin, out_channels=cout, kernel_size=kernel, stride=stride, padding=padding,
        output_padding=out_pad, groups=groups, bias=bias, dilation=dilation,
    )
    layer = ConvTranspose2D(**layer_args, rng=np.random.default_rng(0))
    n, _, oh, ow = layer.output_shape((2, cin, h, w))
    if oh < 1 or ow < 1:  # padding larger than the output: PyTorch rejects it as well
        layer_args["padding"] = (0, 0)
    return layer_args, (draw(st.integers(1, 2)), cin, h, w)


def make(args: dict, seed: int = 0) -> ConvTranspose2D:
    layer = ConvTranspose2D(**args, rng=np.random.default_rng(seed))
    if layer.bias is not None:
        layer.bias.data = np.random.default_rng(seed + 1).standard_normal(
            layer.bias.shape
        ).astype(np.float32)
    return layer


@settings(max_examples=20, deadline=None)
@given(case=tconv_cases())
def test_gradcheck(case, kernel_set):
    args, shape = case
    layer = make(args)
    x = np.random.default_rng(1).standard_normal(shape)
    with engine(kernel_set, layer):
        assert gradcheck(layer, x, tol=1e-6) < 1e-6


@needs_torch
@settings(max_examples=20, deadline=None)
@given(case=tconv_cases())
def test_matches_pytorch(case):
    args, shape = case
    layer = make(args).astype(np.float64)
    ref = torch.nn.ConvTranspose2d(**args).double()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    y = layer(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = ref(xt)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-12)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-6, atol=1e-12)
    if layer.bias is not None:
        np.testing.assert_allclose(layer.bias.grad, ref.bias.grad.numpy(), rtol=1e-6, atol=1e-12)


def test_is_the_adjoint_of_conv2d():
    """<conv(y), x> == <y, tconv(x)> for a Conv2D and ConvTranspose2D sharing one weight."""
    rng = np.random.default_rng(3)
    tconv = ConvTranspose2D(4, 6, 3, stride=2, padding=1, groups=2, bias=False, dilation=1)
    tconv.astype(np.float64)
    conv = Conv2D(6, 4, 3, stride=2, padding=1, groups=2, bias=False).astype(np.float64)
    conv.weight.data = tconv.weight.data.copy()
    x = rng.standard_normal((2, 4, 5, 5))
    y = tconv(x)  # (2, 6, 9, 9)
    z = rng.standard_normal(y.shape)
    assert conv(z).shape == x.shape
    assert np.isclose(np.sum(conv(z) * x), np.sum(z * y), rtol=1e-12)


def test_upsamples_by_stride_and_keeps_float32():
    layer = ConvTranspose2D(3, 5, 4, stride=2, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 8)).astype(np.float32)
    y = layer(x)
    assert y.shape == (2, 5, 14, 16)
    assert y.dtype == np.float32
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert layer.weight.grad.dtype == np.float32


def test_macs_counts_one_patch_per_input_value():
    layer = ConvTranspose2D(8, 6, 3, stride=2, groups=2)
    in_shape = (2, 8, 5, 5)
    out_shape = layer.output_shape(in_shape)
    assert out_shape == (2, 6, 11, 11)
    assert layer.macs(in_shape, out_shape) == 2 * 8 * 5 * 5 * (6 // 2) * 3 * 3


def test_frozen_weight_gets_no_gradient():
    layer = ConvTranspose2D(2, 3, 3).freeze()
    x = np.ones((1, 2, 4, 4), dtype=np.float32)
    dx = layer.backward(np.ones_like(layer(x)))
    assert layer.weight.grad is None and dx.shape == x.shape


def test_bad_inputs_are_named():
    layer = ConvTranspose2D(3, 4, 3)
    with pytest.raises(LayerInputError, match="ConvTranspose2D.*3 channels.*got 2"):
        layer(np.zeros((1, 2, 5, 5), dtype=np.float32))
    with pytest.raises(LayerInputError, match="ConvTranspose2D.*4-D"):
        layer(np.zeros((3, 5, 5), dtype=np.float32))
    with pytest.raises(LayerInputError, match="ConvTranspose2D.*floating"):
        layer(np.zeros((1, 3, 5, 5), dtype=np.int64))
    with pytest.raises(LayerInputError, match="empty output"):
        ConvTranspose2D(1, 1, 1, padding=2)(np.zeros((1, 1, 2, 2), dtype=np.float32))
    with pytest.raises(BackwardBeforeForwardError):
        ConvTranspose2D(3, 4, 3).backward(np.zeros((1, 4, 7, 7), dtype=np.float32))
    with pytest.raises(ValueError, match="divisible by groups"):
        ConvTranspose2D(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="output_padding"):
        ConvTranspose2D(3, 4, 3, stride=2, output_padding=2)
