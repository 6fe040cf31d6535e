"""Wrappers that let ``gradcheck`` see every output and every state gradient of a recurrent
layer or cell: the initial state becomes a parameter, so its gradient is checked like a
weight's, and the outputs come back as one flat tuple (output, h_n[, c_n])."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn.layers.recurrent import LSTM, LSTMCell
from tinycnn.module import Module, Parameter


class SequenceWithState(Module):
    """``layer(x, h_0)`` with ``h_0`` (and ``c_0``) as parameters; returns ``(out, h_n[, c_n])``."""

    def __init__(self, layer: Module, n: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.layer = layer
        shape = (layer.num_layers * layer.num_directions, n, layer.hidden_size)
        self.h0 = Parameter(rng.standard_normal(shape))
        self.c0 = Parameter(rng.standard_normal(shape)) if isinstance(layer, LSTM) else None

    def forward(self, x: Any) -> tuple[Any, ...]:
        if self.c0 is None:
            out, h_n = self.layer(x, self.h0.data)
            return out, h_n
        out, (h_n, c_n) = self.layer(x, (self.h0.data, self.c0.data))
        return out, h_n, c_n

    def backward(self, grads: tuple[Any, ...]) -> Any:
        if self.c0 is None:
            dx = self.layer.backward(grads[0], grads[1])
            self.h0.accumulate(self.layer.grad_hx)
        else:
            dx = self.layer.backward(grads[0], (grads[1], grads[2]))
            self.h0.accumulate(self.layer.grad_hx[0])
            self.c0.accumulate(self.layer.grad_hx[1])
        return dx


class CellWithState(Module):
    """``cell(x, h)`` with the incoming state as parameters (LSTM: ``h`` and ``c``)."""

    def __init__(self, cell: Module, n: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.cell = cell
        shape = (n, cell.hidden_size)
        self.h = Parameter(rng.standard_normal(shape))
        self.c = Parameter(rng.standard_normal(shape)) if isinstance(cell, LSTMCell) else None

    def forward(self, x: Any) -> Any:
        if self.c is None:
            return self.cell(x, self.h.data)
        return self.cell(x, (self.h.data, self.c.data))

    def backward(self, grad: Any) -> Any:
        dx = self.cell.backward(grad)
        if self.c is None:
            self.h.accumulate(self.cell.grad_hx)
        else:
            self.h.accumulate(self.cell.grad_hx[0])
            self.c.accumulate(self.cell.grad_hx[1])
        return dx
