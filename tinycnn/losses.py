"""Losses: ``loss = criterion(output, target)`` then ``dx = criterion.backward()``.

Every loss takes PyTorch's ``reduction``:

* ``"mean"`` (the default) and ``"sum"`` return a 0-d array of the input's dtype, and
  ``backward(grad=1.0)`` takes a scalar upstream gradient;
* ``"none"`` returns the loss of every element (or, for the classification losses, of
  every sample and position), and ``backward(grad)`` takes an array of that shape.

``backward`` returns dL/d(output), which the model's ``backward`` takes next:

    loss = criterion(model(x), y)
    model.backward(criterion.backward())

A loss that comes out inf or NaN raises ``FloatingPointError`` (training diverged, or the
input holds inf/NaN). One exception, as in PyTorch: a ``"mean"`` over nothing (every
target equal to ``ignore_index``, class weights that add up to 0, an empty batch) is NaN,
and is returned as NaN rather than raised.

The losses carry PyTorch's names and arguments (``CrossEntropyLoss``, ``NLLLoss``,
``BCELoss``, ``BCEWithLogitsLoss``, ``MSELoss``, ``L1Loss``, ``SmoothL1Loss``,
``HuberLoss``, ``KLDivLoss``) and give PyTorch's values and gradients;
``SoftmaxCrossEntropy`` is cross-entropy with the classes on the last axis.

The layers :class:`~tinycnn.layers.activation.LogSoftmax` and
:class:`~tinycnn.layers.activation.Softmax` turn logits into what ``NLLLoss`` and
``KLDivLoss`` (log-probabilities) and ``BCELoss`` (probabilities) expect.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy

from tinycnn import backend
from tinycnn.module import BackwardBeforeForwardError, LayerInputError

_REDUCTIONS = ("mean", "sum", "none")


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


def _describe(value: Any) -> str:
    """What came, for an error message: shape and dtype of an array, else the type."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"shape {tuple(value.shape)}, dtype {value.dtype}"
    return type(value).__name__


def _check_reduction(name: str, reduction: Any, allowed: tuple[str, ...] = _REDUCTIONS) -> str:
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(
            f"{name}: reduction must be one of {', '.join(map(repr, allowed))}, got {reduction!r}"
        )
    return reduction


def _check_weight_array(name: str, arg: str, weight: Any, one_d: bool) -> Any:
    """``None``, or ``weight`` as a finite numeric array (1-D when ``one_d``)."""
    if weight is None:
        return None
    if not hasattr(getattr(weight, "dtype", None), "kind"):  # a list, or a torch tensor
        try:
            weight = numpy.asarray(weight, dtype=numpy.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: {arg} must be an array of numbers, got {weight!r}") from None
    if weight.dtype.kind not in "fiu" or (one_d and (weight.ndim != 1 or weight.size == 0)):
        want = "a 1-D array with one weight per class" if one_d else "an array of numbers"
        raise ValueError(f"{name}: {arg} must be {want}, got {_describe(weight)}")
    if not bool(backend.get_array_module(weight).isfinite(weight).all()):
        raise ValueError(f"{name}: {arg} must hold finite numbers, got {weight}")
    return weight


def _as_dtype_of(weight: Any, x: Any) -> Any:
    """A weight array on ``x``'s device, in ``x``'s dtype."""
    return backend.to_device(weight, backend.device_of(x)).astype(x.dtype)


def _check_broadcast(name: str, arg: str, weight: Any, x: Any) -> None:
    """``weight`` must broadcast to ``x``'s shape without enlarging it (PyTorch's rule)."""
    try:
        fits = numpy.broadcast_shapes(tuple(weight.shape), tuple(x.shape)) == tuple(x.shape)
    except ValueError:
        fits = False
    if not fits:
        raise LayerInputError(
            f"{name}: {arg} of shape {tuple(weight.shape)} does not broadcast to the input's "
            f"shape {tuple(x.shape)}"
        )


def _check_elementwise(
    name: str, x: Any, target: Any, input_text: str = "a floating-point array",
    target_text: str = "a target of the input's shape",
) -> None:
    """Elementwise losses: a float input and a numeric target of exactly its shape."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype") or x.dtype.kind != "f":
        raise LayerInputError(
            f"{name} expected {input_text}, got {getattr(x, 'dtype', type(x).__name__)}"
        )
    if not hasattr(target, "shape") or tuple(target.shape) != tuple(x.shape):
        got = tuple(target.shape) if hasattr(target, "shape") else type(target).__name__
        raise LayerInputError(f"{name} expected {target_text} {tuple(x.shape)}, got {got}")
    if not hasattr(target, "dtype") or target.dtype.kind not in "fiub":
        raise LayerInputError(f"{name} expected a numeric target, got dtype {target.dtype}")


class Loss:
    """Base of the losses: ``loss(x, target)`` runs ``forward``; ``backward`` differentiates it.

    A loss holds no parameters; it caches what ``backward`` needs on the instance.
    ``reduction`` is ``"mean"``, ``"sum"`` or ``"none"`` (see the module's description).
    """

    reduction = "mean"

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
        if not bool(xp.isfinite(loss).all()):
            what = f"is {float(loss)}" if loss.ndim == 0 else "holds inf or NaN"
            raise FloatingPointError(
                f"{type(self).__name__} {what}: training diverged or the input holds "
                "inf/NaN; try a lower learning rate (or gradient clipping) and check the data"
            )

    def _reduce(self, per_item: Any, denominator: float) -> Any:
        """``per_item`` itself (``"none"``), its sum, or its sum over ``denominator`` (the
        mean, and KLDivLoss's ``"batchmean"``).

        A mean over nothing (``denominator == 0``) is NaN as in PyTorch, returned, not raised.
        """
        if self.reduction == "none":
            loss = per_item
        elif self.reduction == "sum":
            loss = per_item.sum()
        elif denominator == 0:
            return backend.get_array_module(per_item).full((), numpy.nan, dtype=per_item.dtype)
        else:
            loss = per_item.sum() / denominator
        self._check_finite(loss)
        return loss

    def _upstream(self, grad: Any, loss_shape: tuple[int, ...], like: Any,
                  denominator: float = 1.0) -> Any:
        """The upstream gradient, ready to multiply the loss's local derivative.

        ``"none"``: an array of the loss's shape; otherwise a scalar, divided by the
        mean's ``denominator`` (inf when it is 0: the loss is NaN then, as in PyTorch).
        """
        name = type(self).__name__
        if self.reduction == "none":
            if not hasattr(grad, "shape"):
                grad = backend.get_array_module(like).asarray(grad)
            if tuple(grad.shape) != tuple(loss_shape):
                raise LayerInputError(
                    f"{name}.backward expected an upstream gradient of the loss's shape "
                    f"{tuple(loss_shape)} (reduction='none'), got shape {tuple(grad.shape)}"
                )
            return grad.astype(like.dtype)
        if hasattr(grad, "shape"):
            if grad.size != 1:
                raise LayerInputError(
                    f"{name}.backward expected a scalar upstream gradient "
                    f"(reduction={self.reduction!r}), got shape {tuple(grad.shape)}"
                )
            grad = grad.reshape(())
        g = _scale(grad, like.dtype)
        if self.reduction == "sum":
            return g
        if denominator == 0:
            return g * numpy.inf if g else numpy.nan
        return g / denominator

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


# --- classification: cross-entropy and NLL over class scores --------------------------------


class _ClassLoss(Loss):
    """Shared by the classification losses: the layout of scores and targets, class
    ``weight`` and ``ignore_index``.

    Scores are read as rows ``(M, C)``, one per sample (and position); labels as ``(M,)``.
    PyTorch's layout puts the classes on axis 1: ``(N, C, d1, ...)`` with labels
    ``(N, d1, ...)``, or one unbatched sample ``(C,)`` with a 0-d label.
    """

    class_last = False  # SoftmaxCrossEntropy reads (N, T, C), classes on the last axis
    soft_targets = True  # class probabilities of the scores' shape as the target
    input_text = "scores"

    def _setup(self, weight: Any, ignore_index: Any, reduction: Any) -> None:
        name = type(self).__name__
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, Integral):
            raise TypeError(f"{name}: ignore_index must be an int, got {ignore_index!r}")
        self.ignore_index = int(ignore_index)
        self.weight = _check_weight_array(name, "weight", weight, one_d=True)
        self.reduction = _check_reduction(name, reduction)
        self.t = None
        self.keep = None
        self.shape = None
        self.loss_shape = None
        self.denominator = 1.0

    def _layout(self, x: Any) -> tuple[int, str]:
        """The class axis of ``x`` and its layout for messages (raises on a wrong rank)."""
        name = type(self).__name__
        if not hasattr(x, "shape") or not hasattr(x, "dtype") or x.dtype.kind != "f":
            layout = "(N, K)" if self.class_last else "(N, C, d1, ...)"
            raise LayerInputError(
                f"{name} expected floating-point {self.input_text} {layout}, got {_describe(x)}"
            )
        if self.class_last:
            if x.ndim not in (2, 3):
                raise LayerInputError(
                    f"{name} expected floating-point {self.input_text} (N, K), got shape "
                    f"{tuple(x.shape)} (sequences: (N, T, K))"
                )
            return x.ndim - 1, "(N, T)" if x.ndim == 3 else "(N,)"
        if x.ndim == 0:
            raise LayerInputError(
                f"{name} expected {self.input_text} (N, C), (N, C, d1, ...) or (C,), "
                "got a 0-d array"
            )
        return (0, "()") if x.ndim == 1 else (1, "(N, d1, ...)" if x.ndim > 2 else "(N,)")

    def _rows(self, x: Any, target: Any) -> tuple[Any, Any, bool]:
        """``x`` as rows ``(M, C)``, the target as labels ``(M,)`` or soft rows ``(M, C)``."""
        name = type(self).__name__
        axis, label_layout = self._layout(x)
        xp = backend.get_array_module(x)
        if not hasattr(target, "shape") or not hasattr(target, "dtype"):
            raise LayerInputError(
                f"{name} expected the target as an array, got {type(target).__name__}"
            )
        backend.get_array_module(x, target)  # a clear error if the devices differ
        self.shape = tuple(x.shape)
        self.loss_shape = self.shape[:axis] + self.shape[axis + 1:]
        c = x.shape[axis]
        rows = xp.moveaxis(x, axis, -1).reshape(-1, c)
        if target.dtype.kind in "iu":
            if tuple(target.shape) != self.loss_shape:
                want = (f"of shape {self.loss_shape}" if len(self.loss_shape) < 2
                        else f"{label_layout} = {self.loss_shape}")
                raise LayerInputError(
                    f"{name} expected integer labels {want} for {self.input_text} "
                    f"{self.shape}, got labels of shape {tuple(target.shape)}"
                )
            return rows, target.reshape(-1), False
        if target.dtype.kind == "f" and self.soft_targets:
            if tuple(target.shape) != self.shape:
                raise LayerInputError(
                    f"{name} expected soft targets of shape {self.shape} like the "
                    f"{self.input_text}, got {tuple(target.shape)}"
                )
            if self.ignore_index >= 0:  # PyTorch's rule: a class index cannot be ignored here
                raise LayerInputError(
                    f"{name}: ignore_index={self.ignore_index} applies to integer labels, "
                    "not to soft targets (class probabilities); leave it at its default"
                )
            return rows, xp.moveaxis(target, axis, -1).reshape(-1, c), True
        want = "integer labels or float class probabilities" if self.soft_targets else (
            "integer class labels")
        raise LayerInputError(f"{name} expected {want} as the target, got dtype {target.dtype}")

    def _labels(self, rows: Any, labels: Any) -> tuple[Any, Any]:
        """Labels with ``ignore_index`` replaced by 0, and the mask of the rows that count;
        any other label outside ``[0, C)`` is an error."""
        xp = backend.get_array_module(rows)
        c = rows.shape[1]
        keep = labels != self.ignore_index
        counted = labels[keep]
        if counted.size and (int(counted.min()) < 0 or int(counted.max()) >= c):
            raise LayerInputError(
                f"{type(self).__name__} labels must lie in [0, {c - 1}] for {c} classes "
                f"(or equal ignore_index={self.ignore_index}), got values from "
                f"{int(counted.min())} to {int(counted.max())}"
            )
        return xp.where(keep, labels, 0), keep

    def _class_weight(self, rows: Any) -> Any:
        """``weight`` as a ``(C,)`` array in the rows' dtype, or ``None``."""
        if self.weight is None:
            return None
        if self.weight.shape[0] != rows.shape[1]:
            raise LayerInputError(
                f"{type(self).__name__}: weight has {self.weight.shape[0]} entries but the "
                f"{self.input_text} have {rows.shape[1]} classes"
            )
        return _as_dtype_of(self.weight, rows)

    def _label_target(self, rows: Any, labels: Any, smoothing: float) -> Any:
        """The dense target ``T (M, C)``: ``T_ic = w_c ((1 - e) [c == y_i] + e / C)`` on the
        rows that count, 0 on ignored rows; also sets the mean's denominator, the sum of
        ``w_{y_i}`` over the rows that count (their number without ``weight``)."""
        xp = backend.get_array_module(rows)
        m, c = rows.shape
        labels, keep = self._labels(rows, labels)
        t = xp.full((m, c), smoothing / c, dtype=rows.dtype)
        t[xp.arange(m), labels] += 1.0 - smoothing
        w = self._class_weight(rows)
        if w is None:
            self.denominator = float(keep.sum())
        else:
            t = t * w
            self.denominator = float((w[labels] * keep).sum())
        self.keep = keep
        return t * keep[:, None].astype(t.dtype)

    def _row_grad(self, grad: Any) -> Any:
        """The upstream gradient per row: ``(M, 1)`` for ``"none"``, else a scalar."""
        g = self._upstream(grad, self.loss_shape, self.t, self.denominator)
        return g.reshape(-1, 1) if self.reduction == "none" else g

    def _unrows(self, rows: Any) -> Any:
        """Rows ``(M, C)`` back to the input's layout, ignored rows exactly 0."""
        xp = backend.get_array_module(rows)
        if self.keep is not None:  # 0, even where a mean over nothing scales by inf
            rows = xp.where(self.keep[:, None], rows, 0)
        if self.shape is None:
            return rows
        axis = len(self.shape) - 1 if self.class_last else min(1, len(self.shape) - 1)
        moved = self.shape[:axis] + self.shape[axis + 1:] + self.shape[axis:axis + 1]
        return xp.moveaxis(rows.reshape(moved), -1, axis)

    def extra_repr(self) -> str:
        parts = [] if self.weight is None else ["weight=..."]
        if self.ignore_index != -100:
            parts.append(f"ignore_index={self.ignore_index}")
        if self.reduction != "mean":
            parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)


class SoftmaxCrossEntropy(_ClassLoss):
    """Softmax followed by cross-entropy (PyTorch's ``cross_entropy``), classes on the last axis.

    Shapes: logits ``(N, K)``; target either integer labels ``(N,)`` in ``[0, K)`` or
    soft targets ``(N, K)`` (class probabilities). Sequences: logits ``(N, T, K)`` with
    labels ``(N, T)`` are read as ``N*T`` rows (class axis last, unlike PyTorch's
    ``(N, K, T)``: :class:`CrossEntropyLoss` takes that layout); the gradient comes back
    as ``(N, T, K)``.

    With ``T_nk`` the target (one-hot label, or the soft target) times the class weight
    ``w_k`` (1 without ``weight``), and ``label_smoothing = e`` replacing the target t by
    ``(1 - e) t + e / K`` first, exactly as PyTorch does:

        l_n = -sum_k T_nk log p_nk,   p = softmax(logits)
        L = sum_n l_n / D             ("mean"; "sum": sum_n l_n; "none": every l_n)

    ``D`` is PyTorch's weighted-mean rule: the sum of ``w_{y_n}`` over the rows whose label
    is not ``ignore_index`` (their number without ``weight``); for soft targets, N.
    Rows whose label is ``ignore_index`` (default -100, e.g. padding) add nothing, count
    nothing in D and get a zero gradient. When no row counts the mean is NaN, as in PyTorch.

    Backward: dl_n/dlogits_nk = p_nk sum_j T_nj - T_nk, i.e. ``(p - t) / N`` for the
    plain mean with one-hot targets.

    A logit of -inf (a masked class) is allowed: a term with ``T_nk = 0`` counts as 0, so
    the loss and gradient stay finite (with soft targets too, where PyTorch gives NaN).
    With label smoothing every class has ``T_nk > 0`` and the loss is inf, as in PyTorch,
    which raises ``FloatingPointError`` like any non-finite loss.
    """

    class_last = True
    input_text = "logits"

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100,
                 weight: Any = None, reduction: str = "mean") -> None:
        name = type(self).__name__
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, Real):
            raise TypeError(f"{name}: label_smoothing must be a number, got {label_smoothing!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self._setup(weight, ignore_index, reduction)
        self.probs = None

    def forward(self, logits: Any, target: Any) -> Any:
        rows, target, soft = self._rows(logits, target)
        xp = backend.get_array_module(rows)
        if soft:
            e, k = self.label_smoothing, rows.shape[1]
            t = target.astype(rows.dtype)
            if e:
                t = t * (1.0 - e) + e / k
            w = self._class_weight(rows)
            self.t = t if w is None else t * w
            self.keep, self.denominator = None, float(rows.shape[0])
        else:
            self.t = self._label_target(rows, target, self.label_smoothing)
        logp = log_softmax(rows, axis=1)
        # A class with target weight 0 adds nothing, even when its log-probability is -inf
        # (a masked logit): 0 * -inf would be NaN.
        with numpy.errstate(over="ignore"):  # an inf loss is reported by _reduce
            per_row = -(self.t * xp.where(self.t != 0, logp, 0)).sum(axis=1)
        self.probs = xp.exp(logp)
        return self._reduce(per_row.reshape(self.loss_shape), self.denominator)

    def backward(self, grad: Any = 1.0) -> Any:
        self._need_cache(self.probs, self.t)
        dx = self.probs * self.t.sum(axis=1, keepdims=True) - self.t
        with numpy.errstate(invalid="ignore"):  # 0 * inf where a mean over nothing is NaN
            return self._unrows(dx * self._row_grad(grad))

    def extra_repr(self) -> str:
        rest = super().extra_repr()
        return f"label_smoothing={self.label_smoothing}" + (f", {rest}" if rest else "")


class CrossEntropyLoss(SoftmaxCrossEntropy):
    """PyTorch's ``nn.CrossEntropyLoss``: :class:`SoftmaxCrossEntropy` with PyTorch's layout.

    Logits ``(N, C)``, ``(N, C, d1, ...)`` (classes on axis 1: per-pixel classification) or
    one sample ``(C,)``; labels ``(N,)``, ``(N, d1, ...)`` or 0-d; soft targets of the
    logits' shape. ``reduction="none"`` gives the loss of shape ``(N, d1, ...)``. The
    arguments mean what they mean in PyTorch (pass them by keyword after ``weight``).
    """

    class_last = False

    def __init__(self, weight: Any = None, *, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing, ignore_index, weight, reduction)


class NLLLoss(_ClassLoss):
    """Negative log-likelihood on log-probabilities (PyTorch's ``nn.NLLLoss``).

    Input: log-probabilities (e.g. from :class:`~tinycnn.layers.activation.LogSoftmax`)
    ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``; labels ``(N,)``, ``(N, d1, ...)`` or 0-d.
    ``LogSoftmax(dim=1)`` followed by ``NLLLoss`` is ``CrossEntropyLoss``:

        l_n = -w_{y_n} x_{n, y_n}     (0 where y_n == ignore_index)
        L = sum_n l_n / sum_n w_{y_n}  ("mean", over the rows not ignored; "sum": sum_n l_n)

    Without ``weight`` every ``w_c = 1`` and the mean divides by the number of rows not
    ignored. When no row counts the mean is NaN, as in PyTorch.

    Backward: dl_n/dx_nk = -w_{y_n} [k == y_n].
    """

    soft_targets = False
    input_text = "log-probabilities"

    def __init__(self, weight: Any = None, *, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        self._setup(weight, ignore_index, reduction)

    def forward(self, x: Any, target: Any) -> Any:
        rows, labels, _ = self._rows(x, target)
        xp = backend.get_array_module(rows)
        self.t = self._label_target(rows, labels, 0.0)
        # Only the labelled entry counts: a -inf log-probability elsewhere is no NaN.
        per_row = -(self.t * xp.where(self.t != 0, rows, 0)).sum(axis=1)
        return self._reduce(per_row.reshape(self.loss_shape), self.denominator)

    def backward(self, grad: Any = 1.0) -> Any:
        self._need_cache(self.t)
        with numpy.errstate(invalid="ignore"):  # 0 * inf where a mean over nothing is NaN
            return self._unrows(-self.t * self._row_grad(grad))


# --- elementwise losses -------------------------------------------------------------------


class _ElementwiseLoss(Loss):
    """A loss that is a function ``l(x, t)`` of each element: ``pointwise`` gives ``l``,
    ``derivative`` gives ``dl/dx``, side by side in each subclass. ``"mean"`` divides the
    sum by the number of elements."""

    input_text = "a floating-point array"
    target_text = "a target of the input's shape"

    def _setup(self, reduction: Any, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
        self.reduction = _check_reduction(type(self).__name__, reduction, allowed)
        self.x = None
        self.t = None

    def _check(self, x: Any, t: Any) -> None:
        """Extra checks of the input (the range of probabilities, a weight's shape)."""

    def _denominator(self, x: Any) -> float:
        return float(x.size)

    def pointwise(self, x: Any, t: Any) -> Any:
        raise NotImplementedError

    def derivative(self, x: Any, t: Any) -> Any:
        raise NotImplementedError

    def forward(self, x: Any, target: Any) -> Any:
        _check_elementwise(type(self).__name__, x, target, self.input_text, self.target_text)
        backend.get_array_module(x, target)  # a clear error if the devices differ
        t = target.astype(x.dtype)
        self._check(x, t)
        self.x, self.t = x, t
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):  # reported next
            per_element = self.pointwise(x, t)
        return self._reduce(per_element, self._denominator(x))

    def backward(self, grad: Any = 1.0) -> Any:
        self._need_cache(self.x, self.t)
        g = self._upstream(grad, self.x.shape, self.x, self._denominator(self.x))
        with numpy.errstate(invalid="ignore"):  # 0 * inf where a mean over nothing is NaN
            return self.derivative(self.x, self.t) * g


class MSELoss(_ElementwiseLoss):
    """Squared error ``l = (x - y)^2`` per element, any shape; ``"mean"``: ``mean((x - y)^2)``.

    Backward: dl/dx = 2 (x - y).
    """

    def __init__(self, reduction: str = "mean") -> None:
        self._setup(reduction)

    def pointwise(self, x: Any, t: Any) -> Any:
        return (x - t) * (x - t)

    def derivative(self, x: Any, t: Any) -> Any:
        return 2.0 * (x - t)


class L1Loss(_ElementwiseLoss):
    """Absolute error ``l = |x - y|`` per element, any shape; ``"mean"``: ``mean(|x - y|)``.

    Backward: dl/dx = sign(x - y) (0 where x == y, as in PyTorch).
    """

    def __init__(self, reduction: str = "mean") -> None:
        self._setup(reduction)

    def pointwise(self, x: Any, t: Any) -> Any:
        return backend.get_array_module(x).abs(x - t)

    def derivative(self, x: Any, t: Any) -> Any:
        return backend.get_array_module(x).sign(x - t)


class SmoothL1Loss(_ElementwiseLoss):
    """PyTorch's ``nn.SmoothL1Loss``: squared near 0, absolute beyond ``beta``; any shape.

    With ``d = x - y``: ``l = 0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``.
    ``beta = 0`` is exactly :class:`L1Loss`. ``HuberLoss(delta=b)`` is ``b`` times this.

    Backward: dl/dx = clip(d / beta, -1, 1) (``sign(d)`` when ``beta = 0``).
    """

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        self._setup(reduction)
        if isinstance(beta, bool) or not isinstance(beta, Real) or not beta >= 0:
            raise ValueError(f"SmoothL1Loss: beta must be a number >= 0, got {beta!r}")
        if beta == float("inf"):
            raise ValueError(f"SmoothL1Loss: beta must be finite, got {beta!r}")
        self.beta = float(beta)

    def pointwise(self, x: Any, t: Any) -> Any:
        xp = backend.get_array_module(x)
        d = xp.abs(x - t)
        if self.beta == 0:
            return d
        return xp.where(d < self.beta, 0.5 * d * d / self.beta, d - 0.5 * self.beta)

    def derivative(self, x: Any, t: Any) -> Any:
        xp = backend.get_array_module(x)
        if self.beta == 0:
            return xp.sign(x - t)
        return xp.clip((x - t) / self.beta, -1.0, 1.0)

    def extra_repr(self) -> str:
        rest = super().extra_repr()
        return f"beta={self.beta}" + (f", {rest}" if rest else "")


class HuberLoss(_ElementwiseLoss):
    """PyTorch's ``nn.HuberLoss``: squared near 0, linear beyond ``delta``; any shape.

    With ``d = x - y``: ``l = 0.5 d^2`` where ``|d| < delta``, else
    ``delta (|d| - 0.5 delta)``; that is ``delta * SmoothL1Loss(beta=delta)``.

    Backward: dl/dx = clip(d, -delta, delta).
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        self._setup(reduction)
        if (isinstance(delta, bool) or not isinstance(delta, Real) or not delta > 0
                or delta == float("inf")):
            raise ValueError(f"HuberLoss: delta must be a finite number > 0, got {delta!r}")
        self.delta = float(delta)

    def pointwise(self, x: Any, t: Any) -> Any:
        xp = backend.get_array_module(x)
        d = xp.abs(x - t)
        return xp.where(d < self.delta, 0.5 * d * d, self.delta * (d - 0.5 * self.delta))

    def derivative(self, x: Any, t: Any) -> Any:
        return backend.get_array_module(x).clip(x - t, -self.delta, self.delta)

    def extra_repr(self) -> str:
        rest = super().extra_repr()
        return f"delta={self.delta}" + (f", {rest}" if rest else "")


class BCELoss(_ElementwiseLoss):
    """Binary cross-entropy on probabilities (PyTorch's ``nn.BCELoss``), any shape.

    Per element, with the logs clamped at -100 as in PyTorch (so a probability of exactly 0
    or 1 gives a loss of at most 100, not inf):

        l = -w [t max(log x, -100) + (1 - t) max(log(1 - x), -100)]

    ``weight`` (optional) rescales each element; it must broadcast to the input's shape.
    The input must lie in [0, 1] (apply :class:`~tinycnn.layers.activation.Sigmoid`
    first); on logits, :class:`BCEWithLogitsLoss` is the stable choice.

    Backward, PyTorch's formula: dl/dx = w (x - t) / max(x (1 - x), 1e-12), the clamp
    keeping it finite at x = 0 and x = 1.
    """

    input_text = "floating-point probabilities"
    target_text = "targets of the input's shape"

    def __init__(self, weight: Any = None, *, reduction: str = "mean") -> None:
        self._setup(reduction)
        self.weight = _check_weight_array("BCELoss", "weight", weight, one_d=False)

    def _check(self, x: Any, t: Any) -> None:
        xp = backend.get_array_module(x)
        if x.size and not bool(((x >= 0) & (x <= 1)).all()):
            raise LayerInputError(
                "BCELoss expected probabilities in [0, 1] (apply Sigmoid first, or use "
                f"BCEWithLogitsLoss on logits), got values from {float(xp.nanmin(x))} to "
                f"{float(xp.nanmax(x))}" + (" and NaN" if bool(xp.isnan(x).any()) else "")
            )
        if self.weight is not None:
            _check_broadcast("BCELoss", "weight", self.weight, x)

    def _w(self, x: Any) -> Any:
        return 1.0 if self.weight is None else _as_dtype_of(self.weight, x)

    def pointwise(self, x: Any, t: Any) -> Any:
        xp = backend.get_array_module(x)
        log_x = xp.maximum(xp.log(x), -100.0)
        log_1mx = xp.maximum(xp.log1p(-x), -100.0)
        return -self._w(x) * (t * log_x + (1 - t) * log_1mx)

    def derivative(self, x: Any, t: Any) -> Any:
        xp = backend.get_array_module(x)
        return self._w(x) * (x - t) / xp.maximum(x * (1 - x), 1e-12)

    def extra_repr(self) -> str:
        rest = super().extra_repr()
        return ", ".join(p for p in ("weight=..." if self.weight is not None else "", rest) if p)


class BCEWithLogits(_ElementwiseLoss):
    """Sigmoid + binary cross-entropy on logits (PyTorch's ``BCEWithLogitsLoss``), any shape.

    Per element, with ``c = 1 + (pos_weight - 1) * t`` and ``w`` the ``weight`` (1 if not
    given): ``l = w [(1 - t) x + c * softplus(-x)]``, which is
    ``-w [c t log s(x) + (1 - t) log(1 - s(x))]`` written so that no ``exp`` overflows
    (``softplus(-x) = max(-x, 0) + log(1 + e^-|x|)``).
    ``pos_weight`` (broadcast along the last axis, as in PyTorch) weighs the positives;
    ``weight`` rescales each element. Both must broadcast to the input's shape.

    Backward: dl/dx = w [(1 - t) - c * s(-x)], i.e. ``s(x) - t`` without the weights.
    """

    input_text = "floating-point logits"
    target_text = "targets of the logits' shape"

    def __init__(self, pos_weight: Any = None, reduction: str = "mean", *,
                 weight: Any = None) -> None:
        name = type(self).__name__
        self._setup(reduction)
        self.pos_weight = _check_weight_array(name, "pos_weight", pos_weight, one_d=False)
        self.weight = _check_weight_array(name, "weight", weight, one_d=False)

    def _check(self, x: Any, t: Any) -> None:
        for arg in ("pos_weight", "weight"):
            if getattr(self, arg) is not None:
                _check_broadcast(type(self).__name__, arg, getattr(self, arg), x)

    def _weights(self, x: Any, t: Any) -> tuple[Any, Any]:
        """``(w, c)``: the element weight and the positives' factor ``1 + (pos_weight - 1) t``."""
        w = 1.0 if self.weight is None else _as_dtype_of(self.weight, x)
        c = 1.0 if self.pos_weight is None else 1 + (_as_dtype_of(self.pos_weight, x) - 1) * t
        return w, c

    @staticmethod
    def _softplus_neg(x: Any) -> Any:
        """``softplus(-x) = -log s(x)``, without overflow."""
        xp = backend.get_array_module(x)
        return xp.maximum(-x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def pointwise(self, x: Any, t: Any) -> Any:
        w, c = self._weights(x, t)
        return w * ((1 - t) * x + c * self._softplus_neg(x))

    def derivative(self, x: Any, t: Any) -> Any:
        w, c = self._weights(x, t)
        sig_neg = backend.get_array_module(x).exp(-self._softplus_neg(x) - x)  # s(-x) = e^-x s(x)
        return w * ((1 - t) - c * sig_neg)

    def extra_repr(self) -> str:
        parts = [f"{a}=..." for a in ("weight", "pos_weight") if getattr(self, a) is not None]
        return ", ".join([*parts, f"reduction={self.reduction!r}"])


class BCEWithLogitsLoss(BCEWithLogits):
    """:class:`BCEWithLogits` under PyTorch's name, with PyTorch's argument order
    (``weight`` first; pass the rest by keyword)."""

    def __init__(self, weight: Any = None, *, reduction: str = "mean",
                 pos_weight: Any = None) -> None:
        super().__init__(pos_weight, reduction, weight=weight)


class KLDivLoss(_ElementwiseLoss):
    """Kullback-Leibler divergence (PyTorch's ``nn.KLDivLoss``), any shape.

    The input ``x`` is log-probabilities (e.g. from
    :class:`~tinycnn.layers.activation.LogSoftmax`); the target ``t`` is probabilities, or
    log-probabilities with ``log_target=True``. Per element:

        l = t (log t - x)         (0 where t = 0)
        l = e^t (t - x)           (log_target=True)

    ``reduction``: ``"batchmean"`` (the sum over N, the first axis: the true KL divergence
    per sample, which is what you usually want), ``"mean"`` (PyTorch's default: over every
    element), ``"sum"`` or ``"none"``.

    Backward: dl/dx = -t (``-e^t`` with ``log_target=True``).
    """

    input_text = "floating-point log-probabilities"
    target_text = "a target of the input's shape"

    def __init__(self, reduction: str = "mean", log_target: bool = False) -> None:
        self._setup(reduction, ("mean", "batchmean", "sum", "none"))
        if not isinstance(log_target, bool) and type(log_target).__name__ != "bool_":
            raise TypeError(f"KLDivLoss: log_target must be True or False, got {log_target!r}")
        self.log_target = bool(log_target)

    def _denominator(self, x: Any) -> float:
        if self.reduction == "batchmean":
            return float(x.shape[0]) if x.ndim else 1.0
        return float(x.size)

    def pointwise(self, x: Any, t: Any) -> Any:
        xp = backend.get_array_module(x)
        if self.log_target:
            return xp.exp(t) * (t - x)
        t_log_t = xp.where(t == 0, 0, t * xp.log(t))  # xlogy: 0 log 0 = 0
        return t_log_t - t * x

    def derivative(self, x: Any, t: Any) -> Any:
        return -backend.get_array_module(x).exp(t) if self.log_target else -t

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"] if self.reduction != "mean" else []
        return ", ".join([*parts, *(["log_target=True"] if self.log_target else [])])
