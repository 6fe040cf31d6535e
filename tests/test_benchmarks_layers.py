"""The per-layer benchmark and the Winograd trial still run (figures not checked here).

Their measurements are in ``benchmarks/RESULTS.md``; these runs make sure a change to the
library never leaves either script broken or wrong.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not installed: the table compares each layer with it")
def test_layer_times_compares_every_distinct_layer_with_torch(tmp_path: Path, capsys) -> None:
    import layer_times

    out_file = tmp_path / "layers.json"
    assert layer_times.main(["--net", "lenet5", "--batch", "4", "--repeats", "1",
                             "--steps", "1", "--json", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "all timed parts" in out and "step minus the timed parts" in out
    rows = json.loads(out_file.read_text())["rows"]
    # lenet5: two convolutions, their ReLUs and pools, the three Affine layers and the
    # ReLUs between them, then the loss, the SGD step and the whole step
    names = [r["layer"] for r in rows]
    assert [n.split()[1] for n in names[:3]] == ["FastConv2D", "FastReLU", "FastMaxPool2D"]
    assert sum(n.endswith(" Affine") for n in names) == 3
    assert names[-3:] == ["loss (softmax cross-entropy)", "SGD step, all parameters",
                          "whole training step"]
    assert rows[0]["input"] == [4, 1, 28, 28]
    assert all(r["ours_forward_ms"] > 0 and r["torch_forward_ms"] > 0 for r in rows)


def test_winograd_trial_computes_the_convolution() -> None:
    import winograd_trial

    assert winograd_trial.check(np.random.default_rng(1)) < 1e-12


def test_import_order_script_times_every_case(capsys) -> None:
    import import_order

    assert import_order.main(["--nets", "lenet5", "--repeats", "1", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| lenet5 |"))
    figures = [float(cell) for cell in row.strip("|").split("|")[1:]]
    assert len(figures) == 5 and all(f > 0 for f in figures)
