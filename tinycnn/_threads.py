"""Thread defaults, applied before NumPy (OpenBLAS) and Numba start their pools.

On a small CPU the BLAS pool and Numba's pool take turns on the same cores. Busy-waiting
workers of one pool then steal the cores the other pool needs (measured here: a training
step took 51 ms instead of 15 ms). Passive waiting and a short OpenBLAS timeout fix that.
A value the user has already set in the environment always wins.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "OPENBLAS_THREAD_TIMEOUT": "4",
}


def apply_defaults() -> dict[str, str]:
    """Set each default that the environment does not already define; return what was set."""
    applied = {}
    for key, value in DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    return applied
