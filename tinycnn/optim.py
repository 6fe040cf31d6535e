"""Optimizers with PyTorch's update rules, updating ``Parameter.data`` in place.

Every optimizer takes a Module or a list of Parameters. ``step()`` updates each parameter
that is trainable (``requires_grad``) and has a gradient; ``zero_grad()`` clears the
gradients. ``lr`` is a plain attribute, so a schedule changes it between steps.

``weight_decay`` is the L2 penalty added to the gradient, ``g <- g + wd * p``, for every
optimizer but ``AdamW``, which decays the weights directly (decoupled). ``max_grad_norm``
clips the global gradient norm before each step (:func:`clip_grad_norm`).

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
from collections.abc import Iterable
from typing import Any

import numpy

from tinycnn import backend
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


def clip_grad_norm(
    params: Module | Iterable[Parameter], max_norm: float, error_if_nonfinite: bool = False
) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    ``norm = sqrt(sum_p sum(g_p^2))``; when ``norm > max_norm`` every gradient is multiplied
    by ``max_norm / (norm + 1e-6)`` (PyTorch's ``clip_grad_norm_``). Returns the norm
    before clipping. A non-finite norm leaves the gradients alone, or raises
    ``FloatingPointError`` when ``error_if_nonfinite``.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm needs max_norm > 0, got {max_norm}")
    grads = [p for p in _param_list(params, "clip_grad_norm") if p.grad is not None]
    if not grads:
        return 0.0
    xp = backend.get_array_module(*(p.grad for p in grads))
    # One device-to-host transfer for the whole sum, not one per parameter.
    squares = [xp.sum(xp.square(p.grad), dtype=xp.float64) for p in grads]
    norm = float(xp.sqrt(sum(squares[1:], squares[0])))
    if not math.isfinite(norm):
        if error_if_nonfinite:
            raise FloatingPointError(
                f"clip_grad_norm: the gradient norm is {norm}; training diverged, "
                "try a lower learning rate"
            )
        return norm
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for p in grads:
            p.grad = p.grad * coef
    return norm


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
    state)``, where ``g`` already includes the L2 weight decay and ``state`` is the
    parameter's dict of arrays and counters (empty on its first step).
    """

    _hyper: tuple[str, ...] = ()

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be >= 0, got {lr}")
        if not weight_decay >= 0:
            raise ValueError(
                f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay}"
            )
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(
                f"{type(self).__name__}: max_grad_norm must be > 0 or None, got {max_grad_norm}"
            )
        self.params = _param_list(params, type(self).__name__)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.max_grad_norm = max_grad_norm
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
        for name in ("lr", "weight_decay", "max_grad_norm", *self._hyper):
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

        State arrays take each parameter's device and dtype. Raises ``ValueError``, and
        loads nothing, when the optimizer type, the parameter count or a state array's
        shape does not match.
        """
        name = type(self).__name__
        kind = str(numpy.asarray(state.get("optimizer", "?")).item())
        if kind != name:
            raise ValueError(f"{name}.load_state_dict: the state was saved by {kind}")
        count = int(numpy.asarray(state.get("num_params", -1)).item())
        if count != len(self.params):
            raise ValueError(
                f"{name}.load_state_dict: the state is for {count} parameters, "
                f"this optimizer has {len(self.params)}"
            )
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
            if arr.ndim == 0 and arr.dtype.kind in "iub":
                new_state[int(index)][field] = arr.item()  # a counter such as "step"
            elif tuple(arr.shape) != tuple(p.shape):
                problems.append(f"{key}: parameter has {tuple(p.shape)}, got {tuple(arr.shape)}")
            else:
                host = arr.astype(p.dtype)
                new_state[int(index)][field] = backend.to_device(host, backend.device_of(p.data))
        if problems:
            raise ValueError(
                f"{name}.load_state_dict failed, nothing was loaded: " + "; ".join(problems)
            )
        for hyper in ("lr", "weight_decay", "max_grad_norm", *self._hyper):
            if hyper not in state:
                if hyper == "max_grad_norm":
                    self.max_grad_norm = None
                continue
            value = numpy.asarray(state[hyper])
            setattr(self, hyper, tuple(float(v) for v in value) if value.ndim else value.item())
        self.state = new_state

    def __repr__(self) -> str:
        hyper = ", ".join(f"{n}={getattr(self, n)}" for n in ("lr", "weight_decay", *self._hyper))
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
    ) -> None:
        super().__init__(params, lr, weight_decay, max_grad_norm)
        name = type(self).__name__
        if momentum < 0.0:  # PyTorch's only rule; momentum >= 1 diverges, but is allowed
            raise ValueError(f"{name}: momentum must be >= 0, got {momentum}")
        if nesterov and (momentum == 0 or dampening != 0):
            raise ValueError(f"{name}: Nesterov momentum requires momentum > 0 and dampening = 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.dampening = float(dampening)

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
    ) -> None:
        super().__init__(params, lr, momentum, nesterov, dampening, weight_decay, max_grad_norm)


class AdaGrad(Optimizer):
    """AdaGrad, as ``torch.optim.Adagrad``.

    ``s <- s + g^2``, ``p <- p - lr g / (sqrt(s) + eps)``.
    """

    _hyper = ("eps", "initial_accumulator_value")

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-2,
        eps: float = 1e-10,
        initial_accumulator_value: float = 0.0,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(params, lr, weight_decay, max_grad_norm)
        self.eps = float(eps)
        self.initial_accumulator_value = float(initial_accumulator_value)

    def _update(self, p: Parameter, g: Any, state: dict[str, Any]) -> None:
        if "sum" not in state:
            state["sum"] = self._zeros(p) + self.initial_accumulator_value
            state["step"] = 0
        state["step"] += 1
        s = state["sum"]
        s += g * g
        xp = backend.get_array_module(p.data)
        p.data -= self.lr * g / (xp.sqrt(s) + self.eps)


class RMSProp(Optimizer):
    """RMSProp, as ``torch.optim.RMSprop``.

    ``v <- alpha v + (1 - alpha) g^2``; ``d = sqrt(v) + eps`` (centered: ``sqrt(v - m^2)``
    with ``m <- alpha m + (1 - alpha) g``); ``p <- p - lr g / d``, or with momentum
    ``b <- momentum b + g / d``, ``p <- p - lr b``.
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
    ) -> None:
        super().__init__(params, lr, weight_decay, max_grad_norm)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"RMSProp: alpha must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.centered = bool(centered)

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
            m *= self.alpha
            m += (1.0 - self.alpha) * g
            denom = xp.sqrt(v - m * m) + self.eps
        else:
            denom = xp.sqrt(v) + self.eps
        if self.momentum > 0:
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
    """

    _hyper = ("betas", "eps")

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(params, lr, weight_decay, max_grad_norm)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)

    def _update(self, p: Parameter, g: Any, state: dict[str, Any]) -> None:
        xp = backend.get_array_module(p.data)
        if "exp_avg" not in state:
            state["exp_avg"] = self._zeros(p)
            state["exp_avg_sq"] = self._zeros(p)
            state["step"] = 0
        state["step"] += 1
        t = state["step"]
        b1, b2 = self.betas
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if (k := _fused(p, g)) is not None:
            k.adam_update(p.data, g, m, v, self.lr, b1, b2, self.eps, t)
            return
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * g * g
        # Bias corrections are Python floats, so a float32 model stays float32.
        step_size = self.lr / (1.0 - b1**t)
        denom = xp.sqrt(v) / math.sqrt(1.0 - b2**t) + self.eps
        p.data -= step_size * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    ``p <- p (1 - lr wd)`` first, then the Adam step on the plain gradient.
    """

    def __init__(
        self,
        params: Module | Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, max_grad_norm)

    def _l2_in_gradient(self) -> bool:
        return False

    def _update(self, p: Parameter, g: Any, state: dict[str, Any]) -> None:
        if self.weight_decay:
            p.data *= 1.0 - self.lr * self.weight_decay
        super()._update(p, g, state)
