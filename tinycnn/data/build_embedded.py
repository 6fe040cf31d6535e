"""Build the MNIST subset shipped inside tinycnn (``tinycnn/data/embedded/mnist_subset.npz``).

Run ``python -m tinycnn.data.build_embedded --source <folder with the MNIST files>``.

The subset is class-balanced and deterministic: the first ``train_per_class`` images of
each digit from the training file (1,000 each, 10,000 in all) and the first
``test_per_class`` of each digit from the test file (200 each, 2,000 in all), kept in
file order. Balanced classes keep accuracy on the subset meaningful; taking the first
images (no random draw) lets anyone rebuild the identical file from the canonical data.
Stored uint8 in a compressed ``.npz`` (byte-identical on every rebuild); ``train_index``
and ``test_index`` record which canonical images were taken.
"""

from __future__ import annotations

import argparse
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from tinycnn.data.download import data_root
from tinycnn.data.mnist import EMBEDDED_PATH, MNIST
from tinycnn.files import atomic_write


def first_per_class(labels: np.ndarray, per_class: int, num_classes: int = 10) -> np.ndarray:
    """Indices of the first ``per_class`` images of every class, in file order."""
    picks = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} images, {per_class} requested")
        picks.append(idx)
    return np.sort(np.concatenate(picks))


def build(source: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
          train_per_class: int = 1000, test_per_class: int = 200) -> Path:
    """Write the subset atomically to ``out`` (default: the packaged path) and return it."""
    out = Path(out) if out is not None else EMBEDDED_PATH
    arrays = {}
    for split, train, per_class in (("train", True, train_per_class),
                                    ("test", False, test_per_class)):
        full = MNIST(data_root(source), train=train)
        index = first_per_class(full.targets, per_class)
        arrays[f"x_{split}"] = full.data[index, 0]
        arrays[f"y_{split}"] = full.targets[index].astype(np.uint8)
        arrays[f"{split}_index"] = index.astype(np.int32)
    buffer = io.BytesIO()
    # What np.savez_compressed writes, but with a fixed timestamp on every member, so the
    # same source files always give a byte-identical .npz (np.load reads it as usual).
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array),
                                          allow_pickle=False)
    with atomic_write(out) as f:
        f.write(buffer.getvalue())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="folder with the MNIST files (default: TINYCNN_DATA "
                        "or the per-user cache)")
    parser.add_argument("--out", help=f"output file (default: {EMBEDDED_PATH})")
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args(argv)
    path = build(args.source, args.out, args.train_per_class, args.test_per_class)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
