"""Upsample with fractional scale factors follows PyTorch's source-index rule: an axis whose
size does not change is copied, nearest with an output of exactly twice the input takes
``dst // 2``, otherwise ``1 / scale`` maps output to input (float32 for nearest)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.layers import Upsample

try:
    import torch
except ImportError:  # the comparison with PyTorch skips, saying why
    torch = None


def test_the_cases_of_issue_19():
    x = np.arange(3.0).reshape(1, 1, 1, 3)
    assert Upsample(scale_factor=(1, 2.3))(x).ravel().tolist() == [0, 0, 1, 1, 2, 2]
    assert Upsample(scale_factor=(1, 1.3), mode="bilinear")(x).ravel().tolist() == [0, 1, 2]


@st.composite
def fractional_cases(draw):
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    align = mode == "bilinear" and draw(st.booleans())
    scale = tuple(draw(st.floats(0.3, 3.7).map(lambda s: round(s, 3))) for _ in range(2))
    shape = (1, draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    if any(int(n * s) < 1 for n, s in zip(shape[2:], scale, strict=True)):
        scale = tuple(max(s, 1.0) for s in scale)
    return dict(scale_factor=scale, mode=mode, align_corners=align), shape


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@settings(max_examples=150, deadline=None)
@given(case=fractional_cases())
def test_matches_pytorch_interpolate(case):
    kwargs, shape = case
    x = np.random.default_rng(0).standard_normal(shape)
    layer = Upsample(**kwargs)
    y = layer(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    corners = {"align_corners": kwargs["align_corners"]} if kwargs["mode"] == "bilinear" else {}
    yt = torch.nn.functional.interpolate(xt, scale_factor=kwargs["scale_factor"],
                                         mode=kwargs["mode"], **corners)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(y.shape)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-6, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(case=fractional_cases())
def test_gradcheck(case):
    kwargs, shape = case
    x = np.random.default_rng(0).standard_normal(shape)
    assert gradcheck(Upsample(**kwargs), x, tol=1e-6) < 1e-6
