"""tinycnn: a readable CNN framework on NumPy with hand-written backward passes."""

from tinycnn._threads import apply_defaults as _apply_thread_defaults

_apply_thread_defaults()  # must run before NumPy starts its BLAS thread pool

from tinycnn import backend  # noqa: E402
from tinycnn.backend import current_kernels, gpu_available, use_kernels  # noqa: E402
from tinycnn.layers import *  # noqa: E402,F403
from tinycnn.layers import __all__ as _layer_names  # noqa: E402
from tinycnn.module import (  # noqa: E402
    BackwardBeforeForwardError,
    LayerInputError,
    Module,
    Parameter,
)

__version__ = "0.1.0"

__all__ = [
    *_layer_names,
    "BackwardBeforeForwardError",
    "LayerInputError",
    "Module",
    "Parameter",
    "backend",
    "current_kernels",
    "gpu_available",
    "use_kernels",
]
