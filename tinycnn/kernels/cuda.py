"""CUDA kernels through CuPy, with the functions and results of :mod:`.reference`.

Every kernel is written in *gather* form: one GPU thread computes one output element and
only reads, so no two threads ever write the same element and no atomics are needed
(col2im and the pooling backward passes included). Matrix products run through cuBLAS
when layers call ``@`` on CuPy arrays; memory comes from CuPy's pool, so a training step
does not allocate from the driver once the pool is warm.

Kernels without a CUDA version here fall back to the reference implementation, which
runs on CuPy arrays unchanged because it takes its array module from its inputs.

This module imports CuPy at import time; :func:`tinycnn.backend.kernels` only loads it
for CuPy arrays, so importing tinycnn never needs CuPy.
"""

from __future__ import annotations

from typing import Any

import cupy as cp

from tinycnn.kernels import reference
from tinycnn.kernels.reference import out_size

Pair = tuple[int, int]

_GEOMETRY = (
    "int32 N, int32 C, int32 H, int32 W, int32 OH, int32 OW, int32 KH, int32 KW, "
    "int32 SH, int32 SW, int32 PH, int32 PW, int32 DH, int32 DW"
)

# One thread per column-matrix entry: row (n, oh, ow), column (c, ki, kj).
_im2col = cp.ElementwiseKernel(
    f"raw T x, {_GEOMETRY}",
    "T col",
    """
    const int K = C * KH * KW;
    const int row = i / K, column = i % K;
    const int ow = row % OW, oh = (row / OW) % OH, n = row / (OW * OH);
    const int kj = column % KW, ki = (column / KW) % KH, c = column / (KW * KH);
    const int h = oh * SH - PH + ki * DH, w = ow * SW - PW + kj * DW;
    col = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : (T)0;
    """,
    "tinycnn_im2col",
)

# One thread per image pixel: it sums every column entry that read this pixel.
_col2im = cp.ElementwiseKernel(
    f"raw T col, {_GEOMETRY}",
    "T img",
    """
    const int w = i % W, h = (i / W) % H, c = (i / (W * H)) % C, n = i / (W * H * C);
    const int K = C * KH * KW;
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

_POOL_GEOMETRY = (
    "int32 C, int32 H, int32 W, int32 OH, int32 OW, int32 KH, int32 KW, "
    "int32 SH, int32 SW, int32 PH, int32 PW"
)

_maxpool_fwd = cp.ElementwiseKernel(
    f"raw T x, {_POOL_GEOMETRY}",
    "T out, int64 argmax",
    """
    const int ow = i % OW, oh = (i / OW) % OH, nc = i / (OW * OH);
    const long long base = (long long)nc * H * W;
    bool found = false;
    T best = 0;
    long long best_k = 0;
    for (int ki = 0; ki < KH; ++ki) {
        const int h = oh * SH - PH + ki;
        for (int kj = 0; kj < KW; ++kj) {
            const int w = ow * SW - PW + kj;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            const T v = x[base + h * W + w];
            if (!found || v > best) { best = v; best_k = ki * KW + kj; found = true; }
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
    const int w = i % W, h = (i / W) % H, nc = i / (W * H);
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
            const long long o = ((long long)nc * OH + oh) * OW + ow;
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
    const int ow = i % OW, oh = (i / OW) % OH, nc = i / (OW * OH);
    const long long base = (long long)nc * H * W;
    T acc = 0;
    for (int ki = 0; ki < KH; ++ki) {
        const int h = oh * SH - PH + ki;
        if (h < 0 || h >= H) continue;
        for (int kj = 0; kj < KW; ++kj) {
            const int w = ow * SW - PW + kj;
            if (w >= 0 && w < W) acc += x[base + h * W + w];
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
    const int w = i % W, h = (i / W) % H, nc = i / (W * H);
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
            if (ow < OW) acc += grad[((long long)nc * OH + oh) * OW + ow];
        }
    }
    dx = acc / (T)(KH * KW);
    """,
    "tinycnn_avgpool_bwd",
)


def im2col(
    x: Any, kh: int, kw: int, stride: Pair, padding: Pair, dilation: Pair = (1, 1)
) -> Any:
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
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    img = cp.empty((n, c, h, w), dtype=cols.dtype)
    _col2im(cp.ascontiguousarray(cols), n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, img)
    return img


def maxpool2d_forward(x: Any, kh: int, kw: int, stride: Pair, padding: Pair) -> tuple[Any, Any]:
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
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = grad_out.shape[2:]
    dx = cp.empty((n, c, h, w), dtype=grad_out.dtype)
    _maxpool_bwd(cp.ascontiguousarray(grad_out), cp.ascontiguousarray(argmax),
                 c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dx)
    return dx


def avgpool2d_forward(x: Any, kh: int, kw: int, stride: Pair, padding: Pair) -> Any:
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
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = grad_out.shape[2:]
    dx = cp.empty((n, c, h, w), dtype=grad_out.dtype)
    _avgpool_bwd(cp.ascontiguousarray(grad_out), c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dx)
    return dx


def __getattr__(name: str) -> Any:
    """Kernels with no CUDA version: the reference one, running on CuPy through ``xp``."""
    return getattr(reference, name)
