"""How long the first step's JIT compile takes on an empty Numba cache, one core or all.

Each measurement runs in a fresh process with a new, empty ``NUMBA_CACHE_DIR``: it builds
the time-to-accuracy net (``time_to_accuracy.MNIST_NET``, or ``--model NAME`` from the
zoo), calls ``tinycnn.precompile(model, x, workers=W)`` on a batch of 128, then runs one
training step and one eval forward while counting Numba's compile events (0 means the
precompile found every kernel the step needed). ``workers=0`` compiles in this process
alone, as a first step without ``precompile`` would.

    python benchmarks/compile_time.py                    # workers 0 and 1, twice each
    python benchmarks/compile_time.py --workers 0,1,3 --repeats 1 --model resnet20
    python benchmarks/compile_time.py --numba-opt 3      # the kernels at Numba's -O3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, {here!r})
import tinycnn
import numpy as np
from numba.core import event

model_name, workers = sys.argv[1], int(sys.argv[2])
if model_name == "mnist_net":
    from time_to_accuracy import MNIST_NET, build_tinycnn
    model, shape = build_tinycnn(MNIST_NET, 0), (1, 28, 28)
else:
    model = getattr(tinycnn.models, model_name)(num_classes=10, seed=0)
    shape = (3, 32, 32) if model_name.startswith(("resnet", "vgg_cifar")) else (1, 28, 28)
tinycnn.accelerate(model, input_grad=False)
rng = np.random.default_rng(0)
x = rng.standard_normal((128, *shape)).astype(np.float32)
t = rng.integers(0, 10, 128)
start = time.perf_counter()
report = tinycnn.precompile(model, x, workers=workers)
seconds = time.perf_counter() - start
compiles = []

class Count(event.Listener):
    def on_start(self, ev):
        compiles.append(ev.data["dispatcher"].py_func.__name__)

    def on_end(self, ev):
        pass

event.register("numba:compile", Count())
loss = tinycnn.SoftmaxCrossEntropy()
opt = tinycnn.SGD(model, lr=0.01)
model.train()
step = time.perf_counter()
loss(model(x), t)
model.backward(loss.backward())
opt.step()
model.eval()
model(x)
print(json.dumps({{"precompile_s": seconds, "step_s": time.perf_counter() - step,
                  "kernels": report.kernels, "workers": report.workers,
                  "compiled_here": report.compiled_here,
                  "compiled_by_workers": report.compiled_by_workers,
                  "compiles_in_step": compiles}}))
"""


def measure(model: str, workers: int, numba_opt: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="compile-time-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        if numba_opt is not None:
            env["NUMBA_OPT"] = numba_opt
        out = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE)), model,
                              str(workers)], env=env, capture_output=True, text=True,
                             check=False)
    if out.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist_net",
                        help="mnist_net (the time-to-accuracy net) or a zoo model's name")
    parser.add_argument("--workers", default="0,1", help="comma-separated child counts")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--numba-opt", default=None,
                        help="NUMBA_OPT for the measuring processes (default: the "
                             "engine's own level)")
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed import _cpu_name  # benchmarks/speed.py

    cpu = _cpu_name()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; model {args.model}; empty Numba cache "
          f"each time; NUMBA_OPT {args.numba_opt or 'not set (the engine: -O1)'}")
    print("| workers | precompile s | kernels | compiled here / by workers | "
          "compiles in the step after |")
    print("|---|---|---|---|---|")
    for _ in range(args.repeats):
        for workers in counts:  # alternating, so a slow spell of the machine hits both
            r = measure(args.model, workers, args.numba_opt)
            print(f"| {r['workers']} | {r['precompile_s']:.1f} | {r['kernels']} | "
                  f"{r['compiled_here']} / {r['compiled_by_workers']} | "
                  f"{len(r['compiles_in_step'])} |", flush=True)


if __name__ == "__main__":
    main()
