"""AlexNet (Krizhevsky et al. 2012): torchvision's single-tower form and the paper's own.

Five convolutions (64, 192, 384, 256, 256 filters; no LocalResponseNorm, as in
torchvision), three max-pools, an adaptive average pool to 6x6 (so any input of at least
63x63 works), and three fully connected layers with dropout: 61,100,840 parameters for
1000 classes, torchvision's count. State-dict keys are torchvision's (``features.0.weight``,
``classifier.1.weight``, ...), so its weights load with ``load_state_dict``.

:func:`alexnet_paper` is the network of the paper, which torchvision simplifies: 96
filters of 11x11 stride 4 in the first layer, Local Response Normalization after the
first two layers, overlapping 3x3/2 max-pooling, and the paper's two GPU towers as
grouped convolutions (``groups=2``) in layers 2, 4 and 5, where each filter sees only its
own tower's channels (5x5x48, 3x3x192, 3x3x192); layer 3 and the fully connected layers
see both towers. Dropout 0.5 follows the first two fully connected layers. 60,965,224
parameters for 1000 classes. :func:`alexnet_paper_cifar` keeps every one of these
ingredients at the size of 32x32 images.
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
from tinycnn.layers.lrn import LocalResponseNorm
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


def _paper_lrn() -> LocalResponseNorm:
    """The paper's normalization: n = 5, k = 2, alpha = 1e-4, beta = 0.75. The paper adds
    ``alpha * sum(a^2)``, PyTorch's formula ``alpha / n * sum(a^2)``: alpha is 5 * 1e-4 here."""
    return LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def _paper_init(model: Sequential, rng: np.random.Generator, ones: tuple[str, ...]) -> None:
    """The paper's initialization: weights N(0, 0.01^2); biases 1 in the layers named in
    ``ones`` (conv 2, 4, 5 and the hidden FC layers: ReLUs start positive), 0 elsewhere."""
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            p.data[...] = rng.normal(0.0, 0.01, p.shape)
        else:
            p.data[...] = 1.0 if name.rsplit(".", 1)[0] in ones else 0.0


def alexnet_paper(
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.5,
    paper_init: bool = False,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """AlexNet as in the paper, for ``(N, in_channels, 224, 224)`` images.

    ``features``: conv 96 11x11/4 (padding 2: 224 -> 55, the paper's 55x55x96) -> ReLU ->
    LRN -> max-pool 3x3/2 -> conv 256 5x5 (groups 2) -> ReLU -> LRN -> max-pool 3x3/2 ->
    conv 384 3x3 -> ReLU -> conv 384 3x3 (groups 2) -> ReLU -> conv 256 3x3 (groups 2) ->
    ReLU -> max-pool 3x3/2, leaving 6x6x256. ``classifier``: FC 4096 -> ReLU -> dropout ->
    FC 4096 -> ReLU -> dropout -> FC ``num_classes``.

    60,965,224 parameters for 1000 classes (torchvision's single-tower ``alexnet`` has
    61,100,840). ``paper_init=True`` initializes as the paper did (weights N(0, 0.01^2),
    biases 1 in conv 2, 4, 5 and the hidden FC layers, else 0) instead of He's.
    """
    rng = _rng(seed)
    features = Sequential(
        Conv2D(in_channels, 96, 11, stride=4, padding=2, rng=rng), ReLU(), _paper_lrn(),
        MaxPool2D(3, 2),
        Conv2D(96, 256, 5, padding=2, groups=2, rng=rng), ReLU(), _paper_lrn(),
        MaxPool2D(3, 2),
        Conv2D(256, 384, 3, padding=1, rng=rng), ReLU(),
        Conv2D(384, 384, 3, padding=1, groups=2, rng=rng), ReLU(),
        Conv2D(384, 256, 3, padding=1, groups=2, rng=rng), ReLU(), MaxPool2D(3, 2),
    )
    classifier = Sequential(
        Affine(256 * 6 * 6, 4096, rng=rng), ReLU(), Dropout(dropout, seed=_child_seed(rng)),
        Affine(4096, 4096, rng=rng), ReLU(), Dropout(dropout, seed=_child_seed(rng)),
        Affine(4096, num_classes, init="xavier_normal", rng=rng),
    )
    model = Sequential(OrderedDict(features=features, flatten=Flatten(), classifier=classifier))
    if paper_init:
        _paper_init(model, rng, ("features.4", "features.10", "features.12", "classifier.0",
                                 "classifier.3"))
    return model


def alexnet_paper_cifar(
    num_classes: int = 10,
    in_channels: int = 3,
    dropout: float = 0.5,
    seed: int | np.random.Generator | None = None,
) -> Sequential:
    """:func:`alexnet_paper` for ``(N, in_channels, 32, 32)`` images, every ingredient kept.

    conv 64 5x5 -> ReLU -> LRN -> max-pool 3x3/2 (32 -> 15) -> conv 128 5x5 (groups 2) ->
    ReLU -> LRN -> max-pool 3x3/2 (-> 7) -> conv 192 3x3 -> conv 192 3x3 (groups 2) ->
    conv 128 3x3 (groups 2), each with ReLU -> max-pool 3x3/2 (-> 3); FC 512 -> FC 256
    (ReLU and dropout after each) -> FC ``num_classes``: 1,329,802 parameters for 10 classes.
    """
    rng = _rng(seed)
    features = Sequential(
        Conv2D(in_channels, 64, 5, padding=2, rng=rng), ReLU(), _paper_lrn(), MaxPool2D(3, 2),
        Conv2D(64, 128, 5, padding=2, groups=2, rng=rng), ReLU(), _paper_lrn(),
        MaxPool2D(3, 2),
        Conv2D(128, 192, 3, padding=1, rng=rng), ReLU(),
        Conv2D(192, 192, 3, padding=1, groups=2, rng=rng), ReLU(),
        Conv2D(192, 128, 3, padding=1, groups=2, rng=rng), ReLU(), MaxPool2D(3, 2),
    )
    classifier = Sequential(
        Affine(128 * 3 * 3, 512, rng=rng), ReLU(), Dropout(dropout, seed=_child_seed(rng)),
        Affine(512, 256, rng=rng), ReLU(), Dropout(dropout, seed=_child_seed(rng)),
        Affine(256, num_classes, init="xavier_normal", rng=rng),
    )
    return Sequential(OrderedDict(features=features, flatten=Flatten(), classifier=classifier))
