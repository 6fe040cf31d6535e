"""2-D convolution as im2col + one matrix product (per group)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.init import initialize
from tinycnn.module import LayerInputError, Module, Parameter, check_input

IntOrPair = int | tuple[int, int]


def _pair(value: IntOrPair, name: str, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``, ``(3, 5) -> (3, 5)``, checking both entries are ints >= ``minimum``."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= minimum for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


class Conv2D(Module):
    """2-D cross-correlation (PyTorch's ``Conv2d``), input ``(N, C, H, W)``.

    Shapes: weight ``(O, C/groups, kH, kW)``, bias ``(O,)``, output ``(N, O, OH, OW)`` with
    ``OH = (H + pad_top + pad_bottom - dH*(kH - 1) - 1) // sH + 1`` (same for ``OW``).

    Forward: ``im2col`` unfolds x into ``X_col (N*OH*OW, C*kH*kW)``, one row per output
    position; then ``Y = X_col W_col^T + b`` with ``W_col = weight.reshape(O, -1)``.
    With groups, channel group ``g`` only sees its own slice of columns and of ``W_col``.

    Backward, with ``G = dL/dY`` as ``(N*OH*OW, O)``:
    ``dL/dW_col = G^T X_col``,  ``dL/db = sum of G over rows``,
    ``dL/dx = col2im(G W_col)`` (col2im adds the overlapping windows back together).

    ``padding`` is an int, a pair, ``'valid'`` (no padding) or ``'same'`` (output size =
    input size; stride must be 1; for an even effective kernel the extra row/column goes at
    the bottom/right, as in PyTorch). Set ``compute_input_grad = False`` on a network's
    first layer: its backward then skips dL/dx and returns ``None``.

    Memory: ``X_col`` is about kH*kW times larger than x. When it exceeds
    ``max_cached_cols_bytes``, forward keeps x instead and backward rebuilds ``X_col``
    (one more im2col; ResNet-20 at batch 128 would otherwise hold about 0.9 GB of them).
    """

    #: Column matrices larger than this are rebuilt in backward instead of kept.
    max_cached_cols_bytes = 16 * 2**20

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
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"Conv2D: in_channels ({in_channels}) and out_channels ({out_channels}) "
                f"must both be divisible by groups ({groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.dilation = _pair(dilation, "dilation", 1)
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding", 0)
        # (top, bottom, left, right): only 'same' with an even effective kernel is asymmetric
        self._pads = self._resolve_padding(padding)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(initialize(shape, init, rng, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self.compute_input_grad = True
        self.cols = None
        self.x = None
        self.x_shape = None

    def _resolve_padding(self, padding: IntOrPair | str) -> tuple[int, int, int, int]:
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError(
                    f"Conv2D: padding='same' needs stride 1 (as in PyTorch), got {self.stride}"
                )
            (kh, kw), (dh, dw) = self.kernel_size, self.dilation
            total_h, total_w = dh * (kh - 1), dw * (kw - 1)
            return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
        if isinstance(padding, str):
            raise ValueError(
                f"Conv2D: padding must be an int, a pair, 'same' or 'valid', got {padding!r}"
            )
        ph, pw = self.padding
        return ph, ph, pw, pw

    def _is_pointwise(self) -> bool:
        """A 1x1 kernel, stride 1, no padding: the convolution is a plain matrix product."""
        return self.kernel_size == (1, 1) and self.stride == (1, 1) and self._pads == (0,) * 4

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """``(N, O, OH, OW)`` for an input of shape ``(N, C, H, W)``."""
        n, _, h, w = in_shape
        top, bottom, left, right = self._pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
        return n, self.out_channels, oh, ow

    def _check(self, x: Any) -> None:
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

    def _to_cols(self, x: Any) -> Any:
        """The column matrix ``(N*OH*OW, C*kH*kW)`` of x (padding applied)."""
        if self._is_pointwise():
            n, c, h, w = x.shape
            return x.transpose(0, 2, 3, 1).reshape(n * h * w, c)
        top, bottom, left, right = self._pads
        if bottom != top or right != left:
            # im2col pads symmetrically; add the one extra bottom row / right column here
            xp = backend.get_array_module(x)
            x = xp.pad(x, ((0, 0), (0, 0), (0, bottom - top), (0, right - left)))
        kh, kw = self.kernel_size
        return backend.kernels(x).im2col(x, kh, kw, self.stride, (top, left), self.dilation)

    def _from_cols(self, dcols: Any) -> Any:
        """The adjoint of :meth:`_to_cols`: fold column gradients back to ``(N, C, H, W)``."""
        n, c, h, w = self.x_shape
        if self._is_pointwise():
            return dcols.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        top, bottom, left, right = self._pads
        padded_shape = (n, c, h + bottom - top, w + right - left)
        kh, kw = self.kernel_size
        k = backend.kernels(dcols)
        dx = k.col2im(dcols, padded_shape, kh, kw, self.stride, (top, left), self.dilation)
        return dx[:, :, :h, :w]

    def _split_groups(self, a: Any) -> Any:
        """``(M, g*K) -> (g, M, K)``: the columns of each group as one matrix."""
        return a.reshape(a.shape[0], self.groups, -1).transpose(1, 0, 2)

    def _join_groups(self, a: Any) -> Any:
        """``(g, M, K) -> (M, g*K)``, the inverse of :meth:`_split_groups`."""
        return a.transpose(1, 0, 2).reshape(a.shape[1], -1)

    def _matmul(self, a: Any, w: Any, transpose_w: bool) -> Any:
        """Per group, ``a_g @ W_g^T`` (``transpose_w``) or ``a_g @ W_g``, joined as ``(M, .)``.

        With one group this is a single 2-D product: stacked 3-D operands with these
        strides make NumPy leave BLAS for a loop about 10x slower.
        """
        if self.groups == 1:
            w2 = w.reshape(self.out_channels, -1)
            return a @ (w2.T if transpose_w else w2)
        w_g = w.reshape(self.groups, self.out_channels // self.groups, -1)
        return self._join_groups(
            self._split_groups(a) @ (w_g.transpose(0, 2, 1) if transpose_w else w_g)
        )

    def forward(self, x: Any) -> Any:
        self._check(x)
        out_shape = self.output_shape(x.shape)
        self.x_shape = x.shape
        cols = self._to_cols(x)  # (M, C*kH*kW) with M = N*OH*OW
        # Keep a small column matrix for backward; for a large one keep x and rebuild it.
        keep = cols.nbytes <= self.max_cached_cols_bytes
        self.cols, self.x = (cols, None) if keep else (None, x)
        # Compute in x's dtype: a float32 input never meets float64 weights.
        w = self.weight.data.astype(x.dtype, copy=False)
        rows = self._matmul(cols, w, transpose_w=True)  # (M, O)
        # rows are ordered (n, oh, ow): add the bias and go back to (N, O, OH, OW) in one pass
        bias = None if self.bias is None else self.bias.data
        return backend.kernels(x).bias_relu(rows, bias, out_shape, relu=False)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x_shape)
        grad = grad_out.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)  # (M, O)
        if self.weight.requires_grad:
            cols = self.cols if self.cols is not None else self._to_cols(self.x)
            if self.groups == 1:
                dw = grad.T @ cols  # (O, C*kH*kW), one BLAS product
            else:
                dw = self._split_groups(grad).transpose(0, 2, 1) @ self._split_groups(cols)
            dw = dw.reshape(self.weight.shape).astype(self.weight.dtype, copy=False)
            self.weight.accumulate(dw)
            del cols  # a rebuilt column matrix can go before dcols is made
        if self.bias is not None:
            self.bias.accumulate(grad.sum(axis=0).astype(self.bias.dtype, copy=False))
        if not self.compute_input_grad:
            return None
        w = self.weight.data.astype(grad.dtype, copy=False)
        dcols = self._matmul(grad, w, transpose_w=False)  # (M, C*kH*kW)
        return self._from_cols(dcols)

    def _clear_cache(self) -> None:
        self.cols = None
        self.x = None
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
