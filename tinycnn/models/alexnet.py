"""AlexNet (Krizhevsky et al. 2012) in torchvision's single-tower form.

Five convolutions (64, 192, 384, 256, 256 filters; no LocalResponseNorm, as in
torchvision), three max-pools, an adaptive average pool to 6x6 (so any input of at least
63x63 works), and three fully connected layers with dropout: 61,100,840 parameters for
1000 classes, torchvision's count. State-dict keys are torchvision's (``features.0.weight``,
``classifier.1.weight``, ...), so its weights load with ``load_state_dict``.
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
from tinycnn.layers.pool import MaxPool2D
from tinycnn.layers.shape import Flatten
from tinycnn.models.small import _child_seed, _rng


def alexnet(
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.5,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """AlexNet for ``(N, in_channels, H, W)`` images, ``H, W >= 63`` (224 as published)."""
    rng = _rng(seed)
    features = Sequential(
        Conv2D(in_channels, 64, 11, stride=4, padding=2, rng=rng), ReLU(), MaxPool2D(3, 2),
        Conv2D(64, 192, 5, padding=2, rng=rng), ReLU(), MaxPool2D(3, 2),
        Conv2D(192, 384, 3, padding=1, rng=rng), ReLU(),
        Conv2D(384, 256, 3, padding=1, rng=rng), ReLU(),
        Conv2D(256, 256, 3, padding=1, rng=rng), ReLU(), MaxPool2D(3, 2),
    )
    classifier = Sequential(
        Dropout(dropout, seed=_child_seed(rng)), Affine(256 * 6 * 6, 4096, rng=rng), ReLU(),
        Dropout(dropout, seed=_child_seed(rng)), Affine(4096, 4096, rng=rng), ReLU(),
        Affine(4096, num_classes, init="xavier_normal", rng=rng),
    )
    return Sequential(OrderedDict(
        features=features, avgpool=AdaptiveAvgPool2D(6), flatten=Flatten(), classifier=classifier,
    ))
