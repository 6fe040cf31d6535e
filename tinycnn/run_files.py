"""The files a training run writes and the command line reads back, checked on the way in.

``model.npz`` and ``checkpoint.npz`` are read without pickles and identified when they are
something else; ``model.json`` fields are validated; ``checkpoint.json`` records the options
a resumed run has to repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tinycnn.cli_errors import RunError, UsageError
from tinycnn.files import atomic_write


def write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (temp file, fsync, rename)."""
    with atomic_write(path) as f:
        f.write(text.encode())
        f.flush()
        os.fsync(f.fileno())


# Options that change what a run computes: a resumed run must use the values it started with.
# (--epochs may grow; --limit-test, --out, --device, --kernels, --patience may change.)
# Causes before consequences: the default --val-size follows from --limit-train.
RUN_OPTIONS = ("model", "dataset", "limit_train", "seed", "optimizer", "lr", "momentum",
               "weight_decay", "l1", "schedule", "gamma", "warmup", "label_smoothing", "augment",
               "batch_size", "val_size")
# Records written before an option existed hold no value for it: what such a run used.
_BEFORE_THE_OPTION = {"l1": 0.0}


def run_options(args: argparse.Namespace, batch: int, val_size: int,
                lr: float) -> dict[str, Any]:
    """The values of :data:`RUN_OPTIONS` in effect, defaults resolved."""
    values = {k: getattr(args, k) for k in RUN_OPTIONS}
    values.update(batch_size=batch, val_size=val_size, lr=lr)
    return values


def _option_text(key: str, value: Any) -> str:
    flag = "--" + key.replace("_", "-")
    if value is True:
        return flag
    if value is False or value is None:
        return f"no {flag}"
    return f"{flag} {value}"


def check_run_options(checkpoint: Path, options: dict[str, Any]) -> str | None:
    """Refuse a resume with options other than the checkpoint's (read from its ``.json``).

    Returns a note when the checkpoint has no record of its options (nothing to check).
    """
    record = checkpoint.with_suffix(".json")
    if not record.is_file():
        return (f"note: {record.name} is not beside {checkpoint}, so its options cannot be "
                "checked; resume with the options of the first run")
    try:
        saved = json.loads(record.read_text()).get("options", {})
        if not isinstance(saved, dict):
            raise ValueError("'options' is not an object")
    except (ValueError, AttributeError) as exc:
        raise RunError(f"{record} is damaged ({exc}); delete it to resume without the check "
                       "of the options") from None
    for key in RUN_OPTIONS:
        if key not in saved and key not in _BEFORE_THE_OPTION:
            continue
        value = saved.get(key, _BEFORE_THE_OPTION.get(key))
        if key == "augment" and isinstance(value, bool):  # recorded as on/off before names
            value = "standard" if value else None
        if value != options[key]:
            raise UsageError(
                f"--resume: {checkpoint} was trained with {_option_text(key, value)}, "
                f"this run has {_option_text(key, options[key])}: use "
                f"{_option_text(key, value)} to continue it, or drop --resume to start a "
                "new run")
    return None


def read_npz(path: Path, what: str, arrays: bool = True) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, or a :class:`RunError` saying what the file is.

    ``arrays=False`` only checks that the archive opens (and returns no arrays).
    """
    with open(path, "rb") as f:
        head = f.read(8)
    kind = None
    if not head:
        kind = "an empty file (0 bytes)"
    elif head.startswith(b"\x93NUMPY"):
        kind = "a single NumPy array (.npy), not a .npz archive"
    elif head.startswith(b"\x89PNG"):
        kind = "a PNG image"
    elif head.lstrip()[:1] in (b"{", b"["):
        kind = "a JSON file"
    elif not zipfile.is_zipfile(path):
        kind = "not a .npz archive"
    if kind is None:
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files} if arrays else {}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
                zlib.error) as exc:
            kind = f"a damaged .npz archive ({type(exc).__name__}: {exc})"
    raise RunError(f"{path} is not {what}: it is {kind}")


def mismatch_summary(path: Path, name: str, dataset: str, expected: dict[str, Any],
                      got: dict[str, np.ndarray]) -> str | None:
    """A one-line summary of how a saved state differs from the model, or None if it fits."""
    unknown = [k for k in got if k not in expected]
    missing = [k for k in expected if k not in got]
    shapes = [f"{k} {tuple(got[k].shape)} vs {tuple(expected[k].shape)}"
              for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if not (unknown or missing or shapes):
        return None

    def first(items: list[str]) -> str:
        return ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} of {name}'s {len(expected)} arrays missing "
                     f"({first(missing)})")
    if unknown:
        parts.append(f"{len(unknown)} unknown ({first(unknown)})")
    if shapes:
        parts.append(f"{len(shapes)} of other shapes ({first(shapes)})")
    cause = ("it was saved from another model" if missing or unknown
             else "it was trained for another dataset or number of classes")
    return (f"{path} does not fit {name} for {dataset}: " + "; ".join(parts) + f". Probably "
            f"{cause}: pass the --model and --dataset it was trained with (see its model.json)")


def config_field(config: dict[str, Any], key: str, meta_path: Path, models: Iterable[str],
                 datasets: Iterable[str]) -> Any:
    """A field of model.json, checked against the known ``models`` and ``datasets``; None
    when absent."""
    value = config.get(key)
    if value is None:
        return None
    if key == "model" and (not isinstance(value, str) or value not in set(models)):
        problem = f"unknown model {value!r}"
    elif key == "dataset" and (not isinstance(value, str) or value not in set(datasets)):
        problem = f"unknown dataset {value!r} (known: {', '.join(sorted(datasets))})"
    elif key == "num_classes" and (isinstance(value, bool) or not isinstance(value, int)
                                   or value < 1):
        problem = f"num_classes is {value!r}, expected a positive whole number"
    else:
        return value
    raise RunError(f"{meta_path}: {problem}; correct it, or delete it and pass --model and "
                   "--dataset")
