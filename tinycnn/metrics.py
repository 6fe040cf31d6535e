"""Classification metrics and model evaluation over a data loader.

Predictions may be given as class indices ``(N,)`` or as scores/logits ``(N, C)`` (the
arg-max is taken); labels as indices ``(N,)`` or one-hot rows ``(N, C)``. Arrays may live
on the CPU or the GPU; results are plain Python numbers or NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.module import Module


def _labels(a: Any, what: str) -> np.ndarray:
    """Class indices ``(N,)`` on the host from indices or ``(N, C)`` scores / one-hot rows."""
    if a is None or not hasattr(a, "shape"):
        raise TypeError(f"{what} must be an array, got {type(a).__name__}")
    if a.ndim == 2:
        xp = backend.get_array_module(a)
        a = xp.argmax(a, axis=1)
    elif a.ndim != 1:
        raise ValueError(f"{what} must have shape (N,) or (N, C), got {tuple(a.shape)}")
    return np.asarray(backend.to_device(a, "cpu")).astype(np.int64, copy=False)


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _labels(pred, "predictions"), _labels(target, "targets")
    if p.shape != t.shape:
        raise ValueError(
            f"predictions and targets differ in length: {p.shape[0]} vs {t.shape[0]}"
        )
    return p, t


def accuracy(pred: Any, target: Any) -> float:
    """Fraction of rows whose predicted class equals the target class (0.0 when empty)."""
    p, t = _pair(pred, target)
    return float((p == t).mean()) if p.size else 0.0


def confusion_matrix(pred: Any, target: Any, num_classes: int | None = None) -> np.ndarray:
    """``(C, C)`` counts: row = true class, column = predicted class (scikit-learn's order)."""
    p, t = _pair(pred, target)
    if num_classes is None:
        num_classes = int(max(p.max(initial=-1), t.max(initial=-1))) + 1
    if p.size and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_accuracy(pred: Any, target: Any, num_classes: int | None = None) -> np.ndarray:
    """Recall of each class, ``(C,)``: correct / present; NaN for a class with no samples."""
    cm = confusion_matrix(pred, target, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def predict(model: Module, loader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true class indices over a whole loader, in eval mode (mode restored)."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    try:
        for x, y in loader:
            preds.append(_labels(model(x), "model output"))
            targets.append(_labels(y, "targets"))
    finally:
        model.train(was_training)
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(preds), np.concatenate(targets)


def evaluate(model: Module, loader: Iterable[Any], loss: Any = None) -> dict[str, float]:
    """Accuracy (and mean loss when ``loss`` is given) of ``model`` over ``loader``.

    Runs in eval mode (BatchNorm running statistics, no Dropout) and restores the mode the
    model was in. Returns ``{"accuracy", "loss", "n"}`` (``loss`` is NaN without a loss);
    the loss is averaged per sample, so a short last batch weighs what it holds.
    """
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    try:
        for x, y in loader:
            logits = model(x)
            p, t = _pair(logits, y)
            correct += int((p == t).sum())
            total += p.size
            if loss is not None:
                loss_sum += float(loss(logits, y)) * p.size
    finally:
        model.train(was_training)
    return {
        "accuracy": correct / total if total else 0.0,
        "loss": loss_sum / total if (total and loss is not None) else float("nan"),
        "n": total,
    }
