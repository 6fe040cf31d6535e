"""Metrics: accuracy, confusion matrix, per-class accuracy, evaluate()."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn.containers import Sequential
from tinycnn.layers.activation import ReLU
from tinycnn.layers.dropout import Dropout
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm1D
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.metrics import accuracy, confusion_matrix, evaluate, per_class_accuracy, predict


def _data(n: int = 57, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, k)).astype(np.float32), rng.integers(0, k, n)


def test_accuracy_from_logits_labels_and_one_hot() -> None:
    logits, y = _data()
    pred = logits.argmax(axis=1)
    expected = sum(int(p == t) for p, t in zip(pred, y, strict=True)) / len(y)
    assert accuracy(logits, y) == pytest.approx(expected)
    assert accuracy(pred, y) == pytest.approx(expected)
    assert accuracy(logits, np.eye(4)[y]) == pytest.approx(expected)
    assert accuracy(y, y) == 1.0


def test_accuracy_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        accuracy(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="shape"):
        accuracy(np.zeros((2, 2, 2)), np.zeros(2, int))


def test_confusion_matrix_counts() -> None:
    logits, y = _data(200, 5, seed=1)
    pred = logits.argmax(axis=1)
    cm = confusion_matrix(pred, y, 5)
    loop = np.zeros((5, 5), int)
    for p, t in zip(pred, y, strict=True):
        loop[t, p] += 1
    np.testing.assert_array_equal(cm, loop)
    assert cm.sum() == 200
    np.testing.assert_array_equal(confusion_matrix(pred, y), loop)  # size inferred
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 3)


def test_per_class_accuracy() -> None:
    pred = np.array([0, 0, 1, 1, 1, 2])
    y = np.array([0, 1, 1, 1, 2, 2])
    np.testing.assert_allclose(per_class_accuracy(pred, y, 4)[:3], [1.0, 2 / 3, 1 / 2])
    assert np.isnan(per_class_accuracy(pred, y, 4)[3])  # class 3 never occurs


def _model() -> Sequential:
    rng = np.random.default_rng(0)
    return Sequential(Affine(6, 8, rng=rng), BatchNorm1D(8), ReLU(), Dropout(0.5, seed=0),
                      Affine(8, 3, rng=rng))


def test_evaluate_in_eval_mode_and_restores_mode() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    model = _model()
    model.train()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 50, 16)]  # last batch short
    loss = SoftmaxCrossEntropy()
    res = evaluate(model, batches, loss)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    full = model(x)
    assert res["n"] == 50
    assert res["accuracy"] == pytest.approx(accuracy(full, y))
    assert res["loss"] == pytest.approx(float(loss(full, y)), rel=1e-5)
    p, t = predict(model.train(), batches)
    np.testing.assert_array_equal(p, full.argmax(axis=1))
    np.testing.assert_array_equal(t, y)
    assert model.training


def test_evaluate_restores_mode_after_an_error_and_handles_no_loss() -> None:
    model = _model().eval()
    bad = [(np.zeros((2, 5), np.float32), np.zeros(2, int))]
    with pytest.raises(ValueError):
        evaluate(model, bad)
    assert not model.training
    res = evaluate(model, [(np.zeros((2, 6), np.float32), np.zeros(2, int))])
    assert np.isnan(res["loss"]) and res["n"] == 2
