"""OneCycleLR, CosineAnnealingWarmRestarts, LambdaLR, PolynomialLR and SequentialLR: the same
learning rates (and OneCycleLR's momentum) as PyTorch's schedulers, step by step, over random
configurations; per-batch stepping; state dicts that resume on the same curve."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn import schedules as S
from tinycnn.module import Parameter
from tinycnn.optim import SGD, AdaGrad, Adam

try:
    import torch
except ImportError:  # the comparisons with PyTorch skip, saying why
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
TS = None if torch is None else torch.optim.lr_scheduler


def _pair(lr: float, adam: bool = False):
    """Our optimizer and torch's, on one parameter each."""
    ours = (Adam if adam else SGD)([Parameter(np.zeros(1))], lr=lr)
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    theirs = (torch.optim.Adam if adam else torch.optim.SGD)([p], lr=lr)
    return ours, theirs


def _compare(ours_opt, sched, theirs_opt, tsched, steps, ours_step=None, momentum=False):
    group = theirs_opt.param_groups[0]
    for k in range(steps + 1):
        if k:
            theirs_opt.step()
            tsched.step()
            (ours_step or sched.step)()
        assert ours_opt.lr == pytest.approx(group["lr"], rel=1e-6, abs=1e-15), f"step {k}"
        if momentum:
            want = group["betas"][0] if "betas" in group else group["momentum"]
            got = ours_opt.betas[0] if hasattr(ours_opt, "betas") else ours_opt.momentum
            assert got == pytest.approx(want, rel=1e-6), f"momentum at step {k}"


@needs_torch
@settings(max_examples=40, deadline=None)
@given(total=st.integers(2, 40), pct=st.sampled_from([0.1, 0.25, 0.3, 0.5, 0.9]),
       anneal=st.sampled_from(["cos", "linear"]), three=st.booleans(), adam=st.booleans(),
       div=st.sampled_from([25.0, 10.0]), final=st.sampled_from([1e4, 100.0]))
def test_one_cycle_matches_torch(total, pct, anneal, three, adam, div, final):
    ours, theirs = _pair(0.1, adam)
    kw = dict(max_lr=0.3, total_steps=total, pct_start=pct, anneal_strategy=anneal,
              three_phase=three, div_factor=div, final_div_factor=final)
    ends = [pct * total - 1, 2 * pct * total - 2] if three else [pct * total - 1]
    if any(e == s for e, s in zip(ends + [total - 1], [0.0] + ends, strict=True)):
        with pytest.raises(ValueError, match="leaves a phase of no steps"):
            S.OneCycleLR(ours, **kw)
        return
    sched = S.OneCycleLR(ours, **kw)
    _compare(ours, sched, theirs, TS.OneCycleLR(theirs, **kw), total, momentum=True)
    with pytest.raises(ValueError, match="OneCycleLR: stepped"):
        sched.step()


@needs_torch
def test_one_cycle_per_batch_with_epochs_matches_torch_per_iteration():
    ours, theirs = _pair(0.1)
    sched = S.OneCycleLR(ours, max_lr=0.5, epochs=3, steps_per_epoch=4)
    tsched = TS.OneCycleLR(theirs, max_lr=0.5, epochs=3, steps_per_epoch=4)
    group = theirs.param_groups[0]
    for _ in range(3):
        for _ in range(4):
            theirs.step()
            tsched.step()
            sched.step_batch()
            assert ours.lr == pytest.approx(group["lr"], rel=1e-12)
            assert ours.momentum == pytest.approx(group["momentum"], rel=1e-12)
        sched.step()  # the epoch's end lands where the last batch left it
        assert ours.lr == pytest.approx(group["lr"], rel=1e-12)


def test_one_cycle_needs_a_length_and_momentum():
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="give total_steps, or epochs and steps_per_epoch"):
        S.OneCycleLR(opt, max_lr=0.1, epochs=3)
    with pytest.raises(ValueError, match="cycle_momentum needs an optimizer with momentum"):
        S.OneCycleLR(AdaGrad([Parameter(np.zeros(1))]), max_lr=0.1, total_steps=5)
    S.OneCycleLR(AdaGrad([Parameter(np.zeros(1))]), max_lr=0.1, total_steps=5,
                 cycle_momentum=False)


@needs_torch
@settings(max_examples=40, deadline=None)
@given(t0=st.integers(1, 6), mult=st.integers(1, 3), eta=st.sampled_from([0.0, 1e-3]),
       steps=st.integers(1, 40))
def test_warm_restarts_match_torch(t0, mult, eta, steps):
    ours, theirs = _pair(0.2)
    sched = S.CosineAnnealingWarmRestarts(ours, T_0=t0, T_mult=mult, eta_min=eta)
    tsched = TS.CosineAnnealingWarmRestarts(theirs, T_0=t0, T_mult=mult, eta_min=eta)
    _compare(ours, sched, theirs, tsched, steps)


@needs_torch
@pytest.mark.parametrize("mult", [1, 2])
def test_warm_restarts_per_batch_match_torch_fractional_epochs(mult):
    ours, theirs = _pair(0.2)
    sched = S.CosineAnnealingWarmRestarts(ours, T_0=2, T_mult=mult, steps_per_epoch=5)
    tsched = TS.CosineAnnealingWarmRestarts(theirs, T_0=2, T_mult=mult)
    for epoch in range(7):
        for i in range(5):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's note on passing an epoch
                tsched.step(epoch + i / 5)
            assert ours.lr == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
            if i < 4:
                sched.step_batch()
        sched.step()


@needs_torch
@settings(max_examples=30, deadline=None)
@given(total=st.integers(1, 12), power=st.sampled_from([0.5, 1.0, 2.0, 3.7]),
       steps=st.integers(1, 20))
def test_polynomial_matches_torch(total, power, steps):
    ours, theirs = _pair(0.3)
    _compare(ours, S.PolynomialLR(ours, total_iters=total, power=power), theirs,
             TS.PolynomialLR(theirs, total_iters=total, power=power), steps)


@needs_torch
@pytest.mark.parametrize("name", ["exp", "inverse", "warm"])
def test_lambda_matches_torch(name):
    fn = {"exp": lambda e: 0.9 ** e, "inverse": lambda e: 1.0 / (1 + e),
          "warm": lambda e: min(1.0, (e + 1) / 4)}[name]
    ours, theirs = _pair(0.5)
    _compare(ours, S.LambdaLR(ours, fn), theirs, TS.LambdaLR(theirs, fn), 12)


def test_lambda_refuses_a_bad_factor():
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(TypeError, match="LambdaLR: lr_lambda must be a function"):
        S.LambdaLR(opt, 0.5)
    sched = S.LambdaLR(opt, lambda e: 1.0 if e < 2 else math.nan)
    sched.step()
    with pytest.raises(ValueError, match=r"lr_lambda\(2\) must return a finite number"):
        sched.step()


@needs_torch
@settings(max_examples=30, deadline=None)
@given(m1=st.integers(1, 5), gap=st.integers(1, 5), steps=st.integers(1, 20),
       first=st.sampled_from(["linear", "exp", "constant"]))
def test_sequential_matches_torch(m1, gap, steps, first):
    ours, theirs = _pair(0.4)

    def parts(opt, lib, torch_side):
        a = {"linear": lambda: lib.LinearLR(opt, 0.1, total_iters=m1) if torch_side else
             S.LinearWarmup(opt, m1, start_factor=0.1),
             "exp": lambda: lib.ExponentialLR(opt, 0.7),
             "constant": lambda: lib.StepLR(opt, 100)}[first]()
        b = lib.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2)
        c = lib.PolynomialLR(opt, total_iters=4, power=2.0)
        return [a, b, c]

    sched = S.SequentialLR(ours, parts(ours, S, False), [m1, m1 + gap])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tsched = TS.SequentialLR(theirs, parts(theirs, TS, True), [m1, m1 + gap])
    _compare(ours, sched, theirs, tsched, steps)


def test_sequential_checks_its_parts():
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="2 schedules need 1 milestones, got 2"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.StepLR(opt, 3)], [2, 4])
    with pytest.raises(TypeError, match="schedules must be a non-empty list"):
        S.SequentialLR(opt, [S.ReduceLROnPlateau(opt)], [])
    other = SGD([Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="the same optimizer"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.StepLR(other, 3)], [2])


@pytest.mark.parametrize("make", [
    lambda o: S.OneCycleLR(o, max_lr=1.0, epochs=4, steps_per_epoch=3),
    lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=9, three_phase=True),
    lambda o: S.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=2, steps_per_epoch=3),
    lambda o: S.LambdaLR(o, lambda e: 0.8 ** e),
    lambda o: S.PolynomialLR(o, total_iters=6, power=2.0),
    lambda o: S.SequentialLR(o, [S.StepLR(o, 1, 0.5), S.PolynomialLR(o, 5)], [2]),
], ids=["onecycle", "onecycle3", "restarts", "lambda", "poly", "sequential"])
def test_state_dict_resumes_on_the_same_curve(make):
    a = SGD([Parameter(np.zeros(1))], lr=0.1, momentum=0.9)
    b = SGD([Parameter(np.zeros(1))], lr=0.1, momentum=0.9)
    sa = make(a)
    for _ in range(2):
        sa.step_batch()
        sa.step()
    sb = make(b)
    sb.load_state_dict(sa.state_dict())
    assert (b.lr, b.momentum) == (a.lr, a.momentum)
    for _ in range(2):
        sa.step()
        sb.step()
        assert (b.lr, b.momentum) == (a.lr, a.momentum)
