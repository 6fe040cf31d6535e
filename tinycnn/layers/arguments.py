"""Checks of layer constructor arguments: one clear error naming the layer and the argument.

``Conv2D(3, 8, 3.0)`` should say ``Conv2D: kernel_size must be an int or a pair of ints
>= 1, got 3.0``, not ``'float' object is not iterable`` from deep inside.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

IntOrPair = int | tuple[int, int]


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(layer: str, name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int`` at least ``minimum``, or a ``ValueError`` / ``TypeError``."""
    if not _is_int(value):
        raise TypeError(f"{layer}: {name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{layer}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_pair(layer: str, name: str, value: Any, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``, ``(3, 5) -> (3, 5)``, both entries ints at least ``minimum``."""
    pair = (value, value) if _is_int(value) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(_is_int(v) and v >= minimum for v in pair)
    ):
        raise ValueError(
            f"{layer}: {name} must be an int or a pair of ints >= {minimum}, got {value!r}"
        )
    return int(pair[0]), int(pair[1])


def check_float(
    layer: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
    low_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise TypeError(f"{layer}: {name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{layer}: {name} must be in {bracket}{low}, {high}], got {value!r}")
    return float(value)


def check_bool(layer: str, name: str, value: Any) -> bool:
    """``value`` when it is a ``bool`` (NumPy's included), else a ``TypeError``."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{layer}: {name} must be True or False, got {value!r}")
    return bool(value)
