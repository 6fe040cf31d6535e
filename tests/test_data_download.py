"""Downloads: mirrors, checksums, retries, atomic writes and offline messages (no network).

Sources are ``file://`` URLs of files the tests create, or an injected opener.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from tinycnn.data import (
    CIFAR10,
    MNIST,
    DatasetNotFoundError,
    DatasetWarning,
    DownloadError,
    check_file,
    download_file,
    file_digest,
)
from tinycnn.data import cifar as cifar_mod

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one 1 MiB chunk


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "server"
    folder.mkdir()
    (folder / "blob.bin").write_bytes(PAYLOAD)
    (folder / "corrupt.bin").write_bytes(PAYLOAD[:-1] + b"X")
    return folder


class CountingOpener:
    """Serves a scripted byte string per call, or raises; records every URL asked for."""

    def __init__(self, answers: list[bytes | Exception]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, url: str, timeout: float) -> io.BytesIO:
        self.calls.append(url)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return io.BytesIO(answer)


def test_success_writes_the_file_atomically(tmp_path: Path, source: Path) -> None:
    dest = tmp_path / "out" / "blob.bin"
    got = download_file((source / "blob.bin").as_uri(), dest, md5=md5(PAYLOAD), verbose=False)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == []
    assert file_digest(dest, "sha256") == hashlib.sha256(PAYLOAD).hexdigest()
    assert check_file(dest, sha256=hashlib.sha256(PAYLOAD).hexdigest())


def test_mirror_used_after_the_first_url_fails(tmp_path: Path, source: Path) -> None:
    dest = tmp_path / "blob.bin"
    urls = [(source / "missing.bin").as_uri(), (source / "blob.bin").as_uri()]
    download_file(urls, dest, md5=md5(PAYLOAD), verbose=False)
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == []


def test_checksum_mismatch_is_removed_retried_once_then_reported(tmp_path: Path) -> None:
    opener = CountingOpener([b"bad one", b"bad two"])
    dest = tmp_path / "data" / "train.gz"
    with pytest.raises(DownloadError) as info:
        download_file("https://example.invalid/train.gz", dest, md5=md5(PAYLOAD), opener=opener,
                 verbose=False)
    assert opener.calls == ["https://example.invalid/train.gz"] * 2
    assert not dest.exists() and leftovers(dest.parent) == []
    text = str(info.value)
    assert "checksum mismatch" in text and "attempt 2" in text
    assert "train.gz" in text and str(dest.parent) in text and md5(PAYLOAD) in text


def test_corrupt_first_attempt_then_good_retry_succeeds(tmp_path: Path) -> None:
    opener = CountingOpener([b"truncated", PAYLOAD])
    dest = tmp_path / "f.bin"
    download_file("https://example.invalid/f.bin", dest, md5=md5(PAYLOAD), opener=opener,
             verbose=False)
    assert len(opener.calls) == 2 and dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == []


def test_mismatch_on_every_source_with_file_urls(tmp_path: Path, source: Path) -> None:
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match="every source failed"):
        download_file([(source / "corrupt.bin").as_uri()] * 2, dest, md5=md5(PAYLOAD),
                      verbose=False)
    assert list(tmp_path.iterdir()) == [source]


class BreaksMidway(io.BytesIO):
    def read(self, size: int = -1) -> bytes:
        if self.tell() > 0:
            raise ConnectionResetError("connection dropped")
        return super().read(size)


def test_connection_dropped_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    def opener(url: str, timeout: float) -> io.BytesIO:
        return BreaksMidway(PAYLOAD)

    with pytest.raises(DownloadError, match="ConnectionResetError"):
        download_file("https://example.invalid/x", tmp_path / "x", md5=md5(PAYLOAD), opener=opener,
                 verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_http_4xx_is_not_retried(tmp_path: Path) -> None:
    forbidden = urllib.error.HTTPError("u", 403, "Forbidden", {}, None)
    opener = CountingOpener([forbidden, PAYLOAD])
    download_file(["https://a.invalid/x", "https://b.invalid/x"], tmp_path / "x",
             md5=md5(PAYLOAD), opener=opener, verbose=False)
    assert opener.calls == ["https://a.invalid/x", "https://b.invalid/x"]


def test_existing_good_file_is_not_fetched_again(tmp_path: Path) -> None:
    dest = tmp_path / "x"
    dest.write_bytes(PAYLOAD)
    opener = CountingOpener([])
    download_file("https://a.invalid/x", dest, md5=md5(PAYLOAD), opener=opener, verbose=False)
    assert opener.calls == []


def test_existing_bad_file_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "x"
    dest.write_bytes(b"stale")
    download_file("https://a.invalid/x", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(),
             opener=CountingOpener([PAYLOAD]), verbose=False)
    assert dest.read_bytes() == PAYLOAD


# ----------------------------------------------------------------------------- datasets


def mnist_server(folder: Path, n: int = 8) -> dict[str, str]:
    """Write the four MNIST .gz files (small) into ``folder``; return their md5s."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for name, arr, magic in ((f"{prefix}-images-idx3-ubyte.gz", images, 2051),
                                 (f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)):
            header = magic.to_bytes(4, "big") + b"".join(
                d.to_bytes(4, "big") for d in arr.shape)
            data = gzip.compress(header + arr.tobytes())
            (folder / name).write_bytes(data)
            md5s[name] = md5(data)
    return md5s


def test_mnist_download_falls_back_to_the_mirror(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    md5s = mnist_server(tmp_path / "mirror")
    dead = (tmp_path / "dead").as_uri() + "/"
    monkeypatch.setattr(MNIST, "urls", (dead, (tmp_path / "mirror").as_uri() + "/"))
    monkeypatch.setattr(MNIST, "md5s", md5s)
    root = tmp_path / "root"
    ds = MNIST(root, train=True, download=True)
    assert ds.data.shape == (8, 1, 28, 28)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_mnist_offline_message_names_files_and_folder(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    dead = (tmp_path / "dead").as_uri() + "/"
    monkeypatch.setattr(MNIST, "urls", (dead,))
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError) as info:
        MNIST(root, train=False, download=True)
    text = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in text and str(root / "mnist") in text
    assert "put these files in" in text and "download failed" in text
    instructions = text[text.index("put these files in"):]
    assert "t10k-images-idx3-ubyte.gz" in instructions  # every missing file, not just the
    assert "t10k-labels-idx1-ubyte.gz" in instructions  # first one that failed
    assert text.count("put these files in") == 1
    assert [p for p in (root / "mnist").iterdir()] == []
    with pytest.warns(DatasetWarning, match="download failed"):
        sub = MNIST(root, train=False, download=True, fallback="embedded")
    assert sub.is_subset


def test_cifar_download_from_a_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    batch = tmp_path / "build" / "cifar-10-batches-bin"
    batch.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, size=(2, 3073), dtype=np.uint8)
        rec[:, 0] %= 10
        (batch / name).write_bytes(rec.tobytes())
    archive = tmp_path / "server" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batch, arcname="cifar-10-batches-bin")
    monkeypatch.setattr(cifar_mod, "ARCHIVE_URLS", ((tmp_path / "gone.tgz").as_uri(),
                                                    archive.as_uri()))
    monkeypatch.setattr(cifar_mod, "ARCHIVE_MD5", md5(archive.read_bytes()))
    root = tmp_path / "root"
    assert len(CIFAR10(root, train=True, download=True)) == 10
    assert (root / "cifar-10" / "cifar-10-binary.tar.gz").is_file()
    monkeypatch.setattr(cifar_mod, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(DatasetNotFoundError, match="could not be downloaded"):
        CIFAR10(tmp_path / "other", train=True, download=True)


def test_the_module_is_importable_and_the_old_name_still_works(tmp_path: Path,
                                                                source: Path) -> None:
    import importlib
    import types

    import tinycnn.data

    module = importlib.import_module("tinycnn.data.download")
    assert isinstance(module, types.ModuleType) and tinycnn.data.download is module
    assert module.download_file is download_file
    dest = tmp_path / "blob.bin"
    tinycnn.data.download((source / "blob.bin").as_uri(), dest, md5=md5(PAYLOAD),
                          verbose=False)
    assert dest.read_bytes() == PAYLOAD


class Endless(io.RawIOBase):
    """A server that never stops sending; counts what it sent."""

    sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:
        buffer[:] = b"\0" * len(buffer)
        Endless.sent += len(buffer)
        return len(buffer)


def test_an_answer_larger_than_the_file_is_cut_off(tmp_path: Path) -> None:
    from tinycnn.data.download import size_cap

    Endless.sent = 0

    def endless(url: str, timeout: float) -> io.BufferedReader:
        return io.BufferedReader(Endless())

    with pytest.raises(DownloadError, match="sent more than"):
        download_file(["https://a.invalid/f", "https://b.invalid/f"], tmp_path / "f",
                      md5=md5(PAYLOAD), size=len(PAYLOAD), opener=endless, verbose=False)
    # Each source stopped just past the cap, and no retry of an oversized answer.
    assert Endless.sent <= 2 * (size_cap(len(PAYLOAD)) + (1 << 20))
    assert list(tmp_path.iterdir()) == []


def test_an_announced_size_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    class Announced(io.BytesIO):
        headers = {"Content-Length": str(10**12)}

        def read(self, size: int = -1) -> bytes:
            raise AssertionError("the body must not be read")

    with pytest.raises(DownloadError, match="announces 1,000,000,000,000 bytes"):
        download_file("https://a.invalid/f", tmp_path / "f", size=1000,
                      opener=lambda url, timeout: Announced(), verbose=False)


def test_each_retry_says_it_is_one(tmp_path: Path, capsys) -> None:
    opener = CountingOpener([ConnectionResetError("reset"), ConnectionResetError("reset"),
                             PAYLOAD])
    download_file(["https://a.invalid/f", "https://b.invalid/f"], tmp_path / "f",
                  md5=md5(PAYLOAD), opener=opener)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"tinycnn: downloading https://a.invalid/f -> {tmp_path / 'f'}"
    assert lines[1].startswith("tinycnn: retry 1 of 1 for https://a.invalid/f (the last "
                               "attempt failed: ConnectionResetError: reset)")
    assert lines[2].startswith("tinycnn: trying mirror https://b.invalid/f")
