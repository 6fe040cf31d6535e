"""ResNet-20/32/56/110 for CIFAR-10 (He et al. 2016, "Deep Residual Learning", sec. 4.2).

A 3x3 conv with 16 filters, then three stages of ``n`` basic blocks with 16, 32 and 64
channels on 32x32, 16x16 and 8x8 maps (the first block of stages 2 and 3 has stride 2),
then global average pooling and one Affine layer: ``6n + 2`` weighted layers.

Shortcuts follow the paper's option A: the identity, and where the shape changes, the
input subsampled with stride 2 and padded with zero channels (:class:`ShortcutA`), so
shortcuts add no parameters (ResNet-20: 269,722). Option B (1x1 conv + BN projection)
is available with ``shortcut="B"``.

State-dict keys match the widely used PyTorch CIFAR ResNet (``conv1``, ``bn1``,
``layer1.0.conv1``, ..., ``linear``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.containers import Sequential
from tinycnn.layers.activation import ReLU
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.pool import GlobalAvgPool2D
from tinycnn.module import LayerInputError, Module, check_input


class ShortcutA(Module):
    """Option-A shortcut: keep every ``stride``-th pixel, zero-pad the extra channels.

    ``(N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s))``; the input lands in output
    channels ``[p, p + C_in)`` with ``p = (C_out - C_in) // 2`` (zeros on both sides).

    Backward: dL/dx[:, :, ::s, ::s] = g[:, p:p + C_in]; every other input pixel gets 0.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        super().__init__()
        if out_channels < in_channels or stride < 1:
            raise ValueError(
                f"ShortcutA: needs out_channels >= in_channels and stride >= 1, got "
                f"in_channels={in_channels}, out_channels={out_channels}, stride={stride}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.x_shape = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, 4, "(N, C, H, W)", channels=self.in_channels)
        xp = backend.get_array_module(x)
        s, p = self.stride, self.pad_before
        sub = x[:, :, ::s, ::s]
        out = xp.zeros((x.shape[0], self.out_channels, *sub.shape[2:]), dtype=x.dtype)
        out[:, p : p + self.in_channels] = sub
        self.x_shape = x.shape
        return out

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x_shape)
        xp = backend.get_array_module(grad_out)
        s, p = self.stride, self.pad_before
        dx = xp.zeros(self.x_shape, dtype=grad_out.dtype)
        dx[:, :, ::s, ::s] = grad_out[:, p : p + self.in_channels]
        return dx

    def _clear_cache(self) -> None:
        self.x_shape = None

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, two 3x3 convolutions.

    Backward: the gradient g after the last ReLU flows into both branches and the two
    input gradients add: dL/dx = body'(x)^T g + shortcut'(x)^T g.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        shortcut: str = "A",
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv1 = Conv2D(in_channels, out_channels, 3, stride, 1, bias=False, rng=rng)
        self.bn1 = BatchNorm2D(out_channels)
        self.relu1 = ReLU()
        self.conv2 = Conv2D(out_channels, out_channels, 3, 1, 1, bias=False, rng=rng)
        self.bn2 = BatchNorm2D(out_channels)
        self.relu2 = ReLU()
        if stride == 1 and in_channels == out_channels:
            self.shortcut = None
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_channels, out_channels, stride)
        elif shortcut == "B":
            self.shortcut = Sequential(
                Conv2D(in_channels, out_channels, 1, stride, bias=False, rng=rng),
                BatchNorm2D(out_channels),
            )
        else:
            raise ValueError(f"BasicBlock: shortcut must be 'A' or 'B', got {shortcut!r}")

    def forward(self, x: Any) -> Any:
        check_input(self, x, 4, "(N, C, H, W)", channels=self.in_channels)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + skip)

    def backward(self, grad_out: Any) -> Any:
        g = self.relu2.backward(grad_out)
        body = self.conv1.backward(self.bn1.backward(self.relu1.backward(
            self.conv2.backward(self.bn2.backward(g)))))
        if self.shortcut is None:
            return body + g
        return body + self.shortcut.backward(g)


class ResNetCIFAR(Module):
    """ResNet of depth ``6n + 2`` for 32x32 images; logits ``(N, num_classes)``."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        shortcut: str = "A",
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNetCIFAR: depth must be 6n + 2 with n >= 1, got {depth}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        n = (depth - 2) // 6
        self.depth = depth
        self.in_channels = in_channels
        self.conv1 = Conv2D(in_channels, widths[0], 3, 1, 1, bias=False, rng=rng)
        self.bn1 = BatchNorm2D(widths[0])
        self.relu = ReLU()
        c = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(c, w, stride, shortcut, rng))
                c = w
            setattr(self, f"layer{i + 1}", Sequential(*blocks))
        self.pool = GlobalAvgPool2D()
        self.linear = Affine(c, num_classes, rng=rng)

    def _stages(self) -> list[Module]:
        return [self.conv1, self.bn1, self.relu, self.layer1, self.layer2, self.layer3,
                self.pool, self.linear]

    def forward(self, x: Any) -> Any:
        if getattr(x, "ndim", None) != 4:
            raise LayerInputError(
                f"ResNetCIFAR expected a 4-D input (N, C, H, W), got "
                f"{getattr(x, 'shape', type(x).__name__)}"
            )
        for m in self._stages():
            x = m(x)
        return x

    def backward(self, grad_out: Any) -> Any:
        for m in reversed(self._stages()):
            grad_out = m.backward(grad_out)
        return grad_out

    def extra_repr(self) -> str:
        return f"depth={self.depth}"


def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
             seed: int | np.random.Generator | None = None) -> ResNetCIFAR:
    """ResNet-20 (n = 3), 0.27M parameters with option-A shortcuts."""
    return ResNetCIFAR(20, num_classes, in_channels, shortcut=shortcut, seed=seed)


def resnet32(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
             seed: int | np.random.Generator | None = None) -> ResNetCIFAR:
    """ResNet-32 (n = 5), 0.46M parameters with option-A shortcuts."""
    return ResNetCIFAR(32, num_classes, in_channels, shortcut=shortcut, seed=seed)


def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
             seed: int | np.random.Generator | None = None) -> ResNetCIFAR:
    """ResNet-56 (n = 9), 0.85M parameters with option-A shortcuts."""
    return ResNetCIFAR(56, num_classes, in_channels, shortcut=shortcut, seed=seed)


def resnet110(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
              seed: int | np.random.Generator | None = None) -> ResNetCIFAR:
    """ResNet-110 (n = 18), 1.7M parameters with option-A shortcuts."""
    return ResNetCIFAR(110, num_classes, in_channels, shortcut=shortcut, seed=seed)
