"""The teaching notebooks: stored without outputs, and each one runs top to bottom.

Every notebook is executed with nbclient in quick mode (``TINYCNN_QUICK=1``: small subsets,
few epochs) and ``MPLBACKEND=Agg``, one test per notebook. Its wall-clock time is printed
(``pytest -s`` shows it) and recorded as the test property ``quick_run_seconds``.
``TINYCNN_NOTEBOOK_TIMEOUT`` overrides the per-notebook limit in seconds.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
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
    assert names == [f"{i:02d}" for i in range(1, 13)], f"expected notebooks 01..12, got {names}"


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
