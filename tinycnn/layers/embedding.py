"""Token ids to vectors: the ``Embedding`` lookup table and the ``one_hot`` encoding.

A sequence of characters or words arrives as integer ids. ``one_hot`` turns id ``k`` into
a vector with a single 1 at position ``k``: sparse, as long as the vocabulary, and every
two tokens equally far apart. An ``Embedding`` keeps one *trained* dense row per id
instead; it is exactly ``one_hot(ids) @ weight``, computed as a row lookup.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.layers.arguments import check_int
from tinycnn.module import LayerInputError, Module, Parameter


def _check_ids(name: str, ids: Any, num_classes: int) -> None:
    if not hasattr(ids, "dtype") or ids.dtype.kind not in "iu":
        got = getattr(ids, "dtype", type(ids).__name__)
        raise LayerInputError(f"{name} expected an integer array of ids, got {got}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        raise LayerInputError(
            f"{name} expected ids in [0, {num_classes - 1}], got values from "
            f"{int(ids.min())} to {int(ids.max())}"
        )


def one_hot(ids: Any, num_classes: int, dtype: Any = np.float32) -> Any:
    """``(*,)`` integer ids to ``(*, num_classes)`` vectors with one 1 each (same device)."""
    num_classes = check_int("one_hot", "num_classes", num_classes)
    _check_ids("one_hot", ids, num_classes)
    xp = backend.get_array_module(ids)
    out = xp.zeros((*ids.shape, num_classes), dtype=dtype)
    xp.put_along_axis(out, ids[..., None].astype(xp.int64), 1, axis=-1)
    return out


class Embedding(Module):
    """A lookup table (PyTorch's ``Embedding``): ``y[...] = weight[ids[...]]``.

    Shapes: ids ``(*)`` integers in ``[0, num_embeddings)``, weight
    ``(num_embeddings, embedding_dim)`` drawn from N(0, 1) as in PyTorch, y
    ``(*, embedding_dim)``. ``padding_idx`` (negative counts from the end) names an id
    whose row starts at zero and is never trained (padding of short sequences).

    Backward, with g = dL/dy: ``dL/dweight[k] = sum of g over the positions where
    ids == k`` (zero for ``padding_idx``). Ids are not differentiable: ``backward``
    returns None.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: Any = np.float32, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.num_embeddings = check_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = check_int("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            if not isinstance(padding_idx, (int, np.integer)) or isinstance(padding_idx, bool) \
                    or not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"Embedding: padding_idx must be an int in [{-num_embeddings}, "
                    f"{num_embeddings - 1}] or None, got {padding_idx!r}"
                )
            padding_idx = int(padding_idx) % num_embeddings
        self.padding_idx = padding_idx
        rng = rng if rng is not None else np.random.default_rng()
        weight = rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype)
        if padding_idx is not None:
            weight[padding_idx] = 0
        self.weight = Parameter(weight)
        self.ids = None

    def forward(self, ids: Any) -> Any:
        _check_ids("Embedding", ids, self.num_embeddings)
        if backend.is_gpu_array(ids) != backend.is_gpu_array(self.weight.data):
            raise backend.DeviceError(
                f"Embedding got ids on {backend.device_of(ids)} but its weight is on "
                f"{self.device}; move one of them"
            )
        self.ids = ids
        return self.weight.data[ids]

    def backward(self, grad_out: Any) -> None:
        self._need_cache(self.ids)
        xp = backend.get_array_module(grad_out)
        dw = xp.zeros(self.weight.shape, dtype=self.weight.dtype)
        # repeated ids add up: a scatter-add, not an assignment
        xp.add.at(dw, self.ids.reshape(-1), grad_out.reshape(-1, self.embedding_dim))
        if self.padding_idx is not None:
            dw[self.padding_idx] = 0
        self.weight.accumulate(dw)
        return None

    def _clear_cache(self) -> None:
        self.ids = None

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"
