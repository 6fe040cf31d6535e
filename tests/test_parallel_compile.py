"""tinycnn.precompile: the kernels a step needs, found by a trace and compiled on every core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tinycnn
from tinycnn import models
from tinycnn.containers import Sequential
from tinycnn.fast import parallel_compile
from tinycnn.layers.activation import ReLU
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.linear import Affine
from tinycnn.layers.norm import BatchNorm2D
from tinycnn.layers.pool import AvgPool2D, MaxPool2D
from tinycnn.layers.shape import Flatten
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.optim import SGD
from tinycnn.trainer import Trainer

pytest.importorskip("numba", reason="precompile compiles the Numba kernels: numba is not "
                                    "installed")

ROOT = Path(__file__).resolve().parent.parent


def _small_net(seed: int = 0) -> Sequential:
    rng = np.random.default_rng(seed)
    return Sequential(Conv2D(3, 8, 3, padding=1, rng=rng), BatchNorm2D(8), ReLU(),
                      MaxPool2D(2), Conv2D(8, 8, 3, padding=1, rng=rng), ReLU(),
                      AvgPool2D(2), Flatten(), Affine(8 * 4 * 4, 5, rng=rng))


NETS = {
    "small": (_small_net, (3, 16, 16)),
    "lenet5": (lambda: models.lenet5(num_classes=10, seed=0), (1, 28, 28)),
    "resnet20": (lambda: models.resnet20(num_classes=10, seed=0), (3, 32, 32)),
    "mobilenet_v2_cifar": (lambda: models.mobilenet_v2_cifar(num_classes=10, seed=0),
                           (3, 32, 32)),
}


def _real_calls(model: Any, x: np.ndarray) -> set[tuple[str, Any]]:
    """The (kernel, argument types) pairs a real training step and eval forward call."""
    from numba import typeof

    calls: set[tuple[str, Any]] = set()
    kernels = parallel_compile.dispatchers()

    def passing(name: str, kernel: Any) -> Any:
        def run(*args: Any) -> Any:
            calls.add((name, tuple(typeof(a) for a in args)))
            return kernel(*args)
        return run

    try:
        for name, kernel in kernels.items():
            parallel_compile._swap(name, passing(name, kernel))
        model.train()
        y = model(x)
        model.backward(np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype))
        model.eval()
        model(x)
    finally:
        for name, kernel in kernels.items():
            parallel_compile._swap(name, kernel)
    return calls


@pytest.mark.parametrize("net", sorted(NETS))
def test_trace_finds_exactly_the_kernels_a_real_step_calls(net: str) -> None:
    build, shape = NETS[net]
    model = tinycnn.accelerate(build(), input_grad=False)
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    traced, stopped = parallel_compile.trace(model, x)
    assert stopped is None
    assert len(traced) == len(set(traced))  # each pair once, in the order first called
    assert set(traced) == _real_calls(model, x)


def test_trace_leaves_the_model_and_the_kernels_as_they_were() -> None:
    model = tinycnn.accelerate(_small_net(), input_grad=False)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    model.eval()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    kernels = parallel_compile.dispatchers()
    traced, _ = parallel_compile.trace(model, x)
    assert traced
    assert not model.training  # the copy was switched to train(), not the model
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # running stats too
    assert parallel_compile.dispatchers() == kernels
    with pytest.raises(tinycnn.BackwardBeforeForwardError):  # no forward cache was left
        model.backward(np.ones((4, 5), np.float32))


def test_trace_stops_at_an_error_and_restores_the_kernels() -> None:
    model = tinycnn.accelerate(_small_net())
    kernels = parallel_compile.dispatchers()
    wrong = np.zeros((2, 1, 16, 16), np.float32)  # 1 channel where the net takes 3
    traced, stopped = parallel_compile.trace(model, wrong)
    assert traced == [] and stopped is not None and "channel" in stopped.lower()
    assert parallel_compile.dispatchers() == kernels
    report = tinycnn.precompile(model, wrong)
    assert report.kernels == 0 and report.trace_stopped == stopped


def test_a_patched_layer_is_not_traced() -> None:
    model = tinycnn.accelerate(_small_net())
    model[0].forward = model[0].forward  # an instance-level replacement, as a hook makes
    traced, stopped = parallel_compile.trace(model, np.zeros((2, 3, 16, 16), np.float32))
    assert traced == [] and "replaced" in stopped


def test_kernel_calls_from_other_threads_run_during_a_trace() -> None:
    ran: list[int] = []
    calls: dict[tuple[str, Any], None] = {}
    tracer = threading.Thread(target=lambda: None)  # some other thread traces
    recorder = parallel_compile._Recorder("k", lambda *a: ran.append(len(a)), calls, tracer)
    recorder(np.zeros(3), 1)
    assert ran == [2] and not calls  # this thread is not the tracer: the real kernel ran
    recorder.tracer = threading.current_thread()
    assert recorder(np.zeros(3, np.float32), 1) is None
    assert ran == [2] and len(calls) == 1


def test_precompile_does_nothing_without_the_numba_kernels() -> None:
    x = np.zeros((2, 3, 16, 16), np.float32)
    with tinycnn.use_kernels("reference"):
        report = tinycnn.precompile(tinycnn.accelerate(_small_net()), x)
    assert report.kernels == 0 and report.workers == 0
    assert tinycnn.precompile(_small_net(), x).kernels == 0  # the reference layers


@pytest.mark.parametrize("bad, error, words", [
    ({"workers": -1}, ValueError, "workers"),
    ({"workers": 1.5}, ValueError, "workers"),
    ({"x": [[1.0]]}, TypeError, "x must be"),
    ({"model": "lenet5"}, TypeError, "model must be"),
])
def test_precompile_rejects_bad_arguments(bad: dict[str, Any], error: type, words: str) -> None:
    args = {"model": _small_net(), "x": np.zeros((2, 3, 16, 16), np.float32), **bad}
    with pytest.raises(error, match=words):
        tinycnn.precompile(args.pop("model"), args.pop("x"), **args)


def test_compile_workers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYCNN_COMPILE_WORKERS", "3")
    assert parallel_compile._default_workers() == 3
    monkeypatch.setenv("TINYCNN_COMPILE_WORKERS", "many")
    with pytest.raises(ValueError, match="TINYCNN_COMPILE_WORKERS.*'many'"):
        parallel_compile._default_workers()
    monkeypatch.delenv("TINYCNN_COMPILE_WORKERS")
    assert parallel_compile._default_workers() == (os.cpu_count() or 1) - 1


_FRESH_CACHE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tinycnn
    from numba.core import event
    from tinycnn.containers import Sequential
    from tinycnn.layers.activation import ReLU
    from tinycnn.layers.conv import Conv2D
    from tinycnn.layers.linear import Affine
    from tinycnn.layers.pool import MaxPool2D
    from tinycnn.layers.shape import Flatten

    rng = np.random.default_rng(0)
    model = tinycnn.accelerate(Sequential(
        Conv2D(2, 3, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2), Flatten(),
        Affine(3 * 4 * 4, 2, rng=rng)))
    x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    first = tinycnn.precompile(model, x, workers=int(sys.argv[1]))
    compiled = []

    class Listener(event.Listener):
        def on_start(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__name__)

        def on_end(self, ev):
            pass

    event.register("numba:compile", Listener())
    model.train()
    y = model(x)
    dx = model.backward(np.ones_like(y))
    model.eval()
    model(x)
    again = tinycnn.precompile(model, x)
    print(json.dumps({"first": vars(first), "again": vars(again), "compiled": compiled,
                      "dx": list(dx.shape)}))
""")


@pytest.mark.parametrize("workers", [1, 0])
def test_after_precompile_the_first_step_compiles_nothing(tmp_path: Path, workers: int) -> None:
    """On an empty Numba cache: the workers' kernels come back through the disk cache."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    script = tmp_path / "fresh.py"
    script.write_text(_FRESH_CACHE_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(workers)], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    first, again = result["first"], result["again"]
    assert result["compiled"] == []  # the step found every kernel compiled
    assert result["dx"] == [2, 2, 8, 8]
    assert first["kernels"] >= 3 and first["trace_stopped"] is None
    assert first["workers"] == workers
    assert first["compiled_here"] + first["compiled_by_workers"] == first["kernels"]
    assert (first["compiled_by_workers"] > 0) == (workers > 0)
    assert again["ready"] == again["kernels"] == first["kernels"] and again["workers"] == 0


def _fit_data() -> tuple[Any, int]:
    from tinycnn.data import DataLoader

    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 5, 24)
    return DataLoader((x, y), batch_size=8), 8


@pytest.mark.parametrize("kw, expected", [
    ({}, 1), ({"accelerate": False}, 0), ({"detect_anomaly": True}, 0)])
def test_trainer_precompiles_on_its_first_batch(monkeypatch: pytest.MonkeyPatch,
                                                kw: dict[str, Any], expected: int) -> None:
    seen: list[tuple[Any, tuple[int, ...]]] = []
    monkeypatch.setattr("tinycnn.trainer.precompile",
                        lambda model, x, **_: seen.append((model, x.shape)))
    model = _small_net()
    loader, batch = _fit_data()
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model, lr=0.01), progress=False,
                      verbose=False, **kw)
    trainer.fit(loader, epochs=2)
    assert len(seen) == expected
    if expected:
        assert seen[0][0] is model and seen[0][1] == (batch, 3, 16, 16)


def test_kernels_compile_at_the_engine_opt_level_and_restore_numba_s() -> None:
    from numba.core import config

    from tinycnn.fast import numba_cpu

    seen: list[int] = []

    class Kernel:
        def compile(self, sig: Any) -> Any:
            seen.append(int(config.OPT))
            if sig == "bad":
                raise TypeError("no such signature")
            return sig

    before = config.OPT
    kernel = Kernel()
    numba_cpu._at_kernel_opt_level(kernel)
    assert kernel.compile("sig") == "sig"
    with pytest.raises(TypeError):
        kernel.compile("bad")
    assert seen == [numba_cpu.KERNEL_OPT_LEVEL] * 2
    assert config.OPT is before  # every other function still compiles at Numba's level
    if "NUMBA_OPT" not in os.environ:
        assert "compile" in vars(numba_cpu._tiled_conv_kernel)  # the engine's kernels do


def test_warmup_records_every_kernel_it_calls_for_both_dtypes() -> None:
    from tinycnn.fast import numba_cpu

    kernels = parallel_compile.dispatchers()
    calls, stopped = parallel_compile.record_calls(numba_cpu._every_kernel_once)
    assert stopped is None and parallel_compile.dispatchers() == kernels
    names = {name for name, _ in calls}
    assert len(names) >= len(kernels) - 2  # every kernel, bar helpers of rare paths
    for name in names:  # each in float32 and in float64
        dtypes = {str(t.dtype) for kernel, sig in calls if kernel == name for t in sig
                  if hasattr(t, "dtype")}
        assert {"float32", "float64"} <= dtypes, name


def test_record_calls_stops_at_an_error_and_says_which() -> None:
    from tinycnn.fast import numba_cpu

    def run() -> None:
        numba_cpu.pad2d(np.zeros((1, 1, 2, 2), np.float32), 1, 1)
        raise RuntimeError("stopped here")

    kernels = parallel_compile.dispatchers()
    calls, stopped = parallel_compile.record_calls(run)
    assert [name for name, _ in calls] == ["_pad2d_kernel"]
    assert stopped == "RuntimeError: stopped here"
    assert parallel_compile.dispatchers() == kernels
