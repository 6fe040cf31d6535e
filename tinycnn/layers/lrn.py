"""Local response normalization across channels (AlexNet, GoogLeNet v1)."""

from __future__ import annotations

import numbers
from typing import Any

from tinycnn import backend
from tinycnn.layers.arguments import check_float
from tinycnn.module import Module, check_input


def _window_sum(a: Any, before: int, after: int) -> Any:
    """``s[:, c] = sum of a[:, c - before .. c + after]`` along axis 1 (zeros past the ends)."""
    xp = backend.get_array_module(a)
    c = a.shape[1]
    pad = [(0, 0)] * a.ndim
    pad[1] = (before, after)
    padded = xp.pad(a, pad)
    s = xp.zeros_like(a)
    for offset in range(before + after + 1):
        s += padded[:, offset : offset + c]
    return s


class LocalResponseNorm(Module):
    """PyTorch's ``LocalResponseNorm``, input ``(N, C, ...)`` (usually ``(N, C, H, W)``).

    ``y_c = x_c * D_c^(-beta)``,  ``D_c = k + alpha/size * sum_{c' in W(c)} x_{c'}^2``,
    with the window ``W(c) = [c - size//2, c + (size-1)//2]`` (channels past the ends count
    as zeros; the divisor is always ``size``, as in PyTorch).

    Backward, with g = dL/dy:
    ``dL/dx_j = g_j D_j^(-beta)
    - (2 alpha beta / size) x_j sum_{c: j in W(c)} g_c x_c D_c^(-beta-1)``.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1:
            raise ValueError(f"LocalResponseNorm: size must be a positive int, got {size!r}")
        self.size = int(size)
        self.alpha = check_float("LocalResponseNorm", "alpha", alpha)
        self.beta = check_float("LocalResponseNorm", "beta", beta)
        self.k = check_float("LocalResponseNorm", "k", k)
        self.x = None
        self.d = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, (3, 4, 5), "(N, C, H, W)")
        self.x = x
        sq = _window_sum(x * x, self.size // 2, (self.size - 1) // 2)
        self.d = sq * (self.alpha / self.size) + self.k
        return x * self.d ** (-self.beta)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x, self.d)
        d_pow = self.d ** (-self.beta)
        # sum over the windows that *contain* channel j: the window reflected
        back = _window_sum(grad_out * self.x * d_pow / self.d, (self.size - 1) // 2, self.size // 2)
        return grad_out * d_pow - (2 * self.alpha * self.beta / self.size) * self.x * back

    def _clear_cache(self) -> None:
        self.x = None
        self.d = None

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
