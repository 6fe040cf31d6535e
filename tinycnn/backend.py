"""The one place that decides which array library runs: NumPy on the CPU, CuPy on the GPU.

Layers never import NumPy or CuPy for array math. They ask this module::

    xp = backend.get_array_module(x)   # numpy or cupy, whichever holds x

and write their math once with ``xp``, so the same lines run on both devices. Which
faster kernels run instead (Numba on the CPU, CUDA on the GPU) is the acceleration
engine's business, :mod:`tinycnn.fast`, not this module's.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy

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
    from tinycnn.info import GPU_INSTALL_HINT

    cp = _try_cupy()
    if cp is None:
        raise DeviceError(
            f"the GPU backend needs CuPy, which did not import ({_cupy_error}); install it "
            f"with: {GPU_INSTALL_HINT}"
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
