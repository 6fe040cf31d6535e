"""The training loop: progress bar, validation, history, early stopping, checkpoints, resume.

One training step is the whole of what the book's ``Trainer`` does::

    logits = model(x)                      # forward, caches what backward needs
    loss_value = loss(logits, y)           # mean loss over the batch
    optimizer.zero_grad()
    model.backward(loss.backward())        # dL/dlogits, then every layer in reverse
    optimizer.step()                       # parameters move against their gradients

:class:`Trainer` adds the bookkeeping around it. A checkpoint is one ``.npz`` file
(written atomically, read with ``allow_pickle=False``) holding the model's state dict
(``model.*``), the optimizer's state (``optim.*``), and a JSON string (``meta``) with the
epoch, the history, the schedule and early-stopping state, and the states of every
``numpy.random.Generator`` found in the model (Dropout) and the training loader (shuffling,
augmentation), so a resumed run repeats an uninterrupted one exactly on the CPU.

Ctrl-C during :meth:`Trainer.fit` is taken at the next batch boundary: the trainer saves a
checkpoint (including the position inside the epoch) and returns the history with
``interrupted=True``. A second Ctrl-C stops at once, except inside a training step, which
it lets finish first: a checkpoint only ever holds the state after a complete step.

A NaN or inf loss, or a parameter that is not finite after a step, stops training with a
:class:`~tinycnn.anomaly.NonFiniteError` naming the epoch and batch; non-finite weights are
never saved. ``Trainer(detect_anomaly=True)`` also names the layer where the first NaN or
inf appeared (slow: every layer's output and gradient are scanned).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.anomaly import NonFiniteError, detect_anomaly
from tinycnn.fast import accelerate as accelerate_model
from tinycnn.fast import precompile
from tinycnn.files import remove_leftovers
from tinycnn.metrics import _pair, evaluate
from tinycnn.module import Module, StateDictError, save_arrays
from tinycnn.schedules import ReduceLROnPlateau

CHECKPOINT_FORMAT = "tinycnn-checkpoint-1"
MONITORS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")


@dataclass
class History:
    """Per-epoch records of a run; ``val_*`` are NaN for epochs without validation."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    images_per_s: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False

    def append(self, **row: float) -> None:
        for key, value in row.items():
            getattr(self, key).append(value)

    def __len__(self) -> int:
        return len(self.epoch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(**d)

    def plot(self, path: str | os.PathLike) -> Path:
        """Save loss, accuracy and learning-rate curves as an image (PNG by extension)."""
        from tinycnn.plot import plot_history

        return plot_history(self, path)


class _DeferredInterrupt:
    """Turn the first SIGINT into a flag read at batch boundaries (main thread only).

    A second SIGINT stops at once, unless it comes inside a :meth:`step` (a training step
    and its bookkeeping): then the step finishes and ``KeyboardInterrupt`` is raised right
    after it, so the state saved is that of a complete step. ``torn`` is True when an
    exception left a step half done (a ``KeyboardInterrupt`` raised by other code).
    """

    def __init__(self) -> None:
        self.requested = False
        self.stop_after_step = False
        self.depth = 0
        self.torn = False
        self.previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.requested = True
        elif self.depth:
            self.stop_after_step = True
        else:  # second Ctrl-C between steps: stop now
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """A block that changes training state: it completes, or ``torn`` says it did not."""
        self.depth += 1
        self.torn = True
        try:
            yield
        finally:
            self.depth -= 1
        self.torn = False  # reached only when the block completed
        if self.stop_after_step and not self.depth:
            raise KeyboardInterrupt

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _generators(obj: Any, depth: int = 5, seen: set[int] | None = None) -> list[Any]:
    """Every ``numpy.random.Generator`` reachable through attributes, lists and dicts.

    The walk order is the attributes' definition order, so it is the same for two objects
    built the same way (what checkpoint/resume relies on).
    """
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, np.ndarray)):
        return []
    seen.add(id(obj))
    if isinstance(obj, np.random.Generator):
        return [obj]
    if depth == 0:
        return []
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        children = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = list(vars(obj).values())
    else:
        return []
    found = []
    for child in children:
        found += _generators(child, depth - 1, seen)
    return found


def _model_generators(model: Module) -> list[Any]:
    found = []
    for m in model.modules():
        found += [v for v in vars(m).values() if isinstance(v, np.random.Generator)]
    return found


def _get_states(gens: list[Any]) -> list[Any]:
    return [g.bit_generator.state for g in gens]


def _check_states(gens: list[Any], states: Any, what: str) -> None:
    """Raise ValueError unless ``states`` can be set on ``gens`` (tried on scratch copies)."""
    if not isinstance(states, list) or len(gens) != len(states):
        count = len(states) if isinstance(states, list) else type(states).__name__
        raise ValueError(
            f"checkpoint holds {count} random generator state(s) for the {what}, "
            f"but the {what} has {len(gens)}: it was built differently"
        )
    for i, (g, state) in enumerate(zip(gens, states, strict=True)):
        try:
            type(g.bit_generator)().state = state
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(
                f"checkpoint's random generator state {i} for the {what} does not fit "
                f"its {type(g.bit_generator).__name__}: {exc}"
            ) from None


def _set_states(gens: list[Any], states: list[Any], what: str) -> None:
    _check_states(gens, states, what)
    for g, s in zip(gens, states, strict=True):
        g.bit_generator.state = s


def _to_float(v: Any) -> float:
    return float(v) if v is not None else math.nan


def _nonfinite_entry(state: dict[str, Any]) -> str | None:
    """The first float entry of a state dict holding NaN or inf (host arrays), or None."""
    for key, value in state.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return key
    return None


class Trainer:
    """Train ``model`` with ``loss`` and ``optimizer``; ``fit`` runs the epochs.

    ``scheduler``: a :mod:`tinycnn.schedules` object; ``step()`` runs after every epoch
    (``ReduceLROnPlateau.step(value of monitor)``) and ``step_batch()`` after every batch.
    ``patience``: stop when ``monitor`` has not improved by more than ``min_delta`` for
    that many epochs (``None``: never stop early); ``restore_best`` loads the best epoch's
    weights at the end. ``checkpoint``: a ``.npz`` path rewritten after every epoch.
    ``device``: ``"cpu"`` or ``"gpu"``; the model is moved there and batches follow.
    ``progress``: a tqdm bar per epoch (``None``: only on a terminal or in a notebook, not
    when output goes to a file); ``verbose``: print one line per epoch.
    ``aux_weight``: weight of auxiliary heads' losses for models whose training output is
    a tuple ``(logits, *aux_logits)``, such as GoogLeNet.
    ``accelerate``: run the model with the acceleration engine's fast layers
    (:func:`tinycnn.accelerate`, applied to the model in place; during ``fit`` its first
    layer also skips the gradient of the images, and on the first batch
    :func:`tinycnn.precompile` compiles the CPU kernels the step needs on every core);
    ``False`` trains the reference layers.
    ``check_finite``: stop with :class:`~tinycnn.anomaly.NonFiniteError`, naming epoch and
    batch, at the first NaN/inf loss or parameter (one sum per parameter per step).
    ``detect_anomaly``: also check every layer's output and gradient and name the first
    layer that produced a NaN or inf (:func:`tinycnn.anomaly.detect_anomaly`; slow).
    ``last_checkpoint``: the path of the last complete checkpoint written or loaded.
    """

    def __init__(
        self,
        model: Module,
        loss: Any,
        optimizer: Any,
        scheduler: Any = None,
        *,
        device: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        patience: int | None = None,
        monitor: str | None = None,
        min_delta: float = 0.0,
        restore_best: bool = False,
        progress: bool | None = None,
        verbose: bool = True,
        aux_weight: float = 0.3,
        accelerate: bool = True,
        check_finite: bool = True,
        detect_anomaly: bool = False,
    ) -> None:
        if monitor is not None and monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}")
        if patience is not None and patience < 0:
            raise ValueError(f"patience must be >= 0 or None, got {patience}")
        self.model = model
        self.accelerate = bool(accelerate)
        if self.accelerate:
            accelerate_model(model)
        if getattr(loss, "reduction", "mean") not in ("mean", "sum", "batchmean"):
            raise ValueError(
                f"Trainer needs a loss that returns one number per batch; "
                f"{type(loss).__name__}(reduction={loss.reduction!r}) returns one per "
                f"element: use reduction='mean' or 'sum'"
            )
        self.loss = loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = backend.check_device(device) if device is not None else model.device
        if self.device != model.device:
            model.to(self.device)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.patience = patience
        self.monitor = monitor
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        self.progress = progress
        self.verbose = verbose
        self.aux_weight = float(aux_weight)
        self._aux_losses: list[Any] = []
        self.history = History()
        self.epoch = 0  # completed epochs
        self._best: float | None = None
        self._bad_epochs = 0
        self._best_state: dict[str, Any] | None = None
        self._interrupt = _DeferredInterrupt()
        self.check_finite = bool(check_finite)
        self.detect_anomaly = bool(detect_anomaly)
        self.last_checkpoint: Path | None = None
        self._precompile_pending = False

    # one epoch --------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if not self.verbose:
            return
        if self.progress is not False:
            from tqdm.auto import tqdm

            tqdm.write(msg)  # keeps a running bar intact
        else:
            print(msg, flush=True)

    def _on_device(self, loader: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """The loader's batches on the trainer's device (no copy for batches already there)."""
        for x, y in loader:
            yield backend.to_device(x, self.device), backend.to_device(y, self.device)

    def _loss_and_grad(self, out: Any, y: Any) -> tuple[Any, float, Any]:
        """``(main logits, loss value, dL/d(out))`` for a model's training output.

        A tuple output is ``(logits, *auxiliary heads)`` (GoogLeNet in training mode): each
        head's loss is added with weight ``aux_weight`` (0.3, as in Szegedy et al. 2015) and
        the gradient goes back as a tuple of the same type.
        """
        if not isinstance(out, tuple):
            value = float(self.loss(out, y))
            return out, value, self.loss.backward()
        logits, *heads = out
        value = float(self.loss(logits, y))
        grads = [self.loss.backward()]
        while len(self._aux_losses) < len(heads):  # one loss object per head: each caches
            self._aux_losses.append(copy.deepcopy(self.loss))
        for head, head_loss in zip(heads, self._aux_losses, strict=False):
            value += self.aux_weight * float(head_loss(head, y))
            grads.append(head_loss.backward(self.aux_weight))
        return logits, value, type(out)(*grads) if hasattr(out, "_fields") else tuple(grads)

    def train_step(self, x: Any, y: Any) -> tuple[float, int, int]:
        """One optimizer step on a batch; returns ``(mean loss, correct, batch size)``."""
        x = backend.to_device(x, self.device)
        y = backend.to_device(y, self.device)
        out = self.model(x)
        logits, value, grad = self._loss_and_grad(out, y)
        if self.check_finite and not math.isfinite(value):  # before it reaches the weights
            raise NonFiniteError(f"the loss is {value}")
        self.optimizer.zero_grad()
        self.model.backward(grad)
        self.optimizer.step()
        if self.check_finite:
            bad = self._nonfinite_parameter()
            if bad is not None:
                raise NonFiniteError(
                    f"parameter '{bad}' holds NaN or inf after the optimizer step (the loss "
                    f"was {value:.4g}); check the data for NaN/inf, or lower the learning rate"
                )
        if self.scheduler is not None and hasattr(self.scheduler, "step_batch"):
            self.scheduler.step_batch()
        p, t = _pair(logits, y)
        return value, int((p == t).sum()), int(p.size)

    def _nonfinite_parameter(self) -> str | None:
        """The name of a trainable parameter holding NaN or inf, or None.

        One sum per parameter and a single device-to-host check: NaN and inf survive a
        sum. Only when that check fails (or a huge finite sum overflowed) is each
        parameter scanned, to tell which it is.
        """
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not named:
            return None
        xp = backend.get_array_module(named[0][1].data)
        with np.errstate(over="ignore", invalid="ignore"):
            sums = xp.stack([p.data.sum() for _, p in named])
            if bool(xp.isfinite(sums).all()):
                return None
        for name, p in named:
            if not bool(xp.isfinite(p.data).all()):
                return name
        return None

    def _run_epoch(self, loader: Iterable[Any], epochs: int, partial: dict[str, Any]) -> None:
        """Train one epoch, updating ``partial`` (running sums, batches done) as it goes."""
        from tqdm.auto import tqdm

        total = len(loader) if hasattr(loader, "__len__") else None
        # disable=None is tqdm's "only on a terminal"; its notebook bar always shows.
        disable = None if self.progress is None else not self.progress
        bar = tqdm(total=total, desc=f"epoch {self.epoch + 1}/{epochs}", unit="batch",
                   disable=disable, leave=False, dynamic_ncols=True)
        skip = partial["batches"]
        started = time.perf_counter()
        try:
            batches: Iterator[Any] = iter(loader)
            for i, (x, y) in enumerate(batches):
                if i < skip:  # resuming inside an epoch: replay the loader, do not train
                    bar.update(1)
                    continue
                if i == skip:  # the clock starts after any replayed batches
                    started = time.perf_counter() - partial["time"]
                if self._interrupt.requested:  # Ctrl-C: stop before this batch
                    raise KeyboardInterrupt
                if self._precompile_pending:
                    self._precompile_pending = False
                    precompile(self.model, backend.to_device(x, self.device))
                with self._interrupt.step():
                    try:
                        value, correct, n = self.train_step(x, y)
                    except FloatingPointError as exc:  # the loss's own check, or ours
                        raise NonFiniteError(
                            f"training stopped in epoch {self.epoch + 1}, batch {i + 1}: {exc}"
                        ) from exc
                    partial["batches"] += 1
                    partial["loss_sum"] += value * n
                    partial["correct"] += correct
                    partial["seen"] += n
                    partial["time"] = time.perf_counter() - started
                bar.set_postfix(loss=f"{partial['loss_sum'] / partial['seen']:.4f}",
                                acc=f"{partial['correct'] / partial['seen']:.4f}",
                                img_s=f"{partial['seen'] / max(partial['time'], 1e-9):.0f}",
                                refresh=False)
                bar.update(1)
        finally:
            bar.close()

    # early stopping ---------------------------------------------------------------------
    def _mode(self) -> str:
        return "max" if self.monitor and self.monitor.endswith("accuracy") else "min"

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self._best is None:
            return True
        if self._mode() == "min":
            return value < self._best - self.min_delta
        return value > self._best + self.min_delta

    # the loop ---------------------------------------------------------------------------
    def fit(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        epochs: int = 1,
        resume: bool | str | os.PathLike = False,
    ) -> History:
        """Train until ``epochs`` epochs are complete (counting resumed ones); return history.

        ``resume``: a checkpoint path, or ``True`` for this trainer's ``checkpoint`` path;
        training continues after the last completed epoch (or inside an interrupted one).
        """
        if self.monitor is None:
            self.monitor = "val_loss" if val_loader is not None else "train_loss"
        if self.monitor.startswith("val_") and val_loader is None:
            raise ValueError(f"monitor={self.monitor!r} needs a val_loader")
        partial = self._fresh_partial(train_loader)
        if resume:
            path = self.checkpoint if resume is True else Path(resume)
            if path is None:
                raise ValueError("resume=True needs the Trainer's checkpoint path")
            partial = self.load_checkpoint(path, train_loader)
        if self.accelerate:  # nothing needs the gradient of the images
            accelerate_model(self.model, input_grad=False)
        # on the first batch, every core compiles the CPU kernels the step needs (the
        # anomaly detector would see the trace's unset values: there they compile lazily)
        self._precompile_pending = self.accelerate and not self.detect_anomaly
        self.history.interrupted = False
        anomaly = detect_anomaly(self.model) if self.detect_anomaly else contextlib.nullcontext()
        try:
            with _DeferredInterrupt() as self._interrupt, anomaly:
                while self.epoch < epochs and not self.history.stopped_early:
                    # _one_epoch resets partial in place for the next epoch
                    self._one_epoch(train_loader, val_loader, epochs, partial)
        except KeyboardInterrupt:
            self.history.interrupted = True
            if self._interrupt.torn:
                self._say(self._torn_message())
                return self.history
            path = self.checkpoint or Path("interrupted-checkpoint.npz")
            self.save_checkpoint(path, partial)
            self._say(
                f"Interrupted in epoch {self.epoch + 1} after {partial['batches']} batch(es); "
                f"checkpoint saved to {path}. Resume with fit(..., resume='{path}')"
                " (or the CLI's --resume)."
            )
            return self.history
        finally:
            if self.accelerate:
                accelerate_model(self.model, input_grad=True)
        if self.restore_best and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return self.history

    def _torn_message(self) -> str:
        """What to say when an interrupt left a training step half done."""
        text = (f"Interrupted inside a training step of epoch {self.epoch + 1}: the model in "
                "memory is partly updated, so it was not saved.")
        if self.last_checkpoint is not None and self.last_checkpoint.is_file():
            return (f"{text} The last complete checkpoint, {self.last_checkpoint}, is intact: "
                    f"resume from it with fit(..., resume='{self.last_checkpoint}') "
                    "(or the CLI's --resume).")
        return f"{text} No checkpoint was written; a new run starts over."

    def _fresh_partial(self, loader: Iterable[Any]) -> dict[str, Any]:
        """Running sums of an epoch, and the loader's generator states at its start."""
        return {"batches": 0, "loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0,
                "lr": float(self.optimizer.lr),
                "loader_rng": _get_states(_generators(loader))}

    def _one_epoch(self, train_loader: Iterable[Any], val_loader: Iterable[Any] | None,
                   epochs: int, partial: dict[str, Any]) -> None:
        self.model.train()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(self.epoch)
        self._run_epoch(train_loader, epochs, partial)
        if partial["seen"] == 0:
            # Otherwise the epoch would be recorded with loss 0.0 (a fake "best") untrained.
            raise ValueError("the training loader gave no batches (drop_last=True with "
                             "batch_size larger than the dataset?)")
        train_time = partial["time"]
        seen = partial["seen"]
        row = {
            "epoch": self.epoch + 1,
            "train_loss": partial["loss_sum"] / seen,
            "train_accuracy": partial["correct"] / seen,
            "val_loss": math.nan,
            "val_accuracy": math.nan,
            "lr": partial["lr"],
            "images_per_s": partial["seen"] / max(train_time, 1e-9),
        }
        t0 = time.perf_counter()
        if val_loader is not None:
            try:
                res = evaluate(self.model, self._on_device(val_loader), self.loss)
            except FloatingPointError as exc:
                raise NonFiniteError(
                    f"validation after epoch {self.epoch + 1} stopped: {exc}") from exc
            row["val_loss"], row["val_accuracy"] = res["loss"], res["accuracy"]
        row["time"] = train_time + time.perf_counter() - t0
        value = float(row[self.monitor])
        best_state = None
        if self._improved(value) and self.restore_best:
            best_state = self.model.state_dict()
            bad = _nonfinite_entry(best_state)
            if bad is not None:  # never kept as the best model
                raise NonFiniteError(f"after epoch {self.epoch + 1}, '{bad}' holds NaN or inf")

        with self._interrupt.step():  # the epoch's records change together, or not at all
            self.history.append(**row)
            self.epoch += 1
            if self._improved(value):
                self._best, self._bad_epochs = value, 0
                self.history.best_epoch = self.epoch
                if best_state is not None:
                    self._best_state = best_state
            else:
                self._bad_epochs += 1
            if isinstance(self.scheduler, ReduceLROnPlateau):
                self.scheduler.step(value)
            elif self.scheduler is not None:
                self.scheduler.step()
            partial.clear()
            partial.update(self._fresh_partial(train_loader))

        msg = (f"epoch {self.epoch}/{epochs}  loss {row['train_loss']:.4f}  "
               f"acc {row['train_accuracy']:.4f}")
        if val_loader is not None:
            msg += f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}"
        msg += f"  lr {row['lr']:.3g}  {row['images_per_s']:.0f} img/s  {row['time']:.1f}s"
        if self.patience is not None and self._bad_epochs > self.patience:
            self.history.stopped_early = True
            msg += (f"\nearly stop: {self.monitor} has not improved for {self._bad_epochs} "
                    f"epochs (best {self._best:.4f} at epoch {self.history.best_epoch})")
        self._say(msg)
        if self.checkpoint is not None:
            self.save_checkpoint(self.checkpoint, partial)

    # checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike, partial: dict[str, Any] | None = None,
                        loader: Iterable[Any] | None = None) -> None:
        """Write model, optimizer, history and random states to one ``.npz``, atomically.

        ``partial``: the running state of an unfinished epoch (from an interrupt).
        """
        if partial is None:
            partial = self._fresh_partial(loader if loader is not None else [])
        model_state = self.model.state_dict()
        bad = _nonfinite_entry(model_state)
        if bad is not None:
            raise NonFiniteError(
                f"not writing checkpoint {path}: the model's '{bad}' holds NaN or inf")
        arrays: dict[str, Any] = {f"model.{k}": v for k, v in model_state.items()}
        for k, v in self.optimizer.state_dict().items():
            arrays[f"optim.{k}"] = np.asarray(v)
        if self._best_state is not None:
            arrays.update({f"best.{k}": v for k, v in self._best_state.items()})
        sched = self.scheduler.state_dict() if self.scheduler is not None else None
        meta = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "partial": partial,
            "history": self.history.to_dict(),
            "scheduler": sched,
            "scheduler_type": type(self.scheduler).__name__ if sched is not None else None,
            "early_stopping": {"best": self._best, "bad_epochs": self._bad_epochs,
                               "monitor": self.monitor},
            "model_rng": _get_states(_model_generators(self.model)),
        }
        arrays["meta"] = np.array(json.dumps(meta))
        save_arrays(path, arrays)
        self.last_checkpoint = Path(path)

    def load_checkpoint(self, path: str | os.PathLike,
                        loader: Iterable[Any] | None = None) -> dict[str, Any]:
        """Restore everything :meth:`save_checkpoint` wrote; returns the epoch's partial state.

        With ``loader`` given, its random generators are set to where the (next or
        interrupted) epoch started. Every part (model, optimizer, schedule, history, random
        states) is checked against this trainer before any is changed: a checkpoint that
        does not fit raises ``ValueError`` (or the model's ``StateDictError``) and leaves
        the trainer exactly as it was.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        remove_leftovers(path)  # the temp file of a save that was killed
        with np.load(path, allow_pickle=False) as f:
            files = {k: f[k] for k in f.files}
        if "meta" not in files:
            raise ValueError(f"{path} is not a tinycnn checkpoint (no 'meta' entry)")
        meta = json.loads(str(files.pop("meta")))
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"{path}: unknown checkpoint format {found!r}")
        try:
            install = self._prepare_checkpoint(files, meta, loader)
        except StateDictError:  # the model's own message says what does not fit
            raise
        except (KeyError, TypeError) as exc:  # a field missing or of the wrong kind
            raise ValueError(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc})"
                             ) from None
        install()
        self.last_checkpoint = path
        return meta["partial"]

    def _prepare_checkpoint(self, files: dict[str, Any], meta: dict[str, Any],
                            loader: Iterable[Any] | None) -> Any:
        """Check every part of a checkpoint; return the function that installs them all."""
        install_model = self.model._prepare_load(
            {k[6:]: v for k, v in files.items() if k.startswith("model.")})
        optim_state = {k[6:]: v for k, v in files.items() if k.startswith("optim.")}
        if hasattr(self.optimizer, "_prepare_load"):
            install_optim = self.optimizer._prepare_load(optim_state)
        else:  # an optimizer of the user's own: it checks (or not) when loading
            def install_optim() -> None:
                self.optimizer.load_state_dict(optim_state)
        best = {k[5:]: v for k, v in files.items() if k.startswith("best.")}
        if best:
            self.model._prepare_load(best)  # checked only: kept as the arrays it holds
        install_sched = None
        saved_type = meta.get("scheduler_type")
        if self.scheduler is not None and meta["scheduler"] is not None:
            ours = type(self.scheduler).__name__
            if saved_type is not None and saved_type != ours:
                raise ValueError(f"the checkpoint's schedule is {saved_type}, this trainer's "
                                 f"is {ours}")
            if hasattr(self.scheduler, "_prepare_load"):
                install_sched = self.scheduler._prepare_load(meta["scheduler"])
            else:  # a schedule of the user's own: it checks (or not) when loading
                def install_sched() -> None:
                    self.scheduler.load_state_dict(meta["scheduler"])
        history = History.from_dict(meta["history"])
        epoch, early = meta["epoch"], meta["early_stopping"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"the checkpoint's epoch must be a whole number >= 0, got {epoch!r}")
        best_value, bad_epochs = early["best"], early["bad_epochs"]
        if best_value is not None and not isinstance(best_value, (int, float)):
            raise ValueError(f"the checkpoint's best value must be a number, got {best_value!r}")
        if isinstance(bad_epochs, bool) or not isinstance(bad_epochs, int) or bad_epochs < 0:
            raise ValueError(f"the checkpoint's bad_epochs must be a whole number >= 0, "
                             f"got {bad_epochs!r}")
        monitor = early["monitor"] or self.monitor
        if monitor is not None and monitor not in MONITORS:
            raise ValueError(f"the checkpoint's monitor must be one of {MONITORS}, "
                             f"got {monitor!r}")
        model_gens = _model_generators(self.model)
        _check_states(model_gens, meta["model_rng"], "model")
        partial = meta["partial"]
        loader_gens = _generators(loader) if loader is not None else []
        if loader is not None:
            _check_states(loader_gens, partial["loader_rng"], "training loader")

        def install() -> None:
            install_model()
            install_optim()
            self._best_state = best or None
            if install_sched is not None:
                install_sched()
            self.history = history
            self.epoch = epoch
            self._best, self._bad_epochs = best_value, bad_epochs
            self.monitor = monitor
            _set_states(model_gens, meta["model_rng"], "model")
            if loader is not None:
                _set_states(loader_gens, partial["loader_rng"], "training loader")

        return install
