"""The CLI's --schedule onecycle, poly and restarts: what they build, and a short run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from tinycnn import schedules as S
from tinycnn.cli import SCHEDULES, UsageError, _make_schedule, main
from tinycnn.module import Parameter
from tinycnn.optim import SGD, AdaGrad, Adam


def _args(schedule: str, epochs: int = 6, warmup: int = 0) -> argparse.Namespace:
    return argparse.Namespace(schedule=schedule, epochs=epochs, warmup=warmup, gamma=0.9)


def test_the_new_choices_are_offered():
    assert {"onecycle", "poly", "restarts"} <= set(SCHEDULES)


def test_onecycle_peaks_at_lr_and_cycles_momentum_only_where_there_is_one():
    adam = Adam([Parameter(np.zeros(1))], lr=0.01)
    sched = _make_schedule(_args("onecycle"), adam, steps=10)
    assert isinstance(sched, S.OneCycleLR) and sched.total_steps == 60
    assert sched.max_lr == 0.01 and adam.lr == pytest.approx(0.01 / 25)
    assert adam.betas[0] == 0.95  # cycled
    ada = AdaGrad([Parameter(np.zeros(1))], lr=0.01)
    assert not _make_schedule(_args("onecycle"), ada, steps=10).cycle_momentum
    with pytest.raises(UsageError, match="--warmup cannot be combined with --schedule onecycle"):
        _make_schedule(_args("onecycle", warmup=1), adam, steps=10)


@pytest.mark.parametrize("name, cls", [("poly", S.PolynomialLR),
                                       ("restarts", S.CosineAnnealingWarmRestarts)])
def test_poly_and_restarts(name, cls):
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    sched = _make_schedule(_args(name), opt, steps=4)
    assert isinstance(sched, cls) and sched.steps_per_epoch == 4
    warm = _make_schedule(_args(name, warmup=2), SGD([Parameter(np.zeros(1))], lr=0.1), 4)
    assert isinstance(warm, S.LinearWarmup) and isinstance(warm.after, cls)


def test_a_short_onecycle_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYCNN_DATA", raising=False)  # no data location: the embedded subset
    out = tmp_path / "run"
    argv = ["train", "--model", "simple_convnet", "--epochs", "2", "--limit-train", "200",
            "--val-size", "50", "--batch-size", "50", "--schedule", "onecycle",
            "--optimizer", "sgd", "--limit-test", "100", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2]
