"""Does a hand-written training loop run as fast whatever the user imported first?

Each case runs in a fresh process, the way a user's script would: NumPy imported before
tinycnn or after it, a model built by hand and switched on with ``tinycnn.accelerate``,
then ``model(x)``, the loss, ``model.backward`` and ``optimizer.step()``. The cases
alternate, and each figure is the median of the per-process medians::

    python benchmarks/import_order.py --nets deep_convnet,resnet20,simple_convnet,lenet5

Columns: NumPy first / tinycnn first (the same code otherwise), and the accelerated
model's default (``model.backward`` returns the gradient of the images) against
``accelerate(model, input_grad=False)``, which the Trainer uses during ``fit`` and
``benchmarks/speed.py`` times (the first layer computes no gradient of the images).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

CHILD = """
import sys, time
numpy_first, net = sys.argv[1] == "1", sys.argv[2]
input_grad, steps = sys.argv[3] == "1", int(sys.argv[4])
if numpy_first:
    import numpy
import tinycnn
import numpy as np
from tinycnn import losses, models, optim

shape = (3, 32, 32) if net.startswith("resnet") else (1, 28, 28)
model = tinycnn.accelerate(getattr(models, net)(seed=0), input_grad=input_grad)
model.train()
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss = losses.SoftmaxCrossEntropy()
rng = np.random.default_rng(0)
x = rng.standard_normal((128, *shape)).astype(np.float32)
y = rng.integers(0, 10, 128)
times = []
for _ in range(steps):
    start = time.perf_counter()
    loss(model(x), y)
    opt.zero_grad()
    model.backward(loss.backward())
    opt.step()
    times.append(time.perf_counter() - start)
print(1000 * sorted(times[2:])[(steps - 2) // 2])
"""

CASES = (("numpy first, default", True, True), ("tinycnn first, default", False, True),
         ("numpy first, input_grad=False", True, False),
         ("tinycnn first, input_grad=False", False, False))


def run(numpy_first: bool, net: str, input_grad: bool, steps: int) -> float:
    args = [sys.executable, "-c", CHILD, str(int(numpy_first)), net, str(int(input_grad)),
            str(steps)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", default="deep_convnet,resnet20,simple_convnet,lenet5")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per case")
    parser.add_argument("--steps", type=int, default=12, help="training steps per process")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for net in args.nets.split(","):
        samples: dict[str, list[float]] = {label: [] for label, _, _ in CASES}
        for _ in range(args.repeats):
            for label, numpy_first, input_grad in CASES:
                samples[label].append(run(numpy_first, net, input_grad, args.steps))
        results[net] = {label: statistics.median(v) for label, v in samples.items()}
    from speed import _cpu_name

    print(f"Training step at batch 128, ms (median of {args.repeats} processes a case), "
          f"{_cpu_name()}")
    print(f"| net | {' | '.join(label for label, _, _ in CASES)} | NumPy first / tinycnn first |")
    print("|---|" + "---|" * (len(CASES) + 1))
    for net, row in results.items():
        ratio = row["numpy first, default"] / row["tinycnn first, default"]
        print(f"| {net} | {' | '.join(f'{row[label]:.1f}' for label, _, _ in CASES)} "
              f"| {ratio:.2f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"cpu": _cpu_name(), "ms": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
