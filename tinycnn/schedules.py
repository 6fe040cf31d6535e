"""Learning-rate schedules with PyTorch's meaning; each one sets ``optimizer.lr``.

Call ``step()`` once at the end of every epoch, as in PyTorch: after ``k`` calls the
learning rate is the schedule's value at epoch ``k`` (epoch 0 is the one that starts at
construction, with the optimizer's initial ``lr``).

Schedules built with ``steps_per_epoch`` also change the rate inside an epoch: call
``step_batch()`` after every optimizer step and the rate follows the same curve at the
fractional epoch ``k + i / steps_per_epoch`` (a smooth warmup or cosine). The
:class:`~tinycnn.trainer.Trainer` makes both calls.

Every schedule has ``lr_at(t)``, its closed form at (fractional) epoch ``t``, and
``state_dict()`` / ``load_state_dict()`` of plain numbers (saved in checkpoints).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any


def _positive(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            0.0 < value < math.inf):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _at_least_zero(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            0.0 <= value < math.inf):
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _count(owner: str, name: str, value: Any, least: int = 0) -> int:
    """A whole number >= ``least`` (an int, or a float such as 3.0 read back from JSON)."""
    whole = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and float(value).is_integer())
    if isinstance(value, bool) or not whole or value < least:
        raise ValueError(f"{owner}: {name} must be a whole number >= {least}, got {value!r}")
    return int(value)


def _state_fields(owner: str, state: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The named entries of a saved state, or ValueError naming what is missing."""
    if not isinstance(state, dict):
        raise ValueError(f"{owner}: expected a dict of {fields}, got {type(state).__name__}")
    missing = [f for f in fields if f not in state]
    if missing:
        raise ValueError(f"{owner}: the state lacks {missing} (saved by another schedule?)")
    return {f: state[f] for f in fields}


class Schedule:
    """Base class: keeps the epoch count and writes ``lr_at(epoch)`` into ``optimizer.lr``."""

    def __init__(self, optimizer: Any, steps_per_epoch: int | None = None) -> None:
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"{type(self).__name__} needs an optimizer with an 'lr' attribute")
        if steps_per_epoch is not None:
            steps_per_epoch = _count(type(self).__name__, "steps_per_epoch", steps_per_epoch, 1)
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.steps_per_epoch = steps_per_epoch
        self.last_epoch = 0
        self.batch = 0
        self._apply()

    def lr_at(self, t: float) -> float:
        """The learning rate at (fractional) epoch ``t``."""
        raise NotImplementedError(f"{type(self).__name__} does not define lr_at()")

    def _apply(self) -> None:
        t = self.last_epoch
        if self.steps_per_epoch:
            t = t + min(self.batch, self.steps_per_epoch) / self.steps_per_epoch
        self.optimizer.lr = self.lr_at(t)

    def step(self) -> None:
        """End of an epoch: move to the next epoch's learning rate."""
        self.last_epoch += 1
        self.batch = 0
        self._apply()

    def step_batch(self) -> None:
        """After one optimizer step; changes the rate only with ``steps_per_epoch`` set."""
        if self.steps_per_epoch:
            self.batch += 1
            self._apply()

    def get_last_lr(self) -> float:
        return float(self.optimizer.lr)

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "batch": self.batch, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s numbers; checked first, so a bad state changes nothing."""
        self._prepare_load(state)()

    def _prepare_load(self, state: dict[str, Any]) -> Callable[[], None]:
        owner = f"{type(self).__name__}.load_state_dict"
        raw = _state_fields(owner, state, ("last_epoch", "batch", "base_lr"))
        last_epoch = _count(owner, "last_epoch", raw["last_epoch"])
        batch = _count(owner, "batch", raw["batch"])
        base_lr = _at_least_zero(owner, "base_lr", raw["base_lr"])

        def install() -> None:
            self.last_epoch, self.batch, self.base_lr = last_epoch, batch, base_lr
            self._apply()

        return install

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_lr={self.base_lr}, epoch={self.last_epoch})"


class StepLR(Schedule):
    """``lr = base_lr * gamma ** floor(t / step_size)``."""

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1,
                 steps_per_epoch: int | None = None) -> None:
        self.step_size = _count("StepLR", "step_size", step_size, 1)
        self.gamma = _positive("StepLR", "gamma", gamma)
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        return self.base_lr * self.gamma ** math.floor(t / self.step_size)


class MultiStepLR(Schedule):
    """``lr = base_lr * gamma ** (number of milestones <= t)`` (ResNet's 0.1 -> 0.01 -> ...)."""

    def __init__(self, optimizer: Any, milestones: Sequence[int], gamma: float = 0.1,
                 steps_per_epoch: int | None = None) -> None:
        self.milestones = sorted(_count("MultiStepLR", "milestones[]", m) for m in milestones)
        self.gamma = _positive("MultiStepLR", "gamma", gamma)
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        return self.base_lr * self.gamma ** sum(1 for m in self.milestones if m <= t)


class ExponentialLR(Schedule):
    """``lr = base_lr * gamma ** t``."""

    def __init__(self, optimizer: Any, gamma: float, steps_per_epoch: int | None = None) -> None:
        self.gamma = _positive("ExponentialLR", "gamma", gamma)
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        return self.base_lr * self.gamma**t


class CosineAnnealingLR(Schedule):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``.

    Reaches ``eta_min`` at ``t = T_max`` (and, like PyTorch's, rises again after it).
    """

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 steps_per_epoch: int | None = None) -> None:
        self.T_max = _count("CosineAnnealingLR", "T_max", T_max, 1)
        self.eta_min = _at_least_zero("CosineAnnealingLR", "eta_min", eta_min)
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearWarmup(Schedule):
    """Rise linearly from ``start_factor * base_lr`` to ``base_lr`` over ``warmup_epochs``,
    then follow ``after`` (counted from the end of the warmup), or stay at ``base_lr``.

    The same as PyTorch's ``SequentialLR([LinearLR(start_factor, total_iters=warmup),
    after], milestones=[warmup])``. With ``steps_per_epoch`` the rise (and ``after``) is
    smooth within epochs.
    """

    def __init__(self, optimizer: Any, warmup_epochs: int, after: Schedule | None = None,
                 start_factor: float = 0.1, steps_per_epoch: int | None = None) -> None:
        warmup_epochs = _count("LinearWarmup", "warmup_epochs", warmup_epochs)
        if isinstance(start_factor, bool) or not isinstance(start_factor, numbers.Real) \
                or not 0.0 < start_factor <= 1.0:
            raise ValueError(f"LinearWarmup: start_factor must be in (0, 1], got {start_factor}")
        if isinstance(after, ReduceLROnPlateau):
            raise TypeError("LinearWarmup cannot wrap ReduceLROnPlateau (it has no closed form)")
        self.warmup_epochs, self.after, self.start_factor = warmup_epochs, after, start_factor
        if after is not None:
            optimizer.lr = after.base_lr  # the wrapped schedule already moved it to epoch 0
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        if t < self.warmup_epochs:
            frac = t / self.warmup_epochs
            return self.base_lr * (self.start_factor + (1.0 - self.start_factor) * frac)
        if self.after is None:
            return self.base_lr
        return self.after.lr_at(t - self.warmup_epochs)


class ReduceLROnPlateau:
    """Divide the rate by ``1 / factor`` when a metric stops improving (PyTorch's rules).

    ``step(metric)`` once per epoch. The metric improves when it beats the best so far by
    more than ``threshold`` (relative, or absolute with ``threshold_mode="abs"``); after
    more than ``patience`` epochs without improvement ``lr = max(lr * factor, min_lr)``,
    then ``cooldown`` epochs pass before bad epochs count again.
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            )
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor}")
        name = "ReduceLROnPlateau"
        self.optimizer = optimizer
        self.mode, self.factor = mode, factor
        self.patience = _count(name, "patience", patience)
        self.threshold = _at_least_zero(name, "threshold", threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = _count(name, "cooldown", cooldown)
        self.min_lr = _at_least_zero(name, "min_lr", min_lr)
        self.eps = _at_least_zero(name, "eps", eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _is_better(self, a: float) -> bool:
        if self.mode == "min":
            limit = self.best * (1 - self.threshold) if self.threshold_mode == "rel" \
                else self.best - self.threshold
            return a < limit
        limit = self.best * (1 + self.threshold) if self.threshold_mode == "rel" \
            else self.best + self.threshold
        return a > limit

    def step(self, metric: float) -> None:
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = float(self.optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def get_last_lr(self) -> float:
        return float(self.optimizer.lr)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "last_epoch": self.last_epoch,
                "lr": float(self.optimizer.lr)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s numbers; checked first, so a bad state changes nothing."""
        self._prepare_load(state)()

    def _prepare_load(self, state: dict[str, Any]) -> Callable[[], None]:
        owner = "ReduceLROnPlateau.load_state_dict"
        raw = _state_fields(owner, state, ("best", "num_bad_epochs", "cooldown_counter",
                                           "last_epoch", "lr"))
        best = raw["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real) or math.isnan(best):
            raise ValueError(f"{owner}: best must be a number or +-inf, got {best!r}")
        counts = {k: _count(owner, k, raw[k])
                  for k in ("num_bad_epochs", "cooldown_counter", "last_epoch")}
        lr = _at_least_zero(owner, "lr", raw["lr"])

        def install() -> None:
            self.best = float(best)
            self.num_bad_epochs = counts["num_bad_epochs"]
            self.cooldown_counter = counts["cooldown_counter"]
            self.last_epoch = counts["last_epoch"]
            self.optimizer.lr = lr

        return install


def _fraction(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


class OneCycleLR(Schedule):
    """The 1cycle policy (Smith), PyTorch's ``OneCycleLR`` step for step.

    Counted in optimizer steps ``s = 0 .. total_steps``: from ``max_lr / div_factor`` up
    to ``max_lr`` at ``s = pct_start * total_steps - 1``, then down to
    ``max_lr / div_factor / final_div_factor`` at ``s = total_steps - 1``, along half
    cosines (``anneal_strategy="cos"``) or straight lines (``"linear"``);
    ``three_phase=True`` comes back down to the start before the final descent. With
    ``cycle_momentum`` the optimizer's ``momentum`` (or Adam's ``beta1``) moves the other way,
    between ``max_momentum`` and ``base_momentum``.

    Give ``steps_per_epoch`` (and ``epochs``, or ``total_steps``): ``step_batch()`` after every
    optimizer step moves one step along the cycle, ``step()`` at the end of an epoch lands on
    the epoch boundary (the :class:`~tinycnn.trainer.Trainer` makes both calls). Without
    ``steps_per_epoch`` every ``step()`` is one step of ``total_steps``. The optimizer's own
    ``lr`` is not used: the cycle is set by ``max_lr``. Stepping past ``total_steps`` raises
    ``ValueError``, as in PyTorch.
    """

    def __init__(self, optimizer: Any, max_lr: float, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False) -> None:
        name = "OneCycleLR"
        if total_steps is not None:
            total_steps = _count(name, "total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            total_steps = _count(name, "epochs", epochs, 1) * _count(
                name, "steps_per_epoch", steps_per_epoch, 1)
        else:
            raise ValueError(f"{name}: give total_steps, or epochs and steps_per_epoch")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{name}: anneal_strategy must be 'cos' or 'linear', "
                             f"got {anneal_strategy!r}")
        self.total_steps = total_steps
        self.max_lr = _positive(name, "max_lr", max_lr)
        self.pct_start = _fraction(name, "pct_start", pct_start)
        self.anneal_strategy = anneal_strategy
        self.div_factor = _positive(name, "div_factor", div_factor)
        self.final_div_factor = _positive(name, "final_div_factor", final_div_factor)
        self.three_phase = bool(three_phase)
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum = _at_least_zero(name, "base_momentum", base_momentum)
        self.max_momentum = _at_least_zero(name, "max_momentum", max_momentum)
        if self.cycle_momentum and not (hasattr(optimizer, "momentum")
                                        or hasattr(optimizer, "betas")):
            raise ValueError(f"{name}: cycle_momentum needs an optimizer with momentum or "
                             f"betas, {type(optimizer).__name__} has neither "
                             "(pass cycle_momentum=False)")
        self.initial_lr = self.max_lr / self.div_factor
        self.min_lr = self.initial_lr / self.final_div_factor
        s = float(self.pct_start * total_steps)
        lr0, top, low = self.initial_lr, self.max_lr, self.min_lr
        m_hi, m_lo = self.max_momentum, self.base_momentum
        # (end step, start lr, end lr, start momentum, end momentum), PyTorch's phases
        self.phases = ([(s - 1, lr0, top, m_hi, m_lo), (2 * s - 2, top, lr0, m_lo, m_hi),
                        (total_steps - 1, lr0, low, m_hi, m_hi)] if self.three_phase else
                       [(s - 1, lr0, top, m_hi, m_lo), (total_steps - 1, top, low, m_lo, m_hi)])
        starts = [0.0] + [phase[0] for phase in self.phases[:-1]]
        if any(phase[0] == start for phase, start in zip(self.phases, starts, strict=True)):
            raise ValueError(f"{name}: pct_start={pct_start} with total_steps={total_steps} "
                             "leaves a phase of no steps (PyTorch divides by zero there); "
                             "change pct_start")
        super().__init__(optimizer, steps_per_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def at_step(self, step: float) -> tuple[float, float]:
        """``(lr, momentum)`` after ``step`` optimizer steps."""
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, but total_steps is "
                             f"{self.total_steps} (make total_steps or epochs larger)")
        start = 0.0
        for i, (end, lr_a, lr_b, m_a, m_b) in enumerate(self.phases):
            if step <= end or i == len(self.phases) - 1:
                pct = (step - start) / (end - start)
                return self._anneal(lr_a, lr_b, pct), self._anneal(m_a, m_b, pct)
            start = end
        raise AssertionError("unreachable: the last phase always matches")

    def _step_count(self, t: float) -> float:
        return t * self.steps_per_epoch if self.steps_per_epoch else t

    def lr_at(self, t: float) -> float:
        return self.at_step(self._step_count(t))[0]

    def _apply(self) -> None:
        step = self.last_epoch
        if self.steps_per_epoch:  # counted exactly, no fractional epoch in between
            step = self.last_epoch * self.steps_per_epoch + min(self.batch, self.steps_per_epoch)
        lr, momentum = self.at_step(step)
        self.optimizer.lr = lr
        if self.cycle_momentum:
            if hasattr(self.optimizer, "betas"):
                self.optimizer.betas = (momentum, *tuple(self.optimizer.betas)[1:])
            else:
                self.optimizer.momentum = momentum


class CosineAnnealingWarmRestarts(Schedule):
    """SGDR (Loshchilov and Hutter), PyTorch's ``CosineAnnealingWarmRestarts``.

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``: a cosine from
    ``base_lr`` down towards ``eta_min`` over ``T_i`` epochs, then a restart at ``base_lr``;
    the first cycle lasts ``T_0`` epochs, each next one ``T_mult`` times longer. ``T_cur``
    counts the epochs since the last restart (fractional with ``steps_per_epoch``, as
    PyTorch's ``step(epoch + i / iters)``).
    """

    def __init__(self, optimizer: Any, T_0: int, T_mult: int = 1,  # noqa: N803
                 eta_min: float = 0.0, steps_per_epoch: int | None = None) -> None:
        name = "CosineAnnealingWarmRestarts"
        self.T_0 = _count(name, "T_0", T_0, 1)
        self.T_mult = _count(name, "T_mult", T_mult, 1)
        self.eta_min = _at_least_zero(name, "eta_min", eta_min)
        super().__init__(optimizer, steps_per_epoch)

    def cycle_at(self, t: float) -> tuple[float, float]:
        """``(T_cur, T_i)`` at epoch ``t``: where in which cycle ``t`` falls."""
        start, length = 0, self.T_0
        while t >= start + length:  # whole numbers: exact, unlike PyTorch's log
            start, length = start + length, length * self.T_mult
        return t - start, length

    def lr_at(self, t: float) -> float:
        t_cur, t_i = self.cycle_at(t)
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * t_cur / t_i)) / 2


class LambdaLR(Schedule):
    """``lr = base_lr * lr_lambda(t)``, PyTorch's ``LambdaLR``: any factor of the epoch.

    ``lr_lambda`` gets the epoch count (fractional with ``steps_per_epoch``) and returns a
    number >= 0. Like PyTorch, the state dict keeps the epoch, not the function: give the
    same function when you resume.
    """

    def __init__(self, optimizer: Any, lr_lambda: Callable[[float], float],
                 steps_per_epoch: int | None = None) -> None:
        if not callable(lr_lambda):
            raise TypeError(f"LambdaLR: lr_lambda must be a function of the epoch, "
                            f"got {type(lr_lambda).__name__}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        factor = self.lr_lambda(t)
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not (
                0.0 <= factor < math.inf):
            raise ValueError(f"LambdaLR: lr_lambda({t}) must return a finite number >= 0, "
                             f"got {factor!r}")
        return self.base_lr * float(factor)


class PolynomialLR(Schedule):
    """``lr = base_lr * (1 - min(t, total_iters) / total_iters) ** power``, PyTorch's
    ``PolynomialLR``: down to 0 at ``total_iters`` (a straight line for ``power=1``)."""

    def __init__(self, optimizer: Any, total_iters: int = 5, power: float = 1.0,
                 steps_per_epoch: int | None = None) -> None:
        self.total_iters = _count("PolynomialLR", "total_iters", total_iters, 1)
        self.power = _positive("PolynomialLR", "power", power)
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        return self.base_lr * (1.0 - min(self.total_iters, t) / self.total_iters) ** self.power


class SequentialLR(Schedule):
    """One schedule after another, PyTorch's ``SequentialLR``.

    ``schedules[0]`` runs until epoch ``milestones[0]``, then ``schedules[1]`` starts from
    its own epoch 0, and so on: ``lr = schedules[i].lr_at(t - milestones[i-1])``. All of them
    start from the optimizer's learning rate before the first one (PyTorch's
    ``initial_lr``), whatever each saw when it was built. ``steps_per_epoch`` of the
    sequence makes every part smooth within epochs. Only the learning rate is chained: a
    :class:`OneCycleLR` inside does not cycle the momentum.
    """

    def __init__(self, optimizer: Any, schedules: Sequence[Schedule], milestones: Sequence[int],
                 steps_per_epoch: int | None = None) -> None:
        name = "SequentialLR"
        schedules = list(schedules)
        if not schedules or not all(isinstance(s, Schedule) for s in schedules):
            raise TypeError(f"{name}: schedules must be a non-empty list of tinycnn schedules "
                            "(ReduceLROnPlateau has no closed form to chain)")
        if any(s.optimizer is not optimizer for s in schedules):
            raise ValueError(f"{name}: every schedule must belong to the same optimizer")
        milestones = [_count(name, "milestones[]", m, 1) for m in milestones]
        if len(milestones) != len(schedules) - 1:
            raise ValueError(f"{name}: {len(schedules)} schedules need "
                             f"{len(schedules) - 1} milestones, got {len(milestones)}")
        if milestones != sorted(set(milestones)):
            raise ValueError(f"{name}: milestones must increase, got {milestones}")
        self.schedules, self.milestones = schedules, milestones
        for s in schedules[1:]:
            s.base_lr = schedules[0].base_lr
        optimizer.lr = schedules[0].base_lr
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        i = sum(1 for m in self.milestones if m <= t)
        return self.schedules[i].lr_at(t - (self.milestones[i - 1] if i else 0))
