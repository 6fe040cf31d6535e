"""Compile the Numba kernels a model needs on every core, before its first step.

Numba compiles a kernel the first time it is called with new argument types, and one
kernel at a time: its compiler holds a process-wide lock. On an empty cache the first
training step of the time-to-accuracy benchmark's BatchNorm convnet compiles ten
parallel kernels on one core while the other core waits: 11.5 s on a 2-core AMD EPYC with
Numba 0.68.1 (16.4-16.8 s before the kernels compiled at -O1, see ``numba_cpu``).
:func:`precompile` spreads that work over processes: 6.4 s there with one child (8.8-9.6 s
at -O3); ``python benchmarks/time_to_accuracy.py`` times it inside a whole run.

1. **Trace.** One training step (forward, then backward with a zero upstream gradient)
   and one eval-mode forward of a *copy* of the model run on the example batch with every
   kernel call recorded instead of run. Numba compiles by argument types (dtype, number of
   dimensions, memory layout), and the trace gives exactly the ones the real step will
   pass. The wrappers around the kernels still check shapes and choose paths as they do
   in a real step; only the jitted calls are skipped, so the trace takes a fraction of a
   second (mostly the model's copy).
2. **Compile.** Kernels that are neither compiled in this process nor in Numba's disk
   cache form one list, the largest first. Child processes and this one take kernels from
   it in turn: each claims a kernel by creating a file with ``O_EXCL`` (exactly one
   creator wins), compiles all of that kernel's signatures and writes them to Numba's
   disk cache (``NUMBA_CACHE_DIR`` is honoured).
3. **Load.** This process loads what the children compiled from the cache, or compiles it
   itself where a child failed: the result is the same kernels a lazy first step compiles.

Children need the disk cache: where it cannot be written, this process compiles alone.
Exists only for speed; the layers never use it. The :class:`~tinycnn.Trainer` calls it on
its first batch; a hand-written loop may call it before its first step.
"""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PrecompileReport", "precompile"]

# Swapping the kernels for recorders is process-wide: one trace at a time.
_TRACE_LOCK = threading.Lock()
_WORKER_TIMEOUT_S = 900.0


@dataclass
class PrecompileReport:
    """What :func:`precompile` found and did."""

    kernels: int = 0  #: distinct (kernel, argument types) pairs the model's step calls
    ready: int = 0  #: already compiled in this process or loaded from the disk cache
    compiled_here: int = 0  #: compiled by this process
    compiled_by_workers: int = 0  #: compiled by child processes, loaded from the cache
    workers: int = 0  #: child processes started
    seconds: float = 0.0
    names: list[str] = field(default_factory=list)  #: the kernels, in the order called
    trace_stopped: str | None = None  #: the error that ended the trace early, if any

    def __str__(self) -> str:
        return (f"{self.kernels} kernel signatures: {self.ready} ready, "
                f"{self.compiled_here} compiled here, {self.compiled_by_workers} by "
                f"{self.workers} worker process(es), in {self.seconds:.1f} s")


def _module() -> Any:
    from tinycnn.fast import numba_cpu

    return numba_cpu


def dispatchers() -> dict[str, Any]:
    """Every jitted kernel the engine calls from Python, by a name a child process can
    look up (:func:`tinycnn.fast.numba_cpu.jitted_kernels`)."""
    return _module().jitted_kernels()


def _swap(name: str, value: Any) -> None:
    module = _module()
    if name.startswith("_serial."):
        module._serial[name.split(".", 1)[1]] = value
    else:
        setattr(module, name, value)


class _Recorder:
    """Stands in for one kernel during a trace: notes the argument types, computes nothing.

    Only for the tracing thread and the engine's image threads it starts; a call from any
    other thread (a model trained beside the trace) runs the real kernel.
    """

    def __init__(self, name: str, kernel: Any, calls: dict[tuple[str, Any], None],
                 tracer: threading.Thread) -> None:
        from tinycnn.fast.threads import IMAGE_THREADS

        self.name = name
        self.kernel = kernel
        self.calls = calls
        self.tracer = tracer
        self.pool = IMAGE_THREADS

    def __call__(self, *args: Any) -> Any:
        thread = threading.current_thread()
        if thread is not self.tracer and not thread.name.startswith(self.pool):
            return self.kernel(*args)
        from numba import typeof

        self.calls[(self.name, tuple(typeof(a) for a in args))] = None
        return None


def record_calls(run: Callable[[], Any]) -> tuple[list[tuple[str, Any]], str | None]:
    """The (kernel name, argument types) pairs ``run()`` calls, in the order first called,
    with every kernel call recorded instead of run; and why ``run`` stopped early (None
    when it ran through).

    The skipped kernels leave their outputs unset, so the code after them meets arbitrary
    values; an error that raises ends the recording (the kernels after it compile on first
    use).
    """
    from tinycnn.backend import numpy

    calls: dict[tuple[str, Any], None] = {}
    stopped = None
    kernels = dispatchers()
    tracer = threading.current_thread()
    with _TRACE_LOCK, numpy.errstate(all="ignore"):
        try:
            for name, kernel in kernels.items():
                _swap(name, _Recorder(name, kernel, calls, tracer))
            run()
        except Exception as exc:  # noqa: BLE001 - see the docstring
            stopped = f"{type(exc).__name__}: {exc}"
        finally:
            for name, kernel in kernels.items():
                _swap(name, kernel)
    return list(calls), stopped


def trace(model: Any, x: Any) -> tuple[list[tuple[str, Any]], str | None]:
    """The (kernel name, argument types) pairs one training step and one eval forward of
    ``model`` on ``x`` call (:func:`record_calls`). ``model`` is not changed: the trace
    runs on a deep copy. A real error of the model shows in its first real step, as it
    would without the trace.
    """
    from tinycnn.backend import get_array_module

    patched = [name or type(model).__name__ for name, m in model.named_modules()
               if "forward" in m.__dict__ or "backward" in m.__dict__]
    if patched:  # a copy would share the replacement, which may act on the original
        return [], f"{patched[0]}: its forward or backward is replaced on the instance"
    twin = copy.deepcopy(model)

    def step() -> None:
        twin.train()
        y = twin(x)
        if hasattr(y, "shape") and hasattr(y, "dtype"):
            twin.backward(get_array_module(y).zeros_like(y))
        twin.eval()
        twin(x)

    return record_calls(step)


def _cost(kernel: Any) -> int:
    """A rough compile cost, to hand out the largest kernels first: the source's length."""
    try:
        return len(inspect.getsource(kernel.py_func))
    except (OSError, TypeError):
        return 0


def _load_cached(kernel: Any, sig: tuple[Any, ...]) -> bool:
    """Load ``sig`` from Numba's disk cache into ``kernel``; False when it is not there.

    What ``Dispatcher.compile`` does before it compiles, without the compile (Numba has
    no public call for "load only").
    """
    from numba.core.compiler_lock import global_compiler_lock

    with global_compiler_lock:
        if tuple(sig) in kernel.overloads:
            return True
        try:
            cres = kernel._cache.load_overload(sig, kernel.targetctx)
        except Exception:  # an unreadable entry, or Numba's internals moved: compile it
            return False
        if cres is None:
            return False
        kernel.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
        kernel.add_overload(cres)
    return True


def _claim(folder: Path, job: int) -> bool:
    """True for exactly one of the processes that ask for ``job``."""
    try:
        fd = os.open(folder / f"claim-{job}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _compile_jobs(folder: Path, jobs: list[tuple[str, list[Any]]]) -> list[int]:
    """Claim and compile jobs from the shared list; the indices this process compiled."""
    kernels = dispatchers()
    done = []
    for i, (name, sigs) in enumerate(jobs):
        if not _claim(folder, i):
            continue
        for sig in sigs:
            kernels[name].compile(sig)
        done.append(i)
    return done


def _cache_writable(kernel: Any) -> bool:
    """Whether Numba's disk cache of ``kernel`` can take what a child compiles."""
    try:
        path = Path(kernel._cache.cache_path)
    except AttributeError:  # a kernel without cache=True
        return False
    while not path.exists() and path != path.parent:  # made on the first save
        path = path.parent
    return os.access(path, os.W_OK)


def _default_workers() -> int:
    value = os.environ.get("TINYCNN_COMPILE_WORKERS", "").strip()
    if not value:
        return (os.cpu_count() or 1) - 1
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(f"TINYCNN_COMPILE_WORKERS must be a whole number >= 0, got {value!r}")
    return count


def _start_workers(count: int, folder: Path) -> list[subprocess.Popen[bytes]]:
    """``count`` child processes running :func:`_worker` on ``folder``'s job list."""
    import tinycnn

    root = str(Path(tinycnn.__file__).resolve().parent.parent)  # the same tinycnn sources
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    procs = []
    for _ in range(count):
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tinycnn.fast.parallel_compile", str(folder)],
                # a child's failure needs no report: this process compiles what it left
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        except OSError:  # no interpreter to start (a frozen app): compile here alone
            break
    return procs


def precompile(model: Any, x: Any, *, workers: int | None = None) -> PrecompileReport:
    """Compile the Numba kernels a training step and an eval forward of ``model`` need.

    ``x``: an example input batch, as the model will be called with (its dtype, shape and
    layout pick the kernels and their signatures). ``workers``: child processes that
    compile beside this one (default: ``TINYCNN_COMPILE_WORKERS`` when set, else one per
    further core; never more than kernels to share; ``0`` compiles here alone). The model
    and ``x`` are not changed. Returns a report; does nothing (an empty report) for GPU
    arrays and under ``use_kernels("reference")``.
    """
    from tinycnn.fast import kernels_for
    from tinycnn.module import Module

    start = time.perf_counter()
    report = PrecompileReport()
    if not isinstance(model, Module):
        raise TypeError(f"precompile: model must be a tinycnn Module, got {type(model).__name__}")
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"precompile: x must be an example input batch (an array), got "
                        f"{type(x).__name__}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 0):
        raise ValueError(f"precompile: workers must be a whole number >= 0, got {workers!r}")
    if kernels_for(x) is not _module():  # the reference code, or the GPU's kernels
        return report
    calls, report.trace_stopped = trace(model, x)
    return compile_calls(calls, workers, report, start)


def compile_calls(calls: list[tuple[str, Any]], workers: int | None = None,
                  report: PrecompileReport | None = None,
                  start: float | None = None) -> PrecompileReport:
    """Compile (or load from the disk cache) the recorded ``(kernel name, argument types)``
    pairs here and in ``workers`` child processes (None: as :func:`precompile`)."""
    start = time.perf_counter() if start is None else start
    report = PrecompileReport() if report is None else report
    kernels = dispatchers()
    report.kernels = len(calls)
    report.names = list(dict.fromkeys(name for name, _ in calls))
    pending: dict[str, list[Any]] = {}
    for name, sig in calls:
        if _load_cached(kernels[name], sig):
            report.ready += 1
        else:
            pending.setdefault(name, []).append(sig)
    jobs = sorted(pending.items(), key=lambda job: -_cost(kernels[job[0]]))
    if not jobs:
        report.seconds = time.perf_counter() - start
        return report
    if workers is None:
        workers = _default_workers()
    workers = min(workers, len(jobs) - 1)
    if workers > 0 and not _cache_writable(kernels[jobs[0][0]]):
        workers = 0  # children could not hand their work back
    with tempfile.TemporaryDirectory(prefix="tinycnn-precompile-") as tmp:
        folder = Path(tmp)
        with open(folder / "jobs.pickle", "wb") as f:
            pickle.dump(jobs, f)
        procs = _start_workers(workers, folder) if workers > 0 else []
        report.workers = len(procs)
        mine = set(_compile_jobs(folder, jobs))
        for proc in procs:
            try:
                proc.communicate(timeout=_WORKER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    for i, (name, sigs) in enumerate(jobs):
        if i in mine:
            report.compiled_here += len(sigs)
            continue
        for sig in sigs:
            if _load_cached(kernels[name], sig):
                report.compiled_by_workers += 1
            else:  # the child failed or the cache lost it: compile it here
                kernels[name].compile(sig)
                report.compiled_here += 1
    report.seconds = time.perf_counter() - start
    return report


def _worker(folder: Path) -> None:
    """A child process: compile whatever jobs of the shared list are still unclaimed."""
    with open(folder / "jobs.pickle", "rb") as f:
        jobs = pickle.load(f)
    _compile_jobs(folder, jobs)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
