"""setuptools' build backend, except that ``pip install -e .`` also adds a plain path entry.

setuptools' editable install answers ``import tinycnn`` with an import hook that Python
asks only after its path search. Run from the folder that holds the clone (itself named
``tinycnn``), that search finds the clone's folder first and imports it as an empty
namespace package, so ``from tinycnn import Conv2D`` fails with "unknown location". A path
entry to the clone is searched in order with the others, and a real package always beats
a namespace folder. (setuptools' "compat" editable mode would add the same entry, but it is
deprecated and says so on every install.)
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every other hook unchanged)


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    # A PEP 517 backend runs in the project's root folder: the path entry to add.
    add_path_entry(Path(wheel_directory) / name, Path.cwd().resolve())
    return name


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def add_path_entry(wheel: Path, root: Path) -> None:
    """Put ``root`` first in the wheel's top-level ``.pth`` file and rewrite its RECORD."""
    with zipfile.ZipFile(wheel) as source:
        files = {info.filename: source.read(info) for info in source.infolist()}
    pth = [n for n in files if n.endswith(".pth") and "/" not in n]
    record = [n for n in files if n.endswith(".dist-info/RECORD")]
    if len(pth) != 1 or len(record) != 1:
        raise RuntimeError(f"unexpected editable wheel layout in {wheel.name}: {sorted(files)}")
    files[pth[0]] = f"{root}\n".encode() + files[pth[0]]
    lines = [_record_line(n, data) for n, data in files.items() if n != record[0]]
    files[record[0]] = ("\n".join([*lines, f"{record[0]},,"]) + "\n").encode()
    tmp = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in files.items():
            target.writestr(name, data)
    os.replace(tmp, wheel)
