"""Batch augmentations: each one transforms a whole ``(N, C, H, W)`` float batch at once.

Every transform draws its random numbers for all N images in one call and applies them
with array indexing (no Python loop over images), so a batch of 512 costs a few
milliseconds. Call ``t(x, rng)`` with a ``numpy.random.Generator``; without one the
transform uses its own generator (seeded by ``seed=``). The
:class:`~tinycnn.data.loader.DataLoader` applies them after scaling pixels to [0, 1] and
before normalization, so zero fill (padding, rotation corners, Cutout) is black and the
colour transforms (:class:`ColorJitter`, :class:`PCAColorJitter`) see pixels in [0, 1].
"""

from __future__ import annotations

import math
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


def _check_float_images(x: np.ndarray, owner: str) -> None:
    """Colour and resampling transforms work on float pixels of a non-empty image size."""
    if x.dtype.kind != "f":
        raise ValueError(f"{owner}: expected float pixels (the DataLoader gives [0, 1] "
                         f"floats), got dtype {x.dtype}")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{owner}: expected images of at least 1x1 pixels, got shape "
                         f"{tuple(x.shape)}")


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


class RandomVerticalFlip(Transform):
    """Mirror each image top-bottom with probability ``p``."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__(seed)
        self.p = _probability(p, "RandomVerticalFlip")

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flip = rng.random(len(x)) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1, :], x)


def _probability(p: Any, owner: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) \
            or not 0.0 <= p <= 1.0:
        raise ValueError(f"{owner}: p must be a number in [0, 1], got {p!r}")
    return float(p)


def _size_pair(size: Any, owner: str) -> tuple[int, int]:
    """``size`` (an int or ``(h, w)``) as two whole numbers >= 1, or a ValueError naming it."""
    items = [size] if isinstance(size, (int, np.integer)) else size
    try:
        values = list(items)
    except TypeError:  # neither a number nor a sequence
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   and v >= 1 for v in values):
        raise ValueError(f"{owner}: size must be a whole number >= 1 or a pair (h, w) of them, "
                         f"got {size!r}")
    return int(values[0]), int(values[1])


def _range(value: Any, owner: str, name: str, low: float = 0.0,
           positive: bool = False) -> tuple[float, float]:
    """A ``(lo, hi)`` pair of finite numbers with ``low <= lo <= hi`` (``> 0`` when
    ``positive``), or a ValueError naming ``owner`` and ``name``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {name} must be a pair (min, max) of numbers, got "
                         f"{value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or lo < low \
            or (positive and lo <= 0):
        bound = "> 0" if positive else f">= {low:g}"
        raise ValueError(f"{owner}: {name} must be a pair (min, max) with {bound} <= min <= "
                         f"max, finite, got {value!r}")
    return lo, hi


# ---------------------------------------------------------------------------------------
# Random resized crop (Inception / torchvision)


def resized_crop(x: np.ndarray, top: np.ndarray, left: np.ndarray, height: np.ndarray,
                 width: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cut box ``(top, left, height, width)`` of each image and resize it to ``size``.

    All box arrays are ``(N,)`` whole numbers. Bilinear resampling with half-pixel
    centres, as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
    without antialiasing: output row ``r`` of a box of height ``h`` reads the box at
    ``y = max((r + 0.5) * h / out_h - 0.5, 0)`` between rows ``floor(y)`` and
    ``min(floor(y) + 1, h - 1)`` (columns alike), so no pixel outside the box is read.
    """
    n, c, hh, ww = x.shape
    oh, ow = size

    def axis(start: np.ndarray, length: np.ndarray, out: int) -> tuple[np.ndarray, ...]:
        length = length.astype(np.float64)[:, None]
        src = np.maximum((np.arange(out) + 0.5) * (length / out) - 0.5, 0.0)   # (N, out)
        i0 = np.floor(src)
        frac = (src - i0).astype(x.dtype)
        i0 = i0.astype(np.intp)
        i1 = np.minimum(i0 + 1, length.astype(np.intp) - 1)
        return i0 + start[:, None], i1 + start[:, None], frac

    y0, y1, fy = axis(top, height, oh)
    x0, x1, fx = axis(left, width, ow)
    flat = x.reshape(n, c, hh * ww)

    def corner(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        idx = (rows[:, :, None] * ww + cols[:, None, :]).reshape(n, 1, oh * ow)
        return np.take_along_axis(flat, idx, axis=2).reshape(n, c, oh, ow)

    fx = fx[:, None, None, :]
    fy = fy[:, None, :, None]
    one = x.dtype.type(1)
    top_row = corner(y0, x0) * (one - fx) + corner(y0, x1) * fx
    bottom_row = corner(y1, x0) * (one - fx) + corner(y1, x1) * fx
    return top_row * (one - fy) + bottom_row * fy


class RandomResizedCrop(Transform):
    """Cut a box of random area and aspect ratio, resize it to ``size`` (torchvision's
    ``RandomResizedCrop``, the Inception crop).

    Per image, up to 10 tries: area ``= U(scale) * H * W``, aspect ``w / h = exp(U(log
    ratio))``, ``w = round(sqrt(area * aspect))``, ``h = round(sqrt(area / aspect))``; the
    first try that fits inside the image is placed at a uniform offset. When none fits, the
    centre crop of the image clipped to the ratio range is used (torchvision's fallback).
    The box is resized by :func:`resized_crop` (bilinear, no antialiasing: the same as
    torchvision when the box is smaller than ``size``, the usual case on 32x32 images).
    The 10 tries of all N images are drawn at once; nothing loops over images.

    For the plain "scale" augmentation (zoom in or out about the centre, keeping the size)
    use ``RandomAffine(scale=(0.9, 1.1))``: zooming out fills the border with zeros.
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), seed: int | None = None) -> None:
        super().__init__(seed)
        name = type(self).__name__
        self.size = _size_pair(size, name)
        self.scale = _range(scale, name, "scale", positive=True)
        self.ratio = _range(ratio, name, "ratio", positive=True)

    def get_params(self, n: int, height: int, width: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``(top, left, h, w)``, each ``(n,)``: the boxes for ``n`` images of this size."""
        area = height * width
        log_ratio = np.log(self.ratio)
        target = area * rng.uniform(*self.scale, size=(n, 10))
        aspect = np.exp(rng.uniform(*log_ratio, size=(n, 10)))
        # np.round rounds half to even, as Python's round() in torchvision
        w = np.round(np.sqrt(target * aspect)).astype(np.intp)
        h = np.round(np.sqrt(target / aspect)).astype(np.intp)
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = np.argmax(fits, axis=1)
        found = fits[np.arange(n), first]
        w, h = w[np.arange(n), first], h[np.arange(n), first]
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fw, fh = int(round(height * self.ratio[1])), height
        else:
            fw, fh = width, height
        w = np.where(found, w, fw)
        h = np.where(found, h, fh)
        top = np.where(found, rng.integers(0, height - h + 1), (height - h) // 2)
        left = np.where(found, rng.integers(0, width - w + 1), (width - w) // 2)
        return top, left, h, w

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_float_images(x, type(self).__name__)
        n, _, height, width = x.shape
        top, left, h, w = self.get_params(n, height, width, rng)
        return resized_crop(x, top, left, h, w, self.size)


# ---------------------------------------------------------------------------------------
# Colour: torchvision's ColorJitter and AlexNet's PCA lighting

# ITU-R 601 luma, as torchvision's rgb_to_grayscale for float images
_LUMA = (0.299, 0.587, 0.114)


def _grayscale(x: np.ndarray) -> np.ndarray:
    """``(N, 1, H, W)`` luminance: ``0.299 R + 0.587 G + 0.114 B`` (1 channel: itself)."""
    if x.shape[1] == 1:
        return x
    r, g, b = (x[:, i:i + 1] for i in range(3))
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).astype(x.dtype, copy=False)


def _blend(x: np.ndarray, other: Any, factor: np.ndarray) -> np.ndarray:
    """``clip(factor * x + (1 - factor) * other, 0, 1)`` per image (torchvision's _blend)."""
    f = factor.astype(x.dtype)[:, None, None, None]
    return np.clip(f * x + (1 - f) * other, 0, 1).astype(x.dtype, copy=False)


def adjust_brightness(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``clip(factor * x, 0, 1)``: blend with black."""
    return _blend(x, 0, factor)


def adjust_contrast(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Blend with the mean of each image's grayscale: ``clip(f x + (1 - f) mean, 0, 1)``."""
    mean = _grayscale(x).mean(axis=(1, 2, 3), keepdims=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Blend with each pixel's grayscale (``f = 0``: gray); 1-channel images pass unchanged."""
    if x.shape[1] == 1:  # a gray image has no saturation to change (as torchvision)
        return x
    return _blend(x, _grayscale(x), factor)


class ColorJitter(Transform):
    """Random brightness, contrast and saturation, as torchvision's ``ColorJitter``.

    Each argument ``b`` gives a factor range ``[max(0, 1 - b), 1 + b]`` (or pass ``(min,
    max)`` with ``0 <= min <= max``); ``0`` leaves that operation out. Per image a factor
    ``f ~ U(range)`` for each operation, and then, on pixels in [0, 1] (the DataLoader's
    scale before normalization), each result clipped to [0, 1]:

    - brightness: ``f * x``;
    - contrast: ``f * x + (1 - f) * mean(gray(x))``, the mean over the image;
    - saturation: ``f * x + (1 - f) * gray(x)``, per pixel,

    with ``gray = 0.299 R + 0.587 G + 0.114 B``. The order of the three operations is a
    random permutation drawn per image (torchvision draws one per call, which is per image
    in its one-image-at-a-time pipelines). Images have 3 channels (RGB) or 1 (gray: the
    contrast uses the image's own mean and saturation does nothing); other channel counts
    are an error. Hue is not offered.
    """

    _OPS = ("brightness", "contrast", "saturation")

    def __init__(self, brightness: float | Sequence[float] = 0.0,
                 contrast: float | Sequence[float] = 0.0,
                 saturation: float | Sequence[float] = 0.0, seed: int | None = None) -> None:
        super().__init__(seed)
        name = type(self).__name__
        self.brightness = self._factors(brightness, "brightness", name)
        self.contrast = self._factors(contrast, "contrast", name)
        self.saturation = self._factors(saturation, "saturation", name)

    @staticmethod
    def _factors(value: Any, name: str, owner: str) -> tuple[float, float] | None:
        if isinstance(value, (int, float, np.integer, np.floating)) \
                and not isinstance(value, bool):
            v = float(value)
            if not 0.0 <= v < math.inf:
                raise ValueError(f"{owner}: {name} must be a finite number >= 0 or a pair "
                                 f"(min, max), got {value!r}")
            lo, hi = max(0.0, 1.0 - v), 1.0 + v
        elif isinstance(value, (str, bytes, bool)) or value is None:
            raise ValueError(f"{owner}: {name} must be a number >= 0 or a pair (min, max), "
                             f"got {value!r}")
        else:
            lo, hi = _range(value, owner, name)
        return None if lo == hi == 1.0 else (lo, hi)

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_float_images(x, type(self).__name__)
        n, c = x.shape[:2]
        if c not in (1, 3):
            raise ValueError(f"ColorJitter: expected images with 3 channels (RGB) or 1 (gray), "
                             f"got {c} channels")
        ops = {"brightness": adjust_brightness, "contrast": adjust_contrast,
               "saturation": adjust_saturation}
        ranges = [getattr(self, name) for name in self._OPS]
        factors = np.stack([rng.uniform(*r, size=n) if r else np.ones(n) for r in ranges])
        order = np.argsort(rng.random((n, 3)), axis=1)   # a random permutation per image
        out = x.copy()
        for step in range(3):
            for k, name in enumerate(self._OPS):
                chosen = (order[:, step] == k) if ranges[k] else None
                if chosen is None or not chosen.any():
                    continue
                out[chosen] = ops[name](out[chosen], factors[k][chosen])
        return out


def pca_color_basis(images: Any, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(eigvals, eigvecs)`` of the covariance of the colour of every pixel of ``images``.

    ``images`` is ``(N, C, H, W)``; uint8 images are read as ``pixel / 255``, the [0, 1]
    scale the DataLoader hands to transforms, float images as they are (give them in the
    scale the transform will see). The ``C x C`` covariance (divided by the pixel count)
    is accumulated in float64, ``chunk`` images at a time in two passes (mean, then centred
    products), so the 50,000 CIFAR-10 images need no float copy of the whole set.
    ``eigvals`` (float64, ``(C,)``) are the covariance's eigenvalues, largest first
    (variances, not standard deviations); ``eigvecs[:, i]`` is the unit eigenvector of
    ``eigvals[i]``, its largest entry made positive so that the result is reproducible.
    """
    if getattr(images, "ndim", None) != 4 or 0 in images.shape:
        raise ValueError(f"pca_color_basis: expected a non-empty batch (N, C, H, W), got shape "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if images.dtype.kind not in "uif":
        raise ValueError(f"pca_color_basis: expected numeric images, got dtype {images.dtype}")
    n, c = images.shape[:2]
    scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0

    def chunks() -> Any:
        for start in range(0, n, chunk):
            part = np.asarray(images[start:start + chunk], dtype=np.float64) * scale
            yield part.transpose(1, 0, 2, 3).reshape(c, -1)      # (C, pixels)

    count = n * images.shape[2] * images.shape[3]
    mean = sum(p.sum(axis=1) for p in chunks()) / count
    cov = np.zeros((c, c))
    for p in chunks():
        centred = p - mean[:, None]
        cov += centred @ centred.T
    cov /= count
    if not np.all(np.isfinite(cov)):
        raise ValueError("pca_color_basis: the images hold NaN or inf")
    eigvals, eigvecs = np.linalg.eigh(cov)               # ascending
    eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
    sign = np.sign(eigvecs[np.argmax(np.abs(eigvecs), axis=0), np.arange(c)])
    return np.maximum(eigvals, 0.0), eigvecs * sign


class PCAColorJitter(Transform):
    """AlexNet's "fancy PCA" lighting noise (Krizhevsky et al. 2012, section 4.1).

    Every pixel of image ``i`` gets the same colour shift ``eigvecs @ (alpha_i *
    eigvals)``, with ``alpha_i ~ N(0, sigma^2)`` per component, drawn per image (``sigma
    = 0.1`` in the paper). ``eigvals`` and ``eigvecs`` come from
    :func:`pca_color_basis` over the training set: the eigenvalues of the colour
    covariance, as in the paper, for pixels in [0, 1] (the scale the DataLoader hands to
    transforms, before normalization). Some implementations (fb.resnet.torch's
    "Lighting") scale by the square roots instead: pass ``np.sqrt(eigvals)`` for that. No
    clipping: the shift is small and normalization follows.
    """

    def __init__(self, eigvals: Any, eigvecs: Any, sigma: float = 0.1,
                 seed: int | None = None) -> None:
        super().__init__(seed)
        name = type(self).__name__
        vals = np.asarray(eigvals, dtype=np.float64) if _numeric(eigvals) else None
        vecs = np.asarray(eigvecs, dtype=np.float64) if _numeric(eigvecs) else None
        if vals is None or vals.ndim != 1 or len(vals) == 0:
            raise ValueError(f"{name}: eigvals must be a 1-D array of numbers (one per "
                             f"channel), got {eigvals!r}")
        c = len(vals)
        if vecs is None or vecs.shape != (c, c):
            raise ValueError(f"{name}: eigvecs must be a ({c}, {c}) array (one eigenvector per "
                             f"column), got shape {getattr(vecs, 'shape', None)}")
        if not (np.all(np.isfinite(vals)) and np.all(np.isfinite(vecs))) or np.any(vals < 0):
            raise ValueError(f"{name}: eigvals must be finite and >= 0 and eigvecs finite "
                             "(a covariance's eigen-decomposition)")
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer,
                                                             np.floating)) \
                or not 0.0 <= sigma < math.inf:
            raise ValueError(f"{name}: sigma must be a finite number >= 0, got {sigma!r}")
        self.eigvals = vals
        self.eigvecs = vecs
        self.sigma = float(sigma)

    def shifts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The ``(n, C)`` colour shifts of ``n`` images: ``(alpha * eigvals) @ eigvecs.T``."""
        alpha = rng.normal(0.0, self.sigma, size=(n, len(self.eigvals)))
        return (alpha * self.eigvals) @ self.eigvecs.T

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_float_images(x, type(self).__name__)
        n, c = x.shape[:2]
        if c != len(self.eigvals):
            raise ValueError(f"PCAColorJitter: the basis is for {len(self.eigvals)} channels, "
                             f"the images have {c}")
        return x + self.shifts(n, rng).astype(x.dtype)[:, :, None, None]

    def __repr__(self) -> str:
        return (f"PCAColorJitter(eigvals={np.round(self.eigvals, 6).tolist()}, "
                f"sigma={self.sigma})")


def _numeric(value: Any) -> bool:
    try:
        return np.asarray(value).dtype.kind in "biuf"
    except (TypeError, ValueError):
        return False


__all__ = [
    "ColorJitter",
    "Compose",
    "Cutout",
    "GaussianNoise",
    "PCAColorJitter",
    "RandomAffine",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomVerticalFlip",
    "Transform",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "affine_sample",
    "pca_color_basis",
    "resized_crop",
]
