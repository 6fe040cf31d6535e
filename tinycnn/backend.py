"""The one place that decides which array library and which kernels run.

Layers never import NumPy or CuPy for array math. They ask this module:

    xp = backend.get_array_module(x)   # numpy or cupy, whichever holds x
    k = backend.kernels(x)             # im2col, pooling, ... for x's device

CPU kernels come in two sets with identical signatures:

* ``"reference"``: plain NumPy in :mod:`tinycnn.kernels.reference`, slow and obvious,
  the test oracle and the notebooks' teaching version;
* ``"numba"``: Numba-jitted kernels in :mod:`tinycnn.kernels.numba_cpu`, the default
  (falls back to ``"reference"`` with a warning when Numba does not import).

``use_kernels("reference")`` switches at run time (also as a ``with`` block).
CuPy arrays always get the CUDA kernels in :mod:`tinycnn.kernels.cuda`.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from types import ModuleType
from typing import Any

import numpy

KERNEL_SETS = ("reference", "numba")
# The fast set is the default; kernels() falls back to "reference", with a warning, when
# Numba cannot be imported.
_state = {"kernels": "numba"}
_loaded: dict[str, ModuleType] = {}
_cupy: ModuleType | None = None
_cupy_error: str | None = None


class DeviceError(RuntimeError):
    """Arrays on different devices met, or the GPU was asked for and is not usable."""


def _try_cupy() -> ModuleType | None:
    """Import CuPy on first need; importing tinycnn never requires it."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            _cupy = importlib.import_module("cupy")
        except Exception as exc:  # ImportError, or a CUDA library that fails to load
            _cupy_error = f"{type(exc).__name__}: {exc}"
    return _cupy


def is_gpu_array(x: Any) -> bool:
    """True for a CuPy array. Checked by type name, so CuPy is never imported for it."""
    return type(x).__module__.startswith("cupy")


def get_array_module(*arrays: Any) -> ModuleType:
    """``numpy`` or ``cupy``: the library that holds the given arrays.

    Raises :class:`DeviceError` when NumPy and CuPy arrays are mixed, instead of letting
    a silent host-device copy happen on every step.
    """
    on_gpu = [is_gpu_array(a) for a in arrays if a is not None and hasattr(a, "shape")]
    if any(on_gpu):
        if not all(on_gpu):
            raise DeviceError(
                "arrays on different devices: some are on 'gpu' (CuPy) and some on 'cpu' "
                "(NumPy); move the model and the data to one device with .to(...)"
            )
        return _try_cupy()
    return numpy


def device_of(x: Any) -> str:
    """``"gpu"`` for a CuPy array, ``"cpu"`` otherwise."""
    return "gpu" if is_gpu_array(x) else "cpu"


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    cp = _try_cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def require_gpu() -> ModuleType:
    """Return CuPy, or raise a clear :class:`DeviceError` saying why the GPU is unusable."""
    cp = _try_cupy()
    if cp is None:
        raise DeviceError(
            "the GPU backend needs CuPy, which did not import "
            f"({_cupy_error}); install it with: pip install 'tinycnn[gpu]' (CUDA 12) "
            "or 'tinycnn[gpu-cuda13]' (CUDA 13)"
        )
    if not gpu_available():
        raise DeviceError("CuPy is installed but no CUDA GPU is visible to it")
    return cp


def check_device(device: str) -> str:
    """Normalize a device name: ``"cpu"`` or ``"gpu"`` (``"cuda"`` is accepted as ``"gpu"``)."""
    name = str(device).lower()
    if name in ("cuda", "gpu") or name.startswith("cuda:"):
        return "gpu"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'gpu'")


def to_device(x: Any, device: str) -> Any:
    """Copy an array to ``device`` (``"cpu"`` or ``"gpu"``); a no-op when it is already there."""
    device = check_device(device)
    if x is None:
        return None
    if device == "gpu":
        cp = require_gpu()
        return x if is_gpu_array(x) else cp.asarray(x)
    return x.get() if is_gpu_array(x) else numpy.asarray(x)


def xp_for(device: str) -> ModuleType:
    """The array module for a device name."""
    return require_gpu() if check_device(device) == "gpu" else numpy


def use_kernels(name: str) -> _KernelSwitch:
    """Select the CPU kernel set, ``"reference"`` or ``"numba"``.

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
    """Name of the CPU kernel set in use."""
    return _state["kernels"]


def _load(module_name: str) -> ModuleType:
    if module_name not in _loaded:
        _loaded[module_name] = importlib.import_module(f"tinycnn.kernels.{module_name}")
    return _loaded[module_name]


def kernels(x: Any = None) -> ModuleType:
    """The kernel module for ``x``'s device and the selected CPU kernel set.

    Every kernel module exposes the same functions as :mod:`tinycnn.kernels.reference`.
    If Numba cannot be imported, the reference kernels are used instead (with a warning,
    once) and the selection switches to ``"reference"``.
    """
    if x is not None and is_gpu_array(x):
        return _load("cuda")
    if _state["kernels"] == "numba":
        try:
            return _load("numba_cpu")
        except ImportError as exc:
            warnings.warn(
                f"the Numba kernels are unavailable ({exc}); tinycnn falls back to the slow "
                "reference NumPy kernels. Install numba for fast CPU training.",
                RuntimeWarning,
                stacklevel=2,
            )
            _state["kernels"] = "reference"
    return _load("reference")


def matmul(a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b`` where either operand may be a stack of matrices ``(n, ., .)``.

    On the GPU this is ``cupy.matmul`` (cuBLAS batched). On the CPU, NumPy 2.4 sends
    stacked float32 products with these shapes to its own loop instead of BLAS, measured
    10-50x slower (16x144 @ 8x144x900: 17 ms instead of 0.35 ms), so each matrix of the
    stack is one 2-D BLAS call.
    """
    if is_gpu_array(a) or is_gpu_array(b) or (a.ndim == 2 and b.ndim == 2):
        return get_array_module(a, b).matmul(a, b, out=out)
    n = a.shape[0] if a.ndim == 3 else b.shape[0]
    if out is None:
        out = numpy.empty((n, a.shape[-2], b.shape[-1]), dtype=numpy.result_type(a, b))
    for i in range(n):
        numpy.matmul(a[i] if a.ndim == 3 else a, b[i] if b.ndim == 3 else b, out=out[i])
    return out


def matmul_sum(a: Any, b: Any, out: Any) -> Any:
    """``out += sum_i a[i] @ b[i]`` for stacks ``a (n, p, q)`` and ``b (n, q, r)``.

    The weight gradient of a convolution summed over images; on the CPU one BLAS call per
    image adds into ``out`` (no ``(n, p, r)`` temporary), see :func:`matmul`.
    """
    if is_gpu_array(a):
        out += (a @ b).sum(axis=0)
        return out
    for i in range(a.shape[0]):
        out += a[i] @ b[i]
    return out


# ------------------------------------------------- splitting a convolution's images over threads

_blas: dict[str, Any] = {}
_pool: dict[int, ThreadPoolExecutor] = {}


def _openblas_threads_api() -> tuple[Any, Any] | None:
    """``(set_num_threads, get_num_threads)`` of the OpenBLAS that NumPy loaded, or None.

    NumPy's wheels bundle it (``numpy.libs/libscipy_openblas*``); NumPy built against
    another BLAS (MKL, Accelerate) gives None, and the caller does not split.
    """
    if "api" not in _blas:
        _blas["api"] = None
        root = os.path.dirname(numpy.__file__)
        candidates = [*glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*openblas*")),
                      *glob.glob(os.path.join(root, ".dylibs", "*openblas*"))]
        for path in candidates:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""),
                                   ("openblas_", "64_"), ("openblas_", "")):
                setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.restype = ctypes.c_int
                    _blas["api"] = (setter, getter)
                    return _blas["api"]
    return _blas["api"]


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    setter, getter = _openblas_threads_api()  # type: ignore[misc]
    before = getter()
    setter(1)
    try:
        yield
    finally:
        setter(before)


def split_images(n: int, work: Callable[[int, int, Any], None], x: Any,
                 split: bool = True) -> None:
    """Run ``work(lo, hi, k)`` over the images ``[0, n)``: one contiguous range per thread.

    On the CPU with the Numba kernels, each of Numba's threads gets its own range of
    images and runs everything for it, column matrix, matrix product and crop, with
    single-threaded BLAS and the single-threaded kernels ``k = numba_cpu.serial``: the
    data stay in that core's cache, and no pool is woken for each small step (measured
    faster than parallelizing every small kernel and product across both cores). ``work``
    allocates its own buffers. Otherwise (``split=False``, reference kernels, GPU, one
    thread, a BLAS that cannot be limited) it is one call ``work(0, n, kernels(x))``.
    """
    k = kernels(x)
    count = min(n, k.threads()) if split and hasattr(k, "serial") else 1
    if count <= 1 or _openblas_threads_api() is None:
        work(0, n, k)
        return
    if count not in _pool:
        _pool[count] = ThreadPoolExecutor(count - 1, thread_name_prefix="tinycnn-images")
    bounds = [n * t // count for t in range(count + 1)]
    with _single_threaded_blas():
        futures = [_pool[count].submit(work, lo, hi, k.serial)
                   for lo, hi in zip(bounds[1:-1], bounds[2:], strict=True)]
        try:
            work(bounds[0], bounds[1], k.serial)  # the first range in this thread
        finally:
            wait(futures)  # every range is done before BLAS gets its threads back
    for f in futures:
        f.result()  # re-raise a worker's exception here
