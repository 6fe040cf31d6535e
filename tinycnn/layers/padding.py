"""Zero padding of the spatial axes."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.module import Module, check_input


class ZeroPad2D(Module):
    """PyTorch's ``ZeroPad2d``: ``(N, C, H, W) -> (N, C, H + top + bottom, W + left + right)``.

    ``padding`` is an int (all four sides) or ``(left, right, top, bottom)``, PyTorch's order.

    Backward: dL/dx is dL/dy with the padded border cut off (the zeros depend on nothing).
    """

    def __init__(self, padding: int | tuple[int, int, int, int]) -> None:
        super().__init__()
        pads = (padding,) * 4 if isinstance(padding, (int, np.integer)) else tuple(padding)
        if len(pads) != 4 or not all(isinstance(p, (int, np.integer)) and p >= 0 for p in pads):
            raise ValueError(
                "ZeroPad2D: padding must be an int >= 0 or four ints >= 0 "
                f"(left, right, top, bottom), got {padding!r}"
            )
        self.padding = tuple(int(p) for p in pads)
        self.x_shape = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, 4, "(N, C, H, W)")
        xp = backend.get_array_module(x)
        left, right, top, bottom = self.padding
        self.x_shape = x.shape
        return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x_shape)
        left, _, top, _ = self.padding
        h, w = self.x_shape[2:]
        return grad_out[:, :, top : top + h, left : left + w].copy()

    def _clear_cache(self) -> None:
        self.x_shape = None

    def extra_repr(self) -> str:
        return f"padding={self.padding}"
