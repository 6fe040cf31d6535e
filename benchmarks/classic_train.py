"""Train a small CIFAR-10 MobileNet v2, a small DenseNet and the paper's AlexNet at CIFAR
size for one epoch each.

    python benchmarks/classic_train.py                      # full epoch: 45k train, 5k val
    python benchmarks/classic_train.py --limit 512          # smoke run on a subset
    python benchmarks/classic_train.py --models densenet_cifar --kernels reference

Data: :class:`tinycnn.data.CIFAR10` from ``$TINYCNN_DATA`` (``--data`` overrides), the last
5,000 training images held out for validation (with ``--limit N``: the first N images
train and the next ``N // 4`` validate). Recipe: SGD with Nesterov momentum 0.9, lr 0.05,
weight decay 5e-4, batch 128, random crop (padding 4) + horizontal flip, per-channel
normalization. Prints, per model, parameters, training time, images/s, the mean training
loss and the validation accuracy; ``--out`` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tinycnn import backend, models
from tinycnn.data import CIFAR10, Compose, DataLoader, RandomCrop, RandomHorizontalFlip
from tinycnn.fast import KERNEL_SETS, accelerate, use_kernels
from tinycnn.files import atomic_write
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.metrics import evaluate
from tinycnn.optim import SGD

# NumPy through tinycnn, so tinycnn's thread defaults are set before NumPy loads OpenBLAS
np = backend.numpy

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

MODELS = {
    # width 0.5 keeps MobileNet v2 CPU-sized: about 0.7M parameters
    "mobilenet_v2_cifar": lambda seed: models.mobilenet_v2_cifar(width_mult=0.5, seed=seed),
    # DenseNet-BC, k = 12, three blocks of 4 layers: about 0.1M parameters
    "densenet_cifar": lambda seed: models.densenet_cifar(seed=seed),
    # LRN, overlapping pools, two towers as groups=2: about 1.3M parameters
    "alexnet_paper_cifar": lambda seed: models.alexnet_paper_cifar(seed=seed),
}


def train_one_epoch(name: str, train: tuple, val: tuple, args: argparse.Namespace) -> dict:
    net = accelerate(MODELS[name](args.seed), input_grad=False)
    if args.device == "gpu":
        net.to("gpu")
    loss_fn = SoftmaxCrossEntropy()
    opt = SGD(net, lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    augment = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()])
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, seed=args.seed,
                        transform=augment, mean=CIFAR_MEAN, std=CIFAR_STD, device=args.device)
    val_loader = DataLoader(val, batch_size=256, mean=CIFAR_MEAN, std=CIFAR_STD,
                            device=args.device)
    net.train()
    seen, loss_sum = 0, 0.0
    start = time.perf_counter()
    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        net.backward(loss_fn.backward())
        opt.step()
        seen += len(y)
        loss_sum += float(loss) * len(y)
    seconds = time.perf_counter() - start
    result = evaluate(net, val_loader)
    return {
        "model": name,
        "params": net.num_parameters(),
        "train_images": seen,
        "train_seconds": round(seconds, 2),
        "images_per_second": round(seen / seconds, 1),
        "train_loss": round(loss_sum / seen, 4),
        "val_accuracy": round(result["accuracy"], 4),
        "val_images": result["n"],
    }


def load_data(args: argparse.Namespace) -> tuple[tuple, tuple]:
    data = CIFAR10(root=args.data, train=True)
    x, y = data.data, data.targets
    if args.limit:
        n = args.limit
        return (x[:n], y[:n]), (x[n : n + max(n // 4, 1)], y[n : n + max(n // 4, 1)])
    return (x[:-5000], y[:-5000]), (x[-5000:], y[-5000:])


def write_json(path: str, payload: object) -> None:
    """Write atomically (a temp file in the same folder, then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        f.write(json.dumps(payload, indent=2).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--limit", type=int, default=0,
                        help="train on the first N images only (0: the full 45k split)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kernels", choices=KERNEL_SETS, default=None,
                        help="CPU kernel set (default: numba when available)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--data", default=None, help="data folder (default: $TINYCNN_DATA)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    kernels = args.kernels
    if kernels is None:
        try:
            import tinycnn.fast.numba_cpu  # noqa: F401
            kernels = "numba"
        except ImportError:
            kernels = "reference"
    use_kernels(kernels)
    train, val = load_data(args)
    print(f"CIFAR-10: {len(train[1])} training, {len(val[1])} validation images; "
          f"kernels {kernels}, device {args.device}")
    results = []
    for name in args.models:
        r = train_one_epoch(name, train, val, args)
        results.append(r)
        print(f"{name:<20} {r['params']:>9,} params  {r['train_seconds']:>8.1f} s  "
              f"{r['images_per_second']:>7.1f} img/s  loss {r['train_loss']:.3f}  "
              f"val acc {100 * r['val_accuracy']:.1f} % ({r['val_images']} images)")
    if args.out:
        write_json(args.out, {"kernels": kernels, "device": args.device,
                              "numpy": np.__version__, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
