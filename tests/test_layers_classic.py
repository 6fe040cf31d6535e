"""Upsample, LocalResponseNorm, ZeroPad2D, AdaptiveAvgPool2D: gradient checks, PyTorch parity,
dtypes and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.layers import AdaptiveAvgPool2D, LocalResponseNorm, Upsample, ZeroPad2D
from tinycnn.module import BackwardBeforeForwardError, LayerInputError

try:
    import torch
except ImportError:  # the parity tests skip, saying why
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
SETTINGS = settings(max_examples=20, deadline=None)


@st.composite
def upsample_cases(draw):
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    align = mode == "bilinear" and draw(st.booleans())
    if draw(st.booleans()):
        kwargs = dict(scale_factor=draw(st.sampled_from([1, 2, 3, 1.5, 2.5, (2, 3), (0.5, 1.7)])))
    else:
        kwargs = dict(size=(draw(st.integers(1, 7)), draw(st.integers(1, 7))))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(2, 5)),
             draw(st.integers(2, 5)))
    return dict(mode=mode, align_corners=align, **kwargs), shape


@st.composite
def lrn_cases(draw):
    size = draw(st.integers(1, 6))
    alpha = draw(st.sampled_from([1e-4, 0.1, 1.0]))
    beta = draw(st.sampled_from([0.75, 0.5, 1.3]))
    k = draw(st.sampled_from([1.0, 2.0, 0.5]))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 3)),
             draw(st.integers(1, 3)))
    return dict(size=size, alpha=alpha, beta=beta, k=k), shape


@st.composite
def pad_cases(draw):
    if draw(st.booleans()):
        padding = draw(st.integers(0, 2))
    else:
        padding = tuple(draw(st.integers(0, 3)) for _ in range(4))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 4)),
             draw(st.integers(1, 4)))
    return dict(padding=padding), shape


@st.composite
def adaptive_cases(draw):
    out = draw(st.sampled_from([1, 2, 3, (2, 5), (None, 2), (4, None), 7]))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)),
             draw(st.integers(1, 9)))
    return dict(output_size=out), shape


LAYERS = {
    "upsample": (Upsample, upsample_cases),
    "lrn": (LocalResponseNorm, lrn_cases),
    "zeropad": (ZeroPad2D, pad_cases),
    "adaptive": (AdaptiveAvgPool2D, adaptive_cases),
}


def torch_layer(name: str, kwargs: dict):
    if name == "upsample":
        kw = dict(kwargs)
        if kw["mode"] == "nearest":
            kw.pop("align_corners")
        return torch.nn.Upsample(**kw)
    if name == "lrn":
        return torch.nn.LocalResponseNorm(**kwargs)
    if name == "zeropad":
        return torch.nn.ZeroPad2d(**kwargs)
    return torch.nn.AdaptiveAvgPool2d(**kwargs)


@pytest.mark.parametrize("name", list(LAYERS))
def test_gradcheck(name):
    cls, cases = LAYERS[name]

    @SETTINGS
    @given(case=cases())
    def check(case):
        kwargs, shape = case
        x = np.random.default_rng(0).standard_normal(shape)
        assert gradcheck(cls(**kwargs), x, tol=1e-6) < 1e-6

    check()


@needs_torch
@pytest.mark.parametrize("name", list(LAYERS))
def test_matches_pytorch(name):
    cls, cases = LAYERS[name]

    @SETTINGS
    @given(case=cases())
    def check(case):
        kwargs, shape = case
        layer = cls(**kwargs)
        ref = torch_layer(name, kwargs)
        rng = np.random.default_rng(5)
        x = rng.standard_normal(shape)
        y = layer(x)
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = ref(xt)
        assert y.shape == tuple(yt.shape)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-12)
        g = rng.standard_normal(y.shape)
        yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-6, atol=1e-12)

    check()


@pytest.mark.parametrize(
    "layer",
    [Upsample(2, mode="bilinear"), Upsample(size=(3, 5)), LocalResponseNorm(3),
     ZeroPad2D((1, 0, 2, 1)), AdaptiveAvgPool2D((2, 3)), AdaptiveAvgPool2D(4)],
    ids=repr,
)
def test_float32_is_preserved(layer):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32


def test_known_values():
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(
        Upsample(2)(x)[0, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    )
    np.testing.assert_allclose(
        Upsample(2, mode="bilinear", align_corners=True)(x)[0, 0, 0], [0, 1 / 3, 2 / 3, 1]
    )
    assert ZeroPad2D((1, 2, 0, 3))(x).shape == (1, 1, 5, 5)
    np.testing.assert_allclose(AdaptiveAvgPool2D(1)(x)[0, 0, 0, 0], 1.5)
    # each of the 3 outputs of a length-5 row averages [0,2), [1,4), [3,5)
    row = np.arange(5.0).reshape(1, 1, 1, 5)
    np.testing.assert_allclose(AdaptiveAvgPool2D((1, 3))(row)[0, 0, 0], [0.5, 2.0, 3.5])
    # LRN of one channel with size 1: x / (k + alpha x^2)^beta
    one = np.full((1, 1, 1, 1), 2.0)
    np.testing.assert_allclose(LocalResponseNorm(1, alpha=0.5, beta=1.0, k=1.0)(one), 2.0 / 3.0)


def test_bad_inputs_are_named():
    img3 = np.zeros((3, 4, 4), dtype=np.float32)
    for layer, name in [(Upsample(2), "Upsample"), (ZeroPad2D(1), "ZeroPad2D"),
                        (AdaptiveAvgPool2D(2), "AdaptiveAvgPool2D")]:
        with pytest.raises(LayerInputError, match=f"{name} expected a 4-D"):
            layer(img3)
    with pytest.raises(LayerInputError, match="LocalResponseNorm.*floating"):
        LocalResponseNorm(3)(np.zeros((1, 3, 2, 2), dtype=np.int32))
    with pytest.raises(LayerInputError, match="Upsample.*empty output"):
        Upsample(0.2)(np.zeros((1, 1, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="align_corners"):
        Upsample(2, mode="nearest", align_corners=True)
    with pytest.raises(ValueError, match="mode"):
        Upsample(2, mode="bicubic")
    with pytest.raises(ValueError, match="exactly one"):
        Upsample()
    with pytest.raises(ValueError, match="ZeroPad2D"):
        ZeroPad2D((1, 2))
    with pytest.raises(ValueError, match="AdaptiveAvgPool2D"):
        AdaptiveAvgPool2D(0)
    with pytest.raises(ValueError, match="LocalResponseNorm"):
        LocalResponseNorm(0)
    for layer in [Upsample(2), LocalResponseNorm(2), ZeroPad2D(1), AdaptiveAvgPool2D(1)]:
        with pytest.raises(BackwardBeforeForwardError):
            layer.backward(np.zeros((1, 1, 2, 2), dtype=np.float32))
