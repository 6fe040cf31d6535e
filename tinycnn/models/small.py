"""Small classic CNNs for MNIST-sized and CIFAR-sized images.

Every builder returns a :class:`~tinycnn.containers.Sequential`, so state-dict keys are
PyTorch's ``nn.Sequential`` keys (``0.weight``, ``3.bias``, ...). ``seed`` makes the
initial weights (and Dropout masks) repeat exactly.

* :func:`simple_convnet`: "Deep Learning from Scratch", ch. 7 (about 99 % on MNIST).
* :func:`deep_convnet`: the same book, ch. 8 (about 99.4 % on MNIST).
* :func:`lenet5`: LeCun et al. 1998, with padding 2 so it takes 28x28 images.
* :func:`vgg_cifar`: a small VGG-style net with BatchNorm for 32x32 colour images.
* :func:`fast_cifar`: a wide, shallow conv-BN-ReLU net for quick CIFAR-10 training on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinycnn.containers import Sequential
from tinycnn.layers.activation import ReLU
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.dropout import Dropout
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.pool import GlobalAvgPool2D, MaxPool2D
from tinycnn.layers.shape import Flatten
from tinycnn.module import Module


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A generator from a seed, or the generator itself (``None``: fresh entropy)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _child_seed(rng: np.random.Generator) -> int:
    """A seed for a layer that keeps its own generator (Dropout), drawn from ``rng``."""
    return int(rng.integers(2**31 - 1))


def _check_size(name: str, image_size: int, minimum: int) -> None:
    if image_size < minimum:
        raise ValueError(f"{name} needs images of at least {minimum}x{minimum}, got {image_size}")


def simple_convnet(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    filters: int = 30,
    hidden: int = 100,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """Conv 30@5x5 - ReLU - MaxPool 2 - Affine 100 - ReLU - Affine 10 (the book's ch. 7).

    Input ``(N, in_channels, image_size, image_size)``; output logits ``(N, num_classes)``.
    """
    _check_size("simple_convnet", image_size, 6)
    rng = _rng(seed)
    conv_out = image_size - 4
    pooled = conv_out // 2
    return Sequential(
        Conv2D(in_channels, filters, 5, stride=1, padding=0, rng=rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Affine(filters * pooled * pooled, hidden, rng=rng),
        ReLU(),
        Affine(hidden, num_classes, rng=rng),
    )


def deep_convnet(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """The book's ch. 8 network for 28x28 images: six 3x3 convs, three pools, two Affine.

    conv16-conv16-pool, conv32-conv32(pad 2)-pool, conv64-conv64-pool, Affine 1024->50,
    ReLU, Dropout 0.5, Affine 50->classes, Dropout 0.5 (both Dropouts as in the book).
    Spatial sizes: 28 -> 14 -> 16 (pad 2) -> 8 -> 4.
    """
    _check_size("deep_convnet", image_size, 4)
    rng = _rng(seed)
    side = ((image_size // 2 + 2) // 2) // 2
    layers: list[Module] = []
    for c_in, c_out, pad2 in ((in_channels, 16, 1), (16, 32, 2), (32, 64, 1)):
        layers += [
            Conv2D(c_in, c_out, 3, padding=1, rng=rng),
            ReLU(),
            Conv2D(c_out, c_out, 3, padding=pad2, rng=rng),
            ReLU(),
            MaxPool2D(2),
        ]
    layers += [
        Flatten(),
        Affine(64 * side * side, 50, rng=rng),
        ReLU(),
        Dropout(0.5, seed=_child_seed(rng)),
        Affine(50, num_classes, rng=rng),
        Dropout(0.5, seed=_child_seed(rng)),
    ]
    return Sequential(*layers)


def lenet5(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """LeNet-5 with ReLU and max-pooling, padded so 28x28 inputs work.

    conv6 5x5 pad 2 (28x28) - pool (14) - conv16 5x5 (10) - pool (5) - 120 - 84 - classes.
    """
    _check_size("lenet5", image_size, 10)
    rng = _rng(seed)
    side = (image_size // 2 - 4) // 2
    return Sequential(
        Conv2D(in_channels, 6, 5, padding=2, rng=rng),
        ReLU(),
        MaxPool2D(2),
        Conv2D(6, 16, 5, rng=rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Affine(16 * side * side, 120, rng=rng),
        ReLU(),
        Affine(120, 84, rng=rng),
        ReLU(),
        Affine(84, num_classes, rng=rng),
    )


def _conv_bn_relu(c_in: int, c_out: int, rng: np.random.Generator) -> list[Module]:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return [Conv2D(c_in, c_out, 3, padding=1, bias=False, rng=rng), BatchNorm2D(c_out), ReLU()]


def vgg_cifar(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (32, 64, 128),
    image_size: int = 32,
    dropout: float = 0.5,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """A small VGG: per width two conv3x3-BN-ReLU then MaxPool 2; then FC 256 and classes.

    With the default widths: 32x32 -> 16 -> 8 -> 4, then ``Affine(128*4*4, 256)``,
    ReLU, Dropout, ``Affine(256, num_classes)``.
    """
    rng = _rng(seed)
    _check_size("vgg_cifar", image_size, 2 ** len(widths))
    layers: list[Module] = []
    c = in_channels
    for w in widths:
        layers += _conv_bn_relu(c, w, rng) + _conv_bn_relu(w, w, rng) + [MaxPool2D(2)]
        c = w
    side = image_size // 2 ** len(widths)
    layers += [
        Flatten(),
        Affine(c * side * side, 256, rng=rng),
        ReLU(),
        Dropout(dropout, seed=_child_seed(rng)),
        Affine(256, num_classes, rng=rng),
    ]
    return Sequential(*layers)


def fast_cifar(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: Sequence[int] = (32, 64, 128),
    stem: int = 24,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """A shallow, wide conv-BN-ReLU net (airbench / ResNet-9 style) for fast CIFAR-10.

    stem conv3x3-BN-ReLU, then per width: conv3x3 - MaxPool 2 - BN - ReLU - conv3x3 - BN -
    ReLU (pooling before BN halves the BN and ReLU work), then global average pooling and
    one Affine layer. Seven convolutions, about 24M multiply-adds per 32x32 image with the
    default widths (ResNet-20: about 41M), most of them in GEMMs of 32+ channels, which
    run near the CPU's peak. Scale ``widths`` up (e.g. ``(64, 128, 256)``) for accuracy.
    """
    rng = _rng(seed)
    layers: list[Module] = _conv_bn_relu(in_channels, stem, rng)
    c = stem
    for w in widths:
        layers += [
            Conv2D(c, w, 3, padding=1, bias=False, rng=rng),
            MaxPool2D(2),
            BatchNorm2D(w),
            ReLU(),
            *_conv_bn_relu(w, w, rng),
        ]
        c = w
    layers += [GlobalAvgPool2D(), Affine(c, num_classes, rng=rng)]
    return Sequential(*layers)
