"""Packaging: the SPDX license, and editable installs that a folder named tinycnn cannot hide."""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression_with_its_file() -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["license"] == "MIT"
    assert config["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "setuptools>=77" in config["build-system"]["requires"]  # reads the SPDX form


def _editable_wheel(path: Path) -> None:
    """The shape of setuptools' editable wheel: a finder .pth, dist-info with a RECORD."""
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("__editable__.tinycnn-0.1.0.pth",
                       "import __editable___tinycnn_0_1_0_finder; "
                       "__editable___tinycnn_0_1_0_finder.install()")
        wheel.writestr("__editable___tinycnn_0_1_0_finder.py", "def install(): pass\n")
        wheel.writestr("tinycnn-0.1.0.dist-info/METADATA", "Name: tinycnn\n")
        wheel.writestr("tinycnn-0.1.0.dist-info/RECORD", "stale\n")


def test_editable_wheel_gets_the_clone_as_a_path_entry(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "build_support"))
    pytest.importorskip("setuptools.build_meta", reason="the build backend needs setuptools")
    from tinycnn_backend import add_path_entry

    wheel = tmp_path / "tinycnn-0.1.0-0.editable-py3-none-any.whl"
    _editable_wheel(wheel)
    add_path_entry(wheel, Path("/somewhere/tinycnn"))
    with zipfile.ZipFile(wheel) as zf:
        pth = zf.read("__editable__.tinycnn-0.1.0.pth").decode().splitlines()
        record = zf.read("tinycnn-0.1.0.dist-info/RECORD").decode().splitlines()
        files = {n: zf.read(n) for n in zf.namelist()}
    assert pth[0] == "/somewhere/tinycnn" and pth[1].startswith("import __editable__")
    for line in record:
        name, digest, size = line.rsplit(",", 2)
        if name.endswith("RECORD"):
            assert (digest, size) == ("", "")
            continue
        expected = base64.urlsafe_b64encode(hashlib.sha256(files[name]).digest()).rstrip(b"=")
        assert digest == "sha256=" + expected.decode() and int(size) == len(files[name])
    assert len(record) == len(files)
    sys.modules.pop("tinycnn_backend", None)
