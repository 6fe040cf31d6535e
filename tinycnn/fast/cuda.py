"""CUDA kernels through CuPy, with the functions and results of :mod:`.reference`.

The convolution and pooling kernels are written in *gather* form: one GPU thread computes
one output element and only reads, so no two threads ever write the same element and no
atomics are needed (col2im and the pooling backward passes included). Matrix products run
through cuBLAS when layers call ``@`` on CuPy arrays; memory comes from CuPy's pool, so
once the pool is warm a training step should not allocate from the driver (a GPU test in
``tests/test_gpu.py`` checks this).

Fused elementwise kernels replace chains of NumPy-style operations that would each read
and write the whole array: the conv epilogue (GEMM rows to NCHW and bias in one pass),
BatchNorm's statistics, normalization and backward (per-channel sums accumulated in
float64), and the SGD and Adam parameter updates. Which of them a twin calls is the
twin's choice (``docs/gpu.md`` lists what runs where).

Kernels without a CUDA version here fall back to the reference implementation, which
runs on CuPy arrays unchanged because it takes its array module from its inputs.

Index arithmetic is done in 64 bits wherever a product of sizes can pass 2**31 (the
column matrix of a large batch does). The kernels are compiled by CuPy on first use and
cached on disk (``~/.cupy/kernel_cache``).

This module imports CuPy at import time; :func:`tinycnn.fast.kernels_for` only loads it
for CuPy arrays, so importing tinycnn never needs CuPy.
"""

from __future__ import annotations

import math
from typing import Any

import cupy as cp

from tinycnn.fast import plain as reference

# col2im_images, im2col_images, the direct and the depthwise kernels have no CUDA version: the
# reference ones run on CuPy arrays through ``xp``. crop_bias, im2col_wide and widen serve
# Conv2D's CPU-only paths ("wide", "pointwise"; on the GPU a convolution takes the
# one-GEMM path); their reference versions are array slicing, which CuPy runs as is.
from tinycnn.fast.plain import (  # noqa: F401
    channel_sums,
    col2im_images,
    conv2d_direct_backward,
    conv2d_direct_forward,
    crop_bias,
    depthwise_conv2d_backward,
    depthwise_conv2d_forward,
    im2col_images,
    im2col_wide,
    out_size,
    pad2d,
    widen,
)

Pair = tuple[int, int]

__all__ = [
    "adam_update",
    "avgpool2d_backward",
    "avgpool2d_forward",
    "batchnorm_backward",
    "batchnorm_forward",
    "batchnorm_stats",
    "channel_sums",
    "col2im",
    "col2im_images",
    "conv2d_direct_backward",
    "conv2d_direct_forward",
    "crop_bias",
    "depthwise_conv2d_backward",
    "depthwise_conv2d_forward",
    "im2col",
    "im2col_images",
    "im2col_wide",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "out_size",
    "pad2d",
    "rows_to_nchw",
    "sgd_momentum_update",
    "widen",
]

_GEOMETRY = (
    "int32 N, int32 C, int32 H, int32 W, int32 OH, int32 OW, int32 KH, int32 KW, "
    "int32 SH, int32 SW, int32 PH, int32 PW, int32 DH, int32 DW"
)

# --------------------------------------------------------------------------- im2col / col2im

# One thread per column-matrix entry: row (n, oh, ow), column (c, ki, kj).
_im2col = cp.ElementwiseKernel(
    f"raw T x, {_GEOMETRY}",
    "T col",
    """
    const long long idx = i;
    const long long K = (long long)C * KH * KW;
    const long long row = idx / K;
    const int column = (int)(idx % K);
    const int ow = (int)(row % OW), oh = (int)((row / OW) % OH);
    const long long n = row / ((long long)OW * OH);
    const int kj = column % KW, ki = (column / KW) % KH, c = column / (KW * KH);
    const int h = oh * SH - PH + ki * DH, w = ow * SW - PW + kj * DW;
    col = (h >= 0 && h < H && w >= 0 && w < W)
        ? x[((n * C + c) * H + h) * W + w] : (T)0;
    """,
    "tinycnn_im2col",
)

# One thread per image pixel: it sums every column entry that read this pixel.
_col2im = cp.ElementwiseKernel(
    f"raw T col, {_GEOMETRY}",
    "T img",
    """
    const long long idx = i;
    const int w = (int)(idx % W), h = (int)((idx / W) % H);
    const int c = (int)((idx / ((long long)W * H)) % C);
    const long long n = idx / ((long long)W * H * C);
    const long long K = (long long)C * KH * KW;
    T acc = 0;
    for (int ki = 0; ki < KH; ++ki) {
        const int hs = h + PH - ki * DH;
        if (hs < 0 || hs % SH != 0) continue;
        const int oh = hs / SH;
        if (oh >= OH) continue;
        for (int kj = 0; kj < KW; ++kj) {
            const int ws = w + PW - kj * DW;
            if (ws < 0 || ws % SW != 0) continue;
            const int ow = ws / SW;
            if (ow >= OW) continue;
            acc += col[((n * OH + oh) * OW + ow) * K + (c * KH + ki) * KW + kj];
        }
    }
    img = acc;
    """,
    "tinycnn_col2im",
)

# ------------------------------------------------------------------------------------ pooling

_POOL_GEOMETRY = (
    "int32 C, int32 H, int32 W, int32 OH, int32 OW, int32 KH, int32 KW, "
    "int32 SH, int32 SW, int32 PH, int32 PW"
)

# Padding is skipped rather than read as -inf: the layer guarantees every window holds a
# real pixel (padding <= kernel // 2), so the result is the reference's.
_maxpool_fwd = cp.ElementwiseKernel(
    f"raw T x, {_POOL_GEOMETRY}",
    "T out, int64 argmax",
    """
    const long long idx = i;
    const int ow = (int)(idx % OW), oh = (int)((idx / OW) % OH);
    const long long nc = idx / ((long long)OW * OH);
    const long long base = nc * H * W;
    bool found = false;
    T best = 0;
    long long best_k = 0;
    for (int ki = 0; ki < KH; ++ki) {
        const int h = oh * SH - PH + ki;
        for (int kj = 0; kj < KW; ++kj) {
            const int w = ow * SW - PW + kj;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            const T v = x[base + (long long)h * W + w];
            // the first maximum wins ties; the first NaN wins the window (as np.argmax)
            if (!found || ((v > best || v != v) && best == best)) {
                best = v; best_k = ki * KW + kj; found = true;
            }
        }
    }
    out = best;
    argmax = best_k;
    """,
    "tinycnn_maxpool_fwd",
)

_maxpool_bwd = cp.ElementwiseKernel(
    f"raw T grad, raw int64 argmax, {_POOL_GEOMETRY}",
    "T dx",
    """
    const long long idx = i;
    const int w = (int)(idx % W), h = (int)((idx / W) % H);
    const long long nc = idx / ((long long)W * H);
    T acc = 0;
    for (int ki = 0; ki < KH; ++ki) {
        const int hs = h + PH - ki;
        if (hs < 0 || hs % SH != 0) continue;
        const int oh = hs / SH;
        if (oh >= OH) continue;
        for (int kj = 0; kj < KW; ++kj) {
            const int ws = w + PW - kj;
            if (ws < 0 || ws % SW != 0) continue;
            const int ow = ws / SW;
            if (ow >= OW) continue;
            const long long o = (nc * OH + oh) * OW + ow;
            if (argmax[o] == ki * KW + kj) acc += grad[o];
        }
    }
    dx = acc;
    """,
    "tinycnn_maxpool_bwd",
)

_avgpool_fwd = cp.ElementwiseKernel(
    f"raw T x, {_POOL_GEOMETRY}",
    "T out",
    """
    const long long idx = i;
    const int ow = (int)(idx % OW), oh = (int)((idx / OW) % OH);
    const long long base = idx / ((long long)OW * OH) * H * W;
    T acc = 0;
    for (int ki = 0; ki < KH; ++ki) {
        const int h = oh * SH - PH + ki;
        if (h < 0 || h >= H) continue;
        for (int kj = 0; kj < KW; ++kj) {
            const int w = ow * SW - PW + kj;
            if (w >= 0 && w < W) acc += x[base + (long long)h * W + w];
        }
    }
    out = acc / (T)(KH * KW);
    """,
    "tinycnn_avgpool_fwd",
)

_avgpool_bwd = cp.ElementwiseKernel(
    f"raw T grad, {_POOL_GEOMETRY}",
    "T dx",
    """
    const long long idx = i;
    const int w = (int)(idx % W), h = (int)((idx / W) % H);
    const long long nc = idx / ((long long)W * H);
    T acc = 0;
    for (int ki = 0; ki < KH; ++ki) {
        const int hs = h + PH - ki;
        if (hs < 0 || hs % SH != 0) continue;
        const int oh = hs / SH;
        if (oh >= OH) continue;
        for (int kj = 0; kj < KW; ++kj) {
            const int ws = w + PW - kj;
            if (ws < 0 || ws % SW != 0) continue;
            const int ow = ws / SW;
            if (ow < OW) acc += grad[(nc * OH + oh) * OW + ow];
        }
    }
    dx = acc / (T)(KH * KW);
    """,
    "tinycnn_avgpool_bwd",
)

# ---------------------------------------------------------------------------- conv epilogue

# One thread per NCHW output: it reads GEMM row (n, p), column o. HAS_BIAS is a flag (the
# bias array is not read without a bias).
_rows_to_nchw = cp.ElementwiseKernel(
    "raw T rows, raw T bias, int32 O, int32 HW, int32 HAS_BIAS",
    "T out",
    """
    const long long idx = i;
    const long long p = idx % HW;
    const int o = (int)((idx / HW) % O);
    const long long n = idx / ((long long)HW * O);
    T v = rows[(n * HW + p) * O + o];
    if (HAS_BIAS) v += bias[o];
    out = v;
    """,
    "tinycnn_rows_to_nchw",
)

# ------------------------------------------------------------------------------ BatchNorm

# Per-channel sums over axes (0, 2) of (N, C, L), accumulated in float64 like the Numba
# kernels: float32 partial sums over N*H*W = 500k values would lose digits. (CuPy pastes
# ``reduce_type`` into the kernel source as a C type: "double", not "float64".)
_channel_sum = cp.ReductionKernel(
    "T x", "T s", "x", "a + b", "s = (T)a", "0", "tinycnn_channel_sum", reduce_type="double"
)
_channel_sq_dev = cp.ReductionKernel(
    "T x, T mu",
    "T s",
    "((double)x - (double)mu) * ((double)x - (double)mu)",
    "a + b",
    "s = (T)a",
    "0",
    "tinycnn_channel_sq_dev",
    reduce_type="double",
)
_channel_dot = cp.ReductionKernel(
    "T x, T y", "T s", "(double)x * (double)y", "a + b", "s = (T)a", "0",
    "tinycnn_channel_dot", reduce_type="double",
)

# Per-channel vectors arrive as (1, C, 1) and broadcast over (N, C, L).
_bn_fwd = cp.ElementwiseKernel(
    "T x, T mean, T inv_std, T w, T b",
    "T y",
    "y = (x - mean) * inv_std * w + b",
    "tinycnn_bn_fwd",
)
_bn_normalize = cp.ElementwiseKernel(
    "T x, T mean, T inv_std", "T xhat", "xhat = (x - mean) * inv_std", "tinycnn_bn_normalize"
)

_bn_bwd = cp.ElementwiseKernel(
    "T g, T xhat, T s, T sx, T k, T m",
    "T dx",
    "dx = k * (m * g - s - xhat * sx)",
    "tinycnn_bn_bwd",
)

# ----------------------------------------------------------------------------- optimizers

# Scalars arrive as float64 and are rounded to T once, as the NumPy path does when it
# multiplies a float32 array by a Python float.
_sgd_momentum = cp.ElementwiseKernel(
    "T g, float64 lr, float64 momentum, float64 dampening, int32 nesterov",
    "T p, T buf",
    """
    buf = (T)momentum * buf + (T)(1.0 - dampening) * g;
    p -= (T)lr * (nesterov ? g + (T)momentum * buf : buf);
    """,
    "tinycnn_sgd_momentum",
)

_adam = cp.ElementwiseKernel(
    "T g, float64 step_size, float64 b1, float64 b2, float64 sqrt_bc2, float64 eps",
    "T p, T m, T v",
    """
    m = (T)b1 * m + (T)(1.0 - b1) * g;
    v = (T)b2 * v + (T)(1.0 - b2) * g * g;
    p -= (T)step_size * m / (sqrt(v) / (T)sqrt_bc2 + (T)eps);
    """,
    "tinycnn_adam",
)


# ------------------------------------------------------------------------------- wrappers


def im2col(
    x: Any, kh: int, kw: int, stride: Pair, padding: Pair, dilation: Pair = (1, 1)
) -> Any:
    """Unfold ``x (N, C, H, W)`` into ``(N*OH*OW, C*kh*kw)``; see :func:`.reference.im2col`."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    cols = cp.empty((n * oh * ow, c * kh * kw), dtype=x.dtype)
    _im2col(cp.ascontiguousarray(x), n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, cols)
    return cols


def col2im(
    cols: Any, x_shape: tuple[int, int, int, int], kh: int, kw: int,
    stride: Pair, padding: Pair, dilation: Pair = (1, 1),
) -> Any:
    """Fold ``(N*OH*OW, C*kh*kw)`` back to ``x_shape``, summing overlaps (gather form)."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    img = cp.empty((n, c, h, w), dtype=cols.dtype)
    _col2im(cp.ascontiguousarray(cols), n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, img)
    return img


def maxpool2d_forward(x: Any, kh: int, kw: int, stride: Pair, padding: Pair) -> tuple[Any, Any]:
    """``(out (N, C, OH, OW), argmax int64)``; ties go to the first maximum."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    out = cp.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = cp.empty((n, c, oh, ow), dtype=cp.int64)
    _maxpool_fwd(cp.ascontiguousarray(x), c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, out, argmax)
    return out, argmax


def maxpool2d_backward(
    grad_out: Any, argmax: Any, x_shape: tuple[int, int, int, int],
    kh: int, kw: int, stride: Pair, padding: Pair,
) -> Any:
    """Route each output gradient to its window's maximum (each input sums its windows)."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = grad_out.shape[2:]
    dx = cp.empty((n, c, h, w), dtype=grad_out.dtype)
    _maxpool_bwd(cp.ascontiguousarray(grad_out), cp.ascontiguousarray(argmax, dtype=cp.int64),
                 c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dx)
    return dx


def avgpool2d_forward(x: Any, kh: int, kw: int, stride: Pair, padding: Pair) -> Any:
    """Window means, zero padding counted in the divisor ``kh*kw``."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    out = cp.empty((n, c, oh, ow), dtype=x.dtype)
    _avgpool_fwd(cp.ascontiguousarray(x), c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, out)
    return out


def avgpool2d_backward(
    grad_out: Any, x_shape: tuple[int, int, int, int],
    kh: int, kw: int, stride: Pair, padding: Pair,
) -> Any:
    """Every input gets ``g / (kh*kw)`` from each window containing it."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = grad_out.shape[2:]
    dx = cp.empty((n, c, h, w), dtype=grad_out.dtype)
    _avgpool_bwd(cp.ascontiguousarray(grad_out), c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dx)
    return dx


def rows_to_nchw(rows: Any, bias: Any, out_shape: tuple[int, int, int, int]) -> Any:
    """GEMM rows ``(N*OH*OW, O)`` to NCHW ``(N, O, OH, OW)``, + bias (None: none)."""
    n, o, oh, ow = out_shape
    rows = cp.ascontiguousarray(rows)
    has_bias = bias is not None
    b = cp.ascontiguousarray(bias, dtype=rows.dtype) if has_bias else rows
    out = cp.empty((n, o, oh, ow), dtype=rows.dtype)
    _rows_to_nchw(rows, b, o, oh * ow, int(has_bias), out)
    return out


def _as_ncl(x: Any) -> Any:
    n, c = x.shape[:2]
    return x.reshape(n, c, math.prod(x.shape[2:]))


def batchnorm_stats(x: Any) -> tuple[Any, Any]:
    """Per-channel mean and biased variance of ``x (N, C, ...)`` over every axis but 1."""
    x3 = _as_ncl(cp.ascontiguousarray(x))
    m = x3.shape[0] * x3.shape[2]
    mean = _channel_sum(x3, axis=(0, 2)) / m
    var = _channel_sq_dev(x3, mean.reshape(1, -1, 1), axis=(0, 2)) / m
    return mean.astype(x.dtype, copy=False), var.astype(x.dtype, copy=False)


def batchnorm_forward(x: Any, mean: Any, inv_std: Any, weight: Any, bias: Any) -> Any:
    """``y = weight * (x - mean) * inv_std + bias`` per channel, one pass; without
    ``weight``/``bias`` (``None``) ``y = (x - mean) * inv_std``."""
    x3 = _as_ncl(cp.ascontiguousarray(x))
    dt = x.dtype

    def per_channel(v: Any) -> Any:
        return v.astype(dt, copy=False).reshape(1, -1, 1)

    if weight is None:
        return _bn_normalize(x3, per_channel(mean), per_channel(inv_std)).reshape(x.shape)
    y = _bn_fwd(x3, per_channel(mean), per_channel(inv_std), per_channel(weight),
                per_channel(bias))
    return y.reshape(x.shape)


def batchnorm_backward(grad_out: Any, x: Any, mean: Any, inv_std: Any,
                       scale: Any) -> tuple[Any, Any, Any]:
    """``(dx, sum(g), sum(g * xhat))`` with ``xhat = (x - mean) * inv_std`` and
    ``dx = scale / m * (m*g - sum(g) - xhat * sum(g*xhat))``."""
    dt = grad_out.dtype
    g3 = _as_ncl(cp.ascontiguousarray(grad_out))
    x3 = _as_ncl(cp.ascontiguousarray(x, dtype=dt))
    xh3 = _bn_normalize(x3, mean.astype(dt, copy=False).reshape(1, -1, 1),
                        inv_std.astype(dt, copy=False).reshape(1, -1, 1))
    m = g3.shape[0] * g3.shape[2]
    g_sum = _channel_sum(g3, axis=(0, 2))
    gx_sum = _channel_dot(g3, xh3, axis=(0, 2))
    k = (scale.astype(dt, copy=False) / m).reshape(1, -1, 1)
    dx = _bn_bwd(g3, xh3, g_sum.reshape(1, -1, 1), gx_sum.reshape(1, -1, 1), k, dt.type(m))
    return dx.reshape(grad_out.shape), g_sum, gx_sum


def sgd_momentum_update(
    p: Any, g: Any, buf: Any, lr: float, momentum: float, dampening: float, nesterov: bool
) -> None:
    """In place: ``buf <- momentum buf + (1 - dampening) g``; ``p <- p - lr (buf or Nesterov)``.

    ``buf`` must already exist (the optimizer copies ``g`` into it on the first step).
    """
    _sgd_momentum(g, float(lr), float(momentum), float(dampening), int(bool(nesterov)), p, buf)


def adam_update(
    p: Any, g: Any, m: Any, v: Any, lr: float, b1: float, b2: float, eps: float, step: int
) -> None:
    """In place, one Adam step ``t = step``: moments, bias corrections, parameter update.

    ``p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    """
    step_size = lr / (1.0 - b1**step)
    sqrt_bc2 = math.sqrt(1.0 - b2**step)
    _adam(g, float(step_size), float(b1), float(b2), sqrt_bc2, float(eps), p, m, v)


def __getattr__(name: str) -> Any:
    """Kernels with no CUDA version: the reference one, running on CuPy through ``xp``."""
    return getattr(reference, name)
