"""Pooling layers: max, average (windowed) and global average."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.layers.arguments import IntOrPair, check_pair
from tinycnn.module import LayerInputError, Module, check_input


def pool_out_size(size: int, k: int, stride: int, pad: int, ceil_mode: bool = False) -> int:
    """Output length along one axis, PyTorch's rule.

    Floor: ``(size + 2*pad - k) // stride + 1``, windows that would hang over the padded
    edge are not computed. ``ceil_mode``: rounded up, so a last partial window is kept, as
    long as it starts inside the input or the left padding (never in the right padding).
    """
    if not ceil_mode:
        return (size + 2 * pad - k) // stride + 1
    out = -(-(size + 2 * pad - k) // stride) + 1
    if (out - 1) * stride >= size + pad:  # the last window would start in the right padding
        out -= 1
    return out


def overhang(size: int, k: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """How far the last window reaches past the padded input (``ceil_mode`` only, else 0)."""
    out = pool_out_size(size, k, stride, pad, ceil_mode)
    return max(0, (out - 1) * stride + k - (size + 2 * pad))


def windows(x: Any, kernel_size: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int], fill: float, ceil_mode: bool = False) -> Any:
    """Every pooling window of ``x (N, C, H, W)`` as ``(N, C, OH, OW, kH*kW)``.

    The input is padded with ``fill`` on each side (and, with ``ceil_mode``, past the
    bottom and right edges as far as the last window reaches); entry ``i*kW + j`` of a
    window is what tap ``(i, j)`` sees. One strided slice per tap copies it for every
    window at once.
    """
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = pool_out_size(h, kh, sh, ph, ceil_mode), pool_out_size(w, kw, sw, pw, ceil_mode)
    eh, ew = overhang(h, kh, sh, ph, ceil_mode), overhang(w, kw, sw, pw, ceil_mode)
    img = xp.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=fill)
    win = xp.empty((n, c, oh, ow, kh * kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            win[..., i * kw + j] = img[:, :, i : i + sh * (oh - 1) + 1 : sh,
                                       j : j + sw * (ow - 1) + 1 : sw]
    return win


def unwindow(dwin: Any, x_shape: tuple[int, ...], kernel_size: tuple[int, int],
             stride: tuple[int, int], padding: tuple[int, int], ceil_mode: bool = False) -> Any:
    """The adjoint of :func:`windows`: add each window's entries back onto ``(N, C, H, W)``.

    A pixel in several windows receives the sum of its entries (``+=``); the padding's
    share (and the ``ceil_mode`` overhang's) is cropped away.
    """
    xp = backend.get_array_module(dwin)
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = dwin.shape[2:4]
    eh, ew = overhang(h, kh, sh, ph, ceil_mode), overhang(w, kw, sw, pw, ceil_mode)
    dx = xp.zeros((n, c, h + 2 * ph + eh, w + 2 * pw + ew), dtype=dwin.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i : i + sh * (oh - 1) + 1 : sh,
               j : j + sw * (ow - 1) + 1 : sw] += dwin[..., i * kw + j]
    return dx[:, :, ph : ph + h, pw : pw + w]


def window_counts(size: int, k: int, stride: int, pad: int, ceil_mode: bool,
                  count_include_pad: bool) -> np.ndarray:
    """Per output position along one axis, how many taps an average divides by (PyTorch's).

    A window starting at ``s = o*stride - pad`` covers ``[s, min(s + k, size + pad))``:
    the padding counts with ``count_include_pad``, the ``ceil_mode`` overhang never does;
    without ``count_include_pad`` only ``[max(s, 0), min(s + k, size))`` counts.
    """
    start = np.arange(pool_out_size(size, k, stride, pad, ceil_mode)) * stride - pad
    end = np.minimum(start + k, size + pad)
    if not count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return end - start


class _Pool2D(Module):
    """Shared window bookkeeping of :class:`MaxPool2D` and :class:`AvgPool2D`."""

    ceil_mode = False  # class defaults: layers pickled before these options still load
    count_include_pad = True

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        name = self._name()
        self.kernel_size = check_pair(name, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else check_pair(name, "stride", stride, 1)
        self.padding = check_pair(name, "padding", padding, 0)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        # PyTorch's rule; it also guarantees every window holds at least one real pixel.
        if ph > kh // 2 or pw > kw // 2:
            raise ValueError(
                f"{self._name()}: padding must be at most half the kernel size, "
                f"got padding {self.padding} for kernel_size {self.kernel_size}"
            )
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"{name}: ceil_mode must be True or False, got {ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)
        self.x_shape = None

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """``(N, C, OH, OW)``, ``OH = (H + 2*pH - kH) // sH + 1`` (floor, as in PyTorch);
        with ``ceil_mode`` rounded up, but the last window starts inside the input or
        the top/left padding (:func:`pool_out_size`)."""
        n, c, h, w = in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (n, c, pool_out_size(h, kh, sh, ph, self.ceil_mode),
                pool_out_size(w, kw, sw, pw, self.ceil_mode))

    def has_overhang(self, in_shape: tuple[int, ...]) -> bool:
        """True when ``ceil_mode`` keeps a last window that reaches past the padded input."""
        h, w = in_shape[2:]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return bool(overhang(h, kh, sh, ph, self.ceil_mode)
                    or overhang(w, kw, sw, pw, self.ceil_mode))

    def _check(self, x: Any) -> None:
        check_input(self, x, 4, "(N, C, H, W)")
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        h, w = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
        if min(self.output_shape(x.shape)[2:]) < 1:
            raise LayerInputError(
                f"{self._name()} expected a padded input of at least {kh}x{kw} for its "
                f"kernel, got {h}x{w} (input shape {tuple(x.shape)}, padding {self.padding})"
            )

    def _clear_cache(self) -> None:
        self.x_shape = None

    def extra_repr(self) -> str:
        text = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        return text + (", ceil_mode=True" if self.ceil_mode else "")


class MaxPool2D(_Pool2D):
    r"""Maximum over each ``kH x kW`` window, ``(N, C, H, W) -> (N, C, OH, OW)``.

    Forward: ``y = max(window)``, padding is -inf (never the maximum); ``argmax`` keeps,
    per output, which entry ``i*kW + j`` of its window won. A NaN in a window wins (the
    output is NaN, as in PyTorch). Ties: the first maximum in row-major window order wins.
    ``ceil_mode=True`` (PyTorch's) rounds the output size up: a last, partial window at the
    bottom and right edges is kept when it starts inside the input or the top/left padding;
    its missing part is -inf like the padding.

    Backward: :math:`\partial L/\partial x` receives each output's gradient at its window's
    winner, zero elsewhere (summed where windows overlap).
    """

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.argmax = None

    def forward(self, x: Any) -> Any:
        self._check(x)
        win = windows(x, self.kernel_size, self.stride, self.padding, fill=-float("inf"),
                      ceil_mode=self.ceil_mode)
        self.argmax = win.argmax(axis=-1)  # (N, C, OH, OW); argmax finds a NaN first
        self.x_shape = x.shape
        return win.max(axis=-1)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.argmax, self.x_shape)
        xp = backend.get_array_module(grad_out)
        taps = self.kernel_size[0] * self.kernel_size[1]
        # the gradient of each window, all of it at the winner's entry
        winner = xp.arange(taps) == self.argmax[..., None]  # (N, C, OH, OW, kH*kW)
        dwin = xp.where(winner, grad_out[..., None], xp.zeros((), dtype=grad_out.dtype))
        return unwindow(dwin, self.x_shape, self.kernel_size, self.stride, self.padding,
                        self.ceil_mode)

    def _clear_cache(self) -> None:
        self.argmax = None
        self.x_shape = None


class AvgPool2D(_Pool2D):
    r"""Mean over each ``kH x kW`` window, ``(N, C, H, W) -> (N, C, OH, OW)``.

    :math:`y = \sum \mathrm{window} / \mathrm{count}`, padding is zero. With
    ``count_include_pad=True`` (the default, PyTorch's) the zero padding counts in
    ``count`` (``kH*kW`` for every window unless ``ceil_mode``); with ``False`` only the
    input pixels in the window count. ``ceil_mode=True`` rounds the output size up as in
    :class:`MaxPool2D`; the part of the last window past the padding never counts
    (:func:`window_counts`, PyTorch's rule).

    Backward: every input of a window receives :math:`g / \mathrm{count}`, summed over the
    windows that contain it.
    """

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
        ceil_mode: bool = False, count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise TypeError(f"AvgPool2D: count_include_pad must be True or False, "
                            f"got {count_include_pad!r}")
        self.count_include_pad = bool(count_include_pad)

    def counts(self, x: Any) -> Any:
        """``(OH, OW)``: how many taps each window's mean divides by, for an input (or
        gradient) array ``x`` of the last forward's size, in ``x``'s dtype and device."""
        xp = backend.get_array_module(x)
        h, w = self.x_shape[2:]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ch = window_counts(h, kh, sh, ph, self.ceil_mode, self.count_include_pad)
        cw = window_counts(w, kw, sw, pw, self.ceil_mode, self.count_include_pad)
        return xp.asarray(np.outer(ch, cw), dtype=x.dtype)

    def forward(self, x: Any) -> Any:
        self._check(x)
        self.x_shape = x.shape
        win = windows(x, self.kernel_size, self.stride, self.padding, fill=0.0,
                      ceil_mode=self.ceil_mode)
        if self.count_include_pad and not self.has_overhang(x.shape):
            return win.mean(axis=-1)  # every window divides by kH*kW
        return win.sum(axis=-1) / self.counts(x)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x_shape)
        xp = backend.get_array_module(grad_out)
        taps = self.kernel_size[0] * self.kernel_size[1]
        if self.count_include_pad and not self.has_overhang(self.x_shape):
            share = grad_out / taps
        else:
            share = grad_out / self.counts(grad_out)
        dwin = xp.broadcast_to(share[..., None], (*grad_out.shape, taps))
        return unwindow(dwin, self.x_shape, self.kernel_size, self.stride, self.padding,
                        self.ceil_mode)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + ("" if self.count_include_pad else ", count_include_pad=False")


class GlobalAvgPool2D(Module):
    """Mean over all positions of each channel: ``(N, C, H, W) -> (N, C)``.

    Backward: dL/dx[n, c, h, w] = g[n, c] / (H*W).
    """

    def __init__(self) -> None:
        super().__init__()
        self.x_shape = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, 4, "(N, C, H, W)")
        if x.shape[2] * x.shape[3] == 0:
            raise LayerInputError(
                f"GlobalAvgPool2D expected a non-empty H x W, got shape {tuple(x.shape)}"
            )
        self.x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x_shape)
        xp = backend.get_array_module(grad_out)
        h, w = self.x_shape[2:]
        share = grad_out[:, :, None, None] / (h * w)
        return xp.broadcast_to(share, self.x_shape).copy()

    def _clear_cache(self) -> None:
        self.x_shape = None
