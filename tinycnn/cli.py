"""The ``tinycnn`` command (also ``python -m tinycnn``).

    tinycnn train                                   # a small CNN on MNIST, a few minutes
    tinycnn train --model resnet20 --dataset cifar10 --epochs 30 --optimizer nesterov \\
                  --lr 0.1 --schedule cosine --warmup 2 --augment --weight-decay 5e-4
    tinycnn train --dataset cifar10 --augment standard,jitter,pca --l1 1e-5
    tinycnn eval runs/<run>/model.npz               # test accuracy of a saved model
    tinycnn summary --model resnet20 --dataset cifar10
    tinycnn models | download mnist | info | warmup

``train`` writes into ``--out`` (default ``runs/<model>-<dataset>-<time>``): ``model.npz``
(the state dict, loadable with ``Module.load``), ``model.json`` (how to rebuild it, and
its test accuracy), ``history.json``, ``curves.png``, ``checkpoint.npz`` (for ``--resume``)
and ``checkpoint.json`` (the options a resumed run must repeat). ``--limit-train N`` /
``--limit-test N`` use only the first N images of the training / test set.

Errors caused by the user's input never show a traceback: one line on stderr says what is
wrong and what to do; the exit status is 2 for bad usage and 1 for other failures
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import json
import math
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

from tinycnn.cli_errors import CLIError, RunError, UsageError, explain
from tinycnn.run_files import (
    check_run_options,
    config_field,
    mismatch_summary,
    read_npz,
    run_options,
    write_text,
)

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
# --augment choices, in the order the pipeline applies them (geometry first, then colour)
AUGMENTATIONS = {
    "standard": "random crops of the zero-padded image, plus horizontal flips for CIFAR-10",
    "resized-crop": "crops of 25-100% of the area, aspect 3/4 to 4/3, resized back",
    "vflip": "vertical flips",
    "jitter": "brightness, contrast and saturation jitter of 0.4",
    "pca": "AlexNet's PCA colour noise, sigma 0.1, basis from the training images",
}
SCHEDULES = ("none", "step", "multistep", "exponential", "cosine", "plateau", "onecycle", "poly",
             "restarts")

__all__ = ["CLIError", "RunError", "UsageError", "build_model", "main", "model_builders"]


# Parameters of float32 weights above this share of the machine's memory are refused
# before anything is allocated (a typo such as --num-classes 1000000000 asks for 626 GiB).
MEMORY_SHARE = 0.5


def model_builders() -> dict[str, Callable[..., Any]]:
    """Every model builder exported by :mod:`tinycnn.models` (lower-case functions)."""
    from tinycnn import models

    return {name: getattr(models, name) for name in models.__all__
            if name[0].islower() and inspect.isfunction(getattr(models, name))}


def _unknown_model(name: str) -> str:
    close = difflib.get_close_matches(name, model_builders(), n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"unknown model {name!r}; {hint}'tinycnn models' lists them"


def _memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _count(model: Any) -> int:
    return int(sum(p.size for p in model.parameters()))


def estimate_parameters(name: str, num_classes: int, in_channels: int | None,
                        image_size: int | None) -> int:
    """Parameters of builder ``name`` for these sizes, from two or three small builds.

    The count is affine in ``num_classes`` (the last layer) and, for builders that take an
    ``image_size``, about quadratic in it (the flattened features): both are extrapolated
    from builds with 1 and 2 classes at 32 and 64 pixels, so nothing large is allocated.
    """
    builder = model_builders()[name]
    accepted = inspect.signature(builder).parameters
    small = min(image_size, 64) if image_size else None

    def params(classes: int, size: int | None) -> int:
        wanted = {"num_classes": classes, "in_channels": in_channels, "image_size": size}
        return _count(builder(**{k: v for k, v in wanted.items()
                                 if k in accepted and v is not None}))

    one = params(1, small)
    per_class = params(2, small) - one
    body = one - per_class
    if "image_size" in accepted and image_size and image_size > 64:
        at32 = params(1, 32) - per_class
        body += (body - at32) * (image_size ** 2 - 64 ** 2) // (64 ** 2 - 32 ** 2)
    return body + per_class * num_classes


def check_model_size(name: str, num_classes: int, in_channels: int | None,
                     image_size: int | None, what: str,
                     error: type[CLIError] = UsageError) -> None:
    """Refuse, before allocating, a model whose float32 weights need too much memory.

    Only sizes beyond the builder's defaults (more classes, larger images) are checked:
    the defaults are known to fit. ``what`` names the option or file the sizes came from.
    """
    params = inspect.signature(model_builders()[name]).parameters

    def default(key: str) -> int:
        p = params.get(key)
        return p.default if p is not None and isinstance(p.default, int) else 0

    # Only builders that take image_size grow with the input (their flattened features).
    large_input = "image_size" in params and (image_size or 0) > 64
    if num_classes <= max(default("num_classes"), 1000) and not large_input:
        return
    memory = _memory_bytes()
    if memory is None:
        return
    try:
        count = estimate_parameters(name, num_classes, in_channels, image_size)
    except ValueError:  # the small probe builds do not fit this model: the real build will say
        return
    need = 4 * count
    if need > MEMORY_SHARE * memory:
        raise error(
            f"{what}: {name} with {num_classes:,} classes would have about {count:,} "
            f"parameters ({need / 2**30:,.1f} GiB in float32), more than half of this "
            f"machine's {memory / 2**30:,.1f} GiB: choose fewer classes or a smaller input")


def build_model(name: str, num_classes: int | None, in_channels: int | None,
                image_size: int | None, seed: int | None) -> Any:
    """Call builder ``name`` with those keyword arguments it accepts (``None``: its default)."""
    builders = model_builders()
    if name not in builders:
        raise UsageError(_unknown_model(name))
    builder = builders[name]
    accepted = inspect.signature(builder).parameters
    wanted = {"num_classes": num_classes, "in_channels": in_channels,
              "image_size": image_size, "seed": seed}
    try:
        return builder(**{k: v for k, v in wanted.items() if k in accepted and v is not None})
    except ValueError as exc:  # e.g. an input too small for the network's pooling
        raise UsageError(f"{name}: {str(exc).splitlines()[0]}; 'tinycnn models' lists the "
                         "models and what they are made for") from None


def default_input_shape(name: str) -> tuple[int, int, int]:
    """The input a builder is made for, read from its defaults: ImageNet (1000 classes)
    224x224 (Inception v3: 299x299, its published size), else its ``image_size``, else
    32x32 for 3 channels and 28x28 for 1."""
    params = inspect.signature(model_builders()[name]).parameters
    if name == "inception_v3":
        return 3, 299, 299

    def default(key: str, fallback: int) -> int:
        p = params.get(key)
        return p.default if p is not None and isinstance(p.default, int) else fallback

    channels = default("in_channels", 3)
    if default("num_classes", 10) == 1000:
        return channels, 224, 224
    size = default("image_size", 32 if channels == 3 else 28)
    return channels, size, size


# argument types: their messages are shown as they are, so they speak the user's terms
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def augment_names(text: str) -> str:
    """A comma list of :data:`AUGMENTATIONS` names, in their canonical order, once each."""
    names = [part.strip() for part in text.split(",")]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown augmentation {unknown[0]!r}; choose from {', '.join(AUGMENTATIONS)} "
            "(several with commas, e.g. standard,jitter)")
    return ",".join(n for n in AUGMENTATIONS if n in names)


def model_name(text: str) -> str:
    if text not in model_builders():
        raise argparse.ArgumentTypeError(_unknown_model(text))
    return text


class _Parser(argparse.ArgumentParser):
    """Errors as two short lines (what is wrong, where the help is), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        if "required: COMMAND" in message:
            message = "which command? " + ", ".join(COMMANDS)
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"Run '{self.prog} --help' for the options.\n")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="on an error, show Python's traceback too")


def _add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "mnist") -> None:
    p.add_argument("--dataset", choices=sorted(DATASETS), default=default_dataset,
                   help="dataset (default: %(default)s)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder holding the datasets (default: $TINYCNN_DATA, else "
                        "~/.cache/tinycnn)")
    p.add_argument("--download", action="store_true",
                   help="download missing dataset files into the data folder (canonical "
                        "address, then mirrors; checksums verified)")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help="mini-batch size (default: 100 for MNIST-like, 128 for CIFAR-10)")
    p.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                   help="evaluate on the first N test images only (quick runs, tests)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="run on the CPU (NumPy + Numba) or the GPU (CuPy)")
    p.add_argument("--kernels", choices=("numba", "reference"), default=None,
                   help="CPU kernel set (default: the library's current choice)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none anyway when output is not a terminal)")
    _add_common(p)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tinycnn", usage="tinycnn COMMAND [options]",
        description="Train, evaluate and inspect tinycnn models.",
        epilog="Run 'tinycnn COMMAND --help' for the options of a command; add --debug to "
               "any command to see Python's traceback of an error.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, prog=f"tinycnn {name}", **kwargs)

    t = add("train", help="train a model and save it",
            usage="tinycnn train [--model NAME] [--dataset NAME] [--epochs N] "
                  "[options]",
            description="Train a model; writes model.npz, model.json, "
                        "history.json, curves.png and checkpoint.npz to --out.")
    t.add_argument("--model", type=model_name, default="simple_convnet", metavar="NAME",
                   help="network (default: %(default)s; 'tinycnn models' lists them)")
    _add_data_args(t)
    t.add_argument("--epochs", type=positive_int, default=3, metavar="N",
                   help="default: %(default)s")
    t.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="default: %(default)s")
    t.add_argument("--lr", type=positive_number, default=None,
                   help="learning rate (default per optimizer: "
                        + ", ".join(f"{k} {v:g}" for k, v in OPTIMIZERS.items()) + ")")
    t.add_argument("--momentum", type=number, default=0.9,
                   help="for momentum/nesterov (default: %(default)s)")
    t.add_argument("--weight-decay", type=number, default=0.0,
                   help="L2 penalty (default: %(default)s)")
    t.add_argument("--l1", type=number, default=0.0, metavar="STRENGTH",
                   help="L1 penalty: adds STRENGTH * sign(w) to every gradient, pushing "
                        "weights to exactly zero (default: %(default)s)")
    t.add_argument("--schedule", choices=SCHEDULES, default="none",
                   help="learning-rate schedule: step (x0.1 every third of the run), "
                        "multistep (x0.1 at 50%% and 75%%), exponential (--gamma per epoch), "
                        "cosine (per batch, to 0 at the end), plateau (x0.1 after 2 epochs "
                        "without improvement), onecycle (up to --lr and down, per batch), "
                        "poly (polynomial decay to 0), restarts (cosine with warm restarts); "
                        "default: %(default)s")
    t.add_argument("--gamma", type=positive_number, default=0.9,
                   help="decay per epoch of --schedule exponential (default: %(default)s)")
    t.add_argument("--warmup", type=nonnegative_int, default=0, metavar="EPOCHS",
                   help="linear warmup epochs before the schedule (default: 0)")
    t.add_argument("--label-smoothing", type=number, default=0.0, metavar="EPS",
                   help="soften the targets to (1 - EPS) * one-hot + EPS / classes, as "
                        "PyTorch's label_smoothing (default: 0.0)")
    t.add_argument("--augment", type=augment_names, nargs="?", const="standard", default=None,
                   metavar="NAMES",
                   help="augment the training images; NAMES is a comma list of "
                        + "; ".join(f"{k}: {v}".replace("%", "%%")
                                    for k, v in AUGMENTATIONS.items())
                        + ". Bare --augment means standard")
    t.add_argument("--val-size", type=nonnegative_int, default=None, metavar="N",
                   help="training images held out for validation (default: 1/12 of them; "
                        "0: no validation)")
    t.add_argument("--patience", type=positive_int, default=None, metavar="N",
                   help="early stopping after this many epochs without improvement of the "
                        "validation loss (of the training loss with --val-size 0)")
    t.add_argument("--seed", type=whole_number, default=0,
                   help="seed of weights, split, order and augmentation; the same seed repeats "
                        "a CPU run exactly (default: 0)")
    t.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: runs/<model>-<dataset>-<time>)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue from a checkpoint.npz written by an earlier run (with the "
                        "same options; --epochs may grow)")
    t.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                   help="use only the first N training images (quick runs, tests)")

    e = add("eval", help="report the accuracy of a saved model",
            usage="tinycnn eval MODEL.npz [--model NAME] [--dataset NAME] [options]",
            description="Evaluate a model.npz written by 'tinycnn train' (its "
                        "model.json says how to rebuild it).")
    e.add_argument("path", metavar="MODEL.npz", help="model file written by 'tinycnn train'")
    e.add_argument("--model", type=model_name, default=None, metavar="NAME",
                   help="network (default: read from the .json beside the .npz)")
    _add_data_args(e, default_dataset=None)
    e.add_argument("--per-class", action="store_true", help="print per-class accuracy")

    s = add("summary", help="print a model's layers, shapes, parameters and MACs",
            usage="tinycnn summary [--model NAME] [--input-shape C,H,W] [options]")
    s.add_argument("--model", type=model_name, default="simple_convnet", metavar="NAME",
                   help="network (default: %(default)s)")
    s.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                   help="input shape of this dataset (default: the model's usual one)")
    s.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="input shape without the batch axis, e.g. 3,32,32")
    s.add_argument("--num-classes", type=positive_int, default=None, metavar="N",
                   help="default: the model's own default")
    _add_common(s)

    m = add("models", help="list the models with their parameter counts",
            usage="tinycnn models")
    _add_common(m)

    d = add("download", help="download a dataset into the data folder",
            usage="tinycnn download DATASET [--data-dir DIR]",
            description="Fetch a dataset's files (checksums verified) so that "
                        "later runs find them.")
    d.add_argument("dataset", metavar="DATASET", choices=sorted(DATASETS),
                   help="one of: " + ", ".join(sorted(DATASETS)))
    d.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where to put it (default: $TINYCNN_DATA, else ~/.cache/tinycnn)")
    _add_common(d)

    i = add("info", help="versions, kernels, threads and why the GPU is (not) usable",
            usage="tinycnn info")
    _add_common(i)

    w = add("warmup", help="compile every CPU kernel now (once, on all cores), so no "
                           "later run waits for it",
            usage="tinycnn warmup")
    _add_common(w)
    return parser


# data ----------------------------------------------------------------------------------
def data_location_named(data_dir: str | None, download: bool) -> bool:
    """True when the user said where the data is: --data-dir, $TINYCNN_DATA or --download."""
    return data_dir is not None or bool(os.environ.get("TINYCNN_DATA")) or download


def load_dataset(name: str, train: bool, data_dir: str | None,
                 say: Callable[[str], Any],
                 download: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """``(images uint8 NCHW, labels, description)`` of a split; says when it is partial.

    MNIST falls back to the subset embedded in tinycnn only when no data location was
    named: a named folder without the files, or a failed download, is an error.
    """
    from tinycnn.data import CIFAR10, MNIST, DatasetWarning, FashionMNIST

    where, given = ("--data-dir", data_dir) if data_dir else \
        ("TINYCNN_DATA", os.environ.get("TINYCNN_DATA"))
    if given and Path(given).expanduser().is_file():
        raise UsageError(f"{where} {given} is a file; it should name the folder that holds "
                         f"{name}'s files")
    split = "train" if train else "test"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        if name == "mnist":
            fallback = None if data_location_named(data_dir, download) else "embedded"
            ds = MNIST(data_dir, train=train, download=download, fallback=fallback)
            if ds.is_subset:
                desc = f"embedded MNIST subset ({len(ds):,} {split} images)"
                if train:
                    say(f"full MNIST not found in {ds.root}: using the {len(ds):,}-image "
                        "subset shipped with tinycnn (for the full set: tinycnn download mnist)")
            else:
                desc = f"full MNIST from {ds.source} ({len(ds):,} {split} images)"
        elif name == "fashion-mnist":
            ds = FashionMNIST(data_dir, train=train, download=download)
            desc = f"Fashion-MNIST ({len(ds):,} {split} images)"
        else:
            ds = CIFAR10(data_dir, train=train, download=download)
            desc = f"CIFAR-10 ({len(ds):,} {split} images)"
            if getattr(ds, "is_partial", False):
                desc += ": the partial test set, not the full 10,000"
    say(desc)
    return np.asarray(ds.data), np.asarray(ds.targets), desc


def _augmentation(dataset: str, names: str, train_images: np.ndarray) -> Any:
    """The pipeline of ``--augment NAMES`` (see :data:`AUGMENTATIONS`), in their order.

    The PCA colour basis is computed from ``train_images`` (the training part only, uint8),
    so a resumed run with the same options computes the same one.
    """
    from tinycnn import data as D

    size = DATASETS[dataset][1]
    steps: list[Any] = []
    for name in names.split(","):
        if name == "standard":
            if dataset == "cifar10":
                steps += [D.RandomCrop(32, padding=4), D.RandomHorizontalFlip()]
            else:
                steps.append(D.RandomCrop(28, padding=2))
        elif name == "resized-crop":
            steps.append(D.RandomResizedCrop(size, scale=(0.25, 1.0)))
        elif name == "vflip":
            steps.append(D.RandomVerticalFlip())
        elif name == "jitter":
            steps.append(D.ColorJitter(0.4, 0.4, 0.4))
        elif name == "pca":
            steps.append(D.PCAColorJitter(*D.pca_color_basis(train_images), sigma=0.1))
    return steps[0] if len(steps) == 1 else D.Compose(steps)


def _loader(x: np.ndarray, y: np.ndarray, args: argparse.Namespace, batch: int,
            shuffle: bool = False, seed: int | None = None, transform: Any = None) -> Any:
    from tinycnn.data import DataLoader

    _, _, _, mean, std = DATASETS[args.dataset]
    return DataLoader((x, y), batch_size=batch, shuffle=shuffle, seed=seed,
                      transform=transform, mean=mean, std=std, device=args.device)


def numba_kernels_module() -> ModuleType:
    """The acceleration engine's Numba kernel module."""
    return importlib.import_module("tinycnn.fast.numba_cpu")


def kernels_cached() -> bool | None:
    """Whether Numba's disk cache holds any compiled tinycnn kernel (None: cannot tell)."""
    try:
        from numba.core.dispatcher import Dispatcher

        module = numba_kernels_module()
        index_files = [f._cache._cache_file._index_path for f in vars(module).values()
                       if isinstance(f, Dispatcher)]
    except Exception:  # no Numba, or its cache internals moved: say nothing rather than guess
        return None
    if not index_files:
        return None
    return any(os.path.exists(path) for path in index_files)


def _setup(args: argparse.Namespace) -> None:
    from tinycnn import backend
    from tinycnn.fast import use_kernels

    if args.device == "gpu":
        backend.require_gpu()
    if args.kernels:
        use_kernels(args.kernels)


def _compile_notice(args: argparse.Namespace) -> None:
    """Say once, before the first batch, that a cold Numba cache means a silent wait."""
    from tinycnn.fast import current_kernels

    if args.device == "cpu" and current_kernels() == "numba" and kernels_cached() is False:
        print("tinycnn: compiling the CPU kernels this model needs, once, on all cores: about "
              "5-20 s before the first batch (later runs load them from Numba's cache; "
              "'tinycnn warmup' does it ahead)", file=sys.stderr)


# commands ------------------------------------------------------------------------------
def _make_optimizer(args: argparse.Namespace, model: Any) -> Any:
    from tinycnn import optim

    lr = args.lr if args.lr is not None else OPTIMIZERS[args.optimizer]
    wd = args.weight_decay
    if args.optimizer == "sgd":
        return optim.SGD(model, lr=lr, weight_decay=wd, l1=args.l1)
    if args.optimizer in ("momentum", "nesterov"):
        return optim.Momentum(model, lr=lr, momentum=args.momentum,
                              nesterov=args.optimizer == "nesterov", weight_decay=wd, l1=args.l1)
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSProp,
           "adagrad": optim.AdaGrad}[args.optimizer]
    return cls(model, lr=lr, weight_decay=wd, l1=args.l1)


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


def _cli_trainer() -> type:
    """The Trainer, minus its advice in Python terms: the command says how to continue."""
    from tinycnn.trainer import Trainer

    class CLITrainer(Trainer):
        def _say(self, msg: str) -> None:
            if msg.startswith("Interrupted") and ". Resume with fit(" in msg:
                msg = msg.split(". Resume with fit(")[0] + "."
            super()._say(msg)

    return CLITrainer


def cmd_train(args: argparse.Namespace) -> int:
    from tinycnn.data import train_val_split
    from tinycnn.losses import SoftmaxCrossEntropy
    from tinycnn.metrics import evaluate
    from tinycnn.plot import plot_history

    channels, size, classes, _, _ = DATASETS[args.dataset]
    batch = args.batch_size or (128 if args.dataset == "cifar10" else 100)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{args.dataset}-{stamp}"
    resume = Path(args.resume) if args.resume else None
    if resume is not None and not resume.is_file():
        raise UsageError(f"--resume: no checkpoint file at {resume}")
    if resume is not None:
        read_npz(resume, "a checkpoint written by 'tinycnn train'", arrays=False)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    _setup(args)
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
    options = run_options(args, batch, val_size,
                          args.lr if args.lr is not None else OPTIMIZERS[args.optimizer])
    note = check_run_options(resume, options) if resume is not None else None
    val_loader = None
    if val_size > 0:
        train_part, val_part = train_val_split((x, y), val_size=val_size, seed=args.seed)
        x, y = train_part.data, train_part.targets
        val_loader = _loader(val_part.data, val_part.targets, args, 500)
    print(f"{len(y)} training, {val_size} validation, {len(yt)} test images")

    transform = _augmentation(args.dataset, args.augment, x) if args.augment else None
    train_loader = _loader(x, y, args, batch, shuffle=True, seed=args.seed, transform=transform)
    model = build_model(args.model, classes, channels, size, args.seed)
    try:  # out-of-range --momentum, --weight-decay, --label-smoothing: the classes say why
        optimizer = _make_optimizer(args, model)
        scheduler = _make_schedule(args, optimizer, len(train_loader))
        loss = SoftmaxCrossEntropy(args.label_smoothing)
    except ValueError as exc:  # the classes name their Python arguments: name the options
        raise UsageError(re.sub(r"\b(label_smoothing|weight_decay|momentum|gamma|lr|l1)\b",
                                lambda m: "--" + m.group(1).replace("_", "-"), str(exc))) from None
    trainer = _cli_trainer()(model, loss, optimizer, scheduler,
                             device=args.device, checkpoint=out / "checkpoint.npz",
                             patience=args.patience,
                             progress=False if args.no_progress else None)
    if resume is not None:
        # Loaded once here to turn a checkpoint of another model, optimizer or data set
        # into a one-line error; fit() loads it again (all absolute state, so idempotent).
        try:
            trainer.load_checkpoint(resume, train_loader)
        except Exception as exc:  # whatever the file holds, the answer is the same
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunError(f"--resume: cannot continue from {resume}: {first[:300]}. A damaged "
                           "file cannot be resumed; a sound one needs the --model, --optimizer "
                           "and --dataset of its run") from None
        if note:
            print(note, file=sys.stderr)
    # Created only now, so that a usage or data error leaves no empty run folder behind.
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "checkpoint.json", json.dumps({"options": options}, indent=1))
    _compile_notice(args)
    try:
        # A diverging run is reported once, below, not by NumPy's warnings on the way there.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            history = trainer.fit(train_loader, val_loader, epochs=args.epochs,
                                  resume=resume or False)
    except FloatingPointError as exc:
        lr = options["lr"]
        raise RunError(f"training diverged ({str(exc).splitlines()[0]}): lower --lr (it was "
                       f"{lr:g}; try {lr / 10:g}), or add --warmup 1") from None
    write_text(out / "history.json", json.dumps(history.to_dict(), indent=1))
    if history.interrupted:
        if len(history):
            plot_history(history, out / "curves.png", title=f"{args.model} on {args.dataset}")
        if trainer.last_checkpoint is None:  # stopped inside a step: nothing complete saved
            print("stopped by Ctrl-C; no checkpoint was saved")
        else:
            print(f"stopped by Ctrl-C; continue with the same options and --resume "
                  f"{trainer.last_checkpoint}")
        return 130
    test = evaluate(model, _loader(xt, yt, args, 500))
    if len(history):
        plot_history(history, out / "curves.png",
                     title=f"{args.model} on {args.dataset}: test accuracy "
                           f"{test['accuracy']:.2%} ({test['n']:,} images)")
    model.save(out / "model.npz")
    config = {
        "model": args.model, "dataset": args.dataset, "num_classes": classes,
        "in_channels": channels, "image_size": size, "seed": args.seed,
        "train_data": desc, "test_data": test_desc, "epochs": len(history),
        "test_accuracy": test["accuracy"], "test_images": test["n"],
        "args": {k: v for k, v in vars(args).items() if k != "func"},
    }
    write_text(out / "model.json", json.dumps(config, indent=1))
    print(f"test accuracy: {test['accuracy']:.4f} ({test['n']} images)")
    print(f"wrote {out / 'model.npz'}, {out / 'model.json'}, {out / 'curves.png'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tinycnn.metrics import per_class_accuracy, predict

    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"no model file at {path}")
    state = read_npz(path, "a model file (the model.npz that 'tinycnn train' writes)")
    if "meta" in state and any(k.startswith("optim.") for k in state):
        raise RunError(f"{path} is a training checkpoint, not a model file: evaluate the "
                       "model.npz beside it, or continue training with 'tinycnn train ... "
                       f"--resume {path}'")
    meta_path = path.with_suffix(".json")
    try:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        config = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if not isinstance(config, dict):
            raise ValueError(f"a {type(config).__name__}, not an object")
    except ValueError as exc:
        raise RunError(f"{meta_path} is not the JSON that train writes ({exc}); delete it "
                       "and pass --model and --dataset") from None
    known = (model_builders(), DATASETS)
    name = args.model or config_field(config, "model", meta_path, *known)
    dataset = args.dataset or config_field(config, "dataset", meta_path, *known)
    if name is None or dataset is None:
        absent = " and ".join(opt for opt, v in (("--model", name), ("--dataset", dataset))
                              if v is None)
        raise UsageError(f"{path} has no {meta_path.name} beside it to say how it was "
                         f"trained: pass {absent}")
    args.dataset = dataset
    channels, size, classes, _, _ = DATASETS[dataset]
    num_classes = config_field(config, "num_classes", meta_path, *known) or classes
    check_model_size(name, num_classes, channels, size, str(meta_path), RunError)
    _setup(args)
    model = build_model(name, num_classes, channels, size, 0)
    problem = mismatch_summary(path, name, dataset, model.state_dict(), state)
    if problem:
        raise RunError(problem)
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as exc:
        raise RunError(f"cannot load {path} into {name}: {str(exc).splitlines()[0]}") from None
    if args.device == "gpu":
        model.to("gpu")
    xt, yt, _ = load_dataset(dataset, False, args.data_dir, print, args.download)
    if args.limit_test:
        xt, yt = xt[: args.limit_test], yt[: args.limit_test]
    _compile_notice(args)
    pred, target = predict(model, _loader(xt, yt, args, args.batch_size or 500))
    acc = float((pred == target).mean()) if len(target) else 0.0
    print(f"{name} on {dataset}: test accuracy {acc:.4f} ({len(target)} images)")
    if args.per_class:
        for c, a in enumerate(per_class_accuracy(pred, target, num_classes)):
            print(f"  class {c}: {a:.4f}")
    return 0


MAX_INPUT_SIDE = 4096


def cmd_summary(args: argparse.Namespace) -> int:
    from tinycnn import use_kernels
    from tinycnn.summary import summary

    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:  # C,H,W: anything else fails deep in a layer
            raise UsageError(f"--input-shape must look like 3,32,32, got {args.input_shape!r}")
        if max(shape) > MAX_INPUT_SIDE:
            raise UsageError(f"--input-shape {args.input_shape}: at most {MAX_INPUT_SIDE} per "
                             "axis")
    elif args.dataset:
        c, size, _, _, _ = DATASETS[args.dataset]
        shape = (c, size, size)
    else:
        shape = default_input_shape(args.model)
    if args.num_classes is not None or args.input_shape:
        check_model_size(args.model, args.num_classes or 10, shape[0], shape[-1],
                         "--num-classes" if args.num_classes else "--input-shape")
    model = build_model(args.model, args.num_classes, shape[0], shape[-1], 0)
    print(f"{args.model}, input {shape}")
    try:
        # One forward pass of zeros: the plain NumPy kernels need no compiling.
        with use_kernels("reference"):
            summary(model, shape)
    except (ValueError, IndexError) as exc:  # an input the network cannot take
        raise UsageError(f"{args.model} cannot take an input of shape {shape}: "
                         f"{str(exc).splitlines()[0]}") from None
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tinycnn.model_catalog import describe

    rows = describe()
    width = max(len(r[0]) for r in rows)
    print(f"{'model':<{width}}  {'parameters':>12}  description")
    for name, count, text in rows:
        shown = f"{count:,}" if count is not None else "?"
        print(f"{name:<{width}}  {shown:>12}  {text}")
    print("\nCounts are for each model's default classes and input; 'tinycnn summary --model "
          "NAME' shows its layers.")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from tinycnn.data import CIFAR10, MNIST, FashionMNIST, data_root

    cls = {"mnist": MNIST, "fashion-mnist": FashionMNIST, "cifar10": CIFAR10}[args.dataset]
    for train in (True, False):
        ds = cls(args.data_dir, train=train, download=True)
        print(f"{args.dataset} {'training' if train else 'test'} set: {len(ds):,} images in "
              f"{getattr(ds, 'source', data_root(args.data_dir))}")
    if args.data_dir is None and not os.environ.get("TINYCNN_DATA"):
        print(f"tinycnn finds it there by default ({data_root(None)})")
    else:
        print("pass the same --data-dir (or TINYCNN_DATA) to train and eval")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from tinycnn.info import report

    print(report())
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    module = numba_kernels_module()
    was_cached = kernels_cached()
    print("compiling every CPU kernel, for float32 and float64, on all cores (once: about a "
          "minute on two) ..."
          if not was_cached else "loading the CPU kernels from Numba's cache ...", flush=True)
    seconds = module.warmup()
    print(f"done in {seconds:.1f} s; later runs load them from the cache "
          f"({os.environ.get('NUMBA_CACHE_DIR') or 'beside the tinycnn sources'})")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train, "eval": cmd_eval, "summary": cmd_summary, "models": cmd_models,
    "download": cmd_download, "info": cmd_info, "warmup": cmd_warmup,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tinycnn`` console script; returns the exit status.

    Exit status 0 on success, 2 for bad usage (options, a named file that is not there),
    1 for other failures, 130 after Ctrl-C. Errors are one line on stderr; ``--debug``
    adds Python's traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug and argv.index("--debug") == 0:
        argv.remove("--debug")  # also accepted before the command
    args = make_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"tinycnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        code, message = explain(exc)
        if debug:
            traceback.print_exc()
        message = " ".join(line.strip() for line in message.splitlines() if line.strip())
        print(f"tinycnn {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
