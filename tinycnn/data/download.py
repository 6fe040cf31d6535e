"""Checked, atomic downloads with mirrors, and the folder datasets live in.

``download(urls, dest, md5=...)`` tries each URL in order (the canonical host first,
then mirrors). Every attempt streams into a hidden temporary file next to ``dest``,
checks the checksum, and only then renames it onto ``dest`` (``os.replace`` is atomic
on one file system). A failed or corrupt attempt is deleted and retried once; when
every source fails, :class:`DownloadError` says which file to put where, so an
offline machine can be set up by hand. No partial file is ever left behind.

Tests pass ``file://`` URLs, or an ``opener`` of their own; nothing here needs the
network to be tested.
"""

from __future__ import annotations

import hashlib
import http.client
import os
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


def _fetch_once(url: str, dest: Path, want: tuple[str, str] | None, opener: Opener,
                timeout: float) -> None:
    """Stream ``url`` into a temp file beside ``dest``, verify it, rename it into place."""
    # atomic_write removes the temp file on any error, Ctrl-C included: no partial file.
    with atomic_write(dest) as out:
        h = hashlib.new(want[0]) if want else None
        with opener(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                if h is not None:
                    h.update(chunk)
        if want is not None and h.hexdigest() != want[1]:
            raise DownloadError(
                f"checksum mismatch for {url}: {want[0]} {h.hexdigest()}, expected {want[1]}"
            )


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


def download(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    md5: str | None = None,
    sha256: str | None = None,
    *,
    retries: int = 1,
    timeout: float = 60.0,
    opener: Opener | None = None,
    verbose: bool = True,
) -> Path:
    """Download ``dest`` from the first URL that works and passes the checksum.

    ``urls``: one URL or the canonical URL followed by mirrors. ``md5`` / ``sha256``:
    the expected digest (sha256 wins when both are given). Each URL gets ``1 + retries``
    attempts, except after an HTTP 4xx answer, which a retry would not change. A
    ``dest`` that already matches the checksum is kept and nothing is fetched.
    ``opener(url, timeout=...)`` returns a binary file-like object (default: urllib).

    Raises :class:`DownloadError` naming every attempt and what to put where by hand.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("download() needs at least one URL")
    dest = Path(dest)
    want = _expected(md5, sha256)
    if check_file(dest, md5, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or _default_opener
    failures = []
    for url in url_list:
        for attempt in range(1 + retries):
            try:
                if verbose:
                    print(f"tinycnn: downloading {url} -> {dest}")
                _fetch_once(url, dest, want, opener, timeout)
                return dest
            # HTTPException: a connection cut mid-body (IncompleteRead) is no OSError, but
            # a retry or a mirror can still succeed.
            except (OSError, urllib.error.URLError, http.client.HTTPException, DownloadError,
                    ValueError) as exc:
                failures.append(f"  {url} (attempt {attempt + 1}): {type(exc).__name__}: {exc}")
                if isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500:
                    break
    attempts = f"could not download {dest.name}; every source failed:\n" + "\n".join(failures)
    raise DownloadError(
        attempts + "\n" + manual_fix([(dest.name, url_list, md5)], dest.parent), attempts
    )
