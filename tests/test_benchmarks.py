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


def test_time_to_accuracy_evaluates_at_fixed_fractions_of_an_epoch() -> None:
    import time_to_accuracy

    assert time_to_accuracy.eval_points(10, 0.25) == {2, 5, 8, 10}
    assert time_to_accuracy.eval_points(3, 1.0) == {3}
    with pytest.raises(SystemExit):
        time_to_accuracy.parse(["--sides", "tinycnn,jax"])
    with pytest.raises(SystemExit):
        time_to_accuracy.parse(["--limit-train", "100"])  # less than one batch


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not installed: this benchmark times tinycnn against it")
def test_time_to_accuracy_script_runs_both_sides_and_recipes(tmp_path: Path, capsys) -> None:
    import time_to_accuracy

    from tinycnn.data import load_mnist

    try:
        load_mnist(train=False, allow_embedded=False)
    except DatasetNotFoundError as err:
        pytest.skip(f"needs MNIST ({str(err).splitlines()[0]}): set TINYCNN_DATA to a folder "
                    "holding mnist/, or run 'tinycnn download mnist'")
    out = tmp_path / "tta.json"
    status = time_to_accuracy.main(["--limit-train", "256", "--limit-test", "128",
                                    "--max-epochs", "1", "--eval-every", "0.5",
                                    "--numba-cache", "keep", "--json", str(out)])
    assert status == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| side | recipe | seconds to 99.0 % | epochs | final accuracy")
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]
    assert [c[:2] for c in cells] == [["tinycnn", "best"], ["torch", "best"],
                                      ["tinycnn", "shared"], ["torch", "shared"]]
    assert all(len(c) == len(cells[0]) == 8 for c in cells)
    assert all(c[2].startswith("not reached in ") for c in cells)  # 256 images: far below
    assert all(c[3] == "1.00" and c[4].endswith(" %") for c in cells)
    results = json.loads(out.read_text())["results"]
    assert all(len(r["history"]) == 2 for r in results)  # scored at 0.5 and 1.0 epoch
    # the shared recipe starts from the same weights and sees the same batches
    tiny, torch = (r for r in results if r["recipe"] == "shared")
    assert abs(tiny["final_accuracy"] - torch["final_accuracy"]) <= 1 / 128


def test_compile_time_script_measures_an_empty_cache(capsys) -> None:
    pytest.importorskip("numba", reason="compile_time.py times Numba's compile: numba is not "
                                        "installed")
    import compile_time

    compile_time.main(["--workers", "1", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| workers | precompile s | kernels")
    cells = [c.strip() for c in rows[1].strip("|").split("|")]
    assert cells[0] == "1" and float(cells[1]) > 0 and int(cells[2]) >= 5
    here, workers = (int(n) for n in cells[3].split(" / "))
    assert here + workers == int(cells[2]) and workers > 0
    assert cells[4] == "0"  # the step after found every kernel compiled
