"""Numerical gradient checking by central differences, in float64.

The analytic gradients of a layer's hand-written ``backward`` are compared with

    dL/dθ_i ≈ (L(θ + ε e_i) - L(θ - ε e_i)) / (2ε),   with  L = sum(forward(x) * G)

where ``G`` is a *random* upstream gradient: a plain sum (``G = 1``) would hide bugs, e.g.
through BatchNorm, whose input gradient under a plain sum is exactly zero. A module whose
forward returns a tuple (an LSTM cell's ``(h, c)``) gets one random gradient per output,
``L = sum_j sum(out_j * G_j)``, and its ``backward`` receives the tuple ``(G_1, G_2, ...)``
(nested as the outputs are).

The error of one array is ``max|analytic - numeric| / max(max|analytic|, max|numeric|)``,
a relative error that stays meaningful where single entries are near zero. When both
gradients are below ``ZERO_GRADIENT`` everywhere (a gradient that is truly zero, such as
a bias feeding BatchNorm), the absolute difference is reported instead.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.module import Module


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree by more than the tolerance."""


@dataclass
class GradcheckResult:
    """Worst relative error per checked array (``"input"`` and parameter names)."""

    errors: dict[str, float]
    tolerance: float
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0

    def report(self) -> str:
        width = max((len(k) for k in self.errors), default=5)
        lines = [f"{'array':<{width}}  relative error"]
        for name, err in self.errors.items():
            flag = "  <-- FAIL" if err > self.tolerance else ""
            if name in self.notes:
                flag += f" ({self.notes[name]})"
            lines.append(f"{name:<{width}}  {err:.3e}{flag}")
        return "\n".join(lines)


# Below this magnitude a central difference cannot tell a gradient from zero (its rounding
# noise is about 1e-16 * |L| / eps), e.g. the bias of a layer feeding BatchNorm.
ZERO_GRADIENT = 1e-7


def _rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """Relative error of the array; absolute error when both gradients are ~zero."""
    scale = max(float(np.abs(analytic).max(initial=0.0)), float(np.abs(numeric).max(initial=0.0)))
    diff = float(np.abs(analytic - numeric).max(initial=0.0))
    if scale < ZERO_GRADIENT:
        return diff
    return diff / scale


def _generators(module: Any) -> list[np.random.Generator]:
    """Random generators held by the modules (Dropout), to replay the same masks."""
    found = []
    mods = module.modules() if isinstance(module, Module) else [module]
    for m in mods:
        for value in vars(m).values():
            if isinstance(value, np.random.Generator):
                found.append(value)
    return found


def _random_like(out: Any, rng: np.random.Generator) -> Any:
    """A standard-normal array shaped like ``out``, or a tuple of them for a tuple output."""
    if isinstance(out, (tuple, list)):
        return tuple(_random_like(o, rng) for o in out)
    return rng.standard_normal(np.shape(out))


def _weighted_sum(out: Any, upstream: Any, host: Any) -> float:
    """``sum(out * G)``, summed over the outputs of a tuple."""
    if isinstance(upstream, tuple):
        if not isinstance(out, (tuple, list)) or len(out) != len(upstream):
            raise TypeError("gradcheck: the module's output changed structure between calls")
        return sum(_weighted_sum(o, u, host) for o, u in zip(out, upstream, strict=True))
    return float(np.sum(host(out) * upstream))


def _to_device(upstream: Any, device: str) -> Any:
    """The upstream gradient(s) on ``device``; a 0-d gradient as a Python float."""
    if isinstance(upstream, tuple):
        return tuple(_to_device(u, device) for u in upstream)
    return backend.to_device(upstream, device) if np.ndim(upstream) else float(upstream)


def gradcheck(
    module: Any,
    x: Any,
    target: Any = None,
    *,
    eps: float = 1e-6,
    tol: float = 1e-6,
    seed: int = 0,
    check_input: bool = True,
    check_params: bool = True,
    max_entries: int | None = 400,
    raise_on_fail: bool = True,
    return_result: bool = False,
) -> float | GradcheckResult:
    """Check ``module``'s backward against central differences; return the worst error.

    ``module`` is a layer, container, whole model or loss (a loss is called as
    ``module(x, target)``). It is deep-copied and cast to float64, so the caller's object is
    left untouched. A module on the GPU (or a GPU ``x``) runs on the GPU: only the
    perturbation bookkeeping and the comparison happen on the host. ``max_entries``
    bounds the number of entries probed per array (a random subset is taken beyond it;
    ``None`` probes all). Raises :class:`GradcheckError` with a
    per-array report when the worst error exceeds ``tol`` (unless ``raise_on_fail=False``).
    """
    rng = np.random.default_rng(seed)
    m = copy.deepcopy(module)
    if isinstance(m, Module):
        m.astype(np.float64)
    on_gpu = backend.is_gpu_array(x) or (isinstance(m, Module) and m.device == "gpu")
    device = "gpu" if on_gpu else "cpu"
    x = np.array(backend.to_device(x, "cpu"), dtype=np.float64)  # host copy, perturbed
    if hasattr(target, "shape"):
        target = backend.to_device(target, device)
    gens = _generators(m)
    states = [g.bit_generator.state for g in gens]

    def run(inp: np.ndarray) -> Any:
        for g, s in zip(gens, states, strict=True):
            g.bit_generator.state = s
        inp = backend.to_device(inp, device)  # the same array on the CPU, a copy on the GPU
        return m(inp) if target is None else m(inp, target)

    def host(a: Any) -> np.ndarray:
        return np.asarray(backend.to_device(a, "cpu"), dtype=np.float64)

    out = run(x)
    upstream = _random_like(out, rng)

    def objective(inp: np.ndarray) -> float:
        return _weighted_sum(run(inp), upstream, host)

    if isinstance(m, Module):
        m.zero_grad()
    run(x)
    grad_x = m.backward(_to_device(upstream, device))

    def numeric_at(array: Any, flat_idx: np.ndarray, eval_with: Any) -> np.ndarray:
        num = np.empty(len(flat_idx))
        view = array.reshape(-1)  # a view of a parameter in place, on its device
        for k, i in enumerate(flat_idx):
            old = float(view[i])
            view[i] = old + eps
            plus = eval_with()
            view[i] = old - eps
            minus = eval_with()
            view[i] = old
            num[k] = (plus - minus) / (2 * eps)
        return num

    def pick(size: int) -> np.ndarray:
        if max_entries is None or size <= max_entries:
            return np.arange(size)
        return np.sort(rng.choice(size, size=max_entries, replace=False))

    errors: dict[str, float] = {}
    notes: dict[str, str] = {}

    def wrong_shape(name: str, grad: Any, want: tuple[int, ...]) -> bool:
        # A flattened or broadcast gradient would otherwise pass the element-wise check.
        got = tuple(np.shape(grad))
        if got != tuple(want):
            errors[name] = float("inf")
            notes[name] = f"gradient has shape {got}, expected {tuple(want)}"
        return got != tuple(want)

    if check_input and grad_x is not None and not wrong_shape("input", grad_x, x.shape):
        idx = pick(x.size)
        numeric = numeric_at(x, idx, lambda: objective(x))
        errors["input"] = _rel_error(host(grad_x).reshape(-1)[idx], numeric)
    if check_params and isinstance(m, Module):
        for name, p in m.named_parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:
                errors[name] = float("inf")
                notes[name] = "no gradient: backward never accumulated it"
                continue
            if wrong_shape(name, p.grad, p.data.shape):
                continue
            analytic = host(p.grad).reshape(-1).copy()
            idx = pick(p.data.size)
            numeric = numeric_at(p.data, idx, lambda: objective(x))
            errors[name] = _rel_error(analytic[idx], numeric)

    result = GradcheckResult(errors, tol, notes)
    if raise_on_fail and result.worst > tol:
        raise GradcheckError(
            f"gradcheck of {type(module).__name__} failed (tolerance {tol:.1e}):\n"
            + result.report()
        )
    return result if return_result else result.worst
