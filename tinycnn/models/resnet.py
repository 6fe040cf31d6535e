"""ImageNet ResNets (He et al. 2016) and ResNeXt (Xie et al. 2017), torchvision's layout.

A 7x7/2 convolution, BatchNorm, ReLU and a 3x3/2 max-pool, then four stages of residual
blocks with 64, 128, 256 and 512 base channels (the first block of stages 2-4 has
stride 2 and a 1x1 convolution + BatchNorm projection shortcut, torchvision's
``downsample``), global average pooling and one Affine layer. The stride of a bottleneck
sits on its 3x3 convolution ("ResNet v1.5", as in torchvision).

Parameters for 1000 classes, torchvision's counts: ResNet-18 11,689,512, ResNet-34
21,797,672, ResNet-50 25,557,032, ResNeXt-50 32x4d 25,028,904. State-dict keys are
torchvision's (``conv1.weight``, ``layer1.0.bn2.running_var``, ``layer2.0.downsample.0.weight``,
``fc.weight``, ``num_batches_tracked`` included), so a torchvision state dict converted to
NumPy arrays loads with ``load_state_dict``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from tinycnn.containers import Sequential
from tinycnn.layers.activation import ReLU
from tinycnn.layers.adaptive_pool import AdaptiveAvgPool2D
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.pool import MaxPool2D
from tinycnn.layers.shape import Flatten
from tinycnn.models.small import _rng
from tinycnn.module import LayerInputError, Module


class _Block(Module):
    """Shared wiring: ``y = relu(main(x) + shortcut(x))``; subclasses list the main path.

    Backward, with g = dL/dy masked by the final ReLU:
    dL/dx = main.backward(g) + (downsample.backward(g) or g).
    """

    def _main_path(self) -> list[Module]:
        raise NotImplementedError

    def forward(self, x: Any) -> Any:
        out = x
        for layer in self._main_path():
            out = layer(out)
        skip = x if self.downsample is None else self.downsample(x)
        if out.shape != skip.shape:
            raise LayerInputError(
                f"{self._name()}: main path gives {tuple(out.shape)} but the shortcut gives "
                f"{tuple(skip.shape)} (input {tuple(x.shape)})"
            )
        return self.relu_out(out + skip)

    def backward(self, grad_out: Any) -> Any:
        g = self.relu_out.backward(grad_out)
        d_main = g
        for layer in reversed(self._main_path()):
            d_main = layer.backward(d_main)
        d_skip = g if self.downsample is None else self.downsample.backward(g)
        return d_main + d_skip


class BasicBlock(_Block):
    """Two 3x3 convolutions: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    expansion = 1

    def __init__(
        self, in_channels: int, planes: int, stride: int, downsample: Module | None,
        rng: np.random.Generator, groups: int = 1, base_width: int = 64,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = Conv2D(in_channels, planes, 3, stride=stride, padding=1, bias=False, rng=rng)
        self.bn1 = BatchNorm2D(planes)
        self.relu = ReLU()
        self.conv2 = Conv2D(planes, planes, 3, padding=1, bias=False, rng=rng)
        self.bn2 = BatchNorm2D(planes)
        self.downsample = downsample
        self.relu_out = ReLU()

    def _main_path(self) -> list[Module]:
        return [self.conv1, self.bn1, self.relu, self.conv2, self.bn2]


class Bottleneck(_Block):
    """1x1 reduce, 3x3 (stride, ``groups``), 1x1 expand to ``4 * planes``, plus shortcut.

    The middle width is ``planes * base_width / 64 * groups`` (ResNeXt 32x4d: 32 groups of 4
    channels per 64 planes).
    """

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int, downsample: Module | None,
        rng: np.random.Generator, groups: int = 1, base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out = planes * self.expansion
        self.conv1 = Conv2D(in_channels, width, 1, bias=False, rng=rng)
        self.bn1 = BatchNorm2D(width)
        self.relu1 = ReLU()
        self.conv2 = Conv2D(width, width, 3, stride=stride, padding=1, groups=groups,
                            bias=False, rng=rng)
        self.bn2 = BatchNorm2D(width)
        self.relu2 = ReLU()
        self.conv3 = Conv2D(width, out, 1, bias=False, rng=rng)
        self.bn3 = BatchNorm2D(out)
        self.downsample = downsample
        self.relu_out = ReLU()

    def _main_path(self) -> list[Module]:
        return [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2, self.relu2,
                self.conv3, self.bn3]


def _stage(
    block: type[_Block], in_channels: int, planes: int, blocks: int, stride: int,
    rng: np.random.Generator, groups: int, base_width: int,
) -> tuple[Sequential, int]:
    out = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out:
        downsample = Sequential(
            Conv2D(in_channels, out, 1, stride=stride, bias=False, rng=rng), BatchNorm2D(out)
        )
    layers = [block(in_channels, planes, stride, downsample, rng, groups, base_width)]
    layers += [block(out, planes, 1, None, rng, groups, base_width) for _ in range(blocks - 1)]
    return Sequential(*layers), out


def resnet(
    block: type[_Block],
    layers: tuple[int, int, int, int],
    num_classes: int = 1000,
    in_channels: int = 3,
    groups: int = 1,
    width_per_group: int = 64,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """A torchvision-layout ResNet with ``layers[i]`` blocks in stage ``i``.

    Any input of at least 32x32 works (the adaptive pool absorbs the final map size).
    """
    rng = _rng(seed)
    stem: list[tuple[str, Module]] = [
        ("conv1", Conv2D(in_channels, 64, 7, stride=2, padding=3, bias=False, rng=rng)),
        ("bn1", BatchNorm2D(64)),
        ("relu", ReLU()),
        ("maxpool", MaxPool2D(3, 2, padding=1)),
    ]
    stages = []
    c = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
        stage, c = _stage(block, c, planes, n, 1 if i == 0 else 2, rng, groups, width_per_group)
        stages.append((f"layer{i + 1}", stage))
    head = [
        ("avgpool", AdaptiveAvgPool2D(1)),
        ("flatten", Flatten()),
        ("fc", Affine(c, num_classes, init="xavier_uniform", rng=rng)),
    ]
    return Sequential(OrderedDict(stem + stages + head))


def resnet18(num_classes: int = 1000, in_channels: int = 3,
             seed: int | np.random.Generator | None = None) -> Sequential:
    """ResNet-18: basic blocks (2, 2, 2, 2)."""
    return resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, seed=seed)


def resnet34(num_classes: int = 1000, in_channels: int = 3,
             seed: int | np.random.Generator | None = None) -> Sequential:
    """ResNet-34: basic blocks (3, 4, 6, 3)."""
    return resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, seed=seed)


def resnet50(num_classes: int = 1000, in_channels: int = 3,
             seed: int | np.random.Generator | None = None) -> Sequential:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3)."""
    return resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, seed=seed)


def resnext50_32x4d(num_classes: int = 1000, in_channels: int = 3,
                    seed: int | np.random.Generator | None = None) -> Sequential:
    """ResNeXt-50 32x4d: bottlenecks (3, 4, 6, 3) whose 3x3 conv has 32 groups of 4."""
    return resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, groups=32,
                  width_per_group=4, seed=seed)
