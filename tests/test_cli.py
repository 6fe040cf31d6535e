"""The command line: argument errors, summary, a tiny train + eval + resume."""

from __future__ import annotations

import json
import os
import signal
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


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_training_that_turns_nan_is_one_line_and_writes_no_model(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.delenv("TINYCNN_DATA", raising=False)  # the embedded subset
    code = main(["train", "--model", "lenet5", "--epochs", "2", "--limit-train", "200",
                 "--val-size", "0", "--batch-size", "50", "--lr", "1e30", "--no-progress",
                 "--limit-test", "50", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("tinycnn train: error: training diverged (training stopped in "
                          "epoch 1, batch ")
    assert "\n" not in err and "Traceback" not in err
    assert not (out / "model.npz").exists() and not (out / "checkpoint.npz").exists()


def test_usage_errors_are_short_and_in_the_users_terms(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--batch-size", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["tinycnn train: error: argument --batch-size: expected a whole "
                                "number >= 1, got 'x'",
                                "Run 'tinycnn train --help' for the options."]


def test_help_names_no_model_list(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: tinycnn train [--model NAME]")
    assert "resnext50_32x4d" not in out and "'tinycnn models' lists them" in " ".join(out.split())


def test_models_lists_every_model_with_its_parameters(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in model_builders():
        assert f"\n{name} " in out
    assert "lenet5" in out and "61,706" in out and "LeNet-5" in out


def test_the_models_table_matches_the_builders() -> None:
    from tinycnn.model_catalog import PARAMETERS

    counts = {name: sum(p.size for p in builder().parameters())
              for name, builder in model_builders().items()}
    assert counts == PARAMETERS


def test_parameter_estimate_matches_a_real_build() -> None:
    from tinycnn.cli import estimate_parameters

    for name, classes, channels, size in (("simple_convnet", 37, 3, 128), ("lenet5", 5, 1, 28),
                                          ("vgg_cifar", 100, 3, 96), ("resnet20", 1000, 3, 32)):
        real = sum(p.size for p in build_model(name, classes, channels, size, 0).parameters())
        estimate = estimate_parameters(name, classes, channels, size)
        assert abs(estimate - real) <= 0.05 * real, (name, estimate, real)


def test_absurd_sizes_are_refused_before_allocating(capsys, monkeypatch) -> None:
    import functools

    import tinycnn.cli as cli

    built: list[int] = []
    real = cli.model_builders

    def recording() -> dict:
        def wrap(f):
            @functools.wraps(f)
            def builder(**kw):
                built.append(kw.get("num_classes", 0))
                return f(**kw)
            return builder
        return {k: wrap(f) for k, f in real().items()}

    monkeypatch.setattr(cli, "model_builders", recording)
    assert main(["summary", "--model", "lenet5", "--num-classes", str(10**9)]) == 2
    err = capsys.readouterr().err
    assert "about 85,000,060,856 parameters" in err and "GiB in float32" in err
    assert max(built) <= 2  # only the small probe builds ran


def test_info_says_why_there_is_no_gpu(capsys, monkeypatch) -> None:
    import sys

    from tinycnn.info import gpu_status

    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    status = gpu_status()
    assert status["available"] is False and status["reason"] == "CuPy is not installed"
    assert 'pip install -e ".[gpu]"' in status["hint"]
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "numba" in out and "CPU kernels of accelerated models:" in out
    assert "threads:" in out
    assert "GPU: not usable: CuPy is not installed" in out


def test_gpu_status_with_cupy_but_no_device(monkeypatch) -> None:
    import sys
    import types

    from tinycnn.info import gpu_status

    def no_driver() -> int:
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.__version__ = "13.0"
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    status = gpu_status()
    assert not status["available"] and status["cupy"] == "13.0"
    assert "no CUDA-capable device" in status["reason"] and "nvidia-smi" in status["hint"]


def test_readme_gives_the_same_gpu_install_hint() -> None:
    from tinycnn.info import GPU_INSTALL_HINT

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert 'pip install -e ".[gpu]"' in readme and 'pip install -e ".[gpu]"' in GPU_INSTALL_HINT


def _fresh_cache_env(tmp_path: Path) -> dict:
    import os

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("TINYCNN_DATA", None)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


def test_summary_compiles_no_kernel(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "tinycnn", "summary", "--model", "resnet20"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=_fresh_cache_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "269,722" in proc.stdout and "compiling" not in proc.stderr
    compiled = list((tmp_path / "numba").rglob("*.nbi"))
    assert compiled == []


def test_a_cold_kernel_cache_is_seen(tmp_path: Path) -> None:
    code = "from tinycnn.cli import kernels_cached; print(kernels_cached())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=_fresh_cache_env(tmp_path))
    assert proc.stdout.strip() == "False", proc.stderr


@pytest.mark.parametrize("cached", [False, True])
def test_compile_notice_only_when_the_cache_is_cold(cached: bool, tmp_path: Path, capsys,
                                                    monkeypatch, no_data_location) -> None:
    import tinycnn.cli as cli

    real = cli.kernels_cached
    monkeypatch.setattr(cli, "kernels_cached", lambda: cached)
    assert main(["train", "--model", "lenet5", "--limit-train", "40", "--limit-test", "10",
                 "--val-size", "0", "--epochs", "1", "--no-progress", "--kernels", "numba",
                 "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    notice = "tinycnn: compiling the CPU kernels this model needs, once"
    assert err.count(notice) == (0 if cached else 1)
    assert real() is True  # what ran is in the cache now


def test_warmup_command(capsys, monkeypatch) -> None:
    import types

    import tinycnn.cli as cli

    fake = types.SimpleNamespace(warmup=lambda: 12.5)
    monkeypatch.setattr(cli, "numba_kernels_module", lambda: fake)
    monkeypatch.setattr(cli, "kernels_cached", lambda: False)
    assert main(["warmup"]) == 0
    out = capsys.readouterr().out
    assert "compiling every CPU kernel" in out and "done in 12.5 s" in out


def test_kernel_module_is_this_checkouts_own() -> None:
    import tinycnn
    from tinycnn.cli import numba_kernels_module

    module = numba_kernels_module()
    assert Path(module.__file__).resolve().is_relative_to(Path(tinycnn.__file__).resolve().parent)
    assert callable(module.warmup)


def test_download_command_fetches_both_splits(tmp_path: Path, monkeypatch, capsys) -> None:
    import gzip
    import hashlib

    from tinycnn.data import MNIST

    server = tmp_path / "server"
    server.mkdir()
    md5s = {}
    for prefix, n in (("train", 30), ("t10k", 10)):
        for name, arr, magic in ((f"{prefix}-images-idx3-ubyte.gz",
                                  np.zeros((n, 28, 28), np.uint8), 2051),
                                 (f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n, np.uint8), 2049)):
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
            data = gzip.compress(header + arr.tobytes())
            (server / name).write_bytes(data)
            md5s[name] = hashlib.md5(data).hexdigest()
    monkeypatch.setattr(MNIST, "urls", (server.as_uri() + "/",))
    monkeypatch.setattr(MNIST, "md5s", md5s)
    monkeypatch.setattr(MNIST, "sizes", {})
    assert main(["download", "mnist", "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "mnist training set: 30 images" in out and "mnist test set: 10 images" in out
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(md5s)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_trace(monkeypatch,
                                                                   capsys) -> None:
    import tinycnn.cli as cli

    def broken(args) -> int:
        raise AttributeError("'NoneType' object has no attribute 'shape'")

    monkeypatch.setitem(cli.COMMANDS, "models", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected AttributeError" in err
    assert "run again with --debug" in err
    assert main(["models", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_says_how_to_continue_in_cli_terms(tmp_path: Path, capsys, monkeypatch,
                                                  no_data_location) -> None:
    from tinycnn.losses import SoftmaxCrossEntropy

    calls = {"n": 0}
    forward = SoftmaxCrossEntropy.forward

    def interrupted(self, x, target):
        calls["n"] += 1
        if calls["n"] == 3:  # a real Ctrl-C in the third step: it ends after that step
            os.kill(os.getpid(), signal.SIGINT)
        return forward(self, x, target)

    monkeypatch.setattr(SoftmaxCrossEntropy, "forward", interrupted)
    out = tmp_path / "run"
    code = main(["train", "--model", "lenet5", "--limit-train", "200", "--limit-test", "20",
                 "--val-size", "0", "--batch-size", "50", "--epochs", "1", "--no-progress",
                 "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 130 and (out / "checkpoint.npz").is_file()
    assert "fit(" not in text and "resume=" not in text
    assert f"continue with the same options and --resume {out / 'checkpoint.npz'}" in text
