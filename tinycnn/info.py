"""What ``tinycnn info`` prints: versions, kernels, threads, and why the GPU is (not) usable.

``gpu_status()`` answers the question ``tinycnn.gpu_available()`` leaves open: when the
answer is no, its ``reason`` says why and its ``hint`` what to do.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys
from typing import Any

GPU_INSTALL_HINT = ('pip install -e ".[gpu]" (CUDA 12) or pip install -e ".[gpu-cuda13]" '
                    "(CUDA 13) in your clone of tinycnn; see docs/gpu.md")


def package_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it (None: not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of Python and of the packages tinycnn uses (None: not installed)."""
    cupy = next((v for v in (package_version(n) for n in
                             ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x", "cupy"))
                 if v), None)
    return {
        "python": platform.python_version(),
        "tinycnn": package_version("tinycnn"),
        "numpy": package_version("numpy"),
        "numba": package_version("numba"),
        "matplotlib": package_version("matplotlib"),
        "cupy": cupy,
        "torch": package_version("torch"),
    }


def gpu_status() -> dict[str, Any]:
    """Whether tinycnn can use a GPU, and why not.

    Returns ``{"available": bool, "devices": [names], "cupy": version or None,
    "reason": str, "hint": str or None}``: ``reason`` says what was found (or what is
    missing), ``hint`` what to do about it (None when the GPU is usable).
    """
    status: dict[str, Any] = {"available": False, "devices": [], "cupy": None,
                              "reason": "", "hint": None}
    try:
        cp = importlib.import_module("cupy")
    except ModuleNotFoundError as exc:
        if exc.name != "cupy":  # CuPy is there but one of its own imports is not
            status["reason"] = f"CuPy did not import: {exc}"
            status["hint"] = "reinstall CuPy: " + GPU_INSTALL_HINT
        else:
            status["reason"] = "CuPy is not installed"
            status["hint"] = GPU_INSTALL_HINT
        return status
    except Exception as exc:  # a CUDA library that fails to load, a driver mismatch
        status["reason"] = f"CuPy is installed but did not import ({type(exc).__name__}: {exc})"
        status["hint"] = ("install the CuPy build that matches your CUDA version: "
                          + GPU_INSTALL_HINT)
        return status
    status["cupy"] = getattr(cp, "__version__", None)
    try:
        count = int(cp.cuda.runtime.getDeviceCount())
    except Exception as exc:
        status["reason"] = f"CuPy cannot reach CUDA ({type(exc).__name__}: {exc})"
        status["hint"] = ("check the NVIDIA driver: nvidia-smi should list the GPU; in a "
                          "container, start it with GPU access")
        return status
    if count == 0:
        status["reason"] = "CUDA sees no GPU"
        status["hint"] = "check CUDA_VISIBLE_DEVICES and nvidia-smi"
        return status
    names = []
    for i in range(count):
        try:
            name = cp.cuda.runtime.getDeviceProperties(i)["name"]
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        except Exception:
            names.append(f"device {i}")
    status.update(available=True, devices=names,
                  reason=f"{count} CUDA device(s): {', '.join(names)}")
    return status


def report() -> str:
    """The text of ``tinycnn info``."""
    from tinycnn._threads import thread_settings
    from tinycnn.fast import current_kernels

    lines = []
    shown = ", ".join(f"{k} {v or 'not installed'}" for k, v in versions().items())
    lines.append(f"versions: {shown}")
    lines.append(f"python: {sys.executable}")
    lines.append(f"CPU kernels of accelerated models: {current_kernels()} "
                 "(tinycnn.use_kernels('reference') or --kernels reference: the reference "
                 "layers)")
    threads = thread_settings()
    env = ", ".join(f"{k}={v}" for k, v in threads.items()
                    if k.isupper() and v is not None) or "none set"
    lines.append(f"threads: {threads.get('cpu_count')} CPUs; {env}")
    gpu = gpu_status()
    if gpu["available"]:
        lines.append(f"GPU: usable, {gpu['reason']} (CuPy {gpu['cupy']}); use --device gpu")
    else:
        lines.append(f"GPU: not usable: {gpu['reason']}")
        lines.append(f"  to use one: {gpu['hint']}")
    return "\n".join(lines)
