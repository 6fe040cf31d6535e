"""2-D transposed convolution: the adjoint (transpose) of :class:`~tinycnn.layers.conv.Conv2D`."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.init import initialize
from tinycnn.layers.arguments import IntOrPair, check_int, check_pair
from tinycnn.layers.conv import col2im, im2col
from tinycnn.module import LayerInputError, Module, Parameter, check_input


class ConvTranspose2D(Module):
    """Transposed convolution (PyTorch's ``ConvTranspose2d``), input ``(N, C_in, H, W)``.

    Shapes: weight ``(C_in, C_out/groups, kH, kW)`` (PyTorch's layout), bias ``(C_out,)``,
    output ``(N, C_out, OH, OW)`` with
    ``OH = (H - 1)*sH - 2*pH + dH*(kH - 1) + output_padding_H + 1`` (same for ``OW``).

    It is the adjoint of a :class:`Conv2D` whose weight has this same array: that
    convolution maps ``(N, C_out, OH, OW) -> (N, C_in, H, W)``, this layer maps back. So
    the roles of ``im2col`` and ``col2im`` swap:

    Forward: ``X (N*H*W, C_in)`` (one row per input pixel), ``cols = X W_g``
    with ``W_g = weight.reshape(C_in, -1)`` per group; every input pixel scatters a
    ``C_out x kH x kW`` patch, and ``col2im`` adds the overlapping patches onto the output
    canvas. ``padding`` then crops ``pH`` rows on each side and ``output_padding`` adds
    rows at the bottom/right (they receive only the bias where no patch reaches them).

    Backward, with ``G = dL/dy``: ``G_cols = im2col(G)`` (the same geometry, stride and
    dilation), then ``dL/dX = G_cols W_g^T``, ``dL/dW_g = X^T G_cols``,
    ``dL/db = sum of G over N, OH, OW``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrPair = 1,
        init: str = "he_normal",
        dtype: Any = np.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        check_int("ConvTranspose2D", "in_channels", in_channels)
        check_int("ConvTranspose2D", "out_channels", out_channels)
        check_int("ConvTranspose2D", "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"ConvTranspose2D: in_channels ({in_channels}) and out_channels "
                f"({out_channels}) must both be divisible by groups ({groups})"
            )
        if isinstance(padding, str):
            raise ValueError(
                f"ConvTranspose2D: padding must be an int or a pair of ints, got {padding!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.kernel_size = check_pair("ConvTranspose2D", "kernel_size", kernel_size, 1)
        self.stride = check_pair("ConvTranspose2D", "stride", stride, 1)
        self.padding = check_pair("ConvTranspose2D", "padding", padding, 0)
        self.output_padding = check_pair("ConvTranspose2D", "output_padding", output_padding, 0)
        self.dilation = check_pair("ConvTranspose2D", "dilation", dilation, 1)
        for axis in range(2):
            if self.output_padding[axis] >= max(self.stride[axis], self.dilation[axis]):
                raise ValueError(
                    "ConvTranspose2D: output_padding must be smaller than stride or "
                    f"dilation (as in PyTorch), got output_padding={self.output_padding}, "
                    f"stride={self.stride}, dilation={self.dilation}"
                )
        shape = (in_channels, out_channels // groups, *self.kernel_size)
        # fan-in of a transposed conv is C_out/groups * kH * kW (PyTorch's convention too:
        # it reads dimension 1 of the weight as "in"), which ``initialize`` computes.
        self.weight = Parameter(initialize(shape, init, rng, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self.x = None

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """``(N, C_out, OH, OW)`` for an input of shape ``(N, C_in, H, W)``."""
        n, _, h, w = in_shape
        oh, ow = (
            (size - 1) * s - 2 * p + d * (k - 1) + op + 1
            for size, s, p, d, k, op in zip(
                (h, w), self.stride, self.padding, self.dilation, self.kernel_size,
                self.output_padding, strict=True,
            )
        )
        return n, self.out_channels, oh, ow

    def _canvas_size(self, h: int, w: int) -> tuple[int, int]:
        """Height and width every patch lands on before cropping: ``(H-1)*s + d*(k-1) + 1``."""
        (sh, sw), (dh, dw), (kh, kw) = self.stride, self.dilation, self.kernel_size
        return (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1

    def _split_groups(self, a: Any) -> Any:
        """``(M, g*K) -> (g, M, K)``: the columns of each group as one matrix."""
        return a.reshape(a.shape[0], self.groups, -1).transpose(1, 0, 2)

    def _join_groups(self, a: Any) -> Any:
        """``(g, M, K) -> (M, g*K)``, the inverse of :meth:`_split_groups`."""
        return a.transpose(1, 0, 2).reshape(a.shape[1], -1)

    def forward(self, x: Any) -> Any:
        check_input(self, x, 4, "(N, C_in, H, W)", channels=self.in_channels)
        n, out_c, oh, ow = self.output_shape(x.shape)
        if oh < 1 or ow < 1:
            raise LayerInputError(
                f"ConvTranspose2D: input of spatial size {tuple(x.shape[2:])} gives an empty "
                f"output ({oh}x{ow}) with padding {self.padding}"
            )
        xp = backend.get_array_module(x)
        _, c, h, w = x.shape
        self.x = x
        rows = x.transpose(0, 2, 3, 1).reshape(n * h * w, c)  # (M, C_in), M = N*H*W
        wgt = self.weight.data.astype(x.dtype, copy=False)
        w_g = wgt.reshape(self.groups, c // self.groups, -1)  # (g, C_in/g, C_out/g*kH*kW)
        cols = self._join_groups(self._split_groups(rows) @ w_g)  # (M, C_out*kH*kW)
        ch, cw = self._canvas_size(h, w)
        kh, kw = self.kernel_size
        canvas = col2im(cols, (n, out_c, ch, cw), (kh, kw), self.stride, (0, 0, 0, 0),
                        self.dilation)
        y = self._crop(xp, canvas, oh, ow)
        if self.bias is not None:
            y += self.bias.data.astype(x.dtype, copy=False).reshape(1, -1, 1, 1)
        return y

    def _crop(self, xp: Any, canvas: Any, oh: int, ow: int) -> Any:
        """Output ``(N, C, OH, OW)`` = canvas rows ``pH .. pH+OH`` (zeros past the canvas)."""
        ph, pw = self.padding
        n, c, ch, cw = canvas.shape
        y = xp.zeros((n, c, oh, ow), dtype=canvas.dtype)
        hh, ww = min(oh, ch - ph), min(ow, cw - pw)
        y[:, :, :hh, :ww] = canvas[:, :, ph : ph + hh, pw : pw + ww]
        return y

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x)
        xp = backend.get_array_module(grad_out)
        n, c, h, w = self.x.shape
        kh, kw = self.kernel_size
        ph, pw = self.padding
        ch, cw = self._canvas_size(h, w)
        oh, ow = grad_out.shape[2:]
        # the adjoint of _crop: put G back on the canvas, zeros where rows were cropped
        g_canvas = xp.zeros((n, self.out_channels, ch, cw), dtype=grad_out.dtype)
        hh, ww = min(oh, ch - ph), min(ow, cw - pw)
        g_canvas[:, :, ph : ph + hh, pw : pw + ww] = grad_out[:, :, :hh, :ww]
        g_cols = im2col(g_canvas, (kh, kw), self.stride, (0, 0, 0, 0),
                        self.dilation)  # (M, C_out*kH*kW)
        g_cols_g = self._split_groups(g_cols)  # (g, M, C_out/g*kH*kW)
        rows = self.x.transpose(0, 2, 3, 1).reshape(n * h * w, c)
        if self.weight.requires_grad:
            dw = self._split_groups(rows).transpose(0, 2, 1) @ g_cols_g
            self.weight.accumulate(dw.reshape(self.weight.shape).astype(self.weight.dtype))
        if self.bias is not None:
            self.bias.accumulate(grad_out.sum(axis=(0, 2, 3)).astype(self.bias.dtype))
        wgt = self.weight.data.astype(grad_out.dtype, copy=False)
        w_g = wgt.reshape(self.groups, c // self.groups, -1)
        d_rows = self._join_groups(g_cols_g @ w_g.transpose(0, 2, 1))  # (M, C_in)
        return xp.ascontiguousarray(d_rows.reshape(n, h, w, c).transpose(0, 3, 1, 2))

    def _clear_cache(self) -> None:
        self.x = None

    def macs(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        """Every input value multiplies a ``C_out/groups x kH x kW`` patch."""
        kh, kw = self.kernel_size
        return int(np.prod(in_shape)) * (self.out_channels // self.groups) * kh * kw

    def extra_repr(self) -> str:
        parts = [
            f"{self.in_channels}, {self.out_channels}",
            f"kernel_size={self.kernel_size}",
            f"stride={self.stride}",
        ]
        if self.padding != (0, 0):
            parts.append(f"padding={self.padding}")
        if self.output_padding != (0, 0):
            parts.append(f"output_padding={self.output_padding}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)
