"""MobileNet v1 (Howard et al. 2017) and v2 (Sandler et al. 2018): depthwise separable nets.

A depthwise 3x3 convolution (``groups = channels``) filters each channel alone, a 1x1
("pointwise") convolution mixes channels: together about 8-9x fewer multiply-adds than
one full 3x3 convolution.

* :func:`mobilenet_v1`: 1.0-224 has 4,231,976 parameters for 1000 classes (the commonly
  quoted count: BatchNorm scale and shift counted, a 1024 -> 1000 Affine with bias).
  ReLU after every BatchNorm, as in the paper.
* :func:`mobilenet_v2`: torchvision's layout and count, 3,504,872 for 1000 classes, with
  its state-dict keys (``features.0.0.weight``, ``features.1.conv.0.0.weight``,
  ``classifier.1.weight``). Inverted residual blocks: 1x1 expand (ReLU6), depthwise 3x3
  (ReLU6), 1x1 linear projection, plus the input when the shapes allow.

The ``*_cifar`` builders keep the blocks but drop early strides, so 32x32 images still end
on a 2x2 (v1) or 4x4 (v2) map; ``width_mult`` thins every layer for quick CPU training.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from tinycnn.containers import Sequential
from tinycnn.layers.activation import ReLU, ReLU6
from tinycnn.layers.adaptive_pool import AdaptiveAvgPool2D
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.dropout import Dropout
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.shape import Flatten
from tinycnn.models.small import _child_seed, _rng
from tinycnn.module import Module


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never more than 10% below it (TF's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_bn_act(
    c_in: int, c_out: int, kernel_size: int, stride: int, groups: int,
    act: type[Module], rng: np.random.Generator,
) -> Sequential:
    """``Conv2D (no bias) -> BatchNorm2D -> act``, padding ``(k - 1) // 2``."""
    return Sequential(
        Conv2D(c_in, c_out, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
               groups=groups, bias=False, rng=rng),
        BatchNorm2D(c_out),
        act(),
    )


class InvertedResidual(Module):
    """MobileNet v2 block: ``y = x + conv(x)`` when stride is 1 and channels match, else
    ``y = conv(x)``; ``conv`` = [1x1 expand, ReLU6] -> depthwise 3x3, ReLU6 -> 1x1 project.

    Backward: dL/dx = conv.backward(g) (+ g with the residual connection).
    """

    def __init__(
        self, c_in: int, c_out: int, stride: int, expand_ratio: int, rng: np.random.Generator
    ) -> None:
        super().__init__()
        hidden = int(round(c_in * expand_ratio))
        layers: list[Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(c_in, hidden, 1, 1, 1, ReLU6, rng))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, hidden, ReLU6, rng),
            Conv2D(hidden, c_out, 1, bias=False, rng=rng),
            BatchNorm2D(c_out),
        ]
        self.conv = Sequential(*layers)
        self.use_res_connect = stride == 1 and c_in == c_out

    def forward(self, x: Any) -> Any:
        y = self.conv(x)
        return x + y if self.use_res_connect else y

    def backward(self, grad_out: Any) -> Any:
        dx = self.conv.backward(grad_out)
        return dx + grad_out if self.use_res_connect else dx

    def extra_repr(self) -> str:
        return f"residual={self.use_res_connect}"


# (expansion t, channels c, repeats n, first stride s), the paper's table 2
V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2(
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_channels: int = 3,
    dropout: float = 0.2,
    small_inputs: bool = False,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """MobileNet v2 (torchvision's layout); ``small_inputs`` = the CIFAR variant."""
    rng = _rng(seed)
    c = make_divisible(32 * width_mult)
    last = make_divisible(1280 * max(1.0, width_mult))
    # for 32x32 inputs the stem and the second stage keep full resolution
    stem_stride = 1 if small_inputs else 2
    features: list[Module] = [conv_bn_act(in_channels, c, 3, stem_stride, 1, ReLU6, rng)]
    for i, (t, channels, n, s) in enumerate(V2_SETTINGS):
        c_out = make_divisible(channels * width_mult)
        first_stride = 1 if (small_inputs and i == 1) else s
        for j in range(n):
            features.append(InvertedResidual(c, c_out, first_stride if j == 0 else 1, t, rng))
            c = c_out
    features.append(conv_bn_act(c, last, 1, 1, 1, ReLU6, rng))
    return Sequential(OrderedDict(
        features=Sequential(*features),
        avgpool=AdaptiveAvgPool2D(1),
        flatten=Flatten(),
        classifier=Sequential(Dropout(dropout, seed=_child_seed(rng)),
                              Affine(last, num_classes, init="xavier_uniform", rng=rng)),
    ))


def mobilenet_v2_cifar(
    num_classes: int = 10, width_mult: float = 1.0, seed: int | np.random.Generator | None = None
) -> Sequential:
    """MobileNet v2 for 32x32 images: stride 1 in the stem and in the 24-channel stage."""
    return mobilenet_v2(num_classes, width_mult, small_inputs=True, seed=seed)


# (output channels, stride) of the 13 depthwise separable blocks
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def mobilenet_v1(
    num_classes: int = 1000,
    width_mult: float = 1.0,
    in_channels: int = 3,
    small_inputs: bool = False,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """MobileNet v1: a 3x3 conv then 13 ``depthwise 3x3 -> pointwise 1x1`` blocks.

    Keys: ``features.0`` is the stem, ``features.i`` (i >= 1) a block whose children 0-2 are
    the depthwise conv, BN, ReLU and 3-5 the pointwise conv, BN, ReLU; ``fc`` the Affine.
    """
    rng = _rng(seed)
    c = int(32 * width_mult)
    features: list[Module] = [conv_bn_act(in_channels, c, 3, 1 if small_inputs else 2, 1,
                                          ReLU, rng)]
    for channels, stride in V1_BLOCKS:
        c_out = int(channels * width_mult)
        dw = conv_bn_act(c, c, 3, stride, c, ReLU, rng)
        pw = conv_bn_act(c, c_out, 1, 1, 1, ReLU, rng)
        features.append(Sequential(*dw, *pw))
        c = c_out
    return Sequential(OrderedDict(
        features=Sequential(*features),
        avgpool=AdaptiveAvgPool2D(1),
        flatten=Flatten(),
        fc=Affine(c, num_classes, init="xavier_uniform", rng=rng),
    ))


def mobilenet_v1_cifar(
    num_classes: int = 10, width_mult: float = 1.0, seed: int | np.random.Generator | None = None
) -> Sequential:
    """MobileNet v1 for 32x32 images: stem stride 1, so the last map is 2x2."""
    return mobilenet_v1(num_classes, width_mult, small_inputs=True, seed=seed)
