"""Activation layers: elementwise functions and their derivatives, any shape ``(N, ...)``."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from tinycnn.backend import get_array_module
from tinycnn.layers.arguments import check_float
from tinycnn.losses import log_softmax, softmax
from tinycnn.module import LayerInputError, Module, check_input

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


def _softmax_axis(layer: Module, x: Any) -> int:
    """The axis ``dim`` names in ``x``; ``None`` picks it as PyTorch does (0 for 0-, 1- and
    3-D input, else 1)."""
    dim = layer.dim
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
    if not -x.ndim <= dim < x.ndim:
        raise LayerInputError(
            f"{layer._name()}: dim={layer.dim} is out of range for an input of shape "
            f"{tuple(x.shape)} (expected dim in [{-x.ndim}, {x.ndim - 1}])"
        )
    return dim % x.ndim


def _check_dim(layer: str, dim: Any) -> int | None:
    if dim is None:
        return None
    if isinstance(dim, bool) or not isinstance(dim, Integral):
        raise TypeError(f"{layer}: dim must be an int or None, got {dim!r}")
    return int(dim)


class Softmax(Module):
    """``y = exp(x) / sum(exp(x))`` along ``dim``, any shape (PyTorch's ``nn.Softmax``).

    The max along ``dim`` is subtracted first, so large logits do not overflow
    (:func:`tinycnn.losses.softmax`). Pass ``dim`` (1 for ``(N, C, ...)``); ``None``
    picks it as PyTorch does: 0 for 1-D and 3-D input, else 1.

    Backward: dL/dx = y * (g - sum(g * y, dim)).
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = _check_dim("Softmax", dim)
        self.y = None
        self.axis = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, _RANKS, _LAYOUT)
        self.axis = _softmax_axis(self, x)
        self.y = softmax(x, axis=self.axis)
        return self.y

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.y)
        return self.y * (grad_out - (grad_out * self.y).sum(axis=self.axis, keepdims=True))

    def _clear_cache(self) -> None:
        self.y = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """``y = x - log(sum(exp(x)))`` along ``dim``, any shape (PyTorch's ``nn.LogSoftmax``).

    Computed with the max subtracted first (:func:`tinycnn.losses.log_softmax`), so it
    neither overflows nor takes the log of an underflowed 0. Followed by
    :class:`~tinycnn.losses.NLLLoss` it is cross-entropy. Pass ``dim`` (1 for
    ``(N, C, ...)``); ``None`` picks it as PyTorch does: 0 for 1-D and 3-D input, else 1.

    Backward: dL/dx = g - exp(y) * sum(g, dim)   (exp(y) is the softmax).
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = _check_dim("LogSoftmax", dim)
        self.y = None
        self.axis = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, _RANKS, _LAYOUT)
        self.axis = _softmax_axis(self, x)
        self.y = log_softmax(x, axis=self.axis)
        return self.y

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.y)
        xp = get_array_module(grad_out)
        return grad_out - xp.exp(self.y) * grad_out.sum(axis=self.axis, keepdims=True)

    def _clear_cache(self) -> None:
        self.y = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
