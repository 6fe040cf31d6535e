"""setuptools' build backend, except that ``pip install -e .`` adds a plain path entry.

setuptools' default editable install answers ``import tinycnn`` with an import hook that
Python asks only after its path search. Run from the folder that holds the clone (itself
named ``tinycnn``), that search finds the clone's folder first and imports it as an empty
namespace package, so ``from tinycnn import Conv2D`` fails with "unknown location". A path
entry (setuptools' "compat" editable mode) is searched in order with the others, and a
real package always beats a namespace folder.
"""

from __future__ import annotations

from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every other hook unchanged)


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    settings = dict(config_settings or {})
    settings.setdefault("editable_mode", "compat")  # pip's --config-settings still wins
    return _setuptools.build_editable(wheel_directory, settings, metadata_directory)
