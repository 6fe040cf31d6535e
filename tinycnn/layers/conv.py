"""2-D convolution as im2col + one matrix product per group, and its backward with col2im."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.init import initialize
from tinycnn.layers.arguments import IntOrPair, check_bool, check_int, check_pair
from tinycnn.module import LayerInputError, Module, Parameter, check_input

Pads = tuple[int, int, int, int]  # (top, bottom, left, right)


def out_size(size: int, k: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """Output length along one axis: ``(size + 2*pad - dilation*(k - 1) - 1) // stride + 1``.

    ``pad`` zeros on each side; a window that would hang over the edge is not computed
    (the floor).
    """
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def im2col(x: Any, kernel_size: tuple[int, int], stride: tuple[int, int], pads: Pads,
           dilation: tuple[int, int] = (1, 1)) -> Any:
    """Unfold ``x (N, C, H, W)`` into the column matrix ``(N*OH*OW, C*kH*kW)``.

    Row ``(n, oh, ow)`` holds every input value the window at output ``(oh, ow)`` of image
    ``n`` sees, in the order ``(c, i, j)`` of the weight ``(O, C, kH, kW)``. One strided
    slice per kernel tap ``(i, j)`` copies what that tap sees at every output position.
    """
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    top, bottom, left, right = pads
    oh = out_size(h + top + bottom, kh, sh, 0, dh)
    ow = out_size(w + left + right, kw, sw, 0, dw)
    img = xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    col = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            col[:, :, i, j] = img[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                                  j * dw : j * dw + sw * (ow - 1) + 1 : sw]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * kh * kw)


def col2im(cols: Any, x_shape: tuple[int, ...], kernel_size: tuple[int, int],
           stride: tuple[int, int], pads: Pads, dilation: tuple[int, int] = (1, 1)) -> Any:
    """The adjoint of :func:`im2col`: fold ``(N*OH*OW, C*kH*kW)`` back to ``(N, C, H, W)``.

    Windows overlap, so an input pixel receives the *sum* of what every tap that saw it
    holds (``+=``); the padding's share is cropped away.
    """
    xp = backend.get_array_module(cols)
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    top, bottom, left, right = pads
    oh = out_size(h + top + bottom, kh, sh, 0, dh)
    ow = out_size(w + left + right, kw, sw, 0, dw)
    col = cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    img = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            img[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                j * dw : j * dw + sw * (ow - 1) + 1 : sw] += col[:, :, i, j]
    return img[:, :, top : top + h, left : left + w]


class Conv2D(Module):
    r"""2-D cross-correlation (PyTorch's ``Conv2d``), input ``(N, C, H, W)``.

    Shapes: weight ``(O, C/groups, kH, kW)``, bias ``(O,)``, output ``(N, O, OH, OW)`` with
    ``OH = (H + pad_top + pad_bottom - dH*(kH - 1) - 1) // sH + 1`` (same for ``OW``).

    Forward: ``im2col`` unfolds x into ``X_col (N*OH*OW, C*kH*kW)``, one row per output
    position; then, for each group :math:`g` (its block of columns and of output channels),
    :math:`Y_g = X_{\mathrm{col},g} W_g^\top`, with :math:`W_g` group g's filters as rows,
    and :math:`Y = [Y_1 \cdots Y_G] + b`.

    Backward, with :math:`G = \partial L/\partial Y` as ``(N*OH*OW, O)`` and :math:`G_g`
    group g's columns of it:
    :math:`\partial L/\partial W_g = G_g^\top X_{\mathrm{col},g}`,
    :math:`\partial L/\partial b = \sum_{\mathrm{rows}} G`,
    :math:`\partial L/\partial X_{\mathrm{col},g} = G_g W_g`, and
    :math:`\partial L/\partial x = \mathrm{col2im}(\partial L/\partial X_\mathrm{col})`
    (overlapping windows add up).

    ``padding`` is an int, a pair, ``'valid'`` (no padding) or ``'same'`` (output size =
    input size; stride must be 1; for an even effective kernel the extra row/column goes at
    the bottom/right, as in PyTorch).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair | str = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        init: str = "he_normal",
        dtype: Any = np.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("Conv2D", "in_channels", in_channels)
        self.out_channels = check_int("Conv2D", "out_channels", out_channels)
        self.groups = check_int("Conv2D", "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"Conv2D: in_channels ({in_channels}) and out_channels ({out_channels}) "
                f"must both be divisible by groups ({groups})"
            )
        self.kernel_size = check_pair("Conv2D", "kernel_size", kernel_size, 1)
        self.stride = check_pair("Conv2D", "stride", stride, 1)
        self.dilation = check_pair("Conv2D", "dilation", dilation, 1)
        self.padding = (padding if isinstance(padding, str)
                        else check_pair("Conv2D", "padding", padding, 0))
        self._pads = self._resolve_padding(padding)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(initialize(shape, init, rng, dtype))
        bias = check_bool("Conv2D", "bias", bias)
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self.cols = None  # X_col of the last forward, (N*OH*OW, C*kH*kW)
        self.x_shape = None

    def _resolve_padding(self, padding: IntOrPair | str) -> Pads:
        """``(top, bottom, left, right)``: asymmetric only for 'same' with an even kernel."""
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError(
                    f"Conv2D: padding='same' needs stride 1 (as in PyTorch), got {self.stride}"
                )
            (kh, kw), (dh, dw) = self.kernel_size, self.dilation
            total_h, total_w = dh * (kh - 1), dw * (kw - 1)
            return total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2
        if isinstance(padding, str):
            raise ValueError(
                f"Conv2D: padding must be an int, a pair, 'same' or 'valid', got {padding!r}"
            )
        ph, pw = self.padding
        return ph, ph, pw, pw

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """``(N, O, OH, OW)`` for an input of shape ``(N, C, H, W)``."""
        n, _, h, w = in_shape
        top, bottom, left, right = self._pads
        oh = out_size(h + top + bottom, self.kernel_size[0], self.stride[0], 0, self.dilation[0])
        ow = out_size(w + left + right, self.kernel_size[1], self.stride[1], 0, self.dilation[1])
        return n, self.out_channels, oh, ow

    def _check(self, x: Any) -> None:
        """Raise :class:`LayerInputError` unless x is ``(N, C, H, W)`` and covers the kernel."""
        check_input(self, x, 4, "(N, C, H, W)", channels=self.in_channels)
        top, bottom, left, right = self._pads
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        need_h, need_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        h, w = x.shape[2] + top + bottom, x.shape[3] + left + right
        if h < need_h or w < need_w:
            raise LayerInputError(
                f"Conv2D expected a padded input of at least {need_h}x{need_w} for its "
                f"(dilated) kernel, got {h}x{w} (input shape {tuple(x.shape)}, "
                f"padding {self.padding})"
            )

    def forward(self, x: Any) -> Any:
        self._check(x)
        xp = backend.get_array_module(x)
        n, o, oh, ow = self.output_shape(x.shape)
        g, og = self.groups, self.out_channels // self.groups
        cols = im2col(x, self.kernel_size, self.stride, self._pads, self.dilation)
        cols_g = cols.reshape(cols.shape[0], g, cols.shape[1] // g)  # group g: its own columns
        w_g = self.weight.data.astype(x.dtype, copy=False).reshape(g, og, -1)
        y = xp.empty((cols.shape[0], o), dtype=x.dtype)  # (N*OH*OW, O)
        for k in range(g):
            y[:, k * og : (k + 1) * og] = cols_g[:, k] @ w_g[k].T
        if self.bias is not None:
            y += self.bias.data.astype(x.dtype, copy=False)
        self.cols, self.x_shape = cols, x.shape
        return xp.ascontiguousarray(y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.cols)
        xp = backend.get_array_module(grad_out)
        g, og = self.groups, self.out_channels // self.groups
        grad = grad_out.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)  # G (N*OH*OW, O)
        cols_g = self.cols.reshape(self.cols.shape[0], g, self.cols.shape[1] // g)
        w_g = self.weight.data.astype(grad.dtype, copy=False).reshape(g, og, -1)
        if self.bias is not None:
            self.bias.accumulate(grad.sum(axis=0).astype(self.bias.dtype, copy=False))
        dcols = xp.empty(cols_g.shape, dtype=grad.dtype)
        dw = xp.empty(w_g.shape, dtype=grad.dtype)
        for k in range(g):
            grad_k = grad[:, k * og : (k + 1) * og]
            dw[k] = grad_k.T @ cols_g[:, k]  # dL/dW_g = G_g^T X_col_g
            dcols[:, k] = grad_k @ w_g[k]  # dL/dX_col_g = G_g W_g
        self.weight.accumulate(dw.reshape(self.weight.shape).astype(self.weight.dtype))
        dcols = dcols.reshape(self.cols.shape)
        return col2im(dcols, self.x_shape, self.kernel_size, self.stride, self._pads,
                      self.dilation)

    def _clear_cache(self) -> None:
        self.cols = None
        self.x_shape = None

    def macs(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        kh, kw = self.kernel_size
        return int(np.prod(out_shape)) * (self.in_channels // self.groups) * kh * kw

    def extra_repr(self) -> str:
        parts = [
            f"{self.in_channels}, {self.out_channels}",
            f"kernel_size={self.kernel_size}",
            f"stride={self.stride}",
        ]
        if self.padding not in ((0, 0), "valid"):
            parts.append(f"padding={self.padding!r}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)
