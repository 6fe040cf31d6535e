"""PyTorch twins of tinycnn's benchmark nets: the same layers, sizes and state-dict keys.

``speed.py`` and ``gpu_speed.py`` time these against tinycnn, and
``tests/test_models.py`` loads tinycnn's ``resnet20`` weights into :func:`build`'s
ResNet-20 and checks that outputs and input gradients agree, so the nets being compared
are the same nets. PyTorch is passed in (``build("resnet20", torch)``), never imported
here, so importing this module does not need it.

:func:`from_spec` builds a PyTorch twin from a layer list that tinycnn's side builds from
too (``time_to_accuracy.py``), and :func:`load_tinycnn_state` copies tinycnn weights into
it: tinycnn's state dicts already use PyTorch's keys and layouts.
"""

from __future__ import annotations

from typing import Any

NETS = ("lenet5", "simple_convnet", "deep_convnet", "resnet20")


def build(net: str, torch: Any, num_classes: int = 10) -> Any:
    """A fresh ``torch.nn.Module`` for ``net`` (PyTorch's default initialization)."""
    nn = torch.nn
    if net == "simple_convnet":
        return nn.Sequential(
            nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(30 * 12 * 12, 100), nn.ReLU(), nn.Linear(100, num_classes),
        )
    if net == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )
    if net == "deep_convnet":
        layers: list[Any] = []
        for c_in, c_out, pad2 in ((1, 16, 1), (16, 32, 2), (32, 64, 1)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(c_out, c_out, 3, padding=pad2), nn.ReLU(), nn.MaxPool2d(2)]
        layers += [nn.Flatten(), nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5),
                   nn.Linear(50, num_classes), nn.Dropout(0.5)]
        return nn.Sequential(*layers)
    if net == "resnet20":
        return resnet20(torch, num_classes)
    raise ValueError(f"no PyTorch twin of {net!r} (have {', '.join(NETS)})")


def resnet20(torch: Any, num_classes: int = 10) -> Any:
    """ResNet-20 for CIFAR, option-A shortcuts, with ``tinycnn.models.resnet20``'s keys."""
    nn, F = torch.nn, torch.nn.functional

    class ShortcutA(nn.Module):
        """Subsample by 2, zero-pad the new channels on both sides (no parameters)."""

        def __init__(self, c_in: int, c_out: int) -> None:
            super().__init__()
            self.pad = (c_out - c_in) // 2

        def forward(self, x: Any) -> Any:
            return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            same = stride == 1 and c_in == c_out
            self.shortcut = nn.Identity() if same else ShortcutA(c_in, c_out)

        def forward(self, x: Any) -> Any:
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            c, stages = 16, []
            for i, w in enumerate((16, 32, 64)):
                blocks = []
                for j in range(3):
                    blocks.append(Block(c, w, 2 if i and not j else 1))
                    c = w
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = stages
            self.linear = nn.Linear(64, num_classes)

        def forward(self, x: Any) -> Any:
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            return self.linear(out.mean(dim=(2, 3)))

    return Net()


def from_spec(spec: tuple[tuple[Any, ...], ...], torch: Any) -> Any:
    """An ``nn.Sequential`` from a layer list such as ``time_to_accuracy.MNIST_NET``.

    Entries: ``("conv", c_in, c_out, kernel, padding, bias)``, ``("bn", channels)``,
    ``("relu",)``, ``("maxpool", size)``, ``("flatten",)``, ``("linear", n_in, n_out)``.
    """
    nn = torch.nn
    makers = {
        "conv": lambda c_in, c_out, k, pad, bias: nn.Conv2d(c_in, c_out, k, padding=pad,
                                                            bias=bias),
        "bn": nn.BatchNorm2d,
        "relu": nn.ReLU,
        "maxpool": nn.MaxPool2d,
        "flatten": nn.Flatten,
        "linear": nn.Linear,
    }
    return nn.Sequential(*(makers[kind](*args) for kind, *args in spec))


def load_tinycnn_state(model: Any, state: dict[str, Any], torch: Any) -> None:
    """Load a tinycnn ``state_dict()`` (NumPy arrays, PyTorch keys) into a PyTorch twin."""
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
