"""BatchNorm1D / BatchNorm2D: gradient checks (alone and inside stacks), running statistics,
eval mode, PyTorch parity, bad inputs and dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.layers import Affine, BatchNorm1D, BatchNorm2D, Conv2D, ReLU, Tanh
from tinycnn.module import BackwardBeforeForwardError, LayerInputError, Module

RNG = np.random.default_rng(1234)


class Chain(Module):
    """A minimal chain for these tests, so that they do not depend on ``containers``."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)
        self.layers = layers

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_out):
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out


def randomize(bn, rng, stats: bool = True):
    """Non-trivial gamma/beta (and running statistics) so no term of the gradient vanishes."""
    c = bn.num_features
    if bn.affine:
        bn.weight.data[...] = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
        bn.bias.data[...] = rng.normal(size=c)
    if stats and bn.track_running_stats:
        bn.running_mean[...] = rng.normal(size=c)
        bn.running_var[...] = rng.uniform(0.5, 2.0, c)
    return bn


def reduce_axes(x):
    return (0, *range(2, x.ndim))


def values_per_channel(shape) -> int:
    return int(np.prod(shape)) // shape[1]


# At least 3 values per channel: with 2, xhat is +-1 whatever x is, the true input gradient
# is O(eps) and the check would compare rounding noise.
shapes_2d = st.tuples(
    st.integers(2, 4), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)
).filter(lambda s: values_per_channel(s) >= 3)
shapes_1d = st.one_of(
    st.tuples(st.integers(3, 6), st.integers(1, 4)),
    st.tuples(st.integers(2, 4), st.integers(1, 3), st.integers(1, 4)),
).filter(lambda s: values_per_channel(s) >= 3)


@settings(max_examples=25, deadline=None)
@given(shape=shapes_2d, training=st.booleans(), affine=st.booleans(), seed=st.integers(0, 999))
def test_gradcheck_batchnorm2d(shape, training, affine, seed):
    rng = np.random.default_rng(seed)
    bn = randomize(BatchNorm2D(shape[1], affine=affine), rng).train(training)
    x = rng.normal(1.0, 2.0, size=shape)
    assert gradcheck(bn, x, seed=seed) < 1e-6


@settings(max_examples=25, deadline=None)
@given(shape=shapes_1d, training=st.booleans(), affine=st.booleans(), seed=st.integers(0, 999))
def test_gradcheck_batchnorm1d(shape, training, affine, seed):
    rng = np.random.default_rng(seed)
    bn = randomize(BatchNorm1D(shape[1], affine=affine), rng).train(training)
    x = rng.normal(-1.0, 3.0, size=shape)
    assert gradcheck(bn, x, seed=seed) < 1e-6


@pytest.mark.parametrize("cls, shape", [(BatchNorm1D, (5, 3)), (BatchNorm2D, (3, 2, 3, 3))])
def test_gradcheck_without_running_stats_uses_batch_statistics_in_eval(cls, shape):
    bn = randomize(cls(shape[1], track_running_stats=False), RNG).eval()
    assert gradcheck(bn, RNG.normal(size=shape)) < 1e-6


# The layer before BatchNorm has no bias (as usual): in training mode BatchNorm subtracts it
# away, its gradient is exactly 0 and a relative error of two zeros is meaningless.
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_affine_batchnorm1d_tanh_stack(training):
    rng = np.random.default_rng(7)
    first = Affine(5, 4, bias=False, rng=rng)
    net = Chain(first, randomize(BatchNorm1D(4), rng), Tanh(), Affine(4, 3, rng=rng))
    net.train(training)
    assert gradcheck(net, rng.normal(size=(6, 5))) < 1e-6


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_conv_batchnorm2d_relu_stack(training):
    rng = np.random.default_rng(8)
    conv = Conv2D(2, 3, 3, padding=1, bias=False, rng=rng)
    net = Chain(conv, randomize(BatchNorm2D(3), rng), ReLU())
    net.train(training)
    assert gradcheck(net, rng.normal(size=(2, 2, 4, 4))) < 1e-6


def test_gradcheck_detects_a_wrong_batch_statistics_gradient():
    """The check can fail: the eval-mode formula is wrong in training mode."""

    class Wrong(BatchNorm2D):
        def backward(self, grad_out):
            self.batch_stats = False
            return super().backward(grad_out)

    bn = randomize(Wrong(2), RNG)
    err = gradcheck(bn, RNG.normal(size=(3, 2, 2, 2)), raise_on_fail=False)
    assert err > 1e-2


@pytest.mark.parametrize("shape", [(8, 3), (6, 3, 5), (4, 3, 2, 5)])
@pytest.mark.parametrize("momentum", [0.1, 0.7])
def test_running_statistics_follow_the_exponential_formula(shape, momentum):
    cls = BatchNorm2D if len(shape) == 4 else BatchNorm1D
    bn = cls(3, momentum=momentum, dtype=np.float64)
    mean, var = np.zeros(3), np.ones(3)
    for step in range(1, 6):
        x = RNG.normal(step, 1.0 + step, size=shape)
        bn(x)
        axes = reduce_axes(x)
        mean = (1 - momentum) * mean + momentum * x.mean(axis=axes)
        var = (1 - momentum) * var + momentum * x.var(axis=axes, ddof=1)
        np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var, var, rtol=1e-12)
        assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()
        assert int(bn.num_batches_tracked) == step
    assert bn.state_dict()["num_batches_tracked"] == 5


def test_momentum_none_is_a_cumulative_average():
    bn = BatchNorm2D(2, momentum=None, dtype=np.float64)
    batches = [RNG.normal(i, 1 + i, size=(3, 2, 2, 3)) for i in range(4)]
    for x in batches:
        bn(x)
    means = [x.mean(axis=(0, 2, 3)) for x in batches]
    variances = [x.var(axis=(0, 2, 3), ddof=1) for x in batches]
    np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, np.mean(variances, axis=0), rtol=1e-12)


def test_training_normalizes_per_channel_over_batch_and_space():
    bn = BatchNorm2D(3, dtype=np.float64)
    x = RNG.normal(size=(4, 3, 5, 5)) * np.array([1.0, 5.0, 0.1])[:, None, None] + 3.0
    y = bn(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), var / (var + bn.eps), rtol=1e-10)
    # per channel, not per activation: single positions are not standardized
    assert np.abs(y.mean(axis=0)).max() > 0.1


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (2, 3, 4, 4)])
def test_eval_uses_running_statistics_and_leaves_them_alone(shape):
    cls = BatchNorm2D if len(shape) == 4 else BatchNorm1D
    bn = randomize(cls(3, eps=1e-3, dtype=np.float64), RNG).eval()
    before = {k: v.copy() for k, v in bn.state_dict().items()}
    x = RNG.normal(size=shape)
    y = bn(x)
    b = (1, 3) + (1,) * (len(shape) - 2)
    expected = (x - bn.running_mean.reshape(b)) / np.sqrt(bn.running_var.reshape(b) + 1e-3)
    expected = expected * bn.weight.data.reshape(b) + bn.bias.data.reshape(b)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    g = RNG.normal(size=shape)
    dx = bn.backward(g)
    scale = bn.weight.data / np.sqrt(bn.running_var + 1e-3)
    np.testing.assert_allclose(dx, g * scale.reshape(b), rtol=1e-12)
    # one sample is fine in eval mode
    assert bn(x[:1]).shape == x[:1].shape


def test_without_running_stats_no_buffers_and_batch_statistics_in_eval():
    bn = BatchNorm1D(3, track_running_stats=False, affine=False).eval()
    assert set(bn.state_dict()) == set()
    y = bn(RNG.normal(2.0, 3.0, size=(50, 3)))
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)


@pytest.mark.parametrize("cls, shape", [(BatchNorm1D, (1, 4)), (BatchNorm2D, (1, 4, 1, 1))])
def test_one_value_per_channel_in_training_is_an_error(cls, shape):
    bn = cls(4)
    with pytest.raises(LayerInputError, match=rf"{cls.__name__}.*more than 1 value per channel"):
        bn(np.ones(shape, np.float32))
    assert int(bn.num_batches_tracked) == 0


@pytest.mark.parametrize(
    "cls, x, pattern",
    [
        (BatchNorm2D, np.zeros((2, 3, 4), np.float32), r"BatchNorm2D.*4-D.*\(2, 3, 4\)"),
        (BatchNorm2D, np.zeros((2, 5, 4, 4), np.float32), r"BatchNorm2D expected 3 chan.*got 5"),
        (BatchNorm2D, np.zeros((2, 3, 4, 4), np.int32), r"BatchNorm2D.*floating.*int32"),
        (BatchNorm1D, np.zeros((2, 3, 4, 4), np.float32), r"BatchNorm1D.*2 or 3-D"),
        (BatchNorm1D, np.zeros((2, 4), np.float32), r"BatchNorm1D expected 3 .*got 4"),
        (BatchNorm1D, np.zeros(3, np.float32), r"BatchNorm1D.*got shape \(3,\)"),
    ],
)
def test_bad_inputs_name_the_layer(cls, x, pattern):
    with pytest.raises(LayerInputError, match=pattern):
        cls(3)(x)


@pytest.mark.parametrize("cls", [BatchNorm1D, BatchNorm2D])
def test_backward_before_forward(cls):
    with pytest.raises(BackwardBeforeForwardError, match=cls.__name__):
        cls(3).backward(np.ones((2, 3), np.float32))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 4)])
def test_float32_stays_float32(training, shape):
    cls = BatchNorm2D if len(shape) == 4 else BatchNorm1D
    bn = cls(3).train(training)
    x = RNG.normal(size=shape).astype(np.float32)
    g = RNG.normal(size=shape).astype(np.float32)
    g_before = g.copy()
    y = bn(x)
    dx = bn.backward(g)
    np.testing.assert_array_equal(g, g_before)  # grad_out untouched
    assert y.dtype == dx.dtype == np.float32
    assert bn.weight.grad.dtype == bn.bias.grad.dtype == np.float32
    assert bn.running_mean.dtype == bn.running_var.dtype == np.float32


def test_parameter_gradients_accumulate_and_freeze():
    bn = randomize(BatchNorm1D(3, dtype=np.float64), RNG)
    x, g = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    bn(x)
    bn.backward(g)
    first = bn.weight.grad.copy()
    bn(x)
    bn.backward(g)
    np.testing.assert_allclose(bn.weight.grad, 2 * first)
    bn.zero_grad()
    bn.freeze()
    bn(x)
    bn.backward(g)
    assert bn.weight.grad is None and bn.bias.grad is None


def test_invalid_arguments():
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm2D(3, momentum=1.5)
    with pytest.raises(ValueError, match="num_features"):
        BatchNorm1D(0)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 4, 5)])
def test_matches_pytorch(shape, momentum):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed; parity test skipped")
    if len(shape) == 4:
        cls, tcls = BatchNorm2D, torch.nn.BatchNorm2d
    else:
        cls, tcls = BatchNorm1D, torch.nn.BatchNorm1d
    bn = randomize(cls(3, momentum=momentum, dtype=np.float64), RNG, stats=False)
    ref = tcls(3, momentum=momentum).double()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in bn.state_dict().items()}, strict=True)
    for training in (True, True, True, False):
        bn.train(training)
        ref.train(training)
        x, g = RNG.normal(1.0, 2.0, size=shape), RNG.normal(size=shape)
        xt = torch.tensor(x, requires_grad=True)
        yt = ref(xt)
        yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(bn(x), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bn.backward(g), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.weight.grad, ref.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(bn.bias.grad, ref.bias.grad.numpy(), rtol=1e-10)
    ours = bn.state_dict()
    assert list(ours) == list(ref.state_dict())
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(ours[k], v.numpy(), rtol=1e-12)
    # and a PyTorch state dict loads strictly into a fresh layer
    fresh = cls(3)
    fresh.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}, strict=True)
    assert int(fresh.num_batches_tracked) == 3 and fresh.running_mean.dtype == np.float32
