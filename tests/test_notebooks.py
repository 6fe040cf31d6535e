"""The teaching notebooks: stored without outputs, and each one runs top to bottom.

Every notebook is executed with nbclient in quick mode (``TINYCNN_QUICK=1``: small subsets,
few epochs) and ``MPLBACKEND=Agg``, one test per notebook. Its wall-clock time is printed
(``pytest -s`` shows it) and recorded as the test property ``quick_run_seconds``.
``TINYCNN_NOTEBOOK_TIMEOUT`` overrides the per-notebook limit in seconds.

The site shows each notebook from ``docs/notebooks/NAME.ipynb``, a copy executed in full
mode by ``tools/publish_notebooks.py``; a test checks that every copy is there, shows its
outputs, and was made from the current source (else: run the command it names).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PUBLISHED = ROOT / "docs" / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
TIMEOUT = float(os.environ.get("TINYCNN_NOTEBOOK_TIMEOUT", "180"))
MISSING = [m for m in ("nbformat", "nbclient", "ipykernel") if importlib.util.find_spec(m) is None]
needs_jupyter = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed (pip install -e '.[test]')"
)


def read(path: Path) -> Any:
    import nbformat

    return nbformat.read(path, as_version=4)


def test_the_notebooks_are_there() -> None:
    names = [p.name[:2] for p in PATHS]
    assert names == [f"{i:02d}" for i in range(1, 15)], f"expected notebooks 01..14, got {names}"


def test_every_notebook_is_in_the_docs() -> None:
    """The site's navigation and the tutorial page list every notebook."""
    root = NOTEBOOKS.parent
    nav = (root / "mkdocs.yml").read_text(encoding="utf-8")
    tutorial = (root / "docs" / "tutorial.md").read_text(encoding="utf-8")
    for path in PATHS:
        assert f"notebooks/{path.name}" in nav, f"{path.name} missing from mkdocs.yml nav"
        assert f"(notebooks/{path.name})" in tutorial, f"{path.name} missing from tutorial.md"


@needs_jupyter
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_is_stored_clean(path: Path) -> None:
    """Valid nbformat 4, no outputs or execution counts (reviewable diffs), uses tinycnn."""
    import nbformat

    nb = read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them before committing"
    source = "\n".join(c.source for c in code)
    assert "import tinycnn" in source or "from tinycnn" in source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@needs_jupyter
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs_in_quick_mode(path: Path, monkeypatch: pytest.MonkeyPatch,
                                     record_property: Any) -> None:
    from nbclient import NotebookClient

    # The kernel is a child process: it inherits these.
    monkeypatch.setenv("TINYCNN_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # ... and imports this checkout's tinycnn, whatever else is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = read(path)
    client = NotebookClient(nb, timeout=int(TIMEOUT), kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    record_property("quick_run_seconds", round(seconds, 1))
    print(f"\n{path.name}: quick-mode run {seconds:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, f"{path.name} raised {errors[0].ename}: {errors[0].evalue}"
    assert seconds < TIMEOUT, f"{path.name} took {seconds:.0f} s, limit {TIMEOUT:.0f} s"


def _publisher() -> Any:
    spec = importlib.util.spec_from_file_location("publish_notebooks",
                                                  ROOT / "tools" / "publish_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_published_copy_is_fresh(path: Path) -> None:
    """docs/notebooks/NAME.ipynb was executed from the notebook as it is now."""
    publisher = _publisher()
    source = json.loads(path.read_text(encoding="utf-8"))
    recorded = publisher.published_hash(path.stem)
    command = f"TINYCNN_DATA=/path/to/data {publisher.COMMAND} {path.stem[:2]}"
    assert recorded is not None, f"{path.stem} is not published; run `{command}`"
    assert recorded == publisher.source_hash(source), (
        f"{path.name} changed since its published copy was made; run `{command}`")


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_published_copy_shows_its_outputs(path: Path) -> None:
    published = PUBLISHED / path.name
    if not published.is_file():
        pytest.skip(f"{path.stem} is not published (test_published_copy_is_fresh says so)")
    nb = json.loads(published.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"], f"{path.stem} has errors"
    assert all(c["execution_count"] is not None for c in code), f"{path.stem}: cells not run"
    source = "".join("".join(c["source"]) for c in code)
    draws = any(word in source for word in ("plot.", "plt.", ".imshow("))
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    assert figures > 0 or not draws, f"{path.stem} draws figures but its copy holds none"
    mode = nb["metadata"]["tinycnn_published"]["mode"]
    assert mode == "full" or path.stem in _publisher().QUICK_ONLY, (
        f"{path.stem} was published in quick mode; publish it in full mode")
    size = published.stat().st_size
    assert size < 1_500_000, f"{published.name} is {size / 1e6:.1f} MB; keep figures small"
