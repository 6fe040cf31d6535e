"""The PyTorch losses beyond plain cross-entropy and MSE, and ``reduction`` on every loss.

CrossEntropyLoss / NLLLoss (class weights, ignore_index, spatial inputs, label smoothing),
BCELoss, BCEWithLogitsLoss, SmoothL1Loss, HuberLoss, KLDivLoss, and the Softmax and
LogSoftmax layers: float64 gradient checks, values and input gradients against PyTorch over
random configurations, the everything-ignored case, and clear errors for bad input.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinycnn
from tinycnn.gradcheck import gradcheck
from tinycnn.layers import LogSoftmax, Softmax
from tinycnn.losses import (
    BCELoss,
    BCEWithLogits,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
    SoftmaxCrossEntropy,
)
from tinycnn.module import BackwardBeforeForwardError, LayerInputError

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is an optional extra
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch is not installed: the comparison with it cannot run"
)
# PyTorch warns that KLDivLoss's 'mean' is not 'batchmean': both are compared on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
TOL = 1e-6
REDUCTIONS = ["mean", "sum", "none"]


# --- random configurations ----------------------------------------------------------------


def class_config(seed: int, soft_allowed: bool = True) -> dict:
    """Scores of a random rank, labels with some ignored, maybe class weights and smoothing."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 6))
    shape = [(int(rng.integers(1, 5)), c), (int(rng.integers(1, 4)), c, int(rng.integers(1, 4))),
             (2, c, int(rng.integers(1, 3)), int(rng.integers(1, 4))), (c,)][seed % 4]
    x = rng.normal(size=shape) * 2
    label_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    ignore_index = int(rng.choice([-100, 1, c + 3]))  # also a valid class, as PyTorch allows
    labels = rng.integers(0, c, size=label_shape)
    if labels.size > 1:
        labels.reshape(-1)[rng.random(labels.size) < 0.3] = ignore_index
    weight = rng.uniform(0.2, 3.0, size=c) if rng.random() < 0.6 else None
    soft = soft_allowed and rng.random() < 0.25
    target = rng.dirichlet(np.ones(c), size=label_shape) if soft else labels
    if soft and len(shape) > 1:
        target = np.moveaxis(target, -1, 1)
    if soft:
        ignore_index = -100  # PyTorch refuses a class index as ignore_index for soft targets
    return {
        "x": x, "target": target, "weight": weight, "ignore_index": ignore_index,
        "reduction": REDUCTIONS[seed % 3], "smoothing": float(rng.choice([0.0, 0.0, 0.2])),
        "upstream": rng.normal(size=label_shape), "scalar": float(rng.normal()),
    }


def run_ours(loss, x, target, reduction, upstream, scalar):
    value = loss(x, target)
    grad = upstream if reduction == "none" else scalar
    return np.asarray(value), loss.backward(grad)


def run_torch(fn, x, target, reduction, upstream, scalar, **kwargs):
    tx = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(target)
    ref = fn(tx, tt, reduction=reduction, **kwargs)
    grad = torch.tensor(upstream) if reduction == "none" else torch.tensor(scalar)
    ref.backward(grad)
    return ref.detach().numpy(), tx.grad.numpy()


def assert_close(ours, ref):
    np.testing.assert_allclose(ours, ref, rtol=TOL, atol=1e-12)


# --- cross-entropy and NLL ----------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("seed", range(48))
def test_cross_entropy_matches_pytorch(seed):
    cfg = class_config(seed)
    soft = cfg["target"].dtype.kind == "f"
    weight = cfg["weight"]
    loss = CrossEntropyLoss(weight, ignore_index=cfg["ignore_index"],
                            reduction=cfg["reduction"], label_smoothing=cfg["smoothing"])
    value, dx = run_ours(loss, cfg["x"], cfg["target"], cfg["reduction"], cfg["upstream"],
                         cfg["scalar"])
    ref, ref_dx = run_torch(
        F.cross_entropy, cfg["x"], cfg["target"], cfg["reduction"], cfg["upstream"],
        cfg["scalar"], weight=None if weight is None else torch.tensor(weight),
        ignore_index=cfg["ignore_index"], label_smoothing=cfg["smoothing"],
    )
    if not soft and cfg["reduction"] == "mean" and np.all(cfg["target"] == cfg["ignore_index"]):
        assert np.isnan(value) and np.isnan(ref)
    else:
        assert_close(value, ref)
    assert value.shape == ref.shape and dx.shape == cfg["x"].shape
    assert_close(dx, ref_dx)


@needs_torch
@pytest.mark.parametrize("seed", range(48))
def test_nll_matches_pytorch(seed):
    cfg = class_config(seed, soft_allowed=False)
    axis = 0 if cfg["x"].ndim == 1 else 1
    logp = np.asarray(F.log_softmax(torch.tensor(cfg["x"]), dim=axis))
    loss = NLLLoss(cfg["weight"], ignore_index=cfg["ignore_index"], reduction=cfg["reduction"])
    value, dx = run_ours(loss, logp, cfg["target"], cfg["reduction"], cfg["upstream"],
                         cfg["scalar"])
    ref, ref_dx = run_torch(
        F.nll_loss, logp, cfg["target"], cfg["reduction"], cfg["upstream"], cfg["scalar"],
        weight=None if cfg["weight"] is None else torch.tensor(cfg["weight"]),
        ignore_index=cfg["ignore_index"],
    )
    np.testing.assert_allclose(value, ref, rtol=TOL, atol=1e-12, equal_nan=True)
    assert value.shape == ref.shape
    assert_close(dx, ref_dx)


@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_softmax_cross_entropy_sequences_with_weights_match_pytorch(reduction):
    """SoftmaxCrossEntropy keeps its class-last layout (N, T, K); PyTorch's is (N, K, T)."""
    rng = np.random.default_rng(7)
    logits, labels = rng.normal(size=(3, 5, 4)), rng.integers(0, 4, size=(3, 5))
    labels[0, 2:] = -100
    weight, upstream = rng.uniform(0.5, 2, size=4), rng.normal(size=(3, 5))
    loss = SoftmaxCrossEntropy(0.1, weight=weight, reduction=reduction)
    value, dx = run_ours(loss, logits, labels, reduction, upstream, 0.7)
    ref, ref_dx = run_torch(
        lambda x, t, **k: F.cross_entropy(x.permute(0, 2, 1), t, **k), logits, labels,
        reduction, upstream, 0.7, weight=torch.tensor(weight), label_smoothing=0.1,
    )
    assert_close(value, ref)
    assert_close(dx, ref_dx)


@pytest.mark.parametrize("seed", range(12))
def test_cross_entropy_and_nll_gradcheck(seed):
    cfg = class_config(seed)
    ce = CrossEntropyLoss(cfg["weight"], ignore_index=cfg["ignore_index"],
                          reduction=cfg["reduction"], label_smoothing=cfg["smoothing"])
    if cfg["reduction"] == "mean" and np.all(cfg["target"] == cfg["ignore_index"]):
        pytest.skip("every label is ignored: the mean is NaN, there is no gradient to check")
    assert gradcheck(ce, cfg["x"], cfg["target"], seed=seed, tol=TOL) < TOL
    cfg = class_config(seed, soft_allowed=False)
    nll = NLLLoss(cfg["weight"], ignore_index=cfg["ignore_index"], reduction=cfg["reduction"])
    assert gradcheck(nll, cfg["x"], cfg["target"], seed=seed, tol=TOL) < TOL


def test_nll_is_minus_the_weighted_labelled_entry():
    """Written out by hand: -(w_y x_y) summed over the rows kept, over the sum of their w_y."""
    x = np.log(np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]]))
    labels = np.array([1, -100, 0])
    w = np.array([2.0, 0.5, 1.0])
    loss = NLLLoss(w)
    expected = -(0.5 * x[0, 1] + 2.0 * x[2, 0]) / (0.5 + 2.0)
    np.testing.assert_allclose(float(loss(x, labels)), expected, rtol=1e-12)
    grad = np.zeros_like(x)
    grad[0, 1], grad[2, 0] = -0.5 / 2.5, -2.0 / 2.5
    np.testing.assert_allclose(loss.backward(), grad, rtol=1e-12)


def test_log_softmax_then_nll_is_cross_entropy():
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(4, 3, 2, 2)), rng.integers(0, 3, size=(4, 2, 2))
    layer, nll, ce = LogSoftmax(dim=1), NLLLoss(), CrossEntropyLoss()
    np.testing.assert_allclose(float(nll(layer(x), labels)), float(ce(x, labels)), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(nll.backward()), ce.backward(), atol=1e-15)


@pytest.mark.parametrize("make", [
    lambda: CrossEntropyLoss(reduction="mean"), lambda: NLLLoss(ignore_index=-1),
    lambda: SoftmaxCrossEntropy(0.1, weight=np.ones(3)),
])
def test_every_target_ignored_gives_nan_mean_and_zero_gradient(make):
    """As in PyTorch: the mean over no target is 0/0 = NaN (returned, not raised), the
    gradient is 0; the sum is 0 and 'none' gives zeros."""
    loss = make()
    labels = np.full(4, loss.ignore_index)
    value = loss(np.zeros((4, 3)), labels)
    assert np.isnan(value) and value.shape == ()
    np.testing.assert_array_equal(loss.backward(), np.zeros((4, 3)))
    loss.reduction = "sum"
    assert float(loss(np.zeros((4, 3)), labels)) == 0.0
    loss.reduction = "none"
    np.testing.assert_array_equal(loss(np.zeros((4, 3)), labels), np.zeros(4))


@needs_torch
def test_every_target_ignored_matches_pytorch():
    x = np.random.default_rng(0).normal(size=(3, 4, 2))
    labels = np.full((3, 2), -100)
    ours = CrossEntropyLoss(np.ones(4), label_smoothing=0.1)
    value = ours(x, labels)
    ref, ref_dx = run_torch(F.cross_entropy, x, labels, "mean", None, 1.0,
                            weight=torch.ones(4, dtype=torch.float64), label_smoothing=0.1)
    assert np.isnan(value) and np.isnan(ref)
    np.testing.assert_array_equal(ours.backward(), ref_dx)


# --- elementwise losses -------------------------------------------------------------------

ELEMENTWISE = {  # name: (ours, torch function, torch keyword arguments, input kind)
    "mse": (MSELoss, "mse_loss", {}, "real"),
    "l1": (L1Loss, "l1_loss", {}, "real"),
    "smooth_l1": (lambda r: SmoothL1Loss(r, beta=0.6), "smooth_l1_loss", {"beta": 0.6}, "real"),
    "smooth_l1_beta0": (lambda r: SmoothL1Loss(r, beta=0.0), "smooth_l1_loss", {"beta": 0.0},
                        "real"),
    "huber": (lambda r: HuberLoss(r, delta=0.7), "huber_loss", {"delta": 0.7}, "real"),
    "bce": (lambda r: BCELoss(reduction=r), "binary_cross_entropy", {}, "prob"),
    "bce_logits": (lambda r: BCEWithLogitsLoss(reduction=r),
                   "binary_cross_entropy_with_logits", {}, "logit"),
    "kl": (lambda r: KLDivLoss(r), "kl_div", {}, "logprob"),
    "kl_log_target": (lambda r: KLDivLoss(r, log_target=True), "kl_div",
                      {"log_target": True}, "logprob"),
}


def elementwise_inputs(kind: str, shape: tuple, rng: np.random.Generator):
    if kind == "prob":
        return rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape)
    if kind == "logit":
        return rng.normal(size=shape) * 3, rng.uniform(0, 1, shape)
    if kind == "logprob":
        x = np.log(rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]))
        t = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
        return x, t
    return rng.normal(size=shape), rng.normal(size=shape)


@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("seed", range(4))
def test_elementwise_losses_match_pytorch(name, reduction, seed):
    make, fn, kwargs, kind = ELEMENTWISE[name]
    rng = np.random.default_rng(seed)
    shape = [(5,), (3, 4), (2, 3, 4), (2, 1, 3, 2)][seed]
    x, t = elementwise_inputs(kind, shape, rng)
    if name == "kl_log_target":
        t = np.log(t)
    upstream = rng.normal(size=shape)
    value, dx = run_ours(make(reduction), x, t, reduction, upstream, 1.3)
    ref, ref_dx = run_torch(getattr(F, fn), x, t, reduction, upstream, 1.3, **kwargs)
    assert value.shape == ref.shape
    assert_close(value, ref)
    assert_close(dx, ref_dx)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_losses_gradcheck(name, reduction):
    make, _, _, kind = ELEMENTWISE[name]
    rng = np.random.default_rng(11)
    x, t = elementwise_inputs(kind, (3, 4), rng)
    assert gradcheck(make(reduction), x, t, tol=TOL) < TOL


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_reductions_match_pytorch(reduction, log_target):
    """'mean' divides by every element (PyTorch's default), 'batchmean' by N."""
    rng = np.random.default_rng(5)
    x = np.log(rng.dirichlet(np.ones(4), size=(3, 2)))
    t = rng.dirichlet(np.ones(4), size=(3, 2))
    t[0, 0, 1] = 0.0  # 0 log 0 counts as 0
    if log_target:
        t = np.log(t + 0.1)
    value, dx = run_ours(KLDivLoss(reduction, log_target), x, t, reduction, None, 0.4)
    ref, ref_dx = run_torch(F.kl_div, x, t, reduction, None, 0.4, log_target=log_target)
    assert_close(value, ref)
    assert_close(dx, ref_dx)
    assert gradcheck(KLDivLoss(reduction, log_target), x, t, tol=TOL) < TOL


def test_kl_div_batchmean_is_the_sum_over_n():
    rng = np.random.default_rng(6)
    x, t = np.log(rng.dirichlet(np.ones(5), size=4)), rng.dirichlet(np.ones(5), size=4)
    per_element = t * (np.log(t) - x)
    np.testing.assert_allclose(float(KLDivLoss("batchmean")(x, t)), per_element.sum() / 4,
                               rtol=1e-12)
    np.testing.assert_allclose(float(KLDivLoss()(x, t)), per_element.mean(), rtol=1e-12)


@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_weight_and_clamp_match_pytorch(reduction):
    """Probabilities of exactly 0 and 1: PyTorch clamps the logs at -100 (loss 100) and the
    gradient's denominator at 1e-12."""
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1, size=(4, 3))
    x[0, 0], x[1, 1], x[2, 2] = 0.0, 1.0, 1e-50
    t = rng.uniform(0, 1, size=(4, 3))
    t[0, 0], t[1, 1] = 1.0, 0.0
    weight, upstream = rng.uniform(0.5, 2, size=3), rng.normal(size=(4, 3))
    value, dx = run_ours(BCELoss(weight, reduction=reduction), x, t, reduction, upstream, 0.9)
    ref, ref_dx = run_torch(F.binary_cross_entropy, x, t, reduction, upstream, 0.9,
                            weight=torch.tensor(weight))
    assert_close(value, ref)
    assert_close(dx, ref_dx)


@needs_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_weight_and_pos_weight_match_pytorch(reduction):
    rng = np.random.default_rng(9)
    x, t = rng.normal(size=(2, 3, 4)) * 5, rng.uniform(0, 1, size=(2, 3, 4))
    weight, pos_weight = rng.uniform(0.5, 2, size=(3, 1)), rng.uniform(0.5, 3, size=4)
    upstream = rng.normal(size=x.shape)
    loss = BCEWithLogitsLoss(weight, reduction=reduction, pos_weight=pos_weight)
    value, dx = run_ours(loss, x, t, reduction, upstream, 0.6)
    ref, ref_dx = run_torch(F.binary_cross_entropy_with_logits, x, t, reduction, upstream, 0.6,
                            weight=torch.tensor(weight), pos_weight=torch.tensor(pos_weight))
    assert_close(value, ref)
    assert_close(dx, ref_dx)
    assert gradcheck(loss, x, t, tol=TOL) < TOL
    assert isinstance(loss, BCEWithLogits)


def test_smooth_l1_and_huber_differ_by_delta():
    rng = np.random.default_rng(10)
    x, t = rng.normal(size=(6, 3)) * 2, rng.normal(size=(6, 3))
    for delta in (0.3, 1.0, 2.5):
        huber, smooth = HuberLoss(delta=delta), SmoothL1Loss(beta=delta)
        np.testing.assert_allclose(float(huber(x, t)), delta * float(smooth(x, t)), rtol=1e-12)
        np.testing.assert_allclose(huber.backward(), delta * smooth.backward(), rtol=1e-12)
    smooth0, l1 = SmoothL1Loss(beta=0.0), L1Loss()
    np.testing.assert_allclose(float(smooth0(x, t)), float(l1(x, t)), rtol=1e-15)
    np.testing.assert_array_equal(smooth0.backward(), l1.backward())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_keep_the_input_dtype(dtype, reduction):
    rng = np.random.default_rng(12)
    x = rng.uniform(0.1, 0.9, size=(3, 4)).astype(dtype)
    labels = rng.integers(0, 4, size=3)
    losses = [(CrossEntropyLoss(np.ones(4), reduction=reduction), labels),
              (NLLLoss(reduction=reduction), labels)]
    losses += [(m(reduction), x[::-1].copy()) for m, _, _, _ in ELEMENTWISE.values()]
    for loss, target in losses:
        value = loss(x, target)
        grad = loss.backward(np.ones(value.shape, dtype=np.float64))
        assert value.dtype == dtype and grad.dtype == dtype, loss


# --- Softmax and LogSoftmax layers --------------------------------------------------------


@pytest.mark.parametrize("layer", [Softmax, LogSoftmax])
@pytest.mark.parametrize("shape, dim", [((4, 5), 1), ((2, 3, 4), -1), ((2, 3, 2, 2), 1),
                                        ((5,), 0), ((3, 4), None), ((2, 3, 4), None)])
def test_softmax_layers_gradcheck(layer, shape, dim):
    x = np.random.default_rng(13).normal(size=shape) * 2
    assert gradcheck(layer(dim), x, tol=TOL) < TOL


@needs_torch
@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape, dim", [((4, 5), 1), ((2, 3, 4), -1), ((2, 3, 2, 2), 1),
                                        ((2, 3, 2, 2), 3), ((5,), 0)])
def test_softmax_layers_match_pytorch(name, shape, dim):
    rng = np.random.default_rng(14)
    x, upstream = rng.normal(size=shape) * 30, rng.normal(size=shape)
    ours = getattr(tinycnn, name)(dim=dim)
    y, dx = ours(x), None
    dx = ours.backward(upstream)
    tx = torch.tensor(x, requires_grad=True)
    ref = getattr(torch.nn, name)(dim=dim)(tx)
    ref.backward(torch.tensor(upstream))
    assert_close(y, ref.detach().numpy())
    assert_close(dx, tx.grad.numpy())


def test_softmax_layers_sum_to_one_and_errors():
    x = np.array([[1000.0, 0.0, -np.inf], [1.0, 2.0, 3.0]])
    y = Softmax(dim=1)(x)
    np.testing.assert_allclose(y.sum(axis=1), [1.0, 1.0])
    # the log of the softmax would be -inf for the -1000 logit; log-softmax keeps it exact
    np.testing.assert_allclose(LogSoftmax(1)(x), [[0.0, -1000.0, -np.inf], np.log(y[1])],
                               atol=1e-12)
    with pytest.raises(LayerInputError, match=r"LogSoftmax: dim=2 is out of range.*\(2, 3\)"):
        LogSoftmax(dim=2)(x)
    with pytest.raises(TypeError, match="Softmax: dim must be an int or None, got 1.0"):
        Softmax(dim=1.0)
    with pytest.raises(LayerInputError, match="LogSoftmax expected a floating-point input"):
        LogSoftmax(1)(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(BackwardBeforeForwardError):
        Softmax(1).backward(np.zeros((2, 3)))
    assert repr(LogSoftmax(1)) == "LogSoftmax(dim=1)"


# --- bad input ----------------------------------------------------------------------------


def test_class_losses_bad_input_is_a_clear_error():
    x = np.zeros((2, 3, 4))  # PyTorch layout: N=2, C=3, d1=4
    for loss in (CrossEntropyLoss(), NLLLoss()):
        name = type(loss).__name__
        with pytest.raises(LayerInputError, match=rf"{name} expected integer labels \(N, d1, "
                                                  r"\.\.\.\) = \(2, 4\).*shape \(2, 3\)"):
            loss(x, np.zeros((2, 3), dtype=np.int64))
        with pytest.raises(LayerInputError, match=rf"{name} labels must lie in \[0, 2\] for 3 "
                                                  r"classes \(or equal ignore_index=-100\), "
                                                  r"got values from 0 to 3"):
            loss(x, np.array([[0, 1, 2, 3], [0, 0, -100, 0]]))
        with pytest.raises(LayerInputError, match=rf"{name} expected floating-point"):
            loss(x.astype(np.int64), np.zeros((2, 4), dtype=np.int64))
        with pytest.raises(LayerInputError, match=rf"{name} expected the target as an array"):
            loss(x, [[0, 1, 2, 0], [0, 0, 0, 0]])
        with pytest.raises(LayerInputError, match=rf"{name}: weight has 2 entries but the "
                                                  r".* have 3 classes"):
            type(loss)(np.ones(2))(x, np.zeros((2, 4), dtype=np.int64))
        with pytest.raises(ValueError, match=rf"{name}: weight must be a 1-D array"):
            type(loss)(np.ones((3, 1)))
        with pytest.raises(ValueError, match=rf"{name}: weight must hold finite numbers"):
            type(loss)(np.array([1.0, np.nan, 1.0]))
        with pytest.raises(TypeError, match=rf"{name}: ignore_index must be an int, got 1.5"):
            type(loss)(ignore_index=1.5)
        with pytest.raises(ValueError, match=rf"{name}: reduction must be one of 'mean', "
                                             r"'sum', 'none', got 'avg'"):
            type(loss)(reduction="avg")
        with pytest.raises(BackwardBeforeForwardError):
            type(loss)().backward()
    with pytest.raises(LayerInputError, match=r"NLLLoss expected integer class labels as the "
                                              r"target, got dtype float64"):
        NLLLoss()(x, np.zeros((2, 3, 4)))
    with pytest.raises(LayerInputError, match="CrossEntropyLoss: ignore_index=1 applies to "
                                              "integer labels, not to soft targets"):
        CrossEntropyLoss(ignore_index=1)(x, np.full((2, 3, 4), 1 / 3))
    with pytest.raises(ValueError, match="CrossEntropyLoss: label_smoothing must be in"):
        CrossEntropyLoss(label_smoothing=-0.1)


@pytest.mark.parametrize("make", [
    lambda: CrossEntropyLoss(reduction="none"), lambda: MSELoss("none"),
    lambda: CrossEntropyLoss(), lambda: KLDivLoss("batchmean"),
])
def test_backward_checks_the_upstream_gradient(make):
    loss = make()
    x, labels = np.zeros((3, 4)), np.array([0, 1, 2])
    target = labels if isinstance(loss, CrossEntropyLoss) else np.zeros((3, 4))
    loss(x, target)
    name = type(loss).__name__
    if loss.reduction == "none":
        want = r"\(3,\)" if isinstance(loss, CrossEntropyLoss) else r"\(3, 4\)"
        with pytest.raises(LayerInputError, match=rf"{name}.backward expected an upstream "
                                                  rf"gradient of the loss's shape {want}"):
            loss.backward(np.ones((4, 3)))
    else:
        with pytest.raises(LayerInputError, match=rf"{name}.backward expected a scalar upstream "
                                                  r"gradient .*got shape \(3,\)"):
            loss.backward(np.ones(3))


def test_elementwise_losses_bad_input_is_a_clear_error():
    x = np.full((2, 3), 0.5)
    with pytest.raises(LayerInputError, match=r"BCELoss expected probabilities in \[0, 1\].* "
                                              r"from -0.5 to 0.5"):
        BCELoss()(np.array([[-0.5, 0.5]]), np.zeros((1, 2)))
    with pytest.raises(LayerInputError, match=r"BCELoss expected probabilities.*and NaN"):
        BCELoss()(np.array([np.nan, 0.5]), np.zeros(2))
    with pytest.raises(LayerInputError, match=r"BCELoss: weight of shape \(2,\) does not "
                                              r"broadcast to the input's shape \(2, 3\)"):
        BCELoss(np.ones(2))(x, x)
    with pytest.raises(LayerInputError, match=r"BCEWithLogitsLoss: pos_weight of shape \(4,\)"):
        BCEWithLogitsLoss(pos_weight=np.ones(4))(x, x)
    with pytest.raises(ValueError, match="SmoothL1Loss: beta must be a number >= 0, got -1"):
        SmoothL1Loss(beta=-1)
    with pytest.raises(ValueError, match="HuberLoss: delta must be a finite number > 0, got 0"):
        HuberLoss(delta=0)
    with pytest.raises(ValueError, match=r"KLDivLoss: reduction must be one of 'mean', "
                                         r"'batchmean', 'sum', 'none'"):
        KLDivLoss("batch")
    with pytest.raises(TypeError, match="KLDivLoss: log_target must be True or False"):
        KLDivLoss(log_target="yes")
    with pytest.raises(LayerInputError, match=r"SmoothL1Loss expected a target of the "
                                              r"input's shape \(2, 3\), got \(3, 2\)"):
        SmoothL1Loss()(x, np.zeros((3, 2)))
    with pytest.raises(LayerInputError, match="HuberLoss expected a numeric target"):
        HuberLoss()(x, np.full((2, 3), "a"))
    with pytest.raises(FloatingPointError, match="KLDivLoss is nan"):
        KLDivLoss()(np.log(x), -x)  # a negative "probability": its log is NaN


def test_reprs_name_the_arguments():
    assert repr(CrossEntropyLoss(np.ones(3), ignore_index=0, reduction="sum")) == (
        "CrossEntropyLoss(label_smoothing=0.0, weight=..., ignore_index=0, reduction='sum')")
    assert repr(NLLLoss()) == "NLLLoss()"
    assert repr(HuberLoss(delta=2.0)) == "HuberLoss(delta=2.0)"
    assert repr(KLDivLoss("batchmean", True)) == (
        "KLDivLoss(reduction='batchmean', log_target=True)")
