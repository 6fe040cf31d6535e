"""Training and inference speed of tinycnn (reference and Numba kernels) against PyTorch CPU.

One run, one machine, one thread count. Each side runs in its own long-lived worker
process (so PyTorch's and tinycnn's thread settings never meet in one process); the parent
asks the workers in turn for one timed block at a time, so the sides alternate and share
the machine's noise. Every figure is the median of ``--repeats`` blocks after a warm-up.

    python benchmarks/speed.py                      # everything (several minutes)
    python benchmarks/speed.py --quick              # small run: 2 nets, batch 100, 3 repeats
    python benchmarks/speed.py --nets simple_convnet,resnet20 --batches 128 --repeats 7
    python benchmarks/speed.py --threads            # compare thread settings only

Writes ``benchmarks/results/speed-<time>.json`` and ``.md`` (git-ignored) and prints the
Markdown table. Also measured: a per-layer time breakdown of one net (``--breakdown``) and
the peak memory (RSS) of a ResNet-20 batch-128 training step, each framework in a fresh
process. Without PyTorch installed the PyTorch columns are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch_nets  # benchmarks/torch_nets.py: the PyTorch twins

NETS = ("lenet5", "simple_convnet", "deep_convnet", "resnet20")
SIDES = ("reference", "numba", "torch")
NUM_CLASSES = 10
LR = 0.01
# A timed block runs whole steps until at least this long, so short steps are not
# dominated by timer resolution.
MIN_BLOCK_S = 0.25
TARGETS = {  # fast kernels / PyTorch, training throughput (the speed issue's targets)
    "lenet5": 1.5,
    "simple_convnet": 2.0,
    "deep_convnet": 1.0,
    "resnet20": 1.0,
}
INFER_TARGET = 1.0  # fast kernels / PyTorch, inference throughput, every net above


def input_shape(net: str) -> tuple[int, int, int]:
    return (3, 32, 32) if net.startswith("resnet") else (1, 28, 28)


# ------------------------------------------------------------------------ tinycnn side


def tinycnn_train_step(model: Any, x: Any, t: Any, opt: Any, loss_fn: Any) -> None:
    """One training step, as every benchmark here times tinycnn's."""
    model.train()
    opt.zero_grad()
    loss_fn(model(x), t)
    model.backward(loss_fn.backward())
    opt.step()


def torch_train_step(torch: Any, model: Any, x: Any, t: Any, opt: Any) -> None:
    """The same step in PyTorch."""
    model.train()
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), t).backward()
    opt.step()


class TinycnnRunner:
    """Builds tinycnn nets and times steps with one kernel set."""

    def __init__(self, kernels: str) -> None:
        # tinycnn before NumPy: its thread defaults must be in the environment when NumPy
        # loads OpenBLAS (see tinycnn/_threads.py)
        import tinycnn
        from tinycnn import backend

        np = backend.numpy
        self.np = np
        self.tinycnn = tinycnn
        self.kernels = kernels
        tinycnn.use_kernels(kernels)
        if kernels == "numba":
            from tinycnn.fast import numba_cpu

            self.jit_s = numba_cpu.warmup()
        self.cache: dict[tuple[str, int], Any] = {}

    def threads(self) -> dict[str, Any]:
        info: dict[str, Any] = {"cpu_count": os.cpu_count()}
        try:
            import numba

            info["numba_threads"] = numba.get_num_threads()
            info["numba_layer"] = numba.threading_layer() if self.kernels == "numba" else None
        except (ImportError, ValueError):
            pass
        for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT",
                    "NUMBA_THREADING_LAYER"):
            info[key] = os.environ.get(key)
        return info

    def setup(self, net: str, batch: int) -> Any:
        key = (net, batch)
        if key not in self.cache:
            from tinycnn import losses, models, optim

            np = self.np
            model = getattr(models, net)(num_classes=NUM_CLASSES, seed=0)
            # as the Trainer does: no gradient of the images (use_kernels("reference")
            # makes the accelerated layers run their reference code)
            self.tinycnn.accelerate(model, input_grad=False)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((batch, *input_shape(net))).astype(np.float32)
            t = rng.integers(0, NUM_CLASSES, batch)
            opt = optim.SGD(model, lr=LR)
            self.cache = {key: (model, x, t, opt, losses.SoftmaxCrossEntropy())}
        return self.cache[key]

    def step(self, net: str, batch: int, mode: str) -> None:
        model, x, t, opt, loss_fn = self.setup(net, batch)
        if mode == "train":
            tinycnn_train_step(model, x, t, opt, loss_fn)
        else:
            model.eval()
            model(x)

    def breakdown(self, net: str, batch: int, steps: int) -> dict[str, Any]:
        """Time of every leaf layer's forward and backward over ``steps`` training steps."""
        model = self.setup(net, batch)[0]
        totals: dict[str, float] = {}

        def timed(fn: Any, label: str) -> Any:
            def run(arg: Any) -> Any:
                start = time.perf_counter()
                out = fn(arg)
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - start
                return out

            return run

        leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
        for name, m in leaves:
            kind = type(m).__name__
            object.__setattr__(m, "forward", timed(m.forward, f"{name} {kind} forward"))
            object.__setattr__(m, "backward", timed(m.backward, f"{name} {kind} backward"))
        self.step(net, batch, "train")
        totals.clear()
        start = time.perf_counter()
        for _ in range(steps):
            self.step(net, batch, "train")
        total = (time.perf_counter() - start) / steps
        for _, m in leaves:  # back to the class methods
            del m.__dict__["forward"]
            del m.__dict__["backward"]
        per_step = {k: v / steps for k, v in totals.items()}
        per_step["(optimizer, loss, glue)"] = total - sum(per_step.values())
        return {"step_s": total, "layers_s": per_step}


# -------------------------------------------------------------------------- PyTorch side


class TorchRunner:
    """The same four nets in PyTorch (same layer sizes, same SGD step)."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        torch.set_num_threads(os.cpu_count() or 1)
        self.cache: dict[tuple[str, int], Any] = {}

    def threads(self) -> dict[str, Any]:
        return {"torch_threads": self.torch.get_num_threads(), "torch": self.torch.__version__}

    def build(self, net: str) -> Any:
        return torch_nets.build(net, self.torch, NUM_CLASSES)

    def setup(self, net: str, batch: int) -> Any:
        key = (net, batch)
        if key not in self.cache:
            torch = self.torch
            torch.manual_seed(0)
            model = self.build(net)
            x = torch.randn(batch, *input_shape(net))
            t = torch.randint(0, NUM_CLASSES, (batch,))
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            self.cache = {key: (model, x, t, opt)}
        return self.cache[key]

    def step(self, net: str, batch: int, mode: str) -> None:
        torch = self.torch
        model, x, t, opt = self.setup(net, batch)
        if mode == "train":
            torch_train_step(torch, model, x, t, opt)
        else:
            model.eval()
            with torch.inference_mode():
                model(x)


# ------------------------------------------------------------------------------- workers


def worker(side: str) -> None:
    """Answer JSON requests from stdin, one per line, until stdin closes."""
    runner: Any = TorchRunner() if side == "torch" else TinycnnRunner(side)
    reply = {"ready": True, "threads": runner.threads(), "jit_s": getattr(runner, "jit_s", None)}
    print(json.dumps(reply), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "warmup":
            start = time.perf_counter()
            for _ in range(req["steps"]):
                runner.step(req["net"], req["batch"], req["mode"])
            out: dict[str, Any] = {"s": (time.perf_counter() - start) / req["steps"]}
        elif req["op"] == "block":
            steps = req["steps"]
            start = time.perf_counter()
            for _ in range(steps):
                runner.step(req["net"], req["batch"], req["mode"])
            out = {"s": (time.perf_counter() - start) / steps}
        elif req["op"] == "breakdown":
            out = runner.breakdown(req["net"], req["batch"], req["steps"])
        else:
            out = {"error": f"unknown op {req['op']!r}"}
        print(json.dumps(out), flush=True)


class Worker:
    def __init__(self, side: str, env: dict[str, str] | None = None) -> None:
        self.side = side
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--_worker", side],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, **(env or {})},
        )
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker exited (see its error above)")
        return json.loads(line)

    def ask(self, **req: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def memory_probe(side: str, net: str, batch: int) -> None:
    """Print the peak RSS (MiB) of training steps of ``net``, in this fresh process."""
    after_import = None
    if side == "torch":
        runner: Any = TorchRunner()
    else:
        runner = TinycnnRunner(side)
    after_import = _peak_rss_mib()
    for _ in range(3):
        runner.step(net, batch, "train")
    print(json.dumps({"peak_mib": _peak_rss_mib(), "after_import_mib": after_import}))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_memory(side: str, net: str, batch: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--_memory", side, net, str(batch)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


THREAD_CONFIGS = {
    "PASSIVE + GOMP_SPINCOUNT 10000 + OpenBLAS timeout 20 (tinycnn's default)": {
        "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000", "OPENBLAS_THREAD_TIMEOUT": "20"},
    "PASSIVE + GOMP_SPINCOUNT 0 (sleep at once) + timeout 20": {
        "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "OPENBLAS_THREAD_TIMEOUT": "20"},
    "PASSIVE + GOMP_SPINCOUNT 1000 + timeout 20": {
        "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000", "OPENBLAS_THREAD_TIMEOUT": "20"},
    "PASSIVE + GOMP_SPINCOUNT 10000 + OpenBLAS timeout 4": {
        "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000", "OPENBLAS_THREAD_TIMEOUT": "4"},
    "PASSIVE + GOMP_SPINCOUNT 10000 + OpenBLAS default timeout (28)": {
        "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000", "OPENBLAS_THREAD_TIMEOUT": "28"},
    "tinycnn's default + Numba workqueue": {
        "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000", "OPENBLAS_THREAD_TIMEOUT": "20",
        "NUMBA_THREADING_LAYER": "workqueue"},
}


def compare_threads(args: argparse.Namespace) -> None:
    """Time one training step under each thread configuration, alternating, fresh processes."""
    net, batch = args.nets.split(",")[0], int(args.batches.split(",")[0])
    times: dict[str, list[float]] = {name: [] for name in THREAD_CONFIGS}
    for rep in range(args.repeats):
        for name, env in THREAD_CONFIGS.items():
            w = Worker("numba", env)  # a fresh process: the settings apply at start-up
            w.ask(op="warmup", net=net, batch=batch, mode="train", steps=2)
            times[name].append(w.ask(op="block", net=net, batch=batch, mode="train",
                                     steps=3)["s"])
            w.close()
        print(f"round {rep + 1}/{args.repeats} done", flush=True)
    print(f"\n{net} batch {batch}, training step, median of {args.repeats} fresh processes "
          f"(load average {os.getloadavg()[0]:.2f}):")
    for name, ts in times.items():
        print(f"  {statistics.median(ts) * 1e3:8.1f} ms  {name}")


# ---------------------------------------------------------------------------------- main


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def run(args: argparse.Namespace) -> dict[str, Any]:
    sides = [s for s in args.sides.split(",") if s]
    if "torch" in sides and not torch_available():
        print("PyTorch is not installed: skipping the PyTorch columns "
              "(pip install torch==2.13.0)")
        sides.remove("torch")
    nets = args.nets.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    modes = args.modes.split(",")
    workers = {s: Worker(s) for s in sides}
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "threads": {s: w.hello["threads"] for s, w in workers.items()},
        "jit_warmup_s": workers["numba"].hello["jit_s"] if "numba" in workers else None,
        "repeats": args.repeats,
        "rows": [],
    }
    try:
        for net in nets:
            for batch in batches:
                for mode in modes:
                    row = time_row(workers, net, batch, mode, args)
                    results["rows"].append(row)
                    print(_row_line(row), flush=True)
        if args.breakdown and "numba" in workers:
            net, batch = args.breakdown, batches[-1]
            results["breakdown"] = {
                "net": net, "batch": batch, "kernels": "numba",
                **workers["numba"].ask(op="breakdown", net=net, batch=batch, steps=3),
            }
    finally:
        for w in workers.values():
            w.close()
    if args.memory:
        results["memory"] = {
            "net": "resnet20", "batch": 128,
            **{s: measure_memory(s, "resnet20", 128) for s in sides if s != "reference"},
        }
    results["load_average_at_end"] = os.getloadavg()
    return results


def time_row(workers: dict[str, Worker], net: str, batch: int, mode: str,
             args: argparse.Namespace) -> dict[str, Any]:
    steps: dict[str, int] = {}
    for side, w in workers.items():  # warm-up, and how many steps make a block
        warm = w.ask(op="warmup", net=net, batch=batch, mode=mode, steps=2)["s"]
        steps[side] = max(1, min(50, round(MIN_BLOCK_S / max(warm, 1e-6))))
    times: dict[str, list[float]] = {s: [] for s in workers}
    for rep in range(args.repeats):
        order = list(workers) if rep % 2 == 0 else list(reversed(workers))  # alternate
        for side in order:
            if side == "reference" and rep >= args.reference_repeats:
                continue
            times[side].append(workers[side].ask(
                op="block", net=net, batch=batch, mode=mode, steps=steps[side])["s"])
    row: dict[str, Any] = {"net": net, "batch": batch, "mode": mode}
    for side, ts in times.items():
        med = statistics.median(ts)
        row[side] = {"median_s": med, "images_per_s": batch / med, "samples_s": ts}
    if "torch" in row:
        for side in ("numba", "reference"):
            if side in row:
                row[f"{side}_vs_torch"] = row["torch"]["median_s"] / row[side]["median_s"]
    if "numba" in row and "reference" in row:
        row["numba_vs_reference"] = row["reference"]["median_s"] / row["numba"]["median_s"]
    return row


def _row_line(row: dict[str, Any]) -> str:
    parts = [f"{row['net']:15s} b{row['batch']:<4d} {row['mode']:5s}"]
    for side in SIDES:
        if side in row:
            parts.append(f"{side} {row[side]['images_per_s']:8.0f} img/s")
    if "numba_vs_torch" in row:
        parts.append(f"fast/torch {row['numba_vs_torch']:.2f}x")
    if "numba_vs_reference" in row:
        parts.append(f"fast/ref {row['numba_vs_reference']:.1f}x")
    return "  ".join(parts)


def _cpu_name() -> str:
    """The CPU's model name, with its family and model and the core LLVM compiles for
    (a VM may call every generation "AMD EPYC": Zen 4 and Zen 5 differ in what pays)."""
    name, fields = platform.processor(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name", name)
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append(f"family {fields['cpu family']} model {fields['model']}")
    try:
        from llvmlite import binding

        details.append(str(binding.get_host_cpu_name()))
    except (ImportError, RuntimeError):
        pass
    return f"{name} ({', '.join(details)})" if details else name


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# tinycnn speed",
        "",
        f"Machine: {results['machine']['processor']}, {os.cpu_count()} CPUs, "
        f"load average at start {results['machine']['load_average_at_start'][0]:.2f}, "
        f"at end {results['load_average_at_end'][0]:.2f}. "
        f"Medians of {results['repeats']} alternating blocks; float32; images/s.",
        "",
        f"Threads: `{json.dumps(results['threads'])}`",
        "",
        "| net | batch | mode | reference | fast (numba) | PyTorch | fast / PyTorch | "
        "fast / reference |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(row: dict[str, Any], side: str) -> str:
        return f"{row[side]['images_per_s']:,.0f}" if side in row else "-"

    def ratio(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.2f}x" if key in row else "-"

    for row in results["rows"]:
        lines.append(
            f"| {row['net']} | {row['batch']} | {row['mode']} | {cell(row, 'reference')} | "
            f"{cell(row, 'numba')} | {cell(row, 'torch')} | {ratio(row, 'numba_vs_torch')} | "
            f"{ratio(row, 'numba_vs_reference')} |"
        )
    lines += ["", "## Targets", ""]
    for row in results["rows"]:
        if "numba_vs_torch" in row and row["net"] in TARGETS:
            train = row["mode"] == "train"
            want = TARGETS[row["net"]] if train else INFER_TARGET
            got = row["numba_vs_torch"]
            lines.append(f"- {row['net']} b{row['batch']} {'training' if train else 'inference'}: "
                         f"fast/PyTorch {got:.2f}x (target >= {want}x): "
                         f"{'met' if got >= want else 'MISSED'}")
        if row["net"] == "simple_convnet" and row["mode"] == "train" and (
            "numba_vs_reference" in row
        ):
            got = row["numba_vs_reference"]
            lines.append(f"- simple_convnet b{row['batch']} training: fast/reference {got:.1f}x "
                         f"(target >= 5x): {'met' if got >= 5 else 'MISSED'}")
    mem = results.get("memory")
    if mem:
        lines += ["", "## Peak memory, ResNet-20 batch 128 training step (fresh process)", ""]
        for side in ("numba", "torch"):
            if side in mem and "peak_mib" in mem[side]:
                m = mem[side]
                lines.append(f"- {side}: peak RSS {m['peak_mib']:.0f} MiB "
                             f"({m['after_import_mib']:.0f} MiB after imports)")
        if "peak_mib" in mem.get("numba", {}) and "peak_mib" in mem.get("torch", {}):
            ok = mem["numba"]["peak_mib"] <= mem["torch"]["peak_mib"]
            lines.append(f"- target tinycnn <= PyTorch: {'met' if ok else 'MISSED'}")
    bd = results.get("breakdown")
    if bd:
        by_kind: dict[str, float] = {}
        for name, s in bd["layers_s"].items():
            # "<path> <Class> <pass>" -> "<Class> <pass>"; "(optimizer, ...)" stays whole
            kind = name if name.startswith("(") else " ".join(name.split()[1:])
            by_kind[kind] = by_kind.get(kind, 0.0) + s
        lines += ["", f"## Time per layer type, {bd['net']} batch {bd['batch']} training step "
                  f"({bd['kernels']} kernels, {bd['step_s'] * 1e3:.1f} ms per step)", "",
                  "| layer type, pass | ms | share |", "|---|---|---|"]
        for name, s in sorted(by_kind.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {s * 1e3:.2f} | {s / bd['step_s'] * 100:.1f} % |")
        lines += ["", "Slowest single layers:", "", "| layer | ms | share |", "|---|---|---|"]
        for name, s in sorted(bd["layers_s"].items(), key=lambda kv: -kv[1])[:12]:
            lines.append(f"| {name} | {s * 1e3:.2f} | {s / bd['step_s'] * 100:.1f} % |")
    if results.get("jit_warmup_s") is not None:
        lines += ["", f"Numba kernels warm-up (compile or load from cache): "
                  f"{results['jit_warmup_s']:.2f} s"]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    from tinycnn.files import atomic_write  # the parent process stays free of NumPy

    with atomic_write(path) as f:
        f.write(text.encode())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_worker"]:
        worker(argv[1])
        return
    if argv[:1] == ["--_memory"]:
        memory_probe(argv[1], argv[2], int(argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default=",".join(NETS), help="comma-separated nets")
    p.add_argument("--batches", default="100,128", help="comma-separated batch sizes")
    p.add_argument("--modes", default="train,infer", help="train and/or infer")
    p.add_argument("--sides", default=",".join(SIDES), help="reference,numba,torch")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per side")
    p.add_argument("--reference-repeats", type=int, default=3,
                   help="timed blocks for the (slow) reference kernels")
    p.add_argument("--breakdown", default="simple_convnet",
                   help="net for the per-layer breakdown ('' to skip)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the ResNet-20 peak-memory measurement")
    p.add_argument("--quick", action="store_true",
                   help="defaults to lenet5,simple_convnet, batch 100, training, 3 repeats, "
                        "no memory probe")
    p.add_argument("--threads", action="store_true",
                   help="only compare thread settings (first of --nets and --batches)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    if args.threads:
        if args.nets == ",".join(NETS):
            args.nets = "simple_convnet"
        compare_threads(args)
        return
    if args.quick:  # smaller defaults; options given explicitly still win
        given = {a.split("=", 1)[0] for a in argv}
        if "--nets" not in given:
            args.nets = "lenet5,simple_convnet"
        if "--batches" not in given:
            args.batches = "100"
        if "--modes" not in given:
            args.modes = "train"
        if "--repeats" not in given:
            args.repeats = 3
        args.reference_repeats = min(args.reference_repeats, 1)
        args.memory = False
    results = run(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    write_atomic(out / f"speed-{stamp}.json", json.dumps(results, indent=2))
    md = markdown(results)
    write_atomic(out / f"speed-{stamp}.md", md)
    print()
    print(md)
    print(f"written: {out / f'speed-{stamp}.md'} and .json")


if __name__ == "__main__":
    main()
