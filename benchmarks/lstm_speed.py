"""One LSTM training step, tinycnn against PyTorch CPU, side by side in one run.

The step: forward of ``LSTM(input_size, hidden)`` over a ``(seq, batch, input_size)``
float32 batch, backward of a fixed random upstream gradient on the output sequence, and
an SGD update. The sides alternate block by block (so they share the machine's noise);
each figure is the median of ``--repeats`` blocks after one warm-up step each.

    python benchmarks/lstm_speed.py                  # batch 64, sequence 100, hidden 256
    python benchmarks/lstm_speed.py --repeats 3 --seq 20

Prints milliseconds per step for each side and the ratio tinycnn / PyTorch: ``tinycnn``
is the accelerated layer (the twin in ``tinycnn/fast/recurrent.py``), ``reference`` the
readable loop (``--no-reference`` skips it). Without PyTorch that column is left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# tinycnn first: its thread defaults (OPENBLAS_THREAD_TIMEOUT) must precede NumPy's import
import tinycnn  # noqa: E402, I001
import numpy as np  # noqa: E402
import tinycnn.fast.recurrent  # noqa: E402, F401  (registers the recurrent twins)
from tinycnn.layers.recurrent import LSTM  # noqa: E402
from tinycnn.optim import SGD  # noqa: E402


def tinycnn_step(args: argparse.Namespace, fast: bool = True) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    lstm = tinycnn.accelerate(LSTM(args.input_size, args.hidden, rng=rng), fast)
    opt = SGD(lstm.parameters(), lr=0.01)
    x = rng.standard_normal((args.seq, args.batch, args.input_size)).astype(np.float32)
    g = rng.standard_normal((args.seq, args.batch, args.hidden)).astype(np.float32)

    def step() -> None:
        lstm.zero_grad()
        lstm(x)
        lstm.backward(g)
        opt.step()

    return step


def torch_step(args: argparse.Namespace) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(args.input_size, args.hidden)
    opt = torch.optim.SGD(lstm.parameters(), lr=0.01)
    x = torch.randn(args.seq, args.batch, args.input_size)
    g = torch.randn(args.seq, args.batch, args.hidden)

    def step() -> None:
        opt.zero_grad()
        out, _ = lstm(x)
        out.backward(g)
        opt.step()

    return step


def time_block(step: Callable[[], None], min_seconds: float) -> float:
    """Seconds per step over whole steps lasting at least ``min_seconds``."""
    runs, start = 0, time.perf_counter()
    while True:
        step()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per side")
    parser.add_argument("--min-block", type=float, default=0.5, help="seconds per block")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the (slower) reference loop")
    args = parser.parse_args(argv)

    sides = {"tinycnn": tinycnn_step(args)}
    if not args.no_reference:
        sides["reference"] = tinycnn_step(args, fast=False)
    if importlib.util.find_spec("torch") is not None:
        sides["pytorch"] = torch_step(args)
    else:
        print("PyTorch is not installed: timing tinycnn only")
    for step in sides.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, step in sides.items():
            times[name].append(time_block(step, args.min_block))
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    print(f"LSTM training step: batch {args.batch}, sequence {args.seq}, input "
          f"{args.input_size}, hidden {args.hidden}, float32, {os.cpu_count()} CPUs, "
          f"median of {args.repeats}")
    for name, ms in medians.items():
        print(f"  {name:9s} {ms:9.1f} ms")
    if "pytorch" in medians:
        print(f"  ratio tinycnn / pytorch: {medians['tinycnn'] / medians['pytorch']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
