"""Allocator defaults set by ``tinycnn.accelerate`` (glibc): freed arrays stay for the next step."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tinycnn.fast import memory as _memory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="mallopt is glibc's (Linux)")

# Three 10 MB arrays made and freed, ten times: the page faults of one round.
FAULTS = """
import resource
import tinycnn
import numpy as np
from tinycnn.fast import memory as _memory
assert _memory.status["applied"] == {}  # nothing at import
tinycnn.accelerate(tinycnn.ReLU())
def one_round():
    arrays = [np.ones(10 * 2**20 // 4, dtype=np.float32) for _ in range(3)]
    del arrays
for _ in range(3):
    one_round()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    one_round()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 10
print(faults, sorted(_memory.status["applied"]), _memory.status["skipped"])
"""


def _run(env_extra: dict[str, str]) -> list[str]:
    drop = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
            "TINYCNN_MALLOC")
    env = {k: v for k, v in os.environ.items() if k not in drop} | env_extra
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().split(" ", 1)


@linux_only
def test_accelerate_keeps_freed_arrays_for_reuse() -> None:
    """With tinycnn's settings a repeated round of large arrays takes no new pages. The
    control: with glibc told to map and unmap every array (small thresholds, so tinycnn
    leaves them alone), each round faults its pages in again (at least 15 even with 2 MB
    transparent huge pages)."""
    faults, rest = _run({})
    if "no glibc mallopt" in rest:
        pytest.skip("this Linux has no glibc mallopt (musl?)")
    assert "M_MMAP_THRESHOLD" in rest and "M_TRIM_THRESHOLD" in rest
    assert float(faults) < 5
    faults_mapped, rest_mapped = _run({"MALLOC_MMAP_THRESHOLD_": "131072",
                                       "MALLOC_TRIM_THRESHOLD_": "131072"})
    assert "set by the user" in rest_mapped
    assert float(faults_mapped) >= 10


@linux_only
@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "1000000"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"},
                                 {"TINYCNN_MALLOC": "system"}])
def test_a_users_malloc_setting_wins(env: dict[str, str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
                "TINYCNN_MALLOC"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert _memory.apply_defaults() == {}
    assert "set by the user" in str(_memory.status["skipped"])


@linux_only
def test_defaults_apply_and_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
                "TINYCNN_MALLOC"):
        monkeypatch.delenv(key, raising=False)
    applied = _memory.apply_defaults()
    if _memory.status["skipped"] == "no glibc mallopt":
        pytest.skip("this Linux has no glibc mallopt (musl?)")
    assert applied == {"M_MMAP_THRESHOLD": _memory.MMAP_THRESHOLD,
                       "M_TRIM_THRESHOLD": _memory.TRIM_THRESHOLD}
    from tinycnn._threads import thread_settings

    assert thread_settings()["malloc"]["applied"] == _memory.status["applied"]
