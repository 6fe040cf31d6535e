"""GoogLeNet / Inception v1 (Szegedy et al. 2015) in torchvision's layout.

Nine Inception modules, each four parallel branches joined along channels
(:class:`~tinycnn.containers.Concat`): 1x1; 1x1 -> 3x3; 1x1 -> "5x5"; 3x3 max-pool -> 1x1.
As in torchvision, the "5x5" branch uses a 3x3 kernel and every convolution is
conv (no bias) -> BatchNorm (eps 0.001) -> ReLU, so its weights and state-dict keys
(``conv1.conv.weight``, ``inception3a.branch2.1.bn.running_mean``, ``aux1.fc2.weight``)
carry over. Parameters for 1000 classes: 13,004,888 with the auxiliary classifiers,
6,624,904 without (``aux_logits=False``), torchvision's counts.

Auxiliary classifiers (after inception4a and inception4d) run only in training mode. Then
``forward`` returns :class:`GoogLeNetOutputs` ``(logits, aux_logits2, aux_logits1)``, the
same namedtuple torchvision returns, and ``backward`` takes the three gradients in that
order (a ``None`` entry, or a plain array for the main output alone, means zero for the
auxiliary heads). The paper's training loss is ``L(logits) + 0.3 * (L(aux1) + L(aux2))``.
In eval mode, or with ``aux_logits=False``, ``forward`` returns the logits array alone.

The max-pools between stages use ``ceil_mode=True``, as torchvision's do.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

from tinycnn.containers import Concat, Sequential
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


class GoogLeNetOutputs(NamedTuple):
    """Training-mode outputs of :class:`GoogLeNet` (torchvision's order)."""

    logits: Any
    aux_logits2: Any
    aux_logits1: Any


def basic_conv(
    c_in: int, c_out: int, kernel_size: int, rng: np.random.Generator, stride: int = 1,
    padding: int = 0,
) -> Sequential:
    """torchvision's ``BasicConv2d``: conv (no bias) -> BatchNorm2D(eps=0.001) -> ReLU."""
    return Sequential(OrderedDict(
        conv=Conv2D(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False,
                    rng=rng),
        bn=BatchNorm2D(c_out, eps=0.001),
        relu=ReLU(),
    ))


def ceil_max_pool(kernel_size: int, stride: int) -> MaxPool2D:
    """Max-pool with PyTorch's ``ceil_mode=True`` (torchvision's pools between stages)."""
    return MaxPool2D(kernel_size, stride, ceil_mode=True)


def inception(
    c_in: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
    pool_proj: int, rng: np.random.Generator,
) -> Concat:
    """An Inception module: ``(N, c_in, H, W) -> (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)``."""
    return Concat(OrderedDict(
        branch1=basic_conv(c_in, ch1x1, 1, rng),
        branch2=Sequential(basic_conv(c_in, ch3x3red, 1, rng),
                           basic_conv(ch3x3red, ch3x3, 3, rng, padding=1)),
        branch3=Sequential(basic_conv(c_in, ch5x5red, 1, rng),
                           basic_conv(ch5x5red, ch5x5, 3, rng, padding=1)),
        branch4=Sequential(MaxPool2D(3, 1, padding=1), basic_conv(c_in, pool_proj, 1, rng)),
    ))


def inception_aux(c_in: int, num_classes: int, rng: np.random.Generator) -> Sequential:
    """Auxiliary head: 4x4 average pool, 1x1 conv to 128, FC 2048 -> 1024, dropout 0.7, FC."""
    return Sequential(OrderedDict(
        avgpool=AdaptiveAvgPool2D(4),
        conv=basic_conv(c_in, 128, 1, rng),
        flatten=Flatten(),
        fc1=Affine(2048, 1024, rng=rng),
        relu=ReLU(),
        dropout=Dropout(0.7, seed=_child_seed(rng)),
        fc2=Affine(1024, num_classes, init="xavier_uniform", rng=rng),
    ))


# the trunk in order; the auxiliary heads read the outputs of these stages
_TRUNK = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
          "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d",
          "inception4e", "maxpool4", "inception5a", "inception5b", "avgpool", "flatten",
          "dropout", "fc")
_TAPS = {"inception4a": "aux1", "inception4d": "aux2"}


class GoogLeNet(Module):
    """Inception v1 for ``(N, in_channels, H, W)`` images, ``H, W >= 32`` (224 as published).

    Backward: the trunk's layers in reverse; at inception4a and inception4d the auxiliary
    heads' input gradients are added to the trunk's (the map fans out to both).
    """

    def __init__(
        self, num_classes: int = 1000, aux_logits: bool = True, in_channels: int = 3,
        dropout: float = 0.2, dropout_aux: float = 0.7,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        rng = _rng(seed)
        self.aux_logits = aux_logits
        self.conv1 = basic_conv(in_channels, 64, 7, rng, stride=2, padding=3)
        self.maxpool1 = ceil_max_pool(3, 2)
        self.conv2 = basic_conv(64, 64, 1, rng)
        self.conv3 = basic_conv(64, 192, 3, rng, padding=1)
        self.maxpool2 = ceil_max_pool(3, 2)
        self.inception3a = inception(192, 64, 96, 128, 16, 32, 32, rng)
        self.inception3b = inception(256, 128, 128, 192, 32, 96, 64, rng)
        self.maxpool3 = ceil_max_pool(3, 2)
        self.inception4a = inception(480, 192, 96, 208, 16, 48, 64, rng)
        self.inception4b = inception(512, 160, 112, 224, 24, 64, 64, rng)
        self.inception4c = inception(512, 128, 128, 256, 24, 64, 64, rng)
        self.inception4d = inception(512, 112, 144, 288, 32, 64, 64, rng)
        self.inception4e = inception(528, 256, 160, 320, 32, 128, 128, rng)
        self.maxpool4 = ceil_max_pool(2, 2)
        self.inception5a = inception(832, 256, 160, 320, 32, 128, 128, rng)
        self.inception5b = inception(832, 384, 192, 384, 48, 128, 128, rng)
        if aux_logits:
            self.aux1 = inception_aux(512, num_classes, rng)
            self.aux2 = inception_aux(528, num_classes, rng)
            self.aux1.dropout.p = float(dropout_aux)
            self.aux2.dropout.p = float(dropout_aux)
        self.avgpool = AdaptiveAvgPool2D(1)
        self.flatten = Flatten()
        self.dropout = Dropout(dropout, seed=_child_seed(rng))
        self.fc = Affine(1024, num_classes, init="xavier_uniform", rng=rng)
        self.ran_aux = None

    def _aux_active(self) -> bool:
        return self.aux_logits and self.training

    def forward(self, x: Any) -> Any:
        aux = {}
        for name in _TRUNK:
            x = getattr(self, name)(x)
            if name in _TAPS and self._aux_active():
                aux[_TAPS[name]] = getattr(self, _TAPS[name])(x)
        self.ran_aux = bool(aux)
        if aux:
            return GoogLeNetOutputs(x, aux["aux2"], aux["aux1"])
        return x

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.ran_aux)
        if isinstance(grad_out, tuple):
            g, g_aux2, g_aux1 = grad_out
        else:
            g, g_aux2, g_aux1 = grad_out, None, None
        if not self.ran_aux and (g_aux1 is not None or g_aux2 is not None):
            raise ValueError(
                "GoogLeNet.backward got gradients for the auxiliary heads, but the last "
                "forward did not run them (eval mode or aux_logits=False)"
            )
        aux_grads = {"aux1": g_aux1, "aux2": g_aux2}
        for name in reversed(_TRUNK):
            if name in _TAPS and aux_grads[_TAPS[name]] is not None:
                g = g + getattr(self, _TAPS[name]).backward(aux_grads[_TAPS[name]])
            g = getattr(self, name).backward(g)
        return g

    def _clear_cache(self) -> None:
        self.ran_aux = None

    def extra_repr(self) -> str:
        return f"aux_logits={self.aux_logits}"


def googlenet(
    num_classes: int = 1000, aux_logits: bool = True, in_channels: int = 3,
    seed: int | np.random.Generator | None = None,
) -> GoogLeNet:
    """Inception v1 (see :class:`GoogLeNet` for what training mode returns)."""
    return GoogLeNet(num_classes, aux_logits, in_channels, seed=seed)
