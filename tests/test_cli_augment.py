"""``tinycnn train --augment NAMES`` and ``--l1``: parsing, the pipeline each name builds,
the run record and the resume check (old records included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinycnn.cli import AUGMENTATIONS, _augmentation, main, make_parser
from tinycnn.cli_errors import UsageError
from tinycnn.data import (
    ColorJitter,
    Compose,
    PCAColorJitter,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomVerticalFlip,
    pca_color_basis,
)
from tinycnn.run_files import check_run_options


@pytest.fixture
def no_data_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No --data-dir, no TINYCNN_DATA: MNIST falls back to the embedded subset."""
    monkeypatch.delenv("TINYCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tinycnn"


def parse(*argv: str):
    return make_parser().parse_args(["train", *argv])


def test_augment_forms() -> None:
    assert parse().augment is None
    assert parse("--augment").augment == "standard"  # bare: as before names existed
    assert parse("--augment", "--epochs", "2").augment == "standard"
    # canonical order (the order they are applied), each once
    assert parse("--augment", "pca,standard,jitter,pca").augment == "standard,jitter,pca"
    assert parse("--augment", "vflip, resized-crop").augment == "resized-crop,vflip"
    assert parse().l1 == 0.0 and parse("--l1", "1e-4").l1 == 1e-4


@pytest.mark.parametrize("value", ["colour", "standard,,pca", "", "Standard"])
def test_unknown_augmentations_are_a_short_usage_error(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--augment", value])
    assert exc.value.code == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("tinycnn train: error: argument --augment: unknown augmentation")
    assert "choose from " + ", ".join(AUGMENTATIONS) in first


@pytest.mark.parametrize("value", ["x", "nan", "inf"])
def test_l1_must_be_a_number(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--l1", value])
    assert exc.value.code == 2 and "argument --l1" in capsys.readouterr().err


def test_negative_l1_is_refused_in_the_options_terms(tmp_path: Path, capsys,
                                                     no_data_location: Path) -> None:
    code = main(["train", "--limit-train", "60", "--l1", "-0.1", "--no-progress",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--l1 must be >= 0" in err and "l1_" not in err
    assert not (tmp_path / "run").exists()


def test_each_name_builds_its_transform_in_order() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(30, 3, 32, 32), dtype=np.uint8)
    pipe = _augmentation("cifar10", "standard,resized-crop,vflip,jitter,pca", images)
    assert isinstance(pipe, Compose)
    assert [type(t) for t in pipe.transforms] == [RandomCrop, RandomHorizontalFlip,
                                                  RandomResizedCrop, RandomVerticalFlip,
                                                  ColorJitter, PCAColorJitter]
    pca = pipe.transforms[-1]
    vals, vecs = pca_color_basis(images)
    np.testing.assert_array_equal(pca.eigvals, vals)  # the basis of the training images
    assert pca.sigma == 0.1
    assert pipe.transforms[2].size == (32, 32)
    mnist = _augmentation("mnist", "standard", images[:, :1, :28, :28])
    assert isinstance(mnist, RandomCrop) and mnist.padding == 2
    gray = _augmentation("mnist", "jitter,pca", images[:, :1, :28, :28])
    out = gray(np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32),
               np.random.default_rng(0))
    assert out.shape == (4, 1, 28, 28) and out.dtype == np.float32


def test_train_records_the_options_and_resume_checks_them(tmp_path: Path, capsys,
                                                          no_data_location: Path) -> None:
    out = tmp_path / "run"
    base = ["train", "--model", "lenet5", "--limit-train", "120", "--limit-test", "20",
            "--val-size", "0", "--batch-size", "60", "--no-progress", "--out", str(out)]
    argv = [*base, "--epochs", "1", "--augment", "pca,standard,jitter,vflip,resized-crop",
            "--l1", "1e-3"]
    assert main(argv) == 0
    capsys.readouterr()
    options = json.loads((out / "checkpoint.json").read_text())["options"]
    assert options["augment"] == "standard,resized-crop,vflip,jitter,pca"
    assert options["l1"] == 1e-3
    assert json.loads((out / "model.json").read_text())["args"]["l1"] == 1e-3
    resume = ["--epochs", "2", "--resume", str(out / "checkpoint.npz")]
    for change, said in (
            (["--augment", "standard"], "was trained with --augment standard,resized-crop,vflip,"
                                        "jitter,pca, this run has --augment standard"),
            (["--l1", "0"], "was trained with --l1 0.001, this run has --l1 0.0")):
        args = [*argv, *change]
        code = main([*args, *resume])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and said in err, err
    # the same options, listed in another order, continue it
    assert main([*base, "--augment", "resized-crop,pca,vflip,jitter,standard", "--l1", "0.001",
                 *resume]) == 0
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2]


def _record(tmp_path: Path, options: dict) -> Path:
    checkpoint = tmp_path / "checkpoint.npz"
    checkpoint.with_suffix(".json").write_text(json.dumps({"options": options}))
    return checkpoint


def test_records_from_before_the_names_and_l1_still_resume(tmp_path: Path) -> None:
    now = {"augment": "standard", "l1": 0.0, "seed": 0}
    # Older runs recorded --augment as true/false and had no --l1 (so no L1).
    assert check_run_options(_record(tmp_path, {"augment": True, "seed": 0}), now) is None
    assert check_run_options(_record(tmp_path, {"augment": False, "seed": 0}),
                             {**now, "augment": None}) is None
    with pytest.raises(UsageError, match="trained with no --augment, this run has --augment "
                                         "standard"):
        check_run_options(_record(tmp_path, {"augment": False}), now)
    with pytest.raises(UsageError, match="trained with --augment standard, this run has "
                                         "--augment standard,pca"):
        check_run_options(_record(tmp_path, {"augment": True}), {**now, "augment": "standard,pca"})
    with pytest.raises(UsageError, match="trained with --l1 0.0, this run has --l1 0.5"):
        check_run_options(_record(tmp_path, {"augment": True}), {**now, "l1": 0.5})
