"""Batch augmentations: each one transforms a whole ``(N, C, H, W)`` float batch at once.

Every transform draws its random numbers for all N images in one call and applies them
with array indexing (no Python loop over images), so a batch of 512 costs a few
milliseconds. Call ``t(x, rng)`` with a ``numpy.random.Generator``; without one the
transform uses its own generator (seeded by ``seed=``). The
:class:`~tinycnn.data.loader.DataLoader` applies them after scaling pixels to [0, 1] and
before normalization, so zero fill (padding, rotation corners, Cutout) is black.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _pair(value: float | Sequence[float], name: str, symmetric: bool = True) -> tuple[float, float]:
    """``d`` -> ``(-d, d)``; ``(lo, hi)`` stays."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 when given as one number, got {value}")
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name} range ({lo}, {hi}) has min > max")
    return lo, hi


def _check_batch(x: Any, name: str) -> None:
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{name}: expected a batch (N, C, H, W), got shape "
                         f"{getattr(x, 'shape', type(x).__name__)}")


class Transform:
    """Base class: ``__call__(x, rng=None)`` takes and returns an ``(N, C, H, W)`` batch."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        _check_batch(x, type(self).__name__)
        return self.apply(x, rng if rng is not None else self.rng)

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement apply(x, rng)")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "rng")
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Any], seed: int | None = None) -> None:
        super().__init__(seed)
        self.transforms = list(transforms)

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for t in self.transforms:
            x = t(x, rng) if isinstance(t, Transform) else t(x)
        return x


class RandomCrop(Transform):
    """Zero-pad by ``padding`` on every side, then cut a ``size`` crop at a random offset.

    ``size``: int or ``(h, w)``. Offsets are drawn per image; the crop is one gather.
    """

    def __init__(self, size: int | Sequence[int], padding: int = 0,
                 seed: int | None = None) -> None:
        super().__init__(seed)
        # NumPy integers count as ints too (a size computed with NumPy)
        one = isinstance(size, (int, np.integer))
        self.size = (int(size), int(size)) if one else tuple(map(int, size))
        if padding < 0:
            raise ValueError(f"RandomCrop: padding must be >= 0, got {padding}")
        self.padding = int(padding)

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, c, h, w = x.shape
        p = self.padding
        ch, cw = self.size
        if ch > h + 2 * p or cw > w + 2 * p:
            raise ValueError(f"RandomCrop: crop {self.size} is larger than the padded image "
                             f"{(h + 2 * p, w + 2 * p)}")
        hp, wp = h + 2 * p, w + 2 * p
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))).reshape(n, c, hp * wp)
        oy = rng.integers(0, hp - ch + 1, size=n)
        ox = rng.integers(0, wp - cw + 1, size=n)
        # Flat index of every crop pixel in its padded image: one gather for the batch.
        idx = ((oy[:, None, None] + np.arange(ch)[:, None]) * wp
               + ox[:, None, None] + np.arange(cw)).reshape(n, 1, ch * cw)
        return np.take_along_axis(padded, idx, axis=2).reshape(n, c, ch, cw)


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__(seed)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flip = rng.random(len(x)) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)


class RandomAffine(Transform):
    """Random rotation, translation and scale, by inverse-map bilinear sampling, zero fill.

    Per image: angle ~ U(degrees) (positive = counter-clockwise, as displayed), shift
    ~ U(-translate, translate) times the width/height, scale ~ U(scale). Each output
    pixel p is read from the input at ``c + R(angle)^-1 (p - c - shift) / scale`` (c the
    image centre), bilinearly interpolated; points outside the image read 0.
    """

    def __init__(self, degrees: float | Sequence[float] = 0.0,
                 translate: Sequence[float] | None = None,
                 scale: Sequence[float] | None = None, seed: int | None = None) -> None:
        super().__init__(seed)
        self.degrees = _pair(degrees, "degrees")
        if translate is not None:
            tx, ty = (float(t) for t in translate)
            if not (0.0 <= tx <= 1.0 and 0.0 <= ty <= 1.0):
                raise ValueError(f"RandomAffine: translate fractions must be in [0, 1], got "
                                 f"{translate}")
            translate = (tx, ty)
        self.translate = translate
        if scale is not None:
            scale = _pair(scale, "scale", symmetric=False)
            if scale[0] <= 0:
                raise ValueError(f"RandomAffine: scale must be > 0, got {scale}")
        self.scale = scale

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, c, h, w = x.shape
        angle = np.deg2rad(rng.uniform(*self.degrees, size=n))
        if self.translate is not None:
            shift_x = rng.uniform(-1.0, 1.0, size=n) * self.translate[0] * w
            shift_y = rng.uniform(-1.0, 1.0, size=n) * self.translate[1] * h
        else:
            shift_x = shift_y = np.zeros(n)
        s = rng.uniform(*self.scale, size=n) if self.scale is not None else np.ones(n)
        return affine_sample(x, angle, shift_x, shift_y, s)


class RandomRotation(RandomAffine):
    """Rotate each image by an angle ~ U(-degrees, degrees) (or ``(lo, hi)``), zero fill."""

    def __init__(self, degrees: float | Sequence[float], seed: int | None = None) -> None:
        super().__init__(degrees=degrees, seed=seed)


def affine_sample(x: np.ndarray, angle: np.ndarray, shift_x: np.ndarray, shift_y: np.ndarray,
                  scale: np.ndarray) -> np.ndarray:
    """Warp every image of ``x`` by its own rotation (radians, CCW), shift and scale.

    All parameters are ``(N,)``. Inverse mapping with y pointing down: output offset
    (u, v) from the centre reads the input at offset
    ``( cos a * u' - sin a * v',  sin a * u' + cos a * v') / s`` where
    ``(u', v') = (u - shift_x, v - shift_y)``; bilinear weights, zero outside.
    """
    n, c, h, w = x.shape
    dt = x.dtype  # float32 coordinates are exact for pixel centres and half as costly
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    v = ((np.arange(h) - cy)[None, :, None] - shift_y[:, None, None]).astype(dt)
    u = ((np.arange(w) - cx)[None, None, :] - shift_x[:, None, None]).astype(dt)
    cos = (np.cos(angle) / scale).astype(dt)[:, None, None]
    sin = (np.sin(angle) / scale).astype(dt)[:, None, None]
    src_x = (cos * u - sin * v + dt.type(cx)).reshape(n, 1, h * w)
    src_y = (sin * u + cos * v + dt.type(cy)).reshape(n, 1, h * w)
    x0 = np.floor(src_x)
    y0 = np.floor(src_y)
    fx = src_x - x0
    fy = src_y - y0
    # One ring of zeros around each image: a corner clipped to -1 or to h (w) reads 0, so
    # out-of-image samples need no mask. Clipping x0 and x0 + 1 separately keeps both in
    # the ring when the point lies far outside.
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).reshape(n, c, (h + 2) * (w + 2))
    x0 = x0.astype(np.intp)
    y0 = y0.astype(np.intp)
    cols = [np.clip(x0 + d, -1, w) + 1 for d in (0, 1)]
    rows = [(np.clip(y0 + d, -1, h) + 1) * (w + 2) for d in (0, 1)]

    def corner(r: np.ndarray, col: np.ndarray) -> np.ndarray:
        return np.take_along_axis(padded, r + col, axis=2)          # (N, C, H*W)

    top = corner(rows[0], cols[0]) * (1 - fx) + corner(rows[0], cols[1]) * fx
    bottom = corner(rows[1], cols[0]) * (1 - fx) + corner(rows[1], cols[1]) * fx
    return (top * (1 - fy) + bottom * fy).reshape(n, c, h, w)


class GaussianNoise(Transform):
    """Add independent N(0, std^2) noise to every value (pixel units: [0, 1] in the loader)."""

    def __init__(self, std: float, seed: int | None = None) -> None:
        super().__init__(seed)
        if std < 0:
            raise ValueError(f"GaussianNoise: std must be >= 0, got {std}")
        self.std = float(std)

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(size=x.shape, dtype=np.float32 if x.dtype == np.float32
                                    else np.float64)
        return x + (noise * self.std).astype(x.dtype, copy=False)


class Cutout(Transform):
    """Zero a ``size`` x ``size`` square at a random centre in every image (DeVries & Taylor).

    The centre is uniform over the image, so a square near the border is clipped to the
    part that lies inside, as in the original Cutout.
    """

    def __init__(self, size: int, seed: int | None = None) -> None:
        super().__init__(seed)
        if size < 1:
            raise ValueError(f"Cutout: size must be >= 1, got {size}")
        self.size = int(size)

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, _, h, w = x.shape
        top = rng.integers(0, h, size=n) - self.size // 2
        left = rng.integers(0, w, size=n) - self.size // 2
        r = np.arange(h)[None, :]
        col = np.arange(w)[None, :]
        in_rows = (r >= top[:, None]) & (r < top[:, None] + self.size)     # (N, H)
        in_cols = (col >= left[:, None]) & (col < left[:, None] + self.size)  # (N, W)
        mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return np.where(mask, x.dtype.type(0), x)


__all__ = [
    "Compose",
    "Cutout",
    "GaussianNoise",
    "RandomAffine",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomRotation",
    "Transform",
    "affine_sample",
]
