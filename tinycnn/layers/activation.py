"""Activation layers: elementwise functions and their derivatives."""

from __future__ import annotations

from typing import Any

from tinycnn.module import Module, check_input


class ReLU(Module):
    """``y = max(x, 0)``, any shape.

    Backward: dL/dx = g * [x > 0]  (the derivative at 0 is taken as 0).
    """

    def __init__(self) -> None:
        super().__init__()
        self.mask = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, (1, 2, 3, 4, 5), "(N, ...)")
        self.mask = x > 0
        return x * self.mask

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.mask)
        return grad_out * self.mask

    def _clear_cache(self) -> None:
        self.mask = None
