"""SoftmaxCrossEntropy and MSELoss: gradient checks, values against direct formulas and
PyTorch, stability on huge logits, dtypes, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.losses import MSELoss, SoftmaxCrossEntropy, log_softmax, softmax
from tinycnn.module import BackwardBeforeForwardError, LayerInputError

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is an optional extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
TOL = 1e-6


def direct_cross_entropy(logits, target, smoothing=0.0):
    """The textbook formula, written independently: -(1/N) sum t log softmax."""
    n, k = logits.shape
    if target.ndim == 1:
        t = np.eye(k)[target]
    else:
        t = target.astype(np.float64)
    t = (1 - smoothing) * t + smoothing / k
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return -(t * np.log(p)).sum() / n


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 5),
    k=st.integers(2, 6),
    smoothing=st.sampled_from([0.0, 0.1, 0.3]),
    soft=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_gradcheck(n, k, smoothing, soft, seed):
    rng = np.random.default_rng(seed)
    # Logits a few units apart: at a margin of 14 (scale 3 allowed it) the loss is 1e-6,
    # computed as the difference of two numbers near 6, and central differences of it
    # keep only 4 digits; the analytic gradient is right there, the finite one is not.
    logits = rng.normal(size=(n, k)) * 1.5
    target = rng.dirichlet(np.ones(k), size=n) if soft else rng.integers(0, k, size=n)
    loss = SoftmaxCrossEntropy(label_smoothing=smoothing)
    assert gradcheck(loss, logits, target, seed=seed, tol=TOL) < TOL


def test_cross_entropy_gradcheck_soft_targets_not_summing_to_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4))
    target = rng.uniform(0, 2, size=(3, 4))
    assert gradcheck(SoftmaxCrossEntropy(label_smoothing=0.2), logits, target, tol=TOL) < TOL


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_value_matches_direct_formula(smoothing, soft):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 5))
    target = rng.dirichlet(np.ones(5), size=6) if soft else rng.integers(0, 5, size=6)
    loss = SoftmaxCrossEntropy(smoothing)(logits, target)
    np.testing.assert_allclose(float(loss), direct_cross_entropy(logits, target, smoothing),
                               rtol=1e-12)


@needs_torch
@pytest.mark.parametrize("smoothing", [0.0, 0.15])
@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_value_and_gradient_match_pytorch(smoothing, soft):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(7, 4)) * 4
    target = rng.dirichlet(np.ones(4), size=7) if soft else rng.integers(0, 4, size=7)
    ours = SoftmaxCrossEntropy(smoothing)
    value = ours(logits, target)
    dx = ours.backward(0.7)
    tl = torch.tensor(logits, requires_grad=True)
    tt = torch.tensor(target)
    ref = F.cross_entropy(tl, tt, label_smoothing=smoothing)
    (ref * 0.7).backward()
    np.testing.assert_allclose(float(value), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(dx, tl.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_cross_entropy_backward_is_softmax_minus_onehot_over_n():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 3))
    labels = np.array([2, 0, 1, 1])
    loss = SoftmaxCrossEntropy()
    loss(logits, labels)
    np.testing.assert_allclose(loss.backward(), (softmax(logits) - np.eye(3)[labels]) / 4)


def test_cross_entropy_huge_logits_do_not_overflow():
    logits = np.array([[1000.0, 0.0, -1000.0], [5e4, 5e4, 0.0]], dtype=np.float32)
    loss = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise"):  # an overflow or inf - inf raises here
        value = loss(logits, np.array([0, 2]))
        dx = loss.backward()
    # row 0: log-prob of the winner is 0; row 1: label 2 is 5e4 below the two maxima
    np.testing.assert_allclose(float(value), (0.0 + 5e4 + np.log(2)) / 2, rtol=1e-6)
    assert value.dtype == np.float32 and dx.dtype == np.float32
    assert np.all(np.isfinite(dx))
    np.testing.assert_allclose(softmax(logits)[1], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(log_softmax(np.array([[1e300, 1e300]])), [[-np.log(2)] * 2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_keeps_the_logits_dtype(dtype):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 4)).astype(dtype)
    loss = SoftmaxCrossEntropy(0.1)
    value = loss(logits, rng.dirichlet(np.ones(4), size=3))  # float64 soft targets
    assert value.dtype == dtype
    assert loss.backward(np.float64(2.0)).dtype == dtype
    assert loss.backward(np.array(2.0)).dtype == dtype


def test_non_finite_loss_is_a_clear_error():
    logits = np.array([[np.nan, 1.0], [0.0, 1.0]])
    with pytest.raises(FloatingPointError, match="SoftmaxCrossEntropy.*lower learning rate"):
        SoftmaxCrossEntropy()(logits, np.array([0, 1]))
    with pytest.raises(FloatingPointError, match="MSELoss.*lower learning rate"):
        MSELoss()(np.array([np.inf, 1.0]), np.zeros(2))


def test_cross_entropy_bad_inputs_are_clear_errors():
    loss = SoftmaxCrossEntropy()
    logits = np.zeros((3, 4))
    with pytest.raises(LayerInputError, match=r"labels must lie in \[0, 3\].*from 0 to 4"):
        loss(logits, np.array([0, 4, 1]))
    with pytest.raises(LayerInputError, match=r"labels must lie in \[0, 3\].*from -1"):
        loss(logits, np.array([0, -1, 1]))
    with pytest.raises(LayerInputError, match=r"labels of shape \(3,\).*shape \(2,\)"):
        loss(logits, np.array([0, 1]))
    with pytest.raises(LayerInputError, match=r"soft targets of shape \(3, 4\).*got \(3, 5\)"):
        loss(logits, np.zeros((3, 5)))
    with pytest.raises(LayerInputError, match=r"logits \(N, K\), got shape \(3, 4, 1, 1\)"):
        loss(np.zeros((3, 4, 1, 1)), np.array([0, 1, 2]))
    with pytest.raises(LayerInputError, match=r"labels \(N, T\) = \(3, 4\).*shape \(3,\)"):
        loss(np.zeros((3, 4, 1)), np.array([0, 1, 2]))
    with pytest.raises(LayerInputError, match="dtype bool"):
        loss(logits, np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftmaxCrossEntropy(label_smoothing=1.5)
    with pytest.raises(BackwardBeforeForwardError):
        SoftmaxCrossEntropy().backward()


def test_mse_value_gradcheck_and_errors():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(3, 2, 2)), rng.normal(size=(3, 2, 2))
    loss = MSELoss()
    np.testing.assert_allclose(float(loss(x, y)), np.mean((x - y) ** 2), rtol=1e-12)
    np.testing.assert_allclose(loss.backward(), 2 * (x - y) / x.size)
    assert gradcheck(MSELoss(), x, y, tol=TOL) < TOL
    x32 = x.astype(np.float32)
    assert loss(x32, y).dtype == np.float32 and loss.backward().dtype == np.float32
    with pytest.raises(LayerInputError, match=r"input's shape \(3, 2, 2\), got \(3, 4\)"):
        loss(x, np.zeros((3, 4)))
    with pytest.raises(BackwardBeforeForwardError):
        MSELoss().backward()


@needs_torch
def test_mse_matches_pytorch():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    tx = torch.tensor(x, requires_grad=True)
    ref = F.mse_loss(tx, torch.tensor(y))
    ref.backward()
    loss = MSELoss()
    np.testing.assert_allclose(float(loss(x, y)), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(loss.backward(), tx.grad.numpy(), rtol=1e-12)


INF = np.inf
# Inputs where a dense target product 0 * -inf used to give NaN (issue 15, item 5).
EXTREME_LOGITS = [  # (logits, labels): each label on a finite logit
    ([[0.0, -INF]], [0]),
    ([[3e38, -3e38]], [0]),
    ([[1.0, -INF, 0.5], [2.0, 1.0, -INF]], [2, 0]),
    ([[1e308, -1e308, 0.0]], [2]),
    ([[-INF, 0.0, 5.0]], [1]),
]


def _torch_ce(logits, labels, smoothing=0.0):
    tl = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    ref = F.cross_entropy(tl, torch.tensor(labels), label_smoothing=smoothing)
    ref.backward()
    return ref.item(), tl.grad.numpy()


@needs_torch
@pytest.mark.parametrize("logits, labels", EXTREME_LOGITS)
def test_cross_entropy_with_inf_and_huge_logits_matches_pytorch(logits, labels):
    logits, labels = np.array(logits, dtype=np.float64), np.array(labels)
    loss = SoftmaxCrossEntropy()
    value = float(loss(logits, labels))
    dx = loss.backward()
    ref, ref_dx = _torch_ce(logits, labels)
    assert np.isfinite(value) and np.all(np.isfinite(dx))
    np.testing.assert_allclose(value, ref, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-14)


def test_cross_entropy_float32_extremes_are_finite():
    loss = SoftmaxCrossEntropy()
    value = loss(np.array([[3e38, -3e38]], dtype=np.float32), np.array([0]))
    assert float(value) == 0.0 and value.dtype == np.float32
    np.testing.assert_array_equal(loss.backward(), [[0.0, 0.0]])
    value = loss(np.array([[1.0, -np.inf, 0.5]], dtype=np.float32), np.array([2]))
    np.testing.assert_allclose(float(value), np.log1p(np.exp(0.5)), rtol=1e-6)
    assert np.all(np.isfinite(loss.backward()))


def test_cross_entropy_soft_targets_ignore_masked_classes():
    """Soft targets with weight 0 on a -inf logit: finite (PyTorch gives NaN here)."""
    logits = np.array([[1.0, -np.inf, 0.5]])
    target = np.array([[0.5, 0.0, 0.5]])
    loss = SoftmaxCrossEntropy()
    value = float(loss(logits, target))
    finite = np.array([[1.0, 0.5]])
    expected = direct_cross_entropy(finite, np.array([[0.5, 0.5]]))
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    dx = loss.backward()
    assert dx[0, 1] == 0.0 and np.all(np.isfinite(dx))


def test_cross_entropy_inf_under_label_smoothing_is_a_clear_error():
    """Smoothing puts weight on the -inf class: the loss is inf (as in PyTorch), and says so."""
    with pytest.raises(FloatingPointError, match="SoftmaxCrossEntropy is inf"):
        SoftmaxCrossEntropy(0.1)(np.array([[0.0, -np.inf]]), np.array([0]))
    with pytest.raises(FloatingPointError, match="SoftmaxCrossEntropy is nan"):
        SoftmaxCrossEntropy()(np.array([[np.inf, 0.0]]), np.array([0]))


# Up to 1e306: sums of three log-probabilities cannot overflow in either implementation.
_extreme = st.one_of(
    st.floats(-50, 50), st.just(-np.inf), st.floats(1e300, 1e306), st.floats(-1e306, -1e300)
)


@needs_torch
@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(_extreme, min_size=3, max_size=3), min_size=1, max_size=4),
    labels=st.lists(st.integers(0, 2), min_size=4, max_size=4),
    smoothing=st.sampled_from([0.0, 0.2]),
)
def test_cross_entropy_extremes_match_pytorch_or_raise(rows, labels, smoothing):
    """Wherever PyTorch's float64 loss is finite ours equals it, with the same gradient;
    where PyTorch's is inf or NaN ours raises instead of returning it."""
    logits = np.array(rows, dtype=np.float64)
    labels = np.array(labels[: len(rows)])
    ref, ref_dx = _torch_ce(logits, labels, smoothing)
    loss = SoftmaxCrossEntropy(smoothing)
    if not np.isfinite(ref):
        with pytest.raises(FloatingPointError):
            loss(logits, labels)
        return
    np.testing.assert_allclose(float(loss(logits, labels)), ref, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(loss.backward(), ref_dx, rtol=1e-8, atol=1e-12)
