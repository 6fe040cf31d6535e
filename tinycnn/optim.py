"""Optimizers with PyTorch's update rules, updating ``Parameter.data`` in place.

Every optimizer takes a Module or a list of Parameters. ``step()`` updates each parameter
that is trainable (``requires_grad``) and has a gradient; ``zero_grad()`` clears the
gradients. ``lr`` is a plain attribute, so a schedule changes it between steps.

``weight_decay`` is the L2 penalty added to the gradient, ``g <- g + wd * p``, for every
optimizer but ``AdamW``, which decays the weights directly (decoupled). ``l1`` is
tinycnn's own addition (PyTorch has no such option): the sub-gradient of the L1 penalty
``l1 * sum(|p|)``, ``g <- g + l1 * sign(p)`` with ``sign(0) = 0``, added to the gradient
by every optimizer, ``AdamW`` included; it pushes weights to exactly zero more than L2
does. ``l1 = 0`` (the default) leaves every update as PyTorch's. :func:`l1_penalty` gives
the penalty's value (to report the regularized loss) and its sub-gradient. ``max_grad_norm``
clips the global gradient norm before each step (:func:`clip_grad_norm`); call
:func:`clip_grad_norm` (any ``norm_type``) or :func:`clip_grad_value` yourself between
``backward`` and ``step`` for other clipping, as in PyTorch.

State arrays (momentum buffers, Adam's moments) are made with the parameter's array
module and dtype, so a float32 model on the GPU keeps float32 GPU state; when the model
moves to another device after some steps, ``step()`` moves each state array to its
parameter's device first. On the GPU, the SGD-with-momentum and Adam/AdamW updates run as
one fused CUDA kernel per parameter (:mod:`tinycnn.fast.cuda`), the same arithmetic as
the NumPy code.
``state_dict()`` holds only numbers and arrays (NumPy copies), keyed ``"state.<i>.<name>"``
for parameter ``i``, so it saves to ``.npz`` without pickle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy

from tinycnn import backend
from tinycnn.anomaly import NonFiniteError
from tinycnn.module import Module, Parameter


def _param_list(params: Module | Iterable[Parameter], owner: str) -> list[Parameter]:
    """The parameters of a Module or an iterable, each once, in order."""
    items = params.parameters() if isinstance(params, Module) else list(params)
    out: list[Parameter] = []
    seen: set[int] = set()
    for p in items:
        if not isinstance(p, Parameter):
            raise TypeError(
                f"{owner} takes a Module or Parameters, got an item of type {type(p).__name__}"
            )
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _number(owner: str, name: str, value: Any) -> float:
    """``value`` as a float, or a ValueError naming ``name`` when it is not a real number."""
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, float, numpy.number)):
        raise ValueError(f"{owner}: {name} must be a number, got {value!r}")
    if isinstance(value, (complex, numpy.complexfloating)):
        raise ValueError(f"{owner}: {name} must be a real number, got {value!r}")
    return float(value)


def _at_least_zero(owner: str, name: str, value: Any) -> float:
    v = _number(owner, name, value)
    if not 0.0 <= v < math.inf:
        raise ValueError(f"{owner}: {name} must be >= 0 (a finite number), got {value!r}")
    return v


def _real(owner: str, name: str, value: Any) -> float:
    v = _number(owner, name, value)
    if not math.isfinite(v):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    return v


def _unit(owner: str, name: str, value: Any) -> float:
    v = _number(owner, name, value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value!r}")
    return v


def _betas(owner: str, name: str, value: Any) -> tuple[float, float]:
    items = list(value) if isinstance(value, (tuple, list)) else None
    if items is None or len(items) != 2:
        raise ValueError(f"{owner}: {name} must be a pair (beta1, beta2), got {value!r}")
    return _unit(owner, f"{name}[0]", items[0]), _unit(owner, f"{name}[1]", items[1])


def _flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, numpy.bool_)) and value not in (0, 1):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def _positive_or_none(owner: str, name: str, value: Any) -> float | None:
    if value is None:
        return None
    v = _number(owner, name, value)
    if not 0.0 < v < math.inf:
        raise ValueError(f"{owner}: {name} must be > 0 (a finite number) or None, got {value!r}")
    return v


# The rules of PyTorch's constructors (finite values required as well), shared by every
# optimizer's constructor and ``load_state_dict``.
_RULES = {
    "lr": _at_least_zero,
    "weight_decay": _at_least_zero,
    "l1": _at_least_zero,
    "max_grad_norm": _positive_or_none,
    "momentum": _at_least_zero,
    "dampening": _real,
    "nesterov": _flag,
    "eps": _at_least_zero,
    "initial_accumulator_value": _at_least_zero,
    "alpha": _unit,
    "centered": _flag,
    "betas": _betas,
    "amsgrad": _flag,
    "lr_decay": _at_least_zero,
}


def check_hyper(owner: str, name: str, value: Any) -> Any:
    """``value`` of hyper-parameter ``name`` converted, or ``ValueError`` saying what was
    expected and what came (one rule per name, for every optimizer)."""
    if isinstance(value, numpy.ndarray):  # as read back from an .npz file
        value = value.item() if value.ndim == 0 else tuple(value.tolist())
    return _RULES[name](owner, name, value)


def _named_grads(params: Module | Iterable[Parameter]) -> list[tuple[str, Parameter]]:
    """``(name, parameter)`` for each parameter with a gradient: dotted names for a Module,
    ``"parameter <i>"`` for a list."""
    if isinstance(params, Module):
        named = list(params.named_parameters())
    else:
        named = [(f"parameter {i}", p)
                 for i, p in enumerate(_param_list(params, "clip_grad_norm"))]
    return [(name, p) for name, p in named if p.grad is not None]


def _norm_type(value: Any) -> float:
    """``norm_type`` as a float > 0 (``inf`` or ``"inf"`` for the largest magnitude)."""
    if isinstance(value, str) and value.lower() == "inf":
        return math.inf
    v = _number("clip_grad_norm", "norm_type", value)
    if not v > 0:
        raise ValueError(f"clip_grad_norm: norm_type must be > 0 or inf, got {value!r}")
    return v


def _scaled_norm(grads: list[Any], xp: Any, norm_type: float = 2.0) -> float:
    """The ``norm_type`` norm of all ``grads`` without overflow: divided by the largest
    magnitude first (a float32 gradient of 3e38 squares to inf), NaN if any value is NaN,
    else inf if any is."""
    peaks = [float(xp.max(xp.abs(g))) for g in grads if g.size]
    if not peaks:
        return 0.0
    if any(math.isnan(m) for m in peaks):
        return math.nan
    scale = max(peaks)
    if scale == 0.0 or math.isinf(scale) or math.isinf(norm_type):
        return scale
    total = sum(float(xp.sum(xp.abs(g / g.dtype.type(scale)) ** norm_type, dtype=xp.float64))
                for g in grads)
    return scale * total ** (1.0 / norm_type)


def clip_grad_norm(
    params: Module | Iterable[Parameter], max_norm: float, error_if_nonfinite: bool = False,
    norm_type: float | str = 2.0,
) -> float:
    """Scale all gradients together so their global norm is at most ``max_norm``.

    ``norm = (sum_p sum(|g_p|^q))^(1/q)`` for ``q = norm_type`` (2 by default; ``inf``:
    the largest magnitude), computed without overflow; every gradient is multiplied by
    ``min(max_norm / (norm + 1e-6), 1)`` (PyTorch's ``clip_grad_norm_``).
    Returns the norm before clipping. A non-finite norm is used as PyTorch uses it (an inf
    norm zeroes the finite gradients and turns inf ones into NaN, a NaN norm makes them
    all NaN), unless ``error_if_nonfinite=True``: then :class:`~tinycnn.NonFiniteError` is
    raised naming the first parameter whose gradient holds NaN or inf, and nothing changes.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm needs max_norm > 0, got {max_norm}")
    q = _norm_type(norm_type)
    named = _named_grads(params)
    if not named:
        return 0.0
    grads = [p.grad for _, p in named]
    xp = backend.get_array_module(*grads)
    # One device-to-host transfer for the whole sum, not one per parameter.
    with numpy.errstate(over="ignore"):  # an overflowed power is caught just below
        if q == 2.0:
            parts = [xp.sum(xp.square(g), dtype=xp.float64) for g in grads]
            norm = float(xp.sqrt(sum(parts[1:], parts[0])))
        elif math.isinf(q):
            parts = [xp.max(xp.abs(g)).astype(xp.float64) for g in grads if g.size]
            norm = float(xp.max(xp.stack(parts))) if parts else 0.0
        else:
            parts = [xp.sum(xp.abs(g.astype(xp.float64)) ** q) for g in grads]
            norm = float(sum(parts[1:], parts[0])) ** (1.0 / q)
    if not math.isfinite(norm):  # overflowed powers, or inf/NaN gradients: look closer
        norm = _scaled_norm(grads, xp, q)
    if not math.isfinite(norm) and error_if_nonfinite:
        bad = next(n for n, p in named if not bool(xp.isfinite(p.grad).all()))
        raise NonFiniteError(
            f"clip_grad_norm: the gradient norm is {norm} (the gradient of {bad} holds "
            "NaN or inf), so it cannot be clipped; training diverged, try a lower learning "
            "rate (error_if_nonfinite=False scales by it anyway, as PyTorch does)"
        )
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0 or math.isnan(coef):
        with numpy.errstate(invalid="ignore"):  # inf * 0 is NaN, as in PyTorch
            for _, p in named:
                p.grad = p.grad * p.grad.dtype.type(coef)
    return norm


def clip_grad_value(params: Module | Iterable[Parameter], clip_value: float) -> None:
    """Clamp every gradient entry to ``[-clip_value, clip_value]`` (PyTorch's
    ``clip_grad_value_``); NaN stays NaN. ``clip_value`` must be a finite number >= 0."""
    c = _at_least_zero("clip_grad_value", "clip_value", clip_value)
    for _, p in _named_grads(params):
        p.grad = p.grad.clip(-c, c)


def l1_penalty(params: Module | Iterable[Parameter],
               strength: float) -> tuple[float, list[Any]]:
    """``(value, grads)`` of the L1 penalty ``strength * sum_p sum(|p|)``.

    ``grads[i] = strength * sign(p_i)`` (``sign(0) = 0``, the sub-gradient chosen at the
    kink) for each parameter, in the order of ``parameters()``, in the parameter's dtype
    and on its device. An optimizer built with ``l1=strength`` adds exactly these
    gradients in its ``step()``; use the value to report the regularized loss.
    """
    strength = _at_least_zero("l1_penalty", "strength", strength)
    ps = _param_list(params, "l1_penalty")
    value = 0.0
    grads = []
    for p in ps:
        xp = backend.get_array_module(p.data)
        value += strength * float(xp.sum(xp.abs(p.data), dtype=xp.float64))
        grads.append(_l1_grad(p.data, strength))
    return value, grads


def _l1_grad(data: Any, strength: float) -> Any:
    """``strength * sign(data)`` in ``data``'s dtype (one formula for step and penalty)."""
    return backend.get_array_module(data).sign(data) * data.dtype.type(strength)


def _follow_device(p: Parameter, state: dict[str, Any]) -> None:
    """Move ``state``'s arrays to ``p``'s device (the model moved after earlier steps)."""
    on_gpu = backend.is_gpu_array(p.data)
    for key, value in state.items():
        if hasattr(value, "shape") and backend.is_gpu_array(value) != on_gpu:
            state[key] = backend.to_device(value, backend.device_of(p.data))


def _fused(p: Parameter, g: Any) -> Any:
    """The CUDA kernel module when ``p`` is a CuPy array and ``g`` matches it, else ``None``."""
    if backend.is_gpu_array(p.data) and g.dtype == p.data.dtype and g.shape == p.data.shape:
        from tinycnn.fast import kernels_for

        return kernels_for(p.data)
    return None


class Optimizer:
    """Base of the optimizers: parameter bookkeeping, ``step``, ``zero_grad``, state.

    Subclasses name their hyper-parameters in ``_hyper`` and implement ``_update(p, g,
    state)``, where ``g`` already includes the L2 weight decay and the L1 sub-gradient
    ``l1 * sign(p)`` (both after ``max_grad_norm`` clipping), and ``state`` is the
    parameter's dict of arrays and counters (empty on its first step).
    """

    _hyper: tuple[str, ...] = ()

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
        l1: float = 0.0,
    ) -> None:
        name = type(self).__name__
        lr = check_hyper(name, "lr", lr)
        weight_decay = check_hyper(name, "weight_decay", weight_decay)
        max_grad_norm = check_hyper(name, "max_grad_norm", max_grad_norm)
        l1 = check_hyper(name, "l1", l1)
        self.params = _param_list(params, type(self).__name__)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_grad_norm = max_grad_norm
        self.l1 = l1
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    # the loop -------------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Set every gradient to ``None`` (the next backward starts fresh)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every trainable parameter that has a gradient, in place."""
        if self.max_grad_norm is not None:
            clip_grad_norm(self.params, self.max_grad_norm)
        for p, state in zip(self.params, self.state, strict=True):
            if not p.requires_grad or p.grad is None:
                continue
            if state:
                _follow_device(p, state)
            g = p.grad
            if self._l2_in_gradient() and self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.l1:  # skipped at 0, so the default update is PyTorch's to the bit
                g = g + _l1_grad(p.data, self.l1)
            self._update(p, g, state)

    def _l2_in_gradient(self) -> bool:
        return True

    def _update(self, p: Parameter, g: Any, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not define _update()")

    @staticmethod
    def _zeros(p: Parameter) -> Any:
        return backend.get_array_module(p.data).zeros_like(p.data)

    # checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters and per-parameter state as strings, numbers and NumPy arrays."""
        out: dict[str, Any] = {"optimizer": type(self).__name__, "num_params": len(self.params)}
        for name in ("lr", "weight_decay", "max_grad_norm", "l1", *self._hyper):
            value = getattr(self, name)
            if value is not None:
                out[name] = numpy.array(value) if isinstance(value, tuple) else value
        for i, state in enumerate(self.state):
            for key, value in state.items():
                if hasattr(value, "shape"):
                    value = numpy.array(backend.to_device(value, "cpu"))
                out[f"state.{i}.{key}"] = value
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave (also after an ``.npz`` round trip).

        State arrays take each parameter's device and dtype. Everything is checked before
        anything changes: the optimizer type, the parameter count, each state entry's
        shape and type, and the hyper-parameters (the constructor's rules, so ``lr=-5``
        is refused). On any problem it raises ``ValueError`` and loads nothing.
        """
        self._prepare_load(state)()

    def _prepare_load(self, state: dict[str, Any]) -> Callable[[], None]:
        """Check and convert ``state``; return the function that installs it (cannot fail)."""
        name = type(self).__name__
        owner = f"{name}.load_state_dict"
        kind = str(numpy.asarray(state.get("optimizer", "?")).item())
        if kind != name:
            raise ValueError(f"{owner}: the state was saved by {kind}, not by {name}")
        count = int(numpy.asarray(state.get("num_params", -1)).item())
        if count != len(self.params):
            raise ValueError(
                f"{owner}: the state is for {count} parameters, "
                f"this optimizer has {len(self.params)}"
            )
        hyper: dict[str, Any] = {}
        for key in ("lr", "weight_decay", "max_grad_norm", "l1", *self._hyper):
            if key in state:
                hyper[key] = check_hyper(owner, key, numpy.asarray(state[key]))
            elif key in ("max_grad_norm", "l1"):  # a state saved without them had none
                hyper[key] = None if key == "max_grad_norm" else 0.0
        self._check_together(owner, {**{k: getattr(self, k) for k in self._hyper}, **hyper})
        new_state: list[dict[str, Any]] = [{} for _ in self.params]
        problems = []
        for key, value in state.items():
            if not key.startswith("state."):
                continue
            _, index, field = (key.split(".", 2) + ["", ""])[:3]
            if not index.isdigit() or int(index) >= len(self.params) or not field:
                problems.append(f"{key}: not a state entry of parameter 0..{len(self.params) - 1}")
                continue
            p = self.params[int(index)]
            arr = numpy.asarray(value)
            if arr.dtype.kind not in "biuf":
                problems.append(f"{key}: expected numbers, got dtype {arr.dtype}")
            elif arr.ndim == 0 and arr.dtype.kind in "iub":
                if int(arr) < 0:
                    problems.append(f"{key}: expected a count >= 0, got {int(arr)}")
                new_state[int(index)][field] = int(arr)  # a counter such as "step"
            elif tuple(arr.shape) != tuple(p.shape):
                problems.append(f"{key}: parameter has {tuple(p.shape)}, got {tuple(arr.shape)}")
            else:
                host = arr.astype(p.dtype)
                new_state[int(index)][field] = backend.to_device(host, backend.device_of(p.data))
        settings = {**{k: getattr(self, k) for k in self._hyper}, **hyper}
        needed = self._state_fields(settings)
        for i, entries in enumerate(new_state):
            lacking = sorted(needed - set(entries))
            if entries and lacking:  # a parameter that has state has all of it
                problems.append(f"state.{i}: lacks {lacking}")
        if problems:
            raise ValueError(f"{owner} failed, nothing was loaded: " + "; ".join(problems))

        def install() -> None:
            for key, value in hyper.items():
                setattr(self, key, value)
            self.state = new_state

        return install

    def _check_together(self, owner: str, hyper: dict[str, Any]) -> None:
        """Rules between hyper-parameters (SGD's Nesterov needs momentum)."""

    def _state_fields(self, hyper: dict[str, Any]) -> set[str]:
        """The state entries ``_update`` keeps per parameter with these hyper-parameters."""
        return set()

    def __repr__(self) -> str:
        names = ("lr", "weight_decay", *(("l1",) if self.l1 else ()), *self._hyper)
        hyper = ", ".join(f"{n}={getattr(self, n)}" for n in names)
        return f"{type(self).__name__}({len(self.params)} parameters, {hyper})"


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``: ``p <- p - lr * g``.

    With ``momentum > 0``: ``b <- g`` on the first step, then
    ``b <- momentum * b + (1 - dampening) * g``; ``p <- p - lr * b``, or with Nesterov
    ``p <- p - lr * (g + momentum * b)``.
    """

    _hyper = ("momentum", "dampening", "nesterov")

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-3,
        momentum: float = 0.0,
        nesterov: bool = False,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
        l1: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay, max_grad_norm, l1=l1)
        name = type(self).__name__
        # momentum >= 0 is PyTorch's only rule; momentum >= 1 diverges, but is allowed
        self.momentum = check_hyper(name, "momentum", momentum)
        self.nesterov = check_hyper(name, "nesterov", nesterov)
        self.dampening = check_hyper(name, "dampening", dampening)
        self._check_together(name, {"momentum": self.momentum, "nesterov": self.nesterov,
                                    "dampening": self.dampening})

    def _check_together(self, owner: str, hyper: dict[str, Any]) -> None:
        if hyper["nesterov"] and (hyper["momentum"] == 0 or hyper["dampening"] != 0):
            raise ValueError(
                f"{owner}: Nesterov momentum requires momentum > 0 and dampening = 0, got "
                f"momentum={hyper['momentum']}, dampening={hyper['dampening']}"
            )

    def _state_fields(self, hyper: dict[str, Any]) -> set[str]:
        return {"momentum_buffer"} if hyper["momentum"] else set()

    def _update(self, p: Parameter, g: Any, state: dict[str, Any]) -> None:
        if self.momentum == 0:
            p.data -= self.lr * g
            return
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = g.copy()
            state["momentum_buffer"] = buf
        elif (k := _fused(p, g)) is not None:
            k.sgd_momentum_update(p.data, g, buf, self.lr, self.momentum, self.dampening,
                                  self.nesterov)
            return
        else:
            buf *= self.momentum
            buf += (1.0 - self.dampening) * g
        p.data -= self.lr * (g + self.momentum * buf if self.nesterov else buf)


class Momentum(SGD):
    """SGD with momentum (default 0.9): :class:`SGD`'s update with ``momentum > 0``."""

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-3,
        momentum: float = 0.9,
        nesterov: bool = False,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
        l1: float = 0.0,
    ) -> None:
        super().__init__(params, lr, momentum, nesterov, dampening, weight_decay, max_grad_norm,
                         l1=l1)


class AdaGrad(Optimizer):
    """AdaGrad, as ``torch.optim.Adagrad``.

    ``s <- s + g^2``, at step t ``p <- p - lr_t g / (sqrt(s) + eps)`` with
    ``lr_t = lr / (1 + (t - 1) lr_decay)`` (``lr_decay = 0``: the plain ``lr``).
    """

    _hyper = ("eps", "initial_accumulator_value", "lr_decay")

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-2,
        eps: float = 1e-10,
        initial_accumulator_value: float = 0.0,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
        lr_decay: float = 0.0,
        l1: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay, max_grad_norm, l1=l1)
        self.eps = check_hyper(type(self).__name__, "eps", eps)
        self.initial_accumulator_value = check_hyper(
            type(self).__name__, "initial_accumulator_value", initial_accumulator_value)
        self.lr_decay = check_hyper(type(self).__name__, "lr_decay", lr_decay)

    def _state_fields(self, hyper: dict[str, Any]) -> set[str]:
        return {"sum", "step"}

    def _update(self, p: Parameter, g: Any, state: dict[str, Any]) -> None:
        if "sum" not in state:
            state["sum"] = self._zeros(p) + self.initial_accumulator_value
            state["step"] = 0
        state["step"] += 1
        s = state["sum"]
        s += g * g
        xp = backend.get_array_module(p.data)
        lr = self.lr / (1.0 + (state["step"] - 1) * self.lr_decay)
        p.data -= lr * g / (xp.sqrt(s) + self.eps)


class RMSProp(Optimizer):
    """RMSProp, as ``torch.optim.RMSprop``.

    ``v <- alpha v + (1 - alpha) g^2``; ``d = sqrt(v) + eps`` (centered:
    ``sqrt(max(v - m^2, 0))`` with ``m <- m + (1 - alpha)(g - m)``); ``p <- p - lr g / d``,
    or with momentum ``b <- momentum b + g / d``, ``p <- p - lr b``.
    """

    _hyper = ("alpha", "eps", "momentum", "centered")

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
        l1: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay, max_grad_norm, l1=l1)
        name = type(self).__name__
        self.alpha = check_hyper(name, "alpha", alpha)
        self.eps = check_hyper(name, "eps", eps)
        self.momentum = check_hyper(name, "momentum", momentum)
        self.centered = check_hyper(name, "centered", centered)

    def _state_fields(self, hyper: dict[str, Any]) -> set[str]:
        return ({"square_avg", "step"} | ({"momentum_buffer"} if hyper["momentum"] else set())
                | ({"grad_avg"} if hyper["centered"] else set()))

    def _update(self, p: Parameter, g: Any, state: dict[str, Any]) -> None:
        xp = backend.get_array_module(p.data)
        if "square_avg" not in state:
            state["square_avg"] = self._zeros(p)
            state["step"] = 0
            if self.momentum > 0:
                state["momentum_buffer"] = self._zeros(p)
            if self.centered:
                state["grad_avg"] = self._zeros(p)
        state["step"] += 1
        v = state["square_avg"]
        v *= self.alpha
        v += (1.0 - self.alpha) * g * g
        if self.centered:
            m = state["grad_avg"]
            # PyTorch's lerp, m + (1 - alpha)(g - m): m reaches a constant g exactly, where
            # alpha m + (1 - alpha) g leaves m^2 a rounding above v (sqrt of a negative).
            m += (1.0 - self.alpha) * (g - m)
            # v >= m^2 holds exactly, but not always after rounding: clamp at 0, not NaN.
            denom = xp.sqrt(xp.maximum(v - m * m, 0)) + self.eps
        else:
            denom = xp.sqrt(v) + self.eps
        if self.momentum > 0:
            if "momentum_buffer" not in state:  # momentum set > 0 after earlier steps
                state["momentum_buffer"] = self._zeros(p)
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += g / denom
            p.data -= self.lr * buf
        else:
            p.data -= self.lr * g / denom


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (``weight_decay`` is L2 added to the gradient).

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, at step t:
    ``p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    ``amsgrad=True`` (Reddi et al., as PyTorch): ``v`` in the denominator is replaced by its
    running maximum ``v_max <- max(v_max, v)``, so the step size never grows.
    """

    _hyper = ("betas", "eps", "amsgrad")

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
        amsgrad: bool = False,
        l1: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay, max_grad_norm, l1=l1)
        self.betas = check_hyper(type(self).__name__, "betas", betas)
        self.eps = check_hyper(type(self).__name__, "eps", eps)
        self.amsgrad = check_hyper(type(self).__name__, "amsgrad", amsgrad)

    def _state_fields(self, hyper: dict[str, Any]) -> set[str]:
        return {"exp_avg", "exp_avg_sq", "step"} | (
            {"max_exp_avg_sq"} if hyper["amsgrad"] else set())

    def _update(self, p: Parameter, g: Any, state: dict[str, Any]) -> None:
        xp = backend.get_array_module(p.data)
        if "exp_avg" not in state:
            state["exp_avg"] = self._zeros(p)
            state["exp_avg_sq"] = self._zeros(p)
            state["step"] = 0
        if self.amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = self._zeros(p)
        state["step"] += 1
        t = state["step"]
        b1, b2 = self.betas
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if not self.amsgrad and (k := _fused(p, g)) is not None:
            k.adam_update(p.data, g, m, v, self.lr, b1, b2, self.eps, t)
            return
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * g * g
        if self.amsgrad:
            xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        # Bias corrections are Python floats, so a float32 model stays float32.
        step_size = self.lr / (1.0 - b1**t)
        denom = xp.sqrt(v) / math.sqrt(1.0 - b2**t) + self.eps
        p.data -= step_size * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    ``p <- p (1 - lr wd)`` first, then the Adam step on the plain gradient (plus
    ``l1 * sign(p)`` when ``l1 > 0``: the L1 term is not decoupled).
    """

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        max_grad_norm: float | None = None,
        amsgrad: bool = False,
        l1: float = 0.0,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, max_grad_norm, amsgrad, l1=l1)

    def _l2_in_gradient(self) -> bool:
        return False

    def _update(self, p: Parameter, g: Any, state: dict[str, Any]) -> None:
        if self.weight_decay:
            p.data *= 1.0 - self.lr * self.weight_decay
        super()._update(p, g, state)
