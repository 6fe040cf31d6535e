"""Layers that only rearrange or pass data: ``Flatten`` and ``Identity``."""

from __future__ import annotations

import math
from typing import Any

from tinycnn.module import LayerInputError, Module, check_input


class Flatten(Module):
    """Merge axes ``start_dim .. end_dim`` into one, e.g. ``(N, C, H, W) -> (N, C*H*W)``.

    Backward: dL/dx = g reshaped back to the input shape.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim
        self.in_shape = None

    def forward(self, x: Any) -> Any:
        if not hasattr(x, "ndim"):
            raise LayerInputError(f"Flatten expected an array, got {type(x).__name__}")
        start = self.start_dim + x.ndim if self.start_dim < 0 else self.start_dim
        end = self.end_dim + x.ndim if self.end_dim < 0 else self.end_dim
        if not 0 <= start <= end < x.ndim:
            raise LayerInputError(
                f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) needs an input "
                f"with axes {self.start_dim}..{self.end_dim}, got shape {tuple(x.shape)}"
            )
        check_input(self, x, x.ndim, "(N, ...)")  # dtype check
        self.in_shape = tuple(x.shape)
        merged = math.prod(x.shape[start : end + 1])
        return x.reshape(x.shape[:start] + (merged,) + x.shape[end + 1 :])

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.in_shape)
        return grad_out.reshape(self.in_shape)

    def _clear_cache(self) -> None:
        self.in_shape = None

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """``y = x``: a placeholder, e.g. a residual shortcut that needs no projection.

    Stateless, so ``backward`` needs no forward first. Backward: dL/dx = g.
    """

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, grad_out: Any) -> Any:
        return grad_out
