"""Hostile input for the command line, each case in its own process.

Every file the package reads (IDX and IDX.gz, CIFAR-10 batches and archives, model .npz,
checkpoint .npz, model.json, checkpoint.json) is fed to ``python -m tinycnn`` corrupt,
truncated or lying about itself. A crash then fails one test, not the run. Each case must
end with the documented exit status (2 bad usage, 1 failure), one line on stderr saying
what is wrong and what to do, and no traceback.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinycnn
from tinycnn.cli import main
from tinycnn.data import DatasetFormatError
from tinycnn.data.cifar import RECORD
from tinycnn.data.mnist import read_idx

REPO = Path(tinycnn.__file__).resolve().parents[1]
QUICK = ["--limit-train", "60", "--limit-test", "20", "--val-size", "0", "--epochs", "1",
         "--no-progress"]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> \
        subprocess.CompletedProcess[str]:
    """``python -m tinycnn ARGS`` with this checkout's tinycnn and no data location set."""
    environ = {k: v for k, v in os.environ.items() if k != "TINYCNN_DATA"}
    environ.update(PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(cwd / "cache"))
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "tinycnn", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300)


def error_line(proc: subprocess.CompletedProcess[str], command: str, code: int) -> str:
    """The one error line of a failed command, after checking status and traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and not line.startswith("tinycnn: compiling")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"tinycnn {command}: error: "), lines[0]
    return lines[0]


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.tobytes()


def good_images(n: int = 60, size: int = 28) -> bytes:
    rng = np.random.default_rng(0)
    return idx_bytes(2051, rng.integers(0, 256, (n, size, size), dtype=np.uint8))


def good_labels(n: int = 60) -> bytes:
    return idx_bytes(2049, (np.arange(n) % 10).astype(np.uint8))


def mnist_folder(root: Path, images: bytes, labels: bytes, gz: bool = False) -> Path:
    """``root/mnist`` with hostile training files and sound test files."""
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    (folder / f"train-images-idx3-ubyte{suffix}").write_bytes(images)
    (folder / f"train-labels-idx1-ubyte{suffix}").write_bytes(labels)
    (folder / "t10k-images-idx3-ubyte").write_bytes(good_images(20))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(good_labels(20))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder (model.npz, model.json, checkpoint.npz, checkpoint.json)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("TINYCNN_DATA", raising=False)
        env.setenv("XDG_CACHE_HOME", str(out.parent / "cache"))
        assert main(["train", "--model", "lenet5", *QUICK, "--out", str(out)]) == 0
    return out


# MNIST files -----------------------------------------------------------------------------
IDX_CASES = {
    "empty": (b"", good_labels(), "too short for an IDX header"),
    "short header": (good_images()[:10], good_labels(), "truncated IDX header"),
    "bad magic": (b"\x00\x00\x08\x04" + good_images()[4:], good_labels(),
                  "not an IDX image file"),
    "labels as images": (good_labels(), good_labels(), "not an IDX image file"),
    "truncated body": (good_images()[:-100], good_labels(), "truncated"),
    "too long": (good_images() + b"\x00" * 7, good_labels(), "too long"),
    "32x32 images (CIFAR-sized)": (good_images(size=32), good_labels(),
                                   "expected (28, 28)"),
    "label 200": (good_images(), idx_bytes(2049, np.full(60, 200, np.uint8)),
                  "label 200 outside 0..9"),
    "counts disagree": (good_images(), good_labels(50), "60 images but"),
}


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_hostile_mnist_files(case: str, tmp_path: Path) -> None:
    images, labels, said = IDX_CASES[case]
    data = mnist_folder(tmp_path / "data", images, labels)
    proc = run_cli("train", "--data-dir", str(data), *QUICK, "--out", str(tmp_path / "run"),
                   cwd=tmp_path)
    assert said in error_line(proc, "train", 1)
    assert not (tmp_path / "run").exists()


GZ_CASES = {
    "truncated gzip": (gzip.compress(good_images())[:-40], "broken gzip data"),
    "gzip of zeros after the magic": (gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 100),
                                      "items of shape (0, 0), expected (28, 28)"),
    "gzip of a short header": (gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5),
                               "truncated IDX header"),
    "not gzip after the magic": (b"\x1f\x8b" + b"garbage" * 10, "broken gzip data"),
    # The header promises 10**9 images: refused from the header, nothing inflated.
    "header larger than any gzip can hold": (
        gzip.compress((2051).to_bytes(4, "big") + (10**9).to_bytes(4, "big")
                      + (28).to_bytes(4, "big") * 2 + bytes(1000)),
        "more than a"),
}


@pytest.mark.parametrize("case", list(GZ_CASES))
def test_hostile_mnist_gz_files(case: str, tmp_path: Path) -> None:
    images, said = GZ_CASES[case]
    data = mnist_folder(tmp_path / "data", images, gzip.compress(good_labels()), gz=True)
    proc = run_cli("train", "--data-dir", str(data), *QUICK, "--out", str(tmp_path / "run"),
                   cwd=tmp_path)
    assert said in error_line(proc, "train", 1)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 200), st.booleans())
def test_read_idx_answers_any_bytes_with_an_array_or_a_format_error(
        junk: bytes, cut: int, compress: bool) -> None:
    import tempfile

    raw = (good_images(4)[:cut] + junk) if cut else junk
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f"
        path.write_bytes(gzip.compress(raw) if compress else raw)
        try:
            array = read_idx(path, 2051, (28, 28))
        except DatasetFormatError:
            return
        assert array.shape[1:] == (28, 28)


# CIFAR-10 files --------------------------------------------------------------------------
def cifar_root(root: Path, train_bytes: bytes) -> Path:
    folder = root / "cifar-10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(train_bytes)
    (folder / "test_batch.bin").write_bytes(bytes(RECORD * 2))
    return root


@pytest.mark.parametrize("payload, said", [
    (b"", "not a whole number of 3073-byte"),
    (bytes(RECORD * 3 - 5), "not a whole number of 3073-byte"),
    (bytes([11]) + bytes(RECORD - 1), "label byte 11"),
])
def test_hostile_cifar_batches(payload: bytes, said: str, tmp_path: Path) -> None:
    data = cifar_root(tmp_path / "data", payload)
    proc = run_cli("train", "--dataset", "cifar10", "--data-dir", str(data), *QUICK,
                   "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert said in error_line(proc, "train", 1)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3 * RECORD + 7), st.integers(0, 255))
def test_cifar_parser_answers_any_size_and_label(size: int, label: int) -> None:
    from tinycnn.data import parse_cifar_batch

    raw = bytes([label]) * size
    try:
        images, labels = parse_cifar_batch(raw)
    except DatasetFormatError:
        assert size == 0 or size % RECORD or label > 9
        return
    assert images.shape == (size // RECORD, 3, 32, 32) and (labels == label).all()


def test_truncated_cifar_archive(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = RECORD * 4
        tar.addfile(info, io.BytesIO(bytes(RECORD * 4)))
    (tmp_path / "data" / "cifar-10").mkdir(parents=True)
    archive = tmp_path / "data" / "cifar-10" / "cifar-10-binary.tar.gz"
    archive.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    proc = run_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
                   *QUICK, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "cifar-10-binary.tar.gz" in error_line(proc, "train", 1)


# model files and model.json ---------------------------------------------------------------
def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


MODEL_FILES = {
    "empty": (b"", "an empty file"),
    "a .npy array": (_npy_bytes(), "a single NumPy array (.npy)"),
    "a PNG": (b"\x89PNG\r\n\x1a\n" + bytes(50), "a PNG image"),
    "JSON": (b'{"model": "lenet5"}', "a JSON file"),
    "random bytes": (bytes(range(256)) * 4, "not a .npz archive"),
    "pickled objects": (_npz_bytes(w=np.array([{"a": 1}], dtype=object)),
                        "a damaged .npz archive"),
    "other arrays": (_npz_bytes(**{f"layer{i}.weight": np.zeros(3) for i in range(40)}),
                     "does not fit lenet5"),
}


@pytest.mark.parametrize("case", list(MODEL_FILES))
def test_hostile_model_files(case: str, trained: Path, tmp_path: Path) -> None:
    content, said = MODEL_FILES[case]
    (tmp_path / "model.npz").write_bytes(content)
    (tmp_path / "model.json").write_text((trained / "model.json").read_text())
    proc = run_cli("eval", str(tmp_path / "model.npz"), cwd=tmp_path)
    assert said in error_line(proc, "eval", 1)


def test_a_checkpoint_is_not_a_model_file(trained: Path, tmp_path: Path) -> None:
    proc = run_cli("eval", str(trained / "checkpoint.npz"), "--model", "lenet5", "--dataset",
                   "mnist", cwd=tmp_path)
    assert "is a training checkpoint, not a model file" in error_line(proc, "eval", 1)


def test_truncated_model_file(trained: Path, tmp_path: Path) -> None:
    raw = (trained / "model.npz").read_bytes()
    (tmp_path / "model.npz").write_bytes(raw[: len(raw) // 2])
    proc = run_cli("eval", str(tmp_path / "model.npz"), "--model", "lenet5", "--dataset",
                   "mnist", cwd=tmp_path)
    assert "is not a model file" in error_line(proc, "eval", 1)


MODEL_JSON = {
    "not JSON": ("{model: lenet5", "is not the JSON that train writes"),
    "a list": ("[1, 2]", "is not the JSON that train writes"),
    "num_classes ten": ({"num_classes": "ten"}, "num_classes is 'ten'"),
    "num_classes true": ({"num_classes": True}, "num_classes is True"),
    "num_classes -3": ({"num_classes": -3}, "num_classes is -3"),
    "num_classes 10**9": ({"num_classes": 10**9}, "more than half of this machine's"),
    "unknown model": ({"model": "lenet6"}, "unknown model 'lenet6'"),
    "model a number": ({"model": 5}, "unknown model 5"),
    "unknown dataset": ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
}


@pytest.mark.parametrize("case", list(MODEL_JSON))
def test_hostile_model_json(case: str, trained: Path, tmp_path: Path) -> None:
    change, said = MODEL_JSON[case]
    (tmp_path / "model.npz").write_bytes((trained / "model.npz").read_bytes())
    if isinstance(change, dict):
        config = json.loads((trained / "model.json").read_text())
        config.update(change)
        change = json.dumps(config)
    (tmp_path / "model.json").write_text(change)
    proc = run_cli("eval", str(tmp_path / "model.npz"), cwd=tmp_path)
    line = error_line(proc, "eval", 1)
    assert said in line and "model.json" in line


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(change=st.dictionaries(
    st.sampled_from(["model", "dataset", "num_classes", "in_channels"]),
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.text(max_size=8),
              st.lists(st.integers(), max_size=2)),
    min_size=1))
def test_any_model_json_is_handled(change: dict, trained: Path,
                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("json")
    (folder / "model.npz").write_bytes((trained / "model.npz").read_bytes())
    config = json.loads((trained / "model.json").read_text())
    config.update(change)
    (folder / "model.json").write_text(json.dumps(config))
    proc = run_cli("eval", str(folder / "model.npz"), "--limit-test", "20", cwd=folder)
    if proc.returncode != 0:
        error_line(proc, "eval", proc.returncode)
        assert proc.returncode in (1, 2)


# checkpoints --------------------------------------------------------------------------------
def _resume(trained: Path, tmp_path: Path, checkpoint: bytes,
            record: str | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(checkpoint)
    if record is not None:
        (tmp_path / "checkpoint.json").write_text(record)
    return run_cli("train", "--model", "lenet5", *QUICK, "--epochs", "2", "--resume", str(path),
                   "--out", str(tmp_path / "run"), cwd=tmp_path)


def _checkpoint_with_meta(trained: Path, meta: str) -> bytes:
    with np.load(trained / "checkpoint.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["meta"] = np.array(meta)
    return _npz_bytes(**arrays)


CHECKPOINTS = {
    "empty": (lambda t: b"", "an empty file"),
    "a .npy array": (lambda t: _npy_bytes(), "a single NumPy array"),
    "truncated": (lambda t: (t / "checkpoint.npz").read_bytes()[:2000], "is not a checkpoint"),
    "a model file": (lambda t: (t / "model.npz").read_bytes(), "cannot continue from"),
    "meta not JSON": (lambda t: _checkpoint_with_meta(t, "{oops"), "cannot continue from"),
    "meta of another format": (
        lambda t: _checkpoint_with_meta(t, json.dumps({"format": "other"})),
        "cannot continue from"),
    "meta a list": (lambda t: _checkpoint_with_meta(t, "[1]"), "cannot continue from"),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_hostile_checkpoints(case: str, trained: Path, tmp_path: Path) -> None:
    make, said = CHECKPOINTS[case]
    proc = _resume(trained, tmp_path, make(trained))
    assert said in error_line(proc, "train", 1)
    assert not (tmp_path / "run").exists()


def test_damaged_checkpoint_record(trained: Path, tmp_path: Path) -> None:
    proc = _resume(trained, tmp_path, (trained / "checkpoint.npz").read_bytes(), record="{x")
    assert "checkpoint.json is damaged" in error_line(proc, "train", 1)


# options ----------------------------------------------------------------------------------
def test_divergence_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("train", "--model", "lenet5", "--optimizer", "sgd", "--lr", "1000",
                   "--limit-train", "300", "--val-size", "0", "--batch-size", "50",
                   "--limit-test", "20", "--epochs", "2", "--no-progress",
                   "--out", str(tmp_path / "run"), cwd=tmp_path)
    line = error_line(proc, "train", 1)
    assert "diverged" in line and "lower --lr (it was 1000; try 100)" in line
    assert "RuntimeWarning" not in proc.stderr


@pytest.mark.parametrize("args, said", [
    (["summary", "--model", "lenet5", "--num-classes", str(10**9)],
     "more than half of this machine's"),
    (["summary", "--model", "simple_convnet", "--input-shape", "1,4000,4000"],
     "more than half of this machine's"),
    (["summary", "--model", "lenet5", "--input-shape", "1,99999,2"], "at most 4096"),
    (["summary", "--model", "lenet5", "--input-shape", "1,2,2"], "needs images of at least"),
    (["eval", "missing.npz"], "no model file at missing.npz"),
    (["train", "--data-dir", sys.executable], "is a file; it should name the folder"),
    (["train", "--resume", "missing.npz"], "no checkpoint file at missing.npz"),
])
def test_bad_usage_is_one_line_exit_2(args: list[str], said: str, tmp_path: Path) -> None:
    proc = run_cli(*args, cwd=tmp_path)
    assert said in error_line(proc, args[0], 2)


@pytest.mark.parametrize("args, said", [
    (["train", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["train", "--model", "lenet"], "unknown model 'lenet'; did you mean lenet5"),
    (["train", "--epochs", "x"], "expected a whole number >= 1, got 'x'"),
    (["train", "--lr", "nan"], "expected a finite number, got 'nan'"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_argument_errors_are_short(args: list[str], said: str, tmp_path: Path) -> None:
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and said in lines[0], proc.stderr  # the error, where help is
    assert "_int" not in proc.stderr and "simple_convnet" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "model.npz").write_bytes(b"")
    proc = run_cli("eval", str(tmp_path / "model.npz"), "--model", "lenet5", "--dataset",
                   "mnist", "--debug", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "an empty file" in proc.stderr
