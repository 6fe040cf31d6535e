"""Trainer under faults: Ctrl-C inside a step, checkpoints that do not fit, NaN and inf
(stopped, named, never saved), and the anomaly mode that finds the layer."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_trainer import _dataset, _loaders, _model, _same_weights

from tinycnn.anomaly import NonFiniteError, detect_anomaly
from tinycnn.containers import Sequential
from tinycnn.data import DataLoader
from tinycnn.layers.activation import ReLU
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.linear import Affine
from tinycnn.layers.shape import Flatten
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.module import Module, StateDictError
from tinycnn.optim import SGD, Adam
from tinycnn.schedules import CosineAnnealingLR, StepLR
from tinycnn.trainer import Trainer


class CtrlCTwiceInsideStep(Adam):
    """Adam that gets Ctrl-C twice in the middle of its step number ``at``: after the first
    parameter moved, before the others (the issue's "Adam step counters say 7 and 8")."""

    def __init__(self, *args: Any, at: int, raise_directly: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.at, self.calls, self.raise_directly = at, 0, raise_directly

    def step(self) -> None:
        self.calls += 1
        super().step()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": "Adam"}  # resumable by plain Adam

    def _update(self, p: Any, g: Any, state: dict[str, Any]) -> None:
        super()._update(p, g, state)
        if self.calls == self.at and p is self.params[0]:
            if self.raise_directly:  # not through the trainer's handler: cannot be deferred
                raise KeyboardInterrupt
            signal.raise_signal(signal.SIGINT)  # the handler runs before this returns
            signal.raise_signal(signal.SIGINT)


def _adam_trainer(model_seed: int = 0, at: int | None = None, raise_directly: bool = False,
                  **kw: Any) -> Trainer:
    model = _model(model_seed)
    if at is None:
        opt = Adam(model, lr=0.01)
    else:
        opt = CtrlCTwiceInsideStep(model, lr=0.01, at=at, raise_directly=raise_directly)
    sched = CosineAnnealingLR(opt, T_max=3, steps_per_epoch=6)
    return Trainer(model, SoftmaxCrossEntropy(), opt, sched,
                   **{"progress": False, "verbose": False, **kw})


def _meta(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as f:
        return json.loads(str(f["meta"]))


def test_second_ctrl_c_inside_a_step_saves_the_state_after_that_step(tmp_path: Path) -> None:
    full = _adam_trainer()
    h_full = full.fit(*_loaders(), epochs=3)

    ckpt = tmp_path / "ckpt.npz"
    stopped = _adam_trainer(at=8, checkpoint=ckpt)  # epoch 2, batch 2
    hist = stopped.fit(*_loaders(), epochs=3)
    assert hist.interrupted and len(hist) == 1
    meta = _meta(ckpt)
    assert meta["epoch"] == 1 and meta["partial"]["batches"] == 2  # the step completed
    with np.load(ckpt, allow_pickle=False) as f:
        counters = {int(f[k]) for k in f.files if k.startswith("optim.state.") and
                    k.endswith(".step")}
    assert counters == {8}  # every parameter's Adam step, none half done

    resumed = _adam_trainer(model_seed=5, checkpoint=ckpt)
    h_res = resumed.fit(*_loaders(), epochs=3, resume=ckpt)
    assert _same_weights(full, resumed)
    np.testing.assert_allclose(h_res.train_loss, h_full.train_loss, rtol=1e-12)


def test_an_interrupt_that_tears_a_step_writes_nothing(tmp_path: Path, capsys) -> None:
    """A KeyboardInterrupt raised inside the step by other code cannot be deferred: the
    half-updated model is not saved, the last complete checkpoint stays, and resuming
    from it repeats the uninterrupted run."""
    full = _adam_trainer()
    full.fit(*_loaders(), epochs=3)

    ckpt = tmp_path / "ckpt.npz"
    stopped = _adam_trainer(at=9, raise_directly=True, checkpoint=ckpt, verbose=True)
    hist = stopped.fit(*_loaders(), epochs=3)
    assert hist.interrupted
    out = capsys.readouterr().out
    assert "inside a training step of epoch 2" in out and "was not saved" in out
    assert f"{ckpt}, is intact" in out
    meta = _meta(ckpt)
    assert meta["epoch"] == 1 and meta["partial"]["batches"] == 0  # epoch 1's, untouched
    resumed = _adam_trainer(model_seed=5, checkpoint=ckpt)
    resumed.fit(*_loaders(), epochs=3, resume=ckpt)
    assert _same_weights(full, resumed)


def test_a_torn_step_without_checkpoint_does_not_invite_resume(tmp_path: Path, capsys,
                                                              monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = _adam_trainer(at=3, raise_directly=True, verbose=True)
    assert trainer.fit(*_loaders(), epochs=2).interrupted
    out = capsys.readouterr().out
    assert "No checkpoint was written" in out and "resume" not in out
    assert list(tmp_path.iterdir()) == [] and trainer.last_checkpoint is None


def _snapshot(trainer: Trainer) -> tuple:
    return (trainer.model.state_dict(), trainer.optimizer.state_dict(), trainer.optimizer.lr,
            trainer.epoch, trainer.history.to_dict(),
            trainer.scheduler.state_dict() if trainer.scheduler is not None else None)


def _assert_unchanged(trainer: Trainer, before: tuple) -> None:
    after = _snapshot(trainer)
    for a, b in zip(after[:2], before[:2], strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert after[2:] == before[2:]


@pytest.mark.parametrize("make, message", [
    (lambda m: Trainer(m, SoftmaxCrossEntropy(), SGD(m, lr=0.1)), "saved by Adam, not by SGD"),
    (lambda m: Trainer(m, SoftmaxCrossEntropy(), Adam(m, betas=(0.5, 0.6))), None),
    (lambda m: Trainer(m, SoftmaxCrossEntropy(), (o := Adam(m)), StepLR(o, 1)),
     "schedule is CosineAnnealingLR, this trainer's is StepLR"),
])
def test_a_checkpoint_that_does_not_fit_changes_nothing(tmp_path: Path, make, message) -> None:
    """An Adam checkpoint loaded into SGD used to overwrite the model before the optimizer
    was found not to match."""
    ckpt = tmp_path / "ckpt.npz"
    _adam_trainer(checkpoint=ckpt).fit(*_loaders(), epochs=1)
    trainer = make(_model(7))
    for k in ("progress", "verbose"):
        setattr(trainer, k, False)
    before = _snapshot(trainer)
    if message is None:  # fits: it loads, and the betas come from the checkpoint
        trainer.load_checkpoint(ckpt)
        assert trainer.optimizer.betas == (0.9, 0.999) and trainer.epoch == 1
        return
    with pytest.raises(ValueError, match=message):
        trainer.load_checkpoint(ckpt, _loaders()[0])
    _assert_unchanged(trainer, before)


def test_a_checkpoint_of_another_loader_or_model_changes_nothing(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.npz"
    _adam_trainer(checkpoint=ckpt).fit(*_loaders(), epochs=1)
    trainer = _adam_trainer(model_seed=3)
    before = _snapshot(trainer)
    x, y = _dataset()
    plain = DataLoader((x, y), batch_size=16)  # no shuffling: no random generator
    with pytest.raises(ValueError, match="training loader"):
        trainer.load_checkpoint(ckpt, plain)
    _assert_unchanged(trainer, before)
    other = Trainer(Sequential(Flatten(), Affine(64, 3)), SoftmaxCrossEntropy(),
                    SGD([*_model().parameters()], lr=0.1))
    with pytest.raises(StateDictError, match="nothing was loaded"):
        other.load_checkpoint(ckpt)


# --- NaN and inf --------------------------------------------------------------------------


class NaNGradientLoss(SoftmaxCrossEntropy):
    """A finite loss whose gradient holds one NaN: only the parameters show it."""

    def backward(self, grad: Any = 1.0) -> Any:
        g = super().backward(grad)
        g[0, 0] = np.nan
        return g


class FiniteLossNaNGradient(NaNGradientLoss):
    """Reports 1.0 whatever the logits: training goes on while the weights are NaN."""

    def forward(self, logits: Any, target: Any) -> Any:
        self.probs = np.zeros_like(logits)
        self.t = np.zeros_like(logits)
        return np.float32(1.0)


class UncheckedLoss(SoftmaxCrossEntropy):
    """A loss of the user's own that does not check its value (NaN from the start)."""

    def forward(self, logits: Any, target: Any) -> Any:
        super().forward(logits, target)
        return np.float32(np.nan)


def _plain_model(seed: int = 0) -> Sequential:
    rng = np.random.default_rng(seed)
    return Sequential(Conv2D(1, 2, 3, padding=1, rng=rng), ReLU(), Flatten(),
                      Affine(128, 3, rng=rng))


def _plain_loader() -> DataLoader:
    x, y = _dataset()
    return DataLoader((x, y), batch_size=16)


def test_a_nan_parameter_stops_training_naming_epoch_and_batch(tmp_path: Path) -> None:
    model = _plain_model()
    ckpt = tmp_path / "ckpt.npz"
    trainer = Trainer(model, NaNGradientLoss(), SGD(model, lr=0.1), checkpoint=ckpt,
                      progress=False, verbose=False)
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(_plain_loader(), epochs=2)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("training stopped in epoch 1, batch 1: parameter '0.weight' holds")
    assert isinstance(info.value, FloatingPointError)
    assert not ckpt.exists()  # no checkpoint with NaN weights


def test_nan_in_the_data_is_caught_whatever_the_layers_do(tmp_path: Path) -> None:
    """One NaN pixel: the first conv's weights become NaN (even where ReLU or pooling would
    hide the NaN from the loss). Training stops at that batch; the checkpoint of epoch 1
    stays finite and is not overwritten."""
    x, y = _dataset()
    ckpt = tmp_path / "ckpt.npz"

    class NaNInEpoch2:
        def __init__(self) -> None:
            self.epoch = 0

        def __len__(self) -> int:
            return 6

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            for b in range(6):
                xb = x[16 * b:16 * b + 16].copy()
                if self.epoch == 1 and b == 2:
                    xb[5, 0, 4, 4] = np.nan
                yield xb, y[16 * b:16 * b + 16]

    model = _plain_model()
    trainer = Trainer(model, SoftmaxCrossEntropy(), Adam(model, lr=0.01), checkpoint=ckpt,
                      progress=False, verbose=False)
    with pytest.raises(NonFiniteError, match=r"^training stopped in epoch 2, batch 3: "):
        trainer.fit(NaNInEpoch2(), epochs=3)
    assert _meta(ckpt)["epoch"] == 1
    with np.load(ckpt) as f:
        assert all(np.isfinite(f[k]).all() for k in f.files if k.startswith("model."))


def test_a_nan_loss_stops_before_the_weights_change() -> None:
    model = _plain_model()
    before = model.state_dict()
    trainer = Trainer(model, UncheckedLoss(), SGD(model, lr=0.1), progress=False,
                      verbose=False)
    with pytest.raises(NonFiniteError, match=r"epoch 1, batch 1: the loss is nan"):
        trainer.fit(_plain_loader(), epochs=1)
    after = model.state_dict()
    assert all(np.array_equal(after[k], before[k]) for k in before)


def test_check_finite_false_trains_on_but_never_writes_nan_weights(tmp_path: Path) -> None:
    model = _plain_model()
    ckpt = tmp_path / "ckpt.npz"
    trainer = Trainer(model, FiniteLossNaNGradient(), SGD(model, lr=0.1), checkpoint=ckpt,
                      check_finite=False, progress=False, verbose=False)
    with pytest.raises(NonFiniteError, match=r"not writing checkpoint .*ckpt\.npz: the "
                                             r"model's '0\.weight' holds NaN"):
        trainer.fit(_plain_loader(), epochs=1)
    assert not ckpt.exists() and trainer.epoch == 1  # the epoch ran to its end


# --- anomaly mode -------------------------------------------------------------------------


class Log(Module):
    """log(x): NaN from a finite negative input; its backward 1/x is inf at 0."""

    def forward(self, x: Any) -> Any:
        self.x = x
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log(x)

    def backward(self, g: Any) -> Any:
        with np.errstate(divide="ignore"):
            return g / self.x


def test_detect_anomaly_names_the_layer_that_made_the_nan() -> None:
    rng = np.random.default_rng(0)
    inner = Sequential(Affine(4, 4, rng=rng), Log())
    model = Sequential(Affine(3, 4, rng=rng), inner)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    with detect_anomaly(model), pytest.raises(NonFiniteError) as info:
        model(x)
    assert str(info.value) == ("NaN in the output of layer '1.1' (Log) (its input was finite)")
    # restored on exit: plain methods again, and the same numbers as before
    assert all("forward" not in vars(m) and "backward" not in vars(m)
               for m in model.modules())
    with np.errstate(invalid="ignore"):
        assert np.isnan(model(x)).any()


def test_detect_anomaly_says_when_the_input_already_held_nan() -> None:
    model = Sequential(Affine(3, 2, rng=np.random.default_rng(0)))
    x = np.ones((2, 3), dtype=np.float32)
    x[1, 1] = np.inf
    with detect_anomaly(model), np.errstate(invalid="ignore"), pytest.raises(
            NonFiniteError, match=r"in the output of layer '0' \(Affine\) \(its input "
                                  r"already held inf"):
        model(x)


def test_detect_anomaly_checks_backward_and_keeps_instance_overrides() -> None:
    log = Log()
    identity = Affine(2, 2)
    identity.weight.data[...] = np.eye(2)
    identity.bias.data[...] = 0.0
    model = Sequential(identity, log)
    own = log.forward
    object.__setattr__(log, "forward", own)  # a user's instance attribute survives
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    with detect_anomaly(model):
        out = model(x)
        log.x = np.zeros_like(log.x)  # backward divides by zero: inf
        with pytest.raises(NonFiniteError, match=r"^inf in the input gradient of layer '1' "
                                                 r"\(Log\) \(the gradient it received was "
                                                 r"finite\)$"):
            model.backward(np.ones_like(out))
    assert vars(log)["forward"] is own and "backward" not in vars(log)


def test_trainer_detect_anomaly_names_epoch_batch_and_layer() -> None:
    x, y = _dataset()
    x = x.copy()
    x[20, 0, 2, 2] = np.nan  # image 20: epoch 1, batch 2 of an unshuffled loader
    model = Sequential(Sequential(Conv2D(1, 2, 3, padding=1, rng=np.random.default_rng(0))),
                       ReLU(), Flatten(), Affine(128, 3, rng=np.random.default_rng(1)))
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), detect_anomaly=True,
                      progress=False, verbose=False)
    with pytest.raises(NonFiniteError, match=r"^training stopped in epoch 1, batch 2: NaN in "
                                             r"the output of layer '0\.0' \(Conv2D\) \(its "
                                             r"input already held NaN"):
        trainer.fit(DataLoader((x, y), batch_size=16), epochs=1)
    assert all("forward" not in vars(m) for m in model.modules())
