"""Regression tests from an audit of tinycnn.data, the Trainer and the CLI (no network)."""

from __future__ import annotations

import hashlib
import http.client
import io
from pathlib import Path

import numpy as np
import pytest

from tinycnn.cli import main
from tinycnn.containers import Sequential
from tinycnn.data import CIFAR10, DataLoader, DatasetFormatError, download_file
from tinycnn.layers.linear import Affine
from tinycnn.layers.shape import Flatten
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.optim import SGD
from tinycnn.trainer import Trainer

PAYLOAD = bytes(range(256)) * 64


@pytest.fixture
def no_data_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No --data-dir, no TINYCNN_DATA, an empty per-user cache: MNIST falls back."""
    monkeypatch.delenv("TINYCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tinycnn"


class _CutResponse(io.BytesIO):
    """A response whose body breaks off, as http.client reports a dropped connection."""

    def read(self, *args: object) -> bytes:
        raise http.client.IncompleteRead(b"partial", 100)


def test_download_retries_after_a_connection_cut_mid_body(tmp_path: Path) -> None:
    answers: list[io.BytesIO] = [_CutResponse(), io.BytesIO(PAYLOAD)]
    calls: list[str] = []

    def opener(url: str, timeout: float) -> io.BytesIO:
        calls.append(url)
        return answers.pop(0)

    dest = tmp_path / "f.bin"
    download_file(["https://a.invalid/f.bin", "https://b.invalid/f.bin"], dest,
             md5=hashlib.md5(PAYLOAD).hexdigest(), opener=opener, verbose=False)
    assert dest.read_bytes() == PAYLOAD and len(calls) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left


def test_corrupt_cifar_archive_is_a_format_error(tmp_path: Path) -> None:
    (tmp_path / "cifar-10").mkdir()
    archive = tmp_path / "cifar-10" / "cifar-10-binary.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00truncated")
    with pytest.raises(DatasetFormatError, match="cifar-10-binary.tar.gz"):
        CIFAR10(tmp_path, train=True)


def test_trainer_refuses_an_epoch_without_batches() -> None:
    x = np.zeros((5, 1, 2, 2), np.float32)
    loader = DataLoader((x, np.zeros(5)), batch_size=8, drop_last=True)
    assert len(loader) == 0
    model = Sequential(Flatten(), Affine(4, 2, rng=np.random.default_rng(0)))
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), progress=False,
                      verbose=False)
    with pytest.raises(ValueError, match="no batches"):
        trainer.fit(loader, epochs=1)
    assert len(trainer.history) == 0


@pytest.mark.parametrize("argv", [
    ["train", "--val-size", "-5"],
    ["train", "--warmup", "-1"],
])
def test_negative_counts_are_argument_errors(argv: list[str], tmp_path: Path, capsys,
                                             no_data_location: Path) -> None:
    # Keep a regression short and out of the working folder: it would train.
    quick = ["--out", str(tmp_path / "run"), "--limit-train", "60", "--limit-test", "20",
             "--epochs", "1", "--no-progress"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, *quick])
    assert exc.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("shape", ["3,32", "0,28,28", "1,28,28,1"])
def test_summary_input_shape_needs_three_positive_sizes(shape: str, capsys) -> None:
    assert main(["summary", "--model", "lenet5", "--input-shape", shape]) == 2
    assert "--input-shape must look like" in capsys.readouterr().err


def _write_mnist_pair(folder: Path, prefix: str, images: bytes, labels: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(images)
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)


def test_corrupt_mnist_files_are_one_line_errors(tmp_path: Path, capsys) -> None:
    _write_mnist_pair(tmp_path / "data" / "mnist", "train", b"not idx", b"not idx")
    code = main(["train", "--data-dir", str(tmp_path / "data"), "--no-progress",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "train-images-idx3-ubyte" in err and "not an IDX image file" in err
    assert not (tmp_path / "run").exists()  # a failed run leaves no empty output folder


def test_embedded_fallback_only_when_no_data_location_is_named(
        no_data_location: Path) -> None:
    from tinycnn.cli import load_dataset

    lines: list[str] = []
    load_dataset("mnist", True, None, lines.append)
    assert lines[0].startswith(f"full MNIST not found in {no_data_location}: using the "
                               "10,000-image subset")
    assert "tinycnn download mnist" in lines[0]
    assert "embedded MNIST subset (10,000 train images)" in lines[1]


@pytest.mark.parametrize("how", ["--data-dir", "TINYCNN_DATA"])
def test_a_named_folder_without_the_data_is_an_error(how: str, tmp_path: Path, capsys,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     no_data_location: Path) -> None:
    typo = tmp_path / "dtaa"
    argv = ["train", "--out", str(tmp_path / "run"), "--no-progress"]
    if how == "--data-dir":
        argv += ["--data-dir", str(typo)]
    else:
        monkeypatch.setenv("TINYCNN_DATA", str(typo))
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "embedded" not in captured.out
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tinycnn train: error: mnist not found")
    assert str(typo / "mnist") in err and "train-images-idx3-ubyte.gz" in err
    assert "--download" in err and "download=True" not in err
    assert not (tmp_path / "run").exists()


def test_a_failed_download_is_an_error_not_a_fallback(tmp_path: Path, capsys,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      no_data_location: Path) -> None:
    from tinycnn.data import MNIST

    monkeypatch.setattr(MNIST, "urls", ((tmp_path / "offline").as_uri() + "/",))
    code = main(["train", "--download", "--out", str(tmp_path / "run"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1 and "embedded" not in captured.out
    assert "retry 1 of 1" in captured.out  # each retry says it is one
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"tinycnn train: error: downloading mnist into "
                          f"{no_data_location / 'mnist'} failed")


def test_resume_errors_are_one_line(tmp_path: Path, capsys, no_data_location: Path) -> None:
    base = ["train", "--limit-train", "120",
            "--limit-test", "20", "--val-size", "0", "--batch-size", "60", "--epochs", "1",
            "--no-progress"]
    assert main([*base, "--resume", str(tmp_path / "missing.npz"),
                 "--out", str(tmp_path / "a")]) == 2
    assert "no checkpoint file" in capsys.readouterr().err

    assert main([*base, "--model", "lenet5", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    checkpoint = tmp_path / "b" / "checkpoint.npz"
    # The checkpoint of lenet5 + Adam, resumed as simple_convnet, and as lenet5 + SGD.
    for other, said in ((["--model", "simple_convnet"], "--model lenet5"),
                        (["--model", "lenet5", "--optimizer", "sgd"], "--optimizer adam")):
        code = main([*base, "--epochs", "2", *other, "--out", str(tmp_path / "c"),
                     "--resume", str(checkpoint)])
        err = capsys.readouterr().err
        assert code == 2 and f"was trained with {said}" in err and "Traceback" not in err
    # Without its record of the options, the checkpoint's own check still answers.
    (tmp_path / "b" / "checkpoint.json").unlink()
    code = main([*base, "--epochs", "2", "--out", str(tmp_path / "c"),
                 "--resume", str(checkpoint)])
    err = capsys.readouterr().err
    assert code == 1 and "cannot continue from" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("change, said", [
    (["--seed", "1"], "was trained with --seed 0, this run has --seed 1: use --seed 0"),
    (["--limit-train", "100"], "was trained with --limit-train 120, this run has "
                               "--limit-train 100"),
    (["--augment"], "was trained with no --augment, this run has --augment"),
    (["--lr", "0.01"], "was trained with --lr 0.001, this run has --lr 0.01"),
    (["--batch-size", "30"], "was trained with --batch-size 60"),
    (["--val-size", "30"], "was trained with --val-size 0, this run has --val-size 30"),
])
def test_resume_refuses_options_that_change_the_run(change: list[str], said: str,
                                                     tmp_path: Path, capsys,
                                                     no_data_location: Path) -> None:
    base = ["train", "--model", "lenet5", "--limit-train", "120", "--limit-test", "20",
            "--val-size", "0", "--batch-size", "60", "--epochs", "1", "--no-progress",
            "--out", str(tmp_path / "run")]
    assert main(base) == 0
    capsys.readouterr()
    argv = [*base, "--epochs", "2", "--resume", str(tmp_path / "run" / "checkpoint.npz")]
    code = main([*argv, *change])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert said in err and "drop --resume" in err
    assert main(argv) == 0  # the same options continue it


def test_resume_names_the_cause_not_its_consequence(tmp_path: Path, capsys,
                                                    no_data_location: Path) -> None:
    # The default --val-size is 1/12 of --limit-train: the message names --limit-train.
    base = ["train", "--model", "lenet5", "--limit-train", "120", "--limit-test", "20",
            "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(base) == 0
    capsys.readouterr()
    code = main([*base, "--limit-train", "240", "--epochs", "2",
                 "--resume", str(tmp_path / "run" / "checkpoint.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "was trained with --limit-train 120, this run has --limit-train 240" in err


def test_eval_of_a_mismatched_or_foreign_file_is_one_line(tmp_path: Path, capsys,
                                                          no_data_location: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "lenet5",
                 "--limit-train", "60", "--limit-test", "20", "--val-size", "0",
                 "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "model.npz"), "--dataset", "cifar10"]) == 1
    err = capsys.readouterr().err
    assert "does not fit lenet5 for cifar10" in err and "other shapes" in err
    assert main(["eval", str(out / "curves.png")]) == 1
    err = capsys.readouterr().err
    assert "curves.png is not a model file" in err and "a PNG image" in err
    (out / "model.json").write_text("{not json")
    assert main(["eval", str(out / "model.npz")]) == 1
    err = capsys.readouterr().err
    assert "is not the JSON that train writes" in err and "Traceback" not in err


def test_eval_with_the_wrong_model_is_summarised(tmp_path: Path, capsys,
                                                 no_data_location: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--dataset", "mnist", "--limit-train", "20",
                 "--limit-test", "10", "--val-size", "0", "--epochs", "1", "--no-progress",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "model.npz"), "--model", "simple_convnet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err) < 600, err  # was one 3,364-character line listing every key
    assert "arrays missing" in err and ", ..." in err
    assert "Probably it was saved from another model" in err


def test_bad_hyperparameters_are_usage_errors(tmp_path: Path, capsys,
                                              no_data_location: Path) -> None:
    code = main(["train", "--limit-train", "60",
                 "--label-smoothing", "3", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--label-smoothing" in err and "label_smoothing" not in err
