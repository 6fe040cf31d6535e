"""Fast twins of RNN, LSTM and GRU: the same BPTT, with the matrix products regrouped.

The reference loop (``tinycnn/layers/recurrent/sequence.py``) does, at every time step,
``x_t W_ih^T`` forward and ``da_t W_ih``, ``da_t^T x_t``, ``da_t^T h_{t-1}`` backward:
small products of N rows each. Only the products with ``W_hh`` really depend on the
previous step. The twins:

* project the inputs of all time steps at once, ``U = X W_ih^T + b_ih`` with X as
  ``(T*N, I)``: one large product instead of T small ones;
* run the recurrence with ``h_{t-1} W_hh^T`` only, keeping every step's pre-activation
  gradient ``da_t`` in one ``(T, N, G*H)`` array;
* after the loop, ``dX = dA W_ih``, ``dW_ih = dA^T X`` and ``dW_hh = dA^T H_prev`` are one
  product each over all ``T*N`` rows;
* run the loop with single-threaded OpenBLAS: a ``(64, 256) x (256, 1024)`` product is
  too small to split over cores, and on a busy machine waking the BLAS threads 200 times
  a step cost more than the products (measured on the 2-core VM: 20-30 ms instead of
  0.2-1 ms per product under load).

Results equal the reference to rounding (``tests/test_recurrent_fast.py``). On the GPU
and under ``use_kernels("reference")`` the reference code runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from tinycnn.backend import is_gpu_array
from tinycnn.fast import kernels_for, twin_of
from tinycnn.fast.threads import _openblas_threads_api, _single_threaded_blas
from tinycnn.layers.recurrent.cells import sigmoid
from tinycnn.layers.recurrent.sequence import GRU, LSTM, RNN, _notes_output_only, _Recurrent


@contextlib.contextmanager
def _small_products() -> Iterator[None]:
    """Single-threaded OpenBLAS inside the block, when NumPy's OpenBLAS can be reached."""
    if _openblas_threads_api() is None:
        yield
        return
    with _single_threaded_blas():
        yield


def _cast(p: Any, dtype: Any) -> Any:
    return None if p is None else p.data.astype(dtype, copy=False)


class _FastRecurrent(_Recurrent):
    """The regrouped loop; each twin supplies ``_fast_step`` and ``_fast_step_back``."""

    @_notes_output_only
    def forward(self, x: Any, hx: Any = None) -> tuple[Any, Any]:
        if is_gpu_array(x) or kernels_for(x) is None:
            self.fast_caches = None
            return super().forward(x, hx)
        seq, hx0 = self._prepare(x, hx)
        steps, n = seq.shape[0], seq.shape[1]
        hs, dt = self.hidden_size, x.dtype
        h_n = [np.empty_like(s) for s in hx0]
        caches, masks = [], []
        inp = seq
        with _small_products():
            for k in range(self.num_layers):
                out = np.empty((steps, n, hs * self.num_directions), dtype=dt)
                layer_caches = []
                for d in range(self.num_directions):
                    w_ih, w_hh, b_ih, b_hh = (_cast(p, dt) for p in self._params(k, d))
                    u = inp.reshape(steps * n, -1) @ w_ih.T
                    if b_ih is not None:
                        u += b_ih
                    u = u.reshape(steps, n, -1)
                    state = tuple(s[k * self.num_directions + d] for s in hx0)
                    h_prev = np.empty((steps, n, hs), dtype=dt)  # the state each step saw
                    step_caches = []
                    for t in range(steps - 1, -1, -1) if d == 1 else range(steps):
                        h_prev[t] = state[0]
                        state, cache = self._fast_step(u[t], state, w_hh, b_hh)
                        out[t, :, d * hs:(d + 1) * hs] = state[0]
                        step_caches.append(cache)
                    for j, s in enumerate(state):
                        h_n[j][k * self.num_directions + d] = s
                    layer_caches.append((inp, h_prev, step_caches))
                inp, mask = self._drop(out, k)
                masks.append(mask)
                caches.append(layer_caches)
        self.fast_caches, self.masks, self.caches = caches, masks, None
        return self._finish(inp, h_n)

    def backward(self, grad_output: Any, grad_state: Any = None) -> Any:
        if getattr(self, "fast_caches", None) is None:
            return super().backward(grad_output, grad_state)
        g, dstate_n = self._grads_in(grad_output, grad_state)
        steps, n = g.shape[0], g.shape[1]
        hs, gh = self.hidden_size, self.gates * self.hidden_size
        grad_hx = [np.zeros((self.num_layers * self.num_directions, n, hs), dtype=g.dtype)
                   for _ in dstate_n]
        with _small_products():
            for k in reversed(range(self.num_layers)):
                if self.masks[k] is not None:
                    g = g * self.masks[k]
                dx = None
                for d in range(self.num_directions):
                    i = k * self.num_directions + d
                    inp, h_prev, step_caches = self.fast_caches[k][d]
                    w_ih, w_hh, b_ih, b_hh = self._params(k, d)
                    w_hh_data = w_hh.data.astype(g.dtype, copy=False)
                    du = np.empty((steps, n, gh), dtype=g.dtype)
                    dv = du if self.mode != "GRU" else np.empty_like(du)
                    dstate = tuple(None if s is None else s[i] for s in dstate_n)
                    order = range(steps - 1, -1, -1) if d == 1 else range(steps)
                    for t, cache in zip(reversed(order), reversed(step_caches), strict=True):
                        dh = g[t, :, d * hs:(d + 1) * hs]
                        if dstate[0] is not None:
                            dh = dh + dstate[0]
                        dstate = self._fast_step_back(dh, dstate[1:], cache, w_hh_data,
                                                      du[t], dv[t])
                    for j, s in enumerate(dstate):
                        grad_hx[j][i] = s
                    du2, dv2 = du.reshape(steps * n, gh), dv.reshape(steps * n, gh)
                    w_ih.accumulate((du2.T @ inp.reshape(steps * n, -1)).astype(w_ih.dtype))
                    w_hh.accumulate((dv2.T @ h_prev.reshape(steps * n, hs)).astype(w_hh.dtype))
                    if b_ih is not None:
                        b_ih.accumulate(du2.sum(axis=0).astype(b_ih.dtype))
                        b_hh.accumulate(dv2.sum(axis=0).astype(b_hh.dtype))
                    dx_d = (du2 @ w_ih.data.astype(g.dtype, copy=False)).reshape(steps, n, -1)
                    dx = dx_d if dx is None else dx + dx_d
                g = dx
        self.grad_hx = self._pack_state(tuple(grad_hx))
        return g.transpose(1, 0, 2) if self.batch_first else g

    def _clear_cache(self) -> None:
        super()._clear_cache()
        self.fast_caches = None


def _recurrent_matmul(h: Any, w_hh: Any, b_hh: Any, u_t: Any) -> Any:
    """``u_t + h W_hh^T + b_hh``: the pre-activations of one step."""
    a = h @ w_hh.T
    a += u_t
    if b_hh is not None:
        a += b_hh
    return a


@twin_of(RNN)
class FastRNN(_FastRecurrent, RNN):
    """:class:`~tinycnn.layers.recurrent.RNN` with the regrouped products."""

    def _fast_step(self, u_t: Any, state: tuple, w_hh: Any, b_hh: Any) -> tuple[tuple, Any]:
        a = _recurrent_matmul(state[0], w_hh, b_hh, u_t)
        h = np.tanh(a, out=a) if self.mode == "RNN_TANH" else np.maximum(a, 0, out=a)
        return (h,), h

    def _fast_step_back(self, dh: Any, rest: tuple, h: Any, w_hh: Any, du: Any,
                        dv: Any) -> tuple:
        if self.mode == "RNN_TANH":
            np.multiply(dh, 1 - h * h, out=du)
        else:
            np.multiply(dh, h > 0, out=du)
        return (du @ w_hh,)


@twin_of(LSTM)
class FastLSTM(_FastRecurrent, LSTM):
    """:class:`~tinycnn.layers.recurrent.LSTM` with the regrouped products."""

    def _fast_step(self, u_t: Any, state: tuple, w_hh: Any, b_hh: Any) -> tuple[tuple, Any]:
        h, c = state
        hs = self.hidden_size
        a = _recurrent_matmul(h, w_hh, b_hh, u_t)  # becomes the gates in place: i f g o
        a[:, :2 * hs] = sigmoid(a[:, :2 * hs])
        a[:, 3 * hs:] = sigmoid(a[:, 3 * hs:])
        np.tanh(a[:, 2 * hs:3 * hs], out=a[:, 2 * hs:3 * hs])
        i, f, g, o = a[:, :hs], a[:, hs:2 * hs], a[:, 2 * hs:3 * hs], a[:, 3 * hs:]
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        return (o * tc, c_new), (c, a, tc)

    def _fast_step_back(self, dh: Any, rest: tuple, cache: tuple, w_hh: Any, du: Any,
                        dv: Any) -> tuple:
        c, a, tc = cache
        hs = self.hidden_size
        i, f, g, o = a[:, :hs], a[:, hs:2 * hs], a[:, 2 * hs:3 * hs], a[:, 3 * hs:]
        dc = dh * o * (1 - tc * tc)
        if rest[0] is not None:
            dc += rest[0]
        du[:, :hs] = dc * g * i * (1 - i)
        du[:, hs:2 * hs] = dc * c * f * (1 - f)
        du[:, 2 * hs:3 * hs] = dc * i * (1 - g * g)
        du[:, 3 * hs:] = dh * tc * o * (1 - o)
        return du @ w_hh, dc * f


@twin_of(GRU)
class FastGRU(_FastRecurrent, GRU):
    """:class:`~tinycnn.layers.recurrent.GRU` with the regrouped products."""

    def _fast_step(self, u_t: Any, state: tuple, w_hh: Any, b_hh: Any) -> tuple[tuple, Any]:
        h = state[0]
        hs = self.hidden_size
        v = h @ w_hh.T
        if b_hh is not None:
            v += b_hh
        rz = sigmoid(u_t[:, :2 * hs] + v[:, :2 * hs])
        r, z = rz[:, :hs], rz[:, hs:]
        v_n = v[:, 2 * hs:]
        n = np.tanh(u_t[:, 2 * hs:] + r * v_n)
        return ((1 - z) * n + z * h,), (h, r, z, n, v_n)

    def _fast_step_back(self, dh: Any, rest: tuple, cache: tuple, w_hh: Any, du: Any,
                        dv: Any) -> tuple:
        h, r, z, n, v_n = cache
        hs = self.hidden_size
        da_n = dh * (1 - z) * (1 - n * n)
        du[:, :hs] = da_n * v_n * r * (1 - r)
        du[:, hs:2 * hs] = dh * (h - n) * z * (1 - z)
        du[:, 2 * hs:] = da_n
        dv[:, :2 * hs] = du[:, :2 * hs]
        dv[:, 2 * hs:] = da_n * r
        return (dh * z + dv @ w_hh,)

