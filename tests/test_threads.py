"""Thread defaults set at ``import tinycnn``: set when absent, never over a user's value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tinycnn import _threads


def test_defaults_fill_only_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    assert _threads.apply_defaults() == {"OMP_WAIT_POLICY": "PASSIVE",
                                         "GOMP_SPINCOUNT": "10000",
                                         "OPENBLAS_THREAD_TIMEOUT": "20"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "4")
    assert _threads.apply_defaults() == {}
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["GOMP_SPINCOUNT"] == "0"
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "4"
    assert _threads.thread_settings()["OMP_WAIT_POLICY"] == "ACTIVE"
    assert _threads.thread_settings()["GOMP_SPINCOUNT"] == "0"


def test_import_sets_passive_in_a_fresh_process() -> None:
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    code = ("import os, tinycnn; print(os.environ['OMP_WAIT_POLICY'], "
            "os.environ['GOMP_SPINCOUNT'], os.environ['OPENBLAS_THREAD_TIMEOUT'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "10000", "20"]


SPIN_PROBE = """
import sys, time
import numpy
import tinycnn
from tinycnn.fast import threads

a = numpy.random.default_rng(0).random((384, 384), dtype=numpy.float32)
expected = a.astype(numpy.float64) @ a.astype(numpy.float64)


def idle_cpu_ms():
    # CPU time the process burns while its only thread sleeps just after a product:
    # OpenBLAS's idle workers spinning.
    spent = []
    for _ in range(5):
        a @ a
        t = time.process_time()
        time.sleep(0.05)
        spent.append(time.process_time() - t)
    return 1000 * sorted(spent)[2]


before = idle_cpu_ms()
tinycnn.accelerate(tinycnn.Sequential(tinycnn.ReLU()))
after = idle_cpu_ms()
product_ok = bool(numpy.allclose(a @ a, expected, rtol=1e-4))
print(before, after, threads.blas_status["thread_timeout"], threads.blas_status["restarted"],
      product_ok)
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS runs single-threaded on one core")
def test_accelerate_repairs_the_blas_timeout_when_numpy_came_first() -> None:
    """NumPy imported before tinycnn: OpenBLAS read no timeout at load, and its idle threads
    spin about 2^28 cycles after each product. ``accelerate`` makes them sleep after 2^20."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", SPIN_PROBE], env=env, capture_output=True,
                         text=True, check=True)
    before, after, timeout, restarted, product_ok = out.stdout.split()
    assert timeout == "20" and restarted == "True" and product_ok == "True", out.stdout
    assert float(after) < 10.0, f"idle OpenBLAS threads still burn {after} ms of CPU per 50 ms"
    assert float(before) > float(after), out.stdout


def test_accelerate_leaves_a_matching_blas_timeout_alone() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    code = ("import tinycnn, numpy\nfrom tinycnn.fast import threads\n"
            "tinycnn.accelerate(tinycnn.Sequential(tinycnn.ReLU()))\n"
            "print(threads.blas_status['thread_timeout'], threads.blas_status['restarted'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["20", "False"]
