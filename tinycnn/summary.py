"""``summary(model, input_shape)``: a table of layers, output shapes, parameters and MACs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.fast import use_kernels
from tinycnn.module import Module


def _human(n: int) -> str:
    for unit, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _shape(value: Any) -> tuple[int, ...]:
    """An array's shape; ``()`` for anything else (e.g. a tuple of auxiliary outputs)."""
    return tuple(value.shape) if hasattr(value, "shape") else ()


def summary(
    model: Module,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    dtype: Any = np.float32,
    print_fn: Callable[[str], Any] | None = print,
) -> dict[str, Any]:
    """Print one row per leaf layer run by a forward pass and return the totals.

    ``input_shape`` excludes the batch axis, e.g. ``(1, 28, 28)``. One forward pass runs in
    eval mode on zeros of shape ``(batch_size, *input_shape)`` on the model's device; the
    model's train/eval flags are restored afterwards. Each row gives the leaf's dotted
    name, type, output shape, own parameter count and multiply-adds (``Module.macs``).
    ``print_fn=None`` prints nothing.

    Returns ``{"params", "trainable_params", "macs", "output_shape", "layers"}`` where
    ``layers`` is the list of rows as dicts.
    """
    if not isinstance(model, Module):
        raise TypeError(f"summary expects a Module, got {type(model).__name__}")
    shape = (int(batch_size), *(int(s) for s in input_shape))
    xp = backend.xp_for(model.device)
    x = xp.zeros(shape, dtype=dtype)

    rows: list[dict[str, Any]] = []
    modes = [(m, m.training) for m in model.modules()]
    wrapped: list[tuple[Module, Any]] = []

    def wrap(name: str, module: Module) -> None:
        original = module.forward

        def recording_forward(inp: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(inp, *args, **kwargs)
            in_shape = _shape(inp)
            out_shape = _shape(out)
            rows.append(
                {
                    "name": name or "(model)",
                    "type": module._name(),
                    "output_shape": out_shape,
                    "params": sum(p.size for p in module._parameters.values()),
                    "macs": int(module.macs(in_shape, out_shape)),
                }
            )
            return out

        # The instance attribute shadows the class's forward until it is deleted again.
        wrapped.append((module, module.__dict__.get("forward")))
        object.__setattr__(module, "forward", recording_forward)

    try:
        for name, module in model.named_modules():
            if not module._modules:
                wrap(name, module)
        model.eval()
        with use_kernels("reference"):  # shapes need no compiled kernels
            out = model(x)
    finally:
        for module, previous in wrapped:
            if previous is None:
                del module.__dict__["forward"]
            else:
                object.__setattr__(module, "forward", previous)
        for module, training in modes:
            object.__setattr__(module, "training", training)

    result = {
        "params": model.num_parameters(),
        "trainable_params": model.num_parameters(trainable_only=True),
        "macs": sum(r["macs"] for r in rows),
        "output_shape": _shape(out),
        "layers": rows,
    }
    if print_fn is not None:
        print_fn(_format(model._name(), shape, rows, result))
    return result


def _format(
    model_name: str, in_shape: tuple[int, ...], rows: list[dict[str, Any]], totals: dict
) -> str:
    header = ("Layer", "Type", "Output shape", "Params", "MACs")
    table = [header] + [
        (r["name"], r["type"], str(r["output_shape"]), f"{r['params']:,}", f"{r['macs']:,}")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = (False, False, False, True, True)

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(row, widths, right, strict=True)
        ]
        return "  ".join(cells)

    rule = "-" * len(line(header))
    frozen = totals["params"] - totals["trainable_params"]
    lines = [f"{model_name} on input {in_shape}", rule, line(header), rule]
    lines += [line(row) for row in table[1:]]
    lines += [
        rule,
        f"Total params:         {totals['params']:,}",
        f"Trainable params:     {totals['trainable_params']:,}",
        f"Non-trainable params: {frozen:,}",
        f"Multiply-adds:        {totals['macs']:,} ({_human(totals['macs'])})",
        f"Output shape:         {totals['output_shape']}",
    ]
    return "\n".join(lines)
