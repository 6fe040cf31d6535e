"""Weight initializers: He (Kaiming) and Xavier (Glorot), normal and uniform.

``fan_in`` of a weight ``(out, in, kH, kW)`` is ``in * kH * kW``, ``fan_out`` is
``out * kH * kW`` (for ``(out, in)``: ``in`` and ``out``), as in PyTorch.

* He normal:      std = gain / sqrt(fan_in),              gain = sqrt(2) for ReLU
* He uniform:     bound = gain * sqrt(3 / fan_in)
* Xavier normal:  std = sqrt(2 / (fan_in + fan_out))
* Xavier uniform: bound = sqrt(6 / (fan_in + fan_out))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

INITIALIZERS = ("he_normal", "he_uniform", "xavier_normal", "xavier_uniform")


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shape ``(out, in, *kernel)``."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def initialize(
    shape: tuple[int, ...],
    method: str = "he_normal",
    rng: np.random.Generator | None = None,
    dtype: Any = np.float32,
    gain: float | None = None,
) -> np.ndarray:
    """A new weight array of ``shape`` drawn with ``method`` (one of ``INITIALIZERS``).

    float32 and float64 weights are drawn in their own dtype and scaled in place, so the
    peak memory is the weight itself (a float64 draw cast to float32 took three times it).
    """
    if method not in INITIALIZERS:
        raise ValueError(f"unknown initializer {method!r}; choose one of {INITIALIZERS}")
    rng = rng if rng is not None else np.random.default_rng()
    fan_in, fan_out = fans(shape)
    if method.startswith("he"):
        g = math.sqrt(2.0) if gain is None else gain
        std = g / math.sqrt(fan_in)
    else:
        g = 1.0 if gain is None else gain
        std = g * math.sqrt(2.0 / (fan_in + fan_out))
    dtype = np.dtype(dtype)
    draw = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if method.endswith("normal"):
        w = rng.standard_normal(shape, dtype=draw)
        w *= std
    else:  # uniform on [-bound, bound), bound = std * sqrt(3)
        bound = std * math.sqrt(3.0)
        w = rng.random(shape, dtype=draw)
        w *= 2.0 * bound
        w -= bound
    return w if w.dtype == dtype else w.astype(dtype)
