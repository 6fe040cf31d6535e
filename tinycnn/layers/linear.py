"""Affine (fully connected) layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn.init import initialize
from tinycnn.layers.arguments import check_bool, check_int
from tinycnn.module import LayerInputError, Module, Parameter, check_input


class Affine(Module):
    r"""``y = x W^T + b``, the fully connected layer (PyTorch's ``Linear``).

    Shapes: x ``(*, in_features)``, weight ``(out_features, in_features)``, bias
    ``(out_features,)``, y ``(*, out_features)``. As in PyTorch, the layer acts on the last
    axis; leading axes (usually just N) are flattened into rows for one matrix product.
    An image batch ``(N, C, H, W)`` needs a ``Flatten()`` first.

    Backward, with :math:`g = \partial L/\partial y`:
    :math:`\partial L/\partial x = g W`, :math:`\partial L/\partial W = g^\top x`,
    :math:`\partial L/\partial b = \sum_n g_n`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str = "he_normal",
        dtype: Any = np.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("Affine", "in_features", in_features)
        self.out_features = check_int("Affine", "out_features", out_features)
        bias = check_bool("Affine", "bias", bias)
        self.weight = Parameter(initialize((out_features, in_features), init, rng, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None
        self.x = None
        self.x_shape: tuple[int, ...] = ()

    def forward(self, x: Any) -> Any:
        self._check(x)
        self.x_shape = x.shape
        x = x.reshape(-1, self.in_features)
        self.x = x
        # Compute in x's dtype, as Conv2D does: a float32 input never meets float64 weights.
        y = x @ self.weight.data.astype(x.dtype, copy=False).T
        if self.bias is not None:
            y += self.bias.data.astype(x.dtype, copy=False)
        return y.reshape(*self.x_shape[:-1], self.out_features)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x)
        g = grad_out.reshape(-1, self.out_features)
        # Gradients take the parameters' dtype, whatever the input's.
        self.weight.accumulate((g.T @ self.x).astype(self.weight.dtype, copy=False))
        if self.bias is not None:
            self.bias.accumulate(g.sum(axis=0).astype(self.bias.dtype, copy=False))
        return (g @ self.weight.data.astype(g.dtype, copy=False)).reshape(self.x_shape)

    def _check(self, x: Any) -> None:
        ndim = getattr(x, "ndim", 1)
        check_input(self, x, max(ndim, 1), "(*, in_features)")
        if x.shape[-1] != self.in_features:
            hint = " (flatten an image batch first: Flatten())" if x.ndim == 4 else ""
            raise LayerInputError(
                f"{self._name()} expected {self.in_features} features on the last axis of "
                f"(*, in_features), got {x.shape[-1]} (input shape {tuple(x.shape)}){hint}"
            )

    def _clear_cache(self) -> None:
        self.x = None

    def macs(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        rows = int(np.prod(in_shape[:-1], dtype=np.int64))
        return rows * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


Linear = Affine
