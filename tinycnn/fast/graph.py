"""Graph-level work of the engine: a ReLU -> MaxPool2D pair in one pass each way.

``FastSequential`` is the twin of :class:`tinycnn.containers.Sequential`. Where a ``ReLU``
feeds a ``MaxPool2D``, it runs the pair as one max-pool kernel over the ReLU's *input*:
max and ReLU commute, ``pool(relu(x)) = relu(pool(x))``, so the ReLU touches only the
pooled values (a quarter of them for a 2x2 pool) instead of making a full-size output
that the pool then reads again. Backward folds the ReLU's backward into the pool's: the
pool routes each window's gradient to its winner, and the ReLU would then zero it where
``y <= 0``; a winner has ``y > 0`` exactly when the window's output is positive, so the
pool's kernel drops the windows whose output is not, and the ReLU's pass over the
full-size gradient (read ``g`` and ``y``, write ``dx``) disappears.

Nothing a user sees changes: the output and every gradient are the same arrays, the pool
keeps the argmax it would have had on ``relu(x)``, and the ReLU keeps its input and makes
its full-size output ``y`` the first time anything reads it (``model[i].y``). The pair is
folded only when both children are the engine's own twins with nothing attached to
their instances (a user's or the anomaly mode's wrapper sees the layers run as written),
on the CPU kernels, and, for forward, for a pool without padding.
"""

from __future__ import annotations

from typing import Any

from tinycnn.backend import is_gpu_array
from tinycnn.containers import Sequential
from tinycnn.fast import kernels_for, twin_of
from tinycnn.fast.layers import FastMaxPool2D, FastReLU


def _plain_pair(relu: Any, pool: Any, array: Any) -> bool:
    """The engine's own ReLU and MaxPool2D twins, nothing attached, on the CPU kernels."""
    return (
        type(relu) is FastReLU and type(pool) is FastMaxPool2D
        and not {"forward", "backward"} & (relu.__dict__.keys() | pool.__dict__.keys())
        and not is_gpu_array(array) and kernels_for(array) is not None
    )


def _foldable_forward(relu: Any, pool: Any, x: Any) -> bool:
    return (_plain_pair(relu, pool, x) and pool.padding == (0, 0)
            and getattr(x, "ndim", 0) == 4)


def _foldable(relu: Any, pool: Any, grad: Any) -> bool:
    return (
        _plain_pair(relu, pool, grad)
        and pool.out is not None and pool.x_shape is not None
        and relu.__dict__.get("_out_meta") is not None
        and relu.__dict__["_out_meta"].shape == tuple(pool.x_shape)
    )


@twin_of(Sequential)
class FastSequential(Sequential):
    """:class:`~tinycnn.containers.Sequential` with ReLU -> MaxPool2D pairs folded."""

    def forward(self, x: Any) -> Any:
        children = list(self._modules.values())
        i = 0
        while i < len(children):
            if i + 1 < len(children) and _foldable_forward(children[i], children[i + 1], x):
                x = children[i + 1].forward_after_relu(children[i], x)
                i += 2
            else:
                x = children[i](x)
                i += 1
        return x

    def backward(self, grad_out: Any) -> Any:
        children = list(self._modules.values())
        i = len(children) - 1
        while i >= 0:
            if i > 0 and _foldable(children[i - 1], children[i], grad_out):
                grad_out = children[i].backward(grad_out, through_relu=True)
                i -= 2
            else:
                grad_out = children[i].backward(grad_out)
                i -= 1
        return grad_out
