"""Thread defaults set at ``import tinycnn``: set when absent, never over a user's value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tinycnn import _threads


def test_defaults_fill_only_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert _threads.apply_defaults() == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert _threads.apply_defaults() == {}
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert _threads.thread_settings()["OMP_WAIT_POLICY"] == "ACTIVE"


def test_openblas_timeout_is_left_to_openblas() -> None:
    # a shorter timeout made every matrix product pay a wake-up (see _threads' docstring)
    assert "OPENBLAS_THREAD_TIMEOUT" not in _threads.DEFAULTS


def test_import_sets_passive_in_a_fresh_process() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, tinycnn; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
