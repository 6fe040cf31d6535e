"""VGG (Simonyan and Zisserman 2015), configurations A (VGG-11) and D (VGG-16).

ImageNet form as in torchvision: 3x3 convolutions with padding 1 and ReLU, 2x2 max-pools,
an adaptive average pool to 7x7 (so any input of at least 32x32 works) and three fully
connected layers with dropout. Parameters for 1000 classes: VGG-11 132,863,336 and
VGG-16 138,357,544, torchvision's counts; state-dict keys are torchvision's
(``features.0.weight``, ``classifier.0.weight``, ...). ``batch_norm=True`` gives
torchvision's ``vgg11_bn``/``vgg16_bn``: BatchNorm2D after every convolution, and the
convolutions keep their biases as torchvision's do (132,868,840 and 138,365,992
parameters), so their state dicts load both ways.

:func:`vgg11_cifar` is VGG-11's convolutions (BatchNorm on) for 32x32 images with one
512 -> classes layer on top, the common CIFAR-10 form (about 9.2M parameters).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from tinycnn.containers import Sequential
from tinycnn.layers.activation import ReLU
from tinycnn.layers.adaptive_pool import AdaptiveAvgPool2D
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.dropout import Dropout
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.pool import MaxPool2D
from tinycnn.layers.shape import Flatten
from tinycnn.models.small import _child_seed, _rng
from tinycnn.module import Module

# numbers are 3x3 conv widths, "M" a 2x2 max-pool
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def make_features(
    config: list[int | str], in_channels: int, batch_norm: bool, rng: np.random.Generator,
    conv_bias: bool = True,
) -> Sequential:
    """The convolutional part of a VGG configuration, as one :class:`Sequential`.

    ``conv_bias=False`` drops the convolutions' biases (only sensible with ``batch_norm``,
    whose shift makes them redundant; torchvision keeps them).
    """
    layers: list[Module] = []
    c = in_channels
    for item in config:
        if item == "M":
            layers.append(MaxPool2D(2, 2))
            continue
        layers.append(Conv2D(c, int(item), 3, padding=1, bias=conv_bias, rng=rng))
        if batch_norm:
            layers.append(BatchNorm2D(int(item)))
        layers.append(ReLU())
        c = int(item)
    return Sequential(*layers)


def _vgg(
    config: str, num_classes: int, in_channels: int, batch_norm: bool, dropout: float,
    seed: int | np.random.Generator | None,
) -> Sequential:
    rng = _rng(seed)
    features = make_features(CONFIGS[config], in_channels, batch_norm, rng)
    classifier = Sequential(
        Affine(512 * 7 * 7, 4096, rng=rng), ReLU(), Dropout(dropout, seed=_child_seed(rng)),
        Affine(4096, 4096, rng=rng), ReLU(), Dropout(dropout, seed=_child_seed(rng)),
        Affine(4096, num_classes, init="xavier_normal", rng=rng),
    )
    return Sequential(OrderedDict(
        features=features, avgpool=AdaptiveAvgPool2D(7), flatten=Flatten(), classifier=classifier,
    ))


def vgg11(
    num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False,
    dropout: float = 0.5, seed: int | np.random.Generator | None = None,
) -> Sequential:
    """VGG-11 (configuration A) for ``(N, in_channels, H, W)`` images, ``H, W >= 32``."""
    return _vgg("A", num_classes, in_channels, batch_norm, dropout, seed)


def vgg16(
    num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False,
    dropout: float = 0.5, seed: int | np.random.Generator | None = None,
) -> Sequential:
    """VGG-16 (configuration D) for ``(N, in_channels, H, W)`` images, ``H, W >= 32``."""
    return _vgg("D", num_classes, in_channels, batch_norm, dropout, seed)


def vgg11_cifar(
    num_classes: int = 10, in_channels: int = 3, seed: int | np.random.Generator | None = None
) -> Sequential:
    """VGG-11 with BatchNorm for 32x32 images: five pools leave 1x1x512, then one Affine.

    Its convolutions have no bias (BatchNorm's shift follows each one).
    """
    rng = _rng(seed)
    return Sequential(OrderedDict(
        features=make_features(CONFIGS["A"], in_channels, True, rng, conv_bias=False),
        flatten=Flatten(),
        classifier=Affine(512, num_classes, rng=rng),
    ))
