"""DenseNet (Huang et al. 2017): DenseNet-121 in torchvision's layout, and a small CIFAR one.

Each dense layer is ``BN -> ReLU -> conv 1x1 (bn_size * k) -> BN -> ReLU -> conv 3x3 (k)``
and its ``k`` new channels are *concatenated* to its input; transitions
(``BN -> ReLU -> conv 1x1 -> 2x2 average pool``) halve the channels and the map size.
DenseNet-121 (k = 32, blocks of 6, 12, 24, 16 layers): 7,978,856 parameters for 1000
classes, torchvision's count, with its state-dict keys (``features.denseblock1.denselayer1
.conv1.weight``, ``features.transition1.norm.weight``, ``classifier.weight``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.containers import Sequential
from tinycnn.layers.activation import ReLU
from tinycnn.layers.adaptive_pool import AdaptiveAvgPool2D
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.pool import AvgPool2D, MaxPool2D
from tinycnn.layers.shape import Flatten
from tinycnn.models.small import _rng
from tinycnn.module import Module


class DenseLayer(Sequential):
    """``y = concat([x, body(x)], axis=1)``; the body is this Sequential's children.

    Shapes: ``(N, C, H, W) -> (N, C + growth_rate, H, W)``.

    Backward, splitting g = dL/dy into ``g_x`` (first C channels) and ``g_new``:
    dL/dx = g_x + body.backward(g_new).
    """

    def __init__(
        self, in_channels: int, growth_rate: int, bn_size: int, rng: np.random.Generator
    ) -> None:
        inner = bn_size * growth_rate
        super().__init__(OrderedDict(
            norm1=BatchNorm2D(in_channels),
            relu1=ReLU(),
            conv1=Conv2D(in_channels, inner, 1, bias=False, rng=rng),
            norm2=BatchNorm2D(inner),
            relu2=ReLU(),
            conv2=Conv2D(inner, growth_rate, 3, padding=1, bias=False, rng=rng),
        ))
        self.in_channels = in_channels
        self.ran = None

    def forward(self, x: Any) -> Any:
        new = super().forward(x)
        self.ran = True
        return backend.get_array_module(x).concatenate([x, new], axis=1)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.ran)
        xp = backend.get_array_module(grad_out)
        c = self.in_channels
        d_new = super().backward(xp.ascontiguousarray(grad_out[:, c:]))
        return grad_out[:, :c] + d_new

    def _clear_cache(self) -> None:
        self.ran = None


def _transition(in_channels: int, out_channels: int, rng: np.random.Generator) -> Sequential:
    return Sequential(OrderedDict(
        norm=BatchNorm2D(in_channels),
        relu=ReLU(),
        conv=Conv2D(in_channels, out_channels, 1, bias=False, rng=rng),
        pool=AvgPool2D(2, 2),
    ))


def densenet(
    growth_rate: int = 32,
    block_config: tuple[int, ...] = (6, 12, 24, 16),
    num_init_features: int = 64,
    bn_size: int = 4,
    num_classes: int = 1000,
    in_channels: int = 3,
    small_inputs: bool = False,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """A DenseNet with ``block_config[i]`` dense layers in block ``i``.

    ``small_inputs=False``: the ImageNet stem (7x7/2 conv, 3x3/2 max-pool);
    ``small_inputs=True``: one 3x3 conv (for 32x32 images).
    """
    rng = _rng(seed)
    if small_inputs:
        stem: list[tuple[str, Module]] = [
            ("conv0", Conv2D(in_channels, num_init_features, 3, padding=1, bias=False, rng=rng)),
        ]
    else:
        stem = [
            ("conv0", Conv2D(in_channels, num_init_features, 7, stride=2, padding=3, bias=False,
                             rng=rng)),
            ("norm0", BatchNorm2D(num_init_features)),
            ("relu0", ReLU()),
            ("pool0", MaxPool2D(3, 2, padding=1)),
        ]
    parts = stem
    c = num_init_features
    for i, n in enumerate(block_config):
        layers = OrderedDict()
        for j in range(n):
            layers[f"denselayer{j + 1}"] = DenseLayer(c + j * growth_rate, growth_rate, bn_size,
                                                      rng)
        parts.append((f"denseblock{i + 1}", Sequential(layers)))
        c += n * growth_rate
        if i != len(block_config) - 1:
            parts.append((f"transition{i + 1}", _transition(c, c // 2, rng)))
            c //= 2
    parts.append(("norm5", BatchNorm2D(c)))
    return Sequential(OrderedDict(
        features=Sequential(OrderedDict(parts)),
        relu=ReLU(),
        avgpool=AdaptiveAvgPool2D(1),
        flatten=Flatten(),
        classifier=Affine(c, num_classes, init="xavier_uniform", rng=rng),
    ))


def densenet121(num_classes: int = 1000, in_channels: int = 3,
                seed: int | np.random.Generator | None = None) -> Sequential:
    """DenseNet-121: k = 32, blocks (6, 12, 24, 16), 64 initial features."""
    return densenet(32, (6, 12, 24, 16), 64, 4, num_classes, in_channels, seed=seed)


def densenet_cifar(
    num_classes: int = 10, in_channels: int = 3, growth_rate: int = 12,
    block_config: tuple[int, ...] = (4, 4, 4), seed: int | np.random.Generator | None = None,
) -> Sequential:
    """A small DenseNet-BC for 32x32 images: 3x3 stem, 2 * k initial features, three blocks."""
    return densenet(growth_rate, block_config, 2 * growth_rate, 4, num_classes, in_channels,
                    small_inputs=True, seed=seed)
