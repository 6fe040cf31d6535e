"""Adaptive average pooling: a fixed output size for any input size."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.layers.upsample import resample, resample_adjoint
from tinycnn.module import Module, check_input


def adaptive_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``A (out_size, in_size)``: row ``i`` averages ``[floor(i*in/out), ceil((i+1)*in/out))``.

    This is PyTorch's start/end rule; windows may overlap, and ``out_size > in_size`` works
    (pixels are repeated).
    """
    a = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = math.ceil((i + 1) * in_size / out_size)
        a[i, start:end] = 1.0 / (end - start)
    return a


class AdaptiveAvgPool2D(Module):
    """PyTorch's ``AdaptiveAvgPool2d``: ``(N, C, H, W) -> (N, C, OH, OW)`` for any ``H, W``.

    ``output_size`` is an int or a pair; ``None`` in the pair keeps that input size.
    Averaging over separable windows is ``y = A_h x A_w^T`` (see :func:`adaptive_matrix`).

    Backward: ``dL/dx = A_h^T G A_w``: each input pixel gets ``g / window_area`` from every
    window that contains it.
    """

    def __init__(self, output_size: int | tuple[int | None, int | None]) -> None:
        super().__init__()
        pair = (output_size, output_size) if isinstance(output_size, (int, np.integer)) else tuple(
            output_size
        )
        if len(pair) != 2 or not all(
            v is None or (isinstance(v, (int, np.integer)) and v > 0) for v in pair
        ):
            raise ValueError(
                "AdaptiveAvgPool2D: output_size must be a positive int or a pair of positive "
                f"ints (or None), got {output_size!r}"
            )
        self.output_size = tuple(None if v is None else int(v) for v in pair)
        self._mats: dict[tuple, tuple[Any, Any]] = {}
        self.mats = None
        self.identity = False

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        oh, ow = self.output_size
        return (h if oh is None else oh), (w if ow is None else ow)

    def _matrices(self, x: Any) -> tuple[Any, Any]:
        h, w = x.shape[2:]
        key = (h, w, str(x.dtype), backend.device_of(x))
        if key not in self._mats:
            oh, ow = self.output_hw(h, w)
            xp = backend.get_array_module(x)
            self._mats[key] = (
                xp.asarray(adaptive_matrix(h, oh), dtype=x.dtype),
                xp.asarray(adaptive_matrix(w, ow), dtype=x.dtype),
            )
        return self._mats[key]

    def forward(self, x: Any) -> Any:
        check_input(self, x, 4, "(N, C, H, W)")
        h, w = x.shape[2:]
        # e.g. ResNet/VGG at 224x224 reach the pool already at its output size
        self.identity = self.output_hw(h, w) == (h, w)
        self.mats = self._matrices(x)
        if self.identity:
            return x.copy()
        return resample(x, *self.mats)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.mats)
        if self.identity:
            return grad_out.copy()
        return resample_adjoint(grad_out, *self.mats)

    def _clear_cache(self) -> None:
        self.mats = None
        self._mats = {}

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
