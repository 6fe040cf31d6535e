"""Shared test setup.

A test that takes an argument named ``kernel_set`` runs once per kernel set in
``tinycnn.fast.KERNEL_SETS``: it accelerates its layer (``tinycnn.accelerate``) and runs
it inside ``with tinycnn.use_kernels(kernel_set):``, so ``"reference"`` runs the layer's
own code and ``"numba"`` the engine's kernels. (Plain parametrization, not a fixture, so
it also works with hypothesis' ``@given``.)

``benchmarks/`` is put on ``sys.path`` so that tests can check its helpers (the PyTorch
twins in ``torch_nets``) and run its scripts' ``main`` on tiny inputs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tinycnn
from tinycnn.fast import KERNEL_SETS

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

def _kernel_params() -> list:
    params = []
    for name in KERNEL_SETS:
        missing = name == "numba" and importlib.util.find_spec("numba") is None
        skip = pytest.mark.skip(reason="numba is not installed (pip install numba)")
        marks = skip if missing else ()
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_set" in metafunc.fixturenames:
        metafunc.parametrize("kernel_set", _kernel_params())


@contextlib.contextmanager
def engine(kernel_set: str, *modules: Any) -> Iterator[None]:
    """Run ``modules`` accelerated with the kernel set ``kernel_set`` inside the block.

    ``"reference"`` makes the accelerated layers run their own (reference) code, so a test
    parametrized by ``kernel_set`` checks both halves with one body.
    """
    for module in modules:
        tinycnn.accelerate(module)
    with tinycnn.use_kernels(kernel_set):
        yield
