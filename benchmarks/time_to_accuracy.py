"""Time to 99.0 % MNIST test accuracy: tinycnn and PyTorch CPU side by side, one run.

Each (side, recipe) pair trains in a fresh Python process whose clock starts before its
first import, so imports, loading MNIST, building the net and (tinycnn) compiling the
Numba kernels are all inside the time. ``--numba-cache fresh`` (the default) gives the
tinycnn process an empty Numba cache, so the full JIT compile is counted, as on a first
run; ``--numba-cache keep`` uses your cache (what later runs see). Evaluating the 10,000
test images every ``--eval-every`` epoch is counted too. Training stops at the target
accuracy or after ``--max-epochs`` (the learning-rate schedule spans that budget).

    TINYCNN_DATA=/path/to/data python benchmarks/time_to_accuracy.py
    python benchmarks/time_to_accuracy.py --recipes shared --sides tinycnn,torch --seed 1
    python benchmarks/time_to_accuracy.py --limit-train 512 --limit-test 256 --max-epochs 1

Both sides train the same net, built from one layer list (``MNIST_NET``: conv 16@5x5 pad 2
- BN - ReLU - max-pool 2 - conv 32@5x5 - BN - ReLU - max-pool 2 - Linear 800->128 - ReLU -
Linear 128->10, about 1.7 M multiply-adds per image); PyTorch's twin comes from
``torch_nets.from_spec``. Data: the full 60,000 training and 10,000 test images from
``$TINYCNN_DATA`` through tinycnn's loaders, normalized with MNIST's mean and std, no
augmentation. PyTorch uses ``torch.set_num_threads(os.cpu_count())``.

Recipes:

* ``best``: each side's own fast setup. tinycnn: ``tinycnn.accelerate``-d net, its
  ``DataLoader``, AdamW + OneCycleLR, batch 128, the plain ``model(x)`` / ``backward`` /
  ``step`` loop. PyTorch: its default initialization, batches sliced from one normalized
  tensor, AdamW + OneCycleLR, batch 128, ``inference_mode`` evaluation. The settings were
  chosen, not found by a search.
* ``shared``: one recipe, identical on both sides: the same initial weights (tinycnn's,
  copied through the state dict), the same batches in the same order (tinycnn's
  ``DataLoader``, same seed), SGD with Nesterov momentum 0.9, weight decay 5e-4,
  OneCycleLR to 0.05, batch 64. Both follow almost the same path, so the time difference is
  the speed of the frameworks.

Prints one table: side, recipe, seconds to the target (or "not reached in X s" with the
best accuracy), epochs trained, final accuracy, startup seconds (imports, data, net), the
first training step (on the tinycnn side: with the JIT compile of the training kernels,
which ``tinycnn.precompile`` spreads over the cores before that step, as the ``Trainer``
does) and the CPU model.
``--json OUT`` also writes every evaluation.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before any import: the child processes time their imports

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# The environment before this process imports tinycnn (which adds its thread defaults):
# each side's process starts from it, so PyTorch never runs with tinycnn's settings.
ENVIRON = dict(os.environ)
SIDES = ("tinycnn", "torch")
RECIPES = ("best", "shared")
MEAN, STD = 0.1307, 0.3081  # MNIST training-set pixel statistics
EVAL_BATCH = 1000
RESULT_TAG = "RESULT "

MNIST_NET: tuple[tuple[Any, ...], ...] = (
    ("conv", 1, 16, 5, 2, False), ("bn", 16), ("relu",), ("maxpool", 2),
    ("conv", 16, 32, 5, 0, False), ("bn", 32), ("relu",), ("maxpool", 2),
    ("flatten",), ("linear", 32 * 5 * 5, 128), ("relu",), ("linear", 128, 10),
)

# Per side and recipe: batch size, optimizer and OneCycleLR peak.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "best": {
        "tinycnn": {"batch": 128, "optimizer": "adamw", "max_lr": 3e-3, "weight_decay": 1e-2},
        "torch": {"batch": 128, "optimizer": "adamw", "max_lr": 3e-3, "weight_decay": 1e-2},
    },
    "shared": {
        side: {"batch": 64, "optimizer": "sgd", "max_lr": 0.05, "weight_decay": 5e-4}
        for side in SIDES
    },
}


def elapsed() -> float:
    return time.perf_counter() - START


def eval_points(steps_per_epoch: int, every: float) -> set[int]:
    """Steps (1-based, within an epoch) after which the test set is scored."""
    count = max(1, round(1 / every))
    return {max(1, round(steps_per_epoch * (i + 1) / count)) for i in range(count)}


def load_data(args: argparse.Namespace) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """MNIST train and test arrays, through tinycnn's loader (the real files, no fallback)."""
    from tinycnn.data import load_mnist

    train = load_mnist(train=True, allow_embedded=False)
    test = load_mnist(train=False, allow_embedded=False)
    n_train = args.limit_train or len(train.targets)
    n_test = args.limit_test or len(test.targets)
    return ((train.data[:n_train], train.targets[:n_train]),
            (test.data[:n_test], test.targets[:n_test]))


def build_tinycnn(spec: tuple[tuple[Any, ...], ...], seed: int) -> Any:
    """tinycnn's net from the layer list (``torch_nets.from_spec`` builds PyTorch's)."""
    import tinycnn

    rng = tinycnn.backend.numpy.random.default_rng(seed)
    makers = {
        "conv": lambda c_in, c_out, k, pad, bias: tinycnn.Conv2D(c_in, c_out, k, padding=pad,
                                                                 bias=bias, rng=rng),
        "bn": tinycnn.BatchNorm2D,
        "relu": tinycnn.ReLU,
        "maxpool": tinycnn.MaxPool2D,
        "flatten": tinycnn.Flatten,
        "linear": lambda n_in, n_out: tinycnn.Affine(n_in, n_out, rng=rng),
    }
    return tinycnn.Sequential(*(makers[kind](*args) for kind, *args in spec))


class Clock:
    """Evaluation log of one run: stops the run at the target or the epoch budget."""

    def __init__(self, args: argparse.Namespace, steps_per_epoch: int) -> None:
        self.args = args
        self.steps_per_epoch = steps_per_epoch
        self.points = eval_points(steps_per_epoch, args.eval_every)
        self.history: list[dict[str, float]] = []
        self.reached: float | None = None
        self.first_step_s: float | None = None

    def record(self, epoch: int, step: int, accuracy: float) -> bool:
        """Log one evaluation; True when the target is reached."""
        epochs = round(epoch + step / self.steps_per_epoch, 3)
        now = elapsed()
        self.history.append({"epochs": epochs, "test_accuracy": accuracy, "elapsed_s": now})
        print(f"  epoch {epochs:5.2f}: test accuracy {accuracy * 100:.2f} %  at {now:6.1f} s",
              flush=True)
        if accuracy >= self.args.target:
            self.reached = now
        return self.reached is not None


def run_tinycnn(args: argparse.Namespace, recipe: str) -> tuple[Clock, float]:
    import tinycnn
    from tinycnn.data import DataLoader
    from tinycnn.metrics import evaluate
    from tinycnn.schedules import OneCycleLR

    cfg = SETTINGS[recipe]["tinycnn"]
    train, test = load_data(args)
    train_loader = DataLoader(train, batch_size=cfg["batch"], shuffle=True, seed=args.seed,
                              mean=MEAN, std=STD, drop_last=True)
    test_loader = DataLoader(test, batch_size=EVAL_BATCH, mean=MEAN, std=STD)
    # nothing needs the gradient of the images
    model = tinycnn.accelerate(build_tinycnn(MNIST_NET, args.seed), input_grad=False)
    if cfg["optimizer"] == "adamw":
        opt = tinycnn.AdamW(model, lr=cfg["max_lr"], weight_decay=cfg["weight_decay"])
    else:
        opt = tinycnn.SGD(model, lr=cfg["max_lr"], momentum=0.9, nesterov=True,
                          weight_decay=cfg["weight_decay"])
    total_steps = args.max_epochs * len(train_loader)
    schedule = OneCycleLR(opt, max_lr=cfg["max_lr"], total_steps=total_steps)
    loss_fn = tinycnn.SoftmaxCrossEntropy()
    clock = Clock(args, len(train_loader))
    startup = elapsed()
    model.train()
    done = False
    for epoch in range(args.max_epochs):
        for step, (x, y) in enumerate(train_loader, 1):
            if clock.first_step_s is None:  # as the Trainer does: every core compiles
                tinycnn.precompile(model, x)
            opt.zero_grad()
            loss_fn(model(x), y)
            model.backward(loss_fn.backward())
            opt.step()
            schedule.step()
            if clock.first_step_s is None:
                clock.first_step_s = elapsed() - startup
            if step in clock.points:
                done = clock.record(epoch, step, evaluate(model, test_loader)["accuracy"])
                if done:
                    break
        if done:
            break
    return clock, startup


def run_torch(args: argparse.Namespace, recipe: str) -> tuple[Clock, float]:
    # PyTorch before tinycnn (which loads the data): PyTorch's OpenMP runtime starts with
    # the environment as it was, not with tinycnn's thread defaults
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    import torch_nets  # benchmarks/torch_nets.py

    cfg = SETTINGS[recipe]["torch"]
    (train_x, train_y), (test_x, test_y) = load_data(args)
    torch.manual_seed(args.seed)
    model = torch_nets.from_spec(MNIST_NET, torch)

    def normalized(images: Any) -> Any:
        return (torch.tensor(images).float() / 255 - MEAN) / STD

    test_x, test_y = normalized(test_x), torch.tensor(test_y)
    if recipe == "shared":
        # the same start and the same batches as tinycnn's side
        from tinycnn.data import DataLoader

        torch_nets.load_tinycnn_state(model, build_tinycnn(MNIST_NET, args.seed).state_dict(),
                                      torch)
        loader = DataLoader((train_x, train_y), batch_size=cfg["batch"], shuffle=True,
                            seed=args.seed, mean=MEAN, std=STD, drop_last=True)
        steps_per_epoch = len(loader)

        def batches() -> Any:
            for x, y in loader:
                yield torch.from_numpy(x), torch.from_numpy(y)
    else:
        all_x, all_y = normalized(train_x), torch.tensor(train_y)
        steps_per_epoch = len(all_y) // cfg["batch"]

        def batches() -> Any:
            order = torch.randperm(len(all_y))
            for i in range(steps_per_epoch):
                idx = order[i * cfg["batch"]:(i + 1) * cfg["batch"]]
                yield all_x[idx], all_y[idx]

    if cfg["optimizer"] == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["max_lr"],
                                weight_decay=cfg["weight_decay"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg["max_lr"], momentum=0.9,
                              nesterov=True, weight_decay=cfg["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg["max_lr"], total_steps=args.max_epochs * steps_per_epoch)

    def accuracy() -> float:
        model.eval()
        correct = 0
        with torch.inference_mode():
            for i in range(0, len(test_y), EVAL_BATCH):
                logits = model(test_x[i:i + EVAL_BATCH])
                correct += int((logits.argmax(1) == test_y[i:i + EVAL_BATCH]).sum())
        model.train()
        return correct / len(test_y)

    clock = Clock(args, steps_per_epoch)
    startup = elapsed()
    model.train()
    done = False
    for epoch in range(args.max_epochs):
        for step, (x, y) in enumerate(batches(), 1):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            schedule.step()
            if clock.first_step_s is None:
                clock.first_step_s = elapsed() - startup
            if step in clock.points:
                done = clock.record(epoch, step, accuracy())
                if done:
                    break
        if done:
            break
    return clock, startup


def child(args: argparse.Namespace) -> None:
    """Train one side with one recipe and print its result as one tagged JSON line."""
    side, recipe = args.child
    if side == "tinycnn":
        import tinycnn  # first: its thread defaults must be set before NumPy loads

        clock, startup = run_tinycnn(args, recipe)
        threads = {"kernels": tinycnn.current_kernels()}
    else:
        import torch

        clock, startup = run_torch(args, recipe)
        threads = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    last = clock.history[-1] if clock.history else {"epochs": 0.0, "test_accuracy": 0.0}
    result = {
        "side": side, "recipe": recipe, "settings": SETTINGS[recipe][side], **threads,
        "seconds_to_target": clock.reached, "total_s": elapsed(), "startup_s": startup,
        "first_step_s": clock.first_step_s, "epochs": last["epochs"],
        "final_accuracy": last["test_accuracy"],
        "best_accuracy": max((h["test_accuracy"] for h in clock.history), default=0.0),
        "history": clock.history,
    }
    print(RESULT_TAG + json.dumps(result), flush=True)


def run_child(side: str, recipe: str, argv: list[str], numba_cache: str) -> dict[str, Any]:
    """One fresh process; its progress lines pass through, its result comes back."""
    env = dict(ENVIRON)
    with tempfile.TemporaryDirectory(prefix="tta-numba-") as fresh:
        if side == "tinycnn" and numba_cache == "fresh":
            env["NUMBA_CACHE_DIR"] = fresh  # empty: every kernel is compiled in the run
        here = Path(__file__).resolve().parent
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), env.get("PYTHONPATH")]))
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv,
                                 "--child", side, recipe],
                                stdout=subprocess.PIPE, text=True, env=env)
        result = None
        for line in proc.stdout:
            if line.startswith(RESULT_TAG):
                result = json.loads(line[len(RESULT_TAG):])
            else:
                print(line, end="", flush=True)
        proc.wait()
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"the {side} / {recipe} run failed (exit status "
                           f"{proc.returncode}; its error is printed above)")
    return result


def table(results: list[dict[str, Any]], target: float, cpu: str) -> str:
    head = (f"| side | recipe | seconds to {target * 100:.1f} % | epochs | final accuracy "
            "| startup s | first step s | CPU |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["seconds_to_target"] is not None:
            reached = f"{r['seconds_to_target']:.1f}"
        else:
            reached = (f"not reached in {r['total_s']:.1f} s, best "
                       f"{r['best_accuracy'] * 100:.2f} %")
        first = "" if r["first_step_s"] is None else f"{r['first_step_s']:.2f}"
        lines.append(f"| {r['side']} | {r['recipe']} | {reached} | {r['epochs']:.2f} | "
                     f"{r['final_accuracy'] * 100:.2f} % | {r['startup_s']:.1f} | {first} "
                     f"| {cpu} |")
    return "\n".join(lines)


def _names(text: str, allowed: tuple[str, ...]) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return names


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text}")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default=",".join(RECIPES),
                   type=lambda t: _names(t, RECIPES), help="best, shared")
    p.add_argument("--sides", default=",".join(SIDES),
                   type=lambda t: _names(t, SIDES), help="tinycnn, torch")
    p.add_argument("--max-epochs", type=int, default=3,
                   help="epoch budget; the OneCycleLR schedule spans it (default 3)")
    p.add_argument("--target", type=_fraction, default=0.99,
                   help="test accuracy to reach, as a fraction (default 0.99)")
    p.add_argument("--eval-every", type=_fraction, default=0.25,
                   help="score the test set every this fraction of an epoch (rounded to a "
                        "whole number of evaluations per epoch; default 0.25)")
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--limit-train", type=_count, default=0,
                   help="train on the first N images only (0: all 60,000)")
    p.add_argument("--limit-test", type=_count, default=0,
                   help="test on the first N images only (0: all 10,000)")
    p.add_argument("--numba-cache", choices=("fresh", "keep"), default="fresh",
                   help="fresh: an empty Numba cache, the JIT compile is timed (default); "
                        "keep: use $NUMBA_CACHE_DIR or Numba's default cache")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results here")
    p.add_argument("--child", nargs=2, metavar=("SIDE", "RECIPE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.max_epochs < 1:
        p.error(f"--max-epochs must be at least 1, got {args.max_epochs}")
    largest = max(cfg["batch"] for recipe in args.recipes for cfg in SETTINGS[recipe].values())
    if 0 < args.limit_train < largest:
        p.error(f"--limit-train must be 0 (all) or at least {largest} (one batch of the "
                f"largest recipe), got {args.limit_train}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.child:
        child(args)
        return 0
    if "torch" in args.sides and importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed: run with --sides tinycnn, or pip install torch",
              file=sys.stderr)
        return 2
    from tinycnn.data.dataset import DatasetNotFoundError

    try:  # here, so a missing file is one clear message rather than an error per process
        load_data(args)
    except DatasetNotFoundError as err:
        print(f"MNIST is needed: {err}", file=sys.stderr)
        return 2
    from speed import _cpu_name  # benchmarks/speed.py: standard library only at import

    cpu = _cpu_name()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; target {args.target * 100:.1f} % test "
          f"accuracy, at most {args.max_epochs} epoch(s)", flush=True)
    results = []
    for recipe in args.recipes:
        for side in args.sides:
            print(f"{side} / {recipe}:", flush=True)
            results.append(run_child(side, recipe, argv, args.numba_cache))
    print()
    print(table(results, args.target, cpu))
    if args.json:
        payload = {"cpu": cpu, "cores": os.cpu_count(), "target": args.target,
                   "max_epochs": args.max_epochs, "seed": args.seed,
                   "limit_train": args.limit_train, "limit_test": args.limit_test,
                   "numba_cache": args.numba_cache, "net": [list(layer) for layer in MNIST_NET],
                   "results": results}
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
