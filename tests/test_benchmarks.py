"""The benchmark scripts still run: each one's ``main`` on tiny inputs (figures not checked).

The real measurements take minutes to hours and live in ``benchmarks/RESULTS.md``; these
smoke runs only make sure a refactor of the library never leaves a script broken.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tinycnn import backend
from tinycnn.data.dataset import DatasetNotFoundError


def test_speed_script_times_every_side_and_writes_tables(tmp_path: Path, capsys) -> None:
    import speed

    sides = "reference,numba" + (",torch" if importlib.util.find_spec("torch") else "")
    speed.main(["--nets", "simple_convnet", "--batches", "4", "--modes", "train,infer",
                "--sides", sides, "--repeats", "1", "--reference-repeats", "1",
                "--breakdown", "simple_convnet", "--no-memory", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| simple_convnet | 4 | train |" in out
    assert "Time per layer type" in out
    (result,) = tmp_path.glob("speed-*.json")
    rows = json.loads(result.read_text())["rows"]
    assert {r["mode"] for r in rows} == {"train", "infer"}
    assert all(r[side]["images_per_s"] > 0 for r in rows for side in ("numba", "reference"))


def test_classic_train_script_runs_every_model_on_a_subset(tmp_path: Path, capsys) -> None:
    import classic_train

    try:
        status = classic_train.main(["--limit", "64", "--batch-size", "32",
                                     "--out", str(tmp_path / "r.json")])
    except DatasetNotFoundError as err:
        pytest.skip(f"needs CIFAR-10 ({str(err).splitlines()[0]}): set TINYCNN_DATA to a folder "
                    "holding cifar-10/, or run 'tinycnn download cifar10'")
    assert status == 0
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [r["model"] for r in results] == ["mobilenet_v2_cifar", "densenet_cifar",
                                             "alexnet_paper_cifar"]
    assert all(r["train_images"] == 64 and r["val_images"] == 16 for r in results)


def test_train_accuracy_script_smoke_run(tmp_path: Path, capsys) -> None:
    import train_accuracy

    status = train_accuracy.main(["--models", "simple_convnet", "--epochs", "1",
                                  "--limit-train", "300", "--limit-test", "100",
                                  "--runs", str(tmp_path / "runs"),
                                  "--out", str(tmp_path / "acc.json")])
    assert status == 0
    summary = json.dumps(json.loads((tmp_path / "acc.json").read_text()))
    assert "simple_convnet" in summary


def test_gpu_speed_script_says_clearly_when_there_is_no_gpu(tmp_path: Path, capsys) -> None:
    import gpu_speed

    if backend.gpu_available():
        pytest.skip("a GPU is present: the GPU benchmark is run by hand (docs/gpu.md)")
    assert gpu_speed.main(["--out", str(tmp_path)]) == 2
    assert "no usable GPU" in capsys.readouterr().err
