"""The classic ImageNet networks and their CIFAR variants: exact parameter counts,
multiply-adds, forward + backward, and gradient checks of their building blocks.

Reference figures: parameter counts of torchvision's models (and the common 1.0-224 count
of MobileNet v1); multiply-adds at 224x224 from torchvision's model documentation
("GFLOPS", which are GMACs of the convolutions and linear layers, two decimals) and the
MobileNet v1 paper (569M).
"""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import models
from tinycnn.containers import Sequential
from tinycnn.gradcheck import gradcheck
from tinycnn.layers import Dropout
from tinycnn.models.densenet import DenseLayer
from tinycnn.models.googlenet import GoogLeNetOutputs, ceil_max_pool, inception, inception_aux
from tinycnn.models.mobilenet import InvertedResidual, ReLU6
from tinycnn.models.resnet import BasicBlock, Bottleneck
from tinycnn.models.vgg import CONFIGS, make_features
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


def test_cifar_variant_counts():
    # the full-width CIFAR MobileNet v2 differs from the ImageNet one only in its classifier
    full = models.mobilenet_v2(seed=0).num_parameters()
    assert models.mobilenet_v2_cifar(seed=0).num_parameters() == full - 1281 * 990
    features = make_features(CONFIGS["A"], 3, True, np.random.default_rng(0))
    assert models.vgg11_cifar(seed=0).num_parameters() == features.num_parameters() + 513 * 10


# --- building blocks, gradient-checked in float64 -----------------------------------------
def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda r: BasicBlock(4, 4, 1, None, r), (2, 4, 5, 5)),
        (lambda r: BasicBlock(3, 4, 2, models.resnet.Sequential(
            models.resnet.Conv2D(3, 4, 1, stride=2, bias=False, rng=r),
            models.resnet.BatchNorm2D(4)), r), (2, 3, 5, 5)),
        (lambda r: Bottleneck(8, 2, 1, None, r, groups=2, base_width=64), (2, 8, 4, 4)),
        (lambda r: DenseLayer(3, 2, 2, r), (2, 3, 4, 4)),
        (lambda r: InvertedResidual(4, 4, 1, 2, r), (2, 4, 4, 4)),
        (lambda r: InvertedResidual(3, 5, 2, 1, r), (2, 3, 5, 5)),
        (lambda r: inception(3, 2, 2, 3, 1, 2, 2, r), (2, 3, 4, 4)),
        (lambda r: inception_aux(3, 5, r), (2, 3, 6, 6)),
        (lambda r: ReLU6(), (2, 3, 4, 4)),
    ],
    ids=["basic", "basic-downsample", "bottleneck-groups", "dense-layer", "inverted-residual",
         "inverted-stride", "inception", "inception-aux", "relu6"],
)
def test_block_gradcheck(make, shape):
    block = make(np.random.default_rng(0))
    for m in block.modules():
        if isinstance(m, Dropout):
            m.p = 0.0
    x = _x(shape) * (4.0 if isinstance(block, ReLU6) else 1.0)  # ReLU6: both kinks
    # eps=1e-4: behind a batch-statistics BatchNorm the first layers' gradients are ~1e-5 of
    # the loss, and a smaller step drowns in round-off (the kinks are far from these inputs)
    assert gradcheck(block, x, eps=1e-4, tol=1e-6, max_entries=60) < 1e-6


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.parametrize("size", [1, 2, 5, 8, 13])
@pytest.mark.parametrize("kernel, stride", [(3, 2), (2, 2)])
def test_ceil_max_pool_matches_pytorch_ceil_mode(size, kernel, stride):
    if size < kernel - stride + 1:
        pytest.skip("PyTorch rejects an input smaller than the window here")
    x = np.abs(_x((2, 3, size, size + 1)))  # pooled maps come out of a ReLU
    ours = ceil_max_pool(kernel, stride)(x)
    ref = torch.nn.MaxPool2d(kernel, stride, ceil_mode=True)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, ref)


def _directional_check(net, x: np.ndarray, seed: int = 0) -> float:
    """Relative gap between <dL/dx, v> and the central difference of L along v, where
    L = sum over outputs of <output, G> (several outputs for GoogLeNet in training)."""
    rng = np.random.default_rng(seed)

    def outputs(inp):
        out = net(inp)
        return list(out) if isinstance(out, tuple) else [out]

    grads = [rng.standard_normal(o.shape) for o in outputs(x)]

    def loss(inp):
        return sum(float(np.sum(o * g)) for o, g in zip(outputs(inp), grads, strict=True))

    loss(x)
    dx = net.backward(GoogLeNetOutputs(*grads) if len(grads) == 3 else grads[0])
    v = rng.standard_normal(x.shape)
    eps = 1e-5
    numeric = (loss(x + eps * v) - loss(x - eps * v)) / (2 * eps)
    analytic = float(np.sum(dx * v))
    return abs(numeric - analytic) / max(abs(numeric), abs(analytic))


def test_googlenet_backward_with_auxiliary_heads():
    net = models.googlenet(num_classes=5, seed=0).astype(np.float64)
    for m in net.modules():
        if isinstance(m, Dropout):
            m.p = 0.0  # deterministic forward passes for the finite differences
    net.train()
    x = _x((2, 3, 32, 32))
    out = net(x)
    assert isinstance(out, GoogLeNetOutputs) and all(o.shape == (2, 5) for o in out)
    assert _directional_check(net, x) < 1e-6
    # the auxiliary heads' gradients really reach the input
    main_only = net.backward(GoogLeNetOutputs(out.logits * 0 + 1, None, None))
    net(x)
    with_aux = net.backward(GoogLeNetOutputs(*(o * 0 + 1 for o in out)))
    assert not np.allclose(main_only, with_aux)
    net.eval()
    assert net(x).shape == (2, 5)
    with pytest.raises(ValueError, match="auxiliary"):
        net.backward(GoogLeNetOutputs(out.logits, out.aux_logits2, None))


def test_small_densenet_and_mobilenet_backward_in_float64():
    for net in (models.densenet_cifar(growth_rate=4, block_config=(2, 2), seed=0),
                models.mobilenet_v2_cifar(width_mult=0.25, seed=0)):
        for m in net.modules():
            if isinstance(m, Dropout):
                m.p = 0.0
        net.astype(np.float64).train()
        assert _directional_check(net, _x((2, 3, 32, 32))) < 1e-6


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
