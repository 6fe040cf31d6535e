"""Inverted dropout: elementwise (``Dropout``) and whole channels (``Dropout2D``).

``p`` is the probability of *dropping* a value (PyTorch's meaning). Kept values are scaled
by ``1 / (1 - p)`` during training, so evaluation is the identity and needs no rescaling.

Masks come from a ``numpy.random.Generator`` kept on the instance (``self.rng``), so a
seed makes them reproducible and :func:`tinycnn.gradcheck.gradcheck` can replay them.
The keep/drop decision is drawn on the host and moved to the input's device as a boolean
array (one byte per value) with :func:`tinycnn.backend.to_device`: one generator and one
sequence of masks whatever the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.layers.arguments import check_float
from tinycnn.module import Module, check_input

_PASS = "pass-through"  # cached instead of a mask when forward was the identity


class Dropout(Module):
    """Inverted dropout, any shape ``(N, ...)``.

    Training: ``y = x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)`` per value.
    Eval: ``y = x``.

    Backward: dL/dx = g * mask / (1 - p) in training, g in eval.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        self.p = check_float(self._name(), "p (the probability of dropping a value)", p, 0.0, 1.0)
        self.rng = np.random.default_rng(seed)
        self.mask = None

    def _mask_shape(self, x: Any) -> tuple[int, ...]:
        return tuple(x.shape)

    def _check(self, x: Any) -> None:
        check_input(self, x, (1, 2, 3, 4, 5), "(N, ...)")

    def forward(self, x: Any) -> Any:
        self._check(x)
        if not self.training or self.p == 0.0:
            self.mask = _PASS
            return x
        keep = self.rng.random(self._mask_shape(x), dtype=np.float32) >= self.p
        keep = backend.to_device(keep, backend.device_of(x))
        self.mask = keep.astype(x.dtype)
        if self.p < 1.0:  # p = 1 drops everything: the mask stays all zeros (as in PyTorch)
            self.mask *= 1.0 / (1.0 - self.p)
        return x * self.mask

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.mask)
        if self.mask is _PASS:
            return grad_out
        return grad_out * self.mask

    def _clear_cache(self) -> None:
        self.mask = None

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2D(Dropout):
    """Channel dropout for ``(N, C, H, W)``: each ``(n, c)`` feature map is kept or zeroed whole.

    Training: ``y[n, c] = x[n, c] * mask[n, c] / (1 - p)``, ``mask ~ Bernoulli(1 - p)``.
    Eval: ``y = x``.

    Backward: dL/dx[n, c] = g[n, c] * mask[n, c] / (1 - p) in training, g in eval.
    """

    def _mask_shape(self, x: Any) -> tuple[int, ...]:
        return (x.shape[0], x.shape[1], 1, 1)

    def _check(self, x: Any) -> None:
        check_input(self, x, 4, "(N, C, H, W)")


Dropout2d = Dropout2D
