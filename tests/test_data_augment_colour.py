"""PCA colour noise, ColorJitter, vertical flips and random resized crops: exact formulas
(torchvision's, written out in torch), statistics, seeding and hostile input."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from tinycnn.data import (
    ColorJitter,
    Compose,
    PCAColorJitter,
    RandomResizedCrop,
    RandomVerticalFlip,
    pca_color_basis,
    resized_crop,
)

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the formulas are then checked against NumPy only
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed, so there is "
                                                        "no reference to compare with")


def batch(n: int = 8, c: int = 3, h: int = 10, w: int = 10, seed: int = 0,
          dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).random((n, c, h, w)).astype(dtype)


def basis() -> tuple[np.ndarray, np.ndarray]:
    return pca_color_basis(batch(n=20, seed=3, dtype=np.float64))


NEW = [
    lambda: ColorJitter(0.4, 0.4, 0.4),
    lambda: PCAColorJitter(*basis()),
    lambda: RandomVerticalFlip(),
    lambda: RandomResizedCrop(8, scale=(0.2, 1.0)),
]


@pytest.mark.parametrize("make", NEW, ids=["ColorJitter", "PCAColorJitter", "RandomVerticalFlip",
                                           "RandomResizedCrop"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_dtype_seed_and_input_untouched(make, dtype: type) -> None:
    t = make()
    x = batch(dtype=dtype)
    out = t(x, np.random.default_rng(7))
    expected = (8, 3, 8, 8) if isinstance(t, RandomResizedCrop) else x.shape
    assert out.shape == expected and out.dtype == dtype
    np.testing.assert_array_equal(x, batch(dtype=dtype))
    np.testing.assert_array_equal(out, t(x, np.random.default_rng(7)))
    assert not np.array_equal(out, t(x, np.random.default_rng(8)))
    # seeded by seed= when no generator is passed
    a = type(t)(**_args(t), seed=3)(x)
    b = type(t)(**_args(t), seed=3)(x)
    np.testing.assert_array_equal(a, b)


def _args(t: object) -> dict:
    if isinstance(t, PCAColorJitter):
        return {"eigvals": t.eigvals, "eigvecs": t.eigvecs}
    if isinstance(t, RandomResizedCrop):
        return {"size": t.size, "scale": t.scale}
    if isinstance(t, ColorJitter):
        return {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}
    return {}


# vertical flip --------------------------------------------------------------------------
def test_vertical_flip_is_exact() -> None:
    x = batch()
    np.testing.assert_array_equal(RandomVerticalFlip(1.0)(x, np.random.default_rng(0)),
                                  x[:, :, ::-1, :])
    np.testing.assert_array_equal(RandomVerticalFlip(0.0)(x, np.random.default_rng(0)), x)
    src = batch(n=2000, c=1, h=3, w=2)
    out = RandomVerticalFlip()(src, np.random.default_rng(1))
    flipped = np.all(out == src[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == src, axis=(1, 2, 3))
    assert np.all(flipped | kept) and 0.45 < flipped.mean() < 0.55


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "half", None, True])
def test_vertical_flip_refuses_bad_p(p: object) -> None:
    with pytest.raises(ValueError, match="RandomVerticalFlip: p must be a number in"):
        RandomVerticalFlip(p)


# ColorJitter ----------------------------------------------------------------------------
def test_color_jitter_with_factor_one_is_the_identity() -> None:
    x = batch(dtype=np.float64)
    for t in (ColorJitter(), ColorJitter(0, 0, 0), ColorJitter((1, 1), (1, 1), (1, 1))):
        np.testing.assert_array_equal(t(x, np.random.default_rng(0)), x)


def _torchvision(img, name: str, f: float):
    """torchvision.transforms.functional's float-image formulas, as in its source."""
    def blend(a, b, ratio):
        return (ratio * a + (1.0 - ratio) * b).clamp(0, 1.0)

    def gray(a):
        if a.shape[-3] == 1:
            return a
        r, g, b = a.unbind(dim=-3)
        return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(dim=-3)

    if name == "brightness":
        return blend(img, torch.zeros_like(img), f)
    if name == "contrast":
        mean = torch.mean(gray(img), dim=(-3, -2, -1), keepdim=True)
        return blend(img, mean, f)
    if img.shape[-3] == 1:  # adjust_saturation leaves a gray image as it is
        return img
    return blend(img, gray(img), f)


@needs_torch
@pytest.mark.parametrize("channels", [3, 1])
def test_color_jitter_matches_torchvisions_formulas_in_a_random_order(channels: int) -> None:
    rng = np.random.default_rng(0)
    names = ("brightness", "contrast", "saturation")
    for trial in range(5):
        factors = dict(zip(names, rng.uniform(0.2, 1.8, size=3), strict=True))
        # pixels a little outside [0, 1] too: every operation clips, as torchvision's
        x = rng.uniform(-0.1, 1.1, size=(40, channels, 5, 6))
        t = ColorJitter(**{k: (v, v) for k, v in factors.items()})
        out = t(x, np.random.default_rng(trial))
        orders_seen = set()
        for i in range(len(x)):
            matches = []
            for order in itertools.permutations(names):
                ref = torch.tensor(x[i])
                for name in order:
                    ref = _torchvision(ref, name, factors[name])
                if np.allclose(out[i], ref.numpy(), rtol=1e-6, atol=1e-12):
                    matches.append(order)
            assert matches, f"image {i} matches no order of torchvision's three operations"
            orders_seen.add(frozenset(matches))
        if channels == 3:
            # orders that commute give the same image; still several differ: drawn per image
            assert len(orders_seen) >= 3


def test_color_jitter_factors_are_uniform_in_the_documented_range() -> None:
    x = np.full((4000, 3, 2, 2), 0.25)
    out = ColorJitter(brightness=0.6)(x, np.random.default_rng(0))
    f = out[:, 0, 0, 0] / 0.25
    assert np.all(out == out[:, :1, :1, :1])  # one factor per image
    assert f.min() >= 0.4 and f.max() <= 1.6
    assert f.mean() == pytest.approx(1.0, abs=0.02)
    assert f.std() == pytest.approx(1.2 / np.sqrt(12), rel=0.05)
    # 1 - b below 0 is cut at 0, as torchvision's max(0, 1 - b)
    assert ColorJitter(brightness=1.5).brightness == (0.0, 2.5)


def test_saturation_zero_gives_gray_and_gray_images_pass() -> None:
    x = batch(dtype=np.float64)
    out = ColorJitter(saturation=(0, 0))(x, np.random.default_rng(0))
    gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for ch in range(3):
        np.testing.assert_allclose(out[:, ch], gray, rtol=1e-12)
    g = batch(c=1, dtype=np.float64)
    np.testing.assert_array_equal(ColorJitter(saturation=0.9)(g, np.random.default_rng(0)), g)


@pytest.mark.parametrize("kwargs, said", [
    ({"brightness": -0.1}, "brightness must be a finite number >= 0"),
    ({"contrast": float("nan")}, "contrast must be a finite number >= 0"),
    ({"saturation": float("inf")}, "saturation must be a finite number >= 0"),
    ({"brightness": "0.4"}, "brightness must be a number >= 0 or a pair"),
    ({"contrast": (1.5, 0.5)}, "contrast must be a pair"),
    ({"saturation": (-0.5, 1.0)}, "saturation must be a pair"),
    ({"brightness": (1, 2, 3)}, "brightness must be a pair"),
    ({"brightness": True}, "brightness must be a number"),
])
def test_color_jitter_refuses_bad_arguments(kwargs: dict, said: str) -> None:
    with pytest.raises(ValueError, match="ColorJitter: " + said.replace("(", r"\(")):
        ColorJitter(**kwargs)


def test_color_transforms_refuse_other_images() -> None:
    with pytest.raises(ValueError, match="ColorJitter: expected images with 3 channels"):
        ColorJitter(0.2)(batch(c=2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="ColorJitter: expected float pixels"):
        ColorJitter(0.2)(np.zeros((2, 3, 4, 4), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"ColorJitter: expected a batch \(N, C, H, W\)"):
        ColorJitter(0.2)(np.zeros((3, 4, 4)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="PCAColorJitter: the basis is for 3 channels, the "
                                         "images have 1"):
        PCAColorJitter(*basis())(batch(c=1), np.random.default_rng(0))
    with pytest.raises(ValueError, match="RandomResizedCrop: expected images of at least 1x1"):
        RandomResizedCrop(4)(np.zeros((2, 3, 0, 5)), np.random.default_rng(0))


# PCA colour noise -----------------------------------------------------------------------
def test_pca_basis_is_the_eigen_decomposition_of_the_pixel_covariance() -> None:
    images = (batch(n=37, h=6, w=5, seed=1, dtype=np.float64) * 255).astype(np.uint8)
    pixels = images.transpose(1, 0, 2, 3).reshape(3, -1) / 255.0
    cov = np.cov(pixels, bias=True)
    for chunk in (1, 5, 1024):  # chunking changes nothing but rounding
        vals, vecs = pca_color_basis(images, chunk=chunk)
        assert vals.dtype == np.float64 and np.all(np.diff(vals) <= 0)
        np.testing.assert_allclose(vals, np.sort(np.linalg.eigvalsh(cov))[::-1], rtol=1e-10)
        np.testing.assert_allclose(cov @ vecs, vecs * vals, atol=1e-13)
        np.testing.assert_allclose(vecs.T @ vecs, np.eye(3), atol=1e-12)
    # float images are taken in their own scale: 255 times the pixels, 255^2 the variances
    np.testing.assert_allclose(pca_color_basis(images.astype(np.float32))[0],
                               vals * 255.0 ** 2, rtol=1e-5)


def test_pca_shift_is_per_image_in_the_eigen_basis_with_sigma_times_eigval() -> None:
    vals, vecs = np.array([0.2, 0.05, 0.01]), np.linalg.qr(
        np.random.default_rng(0).standard_normal((3, 3)))[0]
    x = np.full((20000, 3, 2, 3), 0.5)
    out = PCAColorJitter(vals, vecs, sigma=0.1)(x, np.random.default_rng(1))
    shift = out - x
    assert np.all(shift == shift[:, :, :1, :1])  # one colour shift per image, every pixel
    alpha = (shift[:, :, 0, 0] @ vecs) / vals   # coordinates in the eigen basis / eigval
    assert np.abs(alpha.mean(axis=0)).max() < 0.003
    np.testing.assert_allclose(alpha.std(axis=0), 0.1, rtol=0.03)
    assert np.abs(np.corrcoef(alpha.T) - np.eye(3)).max() < 0.03


def test_pca_shift_stays_in_the_span_of_the_eigvecs_with_nonzero_eigvals() -> None:
    # Gray images: all colour variance lies along (1, 1, 1); the shift must too.
    gray = np.random.default_rng(0).random((50, 1, 4, 4))
    vals, vecs = pca_color_basis(np.repeat(gray, 3, axis=1))
    assert vals[1] < 1e-15 and vals[2] < 1e-15
    np.testing.assert_allclose(np.abs(vecs[:, 0]), np.full(3, 3 ** -0.5), rtol=1e-10)
    shift = PCAColorJitter(vals, vecs)(np.zeros((500, 3, 1, 1)), np.random.default_rng(0))
    shift = shift[:, :, 0, 0]
    assert np.abs(shift - shift.mean(axis=1, keepdims=True)).max() < 1e-12
    assert shift.std() > 1e-3


def test_pca_sigma_zero_is_the_identity() -> None:
    x = batch(dtype=np.float64)
    np.testing.assert_array_equal(PCAColorJitter(*basis(), sigma=0)(x, np.random.default_rng(0)),
                                  x)


@pytest.mark.parametrize("args, said", [
    (([0.1, 0.2], np.eye(3)), r"eigvecs must be a \(2, 2\) array"),
    (([[0.1]], np.eye(1)), "eigvals must be a 1-D array"),
    (([], np.eye(1)), "eigvals must be a 1-D array"),
    ((["a", "b", "c"], np.eye(3)), "eigvals must be a 1-D array"),
    (([-0.1, 0.2, 0.3], np.eye(3)), "eigvals must be finite and >= 0"),
    (([0.1, np.nan, 0.3], np.eye(3)), "eigvals must be finite and >= 0"),
])
def test_pca_jitter_refuses_bad_bases(args: tuple, said: str) -> None:
    with pytest.raises(ValueError, match="PCAColorJitter: " + said):
        PCAColorJitter(*args)
    with pytest.raises(ValueError, match="PCAColorJitter: sigma must be a finite number >= 0"):
        PCAColorJitter([1.0], [[1.0]], sigma=-1)


def test_pca_basis_refuses_what_is_not_a_batch_of_numbers() -> None:
    for bad in (np.zeros((3, 4, 4)), np.zeros((0, 3, 4, 4)), [[1, 2]]):
        with pytest.raises(ValueError, match=r"pca_color_basis: expected a non-empty batch"):
            pca_color_basis(bad)
    with pytest.raises(ValueError, match="pca_color_basis: the images hold NaN or inf"):
        pca_color_basis(np.full((2, 3, 2, 2), np.nan))


# random resized crop --------------------------------------------------------------------
@needs_torch
def test_resized_crop_is_torchs_bilinear_interpolation_of_the_box() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, c, h, w = 3, int(rng.integers(1, 4)), int(rng.integers(3, 20)), int(rng.integers(3, 20))
        size = (int(rng.integers(1, 25)), int(rng.integers(1, 25)))  # up- and downscaling
        x = rng.standard_normal((n, c, h, w))
        bh, bw = rng.integers(1, h + 1, size=n), rng.integers(1, w + 1, size=n)
        top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
        out = resized_crop(x, top, left, bh, bw, size)
        for i in range(n):
            box = x[i:i + 1, :, top[i]:top[i] + bh[i], left[i]:left[i] + bw[i]]
            ref = F.interpolate(torch.tensor(box), size=size, mode="bilinear",
                                align_corners=False, antialias=False).numpy()[0]
            np.testing.assert_allclose(out[i], ref, rtol=1e-6, atol=1e-12)


def test_resized_crop_boxes_follow_the_scale_and_ratio_ranges() -> None:
    t = RandomResizedCrop(8, scale=(0.3, 0.6), ratio=(0.5, 2.0))
    top, left, h, w = t.get_params(5000, 40, 30, np.random.default_rng(0))
    assert np.all((top >= 0) & (left >= 0) & (top + h <= 40) & (left + w <= 30))
    area = h * w / (40 * 30)
    # rounding w and h to whole pixels moves the area and the ratio a little
    assert area.min() > 0.3 * 0.85 and area.max() < 0.6 * 1.15
    assert (w / h).min() > 0.5 * 0.85 and (w / h).max() < 2.0 * 1.15
    assert len(set(zip(top.tolist(), left.tolist(), strict=True))) > 100  # positions vary


def test_resized_crop_falls_back_to_the_centre_crop() -> None:
    # Aspect 5..6 at 90% of a square image never fits: the centre crop of ratio 5 is used.
    t = RandomResizedCrop((4, 20), scale=(0.9, 1.0), ratio=(5.0, 6.0))
    top, left, h, w = t.get_params(50, 20, 20, np.random.default_rng(0))
    assert np.all(w == 20) and np.all(h == 4) and np.all(top == 8) and np.all(left == 0)
    x = batch(n=2, h=20, w=20, dtype=np.float64)
    np.testing.assert_array_equal(t(x, np.random.default_rng(0)), x[:, :, 8:12, :])
    # ratio below the image's: full height, width round(h * max ratio)
    t = RandomResizedCrop(6, scale=(0.99, 1.0), ratio=(0.1, 0.2))
    top, left, h, w = t.get_params(5, 10, 10, np.random.default_rng(0))
    assert np.all(h == 10) and np.all(w == 2) and np.all(left == 4)


def test_whole_image_at_the_same_size_is_the_identity() -> None:
    x = batch(h=12, w=9, dtype=np.float64)
    t = RandomResizedCrop((12, 9), scale=(1.0, 1.0), ratio=(0.75, 0.75))
    np.testing.assert_array_equal(t(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize("kwargs, said", [
    ({"size": 0}, "size must be a whole number >= 1"),
    ({"size": (3, 4, 5)}, "size must be a whole number >= 1"),
    ({"size": 2.5}, "size must be a whole number >= 1"),
    ({"size": 8, "scale": (0.0, 1.0)}, "scale must be a pair"),
    ({"size": 8, "scale": (0.9, 0.1)}, "scale must be a pair"),
    ({"size": 8, "ratio": (1.0, float("inf"))}, "ratio must be a pair"),
    ({"size": 8, "ratio": 1.0}, "ratio must be a pair"),
])
def test_resized_crop_refuses_bad_arguments(kwargs: dict, said: str) -> None:
    with pytest.raises(ValueError, match="RandomResizedCrop: " + said):
        RandomResizedCrop(**kwargs)


def test_a_batch_of_512_is_fast() -> None:
    x = batch(n=512, c=3, h=32, w=32)
    pipeline = Compose([RandomResizedCrop(32, scale=(0.25, 1.0)), RandomVerticalFlip(),
                        ColorJitter(0.4, 0.4, 0.4), PCAColorJitter(*basis())])
    rng = np.random.default_rng(0)
    pipeline(x[:8], rng)
    start = time.perf_counter()
    out = pipeline(x, rng)
    elapsed = time.perf_counter() - start
    assert out.shape == x.shape and out.dtype == x.dtype
    assert elapsed < 1.0, f"512 images took {elapsed:.3f} s"  # loose on a busy 2-core box
