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
from tinycnn.data import CIFAR10, DataLoader, DatasetFormatError, download
from tinycnn.layers.linear import Affine
from tinycnn.layers.shape import Flatten
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.optim import SGD
from tinycnn.trainer import Trainer

PAYLOAD = bytes(range(256)) * 64


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
    download(["https://a.invalid/f.bin", "https://b.invalid/f.bin"], dest,
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
def test_negative_counts_are_argument_errors(argv: list[str], tmp_path: Path, capsys) -> None:
    # Keep a regression short and out of the working folder: it would train.
    quick = ["--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "no-data"),
             "--limit-train", "60", "--limit-test", "20", "--epochs", "1", "--no-progress"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, *quick])
    assert exc.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("shape", ["3,32", "0,28,28", "1,28,28,1"])
def test_summary_input_shape_needs_three_positive_sizes(shape: str, capsys) -> None:
    assert main(["summary", "--model", "lenet5", "--input-shape", shape]) == 1
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


def test_embedded_fallback_names_the_folders_and_files(tmp_path: Path) -> None:
    from tinycnn.cli import load_dataset

    lines: list[str] = []
    load_dataset("mnist", False, str(tmp_path / "wrong"), lines.append)
    assert "embedded MNIST subset" in lines[0]
    assert str(tmp_path / "wrong" / "mnist") in lines[0]
    assert "t10k-images-idx3-ubyte.gz" in lines[0] and "t10k-labels-idx1-ubyte.gz" in lines[0]


def test_resume_errors_are_one_line(tmp_path: Path, capsys) -> None:
    base = ["train", "--data-dir", str(tmp_path / "no-data"), "--limit-train", "120",
            "--limit-test", "20", "--val-size", "0", "--batch-size", "60", "--epochs", "1",
            "--no-progress"]
    assert main([*base, "--resume", str(tmp_path / "missing.npz"),
                 "--out", str(tmp_path / "a")]) == 1
    assert "no checkpoint file" in capsys.readouterr().err

    assert main([*base, "--model", "lenet5", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    # The checkpoint of lenet5 + Adam, resumed as simple_convnet, and as lenet5 + SGD.
    for other in (["--model", "simple_convnet"], ["--model", "lenet5", "--optimizer", "sgd"]):
        code = main([*base, "--epochs", "2", *other, "--out", str(tmp_path / "c"),
                     "--resume", str(tmp_path / "b" / "checkpoint.npz")])
        err = capsys.readouterr().err
        assert code == 1 and "cannot continue from" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_eval_of_a_mismatched_or_foreign_file_is_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "lenet5", "--data-dir", str(tmp_path / "no-data"),
                 "--limit-train", "60", "--limit-test", "20", "--val-size", "0",
                 "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "model.npz"), "--dataset", "cifar10"]) == 1
    assert "cannot load" in capsys.readouterr().err
    assert main(["eval", str(out / "curves.png"), "--model", "lenet5", "--dataset",
                 "mnist"]) == 1
    assert "cannot load" in capsys.readouterr().err
    (out / "model.json").write_text("{not json")
    assert main(["eval", str(out / "model.npz")]) == 1
    err = capsys.readouterr().err
    assert "is not the JSON that train writes" in err and "Traceback" not in err


def test_bad_hyperparameters_are_usage_errors(tmp_path: Path, capsys) -> None:
    code = main(["train", "--data-dir", str(tmp_path / "no-data"), "--limit-train", "60",
                 "--label-smoothing", "3", "--out", str(tmp_path / "run")])
    assert code == 1 and "label_smoothing" in capsys.readouterr().err
