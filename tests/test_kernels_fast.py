"""Every Numba kernel against the plain-NumPy reference, over many shapes and dtypes.

The reference kernels are the oracle: same inputs, same results (to rounding), same dtype.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinycnn.fast import plain as ref

fast = pytest.importorskip("tinycnn.fast.numba_cpu", reason="numba is not installed")

DTYPES = [np.float32, np.float64]
SETTINGS = settings(max_examples=30, deadline=None)


def tol(dtype: type) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def rand(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def tie_free(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Distinct values (a shuffled ramp), so the max-pool winner is unambiguous."""
    return rng.permutation(np.prod(shape)).reshape(shape).astype(dtype) / 7


def check(fast_out: np.ndarray, ref_out: np.ndarray, dtype: type) -> None:
    assert fast_out.dtype == dtype, f"dtype changed: {fast_out.dtype} instead of {dtype}"
    assert fast_out.shape == ref_out.shape
    np.testing.assert_allclose(fast_out, ref_out, **tol(dtype))


def check_sums(fast_out: np.ndarray, ref_out: np.ndarray, dtype: type) -> None:
    """:func:`check` for outputs that each sum up to hundreds of products: in float32 a
    small one carries the rounding of the large terms it came from, so the absolute
    tolerance scales with the largest output."""
    assert fast_out.dtype == dtype, f"dtype changed: {fast_out.dtype} instead of {dtype}"
    assert fast_out.shape == ref_out.shape
    limits = tol(dtype)
    scale = max(1.0, float(np.abs(ref_out).max())) if ref_out.size else 1.0
    np.testing.assert_allclose(fast_out, ref_out, rtol=limits["rtol"],
                               atol=limits["atol"] * scale)


conv_geometry = st.fixed_dictionaries(
    {
        "n": st.integers(1, 3),
        "c": st.integers(1, 4),
        "h": st.integers(1, 9),
        "w": st.integers(1, 9),
        "kh": st.integers(1, 4),
        "kw": st.integers(1, 4),
        "stride": st.tuples(st.integers(1, 4), st.integers(1, 4)),
        "padding": st.tuples(st.integers(0, 2), st.integers(0, 2)),
        "dilation": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "seed": st.integers(0, 2**16),
    }
)


def conv_out(g: dict) -> tuple[int, int]:
    oh = ref.out_size(g["h"], g["kh"], g["stride"][0], g["padding"][0], g["dilation"][0])
    ow = ref.out_size(g["w"], g["kw"], g["stride"][1], g["padding"][1], g["dilation"][1])
    return oh, ow


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=conv_geometry)
def test_im2col_and_col2im_match_reference(dtype: type, g: dict) -> None:
    oh, ow = conv_out(g)
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(g["seed"])
    x = rand(rng, (g["n"], g["c"], g["h"], g["w"]), dtype)
    args = (g["kh"], g["kw"], g["stride"], g["padding"], g["dilation"])
    check(fast.im2col(x, *args), ref.im2col(x, *args), dtype)
    cols = rand(rng, (g["n"] * oh * ow, g["c"] * g["kh"] * g["kw"]), dtype)
    check(fast.col2im(cols, x.shape, *args), ref.col2im(cols, x.shape, *args), dtype)


pool_geometry = st.fixed_dictionaries(
    {
        "n": st.integers(1, 3),
        "c": st.integers(1, 4),
        "h": st.integers(1, 9),
        "w": st.integers(1, 9),
        "kh": st.integers(1, 4),
        "kw": st.integers(1, 4),
        "stride": st.tuples(st.integers(1, 5), st.integers(1, 5)),
        "pad_frac": st.tuples(st.booleans(), st.booleans()),
        "seed": st.integers(0, 2**16),
    }
)


def pool_args(g: dict) -> tuple[tuple, tuple[int, int]]:
    # PyTorch's rule (padding at most half the kernel), used at its largest when pad_frac
    kernel = (g["kh"], g["kw"])
    padding = tuple(k // 2 if p else 0 for k, p in zip(kernel, g["pad_frac"], strict=True))
    oh = ref.out_size(g["h"], g["kh"], g["stride"][0], padding[0])
    ow = ref.out_size(g["w"], g["kw"], g["stride"][1], padding[1])
    return (g["kh"], g["kw"], g["stride"], padding), (oh, ow)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=pool_geometry)
def test_maxpool_matches_reference(dtype: type, g: dict) -> None:
    args, (oh, ow) = pool_args(g)
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(g["seed"])
    x = tie_free(rng, (g["n"], g["c"], g["h"], g["w"]), dtype)
    out, arg = fast.maxpool2d_forward(x, *args)
    out_ref, arg_ref = ref.maxpool2d_forward(x, *args)
    check(out, out_ref, dtype)
    np.testing.assert_array_equal(arg, arg_ref)
    grad = rand(rng, out.shape, dtype)
    check(
        fast.maxpool2d_backward(grad, arg, x.shape, *args),
        ref.maxpool2d_backward(grad, arg_ref, x.shape, *args),
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=pool_geometry)
def test_avgpool_matches_reference(dtype: type, g: dict) -> None:
    args, (oh, ow) = pool_args(g)
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(g["seed"])
    x = rand(rng, (g["n"], g["c"], g["h"], g["w"]), dtype)
    check(fast.avgpool2d_forward(x, *args), ref.avgpool2d_forward(x, *args), dtype)
    grad = rand(rng, (g["n"], g["c"], oh, ow), dtype)
    check(
        fast.avgpool2d_backward(grad, x.shape, *args),
        ref.avgpool2d_backward(grad, x.shape, *args),
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 2, 7, 9), (1, 1, 2, 2), (1, 2, 3, 3)])
@pytest.mark.parametrize("stride", [(2, 2), (1, 1), (3, 2)])
def test_maxpool_2x2_fast_path_matches_reference(dtype: type, shape: tuple, stride: tuple) -> None:
    """2x2 windows without padding take dedicated kernels (odd sizes leave a row/column)."""
    rng = np.random.default_rng(3)
    x = tie_free(rng, shape, dtype)
    out, arg = fast.maxpool2d_forward(x, 2, 2, stride, (0, 0))
    out_ref, arg_ref = ref.maxpool2d_forward(x, 2, 2, stride, (0, 0))
    check(out, out_ref, dtype)
    np.testing.assert_array_equal(arg, arg_ref)
    g = rand(rng, out.shape, dtype)
    check(
        fast.maxpool2d_backward(g, arg, shape, 2, 2, stride, (0, 0)),
        ref.maxpool2d_backward(g, arg_ref, shape, 2, 2, stride, (0, 0)),
        dtype,
    )


def test_maxpool_ties_go_to_the_first_maximum() -> None:
    x = np.ones((1, 1, 2, 2), dtype=np.float32)
    out, arg = fast.maxpool2d_forward(x, 2, 2, (2, 2), (0, 0))
    assert arg[0, 0, 0, 0] == 0
    dx = fast.maxpool2d_backward(np.full_like(out, 3.0), arg, x.shape, 2, 2, (2, 2), (0, 0))
    np.testing.assert_array_equal(dx[0, 0], [[3.0, 0.0], [0.0, 0.0]])


EDGE_CASES = [
    # (x shape, kh, kw, stride, padding, dilation)
    ((2, 3, 5, 5), 1, 1, (1, 1), (0, 0), (1, 1)),  # 1x1 kernel
    ((2, 2, 4, 6), 4, 6, (1, 1), (0, 0), (1, 1)),  # kernel = input size: one output
    ((1, 2, 9, 9), 2, 2, (3, 4), (0, 0), (1, 1)),  # stride > kernel: skipped pixels
    ((1, 1, 1, 1), 1, 1, (1, 1), (0, 0), (1, 1)),  # a single pixel
    ((3, 2, 7, 5), 3, 3, (2, 1), (1, 2), (2, 1)),  # mixed everything
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_cases(dtype: type, case: tuple) -> None:
    shape, kh, kw, stride, padding, dilation = case
    rng = np.random.default_rng(0)
    x = tie_free(rng, shape, dtype)
    cols = fast.im2col(x, kh, kw, stride, padding, dilation)
    check(cols, ref.im2col(x, kh, kw, stride, padding, dilation), dtype)
    g = rand(rng, cols.shape, dtype)
    check(
        fast.col2im(g, shape, kh, kw, stride, padding, dilation),
        ref.col2im(g, shape, kh, kw, stride, padding, dilation),
        dtype,
    )
    pool_pad = (min(padding[0], kh // 2), min(padding[1], kw // 2))
    out, arg = fast.maxpool2d_forward(x, kh, kw, stride, pool_pad)
    out_ref, arg_ref = ref.maxpool2d_forward(x, kh, kw, stride, pool_pad)
    check(out, out_ref, dtype)
    np.testing.assert_array_equal(arg, arg_ref)
    gp = rand(rng, out.shape, dtype)
    check(
        fast.maxpool2d_backward(gp, arg, shape, kh, kw, stride, pool_pad),
        ref.maxpool2d_backward(gp, arg_ref, shape, kh, kw, stride, pool_pad),
        dtype,
    )
    check(
        fast.avgpool2d_backward(gp, shape, kh, kw, stride, pool_pad),
        ref.avgpool2d_backward(gp, shape, kh, kw, stride, pool_pad),
        dtype,
    )


def test_non_contiguous_inputs_are_read_correctly() -> None:
    """Layers may hand over transposed views (e.g. NHWC data seen as NCHW)."""
    rng = np.random.default_rng(1)
    x = rand(rng, (2, 6, 7, 3), np.float32).transpose(0, 3, 1, 2)
    check(fast.im2col(x, 3, 3, (1, 1), (1, 1)), ref.im2col(x, 3, 3, (1, 1), (1, 1)), np.float32)
    out, _ = fast.maxpool2d_forward(x, 2, 2, (2, 2), (0, 0))
    check(out, ref.maxpool2d_forward(x, 2, 2, (2, 2), (0, 0))[0], np.float32)
    check(fast.relu_forward(x), ref.relu_forward(x), np.float32)


shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


@pytest.mark.parametrize("small", [0, 1 << 30], ids=["kernel", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_relu_matches_reference(dtype: type, shape: tuple, seed: int, small: int) -> None:
    """Both ways: the parallel kernel and the NumPy expression for small arrays."""
    fast.SMALL_ELEMENTWISE, saved = small, fast.SMALL_ELEMENTWISE
    try:
        _check_relu(dtype, shape, seed)
    finally:
        fast.SMALL_ELEMENTWISE = saved


def _check_relu(dtype: type, shape: tuple, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rand(rng, shape, dtype)
    y = fast.relu_forward(x)
    check(y, ref.relu_forward(x), dtype)
    g = rand(rng, shape, dtype)
    check(fast.relu_backward(g, y), ref.relu_backward(g, ref.relu_forward(x)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(
    n=st.integers(1, 3), o=st.integers(1, 5), oh=st.integers(1, 5), ow=st.integers(1, 5),
    has_bias=st.booleans(), seed=st.integers(0, 2**16),
)
def test_rows_to_nchw_matches_reference(
    dtype: type, n: int, o: int, oh: int, ow: int, has_bias: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    rows = rand(rng, (n * oh * ow, o), dtype)
    bias = rand(rng, (o,), dtype) if has_bias else None
    shape = (n, o, oh, ow)
    check(fast.rows_to_nchw(rows, bias, shape), ref.rows_to_nchw(rows, bias, shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(shape=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 6),
                       st.integers(0, 6)),
       ph=st.integers(0, 3), pw=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_pad2d_matches_reference(dtype: type, shape: tuple, ph: int, pw: int,
                                 seed: int) -> None:
    x = rand(np.random.default_rng(seed), shape, dtype)
    got = fast.pad2d(x[:, :, ::-1], ph, pw)  # a non-contiguous view too
    want = ref.pad2d(x[:, :, ::-1], ph, pw)
    assert got.flags.c_contiguous
    check(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(
    shape=st.sampled_from([(4, 3), (2, 3, 5), (3, 2, 4, 5), (1, 1, 2, 1), (0, 3, 2, 2),
                           (2, 3, 0, 4), (7, 30, 6, 6)]),
    seed=st.integers(0, 2**16),
)
def test_channel_sums_match_reference(dtype: type, shape: tuple, seed: int) -> None:
    x = rand(np.random.default_rng(seed), shape, dtype)
    got = fast.channel_sums(x)
    assert got.shape == (shape[1],)
    check(got, ref.channel_sums(x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(
    shape=st.sampled_from([(4, 3), (2, 3, 5), (3, 2, 4, 5), (1, 1, 2, 1), (5, 4, 1, 1)]),
    seed=st.integers(0, 2**16),
)
def test_batchnorm_kernels_match_reference(dtype: type, shape: tuple, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rand(rng, shape, dtype) * 3 + 2).astype(dtype)
    mean, var = fast.batchnorm_stats(x)
    mean_ref, var_ref = ref.batchnorm_stats(x)
    check(mean, mean_ref, dtype)
    check(var, var_ref, dtype)
    g = rand(rng, shape, dtype)
    scale = rand(rng, (shape[1],), dtype)
    inv_std = (1 / np.sqrt(var_ref + 1e-5)).astype(dtype)
    for w, b in ((scale, mean_ref), (None, None)):
        check(fast.batchnorm_forward(x, mean_ref, inv_std, w, b),
              ref.batchnorm_forward(x, mean_ref, inv_std, w, b), dtype)
    got_all = fast.batchnorm_backward(g, x, mean_ref, inv_std, scale)
    for got, want in zip(got_all, ref.batchnorm_backward(g, x, mean_ref, inv_std, scale),
                         strict=True):
        check(got, want, dtype)


def test_warmup_compiles_every_kernel_and_reports_seconds() -> None:
    seconds = fast.warmup()
    assert seconds >= 0.0
    assert fast.warmup() < 1.0  # everything is compiled now: a second call is cheap


def test_fast_module_has_every_reference_kernel() -> None:
    public = [n for n in dir(ref) if not n.startswith("_") and callable(getattr(ref, n))]
    kernels = [n for n in public if n not in ("Any", "get_array_module")]
    missing = [name for name in kernels if not hasattr(fast, name)]
    assert not missing, f"numba_cpu lacks {missing}"


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=conv_geometry)
def test_per_image_columns_match_reference(dtype: type, g: dict) -> None:
    oh, ow = conv_out(g)
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(g["seed"])
    x = rand(rng, (g["n"], g["c"], g["h"], g["w"]), dtype)
    args = (g["kh"], g["kw"], g["stride"], g["padding"], g["dilation"])
    cols = fast.im2col_images(x, *args)
    check(cols, ref.im2col_images(x, *args), dtype)
    # the same numbers as im2col's (N*OH*OW, C*kh*kw) matrix, per image and transposed
    rows = ref.im2col(x, *args).reshape(g["n"], oh * ow, -1).transpose(0, 2, 1)
    check(cols, rows, dtype)
    dcols = rand(rng, cols.shape, dtype)
    check(fast.col2im_images(dcols, x.shape, *args), ref.col2im_images(dcols, x.shape, *args),
          dtype)
    out = np.full(x.shape, np.nan, dtype=dtype)  # a reused buffer is fully overwritten
    fast.col2im_images(dcols, x.shape, *args, out=out)
    check(out, ref.col2im_images(dcols, x.shape, *args), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=conv_geometry)
def test_depthwise_kernels_match_reference(dtype: type, g: dict) -> None:
    oh, ow = conv_out(g)
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(g["seed"])
    x = rand(rng, (g["n"], g["c"], g["h"], g["w"]), dtype)
    weight = rand(rng, (g["c"], 1, g["kh"], g["kw"]), dtype)
    geo = (g["stride"], g["padding"], g["dilation"])
    y = fast.depthwise_conv2d_forward(x, weight, *geo)
    check(y, ref.depthwise_conv2d_forward(x, weight, *geo), dtype)
    grad = rand(rng, y.shape, dtype)
    got = fast.depthwise_conv2d_backward(grad, x, weight, *geo)
    want = ref.depthwise_conv2d_backward(grad, x, weight, *geo)
    for a, b in zip(got, want, strict=True):
        check(a, b, dtype)
    dx, dw = fast.depthwise_conv2d_backward(grad, x, weight, *geo, input_grad=False)
    assert dx is None
    check(dw, want[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=conv_geometry, o=st.integers(1, 7), bias=st.booleans())
def test_direct_conv_kernels_match_reference(dtype: type, g: dict, o: int, bias: bool) -> None:
    """The direct (tap-loop) convolution: stride 1, no dilation, any padding and shape."""
    g = {**g, "stride": (1, 1), "dilation": (1, 1)}
    oh, ow = conv_out(g)
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(g["seed"])
    x = rand(rng, (g["n"], g["c"], g["h"], g["w"]), dtype)
    weight = rand(rng, (o, g["c"], g["kh"], g["kw"]), dtype)
    b = rand(rng, (o,), dtype) if bias else None
    y = fast.conv2d_direct_forward(x, weight, b, g["padding"])
    check(y, ref.conv2d_direct_forward(x, weight, b, g["padding"]), dtype)
    grad = rand(rng, y.shape, dtype)
    want = ref.conv2d_direct_backward(grad, x, weight, g["padding"])
    for a, w in zip(fast.conv2d_direct_backward(grad, x, weight, g["padding"]), want,
                    strict=True):
        check(a, w, dtype)
    dx, dw, db = fast.conv2d_direct_backward(grad, x, weight, g["padding"], input_grad=False)
    assert dx is None
    check(dw, want[1], dtype)
    check(db, want[2], dtype)
    dx, dw, db = fast.conv2d_direct_backward(grad, x, weight, g["padding"], weight_grad=False)
    assert dw is None and ref.conv2d_direct_backward(grad, x, weight, g["padding"],
                                                     weight_grad=False)[1] is None
    check(dx, want[0], dtype)
    check(db, want[2], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "c", "o", "hw", "k", "pad"), [
    (19, 2, 13, (9, 11), 3, 1),   # more images than the 16 parts: uneven shares
    (33, 1, 17, (12, 10), 5, 2),  # 8 + 8 + 1 output channels per pass over a tap
    (5, 6, 16, (14, 14), 5, 0),   # fewer images than parts, LeNet-5's second layer
    (3, 3, 8, (1, 6), 1, 0),      # one output row
])
def test_direct_conv_backward_batches_and_channel_groups(
        dtype: type, n: int, c: int, o: int, hw: tuple[int, int], k: int, pad: int) -> None:
    """The direct backward splits the batch into parts that widen their own images, and
    takes output channels eight and four at a time: every split and remainder agrees."""
    rng = np.random.default_rng(n * 100 + o)
    x = rand(rng, (n, c, *hw), dtype)
    weight = rand(rng, (o, c, k, k), dtype)
    grad = rand(rng, (n, o, hw[0] + 2 * pad - k + 1, hw[1] + 2 * pad - k + 1), dtype)
    want = ref.conv2d_direct_backward(grad, x, weight, (pad, pad))
    for flags in ({}, {"input_grad": False}, {"weight_grad": False},
                  {"input_grad": False, "weight_grad": False}):
        got = fast.conv2d_direct_backward(grad, x, weight, (pad, pad), **flags)
        for a, b, on in zip(got, want, (flags.get("input_grad", True),
                                        flags.get("weight_grad", True), True), strict=True):
            if on:
                check_sums(a, b, dtype)  # each dW value sums thousands of products
            else:
                assert a is None


tiled_geometry = st.fixed_dictionaries({
    "n": st.integers(1, 3), "c": st.integers(1, 9), "o": st.integers(1, 40),
    "kh": st.integers(1, 5), "kw": st.integers(1, 5), "rows": st.integers(1, 6),
    "extra": st.integers(0, 14), "bias": st.booleans(), "seed": st.integers(0, 2**31),
    # padding before the image (negative: cropped) and the rows/columns the output
    # reaches past the image's end (padding after it; negative: not read)
    "top": st.integers(-1, 3), "left": st.integers(-1, 3),
    "after_h": st.integers(-2, 3), "after_w": st.integers(-2, 3),
})


def tiled_input(g: dict, c: int, stride: tuple, dtype: type) -> tuple:
    """An input ``(N, C, H, W)`` and an output size such that the padded input the output
    reads is ``rows`` outputs high and at least one tile wide."""
    (sh, sw), rng = stride, np.random.default_rng(g["seed"])
    oh, ow = g["rows"], fast.TILE_PIXELS + g["extra"]
    hz, wz = (oh - 1) * sh + g["kh"], (ow - 1) * sw + g["kw"]  # the padded extent read
    h = max(1, hz - g["top"] - g["after_h"])
    w = max(1, wz - g["left"] - g["after_w"])
    return rand(rng, (g["n"], c, h, w), dtype), (oh, ow), rng


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=tiled_geometry, relu=st.booleans())
def test_tiled_conv_kernel_matches_reference(dtype: type, g: dict, relu: bool) -> None:
    """The register-tiled convolution: any channel count (full and partial blocks of
    lanes), any width of at least one tile (overlapping last tiles), zero padding (or a
    crop) before and after the image made where the kernel reads it, with or without the
    ReLU as the sums are stored."""
    x, out_hw, rng = tiled_input(g, g["c"], (1, 1), dtype)
    weight = rand(rng, (g["o"], g["c"], g["kh"], g["kw"]), dtype)
    b = rand(rng, (g["o"],), dtype) if g["bias"] else None
    pad = (g["top"], g["left"])
    check_sums(fast.conv2d_tiled(x, weight, b, (1, 1), pad, out_hw, relu=relu),
               ref.conv2d_tiled(x, weight, b, (1, 1), pad, out_hw, relu=relu), dtype)


@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.parametrize("o", [16, 24, 40, 64])
def test_tiled_conv_two_blocks_a_tile_match_reference(monkeypatch, pairs: bool, o: int) -> None:
    """8-wide tiles over two blocks of 16 output channels at once (``TILE_PAIRS``, chosen
    by CPU): a full pair, a pair whose second block is partial, a pair and a single block
    left over; forward with and without the ReLU, strided, the input gradient (tiled
    convolutions of G) and the weight gradient, on whatever CPU runs the test."""
    monkeypatch.setattr(fast, "TILE_WIDTHS", (6, 8))
    monkeypatch.setattr(fast, "TILE_PAIRS", pairs)
    rng = np.random.default_rng(o)
    x = rand(rng, (3, 5, 11, 13), np.float32)
    weight = rand(rng, (o, 5, 3, 3), np.float32)
    b = rand(rng, (o,), np.float32)
    for stride in ((1, 1), (2, 2)):
        for relu in (False, True):
            check_sums(fast.conv2d_tiled(x, weight, b, stride, (1, 1), relu=relu),
                       ref.conv2d_tiled(x, weight, b, stride, (1, 1), relu=relu), np.float32)
    g = rand(rng, (3, 5, 11, 13), np.float32)
    w_t = rand(rng, (5, o, 3, 3), np.float32)  # dx of a layer with o input channels
    check_sums(fast.conv2d_tiled_input_grad(g, w_t, (1, 1), (1, 1), (11, 13)),
               ref.conv2d_tiled_input_grad(g, w_t, (1, 1), (1, 1), (11, 13)), np.float32)
    g2 = rand(rng, (3, 5, 6, 7), np.float32)  # stride 2: one tiled convolution per phase
    check_sums(fast.conv2d_tiled_input_grad(g2, w_t, (2, 2), (1, 1), (11, 13)),
               ref.conv2d_tiled_input_grad(g2, w_t, (2, 2), (1, 1), (11, 13)), np.float32)
    for c, stride in ((8, (1, 1)), (16, (2, 2)), (6, (1, 1))):  # groups of 8 take pairs
        xc = rand(rng, (3, c, 11, 13), np.float32)
        out = fast.conv2d_tiled(xc, rand(rng, (o, c, 3, 3), np.float32), None, stride, (1, 1))
        gc = rand(rng, out.shape, np.float32)
        check_sums(fast.conv2d_tiled_weight_grad(gc, xc, 3, 3, stride, (1, 1)),
                   ref.conv2d_tiled_weight_grad(gc, xc, 3, 3, stride, (1, 1)), np.float32)


def test_tiled_conv_relu_keeps_nan() -> None:
    x = np.ones((1, 2, 3, 8), dtype=np.float32)
    x[0, 1, 1, 4] = np.nan
    y = fast.conv2d_tiled(x, -np.ones((3, 2, 3, 3), dtype=np.float32), None, (1, 1), (1, 1),
                          relu=True)
    assert np.isnan(y[0, :, :, 3:6]).all() and np.isnan(y).sum() == 27
    assert (y[~np.isnan(y)] == 0).all()  # every other sum is negative


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 3, 7), (300, 70, 4)])
def test_channel_affine_and_add_relu_match_reference(dtype: type, shape: tuple) -> None:
    """Per-channel scale and shift (then ReLU), a residual sum, and a residual sum with its
    ReLU: fresh outputs and in place, NaN kept."""
    rng = np.random.default_rng(sum(shape))
    x, other = rand(rng, shape, dtype), rand(rng, shape, dtype)
    x.reshape(-1)[7] = np.nan
    scale, shift = rand(rng, (shape[1],), dtype), rand(rng, (shape[1],), dtype)
    for relu in (False, True):
        want = ref.channel_affine(x, scale, shift, relu, np.empty_like(x))
        check(fast.channel_affine(x, scale, shift, relu, np.empty_like(x)), want, dtype)
        inplace = x.copy()
        assert fast.channel_affine(inplace, scale, shift, relu, inplace) is inplace
        check(inplace, want, dtype)
        assert np.isnan(want.reshape(-1)[7])
    total = ref.add(x, other, np.empty_like(x))
    check(fast.add(x, other, np.empty_like(x)), total, dtype)
    inplace = x.copy()
    check(fast.add(inplace, other, inplace), total, dtype)
    want = ref.add_relu(x, other, np.empty_like(x))
    check(fast.add_relu(x, other, np.empty_like(x)), want, dtype)
    inplace = x.copy()
    check(fast.add_relu(inplace, other, inplace), want, dtype)
    assert np.isnan(want.reshape(-1)[7]) and (want[~np.isnan(want)] >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=tiled_geometry, stride=st.sampled_from([(1, 1), (2, 2), (1, 2), (3, 1)]))
def test_tiled_kernels_with_strides_match_reference(dtype: type, g: dict, stride: tuple) -> None:
    """Forward and weight gradient of the tiled convolution, strided or not, padded or
    not; the weight gradient's channel groups of 6 or 8 (a last group overlapping the one
    before) and its chunks of images."""
    c = g["c"] + 5  # the weight gradient needs at least 6 input channels
    x, out_hw, rng = tiled_input(g, c, stride, dtype)
    weight = rand(rng, (g["o"], c, g["kh"], g["kw"]), dtype)
    b = rand(rng, (g["o"],), dtype) if g["bias"] else None
    pad = (g["top"], g["left"])
    y = fast.conv2d_tiled(x, weight, b, stride, pad, out_hw)
    check_sums(y, ref.conv2d_tiled(x, weight, b, stride, pad, out_hw), dtype)
    grad = rand(rng, y.shape, dtype)
    check_sums(fast.conv2d_tiled_weight_grad(grad, x, g["kh"], g["kw"], stride, pad),
               ref.conv2d_tiled_weight_grad(grad, x, g["kh"], g["kw"], stride, pad), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=st.fixed_dictionaries({
    "n": st.integers(1, 3), "c": st.integers(1, 20), "o": st.integers(1, 24),
    "k": st.integers(1, 5), "sh": st.integers(1, 3), "sw": st.integers(1, 3),
    "pad": st.integers(0, 2), "extra_h": st.integers(0, 9), "extra_w": st.integers(0, 9),
    "seed": st.integers(0, 2**31)}))
def test_tiled_input_grad_by_phases_matches_reference(dtype: type, g: dict) -> None:
    """dx of a strided (or not) convolution as one stride-1 tiled convolution per phase
    of dx: any stride, kernel (smaller than the stride too: unread inputs get 0), padding
    and size, against the plain twin, which is checked against the layer below."""
    rng = np.random.default_rng(g["seed"])
    sh, sw, k, pad = g["sh"], g["sw"], g["k"], min(g["pad"], g["k"] - 1)
    h = fast.TILE_PIXELS * sh + g["extra_h"]  # every phase at least a tile wide
    w = fast.TILE_PIXELS * sw + g["extra_w"]
    oh, ow = (h + 2 * pad - k) // sh + 1, (w + 2 * pad - k) // sw + 1
    weight = rand(rng, (g["o"], g["c"], k, k), dtype)
    grad = rand(rng, (g["n"], g["o"], oh, ow), dtype)
    args = ((sh, sw), (pad, pad), (h, w))
    check_sums(fast.conv2d_tiled_input_grad(grad, weight, *args),
               ref.conv2d_tiled_input_grad(grad, weight, *args), dtype)


def test_reference_tiled_input_grad_is_the_layers_backward() -> None:
    from tinycnn.layers.conv import Conv2D

    rng = np.random.default_rng(4)
    for stride, padding, k in (((2, 2), 1, 3), ((3, 2), 0, 2), ((1, 1), 2, 5), ((2, 3), 1, 1)):
        layer = Conv2D(5, 7, k, stride=stride, padding=padding, dtype=np.float64, rng=rng)
        x = rng.standard_normal((2, 5, 11, 13))
        g = rng.standard_normal(layer(x).shape)
        np.testing.assert_allclose(
            ref.conv2d_tiled_input_grad(g, layer.weight.data, stride, (padding, padding),
                                        (11, 13)),
            layer.backward(g), rtol=1e-12, atol=1e-12)


def test_tiled_weight_grad_chunks_of_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch summed in chunks of several images a call (and parts of uneven size) gives
    the same weight gradient as one image a call."""
    rng = np.random.default_rng(11)
    x = rand(rng, (37, 8, 9, 10), np.float64)
    grad = rand(rng, (37, 20, 9, 10), np.float64)
    want = ref.conv2d_tiled_weight_grad(grad, x, 3, 3, (1, 1), (1, 1))
    for size in (1, 2 * (8 * 11 * 12 + 9 * 10 * 16) * 8, 1 << 30):  # 1, 2, 3 images a call
        monkeypatch.setattr(fast, "_DW_CHUNK_BYTES", size)
        check_sums(fast.conv2d_tiled_weight_grad(grad, x, 3, 3, (1, 1), (1, 1)), want,
                   np.float64)


@pytest.mark.parametrize("stride", [(1, 1), (2, 1)])
def test_tiled_conv_bands_of_rows(monkeypatch: pytest.MonkeyPatch, stride: tuple) -> None:
    """Tasks of 1 to 16 output rows (a last band shorter than the others, a band held to
    the byte cap, one band for the whole image) give the same convolution, and the band
    chosen keeps to its limits."""
    rng = np.random.default_rng(12)
    x = rand(rng, (2, 5, 2 * 37, 11), np.float64)
    weight = rand(rng, (20, 5, 3, 3), np.float64)
    bias = rand(rng, (20,), np.float64)
    want = ref.conv2d_tiled(x, weight, bias, stride, (1, 1))
    monkeypatch.setattr(fast, "threads", lambda: 1)  # enough tasks for bands of any height
    oh = want.shape[2]
    wsp = (want.shape[3] - 1) * stride[1] + 3
    row_bytes = 5 * wsp * 8
    for band, cap in ((1, 1 << 30), (5, 1 << 30), (16, 1 << 30), (16, 7 * row_bytes),
                      (16, 1), (64, 1 << 30)):
        monkeypatch.setattr(fast, "TILE_BAND", band)
        monkeypatch.setattr(fast, "TILE_BAND_BYTES", cap)
        chosen = fast.tile_band(5, oh, 2, 3, stride[0], wsp, 8)
        copied = (chosen - 1) * stride[0] + 3
        assert 1 <= chosen <= min(band, oh, 2 * oh // 4)
        assert chosen == 1 or copied * row_bytes <= cap
        check_sums(fast.conv2d_tiled(x, weight, bias, stride, (1, 1)), want, np.float64)


def test_tiled_conv_refuses_rows_narrower_than_a_tile() -> None:
    x = np.zeros((1, 2, 8, fast.TILE_PIXELS + 1), dtype=np.float32)
    with pytest.raises(fast.KernelShapeError, match="at least 6 wide"):
        fast.conv2d_tiled(x, np.zeros((4, 2, 3, 3), dtype=np.float32), None)


def test_reference_tiled_conv_is_the_layers_convolution() -> None:
    """The plain twin against the reference Conv2D layer, padded or strided."""
    rng = np.random.default_rng(3)
    from tinycnn.layers.conv import Conv2D

    for stride, padding in (((1, 1), 1), ((2, 2), 1), ((1, 1), 2), ((2, 1), 0)):
        layer = Conv2D(5, 7, 3, stride=stride, padding=padding, dtype=np.float64, rng=rng)
        layer.bias.data[...] = rng.standard_normal(7)
        x = rng.standard_normal((2, 5, 9, 10))
        np.testing.assert_allclose(
            ref.conv2d_tiled(x, layer.weight.data, layer.bias.data, stride,
                             (padding, padding)),
            layer(x), rtol=1e-12, atol=1e-12)


def test_reference_direct_conv_is_the_im2col_convolution() -> None:
    """The tap-loop oracle against the im2col oracle, forward and both gradients."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 6))
    weight = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    y = ref.conv2d_direct_forward(x, weight, b, (1, 2))
    cols = ref.im2col(x, 3, 2, (1, 1), (1, 2))
    rows = cols @ weight.reshape(4, -1).T + b
    np.testing.assert_allclose(y, rows.reshape(2, *y.shape[2:], 4).transpose(0, 3, 1, 2),
                               rtol=1e-12, atol=1e-12)
    grad = rng.standard_normal(y.shape)
    g_rows = grad.transpose(0, 2, 3, 1).reshape(-1, 4)
    dx, dw, db = ref.conv2d_direct_backward(grad, x, weight, (1, 2))
    np.testing.assert_allclose(db, grad.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(dw, (g_rows.T @ cols).reshape(weight.shape), rtol=1e-12)
    want_dx = ref.col2im(g_rows @ weight.reshape(4, -1), x.shape, 3, 2, (1, 1), (1, 2))
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-12)


def test_reference_depthwise_is_a_grouped_im2col_convolution() -> None:
    """The tap-loop oracle against the im2col oracle: one GEMM per channel."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    weight = rng.standard_normal((3, 1, 3, 2))
    geo = ((2, 1), (1, 1), (1, 2))
    y = ref.depthwise_conv2d_forward(x, weight, *geo)
    for c in range(3):
        cols = ref.im2col(x[:, c : c + 1], 3, 2, *geo)
        want = (cols @ weight[c].reshape(-1)).reshape(2, *y.shape[2:])
        np.testing.assert_allclose(y[:, c], want, rtol=1e-12, atol=1e-12)


CONV_PATH_CASES = [  # (in, out, kernel, stride, padding, dilation, groups, H, W)
    (4, 3, 3, 1, 1, 1, 1, 9, 8),  # stride 1, 36 taps, 3 outputs: "direct" (else "wide")
    (3, 5, 3, 1, 1, 1, 1, 8, 9),
    (4, 6, 3, 1, 2, 1, 1, 9, 8),  # padding > k - 1: the gradient is cropped, not padded
    (1, 6, 5, 1, 2, 1, 1, 9, 10),  # one input channel, 5x5: "direct" (25 taps)
    (2, 4, 3, 1, 1, 1, 1, 6, 11),  # "direct" with input gradient
    (1, 11, 5, 1, 0, 1, 1, 9, 8),  # 25 taps x 11 outputs: "direct"
    (3, 2, (3, 2), 1, (2, 1), (1, 2), 1, 10, 7),
    (4, 6, 3, 2, 1, 1, 1, 9, 9),  # stride 2
    (4, 4, 1, 1, 0, 1, 1, 5, 6),  # pointwise: one GEMM for the batch
    (3, 5, 1, 2, 0, 1, 1, 9, 9),  # 1x1 with stride 2: the per-image path
    (5, 5, 3, 1, 1, 1, 5, 7, 7),  # depthwise
    (4, 4, (2, 3), (2, 1), (1, 0), (2, 1), 4, 9, 8),
    (4, 17, 3, 1, 1, 1, 1, 7, 6),  # 36 taps, 17 outputs: "wide"
]


@pytest.mark.parametrize("case", CONV_PATH_CASES)
@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("direct", [True, False], ids=["direct-on", "direct-off"])
@pytest.mark.parametrize("tiles", [True, False], ids=["tiles-on", "tiles-off"])
def test_conv_paths_agree_with_the_im2col_path(
    case: tuple, input_grad: bool, direct: bool, tiles: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastConv2D's tiled, wide, per-image and depthwise paths give the im2col path's
    results."""
    from tinycnn.fast.conv import FastConv2D as Conv2D

    c, o, k, s, p, d, groups, h, w = case
    rng = np.random.default_rng(0)
    conv = Conv2D(c, o, k, stride=s, padding=p, dilation=d, groups=groups, dtype=np.float64,
                  rng=rng)
    conv.bias.data[:] = rng.standard_normal(o)
    conv.input_grad = input_grad
    x = rng.standard_normal((5, c, h, w))
    # tiny chunks (and a short last one), every image size takes the per-image path
    monkeypatch.setattr(Conv2D, "chunk_bytes", 2 * c * w * h * 8)
    monkeypatch.setattr(Conv2D, "min_image_positions", 1)
    monkeypatch.setattr(Conv2D, "min_wide_positions", 1)
    monkeypatch.setattr(Conv2D, "max_cached_cols_bytes", 0)  # no cached columns anywhere
    if not direct:  # the small layers take the wide path instead
        monkeypatch.setattr(Conv2D, "max_direct_macs", 0)
    monkeypatch.setattr(Conv2D, "use_tiles", tiles)
    results = {}
    for path in ("fast", "rows"):
        if path == "rows":
            monkeypatch.setattr(conv, "_path", lambda _shape, _gpu: "rows")
        conv.zero_grad()
        y = conv(x)
        grad = np.random.default_rng(1).standard_normal(y.shape)
        dx = conv.backward(grad)
        results[path] = (y, dx, conv.weight.grad, conv.bias.grad)
    fast_path = Conv2D._path(conv, x.shape, False)
    wide = s == 1 and k != 1
    expected = "pointwise" if (k, s, p) == (1, 1, 0) else "wide" if wide else "images"
    kh, kw = (k, k) if isinstance(k, int) else k
    taps = c * kh * kw
    narrow = o <= Conv2D.max_direct_out_channels and taps * o <= Conv2D.max_direct_macs
    if wide and d == 1 and Conv2D.max_direct_macs > 0 and (
            taps <= Conv2D.max_direct_taps or narrow):
        expected = "direct"
    ow = (w + 2 * (p if isinstance(p, int) else p[1]) - (d if isinstance(d, int) else d[1])
          * (kw - 1) - 1) // (s if isinstance(s, int) else s[1]) + 1
    if (tiles and expected in ("wide", "direct", "images", "rows") and d == 1
            and ow >= fast.TILE_PIXELS and o >= Conv2D.min_tiled_out_channels
            and taps >= Conv2D.min_tiled_taps):
        expected = "tiled"
    assert fast_path == ("depthwise" if groups > 1 else expected)
    for a, b in zip(results["fast"], results["rows"], strict=True):
        if b is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [CONV_PATH_CASES[0], CONV_PATH_CASES[3], CONV_PATH_CASES[4],
                                  CONV_PATH_CASES[5], CONV_PATH_CASES[7], CONV_PATH_CASES[-1]])
def test_conv_fast_paths_pass_gradcheck(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cases 0, 3, 4 and 5 take the direct path, the last the wide one, 7 the per-image
    one."""
    from tinycnn.fast.conv import FastConv2D as Conv2D
    from tinycnn.gradcheck import gradcheck

    c, o, k, s, p, d, groups, h, w = case
    monkeypatch.setattr(Conv2D, "min_image_positions", 1)
    monkeypatch.setattr(Conv2D, "min_wide_positions", 1)
    monkeypatch.setattr(Conv2D, "chunk_bytes", 2 * c * w * h * 8)
    conv = Conv2D(c, o, k, stride=s, padding=p, dilation=d, groups=groups, dtype=np.float64,
                  rng=np.random.default_rng(2))
    x = np.random.default_rng(3).standard_normal((3, c, h, w))
    assert conv._path(x.shape, False) != "rows"
    gradcheck(conv, x, max_entries=200)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=conv_geometry)
def test_wide_columns_match_reference_and_im2col(dtype: type, g: dict) -> None:
    """im2col_wide of the padded input: the valid columns are im2col_images' columns."""
    ph, pw = g["padding"]
    rng = np.random.default_rng(g["seed"])
    x = rand(rng, (g["n"], g["c"], g["h"], g["w"]), dtype)
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw, dil = g["kh"], g["kw"], g["dilation"]
    oh, ow = xpad.shape[2] - dil[0] * (kh - 1), xpad.shape[3] - dil[1] * (kw - 1)
    assume(oh >= 1 and ow >= 1)
    cols = fast.im2col_wide(xpad, kh, kw, dil)
    check(cols, ref.im2col_wide(xpad, kh, kw, dil), dtype)
    valid = cols.reshape(g["n"], -1, oh, xpad.shape[3])[..., :ow].reshape(g["n"], -1, oh * ow)
    check(valid, ref.im2col_images(x, kh, kw, (1, 1), (ph, pw), dil), dtype)
    out = np.full(cols.shape, np.nan, dtype=dtype)  # a reused buffer is fully overwritten
    fast.im2col_wide(xpad, kh, kw, dil, out=out)
    check(out, cols, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_crop_bias_and_widen_match_reference(dtype: type, with_bias: bool, layout: str) -> None:
    """Both kernels take strided views (the pointwise path hands them transposed arrays)."""
    rng = np.random.default_rng(4)
    src = rand(rng, (3, 2, 5, 7), dtype)
    if layout == "transposed":
        src = np.ascontiguousarray(src.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    bias = rand(rng, (2,), dtype) if with_bias else None
    outs = [np.full((3, 2, 4, 5), np.nan, dtype=dtype) for _ in range(2)]
    check(fast.crop_bias(src, bias, outs[0]), ref.crop_bias(src, bias, outs[1]), dtype)
    np.testing.assert_allclose(outs[1] - (0 if bias is None else bias[:, None, None]),
                               src[:, :, :4, :5], rtol=1e-6, atol=1e-6)
    wide = [np.full((3, 2, 5, 10), np.nan, dtype=dtype) for _ in range(2)]
    check(fast.widen(src, wide[0]), ref.widen(src, wide[1]), dtype)
    assert not np.isnan(wide[0]).any() and (wide[0][..., 7:] == 0).all()


@pytest.mark.parametrize(("a_shape", "b_shape"), [
    ((4, 6), (3, 6, 5)), ((3, 4, 6), (6, 5)), ((3, 4, 6), (3, 6, 5)), ((4, 6), (6, 5)),
])
def test_engine_matmul_matches_numpy(a_shape: tuple, b_shape: tuple) -> None:
    from tinycnn.fast import threads as backend

    rng = np.random.default_rng(5)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    want = np.matmul(a, b)
    np.testing.assert_allclose(backend.matmul(a, b), want, rtol=1e-12)
    out = np.full(want.shape, np.nan)
    assert backend.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-12)
    if len(a_shape) == len(b_shape) == 3:
        acc = np.ones(want.shape[1:])
        backend.matmul_sum(a, b, acc)
        np.testing.assert_allclose(acc, 1 + want.sum(axis=0), rtol=1e-12)


def test_reference_kernels_run_the_reference_layer() -> None:
    """Under use_kernels("reference") an accelerated Conv2D runs the layer's own im2col code
    (no path of the engine), so 'reference' means the same algorithm in the speed ratios."""
    import tinycnn
    from tinycnn.layers.conv import Conv2D

    conv = tinycnn.accelerate(Conv2D(1, 6, 5, padding=2))
    x = np.zeros((4, 1, 28, 28), dtype=np.float32)
    with tinycnn.use_kernels("numba"):
        conv(x)
        assert conv.impl == "direct"
    with tinycnn.use_kernels("reference"):
        conv(x)
        assert conv.impl is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("k", "s", "p"), [(2, 2, 0), (2, 1, 0), (3, 2, 1), (3, 3, 0)])
def test_maxpool_kernel_nan_and_inf_like_numpy_argmax(dtype: type, k: int, s: int, p: int) -> None:
    """NaN anywhere wins its window (the first NaN), +inf wins, inf and -inf together give
    inf (their sum is NaN, which must not be mistaken for a NaN in the window)."""
    rng = np.random.default_rng(k * 10 + s)
    x = rand(rng, (2, 3, 7, 8), dtype)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, 30, replace=False)
    flat[idx[:10]] = np.nan
    flat[idx[10:20]] = np.inf
    flat[idx[20:]] = -np.inf
    got, got_arg = fast.maxpool2d_forward(x, k, k, (s, s), (p, p))
    want, want_arg = ref.maxpool2d_forward(x, k, k, (s, s), (p, p))
    np.testing.assert_array_equal(got, want)  # NaN positions included
    np.testing.assert_array_equal(got_arg, want_arg)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("k", "s", "p"), [(2, 2, 0), (2, 1, 0), (3, 2, 1), (3, 3, 0)])
def test_maxpool_kernel_of_relu_matches_pooling_the_relu(dtype: type, k: int, s: int,
                                                          p: int) -> None:
    """relu=True pools relu(x) without making it: the same output and argmax (a window of
    non-positive values is all zeros after the ReLU: its first tap wins), NaN included."""
    rng = np.random.default_rng(k + s + p)
    x = np.round(rand(rng, (2, 3, 9, 8), dtype) - 0.7, 1)  # many all-negative windows, ties
    x.reshape(-1)[rng.choice(x.size, 5, replace=False)] = np.nan
    got, got_arg = fast.maxpool2d_forward(x, k, k, (s, s), (p, p), relu=True)
    want, want_arg = ref.maxpool2d_forward(np.maximum(x, 0), k, k, (s, s), (p, p))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_arg, want_arg)
    g = rand(rng, got.shape, dtype)
    check(fast.maxpool2d_backward(g, got_arg, x.shape, k, k, (s, s), (p, p), relu_out=got),
          ref.relu_backward(ref.maxpool2d_backward(g, want_arg, x.shape, k, k, (s, s), (p, p)),
                            np.maximum(x, 0)), dtype)
