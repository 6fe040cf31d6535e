"""Small sequence data shipped in the package: a public-domain text and a time series.

Sources and licences are in ``tinycnn/data/embedded/README.md``::

    text = load_text()                      # Pride and Prejudice, chapters 1-30
    vocab = CharVocab(text)
    ids = vocab.encode(text)                # int64 array, one id per character
    series = load_sunspots()                # (3126,) monthly sunspot numbers, 1749-2009
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

EMBEDDED = Path(__file__).resolve().parent / "embedded"
TEXT_PATH = EMBEDDED / "pride_and_prejudice.txt"
SUNSPOTS_PATH = EMBEDDED / "sunspots_monthly.csv"


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"the embedded file {path} is missing; reinstall tinycnn (it ships with the package)"
        )
    return path


def load_text() -> str:
    """*Pride and Prejudice* by Jane Austen, chapters 1 to 30 (public domain, about 300 KB)."""
    return _need(TEXT_PATH).read_text(encoding="ascii")


def load_sunspots(with_dates: bool = False) -> Any:
    """Monthly mean sunspot numbers from January 1749 to June 2009 (NOAA NGDC, public domain).

    Returns a float64 array of 3,126 values; with ``with_dates=True`` also an int array
    ``(3126, 2)`` of ``(year, month)``.
    """
    table = np.loadtxt(_need(SUNSPOTS_PATH), delimiter=",", skiprows=1)
    values = table[:, 2].copy()
    if with_dates:
        return values, table[:, :2].astype(np.int64)
    return values


class CharVocab:
    """The characters of a text, each given an id: ``encode`` text to ids, ``decode`` back.

    Ids follow sorted character order, so the same text always gives the same vocabulary.
    """

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text:
            raise ValueError("CharVocab needs a non-empty string to take its characters from")
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"CharVocab.encode: characters not in the vocabulary: {unknown[:10]}")
        return np.fromiter((self.index[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids: Any) -> str:
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.chars)):
            raise ValueError(
                f"CharVocab.decode: ids must lie in [0, {len(self.chars) - 1}], "
                f"got values from {int(ids.min())} to {int(ids.max())}"
            )
        return "".join(self.chars[int(i)] for i in ids)

    def __repr__(self) -> str:
        return f"CharVocab({len(self.chars)} characters)"
