"""The recurrent twins (``tinycnn/fast/recurrent.py``) equal the reference loops.

Each case is built once and copied; one copy runs the reference, the other is accelerated.
One training-mode forward (dropout included: both draw the same masks from the same
generator) and one backward with random gradients on the output and on the final states
must give the same output, final states, input gradient, initial-state gradient and
weight gradients: to rounding in float64, to float32 tolerance in float32.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import tinycnn
import tinycnn.fast.recurrent  # noqa: F401  (registers the twins)
from tinycnn.layers.recurrent import GRU, LSTM, RNN

pytest.importorskip("numba", reason="numba is not installed: the engine's CPU kernels need it")

TOL = {np.float64: 1e-9, np.float32: 2e-4}
CASES = [
    ("rnn_tanh", lambda **kw: RNN(3, 5, **kw), {}),
    ("rnn_relu_deep_bidir", lambda **kw: RNN(3, 5, nonlinearity="relu", **kw),
     dict(num_layers=2, bidirectional=True)),
    ("lstm", lambda **kw: LSTM(3, 5, **kw), {}),
    ("lstm_deep_bidir_dropout_batch_first", lambda **kw: LSTM(3, 5, **kw),
     dict(num_layers=3, bidirectional=True, dropout=0.3, batch_first=True)),
    ("lstm_no_bias", lambda **kw: LSTM(3, 5, **kw), dict(bias=False, num_layers=2)),
    ("gru", lambda **kw: GRU(3, 5, **kw), {}),
    ("gru_deep_bidir_batch_first", lambda **kw: GRU(3, 5, **kw),
     dict(num_layers=2, bidirectional=True, batch_first=True, bias=False)),
]


def _run(layer, x, hx, g_out, g_state):
    out, final = layer(x, hx)
    dx = layer.backward(g_out, g_state)
    grads = {name: p.grad for name, p in layer.named_parameters()}
    return out, final, dx, layer.grad_hx, grads


def _leaves(value):
    if isinstance(value, tuple):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("name", "build", "options"), CASES, ids=[c[0] for c in CASES])
def test_twin_equals_reference(name, build, options, dtype):
    rng = np.random.default_rng(0)
    reference = build(dtype=dtype, rng=rng, seed=5, **options)
    fast = tinycnn.accelerate(copy.deepcopy(reference))
    assert type(fast).__name__.startswith("Fast") and repr(fast) == repr(reference)
    t, n = 6, 4
    x = rng.standard_normal((n, t, 3) if reference.batch_first else (t, n, 3)).astype(dtype)
    shape = (reference.num_layers * reference.num_directions, n, 5)
    lstm = isinstance(reference, LSTM)
    states = tuple(rng.standard_normal(shape).astype(dtype) for _ in range(2 if lstm else 1))
    hx = states if lstm else states[0]
    width = 5 * reference.num_directions
    g_out = rng.standard_normal((n, t, width) if reference.batch_first else (t, n, width))
    g_out = g_out.astype(dtype)
    g_states = tuple(rng.standard_normal(shape).astype(dtype) for _ in states)
    g_state = g_states if lstm else g_states[0]
    inputs = [a.copy() for a in (x, g_out, *states, *g_states)]
    ours = _run(reference, x, hx, g_out, g_state)
    theirs = _run(fast, x, hx, g_out, g_state)
    for before, after in zip(inputs, (x, g_out, *states, *g_states), strict=True):
        np.testing.assert_array_equal(before, after, err_msg="an argument was changed in place")
    for what, a, b in zip(("output", "final state", "dx", "initial-state gradient"),
                          ours[:4], theirs[:4], strict=True):
        for u, v in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_allclose(v, u, rtol=TOL[dtype], atol=TOL[dtype], err_msg=what)
    for key, value in ours[4].items():
        np.testing.assert_allclose(theirs[4][key], value, rtol=TOL[dtype], atol=TOL[dtype],
                                   err_msg=key)
    assert fast.fast_caches is not None  # the twin's own path ran


def test_reference_kernels_switch_runs_the_reference_loop():
    layer = tinycnn.accelerate(LSTM(3, 4))
    with tinycnn.use_kernels("reference"):
        out, _ = layer(np.zeros((2, 1, 3), np.float32))
        assert layer.fast_caches is None and layer.caches is not None
        layer.backward(np.ones_like(out))
    assert layer.weight_hh_l0.grad is not None
    tinycnn.accelerate(layer, False)
    assert type(layer) is LSTM


def test_lstm_speed_script_runs_on_tiny_sizes(capsys):
    import lstm_speed  # benchmarks/ is on sys.path (conftest)

    assert lstm_speed.main(["--batch", "2", "--seq", "3", "--hidden", "4", "--input-size", "3",
                            "--repeats", "1", "--min-block", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "tinycnn" in out and "reference" in out and " ms" in out
