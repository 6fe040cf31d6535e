"""A float32 network stays float32 end to end: no silent upcast anywhere in a training step.

One small model (conv, BatchNorm, ReLU, max- and average-pooling, Affine, softmax
cross-entropy, SGD) trains one step in float32 under each CPU kernel set; every
activation, every returned gradient, every parameter gradient and every updated parameter
and buffer must be float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import engine

from tinycnn import losses, optim
from tinycnn.containers import Sequential
from tinycnn.layers import Affine, ReLU
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.pool import AvgPool2D, MaxPool2D
from tinycnn.layers.shape import Flatten


def small_model() -> Sequential:
    rng = np.random.default_rng(0)
    return Sequential(
        Conv2D(3, 8, 3, padding=1, bias=False, rng=rng),
        BatchNorm2D(8),
        ReLU(),
        MaxPool2D(2),
        Conv2D(8, 8, 3, padding=1, rng=rng),
        ReLU(),
        AvgPool2D(2),
        Flatten(),
        Affine(8 * 2 * 2, 16, rng=rng),
        ReLU(),
        Affine(16, 5, rng=rng),
    )


def record_dtypes(model: Sequential) -> list[tuple[str, Any]]:
    """Wrap every leaf's forward and backward to log the dtype of what it returns."""
    seen: list[tuple[str, Any]] = []

    def wrap(fn: Any, label: str) -> Any:
        def run(arg: Any) -> Any:
            out = fn(arg)
            if out is not None:
                seen.append((label, out.dtype))
            return out

        return run

    for name, m in model.named_modules():
        if name and not list(m.children()):
            kind = type(m).__name__
            object.__setattr__(m, "forward", wrap(m.forward, f"{name} {kind} forward"))
            object.__setattr__(m, "backward", wrap(m.backward, f"{name} {kind} backward"))
    return seen


def test_one_float32_training_step_stays_float32(kernel_set: str) -> None:
    model = small_model()
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float32)}
    seen = record_dtypes(model)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 4)
    opt = optim.SGD(model, lr=0.1)
    loss_fn = losses.SoftmaxCrossEntropy()
    with engine(kernel_set, model):
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        dx = model.backward(loss_fn.backward())
        opt.step()
    assert logits.dtype == np.float32
    assert np.asarray(loss).dtype == np.float32
    assert dx is not None and dx.dtype == np.float32
    # every leaf ran forward and backward, and each returned float32
    assert len(seen) == 2 * len([m for n, m in model.named_modules() if n and not m._modules])
    upcast = [label for label, dtype in seen if dtype != np.float32]
    assert not upcast, f"float64 leaked out of: {upcast}"
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.dtype == np.float32, f"{name}.grad is {p.grad.dtype}"
        assert p.data.dtype == np.float32, f"{name} became {p.data.dtype} after the SGD step"
    for name, b in model.named_buffers():
        if b.dtype.kind == "f":
            assert b.dtype == np.float32, f"buffer {name} became {b.dtype}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_and_reference_kernels_agree_on_a_training_step(dtype: type) -> None:
    """The same step under both kernel sets gives the same loss and gradients."""
    pytest.importorskip("numba", reason="numba is not installed")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 8, 8)).astype(dtype)
    y = rng.integers(0, 5, 4)
    grads = {}
    for kernel_set in ("reference", "numba"):
        model = small_model().astype(dtype)
        loss_fn = losses.SoftmaxCrossEntropy()
        with engine(kernel_set, model):
            loss = loss_fn(model(x), y)
            model.backward(loss_fn.backward())
        grads[kernel_set] = (float(loss), {n: p.grad for n, p in model.named_parameters()})
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert grads["numba"][0] == pytest.approx(grads["reference"][0], rel=tol)
    for name, g in grads["reference"][1].items():
        np.testing.assert_allclose(grads["numba"][1][name], g, rtol=tol, atol=tol,
                                   err_msg=f"gradient of {name}")
