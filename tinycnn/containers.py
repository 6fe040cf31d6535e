"""Containers: the layer graph. ``Sequential`` chains, ``Residual`` adds, ``Concat`` joins.

Each container's ``backward`` is the chain rule written out for its wiring:

* a chain ``y = f_n(... f_1(x))`` runs its children's backward in reverse order;
* where the input fans out to several branches (``Residual``, ``Concat``), the input
  gradient is the *sum* of the branches' input gradients.

Child names follow PyTorch (``"0"``, ``"1"``, ... in a ``Sequential``), so state-dict keys
are dotted paths such as ``features.0.weight`` or ``layer1.0.body.1.running_mean``.
A module instance may appear only once in a graph: it keeps one forward cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from tinycnn import backend
from tinycnn.layers.shape import Identity
from tinycnn.module import LayerInputError, Module

__all__ = ["Concat", "Identity", "Residual", "Sequential"]


def _named_children_from(args: tuple[Any, ...], owner: str) -> list[tuple[str, Module]]:
    """``(name, module)`` pairs from ``*modules`` or one ``OrderedDict`` / ``dict`` of them."""
    if len(args) == 1 and isinstance(args[0], dict):  # OrderedDict included
        pairs = [(str(k), v) for k, v in args[0].items()]
    else:
        pairs = [(str(i), v) for i, v in enumerate(args)]
    for name, module in pairs:
        if not isinstance(module, Module):
            raise TypeError(
                f"{owner} takes Modules, got {type(module).__name__} for child {name!r}"
            )
    return pairs


def _add_children(owner: Module, pairs: list[tuple[str, Module]]) -> None:
    """Register named children, refusing names that would hide an attribute or method."""
    for name, module in pairs:
        if "." in name or not name or (hasattr(owner, name) and name not in owner._modules):
            raise KeyError(
                f"{owner._name()}: child name {name!r} is not allowed (empty, dotted, or the "
                "name of an existing attribute)"
            )
        setattr(owner, name, module)


class Sequential(Module):
    """Children applied in order: ``y = f_n(... f_2(f_1(x)))``.

    Built from modules (named ``"0"``, ``"1"``, ...) or from one ``OrderedDict`` of named
    modules. Supports ``len``, indexing (an ``int`` gives the child, a slice a new
    ``Sequential`` sharing the children), iteration and ``append``.

    Backward: g_n = g, g_{k-1} = f_k.backward(g_k), returned dL/dx = g_0.
    """

    def __init__(self, *layers: Any) -> None:
        super().__init__()
        _add_children(self, _named_children_from(layers, "Sequential"))

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end, named by its position; returns ``self``."""
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append takes a Module, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def __getitem__(self, index: int | slice) -> Any:
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        if not -len(items) <= index < len(items):
            raise IndexError(f"Sequential index {index} out of range for {len(items)} children")
        return items[index][1]

    def forward(self, x: Any) -> Any:
        for module in self._modules.values():
            x = module(x)
        return x

    def backward(self, grad_out: Any) -> Any:
        for module in reversed(self._modules.values()):
            grad_out = module.backward(grad_out)
        return grad_out


class Residual(Module):
    """``y = post(body(x) + shortcut(x))``, the ResNet block; shapes are the body's.

    ``shortcut=None`` is the identity; a projection (e.g. ``Sequential(Conv2D 1x1 stride 2,
    BatchNorm2D)``) makes the shapes match when the body changes them. ``post`` (e.g.
    ``ReLU()``) is applied after the sum; ``None`` skips it.

    Backward, with g = dL/ds at the sum s:  dL/dx = body.backward(g) + shortcut.backward(g)
    (x fans out to both paths, so their gradients add; the identity passes g unchanged).
    """

    def __init__(
        self, body: Module, shortcut: Module | None = None, post: Module | None = None
    ) -> None:
        super().__init__()
        for name, value in (("body", body), ("shortcut", shortcut), ("post", post)):
            if value is not None and not isinstance(value, Module):
                raise TypeError(f"Residual {name} must be a Module, got {type(value).__name__}")
        self.body = body
        self.shortcut = shortcut
        self.post = post
        self.ran = None

    def forward(self, x: Any) -> Any:
        main = self.body(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        if tuple(main.shape) != tuple(skip.shape):
            what = "identity shortcut (the input)" if self.shortcut is None else "shortcut"
            raise LayerInputError(
                f"Residual: body output shape {tuple(main.shape)} differs from {what} output "
                f"shape {tuple(skip.shape)} (input shape {tuple(x.shape)}); give the block a "
                "projection shortcut that matches the body's channels and stride"
            )
        self.ran = True
        y = main + skip
        return y if self.post is None else self.post(y)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.ran)
        g = grad_out if self.post is None else self.post.backward(grad_out)
        d_body = self.body.backward(g)
        d_skip = g if self.shortcut is None else self.shortcut.backward(g)
        return d_body + d_skip

    def _clear_cache(self) -> None:
        self.ran = None


class Concat(Module):
    """Branches applied to the same input, outputs joined along ``axis`` (default channels).

    ``y = concatenate([b_1(x), ..., b_k(x)], axis)``: the Inception module; a DenseNet
    layer is ``Concat(Identity(), body)``. Branches are named ``"0"``, ``"1"``, ... or by
    the keys of one ``OrderedDict``. Branch outputs must agree on every other axis.

    Backward: split g along ``axis`` into the branches' parts g_i; dL/dx = sum_i
    b_i.backward(g_i).
    """

    def __init__(self, *branches: Any, axis: int = 1) -> None:
        super().__init__()
        pairs = _named_children_from(branches, "Concat")
        if not pairs:
            raise ValueError("Concat needs at least one branch")
        self.axis = axis
        self.sizes = None
        _add_children(self, pairs)

    def forward(self, x: Any) -> Any:
        outs = [branch(x) for branch in self._modules.values()]
        first = outs[0]
        axis = self.axis
        if not -first.ndim <= axis < first.ndim:
            raise LayerInputError(
                f"Concat axis {self.axis} is out of range for branch outputs of "
                f"{first.ndim} dimensions (shape {tuple(first.shape)})"
            )
        axis %= first.ndim
        for name, out in zip(self._modules, outs, strict=True):
            other = tuple(s for i, s in enumerate(out.shape) if i != axis)
            expected = tuple(s for i, s in enumerate(first.shape) if i != axis)
            if out.ndim != first.ndim or other != expected:
                shapes = {n: tuple(o.shape) for n, o in zip(self._modules, outs, strict=True)}
                raise LayerInputError(
                    f"Concat: branch outputs must match on every axis but {axis}; "
                    f"branch {name!r} gave {tuple(out.shape)} (all branch shapes: {shapes})"
                )
        self.sizes = [int(out.shape[axis]) for out in outs]
        xp = backend.get_array_module(*outs)
        return xp.concatenate(outs, axis=axis)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.sizes)
        xp = backend.get_array_module(grad_out)
        axis = self.axis % grad_out.ndim
        total = None
        start = 0
        for branch, size in zip(self._modules.values(), self.sizes, strict=True):
            index = [slice(None)] * grad_out.ndim
            index[axis] = slice(start, start + size)
            start += size
            # Contiguous parts: fast kernels (Numba, CUDA) expect C-ordered arrays.
            part = xp.ascontiguousarray(grad_out[tuple(index)])
            dx = branch.backward(part)
            total = dx if total is None else total + dx
        return total

    def _clear_cache(self) -> None:
        self.sizes = None

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
