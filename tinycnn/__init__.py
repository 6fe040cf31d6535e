"""tinycnn: a readable CNN framework on NumPy with hand-written backward passes.

The layers are the reference; ``tinycnn.accelerate(model)`` runs a model with the
acceleration engine's fast twins (:mod:`tinycnn.fast`).
"""

from tinycnn._threads import apply_defaults as _apply_thread_defaults

# The one import-time side effect: thread settings that OpenBLAS reads only when NumPy
# loads (tinycnn._threads says why); a value already in the environment wins.
_apply_thread_defaults()

from tinycnn import backend, losses, metrics, models, optim, schedules  # noqa: E402
from tinycnn.anomaly import NonFiniteError, detect_anomaly  # noqa: E402
from tinycnn.backend import gpu_available  # noqa: E402
from tinycnn.containers import Concat, Residual, Sequential  # noqa: E402
from tinycnn.fast import (  # noqa: E402
    accelerate,
    current_kernels,
    is_accelerated,
    precompile,
    use_kernels,
)
from tinycnn.gradcheck import gradcheck  # noqa: E402
from tinycnn.info import gpu_status  # noqa: E402
from tinycnn.layers import *  # noqa: E402,F403
from tinycnn.layers import __all__ as _layer_names  # noqa: E402
from tinycnn.losses import (  # noqa: E402
    BCELoss,
    BCEWithLogits,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
    SoftmaxCrossEntropy,
)
from tinycnn.module import (  # noqa: E402
    BackwardBeforeForwardError,
    LayerInputError,
    Module,
    Parameter,
    StateDictError,
)
from tinycnn.optim import (  # noqa: E402
    SGD,
    AdaGrad,
    Adam,
    AdamW,
    Momentum,
    RMSProp,
    clip_grad_norm,
    clip_grad_value,
    l1_penalty,
)
from tinycnn.summary import summary  # noqa: E402
from tinycnn.trainer import History, Trainer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    *_layer_names,
    "BackwardBeforeForwardError",
    "LayerInputError",
    "Module",
    "Parameter",
    "StateDictError",
    "NonFiniteError",
    "accelerate",
    "backend",
    "detect_anomaly",
    "gpu_status",
    "is_accelerated",
    "precompile",
    "current_kernels",
    "gpu_available",
    "use_kernels",
    "Sequential",
    "Residual",
    "Concat",
    "SoftmaxCrossEntropy",
    "CrossEntropyLoss",
    "NLLLoss",
    "MSELoss",
    "L1Loss",
    "SmoothL1Loss",
    "HuberLoss",
    "BCELoss",
    "BCEWithLogits",
    "BCEWithLogitsLoss",
    "KLDivLoss",
    "SGD",
    "Momentum",
    "AdaGrad",
    "RMSProp",
    "Adam",
    "AdamW",
    "clip_grad_norm",
    "clip_grad_value",
    "l1_penalty",
    "summary",
    "gradcheck",
    "losses",
    "optim",
    "metrics",
    "models",
    "schedules",
    "History",
    "Trainer",
]
