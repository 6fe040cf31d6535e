"""The command line: argument errors, summary, a tiny train + eval + resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycnn import backend
from tinycnn.cli import build_model, main, model_builders


@pytest.fixture
def no_data_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No --data-dir, no TINYCNN_DATA, an empty per-user cache: MNIST falls back."""
    monkeypatch.delenv("TINYCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tinycnn"


@pytest.mark.parametrize("argv", [
    [],                                         # no command
    ["fly"],                                    # unknown command
    ["train", "--model", "nope"],               # unknown model
    ["train", "--epochs", "0"],                 # not positive
    ["train", "--lr", "-1"],
    ["train", "--dataset", "imagenet"],
    ["train", "--batch-size", "x"],
    ["eval"],                                   # missing path
])
def test_bad_arguments_exit_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("train", "eval", "summary"))


def test_summary_prints_the_table(capsys) -> None:
    assert main(["summary", "--model", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "269,722" in out and "input (3, 32, 32)" in out
    assert main(["summary", "--model", "lenet5", "--input-shape", "1,32,32"]) == 0
    assert main(["summary", "--model", "lenet5", "--input-shape", "a,b"]) == 2


def test_every_builder_is_reachable() -> None:
    names = model_builders()
    for name in ("simple_convnet", "deep_convnet", "lenet5", "vgg_cifar", "fast_cifar",
                 "resnet20", "resnet32", "resnet56"):
        assert name in names
    model = build_model("lenet5", 5, 1, 28, seed=0)
    assert model(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 5)


def test_gpu_request_without_gpu_is_a_clear_error(tmp_path: Path, capsys) -> None:
    if backend.gpu_available():
        pytest.skip("a GPU is available here, so --device gpu is not an error")
    code = main(["train", "--device", "gpu", "--out", str(tmp_path / "run")])
    assert code == 1
    assert "GPU" in capsys.readouterr().err


def test_train_eval_and_resume_on_the_embedded_subset(tmp_path: Path, capsys,
                                                      no_data_location: Path) -> None:
    out = tmp_path / "run"
    base = ["--limit-test", "200", "--no-progress"]
    argv = ["train", "--model", "lenet5", "--epochs", "2", "--limit-train", "600",
            "--val-size", "100", "--batch-size", "50", "--schedule", "cosine", "--warmup", "1",
            "--augment", "--out", str(out), *base]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "embedded MNIST subset" in text  # says which data it used
    for name in ("model.npz", "model.json", "history.json", "curves.png", "checkpoint.npz"):
        assert (out / name).stat().st_size > 0, name
    config = json.loads((out / "model.json").read_text())
    assert config["model"] == "lenet5" and config["test_images"] == 200
    assert f"test accuracy: {config['test_accuracy']:.4f}" in text
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2]

    assert main(["eval", str(out / "model.npz"), *base]) == 0
    assert f"test accuracy {config['test_accuracy']:.4f} (200 images)" in capsys.readouterr().out

    # A third epoch from the checkpoint.
    resumed = list(argv)
    resumed[resumed.index("--epochs") + 1] = "3"
    assert main([*resumed, "--resume", str(out / "checkpoint.npz")]) == 0
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2, 3]


def test_eval_needs_a_model_file(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(tmp_path / "missing.npz")]) == 2
    assert "no model file" in capsys.readouterr().err


def test_python_dash_m_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "tinycnn", "summary", "--model", "lenet5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "61,706" in proc.stdout


def test_train_download_fetches_missing_mnist(tmp_path: Path, monkeypatch, capsys) -> None:
    """--download fetches the files (here from file:// URLs of small IDX files) into --data-dir."""
    import gzip
    import hashlib

    from tinycnn.data import MNIST

    rng = np.random.default_rng(0)
    server = tmp_path / "server"
    server.mkdir()
    md5s = {}
    for prefix, n in (("train", 60), ("t10k", 20)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for name, arr, magic in ((f"{prefix}-images-idx3-ubyte.gz", images, 2051),
                                 (f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
            data = gzip.compress(header + arr.tobytes())
            (server / name).write_bytes(data)
            md5s[name] = hashlib.md5(data).hexdigest()
    monkeypatch.setattr(MNIST, "urls", (server.as_uri() + "/",))
    monkeypatch.setattr(MNIST, "md5s", md5s)
    data_dir = tmp_path / "data"

    code = main(["train", "--download", "--data-dir", str(data_dir), "--epochs", "1",
                 "--val-size", "0", "--no-progress", "--out", str(tmp_path / "run")])

    assert code == 0
    assert "full MNIST" in capsys.readouterr().out
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == sorted(md5s)
