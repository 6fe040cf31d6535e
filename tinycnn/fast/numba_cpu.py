"""Numba kernels: the same functions, signatures and results as :mod:`tinycnn.fast.plain`.

How they are built (see ``docs/kernels.md`` for each family):

* Every public function is a thin Python wrapper. It allocates the output with NumPy
  (``np.empty`` in the input's dtype: a float32 net stays float32) and hands it to one
  ``@njit`` kernel. Large arrays are never allocated inside jitted code: Numba's allocator
  was measured 3x slower than NumPy's for a 45 MB buffer.
* Parallel loops (``prange``) run over *disjoint* outputs: an image, an image row, a
  channel plane ``(n, c)``, a channel. No two threads ever add into the same element, so
  no atomics and no ``np.add.at``. ``col2im`` gives each thread whole images: the sums
  into an image all happen in one thread, in order.
* Kernels never call each other. With Numba 0.68.1, ``cache=True`` on a jitted function
  that calls another cached ``parallel=True`` function segfaulted when loaded from the
  on-disk cache, so each kernel is one self-contained function, called from Python (the
  shared helpers, ``_tap_range`` and ``_widen_image``, are serial and inlined).
* Hot loops index 1-D row views from 0 (``for t in range(hi - lo): ys[t] += w * xs[t]``):
  an index that might be negative makes Numba emit Python's wraparound check, which kept
  LLVM from vectorizing the loop (depthwise convolution was 3x slower that way).
* ``cache=True`` stores the compiled code on disk (``NUMBA_CACHE_DIR`` is honoured), so
  only the very first run pays the compile time; :func:`warmup` compiles or loads all.
"""

from __future__ import annotations

import math
import os
import time
import types
from types import SimpleNamespace
from typing import Any

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, prange, uint64
from numba import types as nb_types
from numba.core import config as numba_config
from numba.core.compiler_lock import global_compiler_lock
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic

from tinycnn.fast.plain import out_size

Pair = tuple[int, int]

__all__ = [
    "add",
    "add_relu",
    "avgpool2d_backward",
    "avgpool2d_forward",
    "batchnorm_backward",
    "batchnorm_forward",
    "batchnorm_stats",
    "channel_affine",
    "channel_sums",
    "col2im",
    "col2im_images",
    "conv2d_direct_backward",
    "conv2d_direct_forward",
    "conv2d_tiled",
    "conv2d_tiled_input_grad",
    "conv2d_tiled_weight_grad",
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
    "relu_backward",
    "relu_forward",
    "rows_to_nchw",
    "serial",
    "threads",
    "warmup",
    "widen",
]


class KernelShapeError(ValueError):
    """Arrays whose shapes do not fit a kernel: it would read or write out of bounds."""


def _expect(kernel: str, what: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    """Every wrapper checks the shapes its jitted kernel indexes with (Numba does not)."""
    if tuple(got) != tuple(want):
        raise KernelShapeError(f"{kernel}: {what} must have shape {tuple(want)}, got {tuple(got)}")


def _ncl(a: Any) -> np.ndarray:
    """``(N, C, ...)`` as ``(N, C, L)``, empty batches included (``-1`` fails for them)."""
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def _c(a: Any) -> np.ndarray:
    """A C-contiguous view (or copy): kernels index flat memory in row-major order."""
    return np.ascontiguousarray(a)


# --------------------------------------------------------------------------- im2col / col2im


@njit(parallel=True, cache=True)
def _im2col_kernel(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):  # pragma: no cover
    n, c, h, w = x.shape
    for r in prange(n * oh):  # one output row (n, oy) per task: disjoint blocks of cols
        ni = r // oh
        oy = r % oh
        r0 = r * ow  # the block cols[r0 : r0 + ow] (a few KB) stays in L1 meanwhile
        col = 0
        for ci in range(c):
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                for j in range(kw):
                    if iy < 0 or iy >= h:
                        for ox in range(ow):
                            cols[r0 + ox, col] = 0
                    else:
                        # along ox the reads are contiguous (stride sw) in one input row
                        for ox in range(ow):
                            ix = ox * sw - pw + j * dw
                            if 0 <= ix < w:
                                cols[r0 + ox, col] = x[ni, ci, iy, ix]
                            else:
                                cols[r0 + ox, col] = 0
                    col += 1


def im2col(
    x: Any, kh: int, kw: int, stride: Pair, padding: Pair, dilation: Pair = (1, 1)
) -> np.ndarray:
    """Unfold ``x (N, C, H, W)`` into the column matrix ``(N*OH*OW, C*kh*kw)``."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    cols = np.empty((n * oh * ow, c * kh * kw), dtype=x.dtype)
    _im2col_kernel(_c(x), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols)
    return cols


@njit(parallel=True, cache=True)
def _col2im_kernel(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx):  # pragma: no cover
    n, c, h, w = dx.shape
    for ni in prange(n):  # each task owns one image: no other thread ever adds into it
        for ci in range(c):
            for y in range(h):
                for x in range(w):
                    dx[ni, ci, y, x] = 0
        for oy in range(oh):
            r0 = (ni * oh + oy) * ow  # this output row's block of cols (a few KB, in L1)
            col = 0
            for ci in range(c):
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        col += kw
                        continue
                    for j in range(kw):
                        # along ox the adds go to one input row, contiguous for stride 1
                        for ox in range(ow):
                            ix = ox * sw - pw + j * dw
                            if 0 <= ix < w:
                                dx[ni, ci, iy, ix] += cols[r0 + ox, col]
                        col += 1


def col2im(
    cols: Any,
    x_shape: tuple[int, int, int, int],
    kh: int,
    kw: int,
    stride: Pair,
    padding: Pair,
    dilation: Pair = (1, 1),
) -> np.ndarray:
    """The adjoint of :func:`im2col`: each pixel gets the sum of the taps that saw it.

    Parallel over images: a thread owns whole images, so no two threads ever add into the
    same element (no atomics, no ``np.add.at``), and it reads the column matrix in order.
    """
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    _expect("col2im", "cols", cols.shape, (n * oh * ow, c * kh * kw))
    dx = np.empty((n, c, h, w), dtype=cols.dtype)
    _col2im_kernel(_c(cols), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx)
    return dx


# ------------------------------------------------------- per-image column matrices (NCHW GEMM)


@njit(cache=True, inline="always")
def _tap_range(w, ow, sw, off):  # pragma: no cover
    """The ``ox`` range whose input column ``ox*sw + off`` lies inside ``[0, w)``."""
    lo = 0 if off >= 0 else (-off + sw - 1) // sw
    hi = 0 if w - 1 - off < 0 else (w - 1 - off) // sw + 1
    hi = min(hi, ow)
    return min(lo, hi), hi


@njit(parallel=True, cache=True)
def _im2col_img_kernel(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):  # pragma: no cover
    n, c, h, w = x.shape
    for r in prange(n * c):  # one input plane (n, c) per task: its kh*kw rows of cols
        ni = r // c
        ci = r % c
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                off = j * dw - pw
                lo, hi = _tap_range(w, ow, sw, off)
                for oy in range(oh):
                    iy = oy * sh - ph + i * dh
                    base = oy * ow
                    if iy < 0 or iy >= h:
                        for ox in range(ow):
                            cols[ni, row, base + ox] = 0
                    else:
                        for ox in range(lo):
                            cols[ni, row, base + ox] = 0
                        # no bounds checks in the hot loop: contiguous for stride 1
                        for ox in range(lo, hi):
                            cols[ni, row, base + ox] = x[ni, ci, iy, ox * sw + off]
                        for ox in range(hi, ow):
                            cols[ni, row, base + ox] = 0


def im2col_images(
    x: Any, kh: int, kw: int, stride: Pair, padding: Pair, dilation: Pair = (1, 1),
    out: Any = None,
) -> np.ndarray:
    """Unfold ``x (N, C, H, W)`` image by image into ``(N, C*kh*kw, OH*OW)`` (``out`` reused)."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    if out is None:
        out = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    _im2col_img_kernel(_c(x), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out)
    return out


@njit(parallel=True, cache=True)
def _im2col_wide_kernel(xpad, kh, kw, dh, dw, cols):  # pragma: no cover
    n, c, hp, wp = xpad.shape
    plane = hp * wp
    length = cols.shape[2]
    taps = kh * kw
    for r in prange(n * c * taps):  # one row of cols per task: many tasks even when C = 1
        ni = r // (c * taps)
        row = r % (c * taps)
        ci = row // taps
        i = (row % taps) // kw
        j = row % kw
        src = xpad[ni, ci].reshape(plane)  # a view: the plane is contiguous
        start = i * dh * wp + j * dw
        run = min(length, plane - start)  # one long contiguous copy per row
        dst, seg = cols[ni, row], src[start : start + run]
        for p in range(run):  # indices from 0: no negative-index wraparound, so it vectorizes
            dst[p] = seg[p]
        for p in range(run, length):
            dst[p] = 0


def im2col_wide(
    xpad: Any, kh: int, kw: int, dilation: Pair = (1, 1), out: Any = None
) -> np.ndarray:
    """Stride-1 columns of a padded ``xpad (N, C, Hp, Wp)`` as ``(N, C*kh*kw, OH*Wp)``.

    Same layout as :func:`tinycnn.fast.plain.im2col_wide`: each row is one contiguous
    copy of ``OH*Wp`` elements, instead of ``OH`` short copies of ``OW``.
    """
    return _im2col_wide(_im2col_wide_kernel, xpad, kh, kw, dilation, out)


def _im2col_wide(kernel: Any, xpad: Any, kh: int, kw: int, dilation: Pair, out: Any) -> Any:
    n, c, hp, wp = xpad.shape
    dh, dw = dilation
    oh = hp - dh * (kh - 1)
    if out is None:
        out = np.empty((n, c * kh * kw, oh * wp), dtype=xpad.dtype)
    _expect("im2col_wide", "out", out.shape, (n, c * kh * kw, oh * wp))
    kernel(_c(xpad), kh, kw, dh, dw, out)
    return out


@njit(parallel=True, cache=True)
def _crop_bias_kernel(src, bias, out):  # pragma: no cover
    n, c, h, w = out.shape
    for r in prange(n * c):
        ni = r // c
        ci = r % c
        b = bias[ci]
        for y in range(h):
            for x in range(w):
                out[ni, ci, y, x] = src[ni, ci, y, x] + b


def crop_bias(src: Any, bias: Any, out: Any) -> np.ndarray:
    """``out[...] = src[:, :, :OH, :OW] + bias[c]`` (``bias`` None: no bias); returns ``out``."""
    return _crop_bias(_crop_bias_kernel, src, bias, out)


def _crop_bias(kernel: Any, src: Any, bias: Any, out: Any) -> Any:
    n, c, oh, ow = out.shape
    if src.shape[:2] != (n, c) or src.shape[2] < oh or src.shape[3] < ow:
        raise KernelShapeError(f"crop_bias: src {src.shape} does not cover out {out.shape}")
    b = np.zeros(c, dtype=out.dtype) if bias is None else _c(bias).astype(out.dtype, copy=False)
    kernel(src, b, out)
    return out


@njit(parallel=True, cache=True)
def _widen_kernel(src, out):  # pragma: no cover
    n, c, h, w = src.shape
    wide = out.shape[3]
    for r in prange(n * c):
        ni = r // c
        ci = r % c
        for y in range(h):
            for x in range(w):
                out[ni, ci, y, x] = src[ni, ci, y, x]
            for x in range(w, wide):
                out[ni, ci, y, x] = 0


def widen(src: Any, out: Any) -> np.ndarray:
    """``out[..., :W] = src`` and zeros in the extra columns of ``out (N, C, H, W')``."""
    if src.shape[:3] != out.shape[:3] or src.shape[3] > out.shape[3]:
        raise KernelShapeError(f"widen: out {out.shape} cannot hold src {src.shape}")
    _widen_kernel(src, out)
    return out


# Single-threaded, GIL-free twins of the wide-path kernels, for code that already splits
# its images between threads (Conv2D's "wide" path through backend.split_images): each
# thread then runs its own im2col, matrix product and crop on data in its own cache.
def _twin(kernel: Any, name: str) -> Any:
    """The kernel's Python function under another name, jitted serial and without the GIL.

    A new name, because Numba's disk cache files a function by name and line, not by its
    compile options: the same function jitted twice would share (and mix up) one entry.
    """
    func = types.FunctionType(kernel.py_func.__code__, kernel.py_func.__globals__, name)
    func.__qualname__ = name
    return njit(nogil=True, cache=True)(func)


_serial = {
    "im2col_wide": _twin(_im2col_wide_kernel, "_im2col_wide_serial_kernel"),
    "crop_bias": _twin(_crop_bias_kernel, "_crop_bias_serial_kernel"),
    "widen": _twin(_widen_kernel, "_widen_serial_kernel"),
}


def _serial_im2col_wide(
    xpad: Any, kh: int, kw: int, dilation: Pair = (1, 1), out: Any = None
) -> np.ndarray:
    """:func:`im2col_wide` on the calling thread only."""
    return _im2col_wide(_serial["im2col_wide"], xpad, kh, kw, dilation, out)


def _serial_crop_bias(src: Any, bias: Any, out: Any) -> np.ndarray:
    """:func:`crop_bias` on the calling thread only."""
    return _crop_bias(_serial["crop_bias"], src, bias, out)


def _serial_widen(src: Any, out: Any) -> np.ndarray:
    """:func:`widen` on the calling thread only."""
    _serial["widen"](src, out)
    return out


serial = SimpleNamespace(im2col_wide=_serial_im2col_wide, crop_bias=_serial_crop_bias,
                         widen=_serial_widen)


def threads() -> int:
    """Numba's thread count (``NUMBA_NUM_THREADS``, or ``numba.set_num_threads``)."""
    return numba.get_num_threads()


@njit(parallel=True, cache=True)
def _col2im_img_kernel(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx):  # pragma: no cover
    n, c, h, w = dx.shape
    for r in prange(n * c):  # one output plane (n, c) per task: all adds into it in order
        ni = r // c
        ci = r % c
        for y in range(h):
            for x in range(w):
                dx[ni, ci, y, x] = 0
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                off = j * dw - pw
                lo, hi = _tap_range(w, ow, sw, off)
                for oy in range(oh):
                    iy = oy * sh - ph + i * dh
                    if 0 <= iy < h:
                        base = oy * ow
                        for ox in range(lo, hi):
                            dx[ni, ci, iy, ox * sw + off] += cols[ni, row, base + ox]


def col2im_images(
    cols: Any,
    x_shape: tuple[int, int, int, int],
    kh: int,
    kw: int,
    stride: Pair,
    padding: Pair,
    dilation: Pair = (1, 1),
    out: Any = None,
) -> np.ndarray:
    """The adjoint of :func:`im2col_images`, one task per ``(n, c)`` plane (no races)."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    _expect("col2im_images", "cols", cols.shape, (n, c * kh * kw, oh * ow))
    if out is None:
        out = np.empty((n, c, h, w), dtype=cols.dtype)
    _expect("col2im_images", "out", out.shape, (n, c, h, w))
    _col2im_img_kernel(_c(cols), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out)
    return out


# ------------------------------------------------------------------- depthwise convolution


@njit(parallel=True, cache=True)
def _dw_fwd_kernel(xpad, wt, sh, sw, dh, dw, y):  # pragma: no cover
    n, c = xpad.shape[0], xpad.shape[1]
    kh, kw = wt.shape[1], wt.shape[2]
    oh, ow = y.shape[2], y.shape[3]
    span = sw * (ow - 1) + 1
    for r in prange(n * c):  # one output plane per task; the input is padded: no bounds
        ni = r // c
        ci = r % c
        for oy in range(oh):
            yr = y[ni, ci, oy]  # 1-D views indexed from 0: the loops vectorize
            yr[:] = 0
            for i in range(kh):
                xr = xpad[ni, ci, oy * sh + i * dh]
                for j in range(kw):
                    wv = wt[ci, i, j]
                    if sw == 1:  # a contiguous slice: its type lets LLVM vectorize
                        xc = xr[j * dw : j * dw + ow]
                        for t in range(ow):
                            yr[t] += wv * xc[t]
                    else:
                        xs = xr[j * dw : j * dw + span : sw]
                        for t in range(ow):
                            yr[t] += wv * xs[t]


@njit(parallel=True, cache=True)
def _dw_dx_kernel(g, wt, sh, sw, ph, pw, dh, dw, dx):  # pragma: no cover
    n, c, h, w = dx.shape
    kh, kw = wt.shape[1], wt.shape[2]
    oh, ow = g.shape[2], g.shape[3]
    for r in prange(n * c):  # one input-gradient plane per task: its adds stay in one thread
        ni = r // c
        ci = r % c
        dx[ni, ci] = 0
        for oy in range(oh):
            gr = g[ni, ci, oy]
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= h:
                    continue
                dr = dx[ni, ci, iy]
                for j in range(kw):
                    wv = wt[ci, i, j]
                    off = j * dw - pw
                    lo, hi = _tap_range(w, ow, sw, off)
                    if sw == 1:  # slices indexed from 0: no negative-index wraparound
                        ds, gs = dr[lo + off : hi + off], gr[lo:hi]
                        for t in range(hi - lo):
                            ds[t] += wv * gs[t]
                    else:
                        for ox in range(lo, hi):
                            dr[ox * sw + off] += wv * gr[ox]


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _dw_dw_kernel(g, x, sh, sw, ph, pw, dh, dw, dwt):  # pragma: no cover
    n, c, h, w = x.shape
    kh, kw = dwt.shape[1], dwt.shape[2]
    oh, ow = g.shape[2], g.shape[3]
    for ci in prange(c):  # one channel's kh*kw sums per task
        for i in range(kh):
            for j in range(kw):
                off = j * dw - pw
                lo, hi = _tap_range(w, ow, sw, off)
                acc = 0.0  # float64 across rows; each row's dot product is vectorized
                for ni in range(n):
                    for oy in range(oh):
                        iy = oy * sh - ph + i * dh
                        if iy < 0 or iy >= h:
                            continue
                        gr = g[ni, ci, oy]
                        xr = x[ni, ci, iy]
                        row = gr[0] * 0  # the row sum in the arrays' dtype
                        if sw == 1:  # slices indexed from 0: no negative-index wraparound
                            gs, xs = gr[lo:hi], xr[lo + off : hi + off]
                            for t in range(hi - lo):
                                row += gs[t] * xs[t]
                        else:
                            for ox in range(lo, hi):
                                row += gr[ox] * xr[ox * sw + off]
                        acc += row
                dwt[ci, i, j] = acc


@njit(parallel=True, cache=True)
def _pad2d_kernel(x, ph, pw, out):  # pragma: no cover
    n, c, h, w = x.shape
    wp = out.shape[3]
    for r in prange(n * c):  # one padded plane per task, every element written once
        ni = r // c
        ci = r % c
        for y in range(out.shape[2]):
            row = out[ni, ci, y]
            if y < ph or y >= ph + h:
                for t in range(wp):
                    row[t] = 0
                continue
            src = x[ni, ci, y - ph]
            for t in range(pw):
                row[t] = 0
            for t in range(w):
                row[pw + t] = src[t]
            for t in range(pw + w, wp):
                row[t] = 0


def pad2d(x: Any, ph: int, pw: int) -> np.ndarray:
    """``x (N, C, H, W)`` zero-padded by ``ph`` rows and ``pw`` columns on each side.

    One parallel pass writing each element once (``np.pad`` took 1.1-1.4 ms for a
    ResNet-sized batch, zeros plus a slice assignment writes the border twice).
    """
    x = _c(x)
    if not (ph or pw):
        return x
    n, c, h, w = x.shape
    out = np.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    if out.size:
        _pad2d_kernel(x, ph, pw, out)
    return out



def depthwise_conv2d_forward(
    x: Any, weight: Any, stride: Pair, padding: Pair, dilation: Pair = (1, 1)
) -> np.ndarray:
    """Depthwise convolution, ``weight (C, 1, kh, kw)``: a loop over taps per output plane.

    The input is padded once, so the tap loops need no bounds checks.
    """
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    wt = _c(weight.reshape(c, kh, kw)).astype(x.dtype, copy=False)
    _dw_fwd_kernel(pad2d(x, ph, pw), wt, sh, sw, dh, dw, y)
    return y


def depthwise_conv2d_backward(
    grad_out: Any, x: Any, weight: Any, stride: Pair, padding: Pair, dilation: Pair = (1, 1),
    input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray]:
    """``(dx or None, dweight)`` of the depthwise convolution; parallel over disjoint outputs."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    _expect("depthwise_conv2d_backward", "weight", weight.shape, (c, 1, kh, kw))
    _expect("depthwise_conv2d_backward", "grad_out", grad_out.shape,
            (n, c, out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)))
    g = _c(grad_out)
    dwt = np.empty((c, kh, kw), dtype=g.dtype)
    _dw_dw_kernel(g, _c(x), sh, sw, ph, pw, dh, dw, dwt)
    if not input_grad:
        return None, dwt.reshape(c, 1, kh, kw)
    dx = np.empty(tuple(x.shape), dtype=g.dtype)
    wt = _c(weight.reshape(c, kh, kw)).astype(g.dtype, copy=False)
    _dw_dx_kernel(g, wt, sh, sw, ph, pw, dh, dw, dx)
    return dx, dwt.reshape(c, 1, kh, kw)


# -------------------------------------------------- direct convolution (few input taps)


# Every loop runs over a whole padded image flattened to one row (the "wide" layout of
# im2col_wide): output (oy, ox) sits at oy*Wp + ox, tap (c, i, j) reads the input at that
# index plus c*Hp*Wp + i*Wp + j (``_tap_offsets``), so each tap is one long contiguous
# multiply-add of L = (OH-1)*Wp + OW elements. Short image rows (10 to 28 values) would
# leave most of the work to the scalar remainder of LLVM's vector loops. The Wp - OW extra
# values per row are cropped (forward) or multiplied by zero gradients (backward). In the
# forward (measured 1.3-1.4x faster so) and the input gradient, four taps (four output
# channels) go through one pass: each load and store of the running sums serves four.
# (``contract``: multiply and add fuse into one FMA, 1.1-1.3x in the forward.)
# The weight gradient is a set of dot products over all images; each task keeps eight of
# them (two output channels x four taps) in registers. ``fastmath`` reassociation lets
# LLVM vectorize those sums (without it a float reduction stays scalar): 2.5-3x faster
# than running sums in memory (simple_convnet's first layer at batch 128: 5.8 -> 2.0 ms).

_DIRECT_PARTS = 64  # forward: output planes are split into this many parallel parts


@njit(parallel=True, cache=True, fastmath={"contract"})
def _direct_fwd_kernel(ximg, wk, offs, bias, wp, scratch, y):  # pragma: no cover
    n = ximg.shape[0]
    o, taps = wk.shape
    oh, ow = y.shape[2], y.shape[3]
    size = (oh - 1) * wp + ow
    parts = scratch.shape[0]
    planes = n * o
    for part in prange(parts):  # a fixed share of the output planes; the part owns its scratch
        yw = scratch[part]
        for r in range(part * planes // parts, (part + 1) * planes // parts):
            ni = r // o
            oi = r % o
            xr = ximg[ni]  # the padded image, all channels, flat
            wr = wk[oi]
            for t in range(size):
                yw[t] = 0
            k = 0
            while k + 4 <= taps:
                xa = xr[offs[k] : offs[k] + size]
                xb = xr[offs[k + 1] : offs[k + 1] + size]
                xc = xr[offs[k + 2] : offs[k + 2] + size]
                xd = xr[offs[k + 3] : offs[k + 3] + size]
                wa, wb, wc, wd = wr[k], wr[k + 1], wr[k + 2], wr[k + 3]
                for t in range(size):
                    yw[t] += wa * xa[t] + wb * xb[t] + wc * xc[t] + wd * xd[t]
                k += 4
            while k < taps:
                xa = xr[offs[k] : offs[k] + size]
                wa = wr[k]
                for t in range(size):
                    yw[t] += wa * xa[t]
                k += 1
            b = bias[oi]
            for oy in range(oh):
                yrow = y[ni, oi, oy]
                src = yw[oy * wp : oy * wp + ow]
                for t in range(ow):
                    yrow[t] = src[t] + b


@njit(cache=True, inline="always")
def _widen_image(g, ni, wp, gw, sums):  # pragma: no cover
    # gw[o, y*Wp + x] = g[ni, o, y, x], and each plane's sum on the way (the bias gradient
    # without another pass over g). The columns x >= OW of gw are never written: they
    # hold the zeros the caller put there, which add nothing to the sums that read them.
    o, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    for oi in range(o):
        total = 0.0
        for y in range(oh):
            src = g[ni, oi, y]
            dst = gw[oi, y * wp : y * wp + ow]
            part = src[0] * 0
            for t in range(ow):
                v = src[t]
                dst[t] = v
                part += v
            total += part
        sums[ni, oi] = total


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _direct_dw_kernel(g, ximg, offs, wp, zero, scratch, sums, parts):  # pragma: no cover
    # Each part of the batch (a fixed split, whatever the thread count: the sum below is
    # then the same on every machine) takes its images one at a time and adds every
    # (output channel, tap) dot product of that image into its own partial dW. One image's
    # gradient planes stay in L2 while all taps read them; looping over the taps outside
    # the images instead re-read the whole batch's gradient from memory once per group of
    # taps (simple_convnet's first layer: 7.6 ms for dW, 3.3 ms afterwards, one core).
    # The image's gradient is widened into the part's own scratch first, in cache: a
    # widened copy of the whole batch was written to memory and read back before.
    n = ximg.shape[0]
    p_count, o, taps = parts.shape
    size = scratch.shape[2]
    for p in prange(p_count):
        acc = parts[p]
        acc[:, :] = zero
        gw = scratch[p]
        gw[:, :] = zero
        for ni in range(n * p // p_count, n * (p + 1) // p_count):
            _widen_image(g, ni, wp, gw, sums)
            xr = ximg[ni]
            for o0 in range(0, o, 2):
                two = o0 + 2 <= o
                g0 = gw[o0]
                g1 = gw[o0 + 1 if two else o0]
                k0 = 0
                while k0 + 4 <= taps:
                    # eight dot products kept in registers: six loads serve eight multiply-adds
                    oa, ob, oc, od = offs[k0], offs[k0 + 1], offs[k0 + 2], offs[k0 + 3]
                    xa, xb = xr[oa : oa + size], xr[ob : ob + size]
                    xc, xd = xr[oc : oc + size], xr[od : od + size]
                    a0, b0, c0, d0 = zero, zero, zero, zero
                    a1, b1, c1, d1 = zero, zero, zero, zero
                    for t in range(size):
                        u, v = g0[t], g1[t]
                        a0 += u * xa[t]
                        b0 += u * xb[t]
                        c0 += u * xc[t]
                        d0 += u * xd[t]
                        a1 += v * xa[t]
                        b1 += v * xb[t]
                        c1 += v * xc[t]
                        d1 += v * xd[t]
                    acc[o0, k0] += a0
                    acc[o0, k0 + 1] += b0
                    acc[o0, k0 + 2] += c0
                    acc[o0, k0 + 3] += d0
                    if two:
                        acc[o0 + 1, k0] += a1
                        acc[o0 + 1, k0 + 1] += b1
                        acc[o0 + 1, k0 + 2] += c1
                        acc[o0 + 1, k0 + 3] += d1
                    k0 += 4
                for k in range(k0, taps):  # taps left over from fours: one dot product each
                    xs = xr[offs[k] : offs[k] + size]
                    a0, a1 = zero, zero
                    for t in range(size):
                        a0 += g0[t] * xs[t]
                        a1 += g1[t] * xs[t]
                    acc[o0, k] += a0
                    if two:
                        acc[o0 + 1, k] += a1


@njit(parallel=True, cache=True, fastmath={"contract"})
def _direct_dx_kernel(g, wk, offs, wp, zero, scratch, sums, dximg):  # pragma: no cover
    # Parallel over fixed parts of the batch; all adds into one image stay in one thread.
    # Eight output channels per pass over a tap's row: one load and store of the running
    # sums serve eight multiply-adds (four per pass: 1.05-1.14x slower, measured on
    # LeNet-5's 6 <- 16 5x5 and ResNet-20's 3 <- 16 3x3 at batch 128).
    n = dximg.shape[0]
    o, taps = wk.shape
    p_count, _, size = scratch.shape
    for p in prange(p_count):
        gi = scratch[p]
        gi[:, :] = zero
        for ni in range(n * p // p_count, n * (p + 1) // p_count):
            _widen_image(g, ni, wp, gi, sums)
            dr = dximg[ni]  # the padded input gradient, all channels, flat
            for t in range(dr.shape[0]):
                dr[t] = 0
            for k in range(taps):
                ds = dr[offs[k] : offs[k] + size]
                oi = 0
                while oi + 8 <= o:
                    ga, gb, gc, gd = gi[oi], gi[oi + 1], gi[oi + 2], gi[oi + 3]
                    ge, gf, gg, gh = gi[oi + 4], gi[oi + 5], gi[oi + 6], gi[oi + 7]
                    wa, wb, wc, wd = wk[oi, k], wk[oi + 1, k], wk[oi + 2, k], wk[oi + 3, k]
                    we, wf, wg, wh = wk[oi + 4, k], wk[oi + 5, k], wk[oi + 6, k], wk[oi + 7, k]
                    for t in range(size):
                        ds[t] += ((wa * ga[t] + wb * gb[t] + wc * gc[t] + wd * gd[t])
                                  + (we * ge[t] + wf * gf[t] + wg * gg[t] + wh * gh[t]))
                    oi += 8
                while oi + 4 <= o:
                    ga, gb, gc, gd = gi[oi], gi[oi + 1], gi[oi + 2], gi[oi + 3]
                    wa, wb, wc, wd = wk[oi, k], wk[oi + 1, k], wk[oi + 2, k], wk[oi + 3, k]
                    for t in range(size):
                        ds[t] += wa * ga[t] + wb * gb[t] + wc * gc[t] + wd * gd[t]
                    oi += 4
                while oi < o:
                    ga = gi[oi]
                    wa = wk[oi, k]
                    for t in range(size):
                        ds[t] += wa * ga[t]
                    oi += 1


_TAP_OFFSETS: dict[tuple[int, ...], np.ndarray] = {}


def _tap_offsets(c: int, kh: int, kw: int, hp: int, wp: int) -> np.ndarray:
    """Where tap ``(ci, i, j)`` starts in a flat padded image ``(C*Hp*Wp,)``, weight order.

    Kept per shape (the kernels only read it): building it took 50-150 us a call, a few
    per cent of a LeNet-5 training step.
    """
    key = (c, kh, kw, hp, wp)
    offs = _TAP_OFFSETS.get(key)
    if offs is None:
        ci, i, j = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
        offs = (ci * hp * wp + i * wp + j).reshape(-1).astype(np.int64)
        if len(_TAP_OFFSETS) >= 256:  # a bound, for programs that try many shapes
            _TAP_OFFSETS.clear()
        _TAP_OFFSETS[key] = offs
    return offs


def conv2d_direct_forward(x: Any, weight: Any, bias: Any, padding: Pair) -> np.ndarray:
    """Stride-1 convolution as a loop over taps per output plane (see the reference).

    For layers with few input channels, where im2col, its skinny GEMM and the
    NHWC-to-NCHW pass cost more than the multiply-adds.
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ph, pw = padding
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = hp - kh + 1, wp - kw + 1
    y = np.empty((n, o, oh, ow), dtype=x.dtype)
    b = np.zeros(o, x.dtype) if bias is None else _c(bias).astype(x.dtype, copy=False)
    # one wide plane per part of the work (not per thread id: two Python threads could run
    # the kernel at once)
    scratch = np.empty((min(n * o, _DIRECT_PARTS), (oh - 1) * wp + ow), dtype=x.dtype)
    ximg = pad2d(x, ph, pw).reshape(n, c * hp * wp)
    wk = _c(weight).astype(x.dtype, copy=False).reshape(o, c * kh * kw)
    _direct_fwd_kernel(ximg, wk, _tap_offsets(c, kh, kw, hp, wp), b, wp, scratch, y)
    return y


_DW_PARTS = 16  # partial sums of dW: a fixed split of the batch, parallel over parts


def conv2d_direct_backward(
    grad_out: Any, x: Any, weight: Any, padding: Pair, input_grad: bool = True,
    weight_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """``(dx or None, dweight or None, dbias)`` of :func:`conv2d_direct_forward`; parallel
    over disjoint outputs (dweight by output channel, dx by image, dbias from the plane
    sums taken while ``g`` is widened)."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ph, pw = padding
    hp, wp = h + 2 * ph, w + 2 * pw
    _expect("conv2d_direct_backward", "weight", weight.shape, (o, c, kh, kw))
    _expect("conv2d_direct_backward", "grad_out", grad_out.shape,
            (n, o, out_size(h, kh, 1, ph), out_size(w, kw, 1, pw)))
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    size = (oh - 1) * wp + ow
    g = _c(grad_out)
    sums = np.zeros((n, o), dtype=np.float64)
    ximg = pad2d(x.astype(g.dtype, copy=False), ph, pw).reshape(n, c * hp * wp)
    offs = _tap_offsets(c, kh, kw, hp, wp)
    p_count = min(n, _DW_PARTS) if g.size else 0
    # each part widens one image's gradient at a time into its own (O, size) scratch
    scratch = np.empty((p_count, o, size), dtype=g.dtype)
    dwt = None
    if weight_grad:
        parts = np.empty((p_count, o, c * kh * kw), dtype=g.dtype)
        if p_count:
            _direct_dw_kernel(g, ximg, offs, wp, g.dtype.type(0), scratch, sums, parts)
        dwt = (parts.sum(axis=0).reshape(tuple(weight.shape)) if p_count
               else np.zeros(weight.shape, g.dtype))
    dximg = None
    if input_grad:
        # the kernel zeroes each image it owns; with no parts it is never called
        dximg = (np.empty if p_count else np.zeros)((n, c * hp * wp), dtype=g.dtype)
        wk = _c(weight).astype(g.dtype, copy=False).reshape(o, c * kh * kw)
        if p_count:
            _direct_dx_kernel(g, wk, offs, wp, g.dtype.type(0), scratch, sums, dximg)
    elif not weight_grad and p_count:
        sums = g.sum(axis=(2, 3), dtype=np.float64)
    db = sums.sum(axis=0).astype(g.dtype)
    if dximg is None:
        return None, dwt, db
    return _c(dximg.reshape(n, c, hp, wp)[:, :, ph : ph + h, pw : pw + w]), dwt, db


# ------------------------------------------------------------ register-tiled convolution
#
# A convolution as a GEMM micro-kernel would compute it, with no column matrix: one
# tile is 6 or 8 neighbouring outputs of one image row times TILE_LANES output
# channels, one vector of TILE_LANES sums per output kept in registers for the whole loop
# over the taps (c, i, j). Each step loads one vector of weights (the tap's weights for
# the tile's channels, laid out contiguously) and one input value per output, each
# broadcast to a vector: one vector multiply-add per output and load, nothing stored
# until the end. Numba's loop vectorizer keeps such sums in memory (the arrays might alias),
# so the loop is written in LLVM IR (``_tile_sums_for``) with explicit vector types; LLVM
# splits a 16-lane vector into two AVX2 registers or keeps one AVX-512 register. Measured
# on one Zen 4 core (batch 32, 3x3, CPU time): 29-35 GMAC/s against 15-23 for the "wide"
# and "direct" paths it replaces (16 -> 16 channels at 28x28: 1.7-2.0 ms against 3.1-3.9).
# Strided layers read every sh-th row and sw-th column the same way.

TILE_LANES = 16
TILE_PIXELS = 6  # the narrowest tile


def _has_avx512() -> bool:
    try:
        from llvmlite import binding

        return "+avx512f" in binding.get_host_cpu_features().flatten()
    except (ImportError, RuntimeError):
        return False


# 8-wide tiles need 8 vector registers of 16 lanes for their sums: one AVX-512 register
# each (of 32), but two AVX2 registers each, all 16 there. Measured with AVX-512 (Zen 4,
# batch 128, 2 cores, 3x3 layers of 16-64 channels): 8-wide tiles 1.4-2x faster than
# 6-wide even where they recompute more of a row's end; 12 or 16 wide no faster than 8.
# AVX2 machines keep 6-wide tiles (8-wide would spill; not measured here).
TILE_WIDTHS = (6, 8) if _has_avx512() else (6,)


def _host_cpu() -> str:
    try:
        from llvmlite import binding

        return str(binding.get_host_cpu_name())
    except (ImportError, RuntimeError):
        return ""


# Two blocks of 16 output channels per 8-wide tile: 16 vectors of sums in registers, and
# per tap two weight loads and 8 broadcasts serve 16 vector multiply-adds instead of one
# and 8 serving 8. That pays where a core runs two 512-bit FMAs a cycle at full width.
# Measured on Zen 5 ("znver5", batch 128, 2 cores, forward, paired, session 12): 32 -> 32
# at 16x16 1.28x, 64 -> 64 at 8x8 1.44x, 16 -> 32 at 28x28 1.23x, 32 -> 64 at 14x14
# 1.37x, stride 2 1.22-1.28x; 16 channels (one block) unchanged. On Zen 4 (two 256-bit
# FMA units; session 8) two blocks a tile were 0-26 % slower, so only the CPUs where it
# was measured to pay take them.
TILE_PAIRED_CPUS = ("znver5",)
TILE_PAIRS = 8 in TILE_WIDTHS and _host_cpu() in TILE_PAIRED_CPUS


def _data_pointers(context: Any, builder: Any, types: Any, values: Any) -> list[Any]:
    """The data pointer of each array argument of an intrinsic (LLVM IR)."""
    return [context.make_array(t)(context, builder, v).data
            for t, v in zip(types, values, strict=True)]


def _as_i64(builder: Any, value: Any) -> Any:
    """An integer argument of an intrinsic as i64 (Numba may pass narrower ints)."""
    i64 = llvm_ir.IntType(64)
    return builder.sext(value, i64) if value.type.width < 64 else value


def _tile_sums_for(pixels: int) -> Any:
    """The register-tiled inner loop for tiles of ``pixels`` outputs, as a Numba intrinsic:
    ``out[p*LANES + l] = sum_k x[xbase + offs[k] + p*step] * wpanel[k, l]``."""

    @intrinsic
    def tile_sums(typingctx, x, xbase, step, offs, wpanel, taps, out):  # pragma: no cover
        sig = nb_types.void(x, xbase, step, offs, wpanel, taps, out)

        def codegen(context, builder, signature, args):
            x_a, xbase_v, step_v, offs_a, w_a, taps_v, out_a = args
            return _tile_sums_ir(context, builder, signature.args, pixels, x_a, xbase_v,
                                 step_v, offs_a, (w_a,), taps_v, out_a)

        return sig, codegen

    return tile_sums


def _tile_pair_sums_for(pixels: int) -> Any:
    """:func:`_tile_sums_for` over two blocks of output channels at once:
    ``out[(b*pixels + p)*LANES + l] = sum_k x[xbase + offs[k] + p*step] * wpanel_b[k, l]``
    for ``b`` 0 and 1, each input value loaded once for both."""

    @intrinsic
    def tile_pair_sums(typingctx, x, xbase, step, offs, wpanel, wpanel2, taps,
                       out):  # pragma: no cover
        sig = nb_types.void(x, xbase, step, offs, wpanel, wpanel2, taps, out)

        def codegen(context, builder, signature, args):
            x_a, xbase_v, step_v, offs_a, w_a, w2_a, taps_v, out_a = args
            types = (*signature.args[:5], *signature.args[6:])  # as for one block
            return _tile_sums_ir(context, builder, types, pixels, x_a, xbase_v, step_v,
                                 offs_a, (w_a, w2_a), taps_v, out_a)

        return sig, codegen

    return tile_pair_sums


def _tile_sums_ir(context: Any, builder: Any, types: Any, pixels: int, x_a: Any,
                  xbase_v: Any, step_v: Any, offs_a: Any, panels: tuple[Any, ...],
                  taps_v: Any, out_a: Any) -> Any:
    """The LLVM IR of the tiled loop (see :func:`_tile_sums_for`) for one or two weight
    panels: ``pixels * len(panels)`` vectors of sums, kept in registers through the loop."""
    xty, _, _, offty, wty, _, outty = types
    xptr, optr, outptr = _data_pointers(context, builder, (xty, offty, outty),
                                        (x_a, offs_a, out_a))
    wptrs = [_data_pointers(context, builder, (wty,), (w,))[0] for w in panels]
    fty = context.get_value_type(xty.dtype)
    vty = llvm_ir.VectorType(fty, TILE_LANES)
    i32, i64 = llvm_ir.IntType(32), llvm_ir.IntType(64)
    n_sums = pixels * len(panels)

    zero = llvm_ir.Constant(vty, [llvm_ir.Constant(fty, 0.0)] * TILE_LANES)
    undef = llvm_ir.Constant(vty, llvm_ir.Undefined)
    splat = llvm_ir.Constant(llvm_ir.VectorType(i32, TILE_LANES), [0] * TILE_LANES)
    count, xbase, step = (_as_i64(builder, v) for v in (taps_v, xbase_v, step_v))
    entry = builder.basic_block
    loop = builder.append_basic_block("tile.loop")
    done = builder.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed(">", count, llvm_ir.Constant(i64, 0)), loop, done)
    builder.position_at_end(loop)
    k = builder.phi(i64)
    sums = [builder.phi(vty) for _ in range(n_sums)]
    base = builder.add(xbase, _as_i64(builder, builder.load(builder.gep(optr, [k]))))
    offset = builder.mul(k, llvm_ir.Constant(i64, TILE_LANES))
    weights = [builder.load(builder.bitcast(builder.gep(w, [offset]), vty.as_pointer()),
                            align=1) for w in wptrs]
    values = []
    for p in range(pixels):
        at = builder.add(base, builder.mul(step, llvm_ir.Constant(i64, p)))
        value = builder.load(builder.gep(xptr, [at]))
        lanes = builder.insert_element(undef, value, llvm_ir.Constant(i32, 0))
        values.append(builder.shuffle_vector(lanes, undef, splat))  # broadcast to every lane
    updated = []
    for panel in weights:
        for p in range(pixels):
            product = builder.fmul(values[p], panel, flags=["contract"])
            updated.append(builder.fadd(sums[len(updated)], product, flags=["contract"]))  # FMA
    nxt = builder.add(k, llvm_ir.Constant(i64, 1))
    end = builder.basic_block
    k.add_incoming(llvm_ir.Constant(i64, 0), entry)
    k.add_incoming(nxt, end)
    for p in range(n_sums):
        sums[p].add_incoming(zero, entry)
        sums[p].add_incoming(updated[p], end)
    builder.cbranch(builder.icmp_signed("<", nxt, count), loop, done)
    builder.position_at_end(done)
    results = []
    for p in range(n_sums):
        res = builder.phi(vty)
        res.add_incoming(zero, entry)
        res.add_incoming(updated[p], end)
        results.append(res)
    for p in range(n_sums):
        dst = builder.gep(outptr, [llvm_ir.Constant(i64, p * TILE_LANES)])
        builder.store(results[p], builder.bitcast(dst, vty.as_pointer()), align=1)
    return context.get_dummy_value()


_tile_sums6 = _tile_sums_for(6)
_tile_sums8 = _tile_sums_for(8)
_tile_pair_sums8 = _tile_pair_sums_for(8)


def _lane_shuffle(builder: Any, a: Any, b: Any, picks: list[int]) -> Any:
    """``shufflevector a, b``: element k of the result is element ``picks[k]`` of ``a ++ b``."""
    i32 = llvm_ir.IntType(32)
    return builder.shuffle_vector(a, b, llvm_ir.Constant(
        llvm_ir.VectorType(i32, len(picks)), picks))


@intrinsic
def _tile_store8(typingctx, sums, y, ybase, plane, bias, bbase, lanes):  # pragma: no cover
    """``y[ybase + l*plane + p] = sums[p*16 + l] + bias[bbase + l]`` for ``l < lanes`` and
    the 8 outputs ``p`` of a tile: its 8 x 16 sums transposed in registers (three rounds
    of two-vector shuffles, one instruction each with AVX-512) and stored 8 at a time,
    where storing them one float at a time took 12-44 % of the kernel (16 to 1 input
    channels)."""
    sig = nb_types.void(sums, y, ybase, plane, bias, bbase, lanes)

    def codegen(context, builder, signature, args):
        s_a, y_a, ybase_v, plane_v, b_a, bbase_v, lanes_v = args
        sty, yty, _, _, bty, _, _ = signature.args
        sptr, yptr, bptr = _data_pointers(context, builder, (sty, yty, bty), (s_a, y_a, b_a))
        fty = context.get_value_type(sty.dtype)
        v16, v8 = llvm_ir.VectorType(fty, 16), llvm_ir.VectorType(fty, 8)
        i64 = llvm_ir.IntType(64)

        def load16(ptr, at):
            return builder.load(builder.bitcast(builder.gep(ptr, [at]), v16.as_pointer()),
                                align=1)

        v = [load16(sptr, llvm_ir.Constant(i64, 16 * p)) for p in range(8)]
        # round 1: pixels (2k, 2k+1) interleaved, lanes 0-7 and 8-15
        a = {}
        for k in range(4):
            for half in range(2):
                a[k, half] = _lane_shuffle(builder, v[2 * k], v[2 * k + 1], [
                    idx for lane in range(8 * half, 8 * half + 8) for idx in (lane, 16 + lane)])
        # round 2: four pixels a lane, four lanes a vector: b[m, quarter][4*l + q]
        b = {}
        for m in range(2):
            for quarter in range(4):
                half, first = quarter // 2, 4 * (quarter % 2)
                b[m, quarter] = _lane_shuffle(builder, a[2 * m, half], a[2 * m + 1, half], [
                    (2 * (first + lane) + q) if q < 2 else (16 + 2 * (first + lane) + q - 2)
                    for lane in range(4) for q in range(4)])
        bvec = load16(bptr, _as_i64(builder, bbase_v))
        base, plane, lanes = (_as_i64(builder, v) for v in (ybase_v, plane_v, lanes_v))
        for quarter in range(4):
            for pair in range(2):
                # round 3: eight pixels a lane, two lanes a vector
                row2 = _lane_shuffle(builder, b[0, quarter], b[1, quarter], [
                    (4 * (2 * pair + i) + p) if p < 4 else (16 + 4 * (2 * pair + i) + p - 4)
                    for i in range(2) for p in range(8)])
                lane0 = 4 * quarter + 2 * pair
                row2 = builder.fadd(row2, _lane_shuffle(
                    builder, bvec, bvec, [lane0] * 8 + [lane0 + 1] * 8))
                for i in range(2):
                    lane = lane0 + i
                    inside = builder.icmp_signed("<", llvm_ir.Constant(i64, lane), lanes)
                    with builder.if_then(inside):
                        at = builder.add(base, builder.mul(llvm_ir.Constant(i64, lane), plane))
                        dst = builder.bitcast(builder.gep(yptr, [at]), v8.as_pointer())
                        builder.store(_lane_shuffle(builder, row2, row2,
                                                    list(range(8 * i, 8 * i + 8))), dst, align=1)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _copy_rows_zero_extended(xf, img0, c, h, w, r_first, rows, left, rows_s, wsp,
                             scratch):  # pragma: no cover
    # scratch[(ci*rows_s + i)*wsp + t] = x[ci, r_first + i, t - left] for the pixels inside
    # the image (x: the image at xf[img0:]); scratch starts zeroed, and the zeros left
    # around the copied pixels are the padding. The rows of x are made where a kernel
    # reads them, in cache, instead of a padded copy of the whole batch (0.2 ms against
    # 0.7 ms for pad2d on 128x16x32x32). Unsigned indices: no negative-index wraparound
    # check, so the copies vectorize (signed: 2-5x slower).
    lo, hi = max(0, left), min(wsp, left + w)
    if lo >= hi:
        return
    span = uint64(hi - lo)
    for ci in range(c):
        for i in range(rows):
            ri = r_first + i
            if 0 <= ri < h:
                d = uint64((ci * rows_s + i) * wsp + lo)
                src = uint64(img0 + (ci * h + ri) * w + lo - left)
                for t in range(span):
                    scratch[d + t] = xf[src + t]


@njit(parallel=True, cache=True)
def _tiled_conv_kernel(x, offs, wpanels, bias, top, left, sh, sw, kh, band, wsp, pixels,
                       pairs, relu, y):  # pragma: no cover
    # one task per (image, band of `band` output rows). The task first copies the input
    # rows its band reads, zero-padded, into `scratch (C, rows, wsp)` (offs point into it),
    # then runs every block of TILE_LANES output channels over them (with `pairs`, set
    # only for 8-wide tiles, two blocks at a time: see TILE_PAIRS); a row whose width is
    # not a multiple of the tile's ends with a tile that overlaps the one before
    n, c, h, w = x.shape
    xf = x.reshape(-1)
    blocks, taps = wpanels.shape[0], wpanels.shape[1]
    o_out, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    yf = y.reshape(-1)
    tiles = (ow + pixels - 1) // pixels
    bands = (oh + band - 1) // band
    rows_s = (band - 1) * sh + kh
    for task in prange(n * bands):
        ni = task // bands
        r0 = (task - ni * bands) * band
        rows = min(band, oh - r0)
        scratch = np.zeros(c * rows_s * wsp, dtype=y.dtype)
        _copy_rows_zero_extended(xf, ni * c * h * w, c, h, w, r0 * sh - top,
                                 (rows - 1) * sh + kh, left, rows_s, wsp, scratch)
        sums = np.empty(16 * TILE_LANES, dtype=y.dtype)
        second = sums[8 * TILE_LANES:]  # a pair's second block
        ob = 0
        while ob < blocks:
            two = pairs and ob + 2 <= blocks
            for rr in range(rows):
                for t in range(tiles):
                    c0 = min(t * pixels, ow - pixels)
                    base = rr * sh * wsp + c0 * sw
                    at = ((ni * o_out + ob * TILE_LANES) * oh + r0 + rr) * ow + c0
                    if two:
                        _tile_pair_sums8(scratch, base, sw, offs, wpanels[ob], wpanels[ob + 1],
                                         taps, sums)
                        _tile_store8(sums, yf, at, oh * ow, bias, ob * TILE_LANES, TILE_LANES)
                        _tile_store8(second, yf, at + TILE_LANES * oh * ow, oh * ow, bias,
                                     (ob + 1) * TILE_LANES,
                                     min(TILE_LANES, o_out - (ob + 1) * TILE_LANES))
                        continue
                    if pixels == 8:
                        _tile_sums8(scratch, base, sw, offs, wpanels[ob], taps, sums)
                        _tile_store8(sums, yf, at, oh * ow, bias, ob * TILE_LANES,
                                     min(TILE_LANES, o_out - ob * TILE_LANES))
                        continue
                    _tile_sums6(scratch, base, sw, offs, wpanels[ob], taps, sums)
                    for lane in range(min(TILE_LANES, o_out - ob * TILE_LANES)):
                        o = ob * TILE_LANES + lane
                        b = bias[o]
                        yrow = y[ni, o, r0 + rr]
                        for p in range(pixels):
                            yrow[c0 + p] = sums[p * TILE_LANES + lane] + b
            done = ob + (2 if two else 1)
            if relu:  # on the band's rows while they are in cache (in the loop above, the
                # branch made the whole kernel 1.3x slower); a NaN is not < 0: it passes
                for o in range(ob * TILE_LANES, min(done * TILE_LANES, o_out)):
                    for rr in range(rows):
                        yrow = y[ni, o, r0 + rr]
                        for t in range(ow):
                            if yrow[t] < 0:
                                yrow[t] = 0
            ob = done


def tile_width(ow: int) -> int:
    """The widest tile this CPU takes that fits a row of ``ow`` outputs (see TILE_WIDTHS)."""
    return max(p for p in TILE_WIDTHS if p <= max(ow, TILE_PIXELS))


# Output rows per task of the tiled convolution: the input rows a band reads are copied
# once for all its rows (kH + (band-1)*sh rows for `band` outputs), so taller bands copy
# fewer rows twice. Measured on Zen 4 (batch 128, 2 cores), 16 rows against 4: 16 -> 16
# 3x3 at 32x32 1.11x, 16 -> 32 stride 2 1.23x, 64 -> 64 at 14x14 1.10x, LeNet-5's 16 -> 6
# 5x5 dx 1.08x; whole training steps, paired: ResNet-20 1.06x, deep_convnet 1.04x; 32
# rows no faster; 64-128 channels at 28x28-56x56 within 3 %. A band's copied rows are
# also held to TILE_BAND_BYTES, so that they stay in a core's L2 through its channel blocks.
TILE_BAND = 16
TILE_BAND_BYTES = 512 * 1024


def tile_band(c: int, oh: int, n: int, kh: int, sh: int, wsp: int, itemsize: int) -> int:
    """Output rows per task of :func:`conv2d_tiled`: at most ``TILE_BAND``, the copied
    rows within ``TILE_BAND_BYTES``, and at least 4 tasks a thread."""
    rows = TILE_BAND_BYTES // max(1, c * wsp * itemsize)  # copied input rows that fit
    return max(1, min(TILE_BAND, (rows - kh) // sh + 1, oh, n * oh // (4 * threads())))


def _tiled_out_hw(x_shape: tuple[int, ...], kh: int, kw: int, stride: Pair, padding: Pair,
                  out_hw: Pair | None) -> Pair:
    if out_hw is not None:
        return int(out_hw[0]), int(out_hw[1])
    (sh, sw), (top, left) = stride, padding
    return (x_shape[2] + 2 * top - kh) // sh + 1, (x_shape[3] + 2 * left - kw) // sw + 1


def conv2d_tiled(x: Any, weight: Any, bias: Any, stride: Pair = (1, 1),
                 padding: Pair = (0, 0), out_hw: Pair | None = None,
                 relu: bool = False) -> np.ndarray:
    """Convolution of ``x (N, C, H, W)`` zero-padded by ``padding = (top, left)``,
    register-tiled:

    ``y[n, o, r, s] = b[o] + sum_{c,i,j} w[o, c, i, j] * x[n, c, r*sh + i - top, s*sw + j - left]``

    where ``x`` is 0 outside the image, for an output of ``out_hw = (OH, OW)`` (default:
    the same padding after the image as before it; OW at least ``TILE_PIXELS``);
    ``relu``: ``max(y, 0)``, on each band of rows while it is in cache. See the comment
    above for how the tiles are computed.
    """
    x = _c(x)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    sh, sw = stride
    _expect("conv2d_tiled", "weight", tuple(weight.shape), (o, c, kh, kw))
    oh, ow = _tiled_out_hw(x.shape, kh, kw, stride, padding, out_hw)
    if ow < TILE_PIXELS or oh < 1:
        raise KernelShapeError(f"conv2d_tiled needs an output at least {TILE_PIXELS} wide, "
                               f"got {oh}x{ow}")
    blocks = (o + TILE_LANES - 1) // TILE_LANES
    # the weights of each block of channels, tap by tap: (blocks, C*kH*kW, TILE_LANES);
    # a last block with fewer channels gets zero weights (its extra lanes are not stored)
    panels = np.zeros((blocks * TILE_LANES, c * kh * kw), dtype=x.dtype)
    panels[:o] = _c(weight).reshape(o, -1)
    panels = np.ascontiguousarray(panels.reshape(blocks, TILE_LANES, -1).transpose(0, 2, 1))
    b = np.zeros(blocks * TILE_LANES, x.dtype)  # a whole last block: read 16 at a time
    if bias is not None:
        b[:o] = _c(bias)
    y = np.empty((n, o, oh, ow), dtype=x.dtype)
    wsp = (ow - 1) * sw + kw  # the width of a zero-padded input row, as far as it is read
    band = tile_band(c, oh, n, kh, sh, wsp, x.itemsize)
    pixels = tile_width(ow)
    if y.size:
        _tiled_conv_kernel(x, _tap_offsets(c, kh, kw, (band - 1) * sh + kh, wsp), panels, b,
                           padding[0], padding[1], sh, sw, kh, band, wsp, pixels,
                           TILE_PAIRS and pixels == 8, bool(relu), y)
    return y


def conv2d_tiled_input_grad(grad_out: Any, weight: Any, stride: Pair, padding: Pair,
                            x_hw: Pair) -> np.ndarray:
    """``dx (N, C, H, W)`` of :func:`conv2d_tiled` for any stride, as stride-1 tiled
    convolutions of G, one per phase ``(pa, pb)`` of dx's rows and columns:

    ``dx[n, c, a, b] = sum_{o,i,j} w[o, c, i, j] * g[n, o, (a + top - i)/sh, (b + left - j)/sw]``

    over the taps where both divisions are exact. For the rows ``a = sh*u + pa`` those are
    the taps ``i = i0, i0 + sh, ...`` with ``i0 = (pa + top) mod sh``, and they read the
    rows ``u + d - m`` of G (``d = (pa + top - i0) / sh``, tap ``i0 + sh*m``): a stride-1
    convolution of G with those taps, flipped and transposed. A stride-2 3x3 layer's dx is
    then four small convolutions (1, 2, 2 and 4 taps per channel, 9 in all, as many
    multiply-adds as the column path's GEMM) instead of a column matrix kH*kW times the
    size of dx and its ``col2im``. Every phase at least ``TILE_PIXELS`` wide."""
    g = _c(grad_out)
    n = g.shape[0]
    _, c, kh, kw = weight.shape
    (sh, sw), (top, left), (h, w) = stride, padding, x_hw
    dx = np.empty((n, c, h, w), dtype=g.dtype)
    for pa in range(min(sh, h)):
        i0 = (pa + top) % sh
        for pb in range(min(sw, w)):
            j0 = (pb + left) % sw
            taps = np.ascontiguousarray(
                weight[:, :, i0::sh, j0::sw][:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            if taps.size == 0:  # a kernel smaller than the stride: these inputs are unread
                dx[:, :, pa::sh, pb::sw] = 0
                continue
            rows, cols = -(-(h - pa) // sh), -(-(w - pb) // sw)
            m, mw = taps.shape[2], taps.shape[3]
            phase = conv2d_tiled(g, taps.astype(g.dtype, copy=False), None, (1, 1),
                                 (m - 1 - (pa + top - i0) // sh, mw - 1 - (pb + left - j0) // sw),
                                 (rows, cols))
            _put_phase(dx, phase, pa, pb, sh, sw)
    return dx


@njit(parallel=True, cache=True)
def _put_phase(dx, phase, pa, pb, sh, sw):  # pragma: no cover
    # dx[:, :, pa::sh, pb::sw] = phase, parallel over the planes (NumPy's strided copy is
    # one thread)
    n, c = dx.shape[0], dx.shape[1]
    rows, cols = phase.shape[2], phase.shape[3]
    for nc in prange(n * c):
        ni = nc // c
        ci = nc % c
        for u in range(rows):
            src = phase[ni, ci, u]
            dst = dx[ni, ci, pa + sh * u]
            for v in range(cols):
                dst[pb + sw * v] = src[v]


@njit(cache=True, inline="always")
def _gradient_panel(g, n0, m, npix, ob, panel):  # pragma: no cover
    # panel[mi*npix + p, lane] = g[n0 + mi, ob*16 + lane, p]: one block of 16 output
    # channels of the chunk's gradient, transposed into lanes; zeros past the last channel
    o_out = g.shape[1]
    lanes = min(TILE_LANES, o_out - ob * TILE_LANES)
    for mi in range(m):
        for lane in range(lanes):
            src = g[n0 + mi, ob * TILE_LANES + lane]
            for p in range(npix):
                panel[mi * npix + p, lane] = src[p]
        if lanes < TILE_LANES:  # a last partial block: the idle lanes sum zeros
            for p in range(npix):
                for lane in range(lanes, TILE_LANES):
                    panel[mi * npix + p, lane] = 0


@njit(parallel=True, cache=True)
def _tiled_dw_kernel(x, g, offs, top, left, hps, wsp, kh, kw, group, chunk, pairs,
                     parts):  # pragma: no cover
    # dW[o, c, i, j] = sum over images and output pixels of g[n, o, pix] * x[n, c, pix + tap]:
    # the tiled loop with the roles turned: 16 output channels in the lanes (a row of
    # `panel`, the gradient transposed), `group` input channels in the tile (each one
    # plane apart in x), the loop over the output pixels of `chunk` images at once (offs
    # holds where each of them reads, image by image), so one call sums thousands of
    # products. The chunk's images are first copied, zero-padded, into
    # `scratch (chunk, C, hps, wsp)`, and for each block of 16 output channels their
    # gradient is transposed into `panel (chunk*OH*OW, 16)`, zero past the last channel
    # (with `pairs`, set only for groups of 8, two blocks at a time, the second into
    # `panel2`: see TILE_PAIRS); both stay in cache through the taps. Each part of the
    # batch adds into its own partial dW.
    n, c_in, h, w = x.shape
    xf = x.reshape(-1)
    p_count, o_out = parts.shape[0], parts.shape[1]
    blocks = (o_out + TILE_LANES - 1) // TILE_LANES
    npix = offs.shape[0] // chunk
    chw = hps * wsp
    for part in prange(p_count):
        acc = parts[part]
        acc[:, :, :, :] = 0
        sums = np.empty(16 * TILE_LANES, dtype=parts.dtype)
        second = sums[8 * TILE_LANES:]  # a pair's second block
        scratch = np.zeros(chunk * c_in * chw, dtype=parts.dtype)  # the zeros stay
        panel = np.zeros((chunk * npix, TILE_LANES), dtype=parts.dtype)
        panel2 = np.zeros((chunk * npix if pairs else 0, TILE_LANES), dtype=parts.dtype)
        hi = n * (part + 1) // p_count
        for n0 in range(n * part // p_count, hi, chunk):
            m = min(chunk, hi - n0)
            for mi in range(m):
                _copy_rows_zero_extended(xf, (n0 + mi) * c_in * h * w, c_in, h, w, -top, hps,
                                         left, hps, wsp, scratch[mi * c_in * chw:])
            ob = 0
            while ob < blocks:
                two = pairs and ob + 2 <= blocks
                _gradient_panel(g, n0, m, npix, ob, panel)
                if two:
                    _gradient_panel(g, n0, m, npix, ob + 1, panel2)
                lanes = min(TILE_LANES, o_out - ob * TILE_LANES)
                lanes2 = min(TILE_LANES, o_out - (ob + 1) * TILE_LANES) if two else 0
                for i in range(kh):
                    for j in range(kw):
                        for g0 in range(0, c_in, group):
                            c0 = min(g0, c_in - group)  # a last group overlaps the one before
                            base = c0 * chw + i * wsp + j
                            if two:
                                _tile_pair_sums8(scratch, base, chw, offs, panel, panel2,
                                                 m * npix, sums)
                            elif group == 8:
                                _tile_sums8(scratch, base, chw, offs, panel, m * npix, sums)
                            else:
                                _tile_sums6(scratch, base, chw, offs, panel, m * npix, sums)
                            for q in range(g0 - c0, group):  # channels not added yet
                                for lane in range(lanes):
                                    acc[ob * TILE_LANES + lane, c0 + q, i, j] += (
                                        sums[q * TILE_LANES + lane])
                                for lane in range(lanes2):
                                    acc[(ob + 1) * TILE_LANES + lane, c0 + q, i, j] += (
                                        second[q * TILE_LANES + lane])
                ob += 2 if two else 1


# How many images one weight-gradient call sums over: as many as keep their inputs and one
# block of their gradient within this many bytes (a core's L2 holds them through the
# taps). Measured on Zen 4 (1 MB L2), batch 128, 2 cores: 64 -> 64 channels at 8x8 3.9 ms
# in chunks against 5.3 ms one image a call; 16 -> 16 at 32x32 4.0 against 4.7 ms;
# 64 KB to 1 MB chunks within 10 % of each other.
_DW_CHUNK_BYTES = 256 * 1024


def conv2d_tiled_weight_grad(grad_out: Any, x: Any, kh: int, kw: int, stride: Pair = (1, 1),
                             padding: Pair = (0, 0)) -> np.ndarray:
    """``dW (O, C, kH, kW)`` of :func:`conv2d_tiled`, register-tiled (at least 6 input
    channels): ``dW[o, c, i, j] = sum_{n,r,s} g[n, o, r, s] * x[n, c, r*sh + i - top,
    s*sw + j - left]`` (``x`` 0 outside the image)."""
    g, x = _c(grad_out), _c(x)
    n, c = x.shape[:2]
    o, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    sh, sw = stride
    _expect("conv2d_tiled_weight_grad", "grad_out", g.shape[:2], (n, o))
    if c < TILE_PIXELS:
        raise KernelShapeError(f"conv2d_tiled_weight_grad needs at least {TILE_PIXELS} input "
                               f"channels, got {c}")
    npix = oh * ow
    if not (n and npix):
        return np.zeros((o, c, kh, kw), dtype=g.dtype)
    parts = np.empty((min(n, _DW_PARTS), o, c, kh, kw), dtype=g.dtype)
    hps, wsp = (oh - 1) * sh + kh, (ow - 1) * sw + kw  # the padded input, as far as it is read
    img = c * hps * wsp
    group = 8 if c % 8 == 0 else 6
    pairs = TILE_PAIRS and group == 8 and o > TILE_LANES
    per_image = (img + (2 if pairs else 1) * npix * TILE_LANES) * g.itemsize
    chunk = max(1, min(-(-n // parts.shape[0]), _DW_CHUNK_BYTES // per_image))
    rows, cols = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    pixel = (rows * sh * wsp + cols * sw).reshape(-1)  # where each output reads
    offs = (np.arange(chunk)[:, None] * img + pixel[None, :]).reshape(-1).astype(np.int64)
    _tiled_dw_kernel(x, g.reshape(n, o, npix), offs, padding[0], padding[1], hps, wsp, kh, kw,
                     group, chunk, pairs, parts)
    return parts.sum(axis=0)


# --------------------------------------------------------------------------------- pooling


@njit(parallel=True, cache=True)
def _maxpool_fwd_kernel(x, kh, kw, sh, sw, ph, pw, relu, out, argmax):  # pragma: no cover
    # NaN: the plain comparisons below skip a NaN; the window's sum is NaN when it holds
    # one (or inf - inf), and only then a second scan lets the first NaN win, as np.argmax
    # does. Testing for NaN at every comparison instead cost 1.7x in the 2x2 kernel.
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for nc in prange(n * c):
        ni = nc // c
        ci = nc % c
        for oy in range(oh):
            y0 = oy * sh - ph
            i_lo, i_hi = max(0, -y0), min(kh, h - y0)  # taps inside the image (padding is -inf)
            for ox in range(ow):
                x0 = ox * sw - pw
                j_lo, j_hi = max(0, -x0), min(kw, w - x0)
                best = x[ni, ci, y0 + i_lo, x0 + j_lo]
                arg = i_lo * kw + j_lo
                total = best - best  # 0, or NaN when best is inf or NaN: then rescan
                for i in range(i_lo, i_hi):
                    for j in range(j_lo, j_hi):
                        v = x[ni, ci, y0 + i, x0 + j]
                        total += v
                        if v > best:  # strict: the first maximum wins ties, like np.argmax
                            best = v
                            arg = i * kw + j
                if total != total:
                    for i in range(i_lo, i_hi):
                        for j in range(j_lo, j_hi):
                            v = x[ni, ci, y0 + i, x0 + j]
                            if v != v:
                                best = v
                                arg = i * kw + j
                                break
                        else:
                            continue
                        break
                if relu and best <= 0:  # the pool of relu(x): a window of zeros, first wins
                    best = 0
                    arg = i_lo * kw + j_lo
                out[ni, ci, oy, ox] = best
                argmax[ni, ci, oy, ox] = arg


@njit(parallel=True, cache=True)
def _maxpool2x2_fwd_kernel(x, relu, zero, out, argmax):  # pragma: no cover
    # The common 2x2 window with stride 2 and no padding, unrolled: about 8x faster than
    # the general loops above, whose short run-time trip counts the compiler cannot
    # unroll. The window's first maximum as a tree of selects, (a0 vs a1) against
    # (a2 vs a3), with no branch in the loop, so that it vectorizes: 3.3x faster than
    # comparing the four in turn with branches (0.41 against 1.34 ms on 128x30x24x24 with
    # the ReLU). Windows holding a NaN are mended in a second loop over the row.
    n, c = x.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    for nc in prange(n * c):
        ni = nc // c
        ci = nc % c
        for oy in range(oh):
            r0, r1 = x[ni, ci, 2 * oy], x[ni, ci, 2 * oy + 1]
            o, am = out[ni, ci, oy], argmax[ni, ci, oy]
            for ox in range(ow):
                a0, a1 = r0[2 * ox], r0[2 * ox + 1]
                a2, a3 = r1[2 * ox], r1[2 * ox + 1]
                m01 = a1 if a1 > a0 else a0  # ties: the first wins, as np.argmax
                i01 = 1 if a1 > a0 else 0
                m23 = a3 if a3 > a2 else a2
                i23 = 3 if a3 > a2 else 2
                best = m23 if m23 > m01 else m01
                arg = i23 if m23 > m01 else i01
                if relu:  # the pool of relu(x): a window of zeros, its first tap wins
                    arg = arg if best > 0 else 0
                    best = best if best > 0 else zero
                o[ox] = best
                am[ox] = arg
            for ox in range(ow):  # a NaN in a window wins it (the first NaN), as np.argmax
                a0, a1 = r0[2 * ox], r0[2 * ox + 1]
                a2, a3 = r1[2 * ox], r1[2 * ox + 1]
                total = a0 + a1 + a2 + a3
                if total != total:  # a NaN (or inf - inf)
                    if a0 != a0:
                        o[ox], am[ox] = a0, 0
                    elif a1 != a1:
                        o[ox], am[ox] = a1, 1
                    elif a2 != a2:
                        o[ox], am[ox] = a2, 2
                    elif a3 != a3:
                        o[ox], am[ox] = a3, 3


def maxpool2d_forward(
    x: Any, kh: int, kw: int, stride: Pair, padding: Pair, relu: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Max over each window, read straight from ``x`` (no window copy, no im2col).

    Returns ``(out (N, C, OH, OW), argmax)``; ``argmax`` (int32) is the flat tap index
    ``i*kw + j`` of each window's first maximum. ``relu=True``: the same for ``relu(x)``
    without making it (max and ReLU commute; a window whose maximum is not positive is
    all zeros after the ReLU, and its first tap wins), which spares a full-size pass.
    """
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = np.empty((n, c, oh, ow), dtype=np.int32)
    if (kh, kw) == (2, 2) and (sh, sw) == (2, 2) and (ph, pw) == (0, 0):
        _maxpool2x2_fwd_kernel(_c(x), bool(relu), x.dtype.type(0), out, argmax)
    else:
        _maxpool_fwd_kernel(_c(x), kh, kw, sh, sw, ph, pw, bool(relu), out, argmax)
    return out, argmax


@njit(parallel=True, cache=True)
def _maxpool_bwd_kernel(grad_out, argmax, kw, sh, sw, ph, pw, out, dx):  # pragma: no cover
    # out: the pool's output, or None; given, a window whose output is not > 0 sends no
    # gradient (the ReLU before the pool, folded in: see maxpool2d_backward)
    n, c, h, w = dx.shape
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    for nc in prange(n * c):  # the thread that owns plane (n, c) does every add into it
        ni = nc // c
        ci = nc % c
        for y in range(h):
            for x in range(w):
                dx[ni, ci, y, x] = 0
        for oy in range(oh):
            for ox in range(ow):
                if out is not None and not out[ni, ci, oy, ox] > 0:
                    continue
                a = argmax[ni, ci, oy, ox]
                iy = oy * sh - ph + a // kw
                ix = ox * sw - pw + a % kw
                if 0 <= iy < h and 0 <= ix < w:
                    dx[ni, ci, iy, ix] += grad_out[ni, ci, oy, ox]


@njit(parallel=True, cache=True)
def _maxpool2x2s2_bwd_kernel(grad_out, argmax, out, dx):  # pragma: no cover
    # 2x2 windows, stride 2, no padding: the windows tile the input, so every input pixel
    # is written exactly once (no zeroing pass, no adds); an odd last row/column gets 0.
    # out: as in _maxpool_bwd_kernel.
    n, c, h, w = dx.shape
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    for nc in prange(n * c):
        ni = nc // c
        ci = nc % c
        for oy in range(oh):
            for ox in range(ow):
                g = grad_out[ni, ci, oy, ox]
                if out is not None and not out[ni, ci, oy, ox] > 0:
                    g = 0
                a = argmax[ni, ci, oy, ox]
                y0 = 2 * oy
                x0 = 2 * ox
                dx[ni, ci, y0, x0] = g if a == 0 else 0
                dx[ni, ci, y0, x0 + 1] = g if a == 1 else 0
                dx[ni, ci, y0 + 1, x0] = g if a == 2 else 0
                dx[ni, ci, y0 + 1, x0 + 1] = g if a == 3 else 0
            if w > 2 * ow:
                dx[ni, ci, 2 * oy, w - 1] = 0
                dx[ni, ci, 2 * oy + 1, w - 1] = 0
        if h > 2 * oh:
            for x in range(w):
                dx[ni, ci, h - 1, x] = 0


def maxpool2d_backward(
    grad_out: Any, argmax: Any, x_shape: tuple[int, int, int, int],
    kh: int, kw: int, stride: Pair, padding: Pair, relu_out: Any = None,
) -> np.ndarray:
    """dL/dx: each output's gradient goes to the input its window's maximum came from.

    ``relu_out``: the pool's output when its input was a ReLU's output; the result is then
    the gradient through both layers, the ReLU's backward folded in. A window's maximum
    is positive exactly when the ReLU passed the winning value, so a window whose output
    is not > 0 sends no gradient, and every other winner had ``y > 0``: the ReLU's
    backward pass over the full-size gradient (read g and y, write dx) disappears.
    """
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    out_shape = (n, c, out_size(h, kh, sh, ph), out_size(w, kw, sw, pw))
    _expect("maxpool2d_backward", "grad_out", grad_out.shape, out_shape)
    _expect("maxpool2d_backward", "argmax", argmax.shape, out_shape)
    dx = np.empty(tuple(x_shape), dtype=grad_out.dtype)
    if relu_out is not None:
        _expect("maxpool2d_backward", "relu_out", relu_out.shape, out_shape)
        relu_out = _c(relu_out)
    if (kh, kw) == (2, 2) and (sh, sw) == (2, 2) and (ph, pw) == (0, 0):
        _maxpool2x2s2_bwd_kernel(_c(grad_out), _c(argmax), relu_out, dx)
    else:
        _maxpool_bwd_kernel(_c(grad_out), _c(argmax), kw, sh, sw, ph, pw, relu_out, dx)
    return dx


@njit(parallel=True, cache=True)
def _avgpool_fwd_kernel(x, kh, kw, sh, sw, ph, pw, zero, out):  # pragma: no cover
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for nc in prange(n * c):
        ni = nc // c
        ci = nc % c
        for oy in range(oh):
            for ox in range(ow):
                acc = zero
                for i in range(kh):
                    iy = oy * sh - ph + i
                    if 0 <= iy < h:
                        for j in range(kw):
                            ix = ox * sw - pw + j
                            if 0 <= ix < w:
                                acc += x[ni, ci, iy, ix]
                out[ni, ci, oy, ox] = acc / (kh * kw)


def avgpool2d_forward(x: Any, kh: int, kw: int, stride: Pair, padding: Pair) -> np.ndarray:
    """Mean over each window, zero padding counted in the divisor ``kh*kw``."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    _avgpool_fwd_kernel(_c(x), kh, kw, sh, sw, ph, pw, x.dtype.type(0), out)
    return out


@njit(parallel=True, cache=True)
def _avgpool_bwd_kernel(grad_out, kh, kw, sh, sw, ph, pw, dx):  # pragma: no cover
    n, c, h, w = dx.shape
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    for nc in prange(n * c):
        ni = nc // c
        ci = nc % c
        for y in range(h):
            for x in range(w):
                dx[ni, ci, y, x] = 0
        for oy in range(oh):
            for ox in range(ow):
                share = grad_out[ni, ci, oy, ox] / (kh * kw)
                for i in range(kh):
                    iy = oy * sh - ph + i
                    if 0 <= iy < h:
                        for j in range(kw):
                            ix = ox * sw - pw + j
                            if 0 <= ix < w:
                                dx[ni, ci, iy, ix] += share


def avgpool2d_backward(
    grad_out: Any, x_shape: tuple[int, int, int, int],
    kh: int, kw: int, stride: Pair, padding: Pair,
) -> np.ndarray:
    """dL/dx: every input of a window gets ``grad_out / (kh*kw)``, summed over windows."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    _expect("avgpool2d_backward", "grad_out", grad_out.shape,
            (n, c, out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)))
    dx = np.empty(tuple(x_shape), dtype=grad_out.dtype)
    _avgpool_bwd_kernel(_c(grad_out), kh, kw, sh, sw, ph, pw, dx)
    return dx


# ------------------------------------------------------------------------------------ ReLU


@njit(parallel=True, cache=True)
def _relu_fwd_kernel(x, y):  # pragma: no cover
    for i in prange(x.size):
        v = x[i]
        if v <= 0:  # a NaN is not <= 0: it passes through, as in np.maximum and PyTorch
            y[i] = 0
        else:
            y[i] = v


@njit(parallel=True, cache=True)
def _relu_bwd_kernel(g, y, dx):  # pragma: no cover
    for i in prange(g.size):
        if y[i] > 0:
            dx[i] = g[i]
        else:
            dx[i] = 0


# Below this many values an elementwise pass runs as one NumPy expression on the calling
# thread: waking the parallel workers costs about 45 us (a (128, 120) ReLU: 49 us in the
# parallel kernel, 4.5 us in NumPy), more again right after a BLAS call whose threads
# still spin.
SMALL_ELEMENTWISE = 1 << 16


def relu_forward(x: Any) -> np.ndarray:
    """``max(x, 0)`` in one pass, no boolean mask kept."""
    x = _c(x)
    if x.size < SMALL_ELEMENTWISE:
        return np.maximum(x, x.dtype.type(0))
    y = np.empty_like(x)
    _relu_fwd_kernel(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(grad_out: Any, y: Any) -> np.ndarray:
    """``grad_out * [y > 0]`` from the forward *output* ``y`` (``y > 0`` iff ``x > 0``)."""
    _expect("relu_backward", "grad_out", grad_out.shape, y.shape)
    g, y = _c(grad_out), _c(y)
    if g.size < SMALL_ELEMENTWISE:
        return np.where(y > 0, g, g.dtype.type(0))
    dx = np.empty_like(g)
    _relu_bwd_kernel(g.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx


@njit(parallel=True, cache=True, fastmath={"contract"})
def _channel_affine_kernel(x, scale, shift, relu, out):  # pragma: no cover
    n, c, hw = x.shape
    for nc in prange(n * c):  # one (image, channel) row per task
        ci = nc % c
        k, b = scale[ci], shift[ci]
        xr, yr = x[nc // c, ci], out[nc // c, ci]
        for p in range(hw):
            v = xr[p] * k + b
            if relu and v < 0:  # NaN passes
                v = 0
            yr[p] = v


def channel_affine(x: Any, scale: Any, shift: Any, relu: bool, out: Any) -> np.ndarray:
    """``out = x * scale + shift`` per channel (axis 1), then ``max(out, 0)`` if ``relu``,
    in one pass; ``out`` may be ``x`` (in place). Returns ``out``."""
    x = _c(x)
    c = x.shape[1]
    _expect("channel_affine", "out", out.shape, x.shape)
    for name, a in (("scale", scale), ("shift", shift)):
        _expect("channel_affine", name, a.shape, (c,))
    if not (out.flags.c_contiguous and out.dtype == x.dtype):
        raise KernelShapeError("channel_affine needs a C-contiguous out of the input's dtype")
    dt = x.dtype
    _channel_affine_kernel(_ncl(x), _c(scale).astype(dt, copy=False),
                           _c(shift).astype(dt, copy=False), bool(relu), _ncl(out))
    return out


@njit(parallel=True, cache=True)
def _add_kernel(a, b, out):  # pragma: no cover
    for i in prange(a.size):
        out[i] = a[i] + b[i]


def add(a: Any, b: Any, out: Any) -> np.ndarray:
    """``out = a + b`` on both cores (NumPy's ``+`` runs on one); ``out`` may be ``a`` or
    ``b``. Returns ``out``."""
    _expect("add", "b", b.shape, a.shape)
    _expect("add", "out", out.shape, a.shape)
    if not (out.flags.c_contiguous and out.dtype == a.dtype):
        raise KernelShapeError("add needs a C-contiguous out of the inputs' dtype")
    a, b = _c(a), _c(b).astype(a.dtype, copy=False)
    if a.size < SMALL_ELEMENTWISE:
        np.add(a, b, out=out)
    else:
        _add_kernel(a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out


@njit(parallel=True, cache=True)
def _add_relu_kernel(a, b, out):  # pragma: no cover
    for i in prange(a.size):
        v = a[i] + b[i]
        out[i] = 0 if v < 0 else v  # NaN passes


def add_relu(a: Any, b: Any, out: Any) -> np.ndarray:
    """``out = max(a + b, 0)`` in one pass (a residual sum and its ReLU); ``out`` may be
    ``a`` or ``b`` (in place). Returns ``out``."""
    _expect("add_relu", "b", b.shape, a.shape)
    _expect("add_relu", "out", out.shape, a.shape)
    if not (out.flags.c_contiguous and out.dtype == a.dtype):
        raise KernelShapeError("add_relu needs a C-contiguous out of the inputs' dtype")
    a, b = _c(a), _c(b).astype(a.dtype, copy=False)
    _add_relu_kernel(a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out


@njit(parallel=True, cache=True)
def _add_bias_kernel(out, bias):  # pragma: no cover
    n, o, hw = out.shape
    for no in prange(n * o):  # one contiguous output plane per task, in place
        ni = no // o
        oc = no % o
        b = bias[oc]
        for p in range(hw):
            out[ni, oc, p] += b


def rows_to_nchw(rows: Any, bias: Any, out_shape: tuple[int, int, int, int]) -> np.ndarray:
    """GEMM rows ``(N*OH*OW, O)`` to NCHW ``(N, O, OH, OW)``, plus ``bias`` (None: none).

    The layout change is NumPy's blocked transpose copy (a plain loop writing O planes
    4 KB apart was 4x slower: cache-set conflicts); the bias is then added in place, in
    one pass over contiguous planes.
    """
    n, o, oh, ow = out_shape
    out = np.empty((n, o, oh, ow), dtype=rows.dtype)
    planes = out.reshape(n, o, oh * ow)
    np.copyto(planes, rows.reshape(n, oh * ow, o).transpose(0, 2, 1))
    if bias is not None:
        _add_bias_kernel(planes, _c(bias).astype(rows.dtype, copy=False))
    return out


# ------------------------------------------------------------------------------- BatchNorm


@njit(cache=True, inline="always")
def _channel_sum(x, ci):  # pragma: no cover
    # Sum of channel ci of x (N, C, L): float64 across rows; each row's sum is vectorized
    # in the array's dtype (inlined, so under the caller's fastmath reassociation).
    s = 0.0
    for ni in range(x.shape[0]):
        row = x[ni, ci]
        r = row[0] * 0
        for p in range(x.shape[2]):
            r += row[p]
        s += r
    return s


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _channel_sums_kernel(x, out):  # pragma: no cover
    for ci in prange(x.shape[1]):  # one channel per task
        out[ci] = _channel_sum(x, ci)


def channel_sums(x: Any) -> np.ndarray:
    """Per-channel sums of ``x (N, C, ...)`` over every axis but 1 (a bias gradient).

    Parallel over channels; NumPy's ``sum(axis=(0, 2, 3))`` is one thread (0.84 ms for
    SimpleConvNet's first-layer gradient at batch 128).
    """
    x = _c(x)
    n, c = x.shape[:2]
    if x.size == 0:
        return np.zeros(c, dtype=x.dtype)
    out = np.empty(c, dtype=x.dtype)
    _channel_sums_kernel(_ncl(x), out)
    return out


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _bn_stats_kernel(x, mean, var):  # pragma: no cover
    n, c, hw = x.shape
    m = n * hw
    for ci in prange(c):  # one channel per task
        mu = _channel_sum(x, ci) / m
        q = 0.0
        for ni in range(n):
            row = x[ni, ci]
            r = row[0] * 0
            for p in range(hw):
                d = row[p] - mu
                r += d * d
            q += r
        mean[ci] = mu
        var[ci] = q / m


def batchnorm_stats(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of ``x (N, C, ...)`` over every axis but 1."""
    x = _c(x)
    n, c = x.shape[:2]
    mean = np.empty(c, dtype=x.dtype)
    var = np.empty(c, dtype=x.dtype)
    _bn_stats_kernel(_ncl(x), mean, var)
    return mean, var


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _bn_bwd_kernel(g, x, mean, inv_std, scale, dx, g_sum, gx_sum):  # pragma: no cover
    # xhat = (x - mean) * inv_std is recomputed where it is read: forward keeps x (an
    # array that exists anyway) instead of writing a full-size xhat
    n, c, hw = g.shape
    m = n * hw
    for ci in prange(c):
        mu, sd = mean[ci], inv_std[ci]
        s = 0.0  # float64 across rows, vectorized row sums (as in _bn_stats_kernel)
        sx = 0.0
        for ni in range(n):
            gr, xr = g[ni, ci], x[ni, ci]
            rs = gr[0] * 0
            rx = gr[0] * 0
            for p in range(hw):
                rs += gr[p]
                rx += gr[p] * ((xr[p] - mu) * sd)
            s += rs
            sx += rx
        g_sum[ci] = s
        gx_sum[ci] = sx
        k = scale[ci] / m
        for ni in range(n):
            gr, xr, dr = g[ni, ci], x[ni, ci], dx[ni, ci]
            for p in range(hw):
                dr[p] = k * (m * gr[p] - s - ((xr[p] - mu) * sd) * sx)


def batchnorm_backward(
    grad_out: Any, x: Any, mean: Any, inv_std: Any, scale: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BatchNorm's backward with batch statistics, in two passes over each channel.

    Returns ``(dx, sum(g), sum(g * xhat))`` with sums per channel, ``xhat = (x - mean) *
    inv_std`` and ``dx = scale / m * (m*g - sum(g) - xhat * sum(g*xhat))`` (``scale =
    gamma / sigma``).
    """
    _expect("batchnorm_backward", "grad_out", grad_out.shape, x.shape)
    for name, a in (("mean", mean), ("inv_std", inv_std), ("scale", scale)):
        _expect("batchnorm_backward", name, a.shape, (x.shape[1],))
    g, x = _c(grad_out), _c(x).astype(grad_out.dtype, copy=False)
    n, c = g.shape[:2]
    dt = g.dtype
    dx = np.empty_like(g)
    g_sum = np.empty(c, dtype=dt)
    gx_sum = np.empty(c, dtype=dt)
    _bn_bwd_kernel(
        _ncl(g), _ncl(x), _c(mean).astype(dt, copy=False), _c(inv_std).astype(dt, copy=False),
        _c(scale).astype(dt, copy=False), _ncl(dx), g_sum, gx_sum,
    )
    return dx, g_sum, gx_sum


@njit(parallel=True, cache=True, fastmath={"contract"})
def _bn_fwd_kernel(x, mean, inv_std, weight, bias, y):  # pragma: no cover
    n, c, hw = x.shape
    for nc in prange(n * c):  # one (image, channel) row per task, one pass, one output
        ni = nc // c
        ci = nc % c
        mu, k, b = mean[ci], inv_std[ci] * weight[ci], bias[ci]
        xr, yr = x[ni, ci], y[ni, ci]
        for p in range(hw):
            yr[p] = (xr[p] - mu) * k + b


def batchnorm_forward(x: Any, mean: Any, inv_std: Any, weight: Any, bias: Any) -> np.ndarray:
    """``y = weight * (x - mean) * inv_std + bias`` per channel, one pass; without
    ``weight``/``bias`` (``None``) ``y = (x - mean) * inv_std``."""
    x = _c(x)
    n, c = x.shape[:2]
    for name, a in (("mean", mean), ("inv_std", inv_std), ("weight", weight), ("bias", bias)):
        if a is not None:
            _expect("batchnorm_forward", name, a.shape, (c,))
    dt = x.dtype
    affine = weight is not None
    y = np.empty_like(x)
    w = _c(weight).astype(dt, copy=False) if affine else np.ones(c, dtype=dt)
    b = _c(bias).astype(dt, copy=False) if affine else np.zeros(c, dtype=dt)
    _bn_fwd_kernel(
        _ncl(x), _c(mean).astype(dt, copy=False), _c(inv_std).astype(dt, copy=False),
        w, b, _ncl(y),
    )
    return y


# ---------------------------------------------------------------------------------- warm-up


def warmup(workers: int | None = None) -> float:
    """Compile (first run) or load from the disk cache every kernel, for float32 and float64.

    The kernels compile in this process and ``workers`` child processes (default: one per
    further core; :func:`tinycnn.fast.parallel_compile.compile_calls`). Returns the
    seconds it took: the JIT cost a training run pays once.
    """
    from tinycnn.fast.parallel_compile import compile_calls, record_calls

    start = time.perf_counter()
    calls, _ = record_calls(_every_kernel_once)
    compile_calls(calls, workers)
    _every_kernel_once()  # what the recording missed, if anything, compiles here
    return time.perf_counter() - start


def _every_kernel_once() -> None:
    """Call every kernel on small arrays, for float32 and float64."""
    for dtype in (np.float32, np.float64):
        x = np.arange(2 * 3 * 6 * 6, dtype=dtype).reshape(2, 3, 6, 6)
        cols = im2col(x, 3, 3, (1, 1), (1, 1))
        col2im(cols, x.shape, 3, 3, (1, 1), (1, 1))
        cols = im2col_images(x, 3, 3, (1, 1), (1, 1))
        col2im_images(cols, x.shape, 3, 3, (1, 1), (1, 1))
        im2col_wide(x, 3, 3)
        crop_bias(x, x[0, :, 0, 0], np.empty((2, 3, 4, 4), dtype=dtype))
        crop_bias(x[:, :, 1:, :], None, np.empty((2, 3, 4, 4), dtype=dtype))
        widen(x[:, :, 1:, 1:], np.empty((2, 3, 5, 8), dtype=dtype))
        serial.im2col_wide(x, 3, 3)
        serial.crop_bias(x, x[0, :, 0, 0], np.empty((2, 3, 4, 4), dtype=dtype))
        serial.crop_bias(x[:, :, 1:, :], None, np.empty((2, 3, 4, 4), dtype=dtype))
        serial.widen(x[:, :, 1:, 1:], np.empty((2, 3, 5, 8), dtype=dtype))
        wt = x[0, :, :3, :3].reshape(3, 1, 3, 3)
        y = depthwise_conv2d_forward(x, wt, (1, 1), (1, 1))
        depthwise_conv2d_backward(y, x, wt, (1, 1), (1, 1))
        y = conv2d_direct_forward(x, x[:2, :, :3, :3], x[0, :2, 0, 0], (1, 1))
        conv2d_direct_backward(y, x, x[:2, :, :3, :3], (1, 1))
        cols = im2col(x, 3, 3, (1, 1), (1, 1))
        maxpool2d_forward(x, 2, 2, (2, 2), (0, 0), relu=True)
        out, arg = maxpool2d_forward(x, 2, 2, (2, 2), (0, 0))  # the 2x2 kernels
        maxpool2d_backward(out, arg, x.shape, 2, 2, (2, 2), (0, 0))
        maxpool2d_backward(out, arg, x.shape, 2, 2, (2, 2), (0, 0), relu_out=out)
        maxpool2d_forward(x, 3, 3, (2, 2), (1, 1), relu=True)
        out, arg = maxpool2d_forward(x, 3, 3, (2, 2), (1, 1))  # the general ones
        maxpool2d_backward(out, arg, x.shape, 3, 3, (2, 2), (1, 1))
        maxpool2d_backward(out, arg, x.shape, 3, 3, (2, 2), (1, 1), relu_out=out)
        avg = avgpool2d_forward(x, 2, 2, (2, 2), (0, 0))
        avgpool2d_backward(avg, x.shape, 2, 2, (2, 2), (0, 0))
        flat = x.reshape(-1)  # the parallel ReLU kernels (small arrays take NumPy instead)
        _relu_fwd_kernel(flat, np.empty_like(flat))
        _relu_bwd_kernel(flat, flat, np.empty_like(flat))
        channel_sums(x)
        channel_affine(x, x[0, :, 0, 0], x[0, :, 0, 1], True, np.empty_like(x))
        add_relu(x, x, np.empty_like(x))
        _add_kernel(flat, flat, np.empty_like(flat))
        pad2d(x, 1, 2)
        conv2d_tiled(pad2d(x, 1, 3), x[:2, :, :3, :3], x[0, :2, 0, 0])  # 6-wide tiles
        conv2d_tiled(pad2d(x, 1, 4), x[:2, :, :3, :3], None)  # 8-wide tiles
        wide_x = np.concatenate([x] * 3, axis=1)  # 9 channels: groups of 6 (8 needs 16)
        conv2d_tiled_weight_grad(np.ones((2, 2, 6, 8), dtype), pad2d(wide_x, 1, 2), 3, 3)
        conv2d_tiled_weight_grad(np.ones((2, 2, 6, 8), dtype),
                                 pad2d(np.concatenate([wide_x[:, :8]] * 2, axis=1), 1, 2), 3, 3)
        rows_to_nchw(cols[:, :3], np.zeros(3, dtype=dtype), (2, 3, 6, 6))
        mean, var = batchnorm_stats(x)
        batchnorm_backward(x, x, mean, var, var)
        batchnorm_forward(x, mean, var, mean, var)
        batchnorm_forward(x, mean, var, None, None)


# ------------------------------------------------------------------------ compile options

# LLVM optimizes these kernels at -O1 instead of Numba's default -O3; the loop vectorizer
# runs at both. Measured on the 2-core AMD EPYC (Numba 0.68.1), -O1 against -O3, two
# alternating runs each: whole training and inference steps of lenet5, simple_convnet,
# deep_convnet and resnet20 within noise (resnet20 training 235-255 ms either way), 23
# kernels timed alone within noise, and compiling 25-33 % shorter (the ten kernels of the
# time-to-accuracy net: 11.4 s instead of 16.9 s on one core). NUMBA_OPT set in the
# environment wins, as it does for every Numba function.
KERNEL_OPT_LEVEL = 1


def _at_kernel_opt_level(kernel: Any) -> None:
    """Make ``kernel`` compile at :data:`KERNEL_OPT_LEVEL`, every other function unchanged.

    Numba reads its optimization level from ``numba.core.config.OPT`` while it compiles;
    it is set for this kernel's compile only, under Numba's compiler lock, so no other
    thread compiles at this level meanwhile.
    """
    compile_as_numba_does = kernel.compile

    def compile(sig: Any) -> Any:
        with global_compiler_lock:
            saved = numba_config.OPT
            numba_config.OPT = numba_config._OptLevel(KERNEL_OPT_LEVEL)
            try:
                return compile_as_numba_does(sig)
            finally:
                numba_config.OPT = saved

    kernel.compile = compile


def jitted_kernels() -> dict[str, Any]:
    """Every jitted kernel called from Python, by name (the serial twins as
    ``_serial.NAME``). Not the inlined helpers: kernels compile them into themselves (and
    Numba's typing of a call to one must see a plain dispatcher)."""
    found = {name: obj for name, obj in globals().items()
             if isinstance(obj, Dispatcher) and obj.targetoptions.get("inline", "never") == "never"}
    found.update({f"_serial.{name}": obj for name, obj in _serial.items()})
    return found


def _apply_kernel_opt_level() -> None:
    if "NUMBA_OPT" in os.environ:
        return
    for kernel in jitted_kernels().values():
        _at_kernel_opt_level(kernel)


_apply_kernel_opt_level()
