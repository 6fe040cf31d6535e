"""The real datasets, read from the folder ``TINYCNN_DATA`` names.

Every test skips when the variable is not set or the files are not there, saying how to
get them (``tinycnn download mnist --data-dir DIR``, then ``TINYCNN_DATA=DIR``). Expected
label counts are the published ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tinycnn.data import (
    CIFAR10,
    MNIST,
    DataLoader,
    DatasetWarning,
    compute_mean_std,
    load_embedded_mnist,
    train_val_split,
)
from tinycnn.data.mnist import EMBEDDED_PATH

ROOT = Path(os.environ["TINYCNN_DATA"]) if os.environ.get("TINYCNN_DATA") else None

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def need(*relative: str) -> Path:
    """``TINYCNN_DATA`` when it holds these files, else a skip that says how to get them."""
    dataset = "cifar10" if relative[0].startswith("cifar-10") else "mnist"
    if ROOT is None:
        pytest.skip(f"needs the real {dataset} files: set TINYCNN_DATA to a folder holding "
                    f"them, or run 'tinycnn download {dataset} --data-dir DIR' and set "
                    "TINYCNN_DATA=DIR")
    for rel in relative:
        if not (ROOT / rel).exists():
            pytest.skip(f"{ROOT / rel} is missing: run 'tinycnn download {dataset} --data-dir "
                        f"{ROOT}' or put the file there")
    return ROOT


@pytest.fixture(scope="module")
def mnist_train() -> MNIST:
    return MNIST(need("mnist/train-images-idx3-ubyte.gz"), train=True)


def test_mnist_shapes_and_label_counts(mnist_train: MNIST) -> None:
    assert mnist_train.data.shape == (60000, 1, 28, 28) and mnist_train.data.dtype == np.uint8
    assert mnist_train.targets.dtype == np.int64
    assert np.bincount(mnist_train.targets).tolist() == MNIST_TRAIN_COUNTS
    test = MNIST(need("mnist/t10k-images-idx3-ubyte.gz"), train=False)
    assert test.data.shape == (10000, 1, 28, 28)
    assert np.bincount(test.targets).tolist() == MNIST_TEST_COUNTS
    assert 0 == mnist_train.data.min() and mnist_train.data.max() == 255


def test_embedded_subset_is_the_canonical_images(mnist_train: MNIST) -> None:
    assert EMBEDDED_PATH.is_file(), "build it: python -m tinycnn.data.build_embedded"
    with np.load(EMBEDDED_PATH) as npz:
        index = npz["train_index"]
    images, labels = load_embedded_mnist(train=True)
    np.testing.assert_array_equal(images, mnist_train.data[index])
    np.testing.assert_array_equal(labels, mnist_train.targets[index])
    assert EMBEDDED_PATH.stat().st_size < 4_000_000


def test_mnist_loader_normalizes_to_zero_mean_unit_std(mnist_train: MNIST) -> None:
    mean, std = compute_mean_std(mnist_train)
    assert mean[0] == pytest.approx(0.1307, abs=1e-3) and std[0] == pytest.approx(0.3081, abs=1e-3)
    total = total_sq = count = 0.0
    for xb, _ in DataLoader(mnist_train, batch_size=2000, mean=mean, std=std):
        total += float(xb.sum(dtype=np.float64))
        total_sq += float(np.square(xb, dtype=np.float64).sum())
        count += xb.size
    m = total / count
    assert abs(m) < 1e-4
    assert np.sqrt(total_sq / count - m * m) == pytest.approx(1.0, abs=1e-4)


def test_cifar_train_shapes_counts_and_normalization() -> None:
    batches = [f"cifar-10/cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)]
    archive = "cifar-10/cifar-10-binary.tar.gz"  # what 'tinycnn download cifar10' fetches
    root = need(archive) if ROOT is not None and (ROOT / archive).exists() else need(*batches)
    train = CIFAR10(root, train=True)
    assert train.data.shape == (50000, 3, 32, 32) and train.data.dtype == np.uint8
    assert np.bincount(train.targets).tolist() == [5000] * 10
    part, val = train_val_split(train, val_size=5000, seed=0, stratify=True)
    assert len(part) == 45000 and np.bincount(val.targets).tolist() == [500] * 10
    sub = (train.data[:5000], train.targets[:5000])
    mean, std = compute_mean_std(sub)
    batches = np.concatenate([xb for xb, _ in DataLoader(sub, batch_size=1000, mean=mean,
                                                         std=std)])
    np.testing.assert_allclose(batches.mean(axis=(0, 2, 3), dtype=np.float64), 0.0, atol=1e-4)
    np.testing.assert_allclose(batches.std(axis=(0, 2, 3), dtype=np.float64), 1.0, atol=1e-4)


def test_cifar_partial_test_set_warns() -> None:
    partial = "cifar-10/partial-test/test_batch_first1000.bin"
    if ROOT is not None and not (ROOT / partial).exists():
        pytest.skip(f"{ROOT} holds no partial CIFAR-10 test set ({partial}): this check is "
                    "only for data folders that hold one instead of test_batch.bin")
    root = need(partial)
    if (root / "cifar-10" / "cifar-10-batches-bin" / "test_batch.bin").exists():
        pytest.skip("the full test_batch.bin is present, so the partial set is not used")
    with pytest.warns(DatasetWarning, match="PARTIAL test set"):
        test = CIFAR10(root, train=False)
    assert test.is_partial and test.data.shape == (1000, 3, 32, 32)
    labels = np.frombuffer((root / "cifar-10/partial-test/test_labels.bin").read_bytes(),
                           dtype=np.uint8)
    np.testing.assert_array_equal(test.targets, labels[:1000])


def test_embedded_file_rebuilds_byte_for_byte(tmp_path: Path) -> None:
    from tinycnn.data.build_embedded import build

    root = need("mnist/train-images-idx3-ubyte.gz", "mnist/t10k-images-idx3-ubyte.gz")
    out = build(root, tmp_path / "subset.npz")
    assert out.read_bytes() == EMBEDDED_PATH.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["subset.npz"]  # no temp file left
