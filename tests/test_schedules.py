"""Learning-rate schedules: the same sequences as PyTorch's schedulers (or their formulas)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from tinycnn import schedules as S

try:
    import torch
except ImportError:  # the formulas below are the oracle then
    torch = None


class FakeOptimizer:
    def __init__(self, lr: float) -> None:
        self.lr = lr


def _ours(make: Callable[[FakeOptimizer], object], lr: float, steps: int,
          metrics: list[float] | None = None) -> list[float]:
    opt = FakeOptimizer(lr)
    sched = make(opt)
    out = [opt.lr]
    for i in range(steps):
        sched.step(metrics[i]) if metrics is not None else sched.step()
        out.append(opt.lr)
    return out


def _torch(make: Callable[[object], object], lr: float, steps: int,
           metrics: list[float] | None = None) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make(opt)
        out = [opt.param_groups[0]["lr"]]
        for i in range(steps):
            opt.step()
            sched.step(metrics[i]) if metrics is not None else sched.step()
            out.append(opt.param_groups[0]["lr"])
    return out


CASES = {
    "step": (lambda o: S.StepLR(o, step_size=3, gamma=0.5),
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
             lambda b, t: b * 0.5 ** (t // 3)),
    "multistep": (lambda o: S.MultiStepLR(o, [2, 5, 9], gamma=0.1),
                  lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 9], gamma=0.1),
                  lambda b, t: b * 0.1 ** sum(t >= m for m in (2, 5, 9))),
    "exponential": (lambda o: S.ExponentialLR(o, gamma=0.8),
                    lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8),
                    lambda b, t: b * 0.8**t),
    "cosine": (lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
               lambda b, t: 0.001 + (b - 0.001) * (1 + math.cos(math.pi * t / 10)) / 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("lr", [0.1, 0.03])
def test_epoch_schedules_match_pytorch(name: str, lr: float) -> None:
    ours_make, torch_make, formula = CASES[name]
    steps = 14 if name != "cosine" else 10
    got = _ours(ours_make, lr, steps)
    want = (_torch(torch_make, lr, steps) if torch is not None
            else [formula(lr, t) for t in range(steps + 1)])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_warmup_then_cosine_matches_sequential_lr() -> None:
    def ours(o):
        return S.LinearWarmup(o, 3, S.CosineAnnealingLR(o, T_max=6), start_factor=0.25)

    got = _ours(ours, 0.2, 9)
    if torch is not None:
        lrs = torch.optim.lr_scheduler

        def theirs(o):
            return lrs.SequentialLR(
                o, [lrs.LinearLR(o, start_factor=0.25, total_iters=3),
                    lrs.CosineAnnealingLR(o, T_max=6)], milestones=[3])

        want = _torch(theirs, 0.2, 9)
    else:
        warm = [0.2 * (0.25 + 0.75 * t / 3) for t in range(3)]
        want = warm + [0.2 * (1 + math.cos(math.pi * t / 6)) / 2 for t in range(7)]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_warmup_alone_matches_linear_lr() -> None:
    got = _ours(lambda o: S.LinearWarmup(o, 4, start_factor=0.1), 0.5, 7)
    if torch is not None:
        want = _torch(lambda o: torch.optim.lr_scheduler.LinearLR(
            o, start_factor=0.1, total_iters=4), 0.5, 7)
    else:
        want = [0.5 * (0.1 + 0.9 * min(t, 4) / 4) for t in range(8)]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", [
    {"mode": "min", "patience": 2},
    {"mode": "min", "patience": 1, "cooldown": 2, "factor": 0.5, "min_lr": 0.004},
    {"mode": "max", "patience": 1, "threshold": 0.05, "threshold_mode": "abs"},
])
def test_reduce_on_plateau_matches_pytorch(kwargs: dict) -> None:
    rng = np.random.default_rng(0)
    # Improving, then flat with noise, then improving again, then flat.
    metrics = list(np.concatenate([np.linspace(1.0, 0.5, 5), 0.5 + 0.01 * rng.random(8),
                                   np.linspace(0.45, 0.2, 4), np.full(8, 0.2)]))
    if kwargs["mode"] == "max":
        metrics = [1 - m for m in metrics]
    got = _ours(lambda o: S.ReduceLROnPlateau(o, **kwargs), 0.1, len(metrics), metrics)
    if torch is None:
        pytest.skip("PyTorch is not installed: ReduceLROnPlateau has no closed form to check")
    want = _torch(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **kwargs), 0.1,
                  len(metrics), metrics)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert min(got) < 0.1  # the sequence really did reduce


def _per_batch(make: Callable[[FakeOptimizer], S.Schedule], lr: float, epochs: int,
               steps: int) -> list[float]:
    opt = FakeOptimizer(lr)
    sched = make(opt)
    out = []
    for _ in range(epochs):
        for _ in range(steps):
            out.append(opt.lr)
            sched.step_batch()
        sched.step()
    return out


def test_cosine_per_batch_equals_iteration_level_pytorch() -> None:
    epochs, steps = 3, 5
    got = _per_batch(lambda o: S.CosineAnnealingLR(o, T_max=epochs, steps_per_epoch=steps),
                     0.1, epochs, steps)
    total = epochs * steps
    want = [0.1 * (1 + math.cos(math.pi * i / total)) / 2 for i in range(total)]
    if torch is not None:
        want = _torch(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total),
                      0.1, total - 1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_warmup_per_batch_rises_smoothly() -> None:
    epochs, steps = 2, 4
    got = _per_batch(lambda o: S.LinearWarmup(o, 1, S.StepLR(o, 1, 0.5), start_factor=0.2,
                                              steps_per_epoch=steps), 1.0, epochs, steps)
    want = [0.2 + 0.8 * i / steps for i in range(steps)] + [1.0] * steps
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_step_batch_without_steps_per_epoch_changes_nothing() -> None:
    opt = FakeOptimizer(0.1)
    sched = S.ExponentialLR(opt, 0.5)
    for _ in range(7):
        sched.step_batch()
    assert opt.lr == 0.1
    sched.step()
    assert opt.lr == pytest.approx(0.05)


@pytest.mark.parametrize("make", [
    lambda o: S.CosineAnnealingLR(o, T_max=5, steps_per_epoch=3),
    lambda o: S.LinearWarmup(o, 2, S.MultiStepLR(o, [1, 3])),
    lambda o: S.ReduceLROnPlateau(o, patience=0),
])
def test_state_dict_round_trip(make) -> None:
    opt_a = FakeOptimizer(0.3)
    a = make(opt_a)
    for i in range(4):
        if isinstance(a, S.ReduceLROnPlateau):
            a.step(1.0 + i)
        else:
            a.step_batch()
            a.step()
    opt_b = FakeOptimizer(0.3)
    b = make(opt_b)
    b.load_state_dict(a.state_dict())
    assert opt_b.lr == opt_a.lr
    for i in range(3):
        for s in (a, b):
            s.step(5.0 - i) if isinstance(s, S.ReduceLROnPlateau) else s.step()
        assert opt_b.lr == opt_a.lr


def test_bad_arguments() -> None:
    opt = FakeOptimizer(0.1)
    with pytest.raises(ValueError, match="step_size"):
        S.StepLR(opt, 0)
    with pytest.raises(ValueError, match="T_max"):
        S.CosineAnnealingLR(opt, 0)
    with pytest.raises(ValueError, match="factor"):
        S.ReduceLROnPlateau(opt, factor=1.5)
    with pytest.raises(TypeError, match="lr"):
        S.StepLR(object(), 1)
    with pytest.raises(TypeError, match="ReduceLROnPlateau"):
        S.LinearWarmup(opt, 2, S.ReduceLROnPlateau(opt))


@pytest.mark.parametrize("make, message", [
    (lambda o: S.StepLR(o, 2, gamma=-0.5), r"StepLR: gamma must be a finite number > 0, got -0\.5"),
    (lambda o: S.StepLR(o, 1.5), r"StepLR: step_size must be a whole number >= 1, got 1\.5"),
    (lambda o: S.ExponentialLR(o, gamma=0.0), r"ExponentialLR: gamma must be .* > 0, got 0\.0"),
    (lambda o: S.MultiStepLR(o, [2, -1]), r"milestones\[\] must be a whole number >= 0, got -1"),
    (lambda o: S.CosineAnnealingLR(o, 5, eta_min=-1e-3), r"eta_min must be .* >= 0"),
    (lambda o: S.CosineAnnealingLR(o, 5, steps_per_epoch=0), r"steps_per_epoch must be .* >= 1"),
    (lambda o: S.LinearWarmup(o, -1), r"warmup_epochs must be a whole number >= 0, got -1"),
    (lambda o: S.ReduceLROnPlateau(o, patience=-2), r"patience must be a whole number >= 0"),
    (lambda o: S.ReduceLROnPlateau(o, min_lr=-1.0), r"min_lr must be a finite number >= 0"),
    (lambda o: S.ReduceLROnPlateau(o, cooldown=0.5), r"cooldown must be a whole number >= 0"),
    (lambda o: S.ReduceLROnPlateau(o, threshold=float("nan")), r"threshold must be"),
])
def test_constructors_check_their_arguments(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make(FakeOptimizer(0.1))


@pytest.mark.parametrize("make, bad, message", [
    (lambda o: S.StepLR(o, 2), {"last_epoch": -3}, r"last_epoch must be a whole number >= 0"),
    (lambda o: S.StepLR(o, 2), {"base_lr": "x"}, r"base_lr must be a finite number >= 0"),
    (lambda o: S.StepLR(o, 2), {"best": 1.0}, r"the state lacks \['last_epoch', 'batch'"),
    (lambda o: S.ReduceLROnPlateau(o), {"lr": -1.0}, r"lr must be a finite number >= 0"),
    (lambda o: S.ReduceLROnPlateau(o), {"last_epoch": 2}, r"the state lacks \['best'"),
])
def test_load_state_dict_checks_before_changing_anything(make, bad, message) -> None:
    opt = FakeOptimizer(0.3)
    sched = make(opt)
    state = sched.state_dict()
    before = (dict(state), opt.lr)
    state = bad if "lacks" in message else {**state, **bad}
    with pytest.raises(ValueError, match=message):
        sched.load_state_dict(state)
    assert (sched.state_dict(), opt.lr) == before
