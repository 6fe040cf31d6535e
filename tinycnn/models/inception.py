"""Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture") in
torchvision's layout.

What the paper changes against Inception v1 (:mod:`tinycnn.models.googlenet`):

* **Factorized convolutions.** A 5x5 convolution becomes two 3x3 ones (the same receptive
  field for 18/25 of the multiply-adds, ``InceptionA``'s ``branch3x3dbl``), and an ``n x n``
  one becomes ``1 x n`` followed by ``n x 1`` (``InceptionC``, n = 7: 14/49 of the cost);
  ``InceptionE`` splits its 3x3 outputs into parallel ``1 x 3`` and ``3 x 1`` halves that are
  concatenated (wider, for the 8x8 grid).
* **Efficient grid-size reduction.** Instead of a pooling that loses information (or an
  expansion before it that costs 3x), ``InceptionB`` and ``InceptionD`` run stride-2
  convolutions and a stride-2 max-pool side by side and concatenate them: 35x35x288 ->
  17x17x768 -> 8x8x1280.
* **An auxiliary classifier** on the 17x17 grid (``AuxLogits``), which the paper finds acts
  as a regularizer (with BatchNorm), and **label smoothing** in the loss
  (``SoftmaxCrossEntropy(label_smoothing=0.1)``).

Every convolution is torchvision's ``BasicConv2d``: conv (no bias) -> BatchNorm (eps
0.001) -> ReLU. Module names and state-dict keys are torchvision's
(``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``,
``Mixed_7b.branch3x3_2a.conv.weight``, ``AuxLogits.fc.weight``, ``fc.weight``), so its
``inception_v3`` weights load with ``load_state_dict``; 27,161,264 parameters for 1000
classes with the auxiliary head, 23,834,568 without, torchvision's counts.
(torchvision's pretrained weights expect its ``transform_input`` rescaling of the input,
which is not part of this model: normalize the images as those weights expect.)

Input: 299x299 as published; the trunk works from 75x75 up, the auxiliary head needs a
17x17 grid at ``Mixed_6e`` (inputs from 299x299). In training mode with ``aux_logits``,
``forward`` returns :class:`InceptionOutputs` ``(logits, aux_logits)`` (torchvision's order)
and ``backward`` takes the two gradients; otherwise the logits alone.

The paper's training recipe, from the :class:`~tinycnn.trainer.Trainer`::

    from tinycnn import Trainer, models
    from tinycnn.losses import SoftmaxCrossEntropy
    from tinycnn.optim import RMSProp
    from tinycnn.schedules import StepLR

    model = models.inception_v3(num_classes=1000)
    # RMSProp with decay 0.9 and epsilon 1.0, learning rate 0.045, gradients clipped at 2.0
    opt = RMSProp(model, lr=0.045, alpha=0.9, eps=1.0, max_grad_norm=2.0)
    sched = StepLR(opt, step_size=2, gamma=0.94)        # x0.94 every two epochs
    loss = SoftmaxCrossEntropy(label_smoothing=0.1)     # label smoothing 0.1
    trainer = Trainer(model, loss, opt, sched, aux_weight=0.4)  # torchvision's aux weight

(The paper trained with batch 32 on 50 replicas; it states no auxiliary-loss weight,
0.4 is the one torchvision's reference training uses.)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

from tinycnn import backend
from tinycnn.containers import Sequential
from tinycnn.layers.activation import ReLU
from tinycnn.layers.adaptive_pool import AdaptiveAvgPool2D
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.dropout import Dropout
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.pool import AvgPool2D, MaxPool2D
from tinycnn.layers.shape import Flatten
from tinycnn.models.small import _child_seed, _rng
from tinycnn.module import Module

Pair = int | tuple[int, int]


class InceptionOutputs(NamedTuple):
    """Training-mode outputs of :class:`Inception3` (torchvision's order)."""

    logits: Any
    aux_logits: Any


def basic_conv(c_in: int, c_out: int, kernel_size: Pair, rng: np.random.Generator,
               stride: int = 1, padding: Pair = 0) -> Sequential:
    """torchvision's ``BasicConv2d``: conv (no bias) -> BatchNorm2D(eps=0.001) -> ReLU."""
    return Sequential(OrderedDict(
        conv=Conv2D(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False,
                    rng=rng),
        bn=BatchNorm2D(c_out, eps=0.001),
        relu=ReLU(),
    ))


class _Branches(Module):
    """Parallel branches over one input, concatenated along channels.

    ``branches`` lists each branch as steps; a step is the name of a child module, or a
    tuple of names whose outputs (of the same input) are concatenated (InceptionE's split
    ``1x3 | 3x1``). The children are attributes with torchvision's names, so the state-dict
    keys are flat: ``Mixed_7b.branch3x3_2a.conv.weight``.

    Backward: each branch gets its channel slice of the gradient; a split step hands each
    half its slice and adds their input gradients; the block's input gradient is the sum
    over the branches.
    """

    branches: tuple[tuple[str | tuple[str, ...], ...], ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.widths = None  # per branch, per step: output channels (for backward)

    def forward(self, x: Any) -> Any:
        xp = backend.get_array_module(x)
        outs, widths = [], []
        for branch in self.branches:
            h, steps = x, []
            for step in branch:
                if isinstance(step, str):
                    h = getattr(self, step)(h)
                    steps.append(None)
                else:
                    parts = [getattr(self, name)(h) for name in step]
                    steps.append([p.shape[1] for p in parts])
                    h = xp.concatenate(parts, axis=1)
            outs.append(h)
            widths.append((h.shape[1], steps))
        self.widths = widths
        return xp.concatenate(outs, axis=1)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.widths)
        dx, start = None, 0
        for branch, (width, steps) in zip(self.branches, self.widths, strict=True):
            g = grad_out[:, start : start + width]
            start += width
            for step, parts in zip(reversed(branch), reversed(steps), strict=True):
                if isinstance(step, str):
                    g = getattr(self, step).backward(g)
                    continue
                bounds = np.cumsum([0, *parts])
                g = sum(getattr(self, name).backward(g[:, a:b])
                        for name, a, b in zip(step, bounds[:-1], bounds[1:], strict=True))
            dx = g if dx is None else dx + g
        return dx

    def _clear_cache(self) -> None:
        self.widths = None


class InceptionA(_Branches):
    """35x35 module: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1."""

    branches = (("branch1x1",), ("branch5x5_1", "branch5x5_2"),
                ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                ("pool", "branch_pool"))

    def __init__(self, c_in: int, pool_features: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.branch1x1 = basic_conv(c_in, 64, 1, rng)
        self.branch5x5_1 = basic_conv(c_in, 48, 1, rng)
        self.branch5x5_2 = basic_conv(48, 64, 5, rng, padding=2)
        self.branch3x3dbl_1 = basic_conv(c_in, 64, 1, rng)
        self.branch3x3dbl_2 = basic_conv(64, 96, 3, rng, padding=1)
        self.branch3x3dbl_3 = basic_conv(96, 96, 3, rng, padding=1)
        self.branch_pool = basic_conv(c_in, pool_features, 1, rng)
        self.pool = AvgPool2D(3, 1, 1)


class InceptionB(_Branches):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool 3x3/2."""

    branches = (("branch3x3",), ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                ("pool",))

    def __init__(self, c_in: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.branch3x3 = basic_conv(c_in, 384, 3, rng, stride=2)
        self.branch3x3dbl_1 = basic_conv(c_in, 64, 1, rng)
        self.branch3x3dbl_2 = basic_conv(64, 96, 3, rng, padding=1)
        self.branch3x3dbl_3 = basic_conv(96, 96, 3, rng, stride=2)
        self.pool = MaxPool2D(3, 2)


class InceptionC(_Branches):
    """17x17 module with 7x7 convolutions factorized into 1x7 and 7x1."""

    branches = (("branch1x1",), ("branch7x7_1", "branch7x7_2", "branch7x7_3"),
                ("branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4",
                 "branch7x7dbl_5"),
                ("pool", "branch_pool"))

    def __init__(self, c_in: int, channels_7x7: int, rng: np.random.Generator) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = basic_conv(c_in, 192, 1, rng)
        self.branch7x7_1 = basic_conv(c_in, c7, 1, rng)
        self.branch7x7_2 = basic_conv(c7, c7, (1, 7), rng, padding=(0, 3))
        self.branch7x7_3 = basic_conv(c7, 192, (7, 1), rng, padding=(3, 0))
        self.branch7x7dbl_1 = basic_conv(c_in, c7, 1, rng)
        self.branch7x7dbl_2 = basic_conv(c7, c7, (7, 1), rng, padding=(3, 0))
        self.branch7x7dbl_3 = basic_conv(c7, c7, (1, 7), rng, padding=(0, 3))
        self.branch7x7dbl_4 = basic_conv(c7, c7, (7, 1), rng, padding=(3, 0))
        self.branch7x7dbl_5 = basic_conv(c7, 192, (1, 7), rng, padding=(0, 3))
        self.branch_pool = basic_conv(c_in, 192, 1, rng)
        self.pool = AvgPool2D(3, 1, 1)


class InceptionD(_Branches):
    """Grid reduction 17 -> 8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool 3x3/2."""

    branches = (("branch3x3_1", "branch3x3_2"),
                ("branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"),
                ("pool",))

    def __init__(self, c_in: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.branch3x3_1 = basic_conv(c_in, 192, 1, rng)
        self.branch3x3_2 = basic_conv(192, 320, 3, rng, stride=2)
        self.branch7x7x3_1 = basic_conv(c_in, 192, 1, rng)
        self.branch7x7x3_2 = basic_conv(192, 192, (1, 7), rng, padding=(0, 3))
        self.branch7x7x3_3 = basic_conv(192, 192, (7, 1), rng, padding=(3, 0))
        self.branch7x7x3_4 = basic_conv(192, 192, 3, rng, stride=2)
        self.pool = MaxPool2D(3, 2)


class InceptionE(_Branches):
    """8x8 module: 3x3 outputs split into parallel 1x3 and 3x1 halves (wider filter banks)."""

    branches = (("branch1x1",), ("branch3x3_1", ("branch3x3_2a", "branch3x3_2b")),
                ("branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")),
                ("pool", "branch_pool"))

    def __init__(self, c_in: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.branch1x1 = basic_conv(c_in, 320, 1, rng)
        self.branch3x3_1 = basic_conv(c_in, 384, 1, rng)
        self.branch3x3_2a = basic_conv(384, 384, (1, 3), rng, padding=(0, 1))
        self.branch3x3_2b = basic_conv(384, 384, (3, 1), rng, padding=(1, 0))
        self.branch3x3dbl_1 = basic_conv(c_in, 448, 1, rng)
        self.branch3x3dbl_2 = basic_conv(448, 384, 3, rng, padding=1)
        self.branch3x3dbl_3a = basic_conv(384, 384, (1, 3), rng, padding=(0, 1))
        self.branch3x3dbl_3b = basic_conv(384, 384, (3, 1), rng, padding=(1, 0))
        self.branch_pool = basic_conv(c_in, 192, 1, rng)
        self.pool = AvgPool2D(3, 1, 1)


def inception_aux(c_in: int, num_classes: int, rng: np.random.Generator) -> Sequential:
    """Auxiliary head on the 17x17 grid: 5x5/3 average pool, 1x1 conv to 128, 5x5 conv to
    768, global average, FC (torchvision's ``InceptionAux``)."""
    return Sequential(OrderedDict(
        pool=AvgPool2D(5, 3),
        conv0=basic_conv(c_in, 128, 1, rng),
        conv1=basic_conv(128, 768, 5, rng),
        avgpool=AdaptiveAvgPool2D(1),
        flatten=Flatten(),
        fc=Affine(768, num_classes, rng=rng),
    ))


_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
          "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
          "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
          "avgpool", "dropout", "flatten", "fc")
_AUX_TAP = "Mixed_6e"


class Inception3(Module):
    """Inception v3 for ``(N, in_channels, H, W)`` images (see the module docstring)."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, in_channels: int = 3,
                 dropout: float = 0.5, seed: int | np.random.Generator | None = None) -> None:
        super().__init__()
        rng = _rng(seed)
        self.aux_logits = bool(aux_logits)
        self.Conv2d_1a_3x3 = basic_conv(in_channels, 32, 3, rng, stride=2)
        self.Conv2d_2a_3x3 = basic_conv(32, 32, 3, rng)
        self.Conv2d_2b_3x3 = basic_conv(32, 64, 3, rng, padding=1)
        self.maxpool1 = MaxPool2D(3, 2)
        self.Conv2d_3b_1x1 = basic_conv(64, 80, 1, rng)
        self.Conv2d_4a_3x3 = basic_conv(80, 192, 3, rng)
        self.maxpool2 = MaxPool2D(3, 2)
        self.Mixed_5b = InceptionA(192, 32, rng)
        self.Mixed_5c = InceptionA(256, 64, rng)
        self.Mixed_5d = InceptionA(288, 64, rng)
        self.Mixed_6a = InceptionB(288, rng)
        self.Mixed_6b = InceptionC(768, 128, rng)
        self.Mixed_6c = InceptionC(768, 160, rng)
        self.Mixed_6d = InceptionC(768, 160, rng)
        self.Mixed_6e = InceptionC(768, 192, rng)
        if self.aux_logits:
            self.AuxLogits = inception_aux(768, num_classes, rng)
        self.Mixed_7a = InceptionD(768, rng)
        self.Mixed_7b = InceptionE(1280, rng)
        self.Mixed_7c = InceptionE(2048, rng)
        self.avgpool = AdaptiveAvgPool2D(1)
        self.dropout = Dropout(dropout, seed=_child_seed(rng))
        self.flatten = Flatten()
        self.fc = Affine(2048, num_classes, rng=rng)
        self.ran_aux = None

    def forward(self, x: Any) -> Any:
        aux = None
        for name in _TRUNK:
            x = getattr(self, name)(x)
            if name == _AUX_TAP and self.aux_logits and self.training:
                aux = self.AuxLogits(x)
        self.ran_aux = aux is not None
        return InceptionOutputs(x, aux) if aux is not None else x

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.ran_aux)
        # (Module has checked that the gradients match what forward returned)
        g, g_aux = grad_out if isinstance(grad_out, tuple) else (grad_out, None)
        for name in reversed(_TRUNK):
            if name == _AUX_TAP and g_aux is not None:
                g = g + self.AuxLogits.backward(g_aux)
            g = getattr(self, name).backward(g)
        return g

    def _clear_cache(self) -> None:
        self.ran_aux = None

    def extra_repr(self) -> str:
        return f"aux_logits={self.aux_logits}"


def inception_v3(
    num_classes: int = 1000, aux_logits: bool = True, in_channels: int = 3,
    dropout: float = 0.5, seed: int | np.random.Generator | None = None,
) -> Inception3:
    """Inception v3 (torchvision's ``inception_v3``; see :class:`Inception3`).

    27,161,264 parameters for 1000 classes with the auxiliary head (23,834,568 without).
    """
    return Inception3(num_classes, aux_logits, in_channels, dropout, seed=seed)
