"""Allocator defaults, applied by ``tinycnn.accelerate``: keep freed memory for the next step.

A training step allocates the same large arrays every time (activations, their
gradients, column matrices) and frees them again. glibc's ``malloc`` serves an array
above its *mmap threshold* with fresh pages from the kernel and gives them back on
``free``; below it, it still returns the top of the heap to the kernel once more than
the *trim threshold* is free there. Either way the next step touches new pages, one page
fault per 4 KB: SimpleConvNet at batch 128 took about 1,600 page faults per training
step (1-3 ms of a 12-16 ms step on the 2-core VM), and none with the settings below,
which keep arrays up to 32 MiB (glibc's largest mmap threshold) in the heap and keep up
to 256 MiB of freed heap for reuse. Peak memory does not grow: the arrays are the same,
only not handed back between steps (``benchmarks/speed.py`` measures ResNet-20's peak).

Applied only on Linux with glibc, and only when the environment sets none of glibc's
own malloc settings (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, malloc
entries of ``GLIBC_TUNABLES``); ``TINYCNN_MALLOC=system`` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 256 * 2**20

# Filled by apply_defaults(): what was set, or why nothing was.
status: dict[str, object] = {"applied": {}, "skipped": "no model accelerated yet"}


def _user_settings() -> str | None:
    """The environment variable through which the user already tunes malloc, if any."""
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if key in os.environ:
            return key
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    if os.environ.get("TINYCNN_MALLOC", "").lower() == "system":
        return "TINYCNN_MALLOC"
    return None


def apply_defaults() -> dict[str, int]:
    """Raise glibc's mmap and trim thresholds unless the user set either; return what was set."""
    status["applied"], status["skipped"] = {}, None
    if not sys.platform.startswith("linux"):
        status["skipped"] = "not Linux"
        return {}
    user = _user_settings()
    if user is not None:
        status["skipped"] = f"set by the user ({user})"
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        status["skipped"] = "no glibc mallopt"
        return {}
    applied = {}
    for name, param, value in (("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                               ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if mallopt(param, value) == 1:  # mallopt returns 1 on success
            applied[name] = value
    status["applied"] = applied
    return applied
