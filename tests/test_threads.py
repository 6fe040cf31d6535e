"""Thread defaults set at ``import tinycnn``: set when absent, never over a user's value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tinycnn import _threads


def test_defaults_fill_only_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    assert _threads.apply_defaults() == {"OMP_WAIT_POLICY": "PASSIVE",
                                         "OPENBLAS_THREAD_TIMEOUT": "20"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "4")
    assert _threads.apply_defaults() == {}
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "4"
    assert _threads.thread_settings()["OMP_WAIT_POLICY"] == "ACTIVE"


def test_import_sets_passive_in_a_fresh_process() -> None:
    drop = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    code = ("import os, tinycnn; print(os.environ['OMP_WAIT_POLICY'], "
            "os.environ['OPENBLAS_THREAD_TIMEOUT'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "20"]
