"""``Parameter`` and ``Module``: the base every layer, container and model builds on.

A module registers what it owns when it is assigned as an attribute (as in PyTorch):
``self.weight = Parameter(...)`` adds a parameter, ``self.block = Conv2D(...)`` adds a
child, ``self.register_buffer("running_mean", ...)`` adds non-trainable state that is
saved with the model. Names in ``state_dict()`` are dotted paths, exactly PyTorch's
(``features.0.weight``, ``bn1.running_var``), so a state dict moves between the two
frameworks with no reshaping.

There is no autograd. ``forward(x)`` stores on the instance what ``backward`` needs;
``backward(grad_out)`` returns the gradient with respect to the input and *adds* each
parameter's gradient into ``param.grad`` (``zero_grad()`` resets them to ``None``).

One guard stands in front of every ``backward``: ``grad_out`` must have the shape and
dtype of the output of the last forward (a gradient of another batch would otherwise
mix two batches silently, or index past the end of a compiled kernel's arrays).
:class:`Module` wraps each subclass's ``forward`` and ``backward`` for it, so no layer
repeats the check.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy

from tinycnn import backend
from tinycnn.files import atomic_write, remove_leftovers


class Parameter:
    """A trainable array and its gradient.

    ``data`` is updated in place by the optimizers; ``grad`` is ``None`` until a backward
    pass fills it. ``requires_grad = False`` freezes it: layers then skip computing its
    gradient and optimizers leave it alone.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad

    def accumulate(self, grad: Any) -> None:
        """Add ``grad`` into ``self.grad`` (gradients of a shared parameter sum)."""
        if not self.requires_grad:
            return
        if self.grad is None:
            self.grad = grad
        else:
            self.grad = self.grad + grad

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype}{frozen})"


class LayerInputError(ValueError):
    """An input that a layer cannot take: wrong rank, channels, dtype or size."""


class BackwardBeforeForwardError(RuntimeError):
    """``backward`` was called on a module that has no forward pass to differentiate."""


class Module:
    """Base class of every layer and container.

    Subclasses implement ``forward(x)`` and ``backward(grad_out)``. ``model(x)`` calls
    ``forward``. ``training`` is toggled recursively by ``train()`` / ``eval()``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _records_output(cls.__dict__["forward"])
        if "backward" in cls.__dict__:
            cls.backward = _checks_grad(cls.__dict__["backward"])

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # registration -------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ must call super().__init__() "
                "before assigning attributes"
            )
        plain = not isinstance(value, (Parameter, Module))
        if plain and name in self._buffers:
            # PyTorch: assigning an array (or None) to a buffer's name updates the buffer
            self._set_buffer(name, value)
            return
        if plain and value is not None and name in self._parameters:
            raise TypeError(
                f"{self._name()}: cannot assign {type(value).__name__} to parameter {name!r} "
                "(a Parameter or None expected); to change its values, assign to "
                f"{name}.data or use load_state_dict"
            )
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        # a deleted parameter, buffer or child leaves the parameters and the state dict too
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: Any) -> None:
        """Keep ``value`` as saved, non-trainable state (e.g. BatchNorm's running mean)."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def _set_buffer(self, name: str, value: Any) -> None:
        """Replace a registered buffer's array (used by layers that update statistics)."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    # running ------------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, grad_out: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def _need_cache(self, *values: Any) -> None:
        """Raise a clear error when backward runs with nothing cached by forward."""
        if any(v is None for v in values):
            raise BackwardBeforeForwardError(
                f"{self._name()}.backward() called before forward(): "
                "run a forward pass (in training or eval mode) first"
            )

    def _name(self) -> str:
        return type(self).__name__

    # traversal ----------------------------------------------------------------------
    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def named_modules(
        self, prefix: str = "", _seen: set[int] | None = None
    ) -> Iterator[tuple[str, Module]]:
        """Every module in the tree, this one first, with its dotted name; each once (a
        module reached twice is listed at its first name, as in PyTorch)."""
        seen = set() if _seen is None else _seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name, seen)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted_name, Parameter)`` for every parameter in the tree, each once."""
        seen: set[int] = set()
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self) -> list[Parameter]:
        """All parameters of the tree (frozen ones included), each once."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for mod_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                yield (f"{mod_name}.{name}" if mod_name else name), b

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # modes --------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every child; returns ``self``."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Evaluation mode: BatchNorm uses running statistics, Dropout passes through."""
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def freeze(self) -> Module:
        """Stop training every parameter below this module (transfer learning)."""
        for p in self.parameters():
            p.requires_grad = False
        return self

    def unfreeze(self) -> Module:
        for p in self.parameters():
            p.requires_grad = True
        return self

    # devices and dtypes ---------------------------------------------------------------
    def to(self, device: str) -> Module:
        """Move parameters, gradients and buffers to ``"cpu"`` or ``"gpu"``; returns ``self``."""
        device = backend.check_device(device)
        if device == "gpu":
            backend.require_gpu()  # fail clearly even for a module with no arrays to move
        for m in self.modules():
            for p in m._parameters.values():
                p.data = backend.to_device(p.data, device)
                p.grad = backend.to_device(p.grad, device)
            for name, b in list(m._buffers.items()):
                m._set_buffer(name, backend.to_device(b, device))
            m._clear_cache()
        return self

    def astype(self, dtype: Any) -> Module:
        """Cast parameters and floating buffers to ``dtype`` (float64 for gradient checks)."""
        for m in self.modules():
            for p in m._parameters.values():
                p.data = p.data.astype(dtype)
                p.grad = None
            for name, b in list(m._buffers.items()):
                if b is not None and b.dtype.kind == "f":
                    m._set_buffer(name, b.astype(dtype))
            m._clear_cache()
        return self

    def _clear_cache(self) -> None:
        """Drop arrays cached by forward (they may live on the old device or dtype)."""

    @property
    def device(self) -> str:
        for p in self.parameters():
            return backend.device_of(p.data)
        for _, b in self.named_buffers():
            return backend.device_of(b)
        return "cpu"

    # state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Parameters and buffers by dotted name, as host (NumPy) copies.

        PyTorch's order and keys: module by module, its parameters then its buffers; a
        parameter shared by two modules appears under both names (so the dict loads back
        strictly); ``None`` buffers are left out.
        """
        state: dict[str, Any] = {}
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            for name, p in module._parameters.items():
                state[prefix + name] = numpy.array(backend.to_device(p.data, "cpu"))
            for name, b in module._buffers.items():
                if b is not None:
                    state[prefix + name] = numpy.array(backend.to_device(b, "cpu"))
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays from ``state`` into the model, keeping its device and dtype.

        Everything is checked and converted first: unknown keys, missing keys (when
        ``strict``), shape mismatches and values that cannot become the model's dtype
        (text, objects, complex numbers; fractions for an integer buffer) are listed
        together in one :class:`StateDictError` (a ``RuntimeError``, as in PyTorch, and a
        ``KeyError``), and nothing is loaded in that case. NaN and inf are values like any
        other. Extra keys such as PyTorch's ``num_batches_tracked`` are ignored when
        ``strict=False``.
        """
        self._prepare_load(state, strict)()

    def _prepare_load(self, state: dict[str, Any], strict: bool = True) -> Callable[[], None]:
        """Check and convert all of ``state``; return the function that installs it.

        The returned function only assigns ready arrays, so it cannot fail halfway: a
        caller (the Trainer's checkpoint loading) checks every part before changing any.
        """
        targets: dict[str, tuple[Module, str, bool]] = {}
        for mod_name, module in self.named_modules():
            for name in module._parameters:
                targets[f"{mod_name}.{name}" if mod_name else name] = (module, name, True)
            for name, b in module._buffers.items():
                if b is not None:
                    targets[f"{mod_name}.{name}" if mod_name else name] = (module, name, False)
        unexpected = sorted(k for k in state if k not in targets)
        missing = sorted(k for k in targets if k not in state)
        mismatched, unusable = [], []
        ready: dict[str, Any] = {}
        for key, (module, name, is_param) in targets.items():
            if key not in state:
                continue
            current = module._parameters[name].data if is_param else module._buffers[name]
            value, why = _as_host_array(state[key])
            if value is None:
                unusable.append(f"{key}: {why}")
                continue
            if tuple(current.shape) != tuple(value.shape):
                mismatched.append(f"{key}: model has {tuple(current.shape)}, "
                                  f"got {tuple(value.shape)}")
                continue
            why = _cast_problem(value, current.dtype)
            if why:
                unusable.append(f"{key}: {why}")
                continue
            with numpy.errstate(over="ignore", invalid="ignore"):  # inf/NaN load as they are
                host = numpy.array(value, dtype=current.dtype, copy=True)
            ready[key] = backend.to_device(host, backend.device_of(current))
        problems = []
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(mismatched))
        if unusable:
            problems.append("values of the wrong type: " + "; ".join(unusable))
        if problems:
            raise StateDictError(
                f"load_state_dict into {self._name()} failed, nothing was loaded. "
                + " | ".join(problems)
            )

        def install() -> None:
            for key, value in ready.items():
                module, name, is_param = targets[key]
                if is_param:
                    module._parameters[name].data = value
                else:
                    module._set_buffer(name, value)

        return install

    def save(self, path: str | os.PathLike) -> None:
        """Write the state dict to an ``.npz`` file atomically (temp file, then rename)."""
        save_arrays(path, self.state_dict())

    def load(self, path: str | os.PathLike, strict: bool = True) -> Module:
        """Load a state dict saved by :meth:`save`; pickles are never loaded."""
        remove_leftovers(path)  # the temp file of a save that was killed
        with numpy.load(os.fspath(path), allow_pickle=False) as f:
            self.load_state_dict({k: f[k] for k in f.files}, strict=strict)
        return self

    def macs(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        """Multiply-adds of one forward pass for these shapes (0 unless a layer says so).

        Containers report 0 themselves; :func:`tinycnn.summary` adds up their leaves.
        """
        return 0

    # printing -----------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{self._name()}({self.extra_repr()}"]
        children = list(self._modules.items())
        if not children:
            return lines[0] + ")"
        for name, child in children:
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return "\n".join(lines) + "\n)"


class _ArrayMeta(NamedTuple):
    shape: tuple[int, ...]
    dtype: Any


def _output_meta(out: Any) -> Any:
    """Shape and dtype of an array output, a tuple of them for a tuple, else None."""
    if hasattr(out, "shape") and hasattr(out, "dtype"):
        return _ArrayMeta(tuple(out.shape), out.dtype)
    if isinstance(out, tuple):
        return tuple(_output_meta(o) for o in out)
    return None


def _records_output(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward``, also noting the output's shape and dtype for the check in backward."""
    if getattr(forward, "_records_output", False):
        return forward

    @functools.wraps(forward)
    def forward_and_note_output(self: Module, *args: Any, **kwargs: Any) -> Any:
        out = forward(self, *args, **kwargs)  # a super().forward inside notes first
        object.__setattr__(self, "_out_meta", _output_meta(out))
        return out

    forward_and_note_output._records_output = True  # type: ignore[attr-defined]
    return forward_and_note_output


def _checks_grad(backward: Callable[..., Any]) -> Callable[..., Any]:
    """``backward``, first checking ``grad_out`` against the last forward's output."""
    if getattr(backward, "_checks_grad", False):
        return backward

    @functools.wraps(backward)
    def check_grad_then_backward(self: Module, grad_out: Any, *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get("_in_backward"):  # a subclass's backward calling super().backward
            return backward(self, grad_out, *args, **kwargs)
        grad_out = _check_grad(self, grad_out, self.__dict__.get("_out_meta"))
        object.__setattr__(self, "_in_backward", True)
        try:
            return backward(self, grad_out, *args, **kwargs)
        finally:
            object.__setattr__(self, "_in_backward", False)

    check_grad_then_backward._checks_grad = True  # type: ignore[attr-defined]
    return check_grad_then_backward


def _check_grad(module: Module, grad: Any, meta: Any, which: str = "") -> Any:
    """``grad`` in the dtype of the output ``meta``, or :class:`LayerInputError` when it
    does not fit (another shape, not floating point, another device).

    A floating gradient of another precision is cast to the output's, as PyTorch does.
    Tuple outputs (nested ones too, such as an LSTM's ``(out, (h, c))``) take a tuple of
    gradients of the same structure; ``None`` stands for an output that was not used.
    """
    if meta is None or grad is None:  # no forward yet (the layer says so), or unused
        return grad
    name = f"{module._name()}.backward"
    if isinstance(meta, _ArrayMeta):
        return _check_one_grad(module, name, grad, meta, which)
    if not isinstance(grad, (tuple, list)) or len(grad) != len(meta):
        raise LayerInputError(
            f"{name} expected a tuple of {len(meta)} gradients{which}, one per output of the "
            f"last forward, got {type(grad).__name__}"
        )
    checked = [_check_grad(module, g, m, f"{which} (output {i})")
               for i, (g, m) in enumerate(zip(grad, meta, strict=True))]
    if hasattr(grad, "_fields"):  # a named tuple, such as GoogLeNet's outputs
        return type(grad)(*checked)
    return tuple(checked) if isinstance(grad, tuple) else checked


def _check_one_grad(module: Module, name: str, g: Any, m: _ArrayMeta, which: str) -> Any:
    if m.shape == () and isinstance(g, (int, float)) and not isinstance(g, bool):
        g = numpy.asarray(g, dtype=m.dtype)  # a scalar output's gradient, such as 1.0
    if isinstance(g, (tuple, list)):
        raise LayerInputError(
            f"{name} expected one gradient array of shape {m.shape}{which}: the last forward "
            f"returned one output, got a {type(g).__name__} of {len(g)}"
        )
    if not hasattr(g, "shape") or not hasattr(g, "dtype"):
        raise LayerInputError(
            f"{name} expected a gradient array of shape {m.shape}{which}, got {type(g).__name__}"
        )
    if tuple(g.shape) != m.shape:
        raise LayerInputError(
            f"{name} expected a gradient of shape {m.shape}{which}, the shape of the last "
            f"forward's output, got {tuple(g.shape)}"
        )
    if g.dtype.kind != "f":
        raise LayerInputError(
            f"{name} expected a floating-point gradient{which} (dtype {m.dtype}), "
            f"got dtype {g.dtype}"
        )
    _check_device(module, g)
    return g if g.dtype == m.dtype else g.astype(m.dtype)


def _as_host_array(value: Any) -> tuple[Any, str]:
    """``(NumPy array, "")`` for a state value, or ``(None, why it is not one)``."""
    if backend.is_gpu_array(value):
        value = backend.to_device(value, "cpu")
    try:
        return numpy.asarray(value), ""
    except (ValueError, TypeError) as exc:
        return None, f"expected an array of numbers, got {type(value).__name__} ({exc})"


def _cast_problem(value: Any, dtype: Any) -> str:
    """Why ``value`` cannot become ``dtype`` without losing its meaning ("" when it can)."""
    kind = numpy.dtype(dtype).kind
    if value.dtype.kind not in "biuf":
        return f"expected numbers for {numpy.dtype(dtype)}, got dtype {value.dtype}"
    if kind in "iu" and value.dtype.kind == "f":
        # PyTorch's num_batches_tracked may come as a float: whole numbers are fine
        if not bool(numpy.all(numpy.isfinite(value) & (numpy.round(value) == value))):
            return f"expected whole numbers for {numpy.dtype(dtype)}, got fractions or inf/NaN"
    return ""


def save_arrays(path: str | os.PathLike, arrays: dict[str, Any]) -> None:
    """``numpy.savez`` written atomically (temp file in the target folder, then rename)."""
    with atomic_write(path) as f:
        numpy.savez(f, **arrays)


class StateDictError(RuntimeError, KeyError):
    """A state dict that does not fit the model: PyTorch raises ``RuntimeError`` here.

    Also a ``KeyError``, so code written for missing keys still catches it.
    """

    __str__ = BaseException.__str__  # KeyError's own __str__ would quote the message


def check_input(
    layer: Module,
    x: Any,
    ndim: int | tuple[int, ...],
    layout: str,
    channels: int | None = None,
    channel_axis: int = 1,
    what: str = "channels",
) -> None:
    """Validate a layer input and raise :class:`LayerInputError` naming the layer.

    ``layout`` names the expected shape for the message, e.g. ``"(N, C, H, W)"``.
    """
    name = layer._name()
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise LayerInputError(f"{name} expected an array {layout}, got {type(x).__name__}")
    _check_device(layer, x)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in dims:
        raise LayerInputError(
            f"{name} expected a {' or '.join(map(str, dims))}-D input {layout}, "
            f"got shape {tuple(x.shape)}"
        )
    if x.dtype not in _FLOAT_DTYPES:  # float16 or longdouble would reach the kernels
        raise LayerInputError(
            f"{name} expected a floating-point input (float32 or float64), got dtype {x.dtype}"
        )
    if channels is not None and x.shape[channel_axis] != channels:
        raise LayerInputError(
            f"{name} expected {channels} {what} on axis {channel_axis} of {layout}, "
            f"got {x.shape[channel_axis]} (input shape {tuple(x.shape)})"
        )


_FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))

_DEVICE_WORDS = {"cpu": "the CPU (a NumPy array)", "gpu": "the GPU (a CuPy array)"}


def _check_device(layer: Module, x: Any) -> None:
    """Raise :class:`~tinycnn.backend.DeviceError` when ``x`` and the layer's arrays differ.

    Only the layer's own first parameter (else first buffer) is compared, one type check
    per call; a layer without arrays (ReLU, a container) accepts either device.
    """
    held = next(iter(layer._parameters.values()), None)
    ref = held.data if held is not None else next(
        (b for b in layer._buffers.values() if hasattr(b, "shape")), None
    )
    if ref is None or backend.is_gpu_array(ref) == backend.is_gpu_array(x):
        return
    got, want = backend.device_of(x), backend.device_of(ref)
    raise backend.DeviceError(
        f"{layer._name()} got an input on {_DEVICE_WORDS[got]} but its parameters are on "
        f"{_DEVICE_WORDS[want]}; move the batch with tinycnn.backend.to_device(x, {want!r}) "
        f"or the model with model.to({got!r})"
    )
