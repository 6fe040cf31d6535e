"""L1 regularization, tinycnn's own optimizer option: the penalty's sub-gradient against
central differences, steps against the same update on ``grad + l1 * sign(p)`` (by hand
and in ``torch.optim``), state dicts, and refused values."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import backend, l1_penalty
from tinycnn.gradcheck import gradcheck
from tinycnn.module import Module, Parameter
from tinycnn.optim import SGD, AdaGrad, Adam, AdamW, Momentum, RMSProp

try:
    import torch
except ImportError:  # the comparisons with PyTorch skip, saying why
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed, so there "
                                                        "is no reference to compare with")
SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]


def _params(seed: int, dtype: type = np.float64) -> list[Parameter]:
    rng = np.random.default_rng(seed)
    return [Parameter(rng.normal(size=s).astype(dtype)) for s in SHAPES]


def _grad(step: int, i: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(1000 * step + i).normal(size=shape)


class L1Term(Module):
    """``y = x + strength * sum(|w|)``: the penalty as a layer, for gradcheck."""

    def __init__(self, strength: float) -> None:
        super().__init__()
        rng = np.random.default_rng(5)
        # magnitudes >= 0.1: central differences with eps 1e-6 never cross the kink at 0
        w = rng.uniform(0.1, 1.0, size=(4, 3)) * rng.choice([-1.0, 1.0], size=(4, 3))
        self.w = Parameter(w)
        self.strength = strength

    def forward(self, x: np.ndarray) -> np.ndarray:
        value, _ = l1_penalty([self.w], self.strength)
        return x + value

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        _, (g,) = l1_penalty([self.w], self.strength)
        self.w.accumulate(float(grad_out.sum()) * g)
        return grad_out


def test_the_subgradient_is_the_derivative_away_from_zero() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3))
    assert gradcheck(L1Term(0.37), x) < 1e-8


def test_penalty_value_and_sign_of_zero() -> None:
    p = Parameter(np.array([-2.0, 0.0, 3.0, -0.0]))
    q = Parameter(np.array([[0.5]], dtype=np.float32))
    value, (gp, gq) = l1_penalty([p, q], 0.1)
    assert value == pytest.approx(0.1 * 5.5)
    np.testing.assert_array_equal(gp, [-0.1, 0.0, 0.1, 0.0])  # sign(0) = 0
    assert gq.dtype == np.float32 and gq.shape == (1, 1)
    assert l1_penalty([p], 0.0) == (0.0, [pytest.approx(np.zeros(4))])


ALL = [
    (SGD, {}),
    (SGD, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (Momentum, {"dampening": 0.1}),
    (AdaGrad, {"lr_decay": 0.01}),
    (RMSProp, {"momentum": 0.5, "centered": True}),
    (Adam, {"weight_decay": 0.02}),
    (Adam, {"amsgrad": True}),
    (AdamW, {"weight_decay": 0.1}),
]


@pytest.mark.parametrize("cls, kw", ALL, ids=lambda v: getattr(v, "__name__", str(v)))
def test_step_with_l1_is_the_step_on_grad_plus_l1_sign(cls, kw) -> None:
    strength = 0.03
    ours, plain = _params(1), _params(1)
    opt = cls(ours, lr=0.05, l1=strength, **kw)
    # L2 (coupled) is added by hand too, in the optimizer's order: g + wd p + l1 sign(p)
    wd = 0.0 if cls is AdamW else kw.get("weight_decay", 0.0)
    ref = cls(plain, lr=0.05, **{**kw, "weight_decay": kw.get("weight_decay", 0.0) - wd})
    for t in range(5):
        for i, (p, q) in enumerate(zip(ours, plain, strict=True)):
            p.grad = _grad(t, i, p.shape)
            q.grad = _grad(t, i, q.shape)
            if wd:
                q.grad = q.grad + wd * q.data
            q.grad = q.grad + strength * np.sign(q.data)
        opt.step()
        ref.step()
        for p, q in zip(ours, plain, strict=True):
            np.testing.assert_array_equal(p.data, q.data)
    assert not np.array_equal(ours[0].data, _stepped_without_l1(cls, kw))


def _stepped_without_l1(cls, kw) -> np.ndarray:
    ps = _params(1)
    opt = cls(ps, lr=0.05, **kw)
    for t in range(5):
        for i, p in enumerate(ps):
            p.grad = _grad(t, i, p.shape)
        opt.step()
    return ps[0].data


TORCH = [
    (SGD, "SGD", {"momentum": 0.9, "weight_decay": 0.01}),
    (SGD, "SGD", {"momentum": 0.9, "nesterov": True}),
    (AdaGrad, "Adagrad", {"lr_decay": 0.01, "weight_decay": 0.01}),
    (RMSProp, "RMSprop", {"momentum": 0.5, "centered": True, "weight_decay": 0.01}),
    (Adam, "Adam", {"weight_decay": 0.02, "amsgrad": True}),
    (AdamW, "AdamW", {"weight_decay": 0.1}),
]


@needs_torch
@pytest.mark.parametrize("cls, name, kw", TORCH, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_l1_step_matches_torch_on_grad_plus_l1_sign(cls, name, kw, seed) -> None:
    rng = np.random.default_rng(seed)
    strength, lr = float(rng.uniform(0.001, 0.1)), float(rng.choice([1e-3, 0.01, 0.1]))
    ours = _params(seed)
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt = cls(ours, lr=lr, l1=strength, **kw)
    topt = getattr(torch.optim, name)(theirs, lr=lr, **kw)
    for t in range(6):
        for i, (p, tp) in enumerate(zip(ours, theirs, strict=True)):
            p.grad = _grad(t, i, p.shape)
            tp.grad = torch.from_numpy(_grad(t, i, p.shape)) + strength * torch.sign(tp.detach())
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6, atol=1e-12)


def test_default_l1_changes_nothing() -> None:
    for cls, kw in ALL:
        a, b = _params(2), _params(2)
        opt_a, opt_b = cls(a, lr=0.1, **kw), cls(b, lr=0.1, l1=0.0, **kw)
        for t in range(3):
            for i, (p, q) in enumerate(zip(a, b, strict=True)):
                p.grad = q.grad = _grad(t, i, p.shape)
            opt_a.step()
            opt_b.step()
        for p, q in zip(a, b, strict=True):
            np.testing.assert_array_equal(p.data, q.data)
        assert "l1" not in repr(opt_a)


def test_l1_drives_weights_with_no_gradient_to_exactly_zero_and_keeps_them() -> None:
    p = Parameter(np.array([0.35, -0.25, 0.0]))
    opt = SGD([p], lr=0.1, l1=0.5)
    for _ in range(7):
        p.grad = np.zeros(3)
        opt.step()
    np.testing.assert_allclose(p.data, [0.0, 0.0, 0.0], atol=1e-15)
    assert p.data[2] == 0.0  # sign(0) = 0: a weight at zero is not pushed off it


def test_float32_stays_float32() -> None:
    ps = _params(0, np.float32)
    opt = Adam(ps, lr=0.01, l1=0.1)
    for i, p in enumerate(ps):
        p.grad = _grad(0, i, p.shape).astype(np.float32)
    opt.step()
    assert all(p.data.dtype == np.float32 for p in ps)


def test_state_dict_round_trip(tmp_path) -> None:
    ps = _params(3)
    opt = Adam(ps, lr=0.01, l1=0.02)
    for i, p in enumerate(ps):
        p.grad = _grad(0, i, p.shape)
    opt.step()
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    fresh = Adam(_params(3), lr=0.01)
    with np.load(tmp_path / "opt.npz") as f:
        fresh.load_state_dict(dict(f))
    assert fresh.l1 == 0.02 and "l1=0.02" in repr(fresh)
    # a state saved before the option existed has no L1
    old = opt.state_dict()
    del old["l1"]
    fresh.load_state_dict(old)
    assert fresh.l1 == 0.0


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", True, 1j, None])
def test_bad_l1_values_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="SGD: l1 must be"):
        SGD(_params(0), lr=0.1, l1=bad)
    with pytest.raises(ValueError, match="l1_penalty: strength must be"):
        l1_penalty(_params(0), bad)
    opt = Adam(_params(0), lr=0.1, l1=0.01)
    state = opt.state_dict()
    state["l1"] = np.asarray(-1.0)
    with pytest.raises(ValueError, match="Adam.load_state_dict: l1 must be >= 0"):
        opt.load_state_dict(state)
    assert opt.l1 == 0.01


def test_l1_penalty_refuses_what_is_not_a_parameter() -> None:
    with pytest.raises(TypeError, match="l1_penalty takes a Module or Parameters"):
        l1_penalty([np.zeros(3)], 0.1)


@pytest.mark.skipif(not backend.gpu_available(), reason="no CUDA GPU visible to CuPy, so the "
                                                         "GPU penalty cannot be compared")
def test_l1_penalty_on_the_gpu_matches_the_cpu() -> None:
    """The optimizers' L1 update on the GPU is compared in test_optim's GPU test."""
    cpu = _params(4, np.float32)
    gpu = [Parameter(backend.to_device(p.data, "gpu")) for p in cpu]
    value, grads = l1_penalty(gpu, 0.05)
    assert value == pytest.approx(l1_penalty(cpu, 0.05)[0], rel=1e-5)
    assert all(backend.is_gpu_array(g) for g in grads)
