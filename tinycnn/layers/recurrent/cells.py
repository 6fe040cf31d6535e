"""One time step of RNN, LSTM and GRU: forward and backward side by side.

Each cell is written twice: as a pair of plain functions (``lstm_step`` and
``lstm_step_backward``) that the sequence layers call once per time step, and as a layer
(``LSTMCell``) that runs one step on its own. The functions take the weights as arrays and
return, besides the new state, a ``cache`` tuple holding what the backward step needs.

Notation (PyTorch's): ``x`` is ``(N, I)``, the state ``h`` (and ``c``) ``(N, H)``; the
weights are ``W_ih (G*H, I)`` and ``W_hh (G*H, H)`` with the ``G`` gates stacked along
their first axis, biases ``b_ih, b_hh (G*H,)``. ``a = x W_ih^T + b_ih + h W_hh^T + b_hh``
are the pre-activations of all gates at once, one matrix product each.

Every backward step ends the same way: once ``da`` (the gradient of the pre-activations)
is known, ``dx = da W_ih``, ``dh += da W_hh``, ``dW_ih = da^T x``, ``dW_hh = da^T h``,
``db_ih = db_hh = sum_n da`` (GRU splits ``da`` in two, see :func:`gru_step_backward`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.layers.arguments import check_bool, check_int
from tinycnn.module import LayerInputError, Module, Parameter, check_input

Weights = tuple[Any, Any, Any, Any]  # W_ih, W_hh, b_ih (or None), b_hh (or None)
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def sigmoid(a: Any) -> Any:
    """``1 / (1 + e^-a)`` without overflow for large ``|a|`` (the tanh identity)."""
    xp = backend.get_array_module(a)
    return 0.5 * (xp.tanh(0.5 * a) + 1)


def _affine(x: Any, w: Any, b: Any) -> Any:
    """``x w^T + b`` in x's dtype (b may be None)."""
    y = x @ w.astype(x.dtype, copy=False).T
    if b is not None:
        y += b.astype(x.dtype, copy=False)
    return y


def _weight_grads(da: Any, x: Any, h: Any, da_h: Any = None) -> tuple[Any, Any, Any, Any]:
    """``(dW_ih, dW_hh, db_ih, db_hh)`` from the pre-activation gradients.

    ``da`` reaches ``x W_ih^T + b_ih``; ``da_h`` (``da`` unless given) reaches
    ``h W_hh^T + b_hh``.
    """
    da_h = da if da_h is None else da_h
    return da.T @ x, da_h.T @ h, da.sum(axis=0), da_h.sum(axis=0)


# --- plain RNN -------------------------------------------------------------------------
def rnn_step(x: Any, h: Any, weights: Weights, nonlinearity: str = "tanh") -> tuple[Any, tuple]:
    """``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``, act = tanh or relu."""
    w_ih, w_hh, b_ih, b_hh = weights
    a = _affine(x, w_ih, b_ih) + _affine(h, w_hh, b_hh)
    xp = backend.get_array_module(a)
    h_new = xp.tanh(a) if nonlinearity == "tanh" else xp.maximum(a, 0)
    return h_new, (x, h, h_new, nonlinearity, w_ih, w_hh)


def rnn_step_backward(dh_new: Any, cache: tuple) -> tuple[Any, Any, tuple]:
    """``da = dh' * act'(a)`` (tanh: ``1 - h'^2``; relu: ``[h' > 0]``), then the shared tail.

    Returns ``dx, dh, (dW_ih, dW_hh, db_ih, db_hh)``.
    """
    x, h, h_new, nonlinearity, w_ih, w_hh = cache
    da = dh_new * (1 - h_new * h_new) if nonlinearity == "tanh" else dh_new * (h_new > 0)
    dx = da @ w_ih.astype(da.dtype, copy=False)
    dh = da @ w_hh.astype(da.dtype, copy=False)
    return dx, dh, _weight_grads(da, x, h)


# --- LSTM ------------------------------------------------------------------------------
def lstm_step(x: Any, h: Any, c: Any, weights: Weights) -> tuple[Any, Any, tuple]:
    """One LSTM step; gates in PyTorch's order i, f, g, o along the stacked axis.

    ``i = s(a_i)``, ``f = s(a_f)``, ``g = tanh(a_g)``, ``o = s(a_o)`` (s: sigmoid),
    ``c' = f c + i g``, ``h' = o tanh(c')``.
    """
    w_ih, w_hh, b_ih, b_hh = weights
    a = _affine(x, w_ih, b_ih) + _affine(h, w_hh, b_hh)
    xp = backend.get_array_module(a)
    hs = h.shape[1]
    i, f, o = sigmoid(a[:, :hs]), sigmoid(a[:, hs:2 * hs]), sigmoid(a[:, 3 * hs:])
    g = xp.tanh(a[:, 2 * hs:3 * hs])
    c_new = f * c + i * g
    tc = xp.tanh(c_new)
    h_new = o * tc
    return h_new, c_new, (x, h, c, i, f, g, o, tc, w_ih, w_hh)


def lstm_step_backward(dh_new: Any, dc_new: Any, cache: tuple) -> tuple[Any, Any, Any, tuple]:
    """Backward of :func:`lstm_step`, given ``dh'`` and ``dc'`` (either may be None: zero).

    ``do = dh' tanh(c')``;  ``dc_total = dc' + dh' o (1 - tanh(c')^2)``;
    ``di = dc_total g``, ``df = dc_total c``, ``dg = dc_total i``, ``dc = dc_total f``;
    through the nonlinearities: ``da_i = di i (1 - i)``, ``da_f = df f (1 - f)``,
    ``da_g = dg (1 - g^2)``, ``da_o = do o (1 - o)``.

    Returns ``dx, dh, dc, (dW_ih, dW_hh, db_ih, db_hh)``.
    """
    x, h, c, i, f, g, o, tc, w_ih, w_hh = cache
    xp = backend.get_array_module(i)
    dc_total = xp.zeros_like(c) if dc_new is None else dc_new.copy()
    if dh_new is not None:
        dc_total += dh_new * o * (1 - tc * tc)
        do = dh_new * tc
    else:
        do = xp.zeros_like(o)
    da = xp.concatenate(
        [dc_total * g * i * (1 - i),       # da_i
         dc_total * c * f * (1 - f),       # da_f
         dc_total * i * (1 - g * g),       # da_g
         do * o * (1 - o)],                # da_o
        axis=1,
    )
    dx = da @ w_ih.astype(da.dtype, copy=False)
    dh = da @ w_hh.astype(da.dtype, copy=False)
    return dx, dh, dc_total * f, _weight_grads(da, x, h)


# --- GRU -------------------------------------------------------------------------------
def gru_step(x: Any, h: Any, weights: Weights) -> tuple[Any, tuple]:
    """One GRU step; gates in PyTorch's order r, z, n.

    With ``u = x W_ih^T + b_ih`` and ``v = h W_hh^T + b_hh`` split into their r, z, n thirds:
    ``r = s(u_r + v_r)``, ``z = s(u_z + v_z)``, ``n = tanh(u_n + r v_n)``,
    ``h' = (1 - z) n + z h``. (The reset gate multiplies ``v_n``, bias included, as in
    PyTorch and cuDNN.)
    """
    w_ih, w_hh, b_ih, b_hh = weights
    u = _affine(x, w_ih, b_ih)
    v = _affine(h, w_hh, b_hh)
    xp = backend.get_array_module(u)
    hs = h.shape[1]
    r = sigmoid(u[:, :hs] + v[:, :hs])
    z = sigmoid(u[:, hs:2 * hs] + v[:, hs:2 * hs])
    v_n = v[:, 2 * hs:]
    n = xp.tanh(u[:, 2 * hs:] + r * v_n)
    h_new = (1 - z) * n + z * h
    return h_new, (x, h, r, z, n, v_n, w_ih, w_hh)


def gru_step_backward(dh_new: Any, cache: tuple) -> tuple[Any, Any, tuple]:
    """Backward of :func:`gru_step`.

    ``dn = dh' (1 - z)``, ``dz = dh' (h - n)``, ``dh = dh' z`` (the direct path);
    ``da_n = dn (1 - n^2)``, ``dr = da_n v_n``, ``da_r = dr r (1 - r)``,
    ``da_z = dz z (1 - z)``. The input side gets ``du = [da_r, da_z, da_n]``, the hidden
    side ``dv = [da_r, da_z, da_n r]``: ``dx = du W_ih``, ``dh += dv W_hh``.

    Returns ``dx, dh, (dW_ih, dW_hh, db_ih, db_hh)``.
    """
    x, h, r, z, n, v_n, w_ih, w_hh = cache
    xp = backend.get_array_module(r)
    da_n = dh_new * (1 - z) * (1 - n * n)
    da_r = da_n * v_n * r * (1 - r)
    da_z = dh_new * (h - n) * z * (1 - z)
    du = xp.concatenate([da_r, da_z, da_n], axis=1)
    dv = xp.concatenate([da_r, da_z, da_n * r], axis=1)
    dx = du @ w_ih.astype(du.dtype, copy=False)
    dh = dh_new * z + dv @ w_hh.astype(dv.dtype, copy=False)
    return dx, dh, _weight_grads(du, x, h, dv)


# --- shared parameter set-up -----------------------------------------------------------
def uniform_init(shape: tuple[int, ...], hidden_size: int, rng: np.random.Generator,
                 dtype: Any) -> np.ndarray:
    """PyTorch's initialisation of every recurrent weight and bias: U(-k, k), k = 1/sqrt(H)."""
    k = 1.0 / np.sqrt(hidden_size)
    return rng.uniform(-k, k, size=shape).astype(dtype)


def check_state(layer: Module, state: Any, shape: tuple[int, ...], x: Any, what: str) -> None:
    """Raise :class:`LayerInputError` unless ``state`` is an array of ``shape`` like ``x``."""
    name = layer._name()
    if not hasattr(state, "shape") or not hasattr(state, "dtype"):
        raise LayerInputError(f"{name} expected {what} as an array {shape}, "
                              f"got {type(state).__name__}")
    if tuple(state.shape) != tuple(shape):
        raise LayerInputError(f"{name} expected {what} of shape {shape}, got {tuple(state.shape)}")
    if state.dtype != x.dtype:
        raise LayerInputError(f"{name} expected {what} of the input's dtype {x.dtype}, "
                              f"got {state.dtype}")
    if backend.is_gpu_array(state) != backend.is_gpu_array(x):
        raise backend.DeviceError(f"{name}: {what} and the input are on different devices "
                                  f"({backend.device_of(state)} and {backend.device_of(x)})")


class _Cell(Module):
    """Parameters and checks shared by the three cells; ``gates`` weight blocks."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 dtype: Any = np.float32, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = check_int(name, "input_size", input_size)
        self.hidden_size = check_int(name, "hidden_size", hidden_size)
        self.bias = check_bool(name, "bias", bias)
        rng = rng if rng is not None else np.random.default_rng()
        gh = self.gates * hidden_size
        self.weight_ih = Parameter(uniform_init((gh, input_size), hidden_size, rng, dtype))
        self.weight_hh = Parameter(uniform_init((gh, hidden_size), hidden_size, rng, dtype))
        self.bias_ih = Parameter(uniform_init((gh,), hidden_size, rng, dtype)) if bias else None
        self.bias_hh = Parameter(uniform_init((gh,), hidden_size, rng, dtype)) if bias else None
        self.cache = None
        self.grad_hx = None  # gradient of the incoming state, set by backward

    def _weights(self) -> Weights:
        return (self.weight_ih.data, self.weight_hh.data,
                None if self.bias_ih is None else self.bias_ih.data,
                None if self.bias_hh is None else self.bias_hh.data)

    def _accumulate(self, grads: tuple[Any, Any, Any, Any]) -> None:
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        for p, g in zip(params, grads, strict=True):
            if p is not None:
                p.accumulate(g.astype(p.dtype, copy=False))

    def __call__(self, x: Any, state: Any = None) -> Any:
        return self.forward(x, state)

    def _check_x(self, x: Any) -> None:
        check_input(self, x, 2, "(N, input_size)", channels=self.input_size,
                    what="features (input_size)")

    def _zeros(self, x: Any) -> Any:
        xp = backend.get_array_module(x)
        return xp.zeros((x.shape[0], self.hidden_size), dtype=x.dtype)

    def _clear_cache(self) -> None:
        self.cache = None

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_Cell):
    """One step of an Elman RNN (PyTorch's ``RNNCell``).

    ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

    Shapes: x ``(N, input_size)``, h and h' ``(N, hidden_size)``; act is ``tanh`` or
    ``relu`` (``nonlinearity``). ``h=None`` starts from zeros.

    Backward, with ``g = dL/dh'``: ``da = g * act'(a)`` (``1 - h'^2`` for tanh,
    ``[h' > 0]`` for relu), ``dx = da W_ih``, ``dh = da W_hh``, ``dW_ih = da^T x``,
    ``dW_hh = da^T h``, ``db_ih = db_hh = sum_n da``. ``backward(g)`` returns ``dx`` and
    leaves ``dh`` in ``grad_hx`` (as the sequence layers do).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", dtype: Any = np.float32,
                 rng: np.random.Generator | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
            )
        super().__init__(input_size, hidden_size, bias, dtype, rng)
        self.nonlinearity = nonlinearity

    def forward(self, x: Any, h: Any = None) -> Any:
        self._check_x(x)
        h = self._zeros(x) if h is None else h
        check_state(self, h, (x.shape[0], self.hidden_size), x, "the state h")
        h_new, self.cache = rnn_step(x, h, self._weights(), self.nonlinearity)
        return h_new

    def backward(self, grad_h: Any) -> Any:
        self._need_cache(self.cache)
        dx, self.grad_hx, grads = rnn_step_backward(grad_h, self.cache)
        self._accumulate(grads)
        return dx

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


class LSTMCell(_Cell):
    """One LSTM step (PyTorch's ``LSTMCell``): ``(h', c') = cell(x, (h, c))``.

    Gates, stacked in the order i, f, g, o (s: sigmoid; ``a = x W_ih^T + b_ih + h W_hh^T + b_hh``)::

        i = s(a_i)   f = s(a_f)   g = tanh(a_g)   o = s(a_o)
        c' = f * c + i * g
        h' = o * tanh(c')

    Backward, given ``dh'`` and ``dc'``: ``dc_total = dc' + dh' o (1 - tanh^2(c'))``,
    ``da_i = dc_total g i(1 - i)``, ``da_f = dc_total c f(1 - f)``,
    ``da_g = dc_total i (1 - g^2)``, ``da_o = dh' tanh(c') o(1 - o)``, ``dc = dc_total f``;
    then ``dx = da W_ih``, ``dh = da W_hh``, ``dW_ih = da^T x``, ``dW_hh = da^T h``,
    ``db = sum_n da``. ``backward((dh', dc'))`` (either may be None) returns ``dx`` and
    leaves ``(dh, dc)`` in ``grad_hx``.
    """

    gates = 4

    def forward(self, x: Any, state: Any = None) -> tuple[Any, Any]:
        self._check_x(x)
        if state is None:
            state = (self._zeros(x), self._zeros(x))
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise LayerInputError(f"LSTMCell expected the state as a pair (h, c), "
                                  f"got {type(state).__name__}")
        h, c = state
        shape = (x.shape[0], self.hidden_size)
        check_state(self, h, shape, x, "the state h")
        check_state(self, c, shape, x, "the cell state c")
        h_new, c_new, self.cache = lstm_step(x, h, c, self._weights())
        return h_new, c_new

    def backward(self, grad: Any) -> Any:
        self._need_cache(self.cache)
        dh_new, dc_new = grad
        dx, dh, dc, grads = lstm_step_backward(dh_new, dc_new, self.cache)
        self._accumulate(grads)
        self.grad_hx = (dh, dc)
        return dx


class GRUCell(_Cell):
    """One GRU step (PyTorch's ``GRUCell``): ``h' = cell(x, h)``.

    Gates, stacked in the order r, z, n, with ``u = x W_ih^T + b_ih``,
    ``v = h W_hh^T + b_hh`` (s: sigmoid)::

        r = s(u_r + v_r)    z = s(u_z + v_z)    n = tanh(u_n + r * v_n)
        h' = (1 - z) * n + z * h

    Backward, with ``g = dL/dh'``: ``da_n = g (1 - z)(1 - n^2)``,
    ``da_r = da_n v_n r(1 - r)``, ``da_z = g (h - n) z(1 - z)``; with
    ``du = [da_r, da_z, da_n]`` and ``dv = [da_r, da_z, r da_n]``: ``dx = du W_ih``,
    ``dh = g z + dv W_hh``, ``dW_ih = du^T x``, ``dW_hh = dv^T h``, ``db_ih = sum_n du``,
    ``db_hh = sum_n dv``. ``backward(g)`` returns ``dx`` and leaves ``dh`` in ``grad_hx``.
    """

    gates = 3

    def forward(self, x: Any, h: Any = None) -> Any:
        self._check_x(x)
        h = self._zeros(x) if h is None else h
        check_state(self, h, (x.shape[0], self.hidden_size), x, "the state h")
        h_new, self.cache = gru_step(x, h, self._weights())
        return h_new

    def backward(self, grad_h: Any) -> Any:
        self._need_cache(self.cache)
        dx, self.grad_hx, grads = gru_step_backward(grad_h, self.cache)
        self._accumulate(grads)
        return dx
