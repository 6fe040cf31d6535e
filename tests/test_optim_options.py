"""Adam/AdamW ``amsgrad``, AdaGrad ``lr_decay``, ``clip_grad_value`` and ``clip_grad_norm``
with other norms: step by step against ``torch.optim`` / ``torch.nn.utils`` in float64 over
random configurations, and state dicts that continue identically."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.module import Parameter
from tinycnn.optim import AdaGrad, Adam, AdamW, clip_grad_norm, clip_grad_value

try:
    import torch
except ImportError:  # the comparisons with PyTorch skip, saying why
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]


def _params(seed: int) -> list[Parameter]:
    rng = np.random.default_rng(seed)
    return [Parameter(rng.normal(size=s)) for s in SHAPES]


def _grad(step: int, i: int, data: np.ndarray, scale: float) -> np.ndarray:
    """Depends on the current value, so diverging trajectories show; the scale varies per
    step so that AMSGrad's running maximum matters."""
    rng = np.random.default_rng(1000 * step + i)
    return (rng.normal(size=data.shape) + 0.5 * data) * scale * (1 + 2 * (step % 3 == 0))


def _run_both(ours_cls, kwargs, torch_name, steps, seed, scale=1.0):
    ours = _params(seed)
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt = ours_cls(ours, **kwargs)
    topt = getattr(torch.optim, torch_name)(theirs, **kwargs)
    for t in range(steps):
        for i, (p, tp) in enumerate(zip(ours, theirs, strict=True)):
            p.grad = _grad(t, i, p.data, scale)
            tp.grad = torch.from_numpy(_grad(t, i, tp.detach().numpy(), scale))
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-6, atol=1e-12)
    return opt, ours


@needs_torch
@settings(max_examples=25, deadline=None)
@given(adamw=st.booleans(), lr=st.sampled_from([1e-3, 0.01, 0.1]),
       b1=st.sampled_from([0.0, 0.8, 0.9]), b2=st.sampled_from([0.9, 0.99, 0.999]),
       wd=st.sampled_from([0.0, 0.01, 0.3]), seed=st.integers(0, 100))
def test_amsgrad_matches_torch(adamw, lr, b1, b2, wd, seed):
    kwargs = dict(lr=lr, betas=(b1, b2), weight_decay=wd, amsgrad=True)
    opt, _ = _run_both(AdamW if adamw else Adam, kwargs, "AdamW" if adamw else "Adam", 8, seed)
    assert all("max_exp_avg_sq" in s for s in opt.state)


@needs_torch
@settings(max_examples=25, deadline=None)
@given(lr=st.sampled_from([0.01, 0.1, 1.0]), decay=st.sampled_from([0.0, 0.01, 0.5, 3.0]),
       init=st.sampled_from([0.0, 0.1]), wd=st.sampled_from([0.0, 0.05]),
       seed=st.integers(0, 100))
def test_adagrad_lr_decay_matches_torch(lr, decay, init, wd, seed):
    _run_both(AdaGrad, dict(lr=lr, lr_decay=decay, initial_accumulator_value=init,
                            weight_decay=wd), "Adagrad", 8, seed)


@pytest.mark.parametrize("cls, kw", [(Adam, {"amsgrad": True}), (AdamW, {"amsgrad": True}),
                                     (AdaGrad, {"lr_decay": 0.1})])
def test_state_dict_round_trip_continues_identically(tmp_path, cls, kw):
    a, b = _params(0), _params(0)
    opt_a, opt_b = cls(a, lr=0.05, **kw), cls(b, lr=0.05, **kw)
    for t in range(3):
        for i, p in enumerate(a):
            p.grad = _grad(t, i, p.data, 1.0)
        opt_a.step()
    np.savez(tmp_path / "opt.npz", **opt_a.state_dict())
    with np.load(tmp_path / "opt.npz") as f:
        opt_b.load_state_dict(dict(f))
    for p, q in zip(a, b, strict=True):
        q.data[...] = p.data
    for t in range(3, 6):
        for i, (p, q) in enumerate(zip(a, b, strict=True)):
            p.grad = q.grad = _grad(t, i, p.data, 1.0)
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_amsgrad_state_is_required_when_loading():
    params = _params(0)
    opt = Adam(params, amsgrad=True)
    for i, p in enumerate(params):
        p.grad = _grad(0, i, p.data, 1.0)
    opt.step()
    state = {k: v for k, v in opt.state_dict().items() if "max_exp_avg_sq" not in k}
    with pytest.raises(ValueError, match="lacks \\['max_exp_avg_sq'\\]"):
        Adam(_params(0), amsgrad=True).load_state_dict(state)


@pytest.mark.parametrize("kw, message", [
    ({"amsgrad": "yes"}, "Adam: amsgrad must be True or False"),
    ({"lr_decay": -1}, "AdaGrad: lr_decay must be >= 0"),
])
def test_new_options_are_checked(kw, message):
    cls = AdaGrad if "lr_decay" in kw else Adam
    with pytest.raises(ValueError, match=message):
        cls(_params(0), **kw)


@needs_torch
@settings(max_examples=40, deadline=None)
@given(norm_type=st.sampled_from([1.0, 1.5, 2.0, 3.0, 0.5, math.inf, "inf"]),
       max_norm=st.sampled_from([0.01, 0.5, 3.0, 1e3]), seed=st.integers(0, 1000))
def test_clip_grad_norm_with_other_norms_matches_torch(norm_type, max_norm, seed):
    rng = np.random.default_rng(seed)
    ours = [Parameter(np.zeros(s)) for s in SHAPES]
    theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, tp in zip(ours, theirs, strict=True):
        p.grad = rng.normal(size=p.shape) * rng.choice([1e-3, 1.0, 10.0])
        tp.grad = torch.from_numpy(p.grad.copy())
    norm = clip_grad_norm(ours, max_norm, norm_type=norm_type)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    np.testing.assert_allclose(norm, float(want), rtol=1e-6)
    for p, tp in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-6, atol=1e-15)


def test_clip_grad_norm_inf_is_the_largest_magnitude_without_overflow():
    p, q = Parameter(np.zeros(2, np.float32)), Parameter(np.zeros(1, np.float32))
    p.grad = np.array([3e38, -1.0], np.float32)
    q.grad = np.array([-3.2e38], np.float32)
    assert clip_grad_norm([p, q], 1.0, norm_type="inf") == pytest.approx(3.2e38, rel=1e-6)
    p.grad = np.array([3e38, -1.0], np.float32)
    assert clip_grad_norm([p], 1.0, norm_type=3) == pytest.approx(3e38, rel=1e-6)
    assert np.isfinite(p.grad).all()


@pytest.mark.parametrize("bad", [0, -2, "two", None])
def test_clip_grad_norm_refuses_a_bad_norm_type(bad):
    p = Parameter(np.zeros(2))
    p.grad = np.ones(2)
    with pytest.raises(ValueError, match="clip_grad_norm: norm_type must be"):
        clip_grad_norm([p], 1.0, norm_type=bad)
    np.testing.assert_array_equal(p.grad, np.ones(2))


@needs_torch
@settings(max_examples=20, deadline=None)
@given(clip=st.sampled_from([0.0, 0.1, 1.0, 5.0]), seed=st.integers(0, 1000))
def test_clip_grad_value_matches_torch(clip, seed):
    rng = np.random.default_rng(seed)
    ours = [Parameter(np.zeros(s)) for s in SHAPES]
    theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, tp in zip(ours, theirs, strict=True):
        p.grad = rng.normal(size=p.shape) * 3
        p.grad.flat[0] = np.nan
        tp.grad = torch.from_numpy(p.grad.copy())
    clip_grad_value(ours, clip)
    torch.nn.utils.clip_grad_value_(theirs, clip)
    for p, tp in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(p.grad, tp.grad.numpy())


def test_clip_grad_value_checks_and_keeps_dtype():
    p = Parameter(np.zeros(3, np.float32))
    p.grad = np.array([-2.0, 0.5, 9.0], np.float32)
    clip_grad_value([p], 1.0)
    assert p.grad.dtype == np.float32 and p.grad.tolist() == [-1.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="clip_grad_value: clip_value must be >= 0"):
        clip_grad_value([p], -1.0)
