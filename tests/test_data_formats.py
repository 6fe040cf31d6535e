"""IDX and CIFAR-10 binary parsing, file discovery, fallbacks and the train/val split.

Every file here is written by the test itself in the exact on-disk format.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinycnn.data import (
    CIFAR10,
    MNIST,
    ArrayDataset,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetWarning,
    FashionMNIST,
    data_root,
    load_embedded_mnist,
    load_mnist,
    parse_cifar_batch,
    parse_idx,
    read_idx,
    train_val_split,
)
from tinycnn.data import mnist as mnist_mod


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array: magic (type 0x08, ndim), big-endian dims, data."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx_pair(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray,
                   gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", images),
                      (f"{prefix}-labels-idx1-ubyte", labels)):
        raw = idx_bytes(arr)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)


def small_mnist(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, size=n).astype(np.uint8))


def cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: label byte, then R, G, B planes, each 32x32 row by row."""
    rec = np.concatenate([labels.astype(np.uint8)[:, None],
                          images.reshape(len(images), -1)], axis=1)
    return rec.astype(np.uint8).tobytes()


def small_cifar(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, 10, size=n).astype(np.uint8))


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("sub", ["mnist", ""], ids=["root/mnist", "root"])
def test_mnist_reads_idx_files(tmp_path: Path, gz: bool, sub: str) -> None:
    images, labels = small_mnist(12, seed=1)
    write_idx_pair(tmp_path / sub if sub else tmp_path, "train", images, labels, gz)
    ds = MNIST(tmp_path, train=True)
    assert ds.data.shape == (12, 1, 28, 28) and ds.data.dtype == np.uint8
    assert ds.targets.shape == (12,) and ds.targets.dtype == np.int64
    np.testing.assert_array_equal(ds.data[:, 0], images)
    np.testing.assert_array_equal(ds.targets, labels)
    assert len(ds) == 12
    img, label = ds[3]
    assert img.shape == (1, 28, 28) and label == labels[3] and isinstance(label, int)
    assert not ds.is_subset


def test_mnist_test_split_uses_t10k_files(tmp_path: Path) -> None:
    tr_images, tr_labels = small_mnist(5, seed=2)
    te_images, te_labels = small_mnist(7, seed=3)
    write_idx_pair(tmp_path / "mnist", "train", tr_images, tr_labels, gz=True)
    write_idx_pair(tmp_path / "mnist", "t10k", te_images, te_labels, gz=False)
    assert len(MNIST(tmp_path, train=True)) == 5
    test = MNIST(tmp_path, train=False)
    np.testing.assert_array_equal(test.data[:, 0], te_images)


def test_fashion_mnist_reads_its_own_folder(tmp_path: Path) -> None:
    images, labels = small_mnist(6, seed=4)
    write_idx_pair(tmp_path / "fashion-mnist", "t10k", images, labels, gz=True)
    ds = FashionMNIST(tmp_path, train=False)
    np.testing.assert_array_equal(ds.targets, labels)
    assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10
    with pytest.raises(DatasetNotFoundError, match="fashion-mnist"):
        FashionMNIST(tmp_path, train=True)


def test_parse_idx_decodes_big_endian_header_and_wider_types() -> None:
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    raw = (0x0C02).to_bytes(4, "big") + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    out = parse_idx(raw + arr.tobytes())
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3))


def test_idx_bad_magic_is_a_clear_error(tmp_path: Path) -> None:
    images, labels = small_mnist(4)
    write_idx_pair(tmp_path, "train", images, labels, gz=False)
    # A label file where the image file should be: magic 2049 instead of 2051.
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(DatasetFormatError, match=r"magic number 2049.*expected 2051"):
        MNIST(tmp_path)
    with pytest.raises(DatasetFormatError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04 not idx at all")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_idx_truncated_file_is_a_clear_error(tmp_path: Path, gz: bool) -> None:
    images, labels = small_mnist(4)
    raw = idx_bytes(images)[:-100]
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DatasetFormatError, match=r"truncated.*\(4, 28, 28\).*3036 bytes"):
        read_idx(path, 2051)
    with pytest.raises(DatasetFormatError, match="too long"):
        parse_idx(idx_bytes(images) + b"\x00", "x", 2051)
    with pytest.raises(DatasetFormatError, match="truncated IDX header"):
        parse_idx(idx_bytes(images)[:9])


def test_broken_gzip_is_a_clear_error(tmp_path: Path) -> None:
    images, _ = small_mnist(4)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-30])
    with pytest.raises(DatasetFormatError, match="broken gzip"):
        read_idx(path)


def test_image_label_count_mismatch_and_bad_label(tmp_path: Path) -> None:
    images, labels = small_mnist(6)
    write_idx_pair(tmp_path, "train", images, labels[:5], gz=False)
    with pytest.raises(DatasetFormatError, match="holds 6 images but .* 5 labels"):
        MNIST(tmp_path)
    bad = labels.copy()
    bad[2] = 10
    write_idx_pair(tmp_path, "train", images, bad, gz=False)
    with pytest.raises(DatasetFormatError, match="label 10 outside 0..9"):
        MNIST(tmp_path)


def test_missing_mnist_names_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        MNIST(tmp_path, train=False)
    text = str(info.value)
    for needed in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                   str(tmp_path / "mnist"), "download=True", "9fb629c4189551a2d022fa330f9573f3",
                   "ossci-datasets"):
        assert needed in text
    with pytest.raises(DatasetNotFoundError):
        load_mnist(tmp_path, allow_embedded=False)


# ----------------------------------------------------------------------------- embedded


def test_embedded_fallback_warns_and_names_what_was_missing(tmp_path: Path) -> None:
    with pytest.warns(DatasetWarning) as record:
        ds = MNIST(tmp_path, train=True, fallback="embedded")
    text = str(record[0].message)
    assert "train-images-idx3-ubyte" in text and str(tmp_path / "mnist") in text
    assert "embedded MNIST subset" in text
    assert ds.is_subset and ds.source == "embedded"
    assert ds.data.shape == (10000, 1, 28, 28) and ds.data.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(ds.targets, minlength=10), np.full(10, 1000))
    with pytest.warns(DatasetWarning):
        test = load_mnist(tmp_path, train=False)
    assert test.data.shape == (2000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(test.targets, minlength=10), np.full(10, 200))


def test_full_mnist_wins_over_embedded(tmp_path: Path) -> None:
    images, labels = small_mnist(9)
    write_idx_pair(tmp_path / "mnist", "train", images, labels, gz=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_mnist(tmp_path)
    assert len(ds) == 9 and not ds.is_subset


def test_embedded_file_missing_says_how_to_rebuild(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist_mod, "EMBEDDED_PATH", tmp_path / "nope.npz")
    with pytest.raises(DatasetNotFoundError, match="build_embedded"):
        load_embedded_mnist()


def test_fallback_argument_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fallback"):
        MNIST(tmp_path, fallback="zeros")
    with pytest.raises(ValueError, match="no embedded subset"):
        FashionMNIST(tmp_path, fallback="embedded")


def test_data_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYCNN_DATA", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "a"
    assert data_root(tmp_path / "b") == tmp_path / "b"
    monkeypatch.delenv("TINYCNN_DATA")
    assert data_root() == tmp_path / "cache" / "tinycnn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "tinycnn"


# ----------------------------------------------------------------------------- CIFAR-10


def write_cifar_batches(folder: Path, n_per_batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    all_x, all_y = [], []
    for i in range(1, 6):
        x, y = small_cifar(n_per_batch, seed=10 + i)
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_records(x, y))
        all_x.append(x)
        all_y.append(y)
    x, y = small_cifar(4, seed=99)
    (folder / "test_batch.bin").write_bytes(cifar_records(x, y))
    return np.concatenate(all_x), np.concatenate(all_y)


def test_cifar_record_layout() -> None:
    # Record: label, then the red, green and blue planes, each 32 rows of 32 bytes.
    planes = np.arange(3 * 1024, dtype=np.int64) % 251
    raw = bytes([7]) + planes.astype(np.uint8).tobytes()
    images, labels = parse_cifar_batch(raw)
    assert images.shape == (1, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == [7] and labels.dtype == np.int64
    np.testing.assert_array_equal(images[0, 1, 2, 5], planes[1024 + 2 * 32 + 5])
    np.testing.assert_array_equal(images[0, 2, 31], planes[2048 + 31 * 32: 3072])


@pytest.mark.parametrize("layout", ["cifar-10/cifar-10-batches-bin", "cifar-10-batches-bin"])
def test_cifar_reads_batch_folders(tmp_path: Path, layout: str) -> None:
    x, y = write_cifar_batches(tmp_path / layout)
    train = CIFAR10(tmp_path, train=True)
    assert train.data.shape == (15, 3, 32, 32) and train.targets.dtype == np.int64
    np.testing.assert_array_equal(train.data, x)
    np.testing.assert_array_equal(train.targets, y)
    assert len(CIFAR10(tmp_path, train=False)) == 4
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"


@pytest.mark.parametrize("where", ["cifar-10", ""])
def test_cifar_reads_members_of_the_archive(tmp_path: Path, where: str) -> None:
    src = tmp_path / "src"
    x, y = write_cifar_batches(src / "cifar-10-batches-bin")
    root = tmp_path / "root"
    (root / where).mkdir(parents=True)
    with tarfile.open(root / where / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    train = CIFAR10(root, train=True)
    np.testing.assert_array_equal(train.data, x)
    assert train.source.endswith("cifar-10-binary.tar.gz")
    assert not (root / "cifar-10-batches-bin").exists()  # read in memory, never extracted


def test_cifar_bad_files_are_clear_errors(tmp_path: Path) -> None:
    x, y = small_cifar(2, seed=0)
    raw = cifar_records(x, y)
    with pytest.raises(DatasetFormatError, match="not a whole number of 3073-byte"):
        parse_cifar_batch(raw[:-1], "data_batch_1.bin")
    bad = bytearray(raw)
    bad[3073] = 12  # label byte of record 1
    with pytest.raises(DatasetFormatError, match="record 1 has label byte 12"):
        parse_cifar_batch(bytes(bad))


def test_cifar_missing_names_archive_and_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10(tmp_path, train=True)
    text = str(info.value)
    for needed in ("data_batch_1.bin", "cifar-10-binary.tar.gz", str(tmp_path / "cifar-10"),
                   "c32a1d4ab5d03f1284b67883e8d87530"):
        assert needed in text


def write_partial_test(root: Path, n: int = 20, total: int = 100) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    folder = root / "cifar-10" / "partial-test"
    folder.mkdir(parents=True)
    x, y = small_cifar(n, seed=5)
    all_labels = np.random.default_rng(6).integers(0, 10, size=total).astype(np.uint8)
    all_labels[:n] = y
    (folder / "test_batch_first1000.bin").write_bytes(cifar_records(x, y))
    (folder / "test_labels.bin").write_bytes(all_labels.tobytes())
    return x, y


def test_cifar_partial_test_set_loads_with_a_warning(tmp_path: Path) -> None:
    x, y = write_partial_test(tmp_path)
    with pytest.warns(DatasetWarning, match=r"PARTIAL test set .*only the first 20"):
        test = CIFAR10(tmp_path, train=False)
    assert test.is_partial and len(test) == 20
    np.testing.assert_array_equal(test.data, x)
    np.testing.assert_array_equal(test.targets, y)


def test_cifar_partial_test_labels_must_agree(tmp_path: Path) -> None:
    write_partial_test(tmp_path)
    labels_path = tmp_path / "cifar-10" / "partial-test" / "test_labels.bin"
    labels = np.frombuffer(labels_path.read_bytes(), dtype=np.uint8).copy()
    labels[0] = (labels[0] + 1) % 10
    labels_path.write_bytes(labels.tobytes())
    with pytest.raises(DatasetFormatError, match="disagree"):
        CIFAR10(tmp_path, train=False)


def test_cifar_full_test_batch_wins_over_partial(tmp_path: Path) -> None:
    write_partial_test(tmp_path)
    write_cifar_batches(tmp_path / "cifar-10" / "cifar-10-batches-bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        test = CIFAR10(tmp_path, train=False)
    assert len(test) == 4 and not test.is_partial


# ----------------------------------------------------------------------------- split


def coded(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel is their index (mod 256 is avoided by n <= 256)."""
    x = np.zeros((n, 1, 2, 2), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return x, (np.arange(n) % 4).astype(np.int64)


def test_train_val_split_partitions_the_set() -> None:
    x, y = coded(200)
    train, val = train_val_split((x, y), val_size=50, seed=3)
    assert len(train) == 150 and len(val) == 50
    ids_t, ids_v = train.data[:, 0, 0, 0], val.data[:, 0, 0, 0]
    assert set(ids_t).isdisjoint(ids_v) and len(set(ids_t) | set(ids_v)) == 200
    assert np.all(np.diff(ids_t.astype(int)) > 0)  # source order kept
    np.testing.assert_array_equal(train.targets, y[ids_t])
    again_t, again_v = train_val_split((x, y), val_size=50, seed=3)
    np.testing.assert_array_equal(again_v.data, val.data)
    other_v = train_val_split((x, y), val_size=50, seed=4)[1]
    assert not np.array_equal(other_v.data, val.data)


def test_train_val_split_fraction_and_stratify() -> None:
    x, y = coded(200)
    _, val = train_val_split(ArrayDataset(x, y), val_size=0.2, seed=0, stratify=True)
    assert len(val) == 40
    np.testing.assert_array_equal(np.bincount(val.targets), np.full(4, 10))
    with pytest.raises(ValueError, match="val_size"):
        train_val_split((x, y), val_size=200)


def test_cifar_split_keeps_classes(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path / "cifar-10-batches-bin", n_per_batch=4)
    train, val = train_val_split(CIFAR10(tmp_path), val_size=5, seed=0)
    assert len(train) == 15 and len(val) == 5 and val.classes == CIFAR10.classes


def test_tar_members_are_read_not_extracted_even_with_odd_paths(tmp_path: Path) -> None:
    x, y = small_cifar(2, seed=1)
    raw = cifar_records(x, y)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for i in range(1, 6):
            info = tarfile.TarInfo(f"../evil/data_batch_{i}.bin")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    train = CIFAR10(root)
    assert len(train) == 10
    assert not (tmp_path / "evil").exists()


def _peak_bytes(action) -> tuple[object, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            result: object = action()
        except DatasetFormatError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gz_header_is_checked_before_the_body_is_inflated(tmp_path: Path) -> None:
    # 64 MB of zeros behind a label magic, read as images: refused from the first bytes.
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(1, np.uint8)) + bytes(64 << 20)))
    error, peak = _peak_bytes(lambda: read_idx(path, mnist_mod.IDX_IMAGES))
    assert isinstance(error, DatasetFormatError) and "not an IDX image file" in str(error)
    assert peak < 4 << 20


def test_gz_body_is_read_no_further_than_the_header_announces(tmp_path: Path) -> None:
    images, _ = small_mnist(10)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(images) + bytes(32 << 20)))  # 32 MB extra
    error, peak = _peak_bytes(lambda: read_idx(path, mnist_mod.IDX_IMAGES))
    assert isinstance(error, DatasetFormatError) and "too long" in str(error)
    assert peak < 4 << 20


def test_a_header_larger_than_its_gzip_can_hold_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    header = (2051).to_bytes(4, "big") + (10**9).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path.write_bytes(gzip.compress(header + bytes(1000)))
    error, peak = _peak_bytes(lambda: read_idx(path, mnist_mod.IDX_IMAGES))
    assert isinstance(error, DatasetFormatError) and "more than a" in str(error)
    assert peak < 1 << 20


def test_streamed_read_matches_parse_idx(tmp_path: Path) -> None:
    images, _ = small_mnist(7)
    raw = idx_bytes(images)
    for name, data in (("plain", raw), ("packed.gz", gzip.compress(raw))):
        (tmp_path / name).write_bytes(data)
        got = read_idx(tmp_path / name, mnist_mod.IDX_IMAGES, (28, 28))
        assert np.array_equal(got, parse_idx(raw)) and got.flags.writeable


def test_mnist_refuses_images_of_another_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_idx_pair(tmp_path / "mnist", "train", rng.integers(0, 256, (5, 32, 32), np.uint8),
                   np.zeros(5, np.uint8), gz=True)
    with pytest.raises(DatasetFormatError, match=r"items of shape \(32, 32\), expected"):
        MNIST(tmp_path, train=True)


def test_not_found_error_carries_what_a_front_end_needs(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        MNIST(tmp_path, train=False)
    exc = info.value
    assert exc.dataset == "mnist" and exc.folder == tmp_path / "mnist"
    assert exc.missing == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert exc.download_error is None and str(exc).startswith("MNIST test set not found")
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10(tmp_path, train=True)
    assert info.value.dataset == "cifar10" and info.value.folder == tmp_path / "cifar-10"
