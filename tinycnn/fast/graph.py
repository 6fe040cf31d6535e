"""Graph-level work of the engine: a ReLU -> MaxPool2D pair's backward in one pass.

``FastSequential`` is the twin of :class:`tinycnn.containers.Sequential`. Its forward is
the reference's: every child runs, in the written order, and keeps its own cache (the
ReLU its full-size output, the pool its argmax), so ``model[i]``, hooks and plots see the
network as written. Its backward folds the ReLU's backward into the pool's where a
``ReLU`` feeds a ``MaxPool2D``: the pool routes each window's gradient to its winner,
and the ReLU would then zero it where ``y <= 0``; a winner has ``y > 0`` exactly when the
window's output is positive, so the pool's kernel drops the windows whose output is not,
and the ReLU's pass over the full-size gradient (read ``g`` and ``y``, write ``dx``)
disappears. The result is the same array (tests/test_equality.py compares).

The fold is taken only when both children are the engine's own twins with nothing
attached to their instances (a user's or the anomaly mode's wrapper runs as written),
on the CPU kernels, after a forward through the kernels.
"""

from __future__ import annotations

from typing import Any

from tinycnn.backend import is_gpu_array
from tinycnn.containers import Sequential
from tinycnn.fast import kernels_for, twin_of
from tinycnn.fast.layers import FastMaxPool2D, FastReLU


def _foldable(relu: Any, pool: Any, grad: Any) -> bool:
    return (
        type(relu) is FastReLU and type(pool) is FastMaxPool2D
        and not {"forward", "backward"} & (relu.__dict__.keys() | pool.__dict__.keys())
        and pool.out is not None and relu.y is not None
        and tuple(relu.y.shape) == tuple(pool.x_shape)
        and not is_gpu_array(grad) and kernels_for(grad) is not None
    )


@twin_of(Sequential)
class FastSequential(Sequential):
    """:class:`~tinycnn.containers.Sequential` with ReLU -> MaxPool2D folded in backward."""

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
