"""Shared test setup.

A test that takes an argument named ``kernel_set`` runs once per CPU kernel set in
``tinycnn.backend.KERNEL_SETS``; it should run its layer inside
``with tinycnn.use_kernels(kernel_set):``. Sets whose module does not exist yet are skipped.
(Plain parametrization, not a fixture, so it also works with hypothesis' ``@given``.)

``benchmarks/`` is put on ``sys.path`` so that tests can check its helpers (the PyTorch
twins in ``torch_nets``) and run its scripts' ``main`` on tiny inputs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tinycnn.backend import KERNEL_SETS

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

_KERNEL_MODULES = {"reference": "tinycnn.kernels.reference", "numba": "tinycnn.kernels.numba_cpu"}


def _kernel_params() -> list:
    params = []
    for name in KERNEL_SETS:
        module = _KERNEL_MODULES.get(name, f"tinycnn.kernels.{name}")
        missing = importlib.util.find_spec(module) is None
        marks = pytest.mark.skip(reason=f"{name} kernels not available") if missing else ()
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_set" in metafunc.fixturenames:
        metafunc.parametrize("kernel_set", _kernel_params())
