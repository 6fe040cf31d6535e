"""Publish the teaching notebooks with their outputs for the documentation site.

The notebooks in ``notebooks/`` are stored without outputs (CI runs them in quick mode).
This command runs each one top to bottom in full mode and writes the executed copy, with
its text output and figures, to ``docs/notebooks/NAME.ipynb``, which the site renders.
Each published copy records a hash of its source cells, so a test can tell when a
notebook changed and its published copy was not refreshed.

Usage, from the repository root (full runs need the real MNIST and CIFAR-10 files)::

    TINYCNN_DATA=/path/to/data python tools/publish_notebooks.py          # all notebooks
    TINYCNN_DATA=/path/to/data python tools/publish_notebooks.py 06 09    # just these
    python tools/publish_notebooks.py --check                             # what is stale
    python tools/publish_notebooks.py --renote                            # reword the notes

Notebooks listed in ``QUICK_ONLY`` are published from a quick run (``TINYCNN_QUICK=1``)
because their full run is too long for this command; their page says so.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "notebooks"
PUBLISHED = ROOT / "docs" / "notebooks"
HOME_PICTURE = ROOT / "docs" / "images" / "home.png"
HOME_TAG = "home-picture"  # the first figure of the cell with this tag becomes home.png
COMMAND = "python tools/publish_notebooks.py"

# name -> why its page shows a quick run instead of a full one
QUICK_ONLY = {
    "07_cifar10_resnet": "the full run (ResNet-20, 30 epochs on 45,000 images) takes about "
    "two hours on a 2-core CPU",
}
NOTE_ID = "published-note"


def source_hash(nb: Any) -> str:
    """SHA-256 of what a reader sees of the source: cell types, sources and tags."""
    cells = [[c["cell_type"], "".join(c["source"]), c.get("metadata", {}).get("tags", [])]
             for c in nb["cells"] if c.get("id") != NOTE_ID]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def published_hash(name: str) -> str | None:
    """The source hash recorded in ``docs/notebooks/NAME.ipynb``, or None if absent."""
    path = PUBLISHED / f"{name}.ipynb"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    return meta.get("tinycnn_published", {}).get("source_sha256")


def stale() -> list[str]:
    """Names of the notebooks whose published copy is missing or older than the source."""
    out = []
    for path in sorted(SOURCE.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        if published_hash(path.stem) != source_hash(nb):
            out.append(path.stem)
    return out


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _note(name: str, quick: bool, seconds: float) -> str:
    lines = [
        f"> **Run it yourself:** [download {name}.ipynb]({name}.ipynb) (with the outputs "
        f"below), or take `notebooks/{name}.ipynb` from the repository, and run "
        f"`TINYCNN_DATA=/path/to/data jupyter lab {name}.ipynb` (`pip install jupyterlab` "
        "first; `TINYCNN_DATA` is the folder that holds MNIST and CIFAR-10).",
        ">",
    ]
    if quick:
        why = QUICK_ONLY.get(name, "it was published in quick mode")
        lines.append(
            "> **Quick mode:** the outputs below come from a quick run (`TINYCNN_QUICK=1`: a "
            f"small subset and few epochs), because {why}. Its accuracies and curves say "
            "nothing about what the full recipe reaches; run the notebook for those."
        )
    else:
        lines.append(
            f"> The outputs below come from a full run ({_minutes(seconds)} on a 2-core CPU), "
            f"made with `TINYCNN_DATA=/path/to/data {COMMAND} {name[:2]}`."
        )
    return "\n".join(lines)


def renote() -> None:
    """Rewrite the note at the top of every published copy (no run; for wording changes)."""
    import nbformat

    for path in sorted(PUBLISHED.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        meta = nb.metadata["tinycnn_published"]
        note = next(c for c in nb.cells if c.get("id") == NOTE_ID)
        note.source = _note(path.stem, meta["mode"] == "quick", meta["seconds"])
        _atomic_write(path, (nbformat.writes(nb) + "\n").encode("utf-8"))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _home_picture(nb: Any) -> bytes | None:
    for cell in nb.cells:
        if HOME_TAG in cell.get("metadata", {}).get("tags", []):
            for output in cell.get("outputs", []):
                png = output.get("data", {}).get("image/png")
                if png:
                    return base64.b64decode(png)
    return None


def publish(name: str, quick: bool, timeout: int) -> float:
    """Execute ``notebooks/NAME.ipynb`` and write ``docs/notebooks/NAME.ipynb``; returns seconds."""
    import nbformat
    from nbclient import NotebookClient

    source = nbformat.read(SOURCE / f"{name}.ipynb", as_version=4)
    nb = copy.deepcopy(source)
    saved = {key: os.environ.get(key) for key in ("TINYCNN_QUICK", "PYTHONPATH")}
    os.environ.pop("TINYCNN_QUICK", None)
    if quick:
        os.environ["TINYCNN_QUICK"] = "1"
    # The kernel imports this checkout's tinycnn, whatever else is installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved["PYTHONPATH"]]))
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                record_timing=False,
                                resources={"metadata": {"path": str(SOURCE)}})
        start = time.perf_counter()
        client.execute()  # the kernel inherits the environment
        seconds = time.perf_counter() - start
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                raise RuntimeError(f"{name}: {output.ename}: {output.evalue}")
    nb.metadata.pop("widgets", None)
    nb.metadata["tinycnn_published"] = {
        "source_sha256": source_hash(source),
        "mode": "quick" if quick else "full",
        "seconds": round(seconds),
    }
    note = nbformat.v4.new_markdown_cell(_note(name, quick, seconds))
    note.id = NOTE_ID
    nb.cells.insert(1, note)
    nbformat.validate(nb)
    _atomic_write(PUBLISHED / f"{name}.ipynb",
                  (nbformat.writes(nb) + "\n").encode("utf-8"))
    picture = _home_picture(nb)
    if picture is not None:
        _atomic_write(HOME_PICTURE, picture)
    return seconds


def _select(names: list[str]) -> list[str]:
    every = [p.stem for p in sorted(SOURCE.glob("*.ipynb"))]
    if not names:
        return every
    chosen = []
    for given in names:
        matches = [n for n in every if n == given or n.startswith(given)]
        if len(matches) != 1:
            raise SystemExit(f"publish_notebooks: {given!r} names no single notebook; "
                             f"choose from {', '.join(n[:2] for n in every)}")
        chosen.append(matches[0])
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook numbers or names (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="publish quick runs (TINYCNN_QUICK=1) instead of full ones")
    parser.add_argument("--timeout", type=int, default=3600,
                        help="seconds one notebook cell may run (default 3600)")
    parser.add_argument("--check", action="store_true",
                        help="list the notebooks whose published copy is stale; run nothing")
    parser.add_argument("--renote", action="store_true",
                        help="only rewrite the note at the top of each published page")
    args = parser.parse_args(argv)
    if args.renote:
        renote()
        return 0
    if args.check:
        names = stale()
        for name in names:
            print(f"{name}: stale; refresh with `{COMMAND} {name[:2]}`")
        return 1 if names else 0
    if not os.environ.get("TINYCNN_DATA"):
        print("publish_notebooks: set TINYCNN_DATA to the folder that holds MNIST and "
              "CIFAR-10; the published runs use the real data", file=sys.stderr)
        return 2
    for name in _select(args.names):
        quick = args.quick or name in QUICK_ONLY
        print(f"{name}: running in {'quick' if quick else 'full'} mode ...", flush=True)
        seconds = publish(name, quick, args.timeout)
        size = (PUBLISHED / f"{name}.ipynb").stat().st_size
        print(f"{name}: published in {seconds:.0f} s ({size / 1e3:.0f} kB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
