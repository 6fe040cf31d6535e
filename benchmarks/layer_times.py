"""Per-layer times of a benchmark net against PyTorch CPU, layer by layer, in one run.

Every distinct (layer, input shape) of the net is timed alone, forward and backward,
tinycnn's accelerated layer against the same ``torch.nn`` layer, each side in its own
fresh processes (alternating), medians. The table shows where a net's training step
loses or wins against PyTorch::

    python benchmarks/layer_times.py --net deep_convnet --batch 128
    python benchmarks/layer_times.py --net resnet20 --repeats 7 --json out.json

Layers that cost little (Flatten, Dropout, the shortcuts) are left out. After the
layers come the loss (softmax cross-entropy on the net's logits, forward and backward)
and the SGD step over all the net's parameters, then the whole training step as
``speed.py`` times it: what the step spends outside the timed parts (Python glue, the
layers left out, caches) is the difference.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The environment before tinycnn adds its thread defaults: each side's process starts from
# it, so PyTorch never runs with tinycnn's settings (OMP_WAIT_POLICY=PASSIVE and the rest).
ENVIRON = dict(os.environ)

import tinycnn  # noqa: E402  before NumPy: its thread defaults must precede OpenBLAS's load

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import LR, NUM_CLASSES, input_shape, tinycnn_train_step, torch_train_step  # noqa: E402
from speed import _cpu_name as cpu_name  # noqa: E402

from tinycnn import backend, losses, models, optim  # noqa: E402
from tinycnn.layers import Affine, BatchNorm2D, Conv2D, MaxPool2D, ReLU  # noqa: E402


def layer_inputs(net: str, batch: int) -> list[tuple[str, Any, tuple[int, ...], int]]:
    """``(name, layer, input shape, count)`` for each distinct timed layer of ``net``."""
    model = getattr(models, net)(num_classes=10, seed=0)
    seen: dict[tuple[Any, ...], tuple[str, Any, tuple[int, ...]]] = {}
    count: dict[tuple[Any, ...], int] = {}
    timed = (Conv2D, BatchNorm2D, ReLU, MaxPool2D, Affine)

    def record(name: str, layer: Any) -> Any:
        forward = layer.forward

        def run(x: Any) -> Any:
            key = (repr(layer), tuple(x.shape))
            seen.setdefault(key, (name, layer, tuple(x.shape)))
            count[key] = count.get(key, 0) + 1
            return forward(x)

        return run

    for name, m in model.named_modules():
        if isinstance(m, timed):
            object.__setattr__(m, "forward", record(name, m))
    model.train()
    np = backend.numpy
    model(np.zeros((batch, *input_shape(net)), dtype=np.float32))
    for m in model.modules():
        m.__dict__.pop("forward", None)  # back to the class's own forward
    return [(*v, count[k]) for k, v in seen.items()]


def torch_twin(layer: Any, torch: Any) -> Any:
    nn = torch.nn
    if isinstance(layer, Conv2D):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                         layer.stride, layer.padding, layer.dilation, layer.groups,
                         layer.bias is not None)
    if isinstance(layer, BatchNorm2D):
        return nn.BatchNorm2d(layer.num_features)
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, MaxPool2D):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, Affine):
        return nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    raise TypeError(type(layer).__name__)


def time_block(fn: Any, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def _forward_backward(layer: Any, x: Any, g: Any) -> None:
    layer(x)
    layer.backward(g)


def _torch_forward_backward(twin: Any, x: Any, g: Any) -> None:
    twin(x).backward(g)


def measure_side(side: str, net: str, batch: int, steps: int) -> list[dict[str, Any]]:
    """One process, one side: forward and forward+backward time of every distinct layer."""
    np = backend.numpy
    rng = np.random.default_rng(0)
    if side == "torch":
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    rows: list[dict[str, Any]] = []
    for name, layer, shape, count in layer_inputs(net, batch):
        first = not rows  # the net's first layer: no gradient of the images, on both sides
        x = rng.standard_normal(shape).astype(np.float32)
        if side == "tinycnn":
            tinycnn.accelerate(layer)
            if first and isinstance(layer, Conv2D):
                layer.input_grad = False
            layer.train()
            g = rng.standard_normal(layer(x).shape).astype(np.float32)
            forward = functools.partial(layer, x)
            both = functools.partial(_forward_backward, layer, x, g)
        else:
            twin = torch_twin(layer, torch).train()
            tx = torch.from_numpy(x).requires_grad_(not first)
            tg = torch.from_numpy(rng.standard_normal(twin(tx).shape).astype(np.float32))
            forward = functools.partial(twin, tx)
            both = functools.partial(_torch_forward_backward, twin, tx, tg)
        both()  # warm-up: first-call costs and caches
        f = time_block(forward, steps)
        fb = time_block(both, steps)
        rows.append({"layer": f"{name} {type(layer).__name__}", "input": list(shape),
                     "count": count, "forward_ms": 1000 * f, "backward_ms": 1000 * (fb - f)})
    return rows + measure_step_parts(side, net, batch, steps)


def measure_step_parts(side: str, net: str, batch: int, steps: int) -> list[dict[str, Any]]:
    """The loss, the SGD step and the whole training step (``speed.py``'s) of one side."""
    np = backend.numpy
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, *input_shape(net))).astype(np.float32)
    t = rng.integers(0, NUM_CLASSES, batch)
    logits = rng.standard_normal((batch, NUM_CLASSES)).astype(np.float32)
    if side == "tinycnn":
        model = getattr(models, net)(num_classes=NUM_CLASSES, seed=0)
        tinycnn.accelerate(model, input_grad=False)
        loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(model, lr=LR)

        def loss() -> None:
            loss_fn(logits, t)

        def loss_both() -> None:
            loss_fn(logits, t)
            loss_fn.backward()

        step = functools.partial(tinycnn_train_step, model, x, t, opt, loss_fn)
    else:
        import torch
        import torch_nets

        torch.manual_seed(0)
        model = torch_nets.build(net, torch, NUM_CLASSES)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        tl = torch.from_numpy(logits).requires_grad_(True)
        cross_entropy = torch.nn.functional.cross_entropy

        def loss() -> None:
            cross_entropy(tl, tt)

        def loss_both() -> None:
            cross_entropy(tl, tt).backward()

        step = functools.partial(torch_train_step, torch, model, tx, tt, opt)
    step()  # warm-up; it also leaves every parameter with a gradient for opt.step
    step()
    rows = []
    f, fb = time_block(loss, steps * 4), time_block(loss_both, steps * 4)
    rows.append({"layer": "loss (softmax cross-entropy)", "input": [batch, NUM_CLASSES],
                 "count": 1, "forward_ms": 1000 * f, "backward_ms": 1000 * (fb - f)})
    rows.append({"layer": "SGD step, all parameters", "input": [], "count": 1,
                 "forward_ms": 1000 * time_block(opt.step, steps * 4), "backward_ms": 0.0})
    rows.append({"layer": WHOLE_STEP, "input": [batch, *input_shape(net)], "count": 0,
                 "forward_ms": 1000 * time_block(step, steps * 2), "backward_ms": 0.0})
    return rows


WHOLE_STEP = "whole training step"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--net", default="deep_convnet")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5,
                        help="fresh processes per side, alternating")
    parser.add_argument("--steps", type=int, default=5, help="calls per timed block")
    parser.add_argument("--json", default=None)
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)  # a worker process
    args = parser.parse_args(argv)
    if args.side:  # PyTorch's OpenMP and Numba's never share a process (they fight)
        print(json.dumps(measure_side(args.side, args.net, args.batch, args.steps)))
        return 0

    runs: dict[str, list[list[dict[str, Any]]]] = {"tinycnn": [], "torch": []}
    for _ in range(args.repeats):
        for side in runs:
            cmd = [sys.executable, __file__, "--side", side, "--net", args.net,
                   "--batch", str(args.batch), "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=ENVIRON)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def median(side: str, i: int, key: str) -> float:
        return statistics.median(run[i][key] for run in runs[side])

    rows = []
    for i, row in enumerate(runs["tinycnn"][0]):
        rows.append({**{k: row[k] for k in ("layer", "input", "count")},
                     "ours_forward_ms": median("tinycnn", i, "forward_ms"),
                     "torch_forward_ms": median("torch", i, "forward_ms"),
                     "ours_backward_ms": median("tinycnn", i, "backward_ms"),
                     "torch_backward_ms": median("torch", i, "backward_ms")})
    import torch

    print(f"{args.net}, batch {args.batch}, {cpu_name()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; ms per call, medians of {args.repeats} processes a side")
    print(f"{'layer':30s} {'input':>15s} {'n':>2s} {'fwd ours':>9s} {'torch':>7s} "
          f"{'bwd ours':>9s} {'torch':>7s} {'torch/ours':>10s}")
    keys = ("ours_forward_ms", "torch_forward_ms", "ours_backward_ms", "torch_backward_ms")
    totals = [0.0, 0.0, 0.0, 0.0]
    whole = next(r for r in rows if r["layer"] == WHOLE_STEP)
    for r in rows:
        if r is whole:
            continue
        cols = [r[k] for k in keys]
        totals = [t + r["count"] * c for t, c in zip(totals, cols, strict=True)]
        print(f"{r['layer']:30s} {'x'.join(map(str, r['input'])):>15s} {r['count']:2d} "
              f"{cols[0]:9.2f} {cols[1]:7.2f} {cols[2]:9.2f} {cols[3]:7.2f} "
              f"{(cols[1] + cols[3]) / (cols[0] + cols[2]):9.2f}x")
    ratio = (totals[1] + totals[3]) / (totals[0] + totals[2])
    print(f"{'all timed parts, times n':48s} {totals[0]:9.2f} {totals[1]:7.2f} "
          f"{totals[2]:9.2f} {totals[3]:7.2f} {ratio:9.2f}x")
    ours, theirs = whole["ours_forward_ms"], whole["torch_forward_ms"]
    print(f"{WHOLE_STEP + ' (as speed.py times it)':48s} {ours:9.2f} {theirs:7.2f} "
          f"{'':9s} {'':7s} {theirs / ours:9.2f}x")
    print(f"{'step minus the timed parts':48s} {ours - totals[0] - totals[2]:9.2f} "
          f"{theirs - totals[1] - totals[3]:7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"net": args.net, "batch": args.batch,
                                               "cpu": cpu_name(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
