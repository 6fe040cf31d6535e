"""Pooling layers: max, average (windowed) and global average."""

from __future__ import annotations

from typing import Any

from tinycnn import backend
from tinycnn.layers.conv import IntOrPair, _pair
from tinycnn.module import LayerInputError, Module, check_input


class _Pool2D(Module):
    """Shared window bookkeeping of :class:`MaxPool2D` and :class:`AvgPool2D`."""

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
    ) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
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
    """Maximum over each ``kH x kW`` window, ``(N, C, H, W) -> (N, C, OH, OW)``.

    Padding is -inf (never the maximum). Backward: dL/dx receives each output's gradient
    at the position of its window's maximum, zero elsewhere (summed where windows overlap).
    Ties: the first maximum in row-major window order wins and gets the whole gradient.
    """

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self.argmax = None

    def forward(self, x: Any) -> Any:
        self._check(x)
        kh, kw = self.kernel_size
        out, self.argmax = backend.kernels(x).maxpool2d_forward(
            x, kh, kw, self.stride, self.padding
        )
        self.x_shape = x.shape
        return out

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.argmax, self.x_shape)
        kh, kw = self.kernel_size
        return backend.kernels(grad_out).maxpool2d_backward(
            grad_out, self.argmax, self.x_shape, kh, kw, self.stride, self.padding
        )

    def _clear_cache(self) -> None:
        self.argmax = None
        self.x_shape = None


class AvgPool2D(_Pool2D):
    """Mean over each ``kH x kW`` window, ``(N, C, H, W) -> (N, C, OH, OW)``.

    Zero padding counts in the divisor (PyTorch's ``count_include_pad=True``):
    ``y = sum(window) / (kH*kW)``. Backward: every input of a window receives
    ``g / (kH*kW)``, summed over the windows that contain it.
    """

    def forward(self, x: Any) -> Any:
        self._check(x)
        kh, kw = self.kernel_size
        self.x_shape = x.shape
        return backend.kernels(x).avgpool2d_forward(x, kh, kw, self.stride, self.padding)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x_shape)
        kh, kw = self.kernel_size
        return backend.kernels(grad_out).avgpool2d_backward(
            grad_out, self.x_shape, kh, kw, self.stride, self.padding
        )


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
