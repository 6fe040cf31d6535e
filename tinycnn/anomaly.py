"""Non-finite values in training: the error, and an anomaly mode that finds their source.

``NonFiniteError`` (a ``FloatingPointError``) is what the :class:`~tinycnn.trainer.Trainer`
raises at the first NaN or inf loss or parameter. ``detect_anomaly(model)``, like
``torch.autograd.detect_anomaly``, checks every layer's output in ``forward`` and every
layer's input gradient in ``backward`` while it is active, and names the first layer where a
NaN or inf appears.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tinycnn import backend
from tinycnn.module import Module


class NonFiniteError(FloatingPointError):
    """A NaN or inf where training needs finite numbers (loss, parameter, layer output)."""


_MISSING = object()


def _bad_values(value: Any) -> str | None:
    """``"NaN"`` or ``"inf"`` when a float array (or a tuple of them) holds one, else None."""
    if isinstance(value, (tuple, list)):
        for item in value:
            bad = _bad_values(item)
            if bad:
                return bad
        return None
    if not hasattr(value, "dtype") or value.dtype.kind not in "fc":
        return None
    xp = backend.get_array_module(value)
    if bool(xp.isfinite(value).all()):
        return None
    return "NaN" if bool(xp.isnan(value).any()) else "inf"


def _label(name: str, module: Module) -> str:
    return f"layer '{name}' ({module._name()})" if name else f"the model ({module._name()})"


def _checked_forward(forward: Callable[..., Any], label: str) -> Callable[..., Any]:
    def checked(x: Any, *args: Any, **kwargs: Any) -> Any:
        out = forward(x, *args, **kwargs)
        bad = _bad_values(out)
        if bad:
            before = _bad_values(x)
            source = (f"its input already held {before}: the values came from before it"
                      if before else "its input was finite")
            raise NonFiniteError(f"{bad} in the output of {label} ({source})")
        return out

    return checked


def _checked_backward(
    backward: Callable[..., Any], label: str, module: Module
) -> Callable[..., Any]:
    def checked(grad: Any, *args: Any, **kwargs: Any) -> Any:
        grad_in = backward(grad, *args, **kwargs)
        bad = _bad_values(grad_in)
        if bad:
            before = _bad_values(grad)
            source = (f"the gradient it received already held {before}" if before
                      else "the gradient it received was finite")
            raise NonFiniteError(f"{bad} in the input gradient of {label} ({source})")
        for name, p in module._parameters.items():
            bad = _bad_values(p.grad)
            if bad:
                raise NonFiniteError(f"{bad} in the gradient of parameter '{name}' of {label}")
        return grad_in

    return checked


@contextmanager
def detect_anomaly(model: Module) -> Iterator[Module]:
    """Check every layer's output and input gradient for NaN/inf while the block runs.

    Each module instance of ``model`` gets a checking ``forward`` and ``backward`` (as
    instance attributes, removed again on exit); the first NaN or inf raises
    :class:`NonFiniteError` naming the layer by its dotted name and class, e.g.
    ``NaN in the output of layer 'features.0' (Conv2D) (its input was finite)``.
    Every array is scanned, so this is slow: use it to find a problem, not to train.
    """
    wrapped: list[tuple[Module, Any, Any]] = []
    try:
        for name, module in model.named_modules():
            label = _label(name, module)
            wrapped.append((module, module.__dict__.get("forward", _MISSING),
                            module.__dict__.get("backward", _MISSING)))
            # object.__setattr__: Module.__setattr__ would treat these as registrations
            object.__setattr__(module, "forward", _checked_forward(module.forward, label))
            object.__setattr__(module, "backward",
                               _checked_backward(module.backward, label, module))
        yield model
    finally:
        for module, forward, backward in reversed(wrapped):
            for attr, old in (("forward", forward), ("backward", backward)):
                if old is _MISSING:
                    module.__dict__.pop(attr, None)
                else:
                    object.__setattr__(module, attr, old)
