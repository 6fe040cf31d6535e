"""Trainer: seeded repeatability, checkpoint/resume, Ctrl-C, early stopping, history plot."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinycnn.containers import Residual, Sequential
from tinycnn.data import DataLoader, RandomCrop
from tinycnn.fast import _first_layer
from tinycnn.layers.activation import ReLU
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.dropout import Dropout
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.pool import MaxPool2D
from tinycnn.layers.shape import Flatten
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.optim import SGD, Adam, Momentum
from tinycnn.schedules import CosineAnnealingLR, StepLR
from tinycnn.trainer import History, Trainer


def _dataset(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 classes: which third of an 8x8 image holds a bright blob, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 1, 8, 8)).astype(np.float32) * 0.5
    for i, c in enumerate(y):
        x[i, 0, 1:7, 1 + 2 * c:3 + 2 * c] += 1.0
    return x, y


def _model(seed: int = 0) -> Sequential:
    rng = np.random.default_rng(seed)
    return Sequential(Conv2D(1, 4, 3, padding=1, rng=rng), BatchNorm2D(4), ReLU(), MaxPool2D(2),
                      Flatten(), Dropout(0.3, seed=seed + 1), Affine(64, 3, rng=rng))


def _loaders(seed: int = 1) -> tuple[DataLoader, DataLoader]:
    x, y = _dataset()
    xv, yv = _dataset(40, seed=9)
    train = DataLoader((x, y), batch_size=16, shuffle=True, seed=seed,
                       transform=RandomCrop(8, padding=1))
    return train, DataLoader((xv, yv), batch_size=20)


def _trainer(model_seed: int = 0, **kw) -> Trainer:
    model = _model(model_seed)
    opt = Momentum(model, lr=0.05, momentum=0.9)
    sched = CosineAnnealingLR(opt, T_max=4, steps_per_epoch=6)
    kw = {"progress": False, "verbose": False, **kw}
    return Trainer(model, SoftmaxCrossEntropy(), opt, sched, **kw)


def _same_weights(a: Trainer, b: Trainer) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_training_reduces_loss_and_records_history() -> None:
    trainer = _trainer()
    hist = trainer.fit(*_loaders(), epochs=4)
    assert hist.epoch == [1, 2, 3, 4]
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert hist.val_accuracy[-1] > 0.6  # chance is 1/3
    assert hist.lr[0] == pytest.approx(0.05) and hist.lr[-1] < hist.lr[0]
    assert all(t > 0 for t in hist.time) and all(r > 0 for r in hist.images_per_s)
    assert not hist.stopped_early and not hist.interrupted


def test_two_seeded_runs_are_identical() -> None:
    a, b = _trainer(), _trainer()
    ha = a.fit(*_loaders(), epochs=2)
    hb = b.fit(*_loaders(), epochs=2)
    assert _same_weights(a, b)
    assert ha.train_loss == hb.train_loss and ha.val_loss == hb.val_loss
    c = _trainer()
    c.fit(*_loaders(seed=2), epochs=2)  # another shuffling/augmentation seed
    assert not _same_weights(a, c)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    full = _trainer()
    h_full = full.fit(*_loaders(), epochs=4)

    ckpt = tmp_path / "ckpt.npz"
    first = _trainer(checkpoint=ckpt)
    first.fit(*_loaders(), epochs=2)
    assert ckpt.is_file()
    second = _trainer(model_seed=99, checkpoint=ckpt)  # different init: all must come from disk
    h_res = second.fit(*_loaders(), epochs=4, resume=True)
    assert _same_weights(full, second)
    assert h_res.epoch == [1, 2, 3, 4]
    assert h_res.train_loss == h_full.train_loss and h_res.lr == h_full.lr
    assert second.optimizer.lr == full.optimizer.lr


class InterruptingLoader:
    """Wraps a loader; at batch ``at`` (counted over epochs) raises KeyboardInterrupt, or
    sends this process a real SIGINT (as Ctrl-C does) and goes on yielding."""

    def __init__(self, loader: DataLoader, at: int, how: str = "raise") -> None:
        self.loader, self.at, self.count, self.how = loader, at, 0, how

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if self.count == self.at:
                if self.how == "raise":
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGINT)
            self.count += 1
            yield batch


@pytest.mark.parametrize("how", ["raise", "signal"])
def test_keyboard_interrupt_saves_and_resume_is_exact(tmp_path: Path, capsys, how: str) -> None:
    full = _trainer()
    h_full = full.fit(*_loaders(), epochs=3)

    ckpt = tmp_path / "run" / "ckpt.npz"
    train, val = _loaders()
    stopped = _trainer(checkpoint=ckpt, verbose=True)
    hist = stopped.fit(InterruptingLoader(train, at=9, how=how), val, epochs=3)  # epoch 2
    assert hist.interrupted and len(hist) == 1
    assert "Interrupted in epoch 2 after 3 batch(es)" in capsys.readouterr().out
    with np.load(ckpt, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
    assert meta["epoch"] == 1 and meta["partial"]["batches"] == 3

    resumed = _trainer(model_seed=5, checkpoint=ckpt)
    h_res = resumed.fit(*_loaders(), epochs=3, resume=ckpt)
    assert not h_res.interrupted
    assert _same_weights(full, resumed)
    np.testing.assert_allclose(h_res.train_loss, h_full.train_loss, rtol=1e-12)
    assert h_res.val_accuracy == h_full.val_accuracy


def test_interrupt_without_checkpoint_path_writes_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    train, val = _loaders()
    hist = _trainer().fit(InterruptingLoader(train, at=2), val, epochs=2)
    assert hist.interrupted
    assert (tmp_path / "interrupted-checkpoint.npz").is_file()


def test_early_stopping_stops_after_patience() -> None:
    model = _model()
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model, lr=1e-4), patience=2,
                      monitor="val_loss", min_delta=10.0, progress=False, verbose=False)
    hist = trainer.fit(*_loaders(), epochs=20)
    # epoch 1 sets the best; epochs 2-4 fail to beat it by min_delta; 3 > patience stops.
    assert hist.stopped_early and len(hist) == 4 and hist.best_epoch == 1


def test_early_stopping_restore_best() -> None:
    model = _model()
    trainer = Trainer(model, SoftmaxCrossEntropy(), Adam(model, lr=0.02), patience=1,
                      monitor="train_accuracy", restore_best=True, progress=False,
                      verbose=False)
    hist = trainer.fit(*_loaders(), epochs=3)
    best_states = trainer._best_state
    assert hist.best_epoch == 1 + int(np.argmax(hist.train_accuracy))
    assert best_states is not None
    now = model.state_dict()
    assert all(np.array_equal(now[k], best_states[k]) for k in now)


def test_monitor_needs_validation_data() -> None:
    with pytest.raises(ValueError, match="val_loader"):
        _trainer(monitor="val_accuracy").fit(_loaders()[0], None, epochs=1)
    with pytest.raises(ValueError, match="monitor"):
        _trainer(monitor="f1")


def test_step_lr_is_applied_per_epoch() -> None:
    model = _model()
    opt = SGD(model, lr=0.1)
    trainer = Trainer(model, SoftmaxCrossEntropy(), opt, StepLR(opt, 1, gamma=0.5),
                      progress=False, verbose=False)
    hist = trainer.fit(_loaders()[0], epochs=3)
    np.testing.assert_allclose(hist.lr, [0.1, 0.05, 0.025])
    assert opt.lr == pytest.approx(0.0125)


def test_first_conv_skips_input_gradient_during_fit() -> None:
    model = _model()
    conv = model[0]
    seen = []
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model, lr=0.01), progress=False,
                      verbose=False)
    original = conv.backward  # the accelerated layer's

    def spy(g):
        seen.append(conv.input_grad)
        return original(g)

    conv.backward = spy
    trainer.fit(_loaders()[0], epochs=1)
    assert seen and not any(seen)
    assert conv.input_grad  # restored after fit
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    out = model(x)
    assert model.backward(np.ones_like(out)).shape == x.shape  # the user's backward: dx


def test_first_conv_is_left_alone_inside_a_branch() -> None:
    rng = np.random.default_rng(0)
    branchy = Sequential(Residual(Sequential(Conv2D(1, 1, 3, padding=1, rng=rng))), Flatten())
    assert _first_layer(branchy) is None
    assert isinstance(_first_layer(_model()), Conv2D)


def test_history_plot_and_round_trip(tmp_path: Path) -> None:
    trainer = _trainer()
    hist = trainer.fit(*_loaders(), epochs=2)
    path = hist.plot(tmp_path / "plots" / "curves.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    again = History.from_dict(json.loads(json.dumps(hist.to_dict())))
    assert again.train_loss == hist.train_loss and again.epoch == hist.epoch
    with pytest.raises(ValueError, match="no epochs"):
        History().plot(tmp_path / "empty.png")


def test_progress_bar_runs(capsys) -> None:
    trainer = _trainer()
    trainer.progress = True
    trainer.fit(*_loaders(), epochs=1)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "/6" in err  # tqdm writes to stderr, 6 batches


def test_auxiliary_heads_add_weighted_losses() -> None:
    """A model returning (logits, aux) in training gets loss + 0.3 * aux loss, and both grads."""
    from typing import NamedTuple

    from tinycnn.module import Module

    class Out(NamedTuple):
        logits: Any
        aux: Any

    class TwoHeads(Module):
        def __init__(self) -> None:
            super().__init__()
            self.main = Affine(4, 3, rng=np.random.default_rng(0))
            self.head = Affine(4, 3, rng=np.random.default_rng(1))

        def forward(self, x: Any) -> Any:
            return Out(self.main(x), self.head(x)) if self.training else self.main(x)

        def backward(self, g: Any) -> Any:
            return self.main.backward(g.logits) + self.head.backward(g.aux)

    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    model = TwoHeads()
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1),
                      progress=False, verbose=False, aux_weight=0.3)
    main_loss, aux_loss = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    expected = float(main_loss(model.main(x), y)) + 0.3 * float(aux_loss(model.head(x), y))
    model.main.backward(main_loss.backward())
    model.head.backward(aux_loss.backward(0.3))
    want = {n: p.data - 0.1 * p.grad for n, p in model.named_parameters()}
    model.zero_grad()

    value, _, n = trainer.train_step(x, y)

    assert n == 8
    assert value == pytest.approx(expected, rel=1e-5)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.data, want[name], rtol=1e-5, atol=1e-6)


def test_trainer_refuses_a_loss_that_returns_one_value_per_element() -> None:
    from tinycnn import losses, models, optim
    from tinycnn.trainer import Trainer

    model = models.simple_convnet(seed=0)
    with pytest.raises(ValueError, match="reduction='none'"):
        Trainer(model, losses.CrossEntropyLoss(reduction="none"), optim.SGD(model, lr=0.1))
