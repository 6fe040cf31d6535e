"""GPU training speed of tinycnn (CuPy) against PyTorch CUDA, and a ResNet-20 CIFAR-10 run.

Speed (default): training-step images/s of ``simple_convnet``, ``deep_convnet`` and
``resnet20`` at batch 128 and 512, tinycnn on the GPU and the same nets in PyTorch on the
same GPU, in one process and alternating block by block (so both share the machine's
noise), plus tinycnn on the CPU (Numba kernels) for the GPU speed-up. One step is forward,
cross-entropy, backward and an SGD-with-momentum update on a fixed random batch that is
already on the device. Each figure is the median of ``--repeats`` timed blocks after a
warm-up; every block is bracketed by ``cupy.cuda.Device().synchronize()`` /
``torch.cuda.synchronize()``, so queued GPU work is always counted.

    python benchmarks/gpu_speed.py                       # the full table (a few minutes)
    python benchmarks/gpu_speed.py --quick               # simple_convnet, batch 128, no CPU
    python benchmarks/gpu_speed.py --nets resnet20 --batches 512 --repeats 9
    python benchmarks/gpu_speed.py --train-resnet20 --minutes 10

Float32 on both sides. TF32 tensor-core math is off on both sides unless ``--tf32``
(PyTorch enables it for cuDNN convolutions by default; CuPy only with ``CUPY_TF32=1``).

``--train-resnet20`` trains ResNet-20 on CIFAR-10 on the GPU within a time budget: 45,000
training / 5,000 validation images, random crop (padding 4) and horizontal flip, SGD with
Nesterov momentum 0.9, weight decay 5e-4, batch 128, learning rate 0.1 with a one-epoch
linear warm-up then cosine decay to 0 over the epochs that fit in the budget (estimated
from the first epoch). Reports validation accuracy per epoch and the final test accuracy.

Writes ``benchmarks/results/gpu-*-<time>.json`` and ``.md`` (git-ignored) and prints the
table. Exits with status 2 and the reason when no usable GPU is present.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch_nets  # benchmarks/torch_nets.py: the PyTorch twins

from tinycnn.files import atomic_write

NETS = ("simple_convnet", "deep_convnet", "resnet20")
BATCHES = (128, 512)
NUM_CLASSES = 10
LR = 0.01
MOMENTUM = 0.9
RESULTS = Path(__file__).resolve().parent / "results"


def input_shape(net: str) -> tuple[int, int, int]:
    return (3, 32, 32) if net.startswith("resnet") else (1, 28, 28)


def gpu_problem() -> str | None:
    """Why the GPU cannot be used by tinycnn (``None`` when it can)."""
    from tinycnn import backend

    try:
        backend.require_gpu()
    except backend.DeviceError as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------- tinycnn side


class Tinycnn:
    """One net, batch and device: a model, an optimizer and a fixed batch on the device."""

    def __init__(self, net: str, batch: int, device: str) -> None:
        from tinycnn import backend, models, optim
        from tinycnn.losses import SoftmaxCrossEntropy

        self.backend, self.device = backend, device
        c, h, w = input_shape(net)
        build = getattr(models, net)
        kwargs = {"in_channels": c} if net.startswith("resnet") else {"in_channels": c,
                                                                      "image_size": h}
        self.model = build(NUM_CLASSES, seed=0, **kwargs).to(device)
        self.opt = optim.SGD(self.model, lr=LR, momentum=MOMENTUM)
        self.loss = SoftmaxCrossEntropy()
        rng = np.random.default_rng(0)
        self.x = backend.to_device(rng.standard_normal((batch, c, h, w)).astype(np.float32),
                                   device)
        self.t = backend.to_device(rng.integers(0, NUM_CLASSES, size=batch), device)

    def step(self) -> None:
        self.loss(self.model(self.x), self.t)
        self.opt.zero_grad()
        self.model.backward(self.loss.backward())
        self.opt.step()

    def sync(self) -> None:
        if self.device == "gpu":
            import cupy

            cupy.cuda.Device().synchronize()

    def memory_mib(self) -> float | None:
        if self.device != "gpu":
            return None
        import cupy

        return cupy.get_default_memory_pool().total_bytes() / 2**20


# ----------------------------------------------------------------------------- torch side


def torch_net(torch: Any, net: str) -> Any:
    """The same layer sizes as the tinycnn builders (PyTorch's default initialization)."""
    return torch_nets.build(net, torch, NUM_CLASSES)


class Torch:
    def __init__(self, torch: Any, net: str, batch: int) -> None:
        self.torch = torch
        torch.manual_seed(0)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # the peak of this net and batch only
        self.model = torch_net(torch, net).cuda().train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x = torch.randn(batch, *input_shape(net), device="cuda")
        self.t = torch.randint(0, NUM_CLASSES, (batch,), device="cuda")

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.torch.nn.functional.cross_entropy(self.model(self.x), self.t).backward()
        self.opt.step()

    def sync(self) -> None:
        self.torch.cuda.synchronize()

    def memory_mib(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 2**20


def load_torch(tf32: bool) -> tuple[Any, str | None]:
    """``(torch, None)``, or ``(None, why)`` when PyTorch CUDA cannot be used."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} sees no CUDA device"
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return torch, None


# -------------------------------------------------------------------------------- timing


def calibrate(side: Any, min_block_s: float, warmup: int) -> int:
    """Run ``warmup`` steps, then return a step count whose block lasts ``min_block_s``."""
    for _ in range(warmup):
        side.step()
    side.sync()
    n, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(n):
            side.step()
        side.sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_block_s or n >= 4096:
            return n
        n = max(n + 1, math.ceil(n * min_block_s / max(elapsed, 1e-6) * 1.1))


def timed_block(side: Any, steps: int, batch: int) -> float:
    """Images per second of one block of ``steps`` steps (synchronized before and after)."""
    side.sync()
    start = time.perf_counter()
    for _ in range(steps):
        side.step()
    side.sync()
    return steps * batch / (time.perf_counter() - start)


def speed_row(net: str, batch: int, args: argparse.Namespace, torch: Any) -> dict[str, Any]:
    sides: dict[str, Any] = {"tinycnn_gpu": Tinycnn(net, batch, "gpu")}
    if torch is not None:
        sides["torch_gpu"] = Torch(torch, net, batch)
    steps = {name: calibrate(s, args.min_block_s, args.warmup) for name, s in sides.items()}
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):  # alternate the sides block by block
        for name, side in sides.items():
            samples[name].append(timed_block(side, steps[name], batch))
    row: dict[str, Any] = {"net": net, "batch": batch}
    for name, side in sides.items():
        row[name] = statistics.median(samples[name])
        row[f"{name}_samples"] = samples[name]
        row[f"{name}_steps_per_block"] = steps[name]
        row[f"{name}_memory_mib"] = side.memory_mib()
    del sides
    if not args.no_cpu:
        cpu = Tinycnn(net, batch, "cpu")
        cpu_steps = calibrate(cpu, args.cpu_min_block_s, 1)
        cpu_samples = [timed_block(cpu, cpu_steps, batch) for _ in range(args.cpu_repeats)]
        row["tinycnn_cpu"] = statistics.median(cpu_samples)
        row["tinycnn_cpu_samples"] = cpu_samples
    _free_gpu_memory()
    return row


def _free_gpu_memory() -> None:
    import cupy

    cupy.get_default_memory_pool().free_all_blocks()


def device_info() -> dict[str, Any]:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return {
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
        "gpu_memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cupy": cupy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def speed_markdown(result: dict[str, Any]) -> str:
    info = result["info"]
    lines = [
        f"# tinycnn GPU training speed ({result['time']})",
        "",
        f"{info['gpu']} ({info['gpu_memory_gib']} GiB), CuPy {info['cupy']}, "
        f"CUDA runtime {info['cuda_runtime']}, PyTorch {info.get('torch', '-')}, "
        f"TF32 {'on' if result['tf32'] else 'off'}. Training images/s (median of "
        f"{result['repeats']} blocks); SGD momentum step on a batch already on the device.",
        "",
        "| net | batch | tinycnn GPU | PyTorch GPU | tinycnn / PyTorch | tinycnn CPU "
        "| GPU / CPU | tinycnn pool MiB | PyTorch peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        tg, pt, cpu = r.get("tinycnn_gpu"), r.get("torch_gpu"), r.get("tinycnn_cpu")
        vs_torch = f"{tg / pt:.2f}" if tg and pt else "-"
        vs_cpu = f"{tg / cpu:.1f}x" if tg and cpu else "-"
        mem_t = r.get("tinycnn_gpu_memory_mib")
        mem_p = r.get("torch_gpu_memory_mib")
        lines.append(
            f"| {r['net']} | {r['batch']} | {fmt(tg)} | {fmt(pt)} | {vs_torch} | {fmt(cpu)} "
            f"| {vs_cpu} | {fmt(mem_t)} | {fmt(mem_p)} |"
        )
    for note in result["notes"]:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    torch, why_not = (None, "skipped (--no-torch)") if args.no_torch else load_torch(args.tf32)
    info = device_info()
    notes = []
    if torch is None:
        notes.append(f"PyTorch columns empty: {why_not}.")
    else:
        info["torch"] = torch.__version__
    if args.no_cpu:
        notes.append("CPU column skipped (--no-cpu).")
    rows = []
    for net in args.nets:
        for batch in args.batches:
            row = speed_row(net, batch, args, torch)
            rows.append(row)
            print(f"{net:>15} batch {batch:>4}: tinycnn GPU {fmt(row.get('tinycnn_gpu'))}, "
                  f"PyTorch GPU {fmt(row.get('torch_gpu'))}, "
                  f"tinycnn CPU {fmt(row.get('tinycnn_cpu'))} images/s", flush=True)
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "info": info, "rows": rows,
            "repeats": args.repeats, "tf32": args.tf32, "notes": notes}


# ------------------------------------------------------------------------- ResNet-20 run


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    from tinycnn import optim
    from tinycnn.cli import DATASETS
    from tinycnn.data import (
        CIFAR10,
        Compose,
        DataLoader,
        RandomCrop,
        RandomHorizontalFlip,
        train_val_split,
    )
    from tinycnn.losses import SoftmaxCrossEntropy
    from tinycnn.metrics import evaluate
    from tinycnn.models import resnet20

    _, _, _, mean, std = DATASETS["cifar10"]
    train_set = CIFAR10(args.data_dir, train=True)
    test_set = CIFAR10(args.data_dir, train=False)
    x, y = train_set.data, train_set.targets
    xt, yt = test_set.data, test_set.targets
    if args.limit:  # a smoke test of this script, not a result
        x, y, xt, yt = x[: args.limit], y[: args.limit], xt[: args.limit], yt[: args.limit]
    train_part, val_part = train_val_split((x, y), val_size=len(y) // 10, seed=0)
    augment = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()])
    dev = args.device
    train_loader = DataLoader(train_part, batch_size=128, shuffle=True, seed=0, drop_last=True,
                              transform=augment, mean=mean, std=std, device=dev)
    val_loader = DataLoader(val_part, batch_size=1000, mean=mean, std=std, device=dev)
    test_loader = DataLoader((xt, yt), batch_size=1000, mean=mean, std=std, device=dev)
    model = resnet20(seed=0).to(dev)
    peak_lr = 0.1
    opt = optim.SGD(model, lr=peak_lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss = SoftmaxCrossEntropy()
    budget_s = args.minutes * 60
    steps_per_epoch = len(train_loader)
    epochs: int | None = None  # known after the first epoch
    history = []
    start = time.perf_counter()
    epoch = 0
    while epochs is None or epoch < epochs:
        epoch_start = time.perf_counter()
        loss_sum, seen = 0.0, 0
        for i, (x, y) in enumerate(train_loader):
            t = epoch + i / steps_per_epoch
            if t < 1:  # linear warm-up over the first epoch
                opt.lr = peak_lr * (0.1 + 0.9 * t)
            else:  # cosine from the peak to 0 over the remaining epochs
                opt.lr = peak_lr * 0.5 * (1 + math.cos(math.pi * (t - 1) / (epochs - 1)))
            value = loss(model(x), y)
            opt.zero_grad()
            model.backward(loss.backward())
            opt.step()
            if i % 50 == 0:  # one device-to-host sync per 50 steps
                loss_sum, seen = loss_sum + float(value), seen + 1
        epoch_s = time.perf_counter() - epoch_start
        if epochs is None:
            epochs = max(2, int(budget_s // epoch_s))
            print(f"first epoch took {epoch_s:.1f} s: training {epochs} epochs in the "
                  f"{args.minutes:g}-minute budget", flush=True)
        val = evaluate(model, val_loader, loss)
        row = {"epoch": epoch + 1, "train_loss_sampled": loss_sum / max(seen, 1),
               "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr": opt.lr,
               "epoch_s": epoch_s,
               "images_per_s": steps_per_epoch * 128 / epoch_s}
        history.append(row)
        print(f"epoch {epoch + 1:>3}/{epochs}: val accuracy {val['accuracy']:.4f}, val loss "
              f"{val['loss']:.4f}, {row['images_per_s']:,.0f} images/s, {epoch_s:.1f} s",
              flush=True)
        epoch += 1
    total_s = time.perf_counter() - start
    test = evaluate(model, test_loader, loss)
    partial = getattr(test_set, "is_partial", False)
    print(f"test accuracy {test['accuracy']:.4f} on {test['n']} images"
          + (" (the partial 1,000-image test set)" if partial else "")
          + f"; {total_s / 60:.1f} minutes in all", flush=True)
    info = device_info() if dev == "gpu" else {"gpu": "none (CPU smoke test)", "cupy": "-"}
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "info": info, "device": dev,
            "limit": args.limit, "budget_minutes": args.minutes, "epochs": epochs,
            "history": history,
            "test_accuracy": test["accuracy"], "test_images": test["n"],
            "test_set_partial": partial, "total_s": total_s}


def train_markdown(result: dict[str, Any]) -> str:
    info = result["info"]
    lines = [
        f"# ResNet-20 on CIFAR-10, tinycnn on the {result['device'].upper()} "
        f"({result['time']})",
        "",
        f"{info['gpu']}, CuPy {info['cupy']}; budget {result['budget_minutes']} minutes, "
        f"{result['epochs']} epochs, {result['total_s'] / 60:.1f} minutes in all.",
        "",
        f"**Test accuracy {result['test_accuracy']:.4f}** on {result['test_images']} images"
        + (" (partial test set)" if result["test_set_partial"] else "") + ".",
        "",
        "| epoch | val accuracy | val loss | images/s |",
        "|---:|---:|---:|---:|",
    ]
    for r in result["history"]:
        lines.append(f"| {r['epoch']} | {r['val_accuracy']:.4f} | {r['val_loss']:.4f} "
                     f"| {r['images_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- main


def write_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text.encode())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", type=lambda s: s.split(","), default=list(NETS),
                   help="comma-separated (default: %(default)s)")
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--repeats", type=int, default=7, help="timed GPU blocks per side")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (JIT, pools)")
    p.add_argument("--min-block-s", type=float, default=0.5, help="length of a GPU block")
    p.add_argument("--cpu-repeats", type=int, default=3)
    p.add_argument("--cpu-min-block-s", type=float, default=2.0)
    p.add_argument("--no-cpu", action="store_true", help="skip the tinycnn CPU column")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    p.add_argument("--tf32", action="store_true", help="allow TF32 math on both sides")
    p.add_argument("--quick", action="store_true",
                   help="simple_convnet at batch 128 only, 3 repeats, no CPU column")
    p.add_argument("--train-resnet20", action="store_true",
                   help="train ResNet-20 on CIFAR-10 on the GPU instead of timing steps")
    p.add_argument("--minutes", type=float, default=10.0, help="budget of --train-resnet20")
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                   help="for --train-resnet20: 'cpu' only to smoke-test this script")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="for --train-resnet20: use the first N train/test images (smoke test)")
    p.add_argument("--data-dir", default=None,
                   help="datasets folder (default: $TINYCNN_DATA, else ~/.cache/tinycnn)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    if args.quick:
        args.nets, args.batches, args.repeats, args.no_cpu = ["simple_convnet"], [128], 3, True
    unknown = [n for n in args.nets if n not in NETS]
    if unknown:
        p.error(f"unknown net(s) {unknown}; choose from {NETS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tf32:
        os.environ.setdefault("CUPY_TF32", "1")  # read by CuPy when it is first imported
    problem = None if (args.train_resnet20 and args.device == "cpu") else gpu_problem()
    if problem is not None:
        print(f"gpu_speed.py: no usable GPU, nothing measured: {problem}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.train_resnet20:
        result = run_train(args)
        name, text = f"gpu-train-resnet20-{stamp}", train_markdown(result)
    else:
        result = run_speed(args)
        name, text = f"gpu-speed-{stamp}", speed_markdown(result)
    write_atomic(args.out / f"{name}.json", json.dumps(result, indent=2))
    write_atomic(args.out / f"{name}.md", text)
    print()
    print(text)
    print(f"written: {args.out / name}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
