"""Regression tests from an audit of the layers and the Module base against PyTorch semantics.

Each test failed before its fix:

* Conv2D's ``"images"`` path (CPU, stride > 1) crashed in backward on an empty batch with
  a raw NumPy reshape error (``reshape(0, O, -1)`` cannot infer the size);
* ``check_input`` let float16 through, so layers failed deep in their kernels with a bare
  ``NotImplementedError: float16`` instead of naming the layer;
* assigning an array to a buffer's name (``bn.running_mean = ...``) silently unregistered
  the buffer (it vanished from ``state_dict``); assigning an array to a parameter's name
  silently unregistered the parameter; ``del module.child`` left the child in
  ``parameters()`` and ``state_dict()``;
* ``Affine`` with a float32 weight and a float64 input produced float64 parameter
  gradients (and a float64 weight upcast a float32 input), unlike Conv2D and BatchNorm.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinycnn
from tinycnn.containers import Sequential
from tinycnn.gradcheck import gradcheck
from tinycnn.layers import Affine, BatchNorm2D, Conv2D, MaxPool2D, ReLU
from tinycnn.module import LayerInputError, Module, Parameter

# (kernel, stride, padding, groups, input shape): one case per Conv2D implementation
CONV_PATHS = {
    "reference": (3, 1, 1, 1, (0, 3, 4, 4)),
    "rows": (3, 1, 1, 1, (0, 3, 4, 4)),
    "wide": (3, 1, 1, 1, (0, 3, 20, 20)),
    "images": (3, 2, 1, 1, (0, 3, 40, 40)),
    "pointwise": (1, 1, 0, 1, (0, 3, 20, 20)),
    "depthwise": (3, 1, 1, 3, (0, 3, 8, 8)),
    "direct": (3, 1, 1, 1, (0, 3, 20, 20)),
}


@pytest.mark.parametrize("path", sorted(CONV_PATHS))
def test_conv_empty_batch_forward_and_backward(path: str) -> None:
    k, s, p, g, shape = CONV_PATHS[path]
    conv = Conv2D(3, 3, k, stride=s, padding=p, groups=g, rng=np.random.default_rng(0))
    if path != "reference":
        tinycnn.accelerate(conv)
        if path != "direct":  # a 3 -> 3 layer is small enough for the direct path otherwise
            conv.max_direct_macs = 0
    x = np.zeros(shape, dtype=np.float32)
    y = conv(x)
    assert getattr(conv, "impl", None) == (None if path == "reference" else path)
    assert y.shape == conv.output_shape(x.shape)
    dx = conv.backward(np.zeros_like(y))
    assert dx.shape == x.shape and dx.dtype == np.float32
    np.testing.assert_array_equal(conv.weight.grad, 0.0)
    np.testing.assert_array_equal(conv.bias.grad, 0.0)


def test_conv_empty_batch_matches_pytorch_shapes() -> None:
    torch = pytest.importorskip("torch")
    conv = Conv2D(3, 4, (3, 2), stride=(2, 3), padding=(1, 0), rng=np.random.default_rng(0))
    ref = torch.nn.Conv2d(3, 4, (3, 2), stride=(2, 3), padding=(1, 0))
    x = np.zeros((0, 3, 41, 47), dtype=np.float32)
    y = conv(x)
    assert y.shape == tuple(ref(torch.from_numpy(x)).shape)
    assert conv.backward(y).shape == x.shape


@pytest.mark.parametrize(
    "layer", [Conv2D(3, 4, 3), ReLU(), MaxPool2D(2), BatchNorm2D(3), Affine(3, 2)],
    ids=lambda m: type(m).__name__,
)
def test_float16_input_is_a_clear_error_naming_the_layer(layer: Module) -> None:
    shape = (2, 3) if isinstance(layer, Affine) else (2, 3, 6, 6)
    x = np.ones(shape, dtype=np.float16)
    with pytest.raises(LayerInputError, match=rf"{type(layer).__name__}.*float16"):
        layer(x)


def test_assigning_an_array_to_a_buffer_updates_the_buffer() -> None:
    bn = BatchNorm2D(3)
    bn.running_mean = np.full(3, 2.0, dtype=np.float32)
    bn.running_var = np.full(3, 4.0, dtype=np.float32)
    state = bn.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var",
                           "num_batches_tracked"]
    np.testing.assert_array_equal(state["running_mean"], 2.0)
    bn.eval()
    y = bn(np.full((1, 3, 2, 2), 4.0, dtype=np.float32))
    np.testing.assert_allclose(y, (4.0 - 2.0) / np.sqrt(4.0 + bn.eps), rtol=1e-6)
    BatchNorm2D(3).load_state_dict(state)  # strict: every key still there


def test_assigning_an_array_to_a_parameter_is_a_type_error() -> None:
    fc = Affine(3, 2)
    with pytest.raises(TypeError, match=r"Affine.*'weight'.*Parameter or None"):
        fc.weight = np.zeros((2, 3), dtype=np.float32)
    assert isinstance(fc.weight, Parameter)
    assert [n for n, _ in fc.named_parameters()] == ["weight", "bias"]
    fc.bias = None  # removing a parameter stays allowed, as in PyTorch
    assert [n for n, _ in fc.named_parameters()] == ["weight"]
    fc.weight = Parameter(np.ones((2, 3), dtype=np.float32))
    np.testing.assert_array_equal(fc.state_dict()["weight"], 1.0)


def test_deleting_a_child_removes_it_from_parameters_and_state_dict() -> None:
    class Net(Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = Affine(4, 3)
            self.head = Affine(3, 2)
            self.scale = Parameter(np.ones(1, dtype=np.float32))
            self.register_buffer("count", np.zeros(1))

    net = Net()
    del net.head
    del net.scale
    del net.count
    assert list(net.state_dict()) == ["body.weight", "body.bias"]
    assert len(net.parameters()) == 2
    assert [n for n, _ in net.named_modules()] == ["", "body"]
    assert not hasattr(net, "head")


def test_affine_keeps_gradients_in_the_parameter_dtype() -> None:
    rng = np.random.default_rng(0)
    fc = Affine(5, 3, rng=rng)  # float32 parameters
    x = rng.standard_normal((4, 5))  # float64 input
    y = fc(x)
    dx = fc.backward(np.ones_like(y))
    assert dx.dtype == np.float64
    assert fc.weight.grad.dtype == np.float32 and fc.bias.grad.dtype == np.float32
    w = fc.weight.data.astype(np.float64)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-12)
    np.testing.assert_allclose(fc.weight.grad, np.ones((4, 3)).T @ x, rtol=1e-6)


def test_affine_computes_in_the_input_dtype() -> None:
    rng = np.random.default_rng(1)
    fc = Affine(5, 3, dtype=np.float64, rng=rng)
    fc.bias.data = rng.standard_normal(3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y = fc(x)
    assert y.dtype == np.float32  # as Conv2D: a float32 input never meets float64 weights
    assert fc.backward(np.ones_like(y)).dtype == np.float32
    assert fc.weight.grad.dtype == np.float64


def test_affine_gradcheck_float64() -> None:
    rng = np.random.default_rng(2)
    model = Sequential(Affine(6, 4, rng=rng), ReLU(), Affine(4, 3, rng=rng))
    gradcheck(model, rng.standard_normal((5, 6)))


def test_numpy_integer_sizes_are_accepted() -> None:
    from tinycnn.data.augment import RandomCrop
    from tinycnn.layers.lrn import LocalResponseNorm

    assert RandomCrop(np.int64(24), padding=2).size == (24, 24)
    lrn = LocalResponseNorm(np.int64(5))
    assert lrn.size == 5 and type(lrn.size) is int
    with pytest.raises(ValueError, match="LocalResponseNorm"):
        LocalResponseNorm(True)


def test_a_module_reached_twice_is_listed_once() -> None:
    from tinycnn.containers import Sequential
    from tinycnn.layers import ReLU

    act = ReLU()
    model = Sequential(act, Sequential(act))
    names = [name for name, _ in model.named_modules()]
    assert names == ["", "0", "1"]  # the shared ReLU at its first name, as in PyTorch
    assert sum(m is act for m in model.modules()) == 1


def test_sgd_momentum_follows_pytorch_rule() -> None:
    from tinycnn import optim
    from tinycnn.layers import Affine

    optim.SGD(Affine(2, 2), lr=0.1, momentum=1.0)  # allowed in PyTorch too
    with pytest.raises(ValueError, match="momentum must be >= 0"):
        optim.SGD(Affine(2, 2), lr=0.1, momentum=-0.1)
