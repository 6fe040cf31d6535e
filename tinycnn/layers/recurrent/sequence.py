"""RNN, LSTM and GRU over whole sequences: loops over the cells, backward is BPTT written out.

PyTorch's meaning, arguments and state-dict keys: for layer ``k`` and direction suffix
``""`` (forward in time) or ``"_reverse"``, the parameters ``weight_ih_l{k}{suffix}``
``(G*H, I_k)``, ``weight_hh_l{k}{suffix}`` ``(G*H, H)``, ``bias_ih_l{k}{suffix}`` and
``bias_hh_l{k}{suffix}`` ``(G*H,)``, where ``G`` is 1 (RNN), 4 (LSTM, gates i, f, g, o) or
3 (GRU, gates r, z, n), ``I_0 = input_size`` and ``I_k = D*H`` above the first layer
(``D = 2`` when bidirectional). A state dict moves to and from ``torch.nn.LSTM`` unchanged.

Calling and differentiating::

    lstm = LSTM(input_size=8, hidden_size=16, num_layers=2, batch_first=True)
    out, (h_n, c_n) = lstm(x)                  # x (N, T, 8): out (N, T, 16), h_n (2, N, 16)
    dx = lstm.backward(d_out)                  # gradient of out only
    dx = lstm.backward(d_out, (dh_n, dc_n))    # and of the final states (any may be None)
    dx = lstm.backward((d_out, (dh_n, dc_n)))  # the same, shaped like forward's result
    lstm.grad_hx                               # (dh_0, dc_0): gradient of the initial state

``backward(grad_output, grad_state=None)`` returns the input gradient; the gradient of the
initial state (``h_0``, or ``(h_0, c_0)`` for LSTM; zeros when none was given) is left in
``grad_hx``. ``grad_output=None`` means the output sequence was not used (a model that
reads only ``h_n``). The one-argument form mirrors what forward returned, so code that
hands every output its gradient (``tinycnn.gradcheck``) works unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tinycnn import backend
from tinycnn.layers.arguments import check_bool, check_float, check_int
from tinycnn.layers.recurrent.cells import (
    check_state,
    gru_step,
    gru_step_backward,
    lstm_step,
    lstm_step_backward,
    rnn_step,
    rnn_step_backward,
    uniform_init,
)
from tinycnn.module import (
    LayerInputError,
    Module,
    Parameter,
    _check_grad,
    _output_meta,
    check_input,
)


def _notes_output_only(forward: Any) -> Any:
    """Mark ``forward`` as one that :class:`Module` should not wrap to note its output.

    Module would check backward's first argument against the whole ``(output, h_n)``
    tuple; the sequence layers take either form (see the module docstring) and check the
    gradients themselves, in ``_grads_in``.
    """
    forward._records_output = True
    return forward


class _Recurrent(Module):
    """The loop over layers, directions and time steps shared by RNN, LSTM and GRU."""

    mode = "RNN_TANH"
    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = np.float32,
        rng: np.random.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        name = self._name()
        self.input_size = check_int(name, "input_size", input_size)
        self.hidden_size = check_int(name, "hidden_size", hidden_size)
        self.num_layers = check_int(name, "num_layers", num_layers)
        self.bias = check_bool(name, "bias", bias)
        self.batch_first = check_bool(name, "batch_first", batch_first)
        self.dropout = check_float(name, "dropout", dropout, 0.0, 1.0)
        self.bidirectional = check_bool(name, "bidirectional", bidirectional)
        self.num_directions = 2 if bidirectional else 1
        if self.dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{name}: dropout is applied between layers, so dropout={dropout} does nothing "
                "with num_layers=1",
                UserWarning,
                stacklevel=3,
            )
        # dropout masks between layers come from this generator (seedable, as in Dropout)
        self.rng = np.random.default_rng(seed)
        init_rng = rng if rng is not None else np.random.default_rng()
        gh = self.gates * hidden_size
        for k in range(num_layers):
            in_k = input_size if k == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                # PyTorch's order of the state dict: ih, hh weights, then ih, hh biases
                setattr(self, f"weight_ih_l{k}{suffix}",
                        Parameter(uniform_init((gh, in_k), hidden_size, init_rng, dtype)))
                setattr(self, f"weight_hh_l{k}{suffix}",
                        Parameter(uniform_init((gh, hidden_size), hidden_size, init_rng, dtype)))
                if bias:
                    setattr(self, f"bias_ih_l{k}{suffix}",
                            Parameter(uniform_init((gh,), hidden_size, init_rng, dtype)))
                    setattr(self, f"bias_hh_l{k}{suffix}",
                            Parameter(uniform_init((gh,), hidden_size, init_rng, dtype)))
        self.caches = None  # caches[k][d]: one cache per time step, in the order run
        self.masks = None  # dropout mask applied to the output of layer k (or None)
        self.grad_hx = None
        self.output_meta = None  # shape and dtype of the last output, checked in backward

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse")[: self.num_directions]

    def _params(self, k: int, d: int) -> tuple[Any, Any, Any, Any]:
        """The four parameters (biases may be None) of layer ``k``, direction ``d``."""
        s = f"l{k}{self._suffixes()[d]}"
        return (getattr(self, f"weight_ih_{s}"), getattr(self, f"weight_hh_{s}"),
                getattr(self, f"bias_ih_{s}", None), getattr(self, f"bias_hh_{s}", None))

    def __call__(self, x: Any, hx: Any = None) -> Any:
        return self.forward(x, hx)

    # --- the step of each kind (overridden by LSTM and GRU) ---------------------------
    def _step(self, x: Any, state: tuple, weights: tuple) -> tuple[tuple, Any]:
        nonlinearity = "tanh" if self.mode == "RNN_TANH" else "relu"
        h, cache = rnn_step(x, state[0], weights, nonlinearity)
        return (h,), cache

    def _step_backward(self, dstate: tuple, cache: Any) -> tuple[Any, tuple, tuple]:
        dx, dh, grads = rnn_step_backward(dstate[0], cache)
        return dx, (dh,), grads

    # --- states: a tuple of (L*D, N, H) arrays, one for RNN/GRU, (h, c) for LSTM -----
    def _split_hx(self, hx: Any, x: Any, n: int) -> tuple[Any, ...]:
        xp = backend.get_array_module(x)
        shape = (self.num_layers * self.num_directions, n, self.hidden_size)
        if hx is None:
            return (xp.zeros(shape, dtype=x.dtype),)
        check_state(self, hx, shape, x, "the initial state h_0")
        return (hx,)

    def _pack_state(self, states: tuple[Any, ...]) -> Any:
        return states[0]

    def _unpack_grad_state(self, grad_state: Any) -> tuple[Any, ...]:
        return (grad_state,)

    # --- forward and BPTT -------------------------------------------------------------
    def _prepare(self, x: Any, hx: Any) -> tuple[Any, tuple[Any, ...]]:
        """Check the input; return it time-major ``(T, N, I)`` and the initial states."""
        layout = "(N, T, input_size)" if self.batch_first else "(T, N, input_size)"
        check_input(self, x, 3, layout, channels=self.input_size, channel_axis=2,
                    what="features (input_size)")
        seq = x.transpose(1, 0, 2) if self.batch_first else x
        if seq.shape[0] == 0:
            raise LayerInputError(f"{self._name()} expected at least one time step, got shape "
                                  f"{tuple(x.shape)}")
        return seq, self._split_hx(hx, x, seq.shape[1])

    def _drop(self, out: Any, k: int) -> tuple[Any, Any]:
        """Dropout on the output of layer ``k`` (training, all but the last layer)."""
        if not (self.training and self.dropout > 0 and k < self.num_layers - 1):
            return out, None
        keep = self.rng.random(out.shape, dtype=np.float32) >= self.dropout
        mask = backend.to_device(keep, backend.device_of(out)).astype(out.dtype)
        if self.dropout < 1.0:
            mask *= 1.0 / (1.0 - self.dropout)
        return out * mask, mask

    def _finish(self, out: Any, h_n: list[Any]) -> tuple[Any, Any]:
        """``(output, h_n)`` in the caller's layout; notes the output for backward's check."""
        output = out.transpose(1, 0, 2) if self.batch_first else out
        self.output_meta = _output_meta(output)
        return output, self._pack_state(tuple(h_n))

    @_notes_output_only
    def forward(self, x: Any, hx: Any = None) -> tuple[Any, Any]:
        seq, hx0 = self._prepare(x, hx)  # seq time-major: (T, N, I)
        xp = backend.get_array_module(x)
        steps, n = seq.shape[0], seq.shape[1]
        h_n = [xp.empty_like(s) for s in hx0]
        caches: list[list[list[Any]]] = []
        masks: list[Any] = []
        inp = seq
        for k in range(self.num_layers):
            outs, layer_caches = [], []
            for d in range(self.num_directions):
                weights = tuple(None if p is None else p.data for p in self._params(k, d))
                state = tuple(s[k * self.num_directions + d] for s in hx0)
                ys = xp.empty((steps, n, self.hidden_size), dtype=x.dtype)
                order = range(steps - 1, -1, -1) if d == 1 else range(steps)
                step_caches = []
                for t in order:
                    state, cache = self._step(inp[t], state, weights)
                    ys[t] = state[0]
                    step_caches.append(cache)
                for j, s in enumerate(state):
                    h_n[j][k * self.num_directions + d] = s
                outs.append(ys)
                layer_caches.append(step_caches)
            out = outs[0] if len(outs) == 1 else xp.concatenate(outs, axis=2)
            inp, mask = self._drop(out, k)
            masks.append(mask)
            caches.append(layer_caches)
        self.caches, self.masks = caches, masks
        return self._finish(inp, h_n)

    def backward(self, grad_output: Any, grad_state: Any = None) -> Any:
        """BPTT: the gradient of the input; that of the initial state goes to ``grad_hx``.

        ``grad_output`` has the output's shape; ``grad_state`` is the gradient of ``h_n``
        (LSTM: the pair ``(dh_n, dc_n)``, either may be None), None for zero.
        """
        self._need_cache(self.caches)
        xp = backend.get_array_module(grad_output)
        g, dstate_n = self._grads_in(grad_output, grad_state)
        steps, n = g.shape[0], g.shape[1]
        grad_hx = [xp.zeros((self.num_layers * self.num_directions, n, self.hidden_size),
                            dtype=g.dtype) for _ in dstate_n]
        for k in reversed(range(self.num_layers)):
            if self.masks[k] is not None:
                g = g * self.masks[k]
            in_k = self.input_size if k == 0 else self.hidden_size * self.num_directions
            dx = xp.zeros((steps, n, in_k), dtype=g.dtype)
            for d in range(self.num_directions):
                i = k * self.num_directions + d
                gd = g[:, :, d * self.hidden_size:(d + 1) * self.hidden_size]
                # gradient flowing back into the state, starting from that of h_n (and c_n)
                dstate = tuple(None if s is None else s[i] for s in dstate_n)
                sums = None
                order = range(steps - 1, -1, -1) if d == 1 else range(steps)
                # walk the steps backwards: the last step run is undone first
                for t, cache in zip(reversed(order), reversed(self.caches[k][d]), strict=True):
                    dh = gd[t] if dstate[0] is None else gd[t] + dstate[0]
                    dx_t, dstate, grads = self._step_backward((dh, *dstate[1:]), cache)
                    dx[t] += dx_t
                    if sums is None:
                        sums = grads
                    else:
                        sums = tuple(a + b for a, b in zip(sums, grads, strict=True))
                for j, s in enumerate(dstate):
                    if s is not None:
                        grad_hx[j][i] = s
                for p, grad in zip(self._params(k, d), sums, strict=True):
                    if p is not None:
                        p.accumulate(grad.astype(p.dtype, copy=False))
            g = dx
        self.grad_hx = self._pack_state(tuple(grad_hx))
        return g.transpose(1, 0, 2) if self.batch_first else g

    def _grads_in(self, grad_output: Any, grad_state: Any) -> tuple[Any, list[Any]]:
        """``grad_output`` time-major, and the checked gradients of the final states."""
        if isinstance(grad_output, (tuple, list)):
            if grad_state is not None or len(grad_output) != 2:
                raise LayerInputError(
                    f"{self._name()}.backward takes (grad_output, grad_state) as one pair "
                    "shaped like forward's result, or as two arguments, not both"
                )
            grad_output, grad_state = grad_output
        if grad_output is None:  # only the final state was used
            xp = backend.get_array_module(self.weight_hh_l0.data)
            grad_output = xp.zeros(self.output_meta.shape, dtype=self.output_meta.dtype)
        grad_output = _check_grad(self, grad_output, self.output_meta)
        g = grad_output.transpose(1, 0, 2) if self.batch_first else grad_output
        shape = (self.num_layers * self.num_directions, g.shape[1], self.hidden_size)
        dstate_n = []
        for j, gs in enumerate(self._unpack_grad_state(grad_state)):
            if gs is not None:
                check_state(self, gs, shape, grad_output, f"the gradient of the final state {j}")
            dstate_n.append(gs)
        return g, dstate_n

    def _clear_cache(self) -> None:
        self.caches = None
        self.masks = None

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if not self.bias:
            parts.append("bias=False")
        if self.batch_first:
            parts.append("batch_first=True")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        if self.bidirectional:
            parts.append("bidirectional=True")
        return ", ".join(parts)


class RNN(_Recurrent):
    """Elman RNN over a sequence (PyTorch's ``nn.RNN``), layer by layer and step by step.

    ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` with act ``tanh`` or ``relu``
    (``nonlinearity``). Input ``(T, N, input_size)`` (``(N, T, input_size)`` when
    ``batch_first``), optional ``h_0 (num_layers * D, N, hidden_size)``; returns
    ``(output, h_n)`` with output ``(T, N, D * hidden_size)``, the last layer's ``h_t``
    for every t (both directions side by side). ``dropout`` drops the outputs of every
    layer but the last in training. tinycnn's additions: ``dtype`` of the parameters,
    ``rng`` (the generator of the initialisation) and ``seed`` (of the dropout masks).
    Unlike PyTorch, a 2-D unbatched input is not accepted: add a batch axis of 1.

    Backward (BPTT): step t receives ``dL/dh_t`` from the output at t plus what step t+1
    sent back; :func:`~tinycnn.layers.recurrent.cells.rnn_step_backward` turns it into
    ``dx_t``, ``dh_{t-1}`` and weight gradients, which add up over the steps.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, dtype: Any = np.float32,
                 rng: np.random.Generator | None = None, seed: int | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, rng, seed)
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"

    def extra_repr(self) -> str:
        extra = "" if self.nonlinearity == "tanh" else ", nonlinearity='relu'"
        return super().extra_repr() + extra


class GRU(_Recurrent):
    """GRU over a sequence (PyTorch's ``nn.GRU``): gates r, z, n as in :class:`GRUCell`.

    Same arguments, shapes and return values as :class:`RNN` (no ``nonlinearity``).
    Backward is BPTT with :func:`~tinycnn.layers.recurrent.cells.gru_step_backward`.
    """

    mode = "GRU"
    gates = 3

    def _step(self, x: Any, state: tuple, weights: tuple) -> tuple[tuple, Any]:
        h, cache = gru_step(x, state[0], weights)
        return (h,), cache

    def _step_backward(self, dstate: tuple, cache: Any) -> tuple[Any, tuple, tuple]:
        dx, dh, grads = gru_step_backward(dstate[0], cache)
        return dx, (dh,), grads


class LSTM(_Recurrent):
    """LSTM over a sequence (PyTorch's ``nn.LSTM``): gates i, f, g, o as in :class:`LSTMCell`.

    Input as :class:`RNN`; the state is the pair ``(h_0, c_0)``, each
    ``(num_layers * D, N, hidden_size)``; returns ``(output, (h_n, c_n))``.
    ``backward(grad_output, (dh_n, dc_n))`` (the pair or either entry may be None) returns
    dx and leaves ``(dh_0, dc_0)`` in ``grad_hx``. (PyTorch's ``proj_size`` is not
    supported.)

    Backward is BPTT with :func:`~tinycnn.layers.recurrent.cells.lstm_step_backward`: the
    cell state carries its gradient back through ``dc_{t-1} = dc_total f``, a path without
    a squashing nonlinearity, which is why LSTM gradients vanish far more slowly.
    """

    mode = "LSTM"
    gates = 4

    def _step(self, x: Any, state: tuple, weights: tuple) -> tuple[tuple, Any]:
        h, c, cache = lstm_step(x, state[0], state[1], weights)
        return (h, c), cache

    def _step_backward(self, dstate: tuple, cache: Any) -> tuple[Any, tuple, tuple]:
        dx, dh, dc, grads = lstm_step_backward(dstate[0], dstate[1], cache)
        return dx, (dh, dc), grads

    def _split_hx(self, hx: Any, x: Any, n: int) -> tuple[Any, ...]:
        if hx is None:
            h0 = super()._split_hx(None, x, n)[0]
            return h0, h0.copy()
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise LayerInputError(f"LSTM expected the initial state as a pair (h_0, c_0), "
                                  f"got {type(hx).__name__}")
        shape = (self.num_layers * self.num_directions, n, self.hidden_size)
        check_state(self, hx[0], shape, x, "the initial state h_0")
        check_state(self, hx[1], shape, x, "the initial cell state c_0")
        return hx[0], hx[1]

    def _pack_state(self, states: tuple[Any, ...]) -> Any:
        return states[0], states[1]

    def _unpack_grad_state(self, grad_state: Any) -> tuple[Any, ...]:
        if grad_state is None:
            return None, None
        if not isinstance(grad_state, (tuple, list)) or len(grad_state) != 2:
            raise LayerInputError(
                "LSTM.backward expected grad_state as a pair (dh_n, dc_n) (either may be "
                f"None), got {type(grad_state).__name__}"
            )
        return grad_state[0], grad_state[1]
