"""Reference kernels: plain NumPy, slow and obvious.

These are the teaching version of every kernel and the oracle the fast kernels are tested
against. Every other kernel module (Numba, CUDA) exposes the same functions with the same
signatures and results.

Conventions (all arrays NCHW):

* ``stride``, ``padding`` and ``dilation`` are pairs ``(along H, along W)``; padding is
  symmetric (zeros for convolution, -inf for max-pooling, counted as zeros for
  average pooling, like PyTorch's ``count_include_pad=True``).
* Output size: ``OH = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1`` (floor), same for ``OW``.
* The column matrix of ``im2col`` has one row per output position and one column per
  kernel tap: shape ``(N*OH*OW, C*kh*kw)``, rows ordered ``(n, oh, ow)``, columns
  ``(c, i, j)``, so ``cols @ weight.reshape(O, -1).T`` is the convolution.
* Max-pooling ties: the first maximum in row-major window order wins and receives the
  whole gradient (PyTorch does the same).
"""

from __future__ import annotations

from typing import Any

from tinycnn.backend import get_array_module
from tinycnn.layers.pool import windows as _layer_windows

Pair = tuple[int, int]


def out_size(size: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length along one axis: ``(size + 2*pad - dilation*(k - 1) - 1) // stride + 1``."""
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def im2col(
    x: Any, kh: int, kw: int, stride: Pair, padding: Pair, dilation: Pair = (1, 1)
) -> Any:
    """Unfold ``x (N, C, H, W)`` into the column matrix ``(N*OH*OW, C*kh*kw)``.

    One slice per kernel tap ``(i, j)`` copies, for every output position at once, the
    input pixel that tap sees.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    img = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    col = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            col[:, :, i, j] = img[:, :, top : top + sh * (oh - 1) + 1 : sh,
                                  left : left + sw * (ow - 1) + 1 : sw]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * kh * kw)


def col2im(
    cols: Any,
    x_shape: tuple[int, int, int, int],
    kh: int,
    kw: int,
    stride: Pair,
    padding: Pair,
    dilation: Pair = (1, 1),
) -> Any:
    """The adjoint of :func:`im2col`: fold ``(N*OH*OW, C*kh*kw)`` back to ``(N, C, H, W)``.

    Windows overlap, so a pixel receives the *sum* of the values of every tap that saw it.
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    col = cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    img = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            img[:, :, top : top + sh * (oh - 1) + 1 : sh,
                left : left + sw * (ow - 1) + 1 : sw] += col[:, :, i, j]
    return img[:, :, ph : ph + h, pw : pw + w]


def _windows(x: Any, kh: int, kw: int, stride: Pair, padding: Pair, fill: float) -> Any:
    """All pooling windows as ``(N, C, OH, OW, kh*kw)``: the pooling layers' own function."""
    return _layer_windows(x, (kh, kw), stride, padding, fill)


def maxpool2d_forward(
    x: Any, kh: int, kw: int, stride: Pair, padding: Pair, relu: bool = False
) -> tuple[Any, Any]:
    """Max over each window. Returns ``(out (N, C, OH, OW), argmax)``.

    ``argmax`` holds, per output, the flat index ``i*kw + j`` of the winning tap in its
    window (the first one on ties); backward routes the gradient there. ``relu=True``:
    the same for ``relu(x)``.
    """
    if relu:
        x = relu_forward(x)
    win = _windows(x, kh, kw, stride, padding, fill=-float("inf"))
    argmax = win.argmax(axis=-1)
    return win.max(axis=-1), argmax


def maxpool2d_backward(
    grad_out: Any, argmax: Any, x_shape: tuple[int, int, int, int],
    kh: int, kw: int, stride: Pair, padding: Pair, relu_out: Any = None,
) -> Any:
    """dL/dx: each output's gradient goes to the one input its window's maximum came from.

    ``relu_out`` (the pool's output after a ReLU): windows whose output is not > 0 send
    nothing, which is the ReLU's backward folded in.
    """
    xp = get_array_module(grad_out)
    if relu_out is not None:
        grad_out = xp.where(relu_out > 0, grad_out, xp.zeros((), dtype=grad_out.dtype))
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = grad_out.shape[2:]
    dx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            routed = xp.where(argmax == i * kw + j, grad_out, 0)
            dx[:, :, i : i + sh * (oh - 1) + 1 : sh,
               j : j + sw * (ow - 1) + 1 : sw] += routed
    return dx[:, :, ph : ph + h, pw : pw + w]


def avgpool2d_forward(x: Any, kh: int, kw: int, stride: Pair, padding: Pair) -> Any:
    """Mean over each window, zero padding counted in the divisor ``kh*kw``."""
    return _windows(x, kh, kw, stride, padding, fill=0.0).mean(axis=-1)


def avgpool2d_backward(
    grad_out: Any, x_shape: tuple[int, int, int, int],
    kh: int, kw: int, stride: Pair, padding: Pair,
) -> Any:
    """dL/dx: every input of a window gets ``grad_out / (kh*kw)``, summed over windows."""
    xp = get_array_module(grad_out)
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = grad_out.shape[2:]
    share = grad_out / (kh * kw)
    dx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i : i + sh * (oh - 1) + 1 : sh,
               j : j + sw * (ow - 1) + 1 : sw] += share
    return dx[:, :, ph : ph + h, pw : pw + w]


def relu_forward(x: Any) -> Any:
    """``y = max(x, 0)`` (NaN stays NaN). The output doubles as the backward mask."""
    xp = get_array_module(x)
    return xp.maximum(x, 0).astype(x.dtype, copy=False)


def relu_backward(grad_out: Any, y: Any) -> Any:
    """dL/dx = g where y > 0, else 0, from the forward *output* ``y``."""
    xp = get_array_module(grad_out)
    return xp.where(y > 0, grad_out, xp.zeros((), dtype=grad_out.dtype))


def channel_affine(x: Any, scale: Any, shift: Any, relu: bool, out: Any) -> Any:
    """``out = x * scale + shift`` per channel (axis 1), then ``max(out, 0)`` if ``relu``
    (NaN stays NaN); ``out`` may be ``x``. Returns ``out``."""
    xp = get_array_module(x)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = x * scale.astype(x.dtype, copy=False).reshape(shape) + shift.astype(
        x.dtype, copy=False).reshape(shape)
    out[...] = xp.maximum(y, 0) if relu else y
    return out


def add(a: Any, b: Any, out: Any) -> Any:
    """``out = a + b``; ``out`` may be ``a`` or ``b``."""
    out[...] = a + b
    return out


def add_relu(a: Any, b: Any, out: Any) -> Any:
    """``out = max(a + b, 0)`` (NaN stays NaN); ``out`` may be ``a`` or ``b``."""
    xp = get_array_module(a)
    out[...] = xp.maximum(a + b, 0)
    return out


def _zero_extended(x: Any, top: int, left: int, hp: int, wp: int) -> Any:
    """``xz (N, C, hp, wp)`` with ``xz[..., r, s] = x[..., r - top, s - left]``, 0 outside
    ``x``: ``x`` zero-padded by ``top`` rows and ``left`` columns (cropped where those are
    negative) and after it as far as ``hp x wp`` reaches."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    xz = xp.zeros((n, c, hp, wp), dtype=x.dtype)
    r0, r1 = max(0, top), min(hp, top + h)
    s0, s1 = max(0, left), min(wp, left + w)
    if r0 < r1 and s0 < s1:
        xz[:, :, r0:r1, s0:s1] = x[:, :, r0 - top : r1 - top, s0 - left : s1 - left]
    return xz


def conv2d_tiled(x: Any, weight: Any, bias: Any, stride: Pair = (1, 1),
                 padding: Pair = (0, 0), out_hw: Pair | None = None, relu: bool = False) -> Any:
    """Convolution of ``x (N, C, H, W)`` zero-padded by ``padding = (top, left)``, tap by
    tap: ``y[n, o, r, s] = b[o] + sum_{c,i,j} w[o, c, i, j] * xz[n, c, r*sh + i, s*sw + j]``
    with ``xz = _zero_extended(x, top, left, ...)``, for an output ``out_hw = (OH, OW)``
    (default: the same padding after the image as before it); ``relu``: ``max(y, 0)``.

    The Numba twin computes the same sums in register tiles (see ``numba_cpu``).
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    (sh, sw), (top, left) = stride, padding
    oh, ow = out_hw or ((h + 2 * top - kh) // sh + 1, (w + 2 * left - kw) // sw + 1)
    xz = _zero_extended(x, top, left, (oh - 1) * sh + kh, (ow - 1) * sw + kw)
    y = xp.zeros((n, o, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            taps = xz[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            y += xp.einsum("oc,nchw->nohw", weight[:, :, i, j], taps)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return xp.maximum(y, 0) if relu else y


def conv2d_tiled_input_grad(grad_out: Any, weight: Any, stride: Pair, padding: Pair,
                            x_hw: Pair) -> Any:
    """``dx (N, C, H, W)`` of :func:`conv2d_tiled`, tap by tap: each output's gradient
    times ``w[:, :, i, j]`` goes back to the input it read through tap ``(i, j)``
    (``dxz``: the zero-padded input's gradient, then cropped to the image).

    The Numba twin splits it into one stride-1 convolution per phase of dx (see there).
    """
    xp = get_array_module(grad_out)
    n, o, oh, ow = grad_out.shape
    _, c, kh, kw = weight.shape
    (sh, sw), (top, left), (h, w) = stride, padding, x_hw
    hz = max((oh - 1) * sh + kh, top + h)
    wz = max((ow - 1) * sw + kw, left + w)
    dxz = xp.zeros((n, c, hz, wz), dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            dxz[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += (
                xp.einsum("nohw,oc->nchw", grad_out, weight[:, :, i, j]))
    return xp.ascontiguousarray(dxz[:, :, top : top + h, left : left + w])


def conv2d_tiled_weight_grad(grad_out: Any, x: Any, kh: int, kw: int, stride: Pair = (1, 1),
                             padding: Pair = (0, 0)) -> Any:
    """``dW`` of :func:`conv2d_tiled`, tap by tap:
    ``dW[o, c, i, j] = sum_{n,r,s} g[n, o, r, s] * xz[n, c, r*sh + i, s*sw + j]``."""
    xp = get_array_module(grad_out)
    n, c = x.shape[:2]
    o, oh, ow = grad_out.shape[1:]
    (sh, sw), (top, left) = stride, padding
    xz = _zero_extended(x, top, left, (oh - 1) * sh + kh, (ow - 1) * sw + kw)
    dw = xp.zeros((o, c, kh, kw), dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            taps = xz[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            dw[:, :, i, j] = xp.einsum("nohw,nchw->oc", grad_out, taps)
    return dw


def rows_to_nchw(rows: Any, bias: Any, out_shape: tuple[int, int, int, int]) -> Any:
    """GEMM rows ``(N*OH*OW, O)`` (ordered ``(n, oh, ow)``) to ``(N, O, OH, OW)``, + bias.

    ``rows`` is ``cols @ W_col^T``; ``bias`` may be ``None``.
    """
    xp = get_array_module(rows)
    n, o, oh, ow = out_shape
    y = rows.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
    if bias is not None:
        y = y + bias.astype(rows.dtype, copy=False).reshape(1, o, 1, 1)
    return xp.ascontiguousarray(y, dtype=rows.dtype)


def pad2d(x: Any, ph: int, pw: int) -> Any:
    """``x (N, C, H, W)`` zero-padded by ``ph`` rows and ``pw`` columns on each side
    (C-contiguous)."""
    xp = get_array_module(x)
    if not (ph or pw):
        return xp.ascontiguousarray(x)
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def channel_sums(x: Any) -> Any:
    """Per-channel sums of ``x (N, C, ...)`` over every axis but 1 (a bias gradient)."""
    return x.sum(axis=(0, *range(2, x.ndim)))


def batchnorm_stats(x: Any) -> tuple[Any, Any]:
    """Per-channel mean and biased variance of ``x (N, C, ...)`` over every axis but 1."""
    axes = (0, *range(2, x.ndim))
    mean = x.mean(axis=axes)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    xc = x - mean.reshape(shape)
    return mean, (xc * xc).mean(axis=axes)


def batchnorm_backward(
    grad_out: Any, x: Any, mean: Any, inv_std: Any, scale: Any
) -> tuple[Any, Any, Any]:
    """BatchNorm's backward with batch statistics, ``m`` values per channel.

    Returns ``(dx, sum(g), sum(g * xhat))`` (sums per channel) with ``xhat = (x - mean) *
    inv_std``, ``dx = scale / m * (m*g - sum(g) - xhat * sum(g*xhat))`` and ``scale =
    gamma / sigma``.
    """
    axes = (0, *range(2, grad_out.ndim))
    shape = (1, grad_out.shape[1]) + (1,) * (grad_out.ndim - 2)
    m = grad_out.size // grad_out.shape[1]
    dt = grad_out.dtype
    xhat = (x.astype(dt, copy=False) - mean.astype(dt, copy=False).reshape(shape)) * (
        inv_std.astype(dt, copy=False).reshape(shape))
    g_sum = grad_out.sum(axis=axes)
    gx_sum = (grad_out * xhat).sum(axis=axes)
    dx = grad_out * m - xhat * gx_sum.reshape(shape)
    dx -= g_sum.reshape(shape)
    dx *= (scale.astype(dt, copy=False) / m).reshape(shape)
    return dx, g_sum, gx_sum


def batchnorm_forward(x: Any, mean: Any, inv_std: Any, weight: Any, bias: Any) -> Any:
    """Normalize per channel (axis 1): ``y = weight * (x - mean) * inv_std + bias``.

    ``weight``/``bias`` may be ``None`` (no affine part: ``y = (x - mean) * inv_std``).
    All per-channel vectors have length ``C``.
    """
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    dt = x.dtype
    xhat = (x - mean.astype(dt, copy=False).reshape(shape)) * inv_std.astype(
        dt, copy=False).reshape(shape)
    if weight is None:
        return xhat
    y = xhat * weight.astype(dt, copy=False).reshape(shape)
    y += bias.astype(dt, copy=False).reshape(shape)
    return y


def im2col_images(
    x: Any, kh: int, kw: int, stride: Pair, padding: Pair, dilation: Pair = (1, 1),
    out: Any = None,
) -> Any:
    """Unfold ``x (N, C, H, W)`` image by image into ``(N, C*kh*kw, OH*OW)``.

    The transpose of :func:`im2col`'s layout, per image: row ``(c, i, j)`` of image ``n``
    holds what tap ``(i, j)`` of channel ``c`` sees at every output position, so
    ``W.reshape(O, -1) @ cols[n]`` is image ``n``'s output already in ``(O, OH*OW)``
    (NCHW) order. ``out``, if given, is filled and returned (a buffer reused across calls).
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    img = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    if out is None:
        out = xp.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    col = out.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            col[:, :, i, j] = img[:, :, top : top + sh * (oh - 1) + 1 : sh,
                                  left : left + sw * (ow - 1) + 1 : sw]
    return out


def im2col_wide(xpad: Any, kh: int, kw: int, dilation: Pair = (1, 1), out: Any = None) -> Any:
    """Stride-1 columns of an already padded ``xpad (N, C, Hp, Wp)``: ``(N, C*kh*kw, OH*Wp)``.

    Output rows keep the padded width ``Wp`` (``OH = Hp - dh*(kh-1)``), so row ``(c, i, j)``
    of image ``n`` is one contiguous run of the flattened plane, starting at
    ``(i*dh)*Wp + j*dw``: ``cols[n, (c,i,j), p] = xpad_flat[n, c, p + (i*dh)*Wp + j*dw]``.
    Positions ``p = oy*Wp + ox`` with ``ox >= OW = Wp - dw*(kw-1)`` see wrapped pixels
    (garbage); whoever uses the columns crops them away (or zeroes their gradient). Reads
    past the end of a plane give 0.
    """
    xp = get_array_module(xpad)
    n, c, hp, wp = xpad.shape
    dh, dw = dilation
    oh = hp - dh * (kh - 1)
    length = oh * wp
    tail = xp.zeros((n, c, dw * (kw - 1)), dtype=xpad.dtype)  # the wrap past the last row
    flat = xp.concatenate([xpad.reshape(n, c, hp * wp), tail], axis=2)
    if out is None:
        out = xp.empty((n, c * kh * kw, length), dtype=xpad.dtype)
    col = out.reshape(n, c, kh, kw, length)
    for i in range(kh):
        for j in range(kw):
            start = i * dh * wp + j * dw
            col[:, :, i, j] = flat[:, :, start : start + length]
    return out


def crop_bias(src: Any, bias: Any, out: Any) -> Any:
    """``out[...] = src[:, :, :OH, :OW] + bias[c]`` (``bias`` None: no bias); returns ``out``.

    Drops the wrapped columns of a :func:`im2col_wide` result, ``out`` is ``(N, C, OH, OW)``.
    """
    oh, ow = out.shape[2:]
    out[...] = src[:, :, :oh, :ow]
    if bias is not None:
        out += bias.astype(out.dtype, copy=False).reshape(1, -1, 1, 1)
    return out


def widen(src: Any, out: Any) -> Any:
    """``out[..., :W] = src`` and zeros in the extra columns of ``out (N, C, H, W')``."""
    w = src.shape[3]
    out[..., :w] = src
    out[..., w:] = 0
    return out


def col2im_images(
    cols: Any,
    x_shape: tuple[int, int, int, int],
    kh: int,
    kw: int,
    stride: Pair,
    padding: Pair,
    dilation: Pair = (1, 1),
    out: Any = None,
) -> Any:
    """The adjoint of :func:`im2col_images`: fold ``(N, C*kh*kw, OH*OW)`` to ``(N, C, H, W)``.

    Each pixel receives the sum of every tap that saw it. ``out`` (C-contiguous), if
    given, is overwritten and returned.
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    col = cols.reshape(n, c, kh, kw, oh, ow)
    img = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            img[:, :, top : top + sh * (oh - 1) + 1 : sh,
                left : left + sw * (ow - 1) + 1 : sw] += col[:, :, i, j]
    if out is None:
        return img[:, :, ph : ph + h, pw : pw + w].copy()
    out[...] = img[:, :, ph : ph + h, pw : pw + w]
    return out


def _tap(img: Any, i: int, j: int, oh: int, ow: int, stride: Pair, dilation: Pair) -> Any:
    """The strided view of a padded image that kernel tap ``(i, j)`` sees: ``(N, C, OH, OW)``."""
    (sh, sw), (dh, dw) = stride, dilation
    top, left = i * dh, j * dw
    return img[:, :, top : top + sh * (oh - 1) + 1 : sh, left : left + sw * (ow - 1) + 1 : sw]


def depthwise_conv2d_forward(
    x: Any, weight: Any, stride: Pair, padding: Pair, dilation: Pair = (1, 1)
) -> Any:
    """Depthwise convolution: channel ``c`` of ``x (N, C, H, W)`` with its own filter.

    ``weight`` is ``(C, 1, kh, kw)``; ``y[n, c] = sum_ij weight[c, 0, i, j] * x_pad[n, c,
    tap (i, j)]``: a loop over the kh*kw taps, each a scaled strided view (no im2col).
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    img = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    wt = weight.astype(x.dtype, copy=False).reshape(1, c, kh, kw)
    y = xp.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += wt[:, :, i, j, None, None] * _tap(img, i, j, oh, ow, stride, dilation)
    return y


def depthwise_conv2d_backward(
    grad_out: Any, x: Any, weight: Any, stride: Pair, padding: Pair, dilation: Pair = (1, 1),
    input_grad: bool = True,
) -> tuple[Any, Any]:
    """Gradients of :func:`depthwise_conv2d_forward`: ``(dx or None, dweight)``.

    ``dweight[c, 0, i, j] = sum_{n, oy, ox} g[n, c] * x_pad[n, c, tap (i, j)]`` and
    ``dx_pad[n, c, tap (i, j)] += weight[c, 0, i, j] * g[n, c]`` (cropped to ``H x W``).
    """
    xp = get_array_module(grad_out)
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    (ph, pw) = padding
    oh, ow = grad_out.shape[2:]
    img = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dw = xp.empty((c, 1, kh, kw), dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            dw[:, 0, i, j] = (grad_out * _tap(img, i, j, oh, ow, stride, dilation)).sum(
                axis=(0, 2, 3))
    if not input_grad:
        return None, dw
    wt = weight.astype(grad_out.dtype, copy=False).reshape(1, c, kh, kw)
    dimg = xp.zeros(img.shape, dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            _tap(dimg, i, j, oh, ow, stride, dilation)[...] += wt[:, :, i, j, None, None] * grad_out
    return dimg[:, :, ph : ph + h, pw : pw + w].copy(), dw


def conv2d_direct_forward(x: Any, weight: Any, bias: Any, padding: Pair) -> Any:
    """Stride-1 convolution as a sum over kernel taps, no column matrix.

    ``y[n, o] = b[o] + sum_{c, i, j} weight[o, c, i, j] * x_pad[n, c, tap (i, j)]``, each
    tap a shifted ``(N, C, OH, OW)`` view of the padded input. ``bias`` may be ``None``.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ph, pw = padding
    oh, ow = out_size(h, kh, 1, ph), out_size(w, kw, 1, pw)
    img = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    wt = weight.astype(x.dtype, copy=False)
    y = xp.zeros((n, o, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += xp.einsum("oc,nchw->nohw", wt[:, :, i, j], img[:, :, i : i + oh, j : j + ow])
    if bias is not None:
        y += bias.astype(x.dtype, copy=False).reshape(1, o, 1, 1)
    return y


def conv2d_direct_backward(
    grad_out: Any, x: Any, weight: Any, padding: Pair, input_grad: bool = True,
    weight_grad: bool = True,
) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv2d_direct_forward`: ``(dx or None, dweight or None, dbias)``.

    ``dweight[o, c, i, j] = sum_{n, oy, ox} g[n, o] * x_pad[n, c, tap (i, j)]``,
    ``dx_pad[n, c, tap (i, j)] += sum_o weight[o, c, i, j] * g[n, o]`` (cropped to H x W)
    and ``dbias[o] = sum_{n, oy, ox} g[n, o]``.
    """
    xp = get_array_module(grad_out)
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    ph, pw = padding
    oh, ow = grad_out.shape[2:]
    img = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dw = xp.empty(weight.shape, dtype=grad_out.dtype) if weight_grad else None
    for i in range(kh if weight_grad else 0):
        for j in range(kw):
            dw[:, :, i, j] = xp.einsum("nohw,nchw->oc", grad_out,
                                       img[:, :, i : i + oh, j : j + ow])
    db = channel_sums(grad_out)
    if not input_grad:
        return None, dw, db
    wt = weight.astype(grad_out.dtype, copy=False)
    dimg = xp.zeros(img.shape, dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            dimg[:, :, i : i + oh, j : j + ow] += xp.einsum("oc,nohw->nchw", wt[:, :, i, j],
                                                             grad_out)
    return dimg[:, :, ph : ph + h, pw : pw + w].copy(), dw, db
