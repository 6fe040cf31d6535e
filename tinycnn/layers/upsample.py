"""Upsampling (nearest and bilinear) as two small matrix products, one per spatial axis."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.module import LayerInputError, Module, check_input

MODES = ("nearest", "bilinear")


def resample(x: Any, a_h: Any, a_w: Any) -> Any:
    """``y = A_h x A_w^T`` over the last two axes: ``(N, C, H, W) -> (N, C, OH, OW)``.

    Any per-axis linear resampling (nearest, bilinear, adaptive averaging) is one such
    product with ``A_h (OH, H)`` and ``A_w (OW, W)``; its adjoint is :func:`resample_adjoint`.
    """
    return (a_h @ x) @ a_w.T


def resample_adjoint(grad_out: Any, a_h: Any, a_w: Any) -> Any:
    """``dL/dx = A_h^T G A_w``: the transpose of :func:`resample`."""
    return (a_h.T @ grad_out) @ a_w


def _pair_float(value: Any, name: str) -> tuple[float, float]:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(np.isscalar(v) and float(v) > 0 for v in pair):
        raise ValueError(f"Upsample: {name} must be a positive number or a pair, got {value!r}")
    return float(pair[0]), float(pair[1])


def interpolation_matrix(
    in_size: int, out_size: int, mode: str, align_corners: bool, scale: float | None
) -> np.ndarray:
    """``A (out_size, in_size)`` of PyTorch's 1-D ``interpolate`` along one axis (float64).

    ``scale`` is the user's scale factor (PyTorch then maps ``dst -> src`` with
    ``r = 1/scale``), or ``None`` when only the output size was given (``r = in/out``).
    PyTorch's source-index rule, followed exactly:

    * an axis whose output size equals its input size is copied (``src = dst``), whatever
      the scale factor (``scale_factor=1.3`` on width 3 gives width 3, a copy);
    * nearest: ``src = dst // 2`` when ``out = 2 * in``, else
      ``src = min(floor(dst * r), in - 1)`` computed in float32, as PyTorch does;
    * bilinear, ``align_corners=False``: ``src = max((dst + 0.5) * r - 0.5, 0)``, weights
      ``1 - t`` and ``t`` on ``floor(src)`` and the next pixel (clamped);
      ``align_corners=True``: ``src = dst * (in - 1) / (out - 1)``.
    """
    dst = np.arange(out_size, dtype=np.int64)
    a = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    if out_size == in_size:
        a[rows, dst] = 1.0
        return a
    if mode == "nearest":
        if out_size == 2 * in_size:
            src = dst >> 1
        else:
            r = np.float32(1.0 / scale) if scale is not None else np.float32(in_size) / out_size
            src = np.minimum(np.floor(dst.astype(np.float32) * r).astype(np.int64), in_size - 1)
        a[rows, src] = 1.0
        return a
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        ratio = 1.0 / scale if scale is not None else in_size / out_size
        src = np.maximum((dst + 0.5) * ratio - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    t = src - i0
    np.add.at(a, (rows, i0), 1.0 - t)  # i0 == i1 at the border: both weights add up to 1
    np.add.at(a, (rows, i1), t)
    return a


class Upsample(Module):
    """Upsampling (PyTorch's ``Upsample``), ``(N, C, H, W) -> (N, C, OH, OW)``.

    Give ``scale_factor`` (``OH = floor(H * scale)``, fractional factors included) or
    ``size``. ``mode`` is
    ``"nearest"`` or ``"bilinear"`` (``align_corners`` as in PyTorch, bilinear only).
    Both modes are linear and act on each axis separately: ``y = A_h x A_w^T`` with the
    interpolation matrices of :func:`interpolation_matrix`.

    Backward: ``dL/dx = A_h^T G A_w`` (each input pixel collects the gradients of the output
    pixels it contributed to, weighted as in the forward).
    """

    def __init__(
        self,
        scale_factor: float | tuple[float, float] | None = None,
        mode: str = "nearest",
        align_corners: bool = False,
        size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"Upsample: mode must be one of {MODES}, got {mode!r}")
        if (scale_factor is None) == (size is None):
            raise ValueError("Upsample: give exactly one of scale_factor and size")
        if align_corners and mode == "nearest":
            raise ValueError("Upsample: align_corners only applies to mode='bilinear'")
        self.mode = mode
        self.align_corners = bool(align_corners)
        self.scale_factor = None if scale_factor is None else _pair_float(scale_factor, "scale")
        if size is None:
            self.size = None
        else:
            pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
            if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
                raise ValueError(f"Upsample: size must be a positive int or a pair, got {size!r}")
            self.size = (int(pair[0]), int(pair[1]))
        self._mats: dict[tuple, tuple[Any, Any]] = {}
        self.mats = None

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        sh, sw = self.scale_factor
        return math.floor(h * sh), math.floor(w * sw)

    def _matrices(self, x: Any) -> tuple[Any, Any]:
        """``A_h, A_w`` for x's size, dtype and device (cached: they depend on nothing else)."""
        h, w = x.shape[2:]
        key = (h, w, str(x.dtype), backend.device_of(x))
        if key not in self._mats:
            oh, ow = self.output_hw(h, w)
            sh, sw = self.scale_factor if self.scale_factor is not None else (None, None)
            xp = backend.get_array_module(x)
            a_h = interpolation_matrix(h, oh, self.mode, self.align_corners, sh)
            a_w = interpolation_matrix(w, ow, self.mode, self.align_corners, sw)
            self._mats[key] = (xp.asarray(a_h, dtype=x.dtype), xp.asarray(a_w, dtype=x.dtype))
        return self._mats[key]

    def forward(self, x: Any) -> Any:
        check_input(self, x, 4, "(N, C, H, W)")
        oh, ow = self.output_hw(*x.shape[2:])
        if oh < 1 or ow < 1:
            raise LayerInputError(
                f"Upsample: input of spatial size {tuple(x.shape[2:])} gives an empty output "
                f"({oh}x{ow})"
            )
        self.mats = self._matrices(x)
        return resample(x, *self.mats)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.mats)
        return resample_adjoint(grad_out, *self.mats)

    def _clear_cache(self) -> None:
        self.mats = None
        self._mats = {}

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        corners = ", align_corners=True" if self.align_corners else ""
        return f"{what}, mode={self.mode!r}{corners}"
