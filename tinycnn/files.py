"""Atomic file writes: a reader never sees a half-written checkpoint, figure or download.

A write goes to a temp file next to the target, ``.<name>.<pid>.<random>.part``, which is
flushed to disk (fsync) and then renamed over the target, and the folder is synced so the
rename survives a power cut. A process killed mid-write leaves its temp file behind; the
next write or load of the same target removes it (:func:`remove_leftovers`).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

_active: set[str] = set()  # temp files this process is writing right now
_active_lock = threading.Lock()


def _temp_pattern(path: str) -> re.Pattern[str]:
    """Names of temp files of ``path``: this module's, and mkstemp's of earlier versions."""
    base = re.escape(os.path.basename(path))
    return re.compile(rf"^\.{base}\.(?:(\d+)\.)?[A-Za-z0-9_]+\.part$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's process, or no way to tell
        return True
    return True


def remove_leftovers(path: str | os.PathLike) -> list[str]:
    """Delete temp files that an interrupted write of ``path`` left; return their paths.

    A temp file whose writer is still running (same pid alive, or one of this process's
    writes in progress) is kept; one without a pid in its name (written by an earlier
    version) is an orphan.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    pattern = _temp_pattern(path)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match is None:
            continue
        full = os.path.join(folder, name)
        with _active_lock:
            if full in _active:
                continue
        pid = match.group(1)
        if pid is not None and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        try:
            os.remove(full)
            removed.append(full)
        except OSError:
            pass  # gone already, or not ours to remove: the write itself still works
    return removed


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the data itself is synced
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write ``path`` through a temp file in its folder, renamed into place on success.

    If the ``with`` block raises (a failed checksum, Ctrl-C, a full disk), the temp file is
    removed and ``path`` is left as it was. ``mode`` replaces mkstemp's private 0600.
    The data is fsynced before the rename and the folder after it.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                               suffix=".part")
    with _active_lock:
        _active.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        with _active_lock:
            _active.discard(tmp)
