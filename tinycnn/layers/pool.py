"""Pooling layers: max, average (windowed) and global average."""

from __future__ import annotations

from typing import Any

from tinycnn import backend
from tinycnn.layers.arguments import IntOrPair, check_pair
from tinycnn.layers.conv import out_size
from tinycnn.module import LayerInputError, Module, check_input


def windows(x: Any, kernel_size: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int], fill: float) -> Any:
    """Every pooling window of ``x (N, C, H, W)`` as ``(N, C, OH, OW, kH*kW)``.

    The input is padded with ``fill`` on each side; entry ``i*kW + j`` of a window is what
    tap ``(i, j)`` sees. One strided slice per tap copies it for every window at once.
    """
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    img = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    win = xp.empty((n, c, oh, ow, kh * kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            win[..., i * kw + j] = img[:, :, i : i + sh * (oh - 1) + 1 : sh,
                                       j : j + sw * (ow - 1) + 1 : sw]
    return win


def unwindow(dwin: Any, x_shape: tuple[int, ...], kernel_size: tuple[int, int],
             stride: tuple[int, int], padding: tuple[int, int]) -> Any:
    """The adjoint of :func:`windows`: add each window's entries back onto ``(N, C, H, W)``.

    A pixel in several windows receives the sum of its entries (``+=``); the padding's
    share is cropped away.
    """
    xp = backend.get_array_module(dwin)
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = dwin.shape[2:4]
    dx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dwin.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i : i + sh * (oh - 1) + 1 : sh,
               j : j + sw * (ow - 1) + 1 : sw] += dwin[..., i * kw + j]
    return dx[:, :, ph : ph + h, pw : pw + w]


class _Pool2D(Module):
    """Shared window bookkeeping of :class:`MaxPool2D` and :class:`AvgPool2D`."""

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
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
        self.x_shape = None

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """``(N, C, OH, OW)``, ``OH = (H + 2*pH - kH) // sH + 1`` (floor, as in PyTorch)."""
        n, c, h, w = in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return n, c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def _check(self, x: Any) -> None:
        check_input(self, x, 4, "(N, C, H, W)")
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        h, w = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
        if h < kh or w < kw:
            raise LayerInputError(
                f"{self._name()} expected a padded input of at least {kh}x{kw} for its "
                f"kernel, got {h}x{w} (input shape {tuple(x.shape)}, padding {self.padding})"
            )

    def _clear_cache(self) -> None:
        self.x_shape = None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2D(_Pool2D):
    r"""Maximum over each ``kH x kW`` window, ``(N, C, H, W) -> (N, C, OH, OW)``.

    Forward: ``y = max(window)``, padding is -inf (never the maximum); ``argmax`` keeps,
    per output, which entry ``i*kW + j`` of its window won. A NaN in a window wins (the
    output is NaN, as in PyTorch). Ties: the first maximum in row-major window order wins.

    Backward: :math:`\partial L/\partial x` receives each output's gradient at its window's
    winner, zero elsewhere (summed where windows overlap).
    """

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self.argmax = None

    def forward(self, x: Any) -> Any:
        self._check(x)
        win = windows(x, self.kernel_size, self.stride, self.padding, fill=-float("inf"))
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
        return unwindow(dwin, self.x_shape, self.kernel_size, self.stride, self.padding)

    def _clear_cache(self) -> None:
        self.argmax = None
        self.x_shape = None


class AvgPool2D(_Pool2D):
    r"""Mean over each ``kH x kW`` window, ``(N, C, H, W) -> (N, C, OH, OW)``.

    Zero padding counts in the divisor (PyTorch's ``count_include_pad=True``):
    :math:`y = \sum \mathrm{window} / (k_H k_W)`. Backward: every input of a window receives
    :math:`g / (k_H k_W)`, summed over the windows that contain it.
    """

    def forward(self, x: Any) -> Any:
        self._check(x)
        self.x_shape = x.shape
        return windows(x, self.kernel_size, self.stride, self.padding, fill=0.0).mean(axis=-1)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x_shape)
        xp = backend.get_array_module(grad_out)
        taps = self.kernel_size[0] * self.kernel_size[1]
        dwin = xp.broadcast_to((grad_out / taps)[..., None], (*grad_out.shape, taps))
        return unwindow(dwin, self.x_shape, self.kernel_size, self.stride, self.padding)


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
