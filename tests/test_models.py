"""Ready-made models: shapes, dtypes, parameter counts, seeds, the option-A shortcut."""

from __future__ import annotations

import numpy as np
import pytest
import torch_nets

from tinycnn import models
from tinycnn.gradcheck import gradcheck
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.dropout import Dropout
from tinycnn.models.resnet_cifar import BasicBlock, ResNetCIFAR, ShortcutA
from tinycnn.module import LayerInputError

MNIST_MODELS = ["simple_convnet", "deep_convnet", "lenet5"]
CIFAR_MODELS = ["vgg_cifar", "fast_cifar", "resnet20"]


def _input(channels: int, size: int, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, channels, size, size)).astype(
        np.float32)


@pytest.mark.parametrize("name", MNIST_MODELS + CIFAR_MODELS)
def test_forward_backward_float32(name: str) -> None:
    channels, size = (1, 28) if name in MNIST_MODELS else (3, 32)
    model = getattr(models, name)(num_classes=7, seed=0)
    x = _input(channels, size)
    y = model(x)
    assert y.shape == (2, 7) and y.dtype == np.float32
    assert np.all(np.isfinite(y))
    g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    dx = model.backward(g)
    assert dx.shape == x.shape and dx.dtype == np.float32
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert p.grad.shape == p.shape and p.grad.dtype == np.float32, pname
        assert np.all(np.isfinite(p.grad)), pname


@pytest.mark.parametrize("name", MNIST_MODELS + CIFAR_MODELS)
def test_seed_repeats_and_differs(name: str) -> None:
    build = getattr(models, name)
    a, b, c = build(seed=3).state_dict(), build(seed=3).state_dict(), build(seed=4).state_dict()
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a if k.endswith("weight"))


def _conv_params(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def test_simple_convnet_matches_the_book() -> None:
    model = models.simple_convnet()
    conv = model[0]
    assert isinstance(conv, Conv2D)
    assert conv.weight.shape == (30, 1, 5, 5) and conv.stride == (1, 1)
    expected = _conv_params(1, 30, 5) + (30 * 12 * 12 * 100 + 100) + (100 * 10 + 10)
    assert model.num_parameters() == expected


def test_deep_convnet_matches_the_book() -> None:
    model = models.deep_convnet()
    convs = [m for m in model.modules() if isinstance(m, Conv2D)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64]
    assert [c.padding for c in convs] == [(1, 1), (1, 1), (1, 1), (2, 2), (1, 1), (1, 1)]
    drops = [m for m in model.modules() if isinstance(m, Dropout)]
    assert [d.p for d in drops] == [0.5, 0.5]
    expected = sum(_conv_params(i, o, 3) for i, o in
                   [(1, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64)])
    expected += 64 * 4 * 4 * 50 + 50 + 50 * 10 + 10
    assert model.num_parameters() == expected


def test_lenet5_shapes() -> None:
    model = models.lenet5()
    expected = (_conv_params(1, 6, 5) + _conv_params(6, 16, 5) + 400 * 120 + 120
                + 120 * 84 + 84 + 84 * 10 + 10)
    assert model.num_parameters() == expected
    assert models.lenet5(in_channels=3, image_size=32)(_input(3, 32)).shape == (2, 10)


def _resnet_params(n: int) -> int:
    """Parameters of a CIFAR ResNet with option-A shortcuts, layer by layer."""
    total = 3 * 16 * 9 + 2 * 16  # first conv + BN
    c = 16
    for w in (16, 32, 64):
        for _ in range(n):
            total += c * w * 9 + w * w * 9 + 4 * w  # two convs, two BNs
            c = w
    return total + 64 * 10 + 10


@pytest.mark.parametrize(("build", "n", "published"),
                         [(models.resnet20, 3, 269_722), (models.resnet32, 5, 464_154),
                          (models.resnet56, 9, 853_018)])
def test_resnet_parameter_counts(build, n: int, published: int) -> None:
    model = build()
    assert model.num_parameters() == _resnet_params(n) == published
    assert sum(isinstance(m, Conv2D) for m in model.modules()) + 1 == 6 * n + 2


def test_resnet_option_b_adds_projections() -> None:
    a, b = models.resnet20(), models.resnet20(shortcut="B")
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # two 1x1 convs with BN
    assert b.num_parameters() - a.num_parameters() == extra
    assert b(_input(3, 16)).shape == (2, 10)


def test_resnet_rejects_bad_depth_and_input() -> None:
    with pytest.raises(ValueError, match="6n \\+ 2"):
        ResNetCIFAR(depth=21)
    with pytest.raises(LayerInputError):
        models.resnet20()(np.zeros((2, 32, 32), np.float32))
    with pytest.raises(LayerInputError, match="3 channels"):
        models.resnet20()(_input(1, 32))


def test_shortcut_a_forward_values() -> None:
    x = _input(3, 5, n=2)
    layer = ShortcutA(3, 8, stride=2)
    y = layer(x)
    assert y.shape == (2, 8, 3, 3) and y.dtype == np.float32
    pad = (8 - 3) // 2
    np.testing.assert_array_equal(y[:, pad:pad + 3], x[:, :, ::2, ::2])
    assert not np.any(y[:, :pad]) and not np.any(y[:, pad + 3:])


@pytest.mark.parametrize(("c_in", "c_out", "stride", "size"),
                         [(2, 4, 2, 5), (3, 6, 2, 4), (2, 2, 1, 3), (2, 5, 3, 7)])
def test_shortcut_a_gradcheck(c_in: int, c_out: int, stride: int, size: int) -> None:
    gradcheck(ShortcutA(c_in, c_out, stride), _input(c_in, size).astype(np.float64))


def test_shortcut_a_rejects_fewer_channels() -> None:
    with pytest.raises(ValueError, match="out_channels >= in_channels"):
        ShortcutA(4, 2)


@pytest.mark.parametrize(("c_in", "c_out", "stride", "shortcut"),
                         [(2, 2, 1, "A"), (2, 4, 2, "A"), (2, 4, 2, "B")])
def test_basic_block_gradcheck(c_in: int, c_out: int, stride: int, shortcut: str) -> None:
    block = BasicBlock(c_in, c_out, stride, shortcut, rng=np.random.default_rng(0))
    gradcheck(block, _input(c_in, 5, n=3), tol=1e-5)


def test_small_resnet_gradcheck() -> None:
    model = ResNetCIFAR(depth=8, widths=(2, 4, 4), num_classes=3, seed=0)
    gradcheck(model, _input(3, 6, n=3), tol=1e-5, max_entries=60)


def test_resnet20_matches_pytorch() -> None:
    """Same weights, same outputs and input gradients as the benchmarks' PyTorch ResNet-20."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    ours = models.resnet20(seed=0)
    ref = torch_nets.resnet20(torch).double()  # the twin benchmarks/speed.py times
    state = ours.state_dict()
    ref_state = ref.state_dict()
    assert set(ref_state) == set(state)
    ref.load_state_dict({k: torch.from_numpy(v.astype(np.float64) if v.dtype.kind == "f" else v)
                         for k, v in state.items()})
    x = _input(3, 16, n=4, seed=5).astype(np.float64)
    g = np.random.default_rng(6).standard_normal((4, 10))
    ours.astype(np.float64)
    for training in (True, False):
        ours.train(training)
        ref.train(training)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        out_ref = ref(xt)
        out_ref.backward(torch.from_numpy(g))
        np.testing.assert_allclose(ours(x), out_ref.detach().numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-7, atol=1e-9)
