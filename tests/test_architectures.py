"""The classic ImageNet networks and their CIFAR variants: exact parameter counts,
multiply-adds, forward + backward, and gradient checks of their building blocks.

Reference figures: parameter counts of torchvision's models (and the common 1.0-224 count
of MobileNet v1); multiply-adds at 224x224 from torchvision's model documentation
("GFLOPS", which are GMACs of the convolutions and linear layers, two decimals) and the
MobileNet v1 paper (569M).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from tinycnn import models
from tinycnn.containers import Sequential
from tinycnn.gradcheck import gradcheck
from tinycnn.layers import BatchNorm2D, Conv2D, Dropout, ReLU6
from tinycnn.models.densenet import DenseLayer
from tinycnn.models.googlenet import GoogLeNetOutputs, ceil_max_pool, inception
from tinycnn.models.mobilenet import V2_SETTINGS, InvertedResidual
from tinycnn.models.resnet import BasicBlock, Bottleneck, resnet
from tinycnn.models.vgg import CONFIGS, make_features
from tinycnn.module import Module
from tinycnn.summary import summary

try:
    import torch
except ImportError:  # the ceil-mode comparison skips, saying why
    torch = None

# builder, exact parameter count (1000 classes), GMACs at 224x224 as published (or None),
# smallest side the tests feed it
IMAGENET = {
    "alexnet": (models.alexnet, 61_100_840, "0.71", 64),
    "vgg11": (models.vgg11, 132_863_336, "7.61", 32),
    "vgg16": (models.vgg16, 138_357_544, "15.47", 32),
    "nin": (models.nin, 7_439_608, None, 67),
    "googlenet": (models.googlenet, 13_004_888, "1.50", 32),
    "resnet18": (models.resnet18, 11_689_512, "1.81", 32),
    "resnet34": (models.resnet34, 21_797_672, "3.66", 32),
    "resnet50": (models.resnet50, 25_557_032, "4.09", 32),
    "resnext50_32x4d": (models.resnext50_32x4d, 25_028_904, "4.23", 32),
    "densenet121": (models.densenet121, 7_978_856, "2.83", 32),
    "mobilenet_v1": (models.mobilenet_v1, 4_231_976, "0.569", 32),
    "mobilenet_v2": (models.mobilenet_v2, 3_504_872, "0.30", 32),
}


@pytest.fixture(scope="module", params=list(IMAGENET))
def imagenet_net(request):
    """Each big network is built once for all the tests that use it."""
    builder, count, gmacs, side = IMAGENET[request.param]
    return request.param, builder(seed=0), count, gmacs, side


def _nin_count(num_classes: int, in_channels: int) -> int:
    """NiN's parameters from its layer list: (in, out, kernel) of every convolution."""
    convs = []
    for c_in, c_out, k in [(in_channels, 96, 11), (96, 256, 5), (256, 384, 3),
                           (384, num_classes, 3)]:
        convs += [(c_in, c_out, k), (c_out, c_out, 1), (c_out, c_out, 1)]
    return sum(c_in * c_out * k * k + c_out for c_in, c_out, k in convs)


def test_parameter_count(imagenet_net):
    name, net, count, _, _ = imagenet_net
    assert net.num_parameters() == count, name
    if name == "nin":
        assert count == _nin_count(1000, 3)


def test_googlenet_without_aux_matches_torchvision():
    assert models.googlenet(aux_logits=False, seed=0).num_parameters() == 6_624_904


def test_summary_totals_and_macs(imagenet_net):
    name, net, count, gmacs, _ = imagenet_net
    result = summary(net, (3, 224, 224), print_fn=None)
    assert result["params"] == count
    assert result["output_shape"] == (1, 1000)
    assert net.training, "summary must restore training mode"
    if gmacs is not None:
        # within half a unit of the published figure's last digit
        half_unit = 0.5 * 10.0 ** -len(gmacs.split(".")[1])
        assert abs(result["macs"] / 1e9 - float(gmacs)) <= half_unit, name
    else:
        assert result["macs"] > 0


def _check_training_step(net, x: np.ndarray, num_classes: int) -> None:
    """Forward and backward in training mode: shapes, float32 and every gradient present."""
    net.train()
    net.zero_grad()
    out = net(x)
    logits = out.logits if isinstance(out, GoogLeNetOutputs) else out
    assert logits.shape == (x.shape[0], num_classes)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    if isinstance(out, GoogLeNetOutputs):
        grad = GoogLeNetOutputs(*(np.ones_like(o) / o.size for o in out))
    else:
        grad = np.ones_like(out) / out.size
    dx = net.backward(grad)
    assert dx.shape == x.shape and dx.dtype == np.float32 and np.isfinite(dx).all()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert p.grad.shape == p.shape and p.grad.dtype == np.float32, pname


def test_forward_backward_small_input(imagenet_net):
    name, net, _, _, side = imagenet_net
    x = np.random.default_rng(0).standard_normal((2, 3, side, side)).astype(np.float32)
    _check_training_step(net, x, 1000)
    net.eval()
    out = net(x[:1])
    assert out.shape == (1, 1000), f"{name} in eval mode returns the logits alone"


CIFAR = {
    "vgg11_cifar": models.vgg11_cifar,
    "mobilenet_v1_cifar": lambda seed: models.mobilenet_v1_cifar(width_mult=0.25, seed=seed),
    "mobilenet_v2_cifar": lambda seed: models.mobilenet_v2_cifar(width_mult=0.5, seed=seed),
    "densenet_cifar": models.densenet_cifar,
}


@pytest.mark.parametrize("name", list(CIFAR))
def test_cifar_variants_train_on_32x32(name):
    net = CIFAR[name](seed=0)
    result = summary(net, (3, 32, 32), print_fn=None)
    assert result["output_shape"] == (1, 10) and result["macs"] > 0
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    _check_training_step(net, x, 10)


@pytest.mark.parametrize("name", list(CIFAR))
def test_seed_repeats_and_differs(name):
    a, b, c = (CIFAR[name](seed=s).state_dict() for s in (3, 3, 4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a if k.endswith("weight"))


def test_cifar_variant_counts():
    # the full-width CIFAR MobileNet v2 differs from the ImageNet one only in its classifier
    full = models.mobilenet_v2(seed=0).num_parameters()
    assert models.mobilenet_v2_cifar(seed=0).num_parameters() == full - 1281 * 990
    features = make_features(CONFIGS["A"], 3, True, np.random.default_rng(0), conv_bias=False)
    assert models.vgg11_cifar(seed=0).num_parameters() == features.num_parameters() + 513 * 10


# --- building blocks, gradient-checked in float64 -----------------------------------------
def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _randomize_batchnorm(net, rng):
    """Random BatchNorm scales, shifts and running statistics, and no dropout.

    Fresh BatchNorms (shift 0, running mean 0) map the exact zeros of a ReLU'd map to exact
    zeros again, which sit on the next ReLU's kink and break finite differences.
    """
    for m in net.modules():
        if isinstance(m, BatchNorm2D):
            c = m.num_features
            m.weight.data = 1 + 0.3 * rng.standard_normal(c)
            m.bias.data = 0.5 * rng.standard_normal(c)
            m._set_buffer("running_mean", 0.3 * rng.standard_normal(c))
            m._set_buffer("running_var", 0.5 + rng.random(c))
        elif isinstance(m, Dropout):
            m.p = 0.0  # deterministic forward passes for the finite differences
    return net


def _downsample(r):
    return Sequential(Conv2D(3, 4, 1, stride=2, bias=False, rng=r), BatchNorm2D(4))


BLOCKS = {
    "basic": (lambda r: BasicBlock(4, 4, 1, None, r), (2, 4, 5, 5)),
    "basic-downsample": (lambda r: BasicBlock(3, 4, 2, _downsample(r), r), (2, 3, 5, 5)),
    "bottleneck-groups": (lambda r: Bottleneck(8, 2, 1, None, r, groups=2), (2, 8, 4, 4)),
    "dense-layer": (lambda r: DenseLayer(3, 2, 2, r), (2, 3, 4, 4)),
    "inverted-residual": (lambda r: InvertedResidual(4, 4, 1, 2, r), (2, 4, 4, 4)),
    "inverted-stride": (lambda r: InvertedResidual(3, 5, 2, 1, r), (2, 3, 5, 5)),
    "inception": (lambda r: inception(3, 2, 2, 3, 1, 2, 2, r), (2, 3, 4, 4)),
    "relu6": (lambda r: ReLU6(), (2, 3, 4, 4)),
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_gradcheck(name, mode):
    make, shape = BLOCKS[name]
    block = _randomize_batchnorm(make(np.random.default_rng(0)), np.random.default_rng(1))
    block.train(mode == "train")
    x = _x(shape) * (4.0 if name == "relu6" else 1.0)  # ReLU6: values past both kinks
    assert gradcheck(block, x, tol=1e-6, max_entries=60) < 1e-6


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize(
    "size, kernel, stride",
    [(s, k, st) for k, st in [(3, 2), (2, 2)] for s in [2, 3, 5, 8, 13] if s >= k],
)
def test_ceil_max_pool_matches_pytorch_ceil_mode(size, kernel, stride):
    x = np.abs(_x((2, 3, size, size + 1)))  # pooled maps come out of a ReLU
    ours = ceil_max_pool(kernel, stride)(x)
    ref = torch.nn.MaxPool2d(kernel, stride, ceil_mode=True)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, ref)


class _JoinedOutputs(Module):
    """GoogLeNet's three training outputs side by side, so gradcheck sees one array."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)
        self.k = out.logits.shape[1]
        return np.concatenate(list(out), axis=1)

    def backward(self, grad_out):
        k = self.k
        parts = [grad_out[:, i * k : (i + 1) * k] for i in range(3)]
        return self.net.backward(GoogLeNetOutputs(*parts))


def test_googlenet_backward_with_auxiliary_heads():
    net = _randomize_batchnorm(models.googlenet(num_classes=5, seed=0), np.random.default_rng(1))
    x = _x((2, 3, 32, 32))
    out = net(x.astype(np.float32))
    assert isinstance(out, GoogLeNetOutputs) and all(o.shape == (2, 5) for o in out)
    # input gradient through the trunk and both auxiliary heads (parameters: see above)
    err = gradcheck(_JoinedOutputs(net), x, tol=1e-6, check_params=False, max_entries=6)
    assert err < 1e-6
    # the auxiliary heads' gradients really reach the input
    ones = [np.ones_like(o) for o in out]
    main_only = net.backward(GoogLeNetOutputs(ones[0], None, None))
    net(x.astype(np.float32))
    with_aux = net.backward(GoogLeNetOutputs(*ones))
    assert not np.allclose(main_only, with_aux)
    net.eval()
    assert net(x.astype(np.float32)).shape == (2, 5)
    with pytest.raises(ValueError, match="the last forward returned one output"):
        net.backward(GoogLeNetOutputs(ones[0], ones[1], None))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_small_cifar_nets_input_gradient(mode):
    for net in (models.densenet_cifar(growth_rate=4, block_config=(2, 2), seed=0),
                models.mobilenet_v2_cifar(width_mult=0.25, seed=0)):
        _randomize_batchnorm(net, np.random.default_rng(1)).train(mode == "train")
        assert gradcheck(net, _x((2, 3, 32, 32)), tol=1e-6, check_params=False,
                         max_entries=6) < 1e-6


def test_state_dict_keys_follow_torchvision():
    keys = set(models.resnet18(seed=0).state_dict())
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var",
            "fc.bias"} <= keys
    keys = set(models.densenet_cifar(seed=0).state_dict())
    assert "features.denseblock1.denselayer1.conv2.weight" in keys
    assert "features.transition1.norm.running_mean" in keys
    keys = set(models.mobilenet_v2_cifar(seed=0).state_dict())
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "classifier.1.weight"} <= keys
    assert isinstance(models.vgg11_cifar(seed=0).features, Sequential)


# --- the same networks written with torch.nn: forward, input and weight gradients ----------
if torch is not None:
    tnn = torch.nn

    class _TConvBN(tnn.Sequential):
        """Conv (no bias) + BN + activation, keys ``0``, ``1`` (MobileNet v2's blocks)."""

        def __init__(self, cin, cout, k, stride=1, groups=1):
            super().__init__(tnn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups,
                                        bias=False), tnn.BatchNorm2d(cout), tnn.ReLU6())

    class _TInvRes(tnn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = cin * t
            layers = [_TConvBN(cin, hidden, 1)] if t != 1 else []
            layers += [_TConvBN(hidden, hidden, 3, stride, hidden),
                       tnn.Conv2d(hidden, cout, 1, bias=False), tnn.BatchNorm2d(cout)]
            self.conv = tnn.Sequential(*layers)
            self.res = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.res else self.conv(x)

    class _TBlock(tnn.Module):
        """torchvision's BasicBlock (``bottleneck=False``) or Bottleneck."""

        def __init__(self, cin, planes, stride, bottleneck, groups=1, base_width=64):
            super().__init__()
            out = planes * (4 if bottleneck else 1)
            if bottleneck:
                width = int(planes * base_width / 64) * groups
                self.conv1 = tnn.Conv2d(cin, width, 1, bias=False)
                self.bn1 = tnn.BatchNorm2d(width)
                self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
                self.bn2 = tnn.BatchNorm2d(width)
                self.conv3 = tnn.Conv2d(width, out, 1, bias=False)
                self.bn3 = tnn.BatchNorm2d(out)
            else:
                self.conv1 = tnn.Conv2d(cin, planes, 3, stride, 1, bias=False)
                self.bn1 = tnn.BatchNorm2d(planes)
                self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
                self.bn2 = tnn.BatchNorm2d(planes)
            self.bottleneck = bottleneck
            self.downsample = None
            if stride != 1 or cin != out:
                self.downsample = tnn.Sequential(tnn.Conv2d(cin, out, 1, stride, bias=False),
                                                 tnn.BatchNorm2d(out))

        def forward(self, x):
            relu = torch.relu
            y = relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            if self.bottleneck:
                y = self.bn3(self.conv3(relu(y)))
            return relu(y + (x if self.downsample is None else self.downsample(x)))

    class _TResNet(tnn.Module):
        def __init__(self, layers, bottleneck, groups=1, base_width=64, classes=1000):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            c = 64
            for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
                blocks = []
                for j in range(n):
                    blocks.append(_TBlock(c, planes, 2 if (i and not j) else 1, bottleneck,
                                          groups, base_width))
                    c = planes * (4 if bottleneck else 1)
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            self.fc = tnn.Linear(c, classes)

        def forward(self, x):
            x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
            for i in range(4):
                x = getattr(self, f"layer{i + 1}")(x)
            return self.fc(torch.flatten(tnn.functional.adaptive_avg_pool2d(x, 1), 1))

    class _TBasicConv(tnn.Module):
        def __init__(self, cin, cout, k, stride=1, padding=0):
            super().__init__()
            self.conv = tnn.Conv2d(cin, cout, k, stride, padding, bias=False)
            self.bn = tnn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    class _TInception(tnn.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
            super().__init__()
            self.branch1 = _TBasicConv(cin, c1, 1)
            self.branch2 = tnn.Sequential(_TBasicConv(cin, c3r, 1), _TBasicConv(c3r, c3, 3, 1, 1))
            self.branch3 = tnn.Sequential(_TBasicConv(cin, c5r, 1), _TBasicConv(c5r, c5, 3, 1, 1))
            self.branch4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                          _TBasicConv(cin, pp, 1))

        def forward(self, x):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                              self.branch4(x)], 1)

    class _TAux(tnn.Module):
        def __init__(self, cin, classes):
            super().__init__()
            self.conv = _TBasicConv(cin, 128, 1)
            self.fc1 = tnn.Linear(2048, 1024)
            self.fc2 = tnn.Linear(1024, classes)

        def forward(self, x):
            x = self.conv(tnn.functional.adaptive_avg_pool2d(x, 4))
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

    class _TGoogLeNet(tnn.Module):
        def __init__(self, classes):
            super().__init__()
            self.conv1 = _TBasicConv(3, 64, 7, 2, 3)
            self.maxpool1 = tnn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2 = _TBasicConv(64, 64, 1)
            self.conv3 = _TBasicConv(64, 192, 3, 1, 1)
            self.maxpool2 = tnn.MaxPool2d(3, 2, ceil_mode=True)
            self.inception3a = _TInception(192, 64, 96, 128, 16, 32, 32)
            self.inception3b = _TInception(256, 128, 128, 192, 32, 96, 64)
            self.maxpool3 = tnn.MaxPool2d(3, 2, ceil_mode=True)
            self.inception4a = _TInception(480, 192, 96, 208, 16, 48, 64)
            self.inception4b = _TInception(512, 160, 112, 224, 24, 64, 64)
            self.inception4c = _TInception(512, 128, 128, 256, 24, 64, 64)
            self.inception4d = _TInception(512, 112, 144, 288, 32, 64, 64)
            self.inception4e = _TInception(528, 256, 160, 320, 32, 128, 128)
            self.maxpool4 = tnn.MaxPool2d(2, 2, ceil_mode=True)
            self.inception5a = _TInception(832, 256, 160, 320, 32, 128, 128)
            self.inception5b = _TInception(832, 384, 192, 384, 48, 128, 128)
            self.aux1 = _TAux(512, classes)
            self.aux2 = _TAux(528, classes)
            self.fc = tnn.Linear(1024, classes)

        def forward(self, x):
            for name in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a",
                         "inception3b", "maxpool3", "inception4a"):
                x = getattr(self, name)(x)
            aux1 = self.aux1(x)
            x = self.inception4d(self.inception4c(self.inception4b(x)))
            aux2 = self.aux2(x)
            x = self.maxpool4(self.inception4e(x))
            x = self.inception5b(self.inception5a(x))
            x = self.fc(torch.flatten(tnn.functional.adaptive_avg_pool2d(x, 1), 1))
            return (x, aux2, aux1) if self.training else x

    class _TMobileNetV2(tnn.Module):
        """torchvision's MobileNet v2 at width 1.0 (dropout left out: p = 0 in the test)."""

        def __init__(self, classes):
            super().__init__()
            layers = [_TConvBN(3, 32, 3, 2)]
            c = 32
            for t, ch, n, s in V2_SETTINGS:
                for j in range(n):
                    layers.append(_TInvRes(c, ch, s if j == 0 else 1, t))
                    c = ch
            layers.append(_TConvBN(c, 1280, 1))
            self.features = tnn.Sequential(*layers)
            self.classifier = tnn.Sequential(tnn.Identity(), tnn.Linear(1280, classes))

        def forward(self, x):
            x = tnn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    class _TDenseLayer(tnn.Module):
        def __init__(self, cin, k, bn_size):
            super().__init__()
            self.norm1, self.conv1 = tnn.BatchNorm2d(cin), tnn.Conv2d(cin, bn_size * k, 1,
                                                                       bias=False)
            self.norm2 = tnn.BatchNorm2d(bn_size * k)
            self.conv2 = tnn.Conv2d(bn_size * k, k, 3, 1, 1, bias=False)

        def forward(self, x):
            y = self.conv1(torch.relu(self.norm1(x)))
            return torch.cat([x, self.conv2(torch.relu(self.norm2(y)))], 1)

    class _TDenseNet(tnn.Module):
        """torchvision's DenseNet with the 3x3 stem of ``small_inputs``."""

        def __init__(self, k, blocks, init, classes):
            super().__init__()
            parts = [("conv0", tnn.Conv2d(3, init, 3, 1, 1, bias=False))]
            c = init
            for i, n in enumerate(blocks):
                block = tnn.Sequential()
                for j in range(n):
                    block.add_module(f"denselayer{j + 1}", _TDenseLayer(c + j * k, k, 4))
                parts.append((f"denseblock{i + 1}", block))
                c += n * k
                if i != len(blocks) - 1:
                    parts.append((f"transition{i + 1}", tnn.Sequential(OrderedDict(
                        norm=tnn.BatchNorm2d(c), relu=tnn.ReLU(),
                        conv=tnn.Conv2d(c, c // 2, 1, bias=False), pool=tnn.AvgPool2d(2, 2)))))
                    c //= 2
            parts.append(("norm5", tnn.BatchNorm2d(c)))
            self.features = tnn.Sequential(OrderedDict(parts))
            self.classifier = tnn.Linear(c, classes)

        def forward(self, x):
            x = tnn.functional.adaptive_avg_pool2d(torch.relu(self.features(x)), 1)
            return self.classifier(torch.flatten(x, 1))


TORCH_TWINS = {
    "resnet18": (lambda: models.resnet18(num_classes=10, seed=0),
                 lambda: _TResNet((2, 2, 2, 2), False, classes=10)),
    "resnext-1111": (lambda: resnet(Bottleneck, (1, 1, 1, 1), 10, groups=32, width_per_group=4,
                                    seed=0),
                     lambda: _TResNet((1, 1, 1, 1), True, 32, 4, classes=10)),
    "googlenet": (lambda: models.googlenet(num_classes=10, seed=0),
                  lambda: _TGoogLeNet(10)),
    "mobilenet_v2": (lambda: models.mobilenet_v2(num_classes=10, seed=0),
                     lambda: _TMobileNetV2(10)),
    "densenet_cifar": (lambda: models.densenet_cifar(growth_rate=6, block_config=(2, 3, 2),
                                                     seed=0),
                       lambda: _TDenseNet(6, (2, 3, 2), 12, 10)),
}


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(TORCH_TWINS))
def test_matches_the_same_network_in_pytorch(name, mode):
    """Weights copied by state dict (so the keys are torchvision's), float64, 1e-6 relative."""
    ours_fn, theirs_fn = TORCH_TWINS[name]
    ours = _randomize_batchnorm(ours_fn(), np.random.default_rng(1)).astype(np.float64)
    theirs = theirs_fn().double()
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state)  # strict: every key and shape must agree
    ours.train(mode == "train")
    theirs.train(mode == "train")
    # MobileNetV2 shrinks 32x32 to 1x1: a training-mode BatchNorm over 2 values per channel
    # is so ill-conditioned that round-off decides the 6th digit, whatever the weights.
    size = 64 if name == "mobilenet_v2" else 32
    x = _x((2, 3, size, size))
    out = ours(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = theirs(xt)
    outs = list(out) if isinstance(out, tuple) else [out]
    refs = list(ref) if isinstance(ref, tuple) else [ref]
    assert len(outs) == len(refs)
    grads = [_x(o.shape, seed=7 + i) for i, o in enumerate(outs)]
    for o, r in zip(outs, refs, strict=True):
        np.testing.assert_allclose(o, r.detach().numpy(), rtol=1e-6, atol=1e-9)
    dx = ours.backward(GoogLeNetOutputs(*grads) if len(grads) == 3 else grads[0])
    torch.autograd.backward(refs, [torch.from_numpy(g) for g in grads])
    scale = np.abs(xt.grad.numpy()).max()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-9 * scale)
    ref_grads = {k: v.grad for k, v in theirs.named_parameters()}
    # one absolute floor for all: some exact gradients are 0 (a BatchNorm shift followed by a
    # 1x1 conv and a batch-statistics BatchNorm), both sides then hold round-off
    floor = 1e-9 * max(float(g.abs().max()) for g in ref_grads.values() if g is not None)
    for pname, p in ours.named_parameters():
        if ref_grads[pname] is None:  # the auxiliary heads in eval mode
            assert p.grad is None, pname
            continue
        np.testing.assert_allclose(p.grad, ref_grads[pname].numpy(), rtol=1e-6, atol=floor,
                                   err_msg=pname)
