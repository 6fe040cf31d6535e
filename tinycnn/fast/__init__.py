"""The acceleration engine: fast twins of the reference layers, behind one switch.

The layers in :mod:`tinycnn.layers` are the reference: their ``forward`` and ``backward``
are the math of their docstrings in plain ``xp`` code, on NumPy or CuPy. Everything that
exists only for speed lives here, and the layers never import it::

    model = tinycnn.accelerate(model)          # Conv2D, pooling, BatchNorm, ReLU: fast twins
    model = tinycnn.accelerate(model, False)   # back to the reference layers

``accelerate`` changes the class of each ``Conv2D``, ``MaxPool2D``, ``AvgPool2D``,
``BatchNorm1D/2D``, ``ReLU``, ``Sequential``, ``Residual``, ResNet block, ``RNN``, ``LSTM``
and ``GRU`` in the model to its twin (a subclass; the container twins run a
``ReLU -> MaxPool2D`` pair as one pass each way and, in eval mode, a
``Conv2D -> BatchNorm2D (-> ReLU)`` run as one convolution and a residual sum with its
ReLU as one pass (:mod:`tinycnn.fast.graph`); the recurrent twins make the input
projections of all steps one product).
A twin keeps the layer's parameters, buffers, state-dict keys, caches and name, and
computes the same results (float32 tolerance; ``tests/test_equality.py`` runs every layer
and zoo model both ways) with the Numba kernels on the CPU (:mod:`tinycnn.fast.numba_cpu`)
or the CUDA kernels on the GPU (:mod:`tinycnn.fast.cuda`). Other layers run their reference code.
Measured on a 2-core CPU, a SimpleConvNet training step runs about 5-6x faster
accelerated than in reference mode (``benchmarks/speed.py`` prints the ratio).

What switching on also does:

* ``input_grad=False`` skips dL/dx of the network's first layer (when it is a ``Conv2D``
  on a single path from the input): nothing needs the gradient of the images, and it is
  the most expensive part of that layer's backward. ``model.backward`` then returns
  ``None``. The :class:`~tinycnn.Trainer` asks for this during ``fit``; by default
  ``accelerate`` keeps every gradient, so ``model.backward`` returns what it always does.
* On Linux with glibc, the allocator keeps freed memory for the next step
  (:mod:`tinycnn.fast.memory`; ``TINYCNN_MALLOC=system`` opts out).
* OpenBLAS's idle threads follow ``OPENBLAS_THREAD_TIMEOUT`` (set at ``import tinycnn``)
  even when NumPy was imported first: their threads are restarted once if they use
  another timeout (:func:`tinycnn.fast.threads.apply_blas_timeout`).

The first call of each Numba kernel compiles it (once: the disk cache keeps it).
``precompile(model, x)`` compiles what a model's step needs on every core before that
step (:mod:`tinycnn.fast.parallel_compile`); the ``Trainer`` does it on its first batch.

``use_kernels("reference")`` is a process-wide override (also a ``with`` block): while it
is in effect, accelerated layers run their reference code. Thread settings that must
precede NumPy's import are made at ``import tinycnn`` (:mod:`tinycnn._threads`).
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

from tinycnn.backend import is_gpu_array

KERNEL_SETS = ("reference", "numba")
_state = {"kernels": "numba"}
_loaded: dict[str, ModuleType] = {}
_TWINS: dict[type, type] = {}  # reference layer class -> its fast twin


def twin_of(reference: type) -> Any:
    """Class decorator: register ``cls`` as the fast twin of the layer class ``reference``."""

    def register(cls: type) -> type:
        cls.reference = reference
        cls._name = _reference_name  # errors and repr name the layer as the user wrote it
        _TWINS[reference] = cls
        return cls

    return register


def _reference_name(self: Any) -> str:
    return type(self).reference.__name__


def _register_twins() -> None:
    """Import the modules that define twins (each registers itself with ``twin_of``)."""
    from tinycnn.fast import conv, graph, layers, recurrent  # noqa: F401


def accelerate(model: Any, enabled: bool = True, *, input_grad: bool = True) -> Any:
    """Run ``model`` with the engine's fast layers (``enabled=False``: the reference ones).

    Changes, in place, the class of every ``Conv2D``, ``MaxPool2D``, ``AvgPool2D``,
    ``BatchNorm1D/2D``, ``ReLU``, ``Sequential``, ``Residual``, ResNet block and recurrent
    layer in the model to its fast twin (or back), and returns the model. Parameters,
    buffers, state dicts and outputs stay the same (up to float rounding).
    ``input_grad=False``: the first layer, when it is a ``Conv2D``, computes no input
    gradient and ``model.backward`` returns ``None`` (training needs no gradient of the
    images). Forward caches are cleared: run a
    forward pass before the next backward.
    """
    from tinycnn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"accelerate takes a tinycnn Module (a layer or a model), got "
                        f"{type(model).__name__}")
    _register_twins()
    references = {twin: ref for ref, twin in _TWINS.items()}
    for module in model.modules():
        cls = type(module)
        if enabled and cls in _TWINS:
            module.__class__ = _TWINS[cls]
        elif not enabled and cls in references:
            module._clear_cache()  # the twin's caches first, then the layer's
            module.__class__ = references[cls]
            for key in ("input_grad", "_deferred_input", "_normalized_input"):
                module.__dict__.pop(key, None)
        else:
            continue
        module._clear_cache()
    if enabled:
        first = _first_layer(model)
        if first is not None and hasattr(type(first), "input_grad"):
            first.input_grad = bool(input_grad)
        from tinycnn.fast import memory, threads

        memory.apply_defaults()
        threads.apply_blas_timeout()
    return model


def is_accelerated(model: Any) -> bool:
    """True when any layer of ``model`` runs as a fast twin."""
    _register_twins()
    twins = tuple(_TWINS.values())
    return any(isinstance(m, twins) for m in model.modules())


def _first_layer(model: Any) -> Any:
    """The first leaf module on a single-branch path from the input, or None.

    Containers that fan out (``Residual``, ``Concat``) mean the input feeds more than one
    layer; there is no single first layer then.
    """
    from tinycnn.containers import Sequential

    m = model
    while m._modules:
        if not isinstance(m, Sequential):
            return None
        m = next(iter(m._modules.values()))
    return m


def precompile(model: Any, x: Any, *, workers: int | None = None) -> Any:
    """Compile the CPU kernels that a training step and an eval forward of ``model`` on
    ``x`` call, in parallel processes (:func:`tinycnn.fast.parallel_compile.precompile`).

    Call it before a hand-written loop's first step: on an empty Numba cache that step
    otherwise compiles its kernels one at a time on one core. Returns a report.
    """
    from tinycnn.fast.parallel_compile import precompile as compile_ahead

    return compile_ahead(model, x, workers=workers)


def use_kernels(name: str) -> _KernelSwitch:
    """Select the kernels accelerated layers run: ``"numba"`` (the default) or ``"reference"``.

    ``"reference"`` makes every accelerated layer run its reference code, process-wide.
    Works as a plain call (the choice stays) and as a context manager (restored on exit)::

        tinycnn.use_kernels("reference")
        with tinycnn.use_kernels("numba"):
            ...
    """
    if name not in KERNEL_SETS:
        raise ValueError(f"unknown kernel set {name!r}; choose one of {KERNEL_SETS}")
    previous = _state["kernels"]
    _state["kernels"] = name
    return _KernelSwitch(previous)


class _KernelSwitch:
    def __init__(self, previous: str) -> None:
        self.previous = previous

    def __enter__(self) -> _KernelSwitch:
        return self

    def __exit__(self, *exc: object) -> None:
        _state["kernels"] = self.previous


def current_kernels() -> str:
    """Name of the kernel set accelerated layers run (``"numba"`` or ``"reference"``)."""
    return _state["kernels"]


def _load(module_name: str) -> ModuleType:
    if module_name not in _loaded:
        _loaded[module_name] = importlib.import_module(f"tinycnn.fast.{module_name}")
    return _loaded[module_name]


def kernels_for(x: Any) -> ModuleType | None:
    """The kernel module for ``x``'s device, or None where the reference code should run.

    None under ``use_kernels("reference")``, and when Numba cannot be imported (then
    with a warning, once, and the selection switches to ``"reference"``).
    """
    if _state["kernels"] == "reference":
        return None
    if is_gpu_array(x):
        return _load("cuda")
    try:
        return _load("numba_cpu")
    except ImportError as exc:
        warnings.warn(
            f"the Numba kernels are unavailable ({exc}); accelerated layers run their "
            "reference code. Install numba for fast CPU training.",
            RuntimeWarning,
            stacklevel=3,
        )
        _state["kernels"] = "reference"
        return None
