"""Threads and BLAS for the engine: per-image work split over cores, and BLAS calls.

Exists only for speed; the layers never use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy

from tinycnn.backend import get_array_module, is_gpu_array


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


_blas: dict[str, Any] = {}
_pool: dict[int, ThreadPoolExecutor] = {}
IMAGE_THREADS = "tinycnn-images"  # the pool's thread names start with this


def _openblas_library() -> Any:
    """The OpenBLAS that NumPy loaded (``ctypes.CDLL``), or None for another BLAS."""
    if "lib" not in _blas:
        _blas["lib"] = None
        root = os.path.dirname(numpy.__file__)
        candidates = [*glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*openblas*")),
                      *glob.glob(os.path.join(root, ".dylibs", "*openblas*"))]
        for path in candidates:
            try:
                _blas["lib"] = ctypes.CDLL(path)
                break
            except OSError:
                continue
    return _blas["lib"]


# Filled by apply_blas_timeout(): what OpenBLAS's idle threads do, and why.
blas_status: dict[str, object] = {"thread_timeout": None, "restarted": False}


def apply_blas_timeout() -> dict[str, object]:
    """Make OpenBLAS's idle threads use ``OPENBLAS_THREAD_TIMEOUT`` even if NumPy came first.

    OpenBLAS reads the variable once, when NumPy loads it: ``import tinycnn`` sets it
    (:mod:`tinycnn._threads`), too late when the user imported NumPy first. Then OpenBLAS's
    workers spin about 2^28 cycles after every product, through the Numba kernels that
    follow, and a training step slows down by a quarter or more (deep_convnet and resnet20
    on the 2-core machines). OpenBLAS exports what it needs to re-read its environment
    (``openblas_read_env``) and to stop its threads (``blas_thread_shutdown_``, made for
    ``fork``); the next product starts them again with the new timeout. Called by
    ``accelerate``, between products (a restart during another thread's product would
    disturb it). Nothing happens when the timeout OpenBLAS uses is already the one set, or
    when NumPy uses another BLAS.
    """
    lib = _openblas_library()
    wanted = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    read = getattr(lib, "openblas_thread_timeout", None)
    reread = getattr(lib, "openblas_read_env", None)
    shutdown = getattr(lib, "blas_thread_shutdown_", None)
    if read is None or reread is None or shutdown is None or wanted is None:
        blas_status["thread_timeout"] = None
        return blas_status
    read.restype = ctypes.c_int
    if str(read()) != wanted.strip():
        reread()
        shutdown()
        blas_status["restarted"] = True
    blas_status["thread_timeout"] = read()
    return blas_status


def _openblas_threads_api() -> tuple[Any, Any] | None:
    """``(set_num_threads, get_num_threads)`` of the OpenBLAS that NumPy loaded, or None.

    NumPy's wheels bundle it (``numpy.libs/libscipy_openblas*``); NumPy built against
    another BLAS (MKL, Accelerate) gives None, and the caller does not split.
    """
    if "api" not in _blas:
        _blas["api"] = None
        lib = _openblas_library()
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""),
                               ("openblas_", "64_"), ("openblas_", "")):
            setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
            getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.restype = ctypes.c_int
                _blas["api"] = (setter, getter)
                break
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


def split_images(n: int, work: Callable[[int, int, Any], None], k: Any,
                 split: bool = True) -> None:
    """Run ``work(lo, hi, k)`` over the images ``[0, n)``: one contiguous range per thread.

    On the CPU with the Numba kernels, each of Numba's threads gets its own range of
    images and runs everything for it, column matrix, matrix product and crop, with
    single-threaded BLAS and the single-threaded kernels ``k = numba_cpu.serial``: the
    data stay in that core's cache, and no pool is woken for each small step (measured
    faster than parallelizing every small kernel and product across both cores). ``work``
    allocates its own buffers. Otherwise (``split=False``, GPU kernels ``k``, one thread, a
    BLAS that cannot be limited) it is one call ``work(0, n, k)``.
    """
    count = min(n, k.threads()) if split and hasattr(k, "serial") else 1
    if count <= 1 or _openblas_threads_api() is None:
        work(0, n, k)
        return
    if count not in _pool:
        _pool[count] = ThreadPoolExecutor(count - 1, thread_name_prefix=IMAGE_THREADS)
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
