"""Network in Network (Lin, Chen and Yan 2014), the ImageNet form of *Dive into Deep
Learning* (sec. 8.3).

Four NiN blocks, each a spatial convolution followed by two 1x1 convolutions ("mlpconv"),
all with ReLU: 96 filters 11x11 stride 4, 256 5x5, 384 3x3, then ``num_classes`` 3x3;
3x3/2 max-pools between them, dropout 0.5 before the last block, and global average
pooling instead of fully connected layers. There is no torchvision NiN; the parameter count
is that of this layout: 7,439,608 for 1000 classes (1,992,166 for d2l's
Fashion-MNIST variant: one input channel, 10 classes).
"""

from __future__ import annotations

import numpy as np

from tinycnn.containers import Sequential
from tinycnn.layers.activation import ReLU
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.dropout import Dropout
from tinycnn.layers.pool import GlobalAvgPool2D, MaxPool2D
from tinycnn.models.small import _child_seed, _rng


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
    rng: np.random.Generator,
) -> Sequential:
    """``conv k x k -> ReLU -> conv 1x1 -> ReLU -> conv 1x1 -> ReLU``."""
    return Sequential(
        Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=padding, rng=rng),
        ReLU(),
        Conv2D(out_channels, out_channels, 1, rng=rng), ReLU(),
        Conv2D(out_channels, out_channels, 1, rng=rng), ReLU(),
    )


def nin(
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.5,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """NiN for ``(N, in_channels, H, W)`` images, ``H, W >= 67`` (224 as published)."""
    rng = _rng(seed)
    return Sequential(
        nin_block(in_channels, 96, 11, 4, 0, rng), MaxPool2D(3, 2),
        nin_block(96, 256, 5, 1, 2, rng), MaxPool2D(3, 2),
        nin_block(256, 384, 3, 1, 1, rng), MaxPool2D(3, 2),
        Dropout(dropout, seed=_child_seed(rng)),
        nin_block(384, num_classes, 3, 1, 1, rng),
        GlobalAvgPool2D(),
    )
