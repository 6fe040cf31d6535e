"""Atomic writes: fsync before the rename, and no orphan temp files after a killed write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycnn import files
from tinycnn.files import atomic_write, remove_leftovers
from tinycnn.module import save_arrays

ROOT = Path(__file__).resolve().parents[1]


def _killed_write(target: Path) -> list[Path]:
    """Start a write of ``target`` in a child process that dies inside it (as kill -9 does,
    no cleanup runs); return the temp files it left."""
    code = (
        "import os, sys\n"
        "from tinycnn.files import atomic_write\n"
        "with atomic_write(sys.argv[1]) as f:\n"
        "    f.write(b'half a checkpoint')\n"
        "    os._exit(9)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(target)], cwd=ROOT)
    assert done.returncode == 9
    return sorted(target.parent.glob(f".{target.name}.*.part"))


def test_a_killed_write_leaves_a_leftover_that_the_next_write_removes(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.npz"
    save_arrays(target, {"a": np.arange(3)})
    leftovers = _killed_write(target)
    assert len(leftovers) == 1  # the simulated kill really left one
    with np.load(target) as f:  # and the target is still the old, whole file
        np.testing.assert_array_equal(f["a"], np.arange(3))
    save_arrays(target, {"a": np.arange(4)})
    assert not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


def test_leftovers_of_an_older_version_and_of_dead_writers_go(tmp_path: Path) -> None:
    target = tmp_path / "model.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    old_style = tmp_path / ".model.npz.k2j4_x9a.part"  # mkstemp name, no pid
    of_dead = tmp_path / f".model.npz.{dead.stdout.strip()}.ab12cd.part"
    other_target = tmp_path / ".model.npz.json.ab12cd.part"  # another file's temp: kept
    for p in (old_style, of_dead, other_target):
        p.write_bytes(b"x")
    removed = remove_leftovers(target)
    assert sorted(removed) == sorted([str(old_style), str(of_dead)])
    assert other_target.exists()


def test_a_running_writer_keeps_its_temp_file(tmp_path: Path) -> None:
    """Another process writing the same target right now: its temp file is not touched."""
    target = tmp_path / "model.npz"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f".model.npz.{writer.pid}.ab12cd.part"
        live.write_bytes(b"x")
        with atomic_write(target) as f:  # our own temp file, open right now, stays too
            f.write(b"new")
            assert remove_leftovers(target) == []
        assert live.exists() and target.read_bytes() == b"new"
    finally:
        writer.kill()
        writer.wait()


def test_data_and_folder_are_fsynced_before_and_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    with atomic_write(tmp_path / "x.bin") as f:
        f.write(b"data")
    if sys.platform.startswith("linux"):
        assert events == ["fsync-file", "rename", "fsync-dir"]
    else:
        assert events[:2] == ["fsync-file", "rename"]
    assert (tmp_path / "x.bin").read_bytes() == b"data"


def test_a_failed_write_leaves_the_target_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as f:
        f.write(b"partial")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
