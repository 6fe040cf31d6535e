"""Checked, atomic downloads with mirrors, and the folder datasets live in.

``download_file(urls, dest, md5=..., size=...)`` tries each URL in order (the canonical
host first, then mirrors). Every attempt streams into a hidden temporary file next to ``dest``,
checks the checksum, and only then renames it onto ``dest`` (``os.replace`` is atomic
on one file system). A failed or corrupt attempt is deleted and retried once; when
every source fails, :class:`DownloadError` says which file to put where, so an
offline machine can be set up by hand. No partial file is ever left behind. With ``size``
known, an answer that grows past it (plus a small margin) is cut off, so a wrong or
hostile server cannot fill the disk.

The function used to be called ``download``, the name of this module: this module is
callable, so ``from tinycnn.data import download; download(urls, dest)`` still works,
while ``import tinycnn.data.download`` gives the module.

Tests pass ``file://`` URLs, or an ``opener`` of their own; nothing here needs the
network to be tested.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from tinycnn.files import atomic_write

Opener = Callable[..., IO[bytes]]

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """Every source of a file failed; the message lists the attempts and the manual fix.

    ``attempts`` holds just the list of failed attempts, for callers that write their own
    instructions (a dataset with several missing files lists them all).
    """

    def __init__(self, message: str, attempts: str = "") -> None:
        super().__init__(message)
        self.attempts = attempts or message


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder datasets are read from and downloaded to.

    ``root`` when given; else ``$TINYCNN_DATA``; else ``$XDG_CACHE_HOME/tinycnn``;
    else ``~/.cache/tinycnn``.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("TINYCNN_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "tinycnn"


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected(md5: str | None, sha256: str | None) -> tuple[str, str] | None:
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    return None


def check_file(path: str | os.PathLike, md5: str | None = None, sha256: str | None = None) -> bool:
    """True when ``path`` exists and matches the given checksum (any file when none given)."""
    path = Path(path)
    if not path.is_file():
        return False
    want = _expected(md5, sha256)
    return want is None or file_digest(path, want[0]) == want[1]


def size_cap(size: int | None) -> int | None:
    """The most bytes accepted for a file of known ``size``: the size plus 1 % and 64 KiB."""
    return None if size is None else size + size // 100 + (64 << 10)


class TooLargeError(DownloadError):
    """An answer larger than the file it should be (a wrong address, or a hostile server)."""


def _fetch_once(url: str, dest: Path, want: tuple[str, str] | None, opener: Opener,
                timeout: float, cap: int | None) -> None:
    """Stream ``url`` into a temp file beside ``dest``, verify it, rename it into place."""
    # atomic_write removes the temp file on any error, Ctrl-C included: no partial file.
    with atomic_write(dest) as out:
        h = hashlib.new(want[0]) if want else None
        with opener(url, timeout=timeout) as response:
            announced = _content_length(response)
            if cap is not None and announced is not None and announced > cap:
                raise TooLargeError(f"{url} announces {announced:,} bytes; {dest.name} has at "
                                    f"most {cap:,}")
            received = 0
            for chunk in iter(lambda: response.read(CHUNK), b""):
                received += len(chunk)
                if cap is not None and received > cap:
                    raise TooLargeError(f"{url} sent more than {cap:,} bytes; {dest.name} is "
                                        "smaller: stopped")
                out.write(chunk)
                if h is not None:
                    h.update(chunk)
        if want is not None and h.hexdigest() != want[1]:
            raise DownloadError(
                f"checksum mismatch for {url}: {want[0]} {h.hexdigest()}, expected {want[1]}"
            )


def _content_length(response: Any) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _default_opener(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "tinycnn-data/0.1"})
    return urllib.request.urlopen(request, timeout=timeout)


def manual_fix(files: Sequence[tuple[str, Sequence[str], str | None]], folder: Path) -> str:
    """The 'put these files there' instructions for an offline machine.

    ``files``: ``(file name, URLs, md5 or None)`` for each file that is missing.
    """
    lines = [f"To set this up by hand (e.g. on an offline machine), put these files in {folder}/:"]
    for name, urls, md5 in files:
        check = f"  (md5 {md5})" if md5 else ""
        lines.append(f"  - {name}{check}")
        lines.extend(f"      from {u}" for u in urls)
    lines.append("or point TINYCNN_DATA at a folder that already holds them.")
    return "\n".join(lines)


def download_file(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    md5: str | None = None,
    sha256: str | None = None,
    *,
    size: int | None = None,
    retries: int = 1,
    timeout: float = 60.0,
    opener: Opener | None = None,
    verbose: bool = True,
) -> Path:
    """Download ``dest`` from the first URL that works and passes the checksum.

    ``urls``: one URL or the canonical URL followed by mirrors. ``md5`` / ``sha256``:
    the expected digest (sha256 wins when both are given). ``size``: the file's size in
    bytes when known; an answer larger than :func:`size_cap` of it is stopped. Each URL
    gets ``1 + retries`` attempts, except after an HTTP 4xx answer or an oversized one,
    which a retry would not change. A ``dest`` that already matches the checksum is kept
    and nothing is fetched. ``opener(url, timeout=...)`` returns a binary file-like object
    (default: urllib). ``verbose`` prints each attempt, saying which ones are retries.

    Raises :class:`DownloadError` naming every attempt and what to put where by hand.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("download_file() needs at least one URL")
    dest = Path(dest)
    want = _expected(md5, sha256)
    if check_file(dest, md5, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or _default_opener
    failures: list[str] = []
    last = ""
    for number, url in enumerate(url_list):
        for attempt in range(1 + retries):
            if verbose:
                if attempt:
                    print(f"tinycnn: retry {attempt} of {retries} for {url} (the last attempt "
                          f"failed: {last})")
                elif number:
                    print(f"tinycnn: trying mirror {url} -> {dest}")
                else:
                    print(f"tinycnn: downloading {url} -> {dest}")
            try:
                _fetch_once(url, dest, want, opener, timeout, size_cap(size))
                return dest
            # HTTPException: a connection cut mid-body (IncompleteRead) is no OSError, but
            # a retry or a mirror can still succeed.
            except (OSError, urllib.error.URLError, http.client.HTTPException, DownloadError,
                    ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                failures.append(f"  {url} (attempt {attempt + 1}): {last}")
                if isinstance(exc, TooLargeError) or (
                        isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500):
                    break
    attempts = f"could not download {dest.name}; every source failed:\n" + "\n".join(failures)
    raise DownloadError(
        attempts + "\n" + manual_fix([(dest.name, url_list, md5)], dest.parent), attempts
    )


class _CallableModule(types.ModuleType):
    """Lets ``tinycnn.data.download(...)``, the function's old name, keep working."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return download_file(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
