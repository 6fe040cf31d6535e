"""Thread defaults, applied at ``import tinycnn`` before NumPy (OpenBLAS) and Numba start.

A training step alternates between two thread pools on the same cores: OpenBLAS (the
matrix products) and Numba (the kernels, OpenMP threading layer by default). A pool whose
idle workers busy-wait steals the cores the other pool needs next. Measured on a busy
2-core VM (simple_convnet, batch 100, medians of runs alternating in fresh processes;
re-measure with ``python benchmarks/speed.py --threads``):

* ``OMP_WAIT_POLICY=ACTIVE`` (spinning OpenMP workers): about 6x slower than PASSIVE;
* ``OMP_WAIT_POLICY=PASSIVE`` with ``OPENBLAS_THREAD_TIMEOUT=4`` (OpenBLAS workers sleep
  after 2^4 cycles): the fastest. Numba's ``omp`` layer did at least as well as
  ``workqueue`` (``tbb`` was not installed), and ``omp`` is safe to call from several
  Python threads (``workqueue`` is not), so Numba's own choice of layer is kept.

A value the user has already set in the environment always wins.

Order matters: OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` once, when NumPy is first
imported. If NumPy was imported before tinycnn, that default comes too late (the OpenMP
one still applies: Numba loads OpenMP lazily). Then set it in the shell instead::

    OPENBLAS_THREAD_TIMEOUT=4 OMP_WAIT_POLICY=PASSIVE python train.py
"""

from __future__ import annotations

import os
import sys

DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "OPENBLAS_THREAD_TIMEOUT": "4",
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
