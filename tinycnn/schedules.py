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
from collections.abc import Sequence
from typing import Any


class Schedule:
    """Base class: keeps the epoch count and writes ``lr_at(epoch)`` into ``optimizer.lr``."""

    def __init__(self, optimizer: Any, steps_per_epoch: int | None = None) -> None:
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"{type(self).__name__} needs an optimizer with an 'lr' attribute")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
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
        self.last_epoch = int(state["last_epoch"])
        self.batch = int(state["batch"])
        self.base_lr = float(state["base_lr"])
        self._apply()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_lr={self.base_lr}, epoch={self.last_epoch})"


class StepLR(Schedule):
    """``lr = base_lr * gamma ** floor(t / step_size)``."""

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1,
                 steps_per_epoch: int | None = None) -> None:
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        return self.base_lr * self.gamma ** math.floor(t / self.step_size)


class MultiStepLR(Schedule):
    """``lr = base_lr * gamma ** (number of milestones <= t)`` (ResNet's 0.1 -> 0.01 -> ...)."""

    def __init__(self, optimizer: Any, milestones: Sequence[int], gamma: float = 0.1,
                 steps_per_epoch: int | None = None) -> None:
        self.milestones, self.gamma = sorted(int(m) for m in milestones), gamma
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        return self.base_lr * self.gamma ** sum(1 for m in self.milestones if m <= t)


class ExponentialLR(Schedule):
    """``lr = base_lr * gamma ** t``."""

    def __init__(self, optimizer: Any, gamma: float, steps_per_epoch: int | None = None) -> None:
        self.gamma = gamma
        super().__init__(optimizer, steps_per_epoch)

    def lr_at(self, t: float) -> float:
        return self.base_lr * self.gamma**t


class CosineAnnealingLR(Schedule):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``.

    Reaches ``eta_min`` at ``t = T_max`` (and, like PyTorch's, rises again after it).
    """

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 steps_per_epoch: int | None = None) -> None:
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
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
        if warmup_epochs < 0:
            raise ValueError(f"LinearWarmup: warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0.0 < start_factor <= 1.0:
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
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
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
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = float(state["lr"])
