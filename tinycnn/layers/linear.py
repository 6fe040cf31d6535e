"""Affine (fully connected) layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn.init import initialize
from tinycnn.module import Module, Parameter, check_input


class Affine(Module):
    """``y = x W^T + b``, the fully connected layer (PyTorch's ``Linear``).

    Shapes: x ``(N, in_features)``, weight ``(out_features, in_features)``, bias
    ``(out_features,)``, y ``(N, out_features)``.

    Backward, with g = dL/dy:  dL/dx = g W,  dL/dW = g^T x,  dL/db = sum_n g.
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
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(initialize((out_features, in_features), init, rng, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None
        self.x = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, 2, "(N, in_features)", channels=self.in_features, what="features")
        self.x = x
        # Compute in x's dtype, as Conv2D does: a float32 input never meets float64 weights.
        y = x @ self.weight.data.astype(x.dtype, copy=False).T
        if self.bias is not None:
            y += self.bias.data.astype(x.dtype, copy=False)
        return y

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x)
        # Gradients take the parameters' dtype, whatever the input's.
        self.weight.accumulate((grad_out.T @ self.x).astype(self.weight.dtype, copy=False))
        if self.bias is not None:
            self.bias.accumulate(grad_out.sum(axis=0).astype(self.bias.dtype, copy=False))
        return grad_out @ self.weight.data.astype(grad_out.dtype, copy=False)

    def _clear_cache(self) -> None:
        self.x = None

    def macs(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        return in_shape[0] * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


Linear = Affine
