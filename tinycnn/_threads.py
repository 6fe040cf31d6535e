"""Thread defaults, applied at ``import tinycnn`` before NumPy (OpenBLAS) and Numba start.

A training step alternates between two thread pools on the same cores: OpenBLAS (the
matrix products) and Numba (the kernels, OpenMP threading layer by default). A pool whose
idle workers busy-wait steals the cores the other pool needs next; one that sleeps at once
pays a wake-up for every call. Measured on the 2-core VM (training step at batch 128,
medians of 3-5 fresh processes, alternating; ``python benchmarks/speed.py --threads
--nets NET`` re-measures):

* ``OMP_WAIT_POLICY=ACTIVE`` (spinning OpenMP workers): 3x-50x slower than PASSIVE
  (deep_convnet 7.2 s instead of 0.18 s), so tinycnn sets ``PASSIVE``.
* ``GOMP_SPINCOUNT=10000`` (GNU OpenMP, which Numba's ``omp`` layer uses): with PASSIVE
  alone a worker sleeps the moment a kernel ends, and the next kernel, usually a few
  microseconds of Python later, pays for waking it (a futex call, and on a VM the host
  waking a halted virtual CPU). With this count the workers spin about 0.1 ms first, far
  shorter than ACTIVE's minutes. Measured on the 2-core AMD EPYC Zen 5 VM (session 12),
  fresh processes alternating, training steps at batch 128, paired medians of 6:
  lenet5 1.15x and 1.06x (two series), resnet20 1.12x and 1.12x, deep_convnet 1.02x and
  1.05x, simple_convnet 1.03x and 1.00x faster than PASSIVE alone.
* ``OPENBLAS_THREAD_TIMEOUT`` (idle OpenBLAS workers spin for 2^N cycles, then sleep):
  N = 20 (about 0.4 ms) was the best or near it for every net: lenet5 20.5 ms, deep_convnet
  139 ms, resnet20 716 ms a step, against 34 / 227 / 869 ms with OpenBLAS's default 28
  (its workers spin through the Numba kernels that follow a product) and 23 / 142 / 722 ms
  with 4 (every product pays a wake-up), so tinycnn sets 20.
* Numba's ``omp`` layer did at least as well as ``workqueue`` (``tbb`` is not installed)
  and is safe to call from several Python threads (``workqueue`` is not), so Numba's own
  choice of layer is kept.

A value the user has already set in the environment always wins.

Order: OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` once, when NumPy is first imported. If
NumPy was imported before tinycnn, that default comes too late for the load, so
``tinycnn.accelerate`` makes OpenBLAS re-read it and restarts its idle threads
(:func:`tinycnn.fast.threads.apply_blas_timeout`): the speed does not depend on the order
of the imports. The OpenMP setting needs no repair: Numba starts OpenMP lazily.
"""

from __future__ import annotations

import os
import sys

DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "GOMP_SPINCOUNT": "10000",
    "OPENBLAS_THREAD_TIMEOUT": "20",
}

# Filled by apply_defaults(): what was set, and whether NumPy had been imported already.
status: dict[str, object] = {"applied": {}, "numpy_imported_first": False}


def apply_defaults() -> dict[str, str]:
    """Set each default that the environment does not already define; return what was set."""
    applied = {}
    for key, value in DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    status["applied"] = applied
    status["numpy_imported_first"] = "numpy" in sys.modules
    return applied


def thread_settings() -> dict[str, object]:
    """The thread-related settings in effect, for benchmark reports and bug reports."""
    keys = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")
    info: dict[str, object] = {key: os.environ.get(key) for key in keys}
    info["cpu_count"] = os.cpu_count()
    info["set_by_tinycnn"] = dict(status["applied"])  # type: ignore[arg-type]
    info["numpy_imported_before_tinycnn"] = status["numpy_imported_first"]
    from tinycnn.fast import memory, threads  # the engine's settings, same report

    info["malloc"] = dict(memory.status)
    info["openblas"] = dict(threads.blas_status)
    return info
