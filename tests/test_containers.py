"""Sequential / Residual / Concat: float64 gradient checks (alone, nested, a whole CNN with
its loss), the container API, clear errors, state-dict naming and save/load round trips."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import tinycnn
from tinycnn.containers import Concat, Identity, Residual, Sequential
from tinycnn.gradcheck import gradcheck
from tinycnn.layers import (
    Affine,
    BatchNorm2D,
    Conv2D,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Tanh,
)
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.module import BackwardBeforeForwardError, LayerInputError, Module

TOL = 1e-6


def randomize_bn(bn: BatchNorm2D, rng: np.random.Generator) -> BatchNorm2D:
    """Non-trivial gamma/beta/running statistics, so no gradient term vanishes."""
    c = bn.num_features
    bn.weight.data[...] = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
    bn.bias.data[...] = rng.normal(size=c)
    bn.running_mean[...] = rng.normal(size=c)
    bn.running_var[...] = rng.uniform(0.5, 2.0, c)
    return bn


def tie_free(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Distinct values 0.1 apart in random order: no max-pool window has a near tie."""
    return rng.permutation(np.arange(int(np.prod(shape))) * 0.1).reshape(shape) - 1.0


class WithLoss(Module):
    """``model`` followed by a loss on a fixed target, so the pair is checked as one."""

    def __init__(self, model: Module, loss: SoftmaxCrossEntropy, target: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.target = target

    def forward(self, x):
        return self.loss(self.model(x), self.target)

    def backward(self, grad_out):
        return self.model.backward(self.loss.backward(grad_out))


def mlp(rng: np.random.Generator) -> Sequential:
    return Sequential(Affine(5, 6, rng=rng), ReLU(), Affine(6, 4, rng=rng), Tanh())


# -- Sequential -------------------------------------------------------------------------


def test_sequential_gradcheck():
    rng = np.random.default_rng(0)
    assert gradcheck(mlp(rng), rng.normal(size=(3, 5)), tol=TOL) < TOL


def test_sequential_api_names_indexing_iteration_append():
    rng = np.random.default_rng(1)
    a, r, b = Affine(3, 4, rng=rng), ReLU(), Affine(4, 2, rng=rng)
    seq = Sequential(a, r)
    assert len(seq) == 2
    assert [n for n, _ in seq.named_children()] == ["0", "1"]
    assert seq[0] is a and seq[-1] is r and list(seq) == [a, r]
    assert seq.append(b) is seq
    assert len(seq) == 3 and seq[2] is b
    sub = seq[1:]
    assert isinstance(sub, Sequential) and list(sub) == [r, b]
    assert [n for n, _ in sub.named_children()] == ["1", "2"]  # PyTorch keeps the names
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    with pytest.raises(TypeError, match="takes Modules"):
        Sequential(a, "relu")
    with pytest.raises(TypeError, match="takes a Module"):
        seq.append(np.ones(3))


def test_sequential_from_ordered_dict_names_state_dict():
    rng = np.random.default_rng(2)
    seq = Sequential(OrderedDict([("fc1", Affine(3, 4, rng=rng)), ("act", ReLU()),
                                  ("fc2", Affine(4, 2, rng=rng))]))
    assert list(seq.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert seq[2] is seq.fc2
    for bad in ("forward", "training", "a.b", ""):
        with pytest.raises(KeyError, match="not allowed"):
            Sequential(OrderedDict([(bad, ReLU())]))


def test_sequential_backward_runs_children_in_reverse():
    calls = []

    class Probe(Module):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def forward(self, x):
            calls.append(("f", self.tag))
            return x * 2.0

        def backward(self, g):
            calls.append(("b", self.tag))
            return g * 2.0

    seq = Sequential(Probe("a"), Probe("b"), Probe("c"))
    x = np.ones((2, 3))
    np.testing.assert_array_equal(seq(x), 8.0 * x)
    np.testing.assert_array_equal(seq.backward(np.ones((2, 3))), 8.0 * x)
    assert calls == [("f", "a"), ("f", "b"), ("f", "c"), ("b", "c"), ("b", "b"), ("b", "a")]


def _relu_pool_net(rng: np.random.Generator, pool: MaxPool2D) -> Sequential:
    return Sequential(Conv2D(2, 3, 3, padding=1, rng=rng), ReLU(), pool, ReLU(), pool.__class__(
        pool.kernel_size, pool.stride, pool.padding), Flatten())


@pytest.mark.parametrize("pool", [MaxPool2D(2), MaxPool2D(3, stride=2, padding=1),
                                  MaxPool2D(3, stride=1, padding=1)])
def test_accelerated_relu_pool_chain_matches_and_caches_as_written(pool):
    """The engine changes no output, no gradient and no layer's cache, ties and zeros
    included: the ReLU before a pool still holds its full-size output."""
    rng = np.random.default_rng(30)
    net = _relu_pool_net(rng, pool)
    x = rng.normal(size=(4, 2, 7, 7))
    x[:, :, ::3] = 0.0  # many zero and tied pre-activations
    g = rng.normal(size=net(x).shape)
    results = []
    for enabled in (True, False):
        tinycnn.accelerate(net, enabled)
        net.zero_grad()
        y = net(x)
        dx = net.backward(g)
        assert net[1].y.shape == net[0](x).shape  # the ReLU's cache: its own output
        results.append((y, dx, [p.grad.copy() for p in net.parameters()]))
    (y1, dx1, p1), (y0, dx0, p0) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12, atol=1e-12)
    for a, b in zip(p1, p0, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_summary_lists_relu_pool_in_written_order():
    from tinycnn.summary import summary

    rng = np.random.default_rng(32)
    net = _relu_pool_net(rng, MaxPool2D(2))
    rows = summary(net, (2, 8, 8), print_fn=None)["layers"]
    assert [r["type"] for r in rows] == [type(m).__name__ for m in net]
    assert rows[1]["output_shape"] == (1, 3, 8, 8)


def test_float32_stays_float32_through_containers():
    rng = np.random.default_rng(3)
    net = Sequential(Residual(mlp(rng)[:2], Affine(5, 6, rng=rng), ReLU()),
                     Concat(Affine(6, 2, rng=rng), Identity()))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    y = net(x)
    assert y.dtype == np.float32 and y.shape == (4, 8)
    assert net.backward(np.ones_like(y)).dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in net.parameters())


# -- Residual ---------------------------------------------------------------------------


def test_residual_identity_shortcut_with_post_relu_gradcheck():
    rng = np.random.default_rng(4)
    block = Residual(Sequential(Affine(5, 5, rng=rng), Tanh(), Affine(5, 5, rng=rng)),
                     post=ReLU())
    assert [n for n, _ in block.named_children()] == ["body", "post"]
    assert gradcheck(block, rng.normal(size=(4, 5)), tol=TOL) < TOL


def test_residual_identity_without_post_adds_input_gradient():
    rng = np.random.default_rng(5)
    body = Affine(3, 3, rng=rng)
    block = Residual(body)
    x = rng.normal(size=(2, 3))
    np.testing.assert_allclose(block(x), body(x) + x)
    g = rng.normal(size=(2, 3))
    body.zero_grad()
    np.testing.assert_allclose(block.backward(g), g @ body.weight.data + g)
    assert gradcheck(block, x, tol=TOL) < TOL


def test_residual_affine_projection_gradcheck():
    rng = np.random.default_rng(6)
    block = Residual(Sequential(Affine(4, 6, rng=rng), ReLU(), Affine(6, 3, rng=rng)),
                     shortcut=Affine(4, 3, rng=rng), post=Tanh())
    assert [n for n, _ in block.named_children()] == ["body", "shortcut", "post"]
    assert gradcheck(block, rng.normal(size=(3, 4)), tol=TOL) < TOL


@pytest.mark.parametrize("training", [True, False])
def test_residual_conv_projection_block_gradcheck(training):
    """A ResNet downsampling block: 3x3 stride 2 body, 1x1 stride 2 conv + BN shortcut.

    Convolutions before BatchNorm have no bias (as in ResNet): in training mode BN removes
    any per-channel constant, so such a bias has a zero gradient and a relative error of
    pure rounding noise.
    """
    rng = np.random.default_rng(7)
    body = Sequential(
        Conv2D(2, 3, 3, stride=2, padding=1, bias=False, rng=rng),
        randomize_bn(BatchNorm2D(3), rng),
        ReLU(),
        Conv2D(3, 3, 3, padding=1, bias=False, rng=rng),
        randomize_bn(BatchNorm2D(3), rng),
    )
    shortcut = Sequential(Conv2D(2, 3, 1, stride=2, bias=False, rng=rng),
                          randomize_bn(BatchNorm2D(3), rng))
    block = Residual(body, shortcut, ReLU()).train(training)
    x = rng.normal(size=(2, 2, 6, 6))
    assert block(x).shape == (2, 3, 3, 3)
    assert gradcheck(block, x, tol=TOL, max_entries=150) < TOL


def test_residual_shape_mismatch_names_both_shapes():
    rng = np.random.default_rng(8)
    with pytest.raises(LayerInputError, match=r"\(2, 3\).*\(2, 4\)"):
        Residual(Affine(4, 3, rng=rng))(rng.normal(size=(2, 4)))
    with pytest.raises(LayerInputError, match=r"\(2, 3\).*shortcut.*\(2, 5\)"):
        Residual(Affine(4, 3, rng=rng), Affine(4, 5, rng=rng))(rng.normal(size=(2, 4)))
    with pytest.raises(TypeError, match="shortcut must be a Module"):
        Residual(Affine(4, 3, rng=rng), shortcut="identity")


# -- Concat -----------------------------------------------------------------------------


@pytest.mark.parametrize("widths", [(2, 3), (1, 4, 2)])
def test_concat_affine_branches_gradcheck(widths):
    rng = np.random.default_rng(9)
    cat = Concat(*[Sequential(Affine(4, w, rng=rng), Tanh()) for w in widths])
    x = rng.normal(size=(3, 4))
    assert cat(x).shape == (3, sum(widths))
    assert gradcheck(cat, x, tol=TOL) < TOL


def test_concat_inception_style_conv_branches_gradcheck():
    rng = np.random.default_rng(10)
    cat = Concat(OrderedDict([
        ("b1x1", Conv2D(2, 2, 1, rng=rng)),
        ("b3x3", Sequential(Conv2D(2, 1, 1, rng=rng), ReLU(), Conv2D(1, 3, 3, padding=1, rng=rng))),
        ("pool", Sequential(MaxPool2D(3, stride=1, padding=1), Conv2D(2, 1, 1, rng=rng))),
    ]))
    x = tie_free((2, 2, 4, 4), rng)
    assert cat(x).shape == (2, 6, 4, 4)
    assert {k.split(".")[0] for k in cat.state_dict()} == {"b1x1", "b3x3", "pool"}
    assert gradcheck(cat, x, tol=TOL, max_entries=150) < TOL


def test_concat_densenet_layer_identity_branch_and_last_axis():
    rng = np.random.default_rng(11)
    dense = Concat(Identity(), Sequential(Affine(3, 2, rng=rng), ReLU()))
    x = rng.normal(size=(4, 3))
    y = dense(x)
    np.testing.assert_array_equal(y[:, :3], x)
    assert gradcheck(dense, x, tol=TOL) < TOL
    last = Concat(Tanh(), Sequential(Tanh(), Tanh()), axis=-1)
    x3 = rng.normal(size=(2, 3, 4))
    assert last(x3).shape == (2, 3, 8)
    assert gradcheck(last, x3, tol=TOL) < TOL


def test_concat_branches_disagreeing_on_other_axes_is_a_clear_error():
    rng = np.random.default_rng(12)
    cat = Concat(Conv2D(2, 3, 3, padding=1, rng=rng), Conv2D(2, 3, 3, rng=rng))
    with pytest.raises(LayerInputError, match=r"branch '1' gave \(1, 3, 3, 3\)"):
        cat(rng.normal(size=(1, 2, 5, 5)))
    with pytest.raises(LayerInputError, match="axis 5 is out of range"):
        Concat(Tanh(), axis=5)(rng.normal(size=(2, 3)))
    with pytest.raises(ValueError, match="at least one branch"):
        Concat()


@pytest.mark.parametrize("container", ["residual", "concat"])
def test_backward_before_forward_is_a_clear_error(container):
    rng = np.random.default_rng(13)
    mod = Residual(Affine(2, 2, rng=rng)) if container == "residual" else Concat(Tanh())
    with pytest.raises(BackwardBeforeForwardError, match="before forward"):
        mod.backward(np.ones((1, 2)))


# -- nesting and whole models -------------------------------------------------------------


def test_nested_residual_inside_sequential_inside_concat_gradcheck():
    rng = np.random.default_rng(14)
    inner = Sequential(
        Affine(4, 5, rng=rng),
        Residual(Sequential(Affine(5, 5, rng=rng), Tanh()), post=ReLU()),
        Residual(Affine(5, 3, rng=rng), shortcut=Affine(5, 3, rng=rng)),
    )
    net = Sequential(Concat(inner, Sequential(Affine(4, 2, rng=rng), Tanh()), Identity()),
                     Affine(9, 2, rng=rng))
    x = rng.normal(size=(3, 4))
    assert net(x).shape == (3, 2)
    assert gradcheck(net, x, tol=TOL) < TOL


def test_nested_state_dict_names_are_dotted_paths():
    rng = np.random.default_rng(15)
    net = Sequential(
        Conv2D(1, 2, 3, rng=rng),
        BatchNorm2D(2),
        Residual(Sequential(Conv2D(2, 2, 3, padding=1, bias=False, rng=rng), BatchNorm2D(2)),
                 shortcut=Conv2D(2, 2, 1, bias=False, rng=rng), post=ReLU()),
        Concat(Identity(), Conv2D(2, 1, 1, rng=rng)),
    )
    assert set(net.state_dict()) == {
        "0.weight", "0.bias",
        "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "2.body.0.weight",
        "2.body.1.weight", "2.body.1.bias", "2.body.1.running_mean", "2.body.1.running_var",
        "2.shortcut.weight",
        "3.1.weight", "3.1.bias",
    } | {k for k in net.state_dict() if k.endswith("num_batches_tracked")}
    assert [n for n, _ in net.named_parameters()][:3] == ["0.weight", "0.bias", "1.weight"]


def tiny_cnn(rng: np.random.Generator, conv_bias: bool = True) -> Sequential:
    return Sequential(
        Conv2D(1, 2, 3, padding=1, bias=conv_bias, rng=rng),
        randomize_bn(BatchNorm2D(2), rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Affine(8, 3, rng=rng),
    )


@pytest.mark.parametrize("training", [True, False])
def test_tiny_cnn_with_its_loss_gradcheck(training):
    rng = np.random.default_rng(16)
    # In training mode BatchNorm cancels a conv bias: its gradient is exactly zero.
    net = tiny_cnn(rng, conv_bias=not training).train(training)
    labels = np.array([0, 2, 1])
    x = tie_free((3, 1, 4, 4), rng)
    assert gradcheck(WithLoss(net, SoftmaxCrossEntropy(), labels), x, tol=TOL) < TOL
    assert gradcheck(net, x, tol=TOL) < TOL


def test_dropout_inside_residual_is_replayed_by_gradcheck():
    rng = np.random.default_rng(17)
    block = Residual(Sequential(Affine(4, 4, rng=rng), Dropout(0.5, seed=3)), post=Tanh())
    assert gradcheck(block, rng.normal(size=(3, 4)), tol=TOL) < TOL


def test_parameter_gradients_accumulate_across_backward_calls():
    rng = np.random.default_rng(18)
    net = Residual(Affine(3, 3, rng=rng), shortcut=Affine(3, 3, rng=rng))
    x, g = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    net(x)
    net.backward(g)
    first = {n: p.grad.copy() for n, p in net.named_parameters()}
    net.backward(g)
    for n, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * first[n])


# -- state dicts ----------------------------------------------------------------------------


def test_load_state_dict_errors_list_problems_and_load_nothing():
    rng = np.random.default_rng(19)
    net = Sequential(Affine(3, 4, rng=rng), Residual(Affine(4, 4, rng=rng)))
    before = net.state_dict()
    bad = dict(before)
    bad["1.body.weight"] = np.zeros((4, 5))
    bad["0.weight"] = np.full((4, 3), 7.0)
    with pytest.raises(KeyError, match=r"1\.body\.weight: model has \(4, 4\), got \(4, 5\)"):
        net.load_state_dict(bad)
    missing = {k: v for k, v in before.items() if k != "0.bias"}
    with pytest.raises(KeyError, match=r"missing keys: \['0.bias'\]"):
        net.load_state_dict({**missing, "0.weight": np.full((4, 3), 7.0)})
    with pytest.raises(KeyError, match=r"unexpected keys: \['2.weight'\]"):
        net.load_state_dict({**before, "2.weight": np.zeros(1)})
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_container_model_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(20)
    net = tiny_cnn(rng).eval()
    x = rng.normal(size=(2, 1, 4, 4)).astype(np.float32)
    path = tmp_path / "model.npz"
    net.save(path)
    other = tiny_cnn(np.random.default_rng(99)).eval()
    assert not np.allclose(other(x), net(x))
    other.load(path)
    np.testing.assert_array_equal(other(x), net(x))
    assert set(other.state_dict()) == set(net.state_dict())
