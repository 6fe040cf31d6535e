"""Thread defaults, applied at ``import tinycnn`` before Numba starts its pool.

A training step alternates between two thread pools on the same cores: OpenBLAS (the
matrix products) and Numba (the kernels, OpenMP threading layer by default). A pool whose
idle workers busy-wait steals the cores the other pool needs next. Measured on the 2-core
VM (training step at batch 128, medians of 5 fresh processes, alternating; re-measure
with ``python benchmarks/speed.py --threads --nets NET``):

* ``OMP_WAIT_POLICY=ACTIVE`` (spinning OpenMP workers): 3x-50x slower than PASSIVE
  (deep_convnet 7.2 s instead of 0.18 s), so tinycnn sets ``PASSIVE``.
* OpenBLAS's own idle timeout (``OPENBLAS_THREAD_TIMEOUT``, default 2^28 cycles) is left
  alone: shortening it to 2^4 cycles (sleep almost at once) made deep_convnet 279 instead
  of 182 ms and resnet20 1.27 instead of 0.91 s a step, because the many matrix products
  of a step each paid a wake-up; small nets moved within the noise (simple_convnet
  26.8-34.0 ms, lenet5 12.8-18.3 ms across settings).
* Numba's ``omp`` layer did at least as well as ``workqueue`` (``tbb`` is not installed)
  and is safe to call from several Python threads (``workqueue`` is not), so Numba's own
  choice of layer is kept.

A value the user has already set in the environment always wins. ``OMP_WAIT_POLICY`` is
read when Numba first starts its OpenMP pool (lazily, at the first parallel kernel), so
importing NumPy before tinycnn is fine; running a parallel Numba function of your own
before ``import tinycnn`` is not (set ``OMP_WAIT_POLICY=PASSIVE`` in the shell then).
"""

from __future__ import annotations

import os
import sys

DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",
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
    keys = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")
    info: dict[str, object] = {key: os.environ.get(key) for key in keys}
    info["cpu_count"] = os.cpu_count()
    info["set_by_tinycnn"] = dict(status["applied"])  # type: ignore[arg-type]
    info["numpy_imported_before_tinycnn"] = status["numpy_imported_first"]
    return info
