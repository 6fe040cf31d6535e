"""Conv2D: gradient checks, a naive-loop oracle, bad inputs, dtypes and options."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
from tinycnn.gradcheck import gradcheck
from tinycnn.layers import Conv2D
from tinycnn.module import BackwardBeforeForwardError, LayerInputError


def same_pads(k: int, d: int) -> tuple[int, int]:
    """PyTorch's 'same' padding along one axis: (before, after), the extra one after."""
    total = d * (k - 1)
    return total // 2, total - total // 2


def naive_conv(x, weight, bias, stride, pads, dilation, groups):
    """The definition: y[n,o,r,s] = b[o] + sum_{c,i,j} w[o,c,i,j] xpad[n, g*Cg+c, r*sH+i*dH, ..]."""
    n, _, h, w = x.shape
    out_c, cg, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    top, bottom, left, right = pads
    xpad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, out_c, oh, ow), dtype=np.float64)
    per_group = out_c // groups
    for b in range(n):
        for o in range(out_c):
            g = o // per_group
            for r in range(oh):
                for s in range(ow):
                    acc = 0.0 if bias is None else bias[o]
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                acc += weight[o, c, i, j] * xpad[
                                    b, g * cg + c, r * sh + i * dh, s * sw + j * dw
                                ]
                    y[b, o, r, s] = acc
    return y


@st.composite
def conv_cases(draw):
    """A random valid Conv2D configuration and an input shape that fits it."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = groups > 1 and draw(st.booleans())
    cin = groups if depthwise else groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    if kind == "same":
        stride, padding = (1, 1), "same"
        pads = (*same_pads(kernel[0], dilation[0]), *same_pads(kernel[1], dilation[1]))
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        if kind == "int":
            padding = draw(st.integers(0, 2))
            pad_pair = (padding, padding)
        elif kind == "pair":
            padding = pad_pair = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        else:
            padding, pad_pair = "valid", (0, 0)
        pads = (pad_pair[0], pad_pair[0], pad_pair[1], pad_pair[1])
    eff_h = dilation[0] * (kernel[0] - 1) + 1
    eff_w = dilation[1] * (kernel[1] - 1) + 1
    h = max(1, eff_h - pads[0] - pads[1]) + draw(st.integers(0, 3))
    w = max(1, eff_w - pads[2] - pads[3]) + draw(st.integers(0, 3))
    return {
        "args": dict(in_channels=cin, out_channels=cout, kernel_size=kernel, stride=stride,
                     padding=padding, dilation=dilation, groups=groups,
                     bias=draw(st.booleans())),
        "pads": pads,
        "x_shape": (draw(st.integers(1, 2)), cin, h, w),
        "train": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=25, deadline=None)
@given(case=conv_cases())
def test_conv_gradcheck_random_configs(kernel_set, case):
    rng = np.random.default_rng(case["seed"])
    layer = Conv2D(**case["args"], dtype=np.float64, rng=rng)
    if layer.bias is not None:
        layer.bias.data = rng.standard_normal(layer.bias.shape)
    layer.train(case["train"])
    tinycnn.accelerate(layer)
    x = rng.standard_normal(case["x_shape"])
    with tinycnn.use_kernels(kernel_set):
        err = gradcheck(layer, x, seed=case["seed"], max_entries=200)
    assert err < 1e-6


@settings(max_examples=25, deadline=None)
@given(case=conv_cases())
def test_conv_matches_naive_loops(kernel_set, case):
    rng = np.random.default_rng(case["seed"])
    layer = Conv2D(**case["args"], dtype=np.float64, rng=rng)
    if layer.bias is not None:
        layer.bias.data = rng.standard_normal(layer.bias.shape)
    x = rng.standard_normal(case["x_shape"])
    tinycnn.accelerate(layer)
    with tinycnn.use_kernels(kernel_set):
        y = layer(x)
    bias = None if layer.bias is None else layer.bias.data
    a = case["args"]
    expected = naive_conv(x, layer.weight.data, bias, a["stride"], case["pads"],
                          a["dilation"], a["groups"])
    assert y.shape == expected.shape == layer.output_shape(x.shape)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


EXPLICIT = [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=3, out_channels=4, kernel_size=5, stride=2, padding=2),
    dict(in_channels=2, out_channels=3, kernel_size=(2, 3), stride=(2, 1), padding=(1, 0)),
    dict(in_channels=2, out_channels=2, kernel_size=3, dilation=2, padding=2),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="same"),
    dict(in_channels=2, out_channels=3, kernel_size=4, padding="same"),
    dict(in_channels=2, out_channels=3, kernel_size=(2, 4), dilation=(3, 1), padding="same"),
    dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, padding=1),  # depthwise
    dict(in_channels=3, out_channels=6, kernel_size=3, groups=3, stride=2),  # depthwise x2
    dict(in_channels=4, out_channels=5, kernel_size=1),  # pointwise: no im2col
    dict(in_channels=4, out_channels=4, kernel_size=1, groups=2),
    dict(in_channels=3, out_channels=2, kernel_size=1, stride=2),
    dict(in_channels=3, out_channels=2, kernel_size=3, padding="valid", bias=False),
]


@pytest.mark.parametrize("args", EXPLICIT, ids=lambda a: repr(Conv2D(**a)))
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_conv_gradcheck_explicit(kernel_set, args, train):
    rng = np.random.default_rng(1)
    layer = Conv2D(**args, dtype=np.float64, rng=rng)
    if layer.bias is not None:
        layer.bias.data = rng.standard_normal(layer.bias.shape)
    layer.train(train)
    tinycnn.accelerate(layer)
    x = rng.standard_normal((2, args["in_channels"], 7, 6))
    with tinycnn.use_kernels(kernel_set):
        result = gradcheck(layer, x, return_result=True)
    expected_arrays = {"input", "weight"} | ({"bias"} if layer.bias is not None else set())
    assert set(result.errors) == expected_arrays
    assert result.worst < 1e-6


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("d", [1, 2])
def test_same_padding_keeps_size_and_pads_extra_bottom_right(k, d):
    rng = np.random.default_rng(k * 10 + d)
    layer = Conv2D(2, 3, k, padding="same", dilation=d, dtype=np.float64, rng=rng)
    x = rng.standard_normal((1, 2, 6, 7))
    y = layer(x)
    assert y.shape == (1, 3, 6, 7)
    pads = (*same_pads(k, d), *same_pads(k, d))
    expected = naive_conv(x, layer.weight.data, layer.bias.data, (1, 1), pads, (d, d), 1)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_accelerated_pointwise_conv_skips_im2col(monkeypatch):
    numba_cpu = pytest.importorskip("tinycnn.fast.numba_cpu", reason="numba is not installed")

    def no_im2col(*args, **kwargs):
        raise AssertionError("a 1x1, stride-1, unpadded convolution must not call im2col")

    monkeypatch.setattr(numba_cpu, "im2col", no_im2col)
    monkeypatch.setattr(numba_cpu, "col2im", no_im2col)
    rng = np.random.default_rng(0)
    layer = tinycnn.accelerate(Conv2D(3, 5, 1, dtype=np.float64, rng=rng))
    x = rng.standard_normal((2, 3, 4, 5))
    with tinycnn.use_kernels("numba"):
        y = layer(x)
        assert layer.impl == "pointwise"
        dx = layer.backward(np.ones_like(y))
    expected = naive_conv(x, layer.weight.data, layer.bias.data, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    # with g = 1: dx[n, c, h, w] = sum_o W[o, c]
    expected_dx = np.broadcast_to(layer.weight.data.sum(axis=0)[None], x.shape)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12)


def test_float32_stays_float32(kernel_set):
    rng = np.random.default_rng(0)
    layer = Conv2D(3, 4, 3, padding="same", groups=1, rng=rng)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    tinycnn.accelerate(layer)
    with tinycnn.use_kernels(kernel_set):
        y = layer(x)
        dx = layer.backward(rng.standard_normal(y.shape).astype(np.float32))
    assert y.dtype == dx.dtype == np.float32
    assert layer.weight.grad.dtype == layer.bias.grad.dtype == np.float32


def test_float32_input_to_float64_layer_keeps_input_dtype():
    rng = np.random.default_rng(0)
    layer = Conv2D(2, 2, 3, groups=2, dtype=np.float64, rng=rng)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float32
    assert layer.weight.grad.dtype == np.float64


def test_no_input_grad_for_the_first_layer_skips_dx_only(kernel_set):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    full = Conv2D(3, 4, 3, stride=2, padding=1, dtype=np.float64, rng=np.random.default_rng(5))
    first = Conv2D(3, 4, 3, stride=2, padding=1, dtype=np.float64, rng=np.random.default_rng(5))
    tinycnn.accelerate(full)
    tinycnn.accelerate(first, input_grad=False)
    assert full.input_grad is True and first.input_grad is False
    with tinycnn.use_kernels(kernel_set):
        g = rng.standard_normal(full(x).shape)
        assert full.backward(g) is not None
        first(x)
        assert first.backward(g) is None
    np.testing.assert_array_equal(first.weight.grad, full.weight.grad)
    np.testing.assert_array_equal(first.bias.grad, full.bias.grad)


def test_parameter_grads_accumulate_and_frozen_weight_is_skipped():
    rng = np.random.default_rng(0)
    layer = Conv2D(2, 3, 3, dtype=np.float64, rng=rng)
    x = rng.standard_normal((1, 2, 5, 5))
    g = rng.standard_normal(layer(x).shape)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.zero_grad()
    layer.weight.requires_grad = False
    layer(x)
    layer.backward(g)
    assert layer.weight.grad is None
    assert layer.bias.grad is not None


def test_backward_does_not_modify_grad_out():
    rng = np.random.default_rng(0)
    layer = Conv2D(2, 4, 3, groups=2, padding=1, dtype=np.float64, rng=rng)
    y = layer(rng.standard_normal((2, 2, 5, 5)))
    g = rng.standard_normal(y.shape)
    before = g.copy()
    layer.backward(g)
    np.testing.assert_array_equal(g, before)


def test_weight_and_bias_layout_and_state_dict():
    layer = Conv2D(6, 4, (3, 2), groups=2)
    assert layer.weight.shape == (4, 3, 3, 2)
    assert layer.bias.shape == (4,)
    assert layer.weight.dtype == np.float32
    state = layer.state_dict()
    assert sorted(state) == ["bias", "weight"]
    assert Conv2D(6, 4, 3, bias=False).state_dict().keys() == {"weight"}


def test_macs_counts_one_multiply_add_per_tap():
    layer = Conv2D(4, 8, 3, stride=1, groups=2)
    in_shape = (2, 4, 7, 7)
    out_shape = layer.output_shape(in_shape)
    assert out_shape == (2, 8, 5, 5)
    # the naive loop does (C/groups)*kH*kW multiply-adds per output element
    assert layer.macs(in_shape, out_shape) == 2 * 8 * 5 * 5 * (4 // 2) * 3 * 3


def test_extra_repr():
    text = repr(Conv2D(4, 8, 3, stride=2, padding=1, dilation=2, groups=4, bias=False))
    assert text.startswith("Conv2D(4, 8, kernel_size=(3, 3), stride=(2, 2)")
    for part in ("padding=(1, 1)", "dilation=(2, 2)", "groups=4", "bias=False"):
        assert part in text
    assert "padding='same'" in repr(Conv2D(1, 1, 3, padding="same"))
    assert "groups" not in repr(Conv2D(1, 1, 3))


@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (np.zeros((3, 5, 5)), r"Conv2D expected a 4-D input \(N, C, H, W\), got shape \(3, 5, 5\)"),
        (np.zeros((1, 2, 5, 5)), r"Conv2D expected 3 channels .* got 2"),
        (np.zeros((1, 3, 5, 5), dtype=np.int64), r"Conv2D expected a floating-point .* int64"),
        (np.zeros((1, 3, 2, 5)), r"Conv2D expected a padded input of at least 3x3 .* got 2x5"),
        ([[1.0]], r"Conv2D expected an array"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, pattern):
    with pytest.raises(LayerInputError, match=pattern):
        Conv2D(3, 4, 3)(x)


def test_dilated_kernel_too_large_after_padding():
    layer = Conv2D(1, 1, 3, dilation=3, padding=1)  # effective kernel 7, padded input 4+2
    with pytest.raises(LayerInputError, match=r"at least 7x7 .* got 6x6"):
        layer(np.zeros((1, 1, 4, 4)))
    assert layer(np.zeros((1, 1, 5, 5))).shape == (1, 1, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(in_channels=4, out_channels=6, kernel_size=3, groups=3), "divisible by groups"),
        (dict(in_channels=3, out_channels=4, kernel_size=3, groups=3), "divisible by groups"),
        (dict(in_channels=3, out_channels=3, kernel_size=3, groups=0),
         r"Conv2D: groups must be an int >= 1, got 0"),
        (dict(in_channels=4, out_channels=4, kernel_size=3, groups="2"),
         r"Conv2D: groups must be an int >= 1, got '2'"),
        (dict(in_channels=-3, out_channels=8, kernel_size=3),
         r"Conv2D: in_channels must be an int >= 1, got -3"),
        (dict(in_channels=3, out_channels=0, kernel_size=3), "out_channels must be an int >= 1"),
        (dict(in_channels=3, out_channels=8, kernel_size=3.0),
         r"Conv2D: kernel_size must be an int or a pair of ints >= 1, got 3.0"),
        (dict(in_channels=3, out_channels=8, kernel_size=3, bias="yes"), "bias must be True or"),
        (dict(in_channels=1, out_channels=1, kernel_size=3, padding="same", stride=2),
         "'same' needs stride 1"),
        (dict(in_channels=1, out_channels=1, kernel_size=3, padding="full"), "'same' or 'valid'"),
        (dict(in_channels=1, out_channels=1, kernel_size=0), "kernel_size"),
        (dict(in_channels=1, out_channels=1, kernel_size=3, stride=(1, 0)), "stride"),
        (dict(in_channels=1, out_channels=1, kernel_size=3, padding=-1), "padding"),
        (dict(in_channels=1, out_channels=1, kernel_size=(3, 3, 3)), "kernel_size"),
    ],
)
def test_bad_constructor_arguments(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        Conv2D(**kwargs)


def test_backward_before_forward():
    layer = Conv2D(1, 1, 3)
    with pytest.raises(BackwardBeforeForwardError, match=r"Conv2D\.backward\(\) called before"):
        layer.backward(np.zeros((1, 1, 1, 1), dtype=np.float32))
    layer(np.zeros((1, 1, 3, 3), dtype=np.float32))
    layer.astype(np.float64)  # drops the cache
    with pytest.raises(BackwardBeforeForwardError):
        layer.backward(np.zeros((1, 1, 1, 1)))



def test_backward_follows_the_path_forward_took(kernel_set):
    """Turning input_grad on between forward and backward changes the CPU path a
    first layer would take; backward must still use the caches forward made."""
    rng = np.random.default_rng(3)
    layer = tinycnn.accelerate(Conv2D(1, 4, 3, padding=1, dtype=np.float64, rng=rng))
    layer.max_direct_macs = 0  # the direct path would not depend on input_grad
    x = rng.standard_normal((2, 1, 16, 16))
    ref = Conv2D(1, 4, 3, padding=1, dtype=np.float64)
    ref.load_state_dict(layer.state_dict())
    with tinycnn.use_kernels(kernel_set):
        layer.input_grad = False
        y = layer(x)
        layer.input_grad = True
        if kernel_set == "numba":  # the switch changes the choice
            assert layer._path(x.shape, False) != layer.impl
        g = rng.standard_normal(y.shape)
        dx = layer.backward(g)
        np.testing.assert_allclose(y, ref(x), rtol=1e-12)
        np.testing.assert_allclose(dx, ref.backward(g), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad, rtol=1e-10)
