"""Losses: ``loss = criterion(output, target)`` then ``dx = criterion.backward()``.

A loss returns the mean over the batch as a 0-d array of the input's dtype, and its
``backward(grad=1.0)`` returns dL/d(output), which the model's ``backward`` takes next::

    loss = criterion(model(x), y)
    model.backward(criterion.backward())
"""

from __future__ import annotations

from typing import Any

import numpy

from tinycnn import backend
from tinycnn.module import BackwardBeforeForwardError, LayerInputError


def _shift(x: Any, axis: int) -> Any:
    """``x`` minus its max along ``axis``; a row whose max is +-inf is shifted by 0 instead.

    ``inf - inf`` would be NaN for a row holding -inf only where a logit is masked out;
    a finite max shifting a huge negative logit to -inf is the right limit (its exp is 0).
    """
    xp = backend.get_array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    with numpy.errstate(over="ignore"):  # -3e38 - 3e38 is -inf in float32: exactly right
        return x - m


def softmax(x: Any, axis: int = -1) -> Any:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``; stable for finite logits and -inf."""
    xp = backend.get_array_module(x)
    e = xp.exp(_shift(x, axis))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: Any, axis: int = -1) -> Any:
    """``x - logsumexp(x)`` along ``axis``, with the max subtracted first (no overflow).

    A -inf logit gets log-probability -inf, as in PyTorch; a +inf logit gives NaN (as there).
    """
    xp = backend.get_array_module(x)
    shifted = _shift(x, axis)
    with numpy.errstate(divide="ignore", invalid="ignore"):  # the NaN/inf is the answer
        return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def _scale(grad: Any, dtype: Any) -> Any:
    """The upstream gradient as a scalar that keeps ``dtype`` (a NumPy float64 would not)."""
    if hasattr(grad, "astype"):
        return grad.astype(dtype)
    return float(grad)


def _check_elementwise(
    name: str, x: Any, target: Any, input_text: str = "a floating-point array",
    target_text: str = "a target of the input's shape",
) -> None:
    """Elementwise losses: a float input and a target of exactly its shape."""
    if not hasattr(x, "shape") or x.dtype.kind != "f":
        raise LayerInputError(
            f"{name} expected {input_text}, got {getattr(x, 'dtype', type(x).__name__)}"
        )
    if not hasattr(target, "shape") or tuple(target.shape) != tuple(x.shape):
        got = tuple(target.shape) if hasattr(target, "shape") else type(target).__name__
        raise LayerInputError(f"{name} expected {target_text} {tuple(x.shape)}, got {got}")


class Loss:
    """Base of the losses: ``loss(x, target)`` runs ``forward``; ``backward`` differentiates it.

    A loss holds no parameters; it caches what ``backward`` needs on the instance.
    """

    def __call__(self, x: Any, target: Any) -> Any:
        return self.forward(x, target)

    def forward(self, x: Any, target: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, grad: Any = 1.0) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def _need_cache(self, *values: Any) -> None:
        if any(v is None for v in values):
            raise BackwardBeforeForwardError(
                f"{type(self).__name__}.backward() called before the loss was computed"
            )

    def _check_finite(self, loss: Any) -> None:
        xp = backend.get_array_module(loss)
        if not bool(xp.isfinite(loss)):
            raise FloatingPointError(
                f"{type(self).__name__} is {float(loss)}: training diverged or the input holds "
                "inf/NaN; try a lower learning rate (or gradient clipping) and check the data"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, averaged over the batch (PyTorch's ``cross_entropy``).

    Shapes: logits ``(N, K)``; target either integer labels ``(N,)`` in ``[0, K)`` or
    soft targets ``(N, K)`` (class probabilities). ``label_smoothing = e`` replaces the
    target t by ``(1 - e) t + e / K``, exactly as PyTorch does.

    L = -(1/N) sum_n sum_k t_nk log p_nk,  p = softmax(logits).
    Backward: dL/dlogits = (p * sum_k t_k - t) / N * grad, i.e. (p - t) / N * grad when
    each target row sums to 1.

    A logit of -inf (a masked class) is allowed: a term with ``t_nk = 0`` counts as 0, so
    the loss and gradient stay finite (with soft targets too, where PyTorch gives NaN).
    With label smoothing every class has ``t_nk > 0`` and the loss is inf, as in PyTorch,
    which raises ``FloatingPointError`` like any non-finite loss.
    Sequences: logits ``(N, T, K)`` with labels ``(N, T)`` are read as ``N*T`` rows (class
    axis last, unlike PyTorch's ``(N, K, T)``); the gradient comes back as ``(N, T, K)``.
    Rows whose label is ``ignore_index`` (PyTorch's default -100, e.g. padding) count
    neither in the sum nor in N, and get a zero gradient.
    """

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100) -> None:
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = int(ignore_index)
        self.probs = None
        self.t = None
        self.shape = None
        self.count = 0

    def _rows(self, logits: Any, target: Any) -> tuple[Any, Any, Any]:
        """Sequence logits ``(N, T, K)`` as rows ``(N*T, K)``; labels equal to
        ``ignore_index`` replaced by 0, with the mask of the rows that count."""
        self.shape = getattr(logits, "shape", None)
        if getattr(logits, "ndim", 0) == 3 and hasattr(target, "shape"):
            if tuple(target.shape) not in (tuple(logits.shape[:2]), tuple(logits.shape)):
                raise LayerInputError(
                    f"SoftmaxCrossEntropy expected labels (N, T) = {tuple(logits.shape[:2])} or "
                    f"soft targets of the shape of the sequence logits (N, T, K) = "
                    f"{tuple(logits.shape)}, got {tuple(target.shape)}"
                )
            target = target.reshape(-1, *target.shape[2:])
            logits = logits.reshape(-1, logits.shape[2])
        keep = None
        if hasattr(target, "dtype") and target.dtype.kind in "iu":
            keep = target != self.ignore_index
            target = backend.get_array_module(target).where(keep, target, 0)
        return logits, target, keep

    def _targets(self, logits: Any, target: Any) -> Any:
        """The dense target matrix ``(N, K)``, smoothing applied, in the logits' dtype."""
        xp = backend.get_array_module(logits, target)
        n, k = logits.shape
        if not hasattr(target, "shape") or not hasattr(target, "dtype"):
            raise LayerInputError(
                f"SoftmaxCrossEntropy expected the target as an array, got {type(target).__name__}"
            )
        if target.dtype.kind in "iu":
            if tuple(target.shape) != (n,):
                raise LayerInputError(
                    f"SoftmaxCrossEntropy expected integer labels of shape ({n},) for logits "
                    f"{tuple(logits.shape)}, got labels of shape {tuple(target.shape)}"
                )
            if n and (int(target.min()) < 0 or int(target.max()) >= k):
                raise LayerInputError(
                    f"SoftmaxCrossEntropy labels must lie in [0, {k - 1}] for {k} classes, "
                    f"got values from {int(target.min())} to {int(target.max())}"
                )
            t = xp.full((n, k), self.label_smoothing / k, dtype=logits.dtype)
            t[xp.arange(n), target] += 1.0 - self.label_smoothing
            return t
        if target.dtype.kind == "f":
            if tuple(target.shape) != (n, k):
                raise LayerInputError(
                    f"SoftmaxCrossEntropy expected soft targets of shape ({n}, {k}) like the "
                    f"logits, got {tuple(target.shape)}"
                )
            t = target.astype(logits.dtype)
            if self.label_smoothing:
                t = t * (1.0 - self.label_smoothing) + self.label_smoothing / k
            return t
        raise LayerInputError(
            "SoftmaxCrossEntropy expected integer labels (N,) or float soft targets (N, K), "
            f"got dtype {target.dtype}"
        )

    def forward(self, logits: Any, target: Any) -> Any:
        logits, target, keep = self._rows(logits, target)
        if not hasattr(logits, "ndim") or logits.ndim != 2 or logits.dtype.kind != "f":
            got = (
                f"shape {tuple(logits.shape)}, dtype {logits.dtype}"
                if hasattr(logits, "shape")
                else type(logits).__name__
            )
            raise LayerInputError(
                f"SoftmaxCrossEntropy expected floating-point logits (N, K), got {got}"
            )
        t = self._targets(logits, target)
        xp = backend.get_array_module(logits)
        if keep is not None:
            t = t * keep[:, None].astype(t.dtype)
        logp = log_softmax(logits, axis=1)
        n = logits.shape[0] if keep is None else int(keep.sum())
        self.count = n
        # A class with target weight 0 adds nothing, even when its log-probability is -inf
        # (a masked logit): 0 * -inf would be NaN.
        with numpy.errstate(over="ignore"):  # an inf loss is reported just below
            loss = -(t * xp.where(t != 0, logp, 0)).sum() / max(n, 1)
        self._check_finite(loss)
        self.probs = xp.exp(logp)
        self.t = t
        return loss

    def backward(self, grad: Any = 1.0) -> Any:
        self._need_cache(self.probs, self.t)
        n = max(self.count, 1)
        row_mass = self.t.sum(axis=1, keepdims=True)
        dx = (self.probs * row_mass - self.t) * (_scale(grad, self.probs.dtype) / n)
        return dx.reshape(self.shape)

    def __repr__(self) -> str:
        ignore = "" if self.ignore_index == -100 else f", ignore_index={self.ignore_index}"
        return f"SoftmaxCrossEntropy(label_smoothing={self.label_smoothing}{ignore})"


class MSELoss(Loss):
    """Mean squared error over every element: ``L = mean((x - y)^2)``, any shape.

    Backward: dL/dx = 2 (x - y) / numel * grad.
    """

    def __init__(self) -> None:
        self.diff = None

    def forward(self, x: Any, target: Any) -> Any:
        _check_elementwise("MSELoss", x, target)
        backend.get_array_module(x, target)  # a clear error if devices differ
        self.diff = x - target.astype(x.dtype)
        loss = (self.diff * self.diff).sum() / max(self.diff.size, 1)
        self._check_finite(loss)
        return loss

    def backward(self, grad: Any = 1.0) -> Any:
        self._need_cache(self.diff)
        return self.diff * (2.0 * _scale(grad, self.diff.dtype) / max(self.diff.size, 1))


class BCEWithLogits(Loss):
    """Sigmoid + binary cross-entropy on logits (PyTorch's ``BCEWithLogitsLoss``), any shape.

    Per element, with ``c = 1 + (pos_weight - 1) * t``:
    ``l = (1 - t) x + c * softplus(-x)``, which is ``-[c t log s(x) + (1 - t) log(1 - s(x))]``
    written so that no ``exp`` overflows (``softplus(-x) = max(-x, 0) + log(1 + e^-|x|)``).
    ``reduction="mean"`` averages over every element, ``"sum"`` adds them up.
    ``pos_weight`` (broadcast along the last axis, as in PyTorch) weighs the positives.

    Backward: dl/dx = (1 - t) - c * s(-x), i.e. ``s(x) - t`` without ``pos_weight``.
    """

    def __init__(self, pos_weight: Any = None, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"BCEWithLogits: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.pos_weight = pos_weight
        self.reduction = reduction
        self.dx = None

    def forward(self, x: Any, target: Any) -> Any:
        _check_elementwise("BCEWithLogits", x, target, "floating-point logits",
                           "targets of the logits' shape")
        xp = backend.get_array_module(x, target)
        t = target.astype(x.dtype)
        softplus_neg = xp.maximum(-x, 0) + xp.log1p(xp.exp(-xp.abs(x)))  # -log s(x)
        if self.pos_weight is None:
            c = 1.0
        else:
            c = 1 + (xp.asarray(self.pos_weight, dtype=x.dtype) - 1) * t
        per_element = (1 - t) * x + c * softplus_neg
        sig_neg = xp.exp(-softplus_neg - x)  # s(-x) = e^{-x} s(x), from the stable log
        n = per_element.size if self.reduction == "mean" else 1
        self.dx = ((1 - t) - c * sig_neg) / max(n, 1)
        loss = per_element.sum() / max(n, 1)
        self._check_finite(loss)
        return loss

    def backward(self, grad: Any = 1.0) -> Any:
        self._need_cache(self.dx)
        return self.dx * _scale(grad, self.dx.dtype)

    def __repr__(self) -> str:
        return f"BCEWithLogits(reduction={self.reduction!r})"


class L1Loss(Loss):
    """Mean absolute error: ``L = mean(|x - y|)`` (``reduction="sum"``: the sum), any shape.

    Backward: dL/dx = sign(x - y) / numel * grad (0 where x == y, as in PyTorch).
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"L1Loss: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.sign = None

    def forward(self, x: Any, target: Any) -> Any:
        _check_elementwise("L1Loss", x, target)
        xp = backend.get_array_module(x, target)
        diff = x - target.astype(x.dtype)
        n = diff.size if self.reduction == "mean" else 1
        self.sign = xp.sign(diff) / max(n, 1)
        loss = xp.abs(diff).sum() / max(n, 1)
        self._check_finite(loss)
        return loss

    def backward(self, grad: Any = 1.0) -> Any:
        self._need_cache(self.sign)
        return self.sign * _scale(grad, self.sign.dtype)

    def __repr__(self) -> str:
        return f"L1Loss(reduction={self.reduction!r})"
