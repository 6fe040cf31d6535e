"""Activation layers: elementwise functions and their derivatives, any shape ``(N, ...)``."""

from __future__ import annotations

from typing import Any

from tinycnn.backend import get_array_module
from tinycnn.layers.arguments import check_float
from tinycnn.module import Module, check_input

_RANKS = (1, 2, 3, 4, 5)
_LAYOUT = "(N, ...)"


class ReLU(Module):
    r"""``y = max(x, 0)``, any shape; NaN stays NaN (as in PyTorch).

    Backward: :math:`\partial L/\partial x = g \,[x > 0] = g \,[y > 0]` (the derivative
    at 0 is taken as 0).
    The output ``y`` is kept for backward instead of a boolean mask.
    """

    def __init__(self) -> None:
        super().__init__()
        self.y = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, _RANKS, _LAYOUT)
        xp = get_array_module(x)
        self.y = xp.maximum(x, xp.zeros((), dtype=x.dtype))  # maximum propagates NaN
        return self.y

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.y)
        xp = get_array_module(grad_out)
        return xp.where(self.y > 0, grad_out, xp.zeros((), dtype=grad_out.dtype))


class ReLU6(Module):
    """``y = min(max(x, 0), 6)``, any shape (MobileNet v2's activation).

    Backward: dL/dx = g * [0 < x < 6]  (the derivative at the kinks is taken as 0).
    """

    def __init__(self) -> None:
        super().__init__()
        self.mask = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, _RANKS, _LAYOUT)
        self.mask = (x > 0) & (x < 6)
        return x.clip(0, 6)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.mask)
        return grad_out * self.mask

    def _clear_cache(self) -> None:
        self.mask = None


class LeakyReLU(Module):
    """``y = x`` for ``x > 0``, ``y = negative_slope * x`` otherwise; any shape.

    Backward: dL/dx = g * (1 if x > 0 else negative_slope).
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = check_float("LeakyReLU", "negative_slope", negative_slope)
        self.mask = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, _RANKS, _LAYOUT)
        xp = get_array_module(x)
        self.mask = x > 0
        return xp.where(self.mask, x, x * self.negative_slope)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.mask)
        xp = get_array_module(grad_out)
        return xp.where(self.mask, grad_out, grad_out * self.negative_slope)

    def _clear_cache(self) -> None:
        self.mask = None

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``, any shape.

    Computed from ``e = exp(-|x|)``, which never overflows: ``y = 1 / (1 + e)`` for
    ``x >= 0`` and ``y = e / (1 + e)`` for ``x < 0``.

    Backward: dL/dx = g * y * (1 - y).
    """

    def __init__(self) -> None:
        super().__init__()
        self.y = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, _RANKS, _LAYOUT)
        xp = get_array_module(x)
        e = xp.exp(-xp.abs(x))
        inv = 1.0 / (1.0 + e)
        self.y = xp.where(x >= 0, inv, e * inv)
        return self.y

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.y)
        return grad_out * self.y * (1.0 - self.y)

    def _clear_cache(self) -> None:
        self.y = None


class Tanh(Module):
    """``y = tanh(x)``, any shape.

    Backward: dL/dx = g * (1 - y^2).
    """

    def __init__(self) -> None:
        super().__init__()
        self.y = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, _RANKS, _LAYOUT)
        xp = get_array_module(x)
        self.y = xp.tanh(x)
        return self.y

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.y)
        return grad_out * (1.0 - self.y * self.y)

    def _clear_cache(self) -> None:
        self.y = None
