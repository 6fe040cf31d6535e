"""The ``tinycnn`` command (also ``python -m tinycnn``): ``train``, ``eval`` and ``summary``.

    tinycnn train                                   # a small CNN on MNIST, a few minutes
    tinycnn train --model resnet20 --dataset cifar10 --epochs 30 --optimizer nesterov \\
                  --lr 0.1 --schedule cosine --warmup 2 --augment --weight-decay 5e-4
    tinycnn eval runs/<run>/model.npz               # test accuracy of a saved model
    tinycnn summary --model resnet20 --dataset cifar10

``train`` writes into ``--out`` (default ``runs/<model>-<dataset>-<time>``): ``model.npz``
(the state dict, loadable with ``Module.load``), ``model.json`` (how to rebuild it, and
its test accuracy), ``history.json``, ``curves.png`` and ``checkpoint.npz`` (for
``--resume``). ``--limit-train N`` / ``--limit-test N`` use only the first N images of the
training / test set (quick experiments and tests).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DATASETS = {
    # name: (channels, image size, classes, mean, std)
    "mnist": (1, 28, 10, (0.1307,), (0.3081,)),
    "fashion-mnist": (1, 28, 10, (0.2860,), (0.3530,)),
    "cifar10": (3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
OPTIMIZERS = {  # name: default learning rate
    "sgd": 0.1,
    "momentum": 0.05,
    "nesterov": 0.05,
    "adam": 1e-3,
    "adamw": 1e-3,
    "rmsprop": 1e-3,
    "adagrad": 1e-2,
}
SCHEDULES = ("none", "step", "multistep", "exponential", "cosine", "plateau", "onecycle", "poly",
             "restarts")


class UsageError(ValueError):
    """A bad combination of options or a missing file: reported as one line, no traceback."""


def model_builders() -> dict[str, Callable[..., Any]]:
    """Every model builder exported by :mod:`tinycnn.models` (lower-case functions)."""
    from tinycnn import models

    return {name: getattr(models, name) for name in models.__all__
            if name[0].islower() and inspect.isfunction(getattr(models, name))}


def build_model(name: str, num_classes: int | None, in_channels: int | None,
                image_size: int | None, seed: int | None) -> Any:
    """Call builder ``name`` with those keyword arguments it accepts (``None``: its default)."""
    builders = model_builders()
    if name not in builders:
        raise UsageError(f"unknown model {name!r}; choose one of {sorted(builders)}")
    builder = builders[name]
    accepted = inspect.signature(builder).parameters
    wanted = {"num_classes": num_classes, "in_channels": in_channels,
              "image_size": image_size, "seed": seed}
    return builder(**{k: v for k, v in wanted.items() if k in accepted and v is not None})


def default_input_shape(name: str) -> tuple[int, int, int]:
    """The input a builder is made for, read from its defaults: ImageNet (1000 classes)
    224x224, else its ``image_size``, else 32x32 for 3 channels and 28x28 for 1."""
    params = inspect.signature(model_builders()[name]).parameters

    def default(key: str, fallback: int) -> int:
        p = params.get(key)
        return p.default if p is not None and isinstance(p.default, int) else fallback

    channels = default("in_channels", 3)
    if default("num_classes", 10) == 1000:
        return channels, 224, 224
    size = default("image_size", 32 if channels == 3 else 28)
    return channels, size, size


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "mnist") -> None:
    p.add_argument("--dataset", choices=sorted(DATASETS), default=default_dataset,
                   help="dataset (default: %(default)s)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the datasets (default: $TINYCNN_DATA, else "
                        "~/.cache/tinycnn)")
    p.add_argument("--download", action="store_true",
                   help="download missing dataset files into the data folder (canonical "
                        "address, then mirrors; checksums verified)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="mini-batch size (default: 100 for MNIST-like, 128 for CIFAR-10)")
    p.add_argument("--limit-test", type=_positive_int, default=None, metavar="N",
                   help="evaluate on the first N test images only (quick runs, tests)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="run on the CPU (NumPy + Numba) or the GPU (CuPy)")
    p.add_argument("--kernels", choices=("numba", "reference"), default=None,
                   help="CPU kernel set (default: the library's current choice)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none anyway when output is not a terminal)")


def make_parser() -> argparse.ArgumentParser:
    builders = sorted(model_builders())
    parser = argparse.ArgumentParser(
        prog="tinycnn",
        description="Train, evaluate and inspect tinycnn models.",
        epilog="Run 'tinycnn <command> --help' for the options of a command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    t = sub.add_parser("train", help="train a model and save it",
                       description="Train a model; writes model.npz, model.json, "
                                   "history.json, curves.png and checkpoint.npz to --out.")
    t.add_argument("--model", choices=builders, default="simple_convnet",
                   help="network (default: %(default)s)")
    _add_data_args(t)
    t.add_argument("--epochs", type=_positive_int, default=3, help="default: %(default)s")
    t.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="default: %(default)s")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default per optimizer: "
                        + ", ".join(f"{k} {v:g}" for k, v in OPTIMIZERS.items()) + ")")
    t.add_argument("--momentum", type=float, default=0.9,
                   help="for momentum/nesterov (default: %(default)s)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="default: %(default)s")
    t.add_argument("--schedule", choices=SCHEDULES, default="none",
                   help="learning-rate schedule: step (x0.1 every third of the run), "
                        "multistep (x0.1 at 50%% and 75%%), exponential (--gamma per epoch), "
                        "cosine (per batch, to 0 at the end), plateau (x0.1 after 2 epochs "
                        "without improvement); default: %(default)s")
    t.add_argument("--gamma", type=_positive_float, default=0.9,
                   help="decay per epoch of --schedule exponential (default: %(default)s)")
    t.add_argument("--warmup", type=_nonnegative_int, default=0, metavar="EPOCHS",
                   help="linear warmup epochs before the schedule (default: 0)")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--augment", action="store_true",
                   help="random crops (and horizontal flips for CIFAR-10)")
    t.add_argument("--val-size", type=_nonnegative_int, default=None, metavar="N",
                   help="training images held out for validation (default: 1/12 of them; "
                        "0: no validation)")
    t.add_argument("--patience", type=_positive_int, default=None,
                   help="early stopping after this many epochs without improvement of the "
                        "validation loss (of the training loss with --val-size 0)")
    t.add_argument("--seed", type=int, default=0, help="seed of weights, split, order and "
                   "augmentation; the same seed repeats a CPU run exactly (default: 0)")
    t.add_argument("--out", default=None,
                   help="output folder (default: runs/<model>-<dataset>-<time>)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue from a checkpoint.npz written by an earlier run")
    t.add_argument("--limit-train", type=_positive_int, default=None, metavar="N",
                   help="use only the first N training images (quick runs, tests)")

    e = sub.add_parser("eval", help="report the accuracy of a saved model",
                       description="Evaluate a model.npz written by 'tinycnn train' (its "
                                   "model.json says how to rebuild it).")
    e.add_argument("path", help="model .npz file")
    e.add_argument("--model", choices=builders, default=None,
                   help="network (default: read from the .json beside the .npz)")
    _add_data_args(e, default_dataset=None)
    e.add_argument("--per-class", action="store_true", help="print per-class accuracy")

    s = sub.add_parser("summary", help="print a model's layers, shapes, parameters and MACs")
    s.add_argument("--model", choices=builders, default="simple_convnet",
                   help="network (default: %(default)s)")
    s.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                   help="input shape of this dataset (default: the model's usual one)")
    s.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="input shape without the batch axis, e.g. 3,32,32")
    s.add_argument("--num-classes", type=_positive_int, default=None,
                   help="default: the model's own default")
    return parser


# data ----------------------------------------------------------------------------------
def load_dataset(name: str, train: bool, data_dir: str | None,
                 say: Callable[[str], Any],
                 download: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """``(images uint8 NCHW, labels, description)`` of a split; says when it is partial."""
    from tinycnn.data import CIFAR10, MNIST, DatasetWarning, FashionMNIST

    split = "train" if train else "test"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        if name == "mnist":
            ds = MNIST(data_dir, train=train, download=download, fallback="embedded")
            if ds.is_subset:
                # Name the folders and files, so a wrong --data-dir is obvious at a glance.
                prefix = "train" if train else "t10k"
                where = " or ".join(str(d) for d in ds.search_dirs)
                reason = ("could not be downloaded (offline?)" if download
                          else f"was not found in {where}")
                desc = (f"embedded MNIST subset ({len(ds)} {split} images): full MNIST {reason}; "
                        f"put {prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz "
                        f"in {ds.search_dirs[0]}, point TINYCNN_DATA or --data-dir at their "
                        "folder, or add --download")
            else:
                desc = f"full MNIST from {ds.source} ({len(ds)} {split} images)"
        elif name == "fashion-mnist":
            ds = FashionMNIST(data_dir, train=train, download=download)
            desc = f"Fashion-MNIST ({len(ds)} {split} images)"
        else:
            ds = CIFAR10(data_dir, train=train, download=download)
            desc = f"CIFAR-10 ({len(ds)} {split} images)"
            if getattr(ds, "is_partial", False):
                desc += ": the partial test set, not the full 10,000"
    say(desc)
    return np.asarray(ds.data), np.asarray(ds.targets), desc


def _augmentation(dataset: str) -> Any:
    from tinycnn.data import Compose, RandomCrop, RandomHorizontalFlip

    if dataset == "cifar10":
        return Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()])
    return RandomCrop(28, padding=2)


def _loader(x: np.ndarray, y: np.ndarray, args: argparse.Namespace, batch: int,
            shuffle: bool = False, seed: int | None = None, transform: Any = None) -> Any:
    from tinycnn.data import DataLoader

    _, _, _, mean, std = DATASETS[args.dataset]
    return DataLoader((x, y), batch_size=batch, shuffle=shuffle, seed=seed,
                      transform=transform, mean=mean, std=std, device=args.device)


def _setup(args: argparse.Namespace) -> None:
    from tinycnn import backend

    if args.device == "gpu":
        backend.require_gpu()
    if args.kernels:
        from tinycnn.fast import use_kernels

        use_kernels(args.kernels)


# commands ------------------------------------------------------------------------------
def _write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (temp file beside it, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _make_optimizer(args: argparse.Namespace, model: Any) -> Any:
    from tinycnn import optim

    lr = args.lr if args.lr is not None else OPTIMIZERS[args.optimizer]
    wd = args.weight_decay
    if args.optimizer == "sgd":
        return optim.SGD(model, lr=lr, weight_decay=wd)
    if args.optimizer in ("momentum", "nesterov"):
        return optim.Momentum(model, lr=lr, momentum=args.momentum,
                              nesterov=args.optimizer == "nesterov", weight_decay=wd)
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSProp,
           "adagrad": optim.AdaGrad}[args.optimizer]
    return cls(model, lr=lr, weight_decay=wd)


def _make_schedule(args: argparse.Namespace, optimizer: Any, steps: int) -> Any:
    from tinycnn import schedules as S

    main_epochs = max(args.epochs - args.warmup, 1)
    after: Any = None
    if args.schedule == "step":
        after = S.StepLR(optimizer, step_size=max(main_epochs // 3, 1))
    elif args.schedule == "multistep":
        after = S.MultiStepLR(optimizer, [max(main_epochs // 2, 1), max(3 * main_epochs // 4, 1)])
    elif args.schedule == "exponential":
        after = S.ExponentialLR(optimizer, args.gamma)
    elif args.schedule == "cosine":
        after = S.CosineAnnealingLR(optimizer, main_epochs, steps_per_epoch=steps)
    elif args.schedule == "plateau":
        if args.warmup:
            raise UsageError("--warmup cannot be combined with --schedule plateau")
        return S.ReduceLROnPlateau(optimizer, factor=0.1, patience=2)
    elif args.schedule == "onecycle":  # --lr is the peak; the cycle has its own warmup
        if args.warmup:
            raise UsageError("--warmup cannot be combined with --schedule onecycle "
                             "(its first 30% is a warmup)")
        momentum = hasattr(optimizer, "betas") or getattr(optimizer, "momentum", 0) > 0
        return S.OneCycleLR(optimizer, max_lr=optimizer.lr, epochs=args.epochs,
                            steps_per_epoch=steps, cycle_momentum=momentum)
    elif args.schedule == "poly":
        after = S.PolynomialLR(optimizer, total_iters=main_epochs, power=1.0,
                               steps_per_epoch=steps)
    elif args.schedule == "restarts":
        after = S.CosineAnnealingWarmRestarts(optimizer, T_0=max(main_epochs // 3, 1),
                                              steps_per_epoch=steps)
    if args.warmup:
        return S.LinearWarmup(optimizer, args.warmup, after, steps_per_epoch=steps)
    return after


def cmd_train(args: argparse.Namespace) -> int:
    from tinycnn.data import train_val_split
    from tinycnn.losses import SoftmaxCrossEntropy
    from tinycnn.metrics import evaluate
    from tinycnn.trainer import Trainer

    _setup(args)
    channels, size, classes, _, _ = DATASETS[args.dataset]
    batch = args.batch_size or (128 if args.dataset == "cifar10" else 100)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{args.dataset}-{stamp}"
    resume = Path(args.resume) if args.resume else None
    if resume is not None and not resume.is_file():
        raise UsageError(f"--resume: no checkpoint file at {resume}")
    print(f"tinycnn train: {args.model} on {args.dataset}, output in {out}")

    x, y, desc = load_dataset(args.dataset, True, args.data_dir, print, args.download)
    if args.limit_train:
        x, y = x[: args.limit_train], y[: args.limit_train]
    xt, yt, test_desc = load_dataset(args.dataset, False, args.data_dir, print, args.download)
    if args.limit_test:
        xt, yt = xt[: args.limit_test], yt[: args.limit_test]
    val_size = len(y) // 12 if args.val_size is None else args.val_size
    if val_size >= len(y):
        raise UsageError(f"--val-size {val_size} leaves no training images (have {len(y)})")
    val_loader = None
    if val_size > 0:
        train_part, val_part = train_val_split((x, y), val_size=val_size, seed=args.seed)
        x, y = train_part.data, train_part.targets
        val_loader = _loader(val_part.data, val_part.targets, args, 500)
    print(f"{len(y)} training, {val_size} validation, {len(yt)} test images")

    transform = _augmentation(args.dataset) if args.augment else None
    train_loader = _loader(x, y, args, batch, shuffle=True, seed=args.seed, transform=transform)
    model = build_model(args.model, classes, channels, size, args.seed)
    try:  # out-of-range --momentum, --weight-decay, --label-smoothing: the classes say why
        optimizer = _make_optimizer(args, model)
        scheduler = _make_schedule(args, optimizer, len(train_loader))
        loss = SoftmaxCrossEntropy(args.label_smoothing)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    trainer = Trainer(model, loss, optimizer, scheduler,
                      device=args.device, checkpoint=out / "checkpoint.npz",
                      patience=args.patience, progress=False if args.no_progress else None)
    if resume is not None:
        # Loaded once here to turn a checkpoint of another model, optimizer or data set
        # into a one-line error; fit() loads it again (all absolute state, so idempotent).
        try:
            trainer.load_checkpoint(resume, train_loader)
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise UsageError(f"--resume: cannot continue from {resume} with these options "
                             f"(--model, --optimizer, --dataset must match that run): "
                             f"{exc}") from None
    # Created only now, so that a usage or data error leaves no empty run folder behind.
    out.mkdir(parents=True, exist_ok=True)
    history = trainer.fit(train_loader, val_loader, epochs=args.epochs, resume=resume or False)
    _write_text(out / "history.json", json.dumps(history.to_dict(), indent=1))
    if len(history):
        history.plot(out / "curves.png")
    if history.interrupted:
        if trainer.last_checkpoint is None:  # stopped inside a step: nothing complete saved
            print("stopped by Ctrl-C; no checkpoint was saved")
        else:
            print(f"stopped by Ctrl-C; continue with: tinycnn train ... --resume "
                  f"{trainer.last_checkpoint}")
        return 130
    test = evaluate(model, _loader(xt, yt, args, 500))
    model.save(out / "model.npz")
    config = {
        "model": args.model, "dataset": args.dataset, "num_classes": classes,
        "in_channels": channels, "image_size": size, "seed": args.seed,
        "train_data": desc, "test_data": test_desc, "epochs": len(history),
        "test_accuracy": test["accuracy"], "test_images": test["n"],
        "args": {k: v for k, v in vars(args).items() if k != "func"},
    }
    _write_text(out / "model.json", json.dumps(config, indent=1))
    print(f"test accuracy: {test['accuracy']:.4f} ({test['n']} images)")
    print(f"wrote {out / 'model.npz'}, {out / 'model.json'}, {out / 'curves.png'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tinycnn.metrics import per_class_accuracy, predict

    _setup(args)
    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"no model file at {path}")
    meta_path = path.with_suffix(".json")
    try:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        config = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if not isinstance(config, dict):
            raise ValueError(f"a {type(config).__name__}, not an object")
    except ValueError as exc:
        raise UsageError(f"{meta_path} is not the JSON that train writes ({exc}); delete it "
                         "and pass --model and --dataset") from None
    name = args.model or config.get("model")
    dataset = args.dataset or config.get("dataset")
    if name is None or dataset is None:
        raise UsageError(f"{meta_path} not found: pass --model and --dataset")
    args.dataset = dataset
    channels, size, classes, _, _ = DATASETS[dataset]
    model = build_model(name, config.get("num_classes", classes), channels, size, 0)
    try:
        model.load(path)
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        # Not a model.npz, or one of another model / data set: one line, not a traceback.
        raise UsageError(f"cannot load {path} as {name} for {dataset}: {exc}") from None
    if args.device == "gpu":
        model.to("gpu")
    xt, yt, _ = load_dataset(dataset, False, args.data_dir, print, args.download)
    if args.limit_test:
        xt, yt = xt[: args.limit_test], yt[: args.limit_test]
    pred, target = predict(model, _loader(xt, yt, args, args.batch_size or 500))
    acc = float((pred == target).mean()) if len(target) else 0.0
    print(f"{name} on {dataset}: test accuracy {acc:.4f} ({len(target)} images)")
    if args.per_class:
        for c, a in enumerate(per_class_accuracy(pred, target, classes)):
            print(f"  class {c}: {a:.4f}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from tinycnn.summary import summary

    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:  # C,H,W: anything else fails deep in a layer
            raise UsageError(f"--input-shape must look like 3,32,32, got {args.input_shape!r}")
    elif args.dataset:
        c, size, _, _, _ = DATASETS[args.dataset]
        shape = (c, size, size)
    else:
        shape = default_input_shape(args.model)
    model = build_model(args.model, args.num_classes, shape[0], shape[-1], 0)
    print(f"{args.model}, input {shape}")
    summary(model, shape)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tinycnn`` console script; returns the exit status."""
    from tinycnn.anomaly import NonFiniteError
    from tinycnn.backend import DeviceError
    from tinycnn.data import DatasetFormatError, DatasetNotFoundError

    parser = make_parser()
    args = parser.parse_args(argv)
    commands = {"train": cmd_train, "eval": cmd_eval, "summary": cmd_summary}
    try:
        return commands[args.command](args)
    except (UsageError, DeviceError, DatasetNotFoundError, DatasetFormatError,
            NonFiniteError) as exc:
        # Bad options, the GPU unusable, data missing or corrupt, training that produced
        # NaN (no model.npz is written then): one clear message.
        print(f"tinycnn {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
