"""What notebook 14 and docs/custom-layers.md say about a layer written by a user.

The layers below are the ones the tutorial writes (a learnable Swish and a Standardize
layer with buffers). The tests check the claims it relies on: assigned Parameters and
registered buffers show up in ``parameters()`` and ``state_dict()`` under PyTorch's keys,
``gradcheck`` passes the right backward and flags a wrong one, a gradient of the wrong
shape is refused with an error naming the layer, and ``accelerate`` leaves a layer
without a fast twin as it is and the model computes what it did.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

import tinycnn
from tinycnn import (
    Conv2D,
    Flatten,
    Linear,
    MaxPool2D,
    Module,
    Parameter,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
)
from tinycnn.backend import get_array_module
from tinycnn.gradcheck import GradcheckError, gradcheck
from tinycnn.module import BackwardBeforeForwardError, LayerInputError, check_input
from tinycnn.optim import Adam

try:
    import torch
except ImportError:  # torch is an optional extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


class Swish(Module):
    """y = x * sigmoid(beta * x), one learnable beta (the tutorial's layer)."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = Parameter(np.full((1,), beta, dtype=np.float32))
        self.x = self.s = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, (2, 3, 4), "(N, ...)")
        xp = get_array_module(x)
        beta = self.beta.data.astype(x.dtype)
        self.x = x
        z = beta * x
        e = xp.exp(-xp.abs(z))  # sigmoid(z) from exp(-|z|): no overflow, accurate
        self.s = xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # for both signs
        return x * self.s

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x)
        x, s = self.x, self.s
        beta = self.beta.data.astype(x.dtype)
        ds = s * (1.0 - s)
        self.beta.accumulate((grad_out * x * x * ds).sum().reshape(1).astype(self.beta.dtype))
        return grad_out * (s + beta * x * ds)


class WrongSwish(Swish):
    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x)
        x, s = self.x, self.s
        ds = s * (1.0 - s)
        self.beta.accumulate((grad_out * x * x * ds).sum().reshape(1).astype(self.beta.dtype))
        return grad_out * s  # the product rule's second term is missing


class FlatSwish(Swish):
    def backward(self, grad_out: Any) -> Any:
        return super().backward(grad_out).reshape(len(grad_out), -1)


class Standardize(Module):
    """y = (x - mean) / std with the constants in buffers."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", np.array(mean, dtype=np.float32))
        self.register_buffer("std", np.array(std, dtype=np.float32))

    def forward(self, x: Any) -> Any:
        check_input(self, x, (2, 3, 4), "(N, ...)")
        return (x - self.mean.astype(x.dtype)) / self.std.astype(x.dtype)

    def backward(self, grad_out: Any) -> Any:
        return grad_out / self.std.astype(grad_out.dtype)


def make_model(seed: int = 0) -> Sequential:
    r = np.random.default_rng(seed)
    return Sequential(
        Standardize(0.1307, 0.3081),
        Conv2D(1, 4, 3, padding=1, rng=r), Swish(0.8), MaxPool2D(2),
        Conv2D(4, 4, 3, padding=1, rng=r), ReLU(), MaxPool2D(2),
        Flatten(), Linear(4 * 3 * 3, 5, rng=r),
    )


def test_parameters_and_buffers_are_registered_under_pytorch_keys() -> None:
    model = make_model()
    names = [n for n, _ in model.named_parameters()]
    assert "2.beta" in names
    assert model[2].beta in model.parameters()
    assert [n for n, _ in model.named_buffers()] == ["0.mean", "0.std"]
    state = model.state_dict()
    assert list(state)[:5] == ["0.mean", "0.std", "1.weight", "1.bias", "2.beta"]
    other = make_model(1)
    other[0].mean = np.array(0.9, dtype=np.float32)
    other[2].beta.data[:] = 3.0
    other.load_state_dict(state)
    assert float(other[0].mean) == pytest.approx(0.1307)
    assert float(other[2].beta.data[0]) == pytest.approx(0.8)
    state.pop("2.beta")
    with pytest.raises(tinycnn.StateDictError, match="2.beta"):
        other.load_state_dict(state)


def test_the_optimizer_trains_the_custom_parameter() -> None:
    rng = np.random.default_rng(0)
    model = make_model()
    x = rng.random((6, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    loss = SoftmaxCrossEntropy()
    before = model[2].beta.data.copy()
    optimizer = Adam(model, lr=1e-2)
    loss(model(x), y)
    model.backward(loss.backward())
    assert model[2].beta.grad is not None and model[2].beta.grad.shape == (1,)
    optimizer.step()
    assert model[2].beta.data[0] != before[0]


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (2, 2, 3, 3)])
def test_gradcheck_passes_the_right_backward(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).standard_normal(shape)
    assert gradcheck(Swish(beta=0.7), x) < 1e-6
    assert gradcheck(Standardize(0.2, 0.4), x, check_params=False) < 1e-6


def test_gradcheck_flags_the_wrong_backwards() -> None:
    x = np.random.default_rng(2).standard_normal((3, 4, 5))
    with pytest.raises(GradcheckError, match="input"):
        gradcheck(WrongSwish(beta=0.7), x)
    result = gradcheck(FlatSwish(), x, raise_on_fail=False, return_result=True)
    assert result.errors["input"] == float("inf")
    assert "expected (3, 4, 5)" in result.report()


def test_a_gradient_of_the_wrong_shape_is_refused_with_the_layer_named() -> None:
    act = Swish()
    act(np.ones((8, 6), np.float32))
    with pytest.raises(LayerInputError, match=r"Swish\.backward expected a gradient of shape "
                                              r"\(8, 6\).*got \(2, 6\)"):
        act.backward(np.ones((2, 6), np.float32))
    with pytest.raises(BackwardBeforeForwardError, match="Swish"):
        Swish().backward(np.ones((2, 6), np.float32))
    rng = np.random.default_rng(3)
    model = Sequential(Conv2D(1, 2, 3, padding=1, rng=rng), FlatSwish(), Flatten(),
                       Linear(32, 3, rng=rng))
    out = model(rng.standard_normal((2, 1, 4, 4)).astype(np.float32))
    with pytest.raises(LayerInputError, match=r"Conv2D\.backward .*\(2, 2, 4, 4\).*\(2, 32\)"):
        model.backward(np.ones_like(out))


def test_bad_input_names_the_custom_layer() -> None:
    with pytest.raises(LayerInputError, match="Swish expected a floating-point input"):
        Swish()(np.ones((2, 3), np.int64))
    with pytest.raises(LayerInputError, match="Standardize expected a 2 or 3 or 4-D input"):
        Standardize(0.0, 1.0)(np.ones(3, np.float32))


def test_accelerate_leaves_the_custom_layers_and_keeps_the_results() -> None:
    rng = np.random.default_rng(4)
    model = make_model()
    reference = copy.deepcopy(model)
    tinycnn.accelerate(model)
    assert tinycnn.is_accelerated(model)
    assert type(model[0]) is Standardize and type(model[2]) is Swish
    assert type(model[1]) is not Conv2D  # the built-in layer runs as its fast twin
    x = rng.random((4, 1, 12, 12)).astype(np.float32)
    out, ref = model(x), reference(x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    g = rng.standard_normal(ref.shape).astype(np.float32)
    np.testing.assert_allclose(model.backward(g), reference.backward(g), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model[2].beta.grad, reference[2].beta.grad, rtol=1e-4)
    assert list(model.state_dict()) == list(reference.state_dict())


@needs_torch
def test_swish_matches_pytorch() -> None:
    """beta = 1 is torch's SiLU; any beta against torch autograd, input and beta grads."""
    rng = np.random.default_rng(5)
    for _ in range(10):
        shape = tuple(int(v) for v in rng.integers(1, 5, size=rng.integers(2, 5)))
        beta = float(rng.uniform(-2, 3))
        x = rng.standard_normal(shape) * 3
        g = rng.standard_normal(shape)
        ours = Swish(beta).astype(np.float64)
        y = ours(x)
        dx = ours.backward(g)
        xt = torch.tensor(x, requires_grad=True)
        # the layer stores beta in float32: compare with the same value
        bt = torch.tensor(float(ours.beta.data[0]), dtype=torch.float64, requires_grad=True)
        yt = xt * torch.sigmoid(bt * xt)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(ours.beta.grad[0], bt.grad.item(), rtol=1e-6, atol=1e-12)
    x = rng.standard_normal((3, 4))
    silu = Swish(1.0).astype(np.float64)(x)
    np.testing.assert_allclose(silu, torch.nn.functional.silu(torch.tensor(x)).numpy(),
                               rtol=1e-6, atol=1e-12)
