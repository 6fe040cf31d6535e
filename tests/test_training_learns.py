"""End to end: a short run on a few thousand real MNIST digits must clearly learn.

The gate that catches a subtly wrong backward pass, which every unit test can miss. Uses
full MNIST from ``TINYCNN_DATA`` when present, else the subset embedded in tinycnn; the
test images are MNIST's own test set, never seen in training.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from tinycnn import models
from tinycnn.data import MNIST, DataLoader, DatasetWarning
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.metrics import evaluate
from tinycnn.optim import Adam
from tinycnn.trainer import Trainer

MEAN, STD = (0.1307,), (0.3081,)


def _mnist(train: bool) -> MNIST:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)  # the embedded fallback is fine here
        return MNIST(train=train, fallback="embedded")


def test_lenet5_learns_mnist() -> None:
    train, test = _mnist(True), _mnist(False)
    # A class-balanced pick: the embedded subset is sorted by digit.
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(train))[:4000]
    test_idx = rng.permutation(len(test))[:1000]
    train_loader = DataLoader((train.data[idx], train.targets[idx]), batch_size=32,
                              shuffle=True, seed=0, mean=MEAN, std=STD)
    test_loader = DataLoader((test.data[test_idx], test.targets[test_idx]), batch_size=500,
                             mean=MEAN, std=STD)
    model = models.lenet5(seed=0)
    trainer = Trainer(model, SoftmaxCrossEntropy(), Adam(model, lr=2e-3), progress=False,
                      verbose=False)
    start = time.perf_counter()
    history = trainer.fit(train_loader, epochs=3)
    seconds = time.perf_counter() - start
    result = evaluate(model, test_loader, SoftmaxCrossEntropy())
    source = "embedded subset" if train.is_subset else "full MNIST"
    print(f"\nLeNet-5, 4000 {source} images, 3 epochs: {seconds:.1f} s, "
          f"test accuracy {result['accuracy']:.4f} on {result['n']} held-out images")
    assert history.train_loss[-1] < history.train_loss[0] / 3
    assert result["accuracy"] > 0.90
