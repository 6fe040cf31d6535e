"""RNN, LSTM, GRU and their cells: float64 gradient checks over every option, the API, errors.

Every check puts a random upstream gradient on the output sequence *and* on the final
states, and treats the initial state as a parameter, so the gradients of x, of every weight
and of h_0 (and c_0) are all compared with central differences.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from recurrent_helpers import CellWithState, SequenceWithState

from tinycnn.gradcheck import GradcheckError, gradcheck
from tinycnn.layers.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from tinycnn.layers.recurrent.cells import lstm_step, lstm_step_backward
from tinycnn.module import BackwardBeforeForwardError, LayerInputError, Module

TOL = 1e-6
KINDS = {
    "rnn_tanh": lambda **kw: RNN(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: LSTM(**kw),
    "gru": lambda **kw: GRU(**kw),
}
CELLS = {
    "rnn_tanh": lambda **kw: RNNCell(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: RNNCell(nonlinearity="relu", **kw),
    "lstm": lambda **kw: LSTMCell(**kw),
    "gru": lambda **kw: GRUCell(**kw),
}
# every combination of the options that change the loops
OPTIONS = list(itertools.product([1, 2], [False, True], [False, True], [True, False]))


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_cell(kind, bias):
    rng = np.random.default_rng(1)
    cell = CELLS[kind](input_size=3, hidden_size=4, bias=bias, dtype=np.float64, rng=rng)
    model = CellWithState(cell, n=5, rng=rng)
    x = rng.standard_normal((5, 3))
    result = gradcheck(model, x, tol=TOL, return_result=True, max_entries=None)
    assert set(result.errors) >= {"input", "h", "cell.weight_ih", "cell.weight_hh"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("num_layers", "bidirectional", "batch_first", "bias"), OPTIONS)
def test_gradcheck_sequence(kind, num_layers, bidirectional, batch_first, bias):
    rng = np.random.default_rng(num_layers + 2 * bidirectional + 4 * batch_first)
    layer = KINDS[kind](input_size=3, hidden_size=4, num_layers=num_layers, bias=bias,
                        batch_first=batch_first, bidirectional=bidirectional,
                        dtype=np.float64, rng=rng)
    model = SequenceWithState(layer, n=2, rng=rng)
    x = rng.standard_normal((2, 5, 3) if batch_first else (5, 2, 3))
    result = gradcheck(model, x, tol=TOL, return_result=True, max_entries=150)
    expected = {"input", "h0", "layer.weight_ih_l0", "layer.weight_hh_l0"}
    if bidirectional:
        expected.add(f"layer.weight_hh_l{num_layers - 1}_reverse")
    if isinstance(layer, LSTM):
        expected.add("c0")
    assert set(result.errors) >= expected


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_with_dropout_between_layers(kind):
    """Dropout masks come from the layer's generator, which gradcheck replays."""
    rng = np.random.default_rng(7)
    layer = KINDS[kind](input_size=3, hidden_size=4, num_layers=3, dropout=0.4,
                        bidirectional=True, dtype=np.float64, rng=rng, seed=3)
    model = SequenceWithState(layer, n=2, rng=rng)
    gradcheck(model, rng.standard_normal((4, 2, 3)), tol=TOL, max_entries=120)
    # and the masks do drop: some of layer 0's outputs are zeroed
    layer(rng.standard_normal((4, 2, 3)))
    assert (layer.masks[0] == 0).any() and layer.masks[2] is None


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_without_initial_state(kind):
    """The common call: zeros as the initial state, a gradient on the output only."""
    rng = np.random.default_rng(4)
    layer = KINDS[kind](input_size=3, hidden_size=4, dtype=np.float64, rng=rng)

    class OutputOnly(Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x)[0]

        def backward(self, g):
            return self.layer.backward(g)

    gradcheck(OutputOnly(), rng.standard_normal((6, 2, 3)), tol=TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_runs_on_layers_and_cells_directly(kind):
    """backward also takes one pair shaped like forward's result, as gradcheck hands it."""
    rng = np.random.default_rng(8)
    layer = KINDS[kind](input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                        dtype=np.float64, rng=rng)
    gradcheck(layer, rng.standard_normal((5, 2, 3)), tol=TOL, max_entries=100)
    cell = CELLS[kind](input_size=3, hidden_size=4, dtype=np.float64, rng=rng)
    gradcheck(cell, rng.standard_normal((2, 3)), tol=TOL)


def test_backward_forms_agree_and_none_means_unused():
    rng = np.random.default_rng(9)
    lstm = LSTM(3, 4, dtype=np.float64, rng=rng)
    x = rng.standard_normal((5, 2, 3))
    out, (h_n, _) = lstm(x)
    g_h = rng.standard_normal(h_n.shape)
    dx_two = lstm.backward(np.zeros_like(out), (g_h, None))
    lstm.zero_grad()
    dx_pair = lstm.backward((None, (g_h, None)))  # a model that reads only h_n
    np.testing.assert_array_equal(dx_two, dx_pair)
    with pytest.raises(LayerInputError, match="as one pair .* or as two arguments, not both"):
        lstm.backward((out, None), (g_h, None))


def test_dropout_is_off_in_eval_and_on_the_last_layer():
    rng = np.random.default_rng(0)
    layer = LSTM(3, 4, num_layers=2, dropout=1.0, dtype=np.float64, rng=rng)
    x = rng.standard_normal((5, 2, 3))
    eval_out = layer.eval()(x)[0]
    train_out = layer.train()(x)[0]
    # dropout 1.0 zeroes layer 0's output: layer 1 then sees only its biases
    assert not np.allclose(eval_out, train_out)
    assert layer.masks[0].max() == 0 and layer.masks[1] is None


def test_gradcheck_catches_a_wrong_gradient_of_a_second_output():
    """gradcheck's tuple support must look at every output, not just the first."""
    rng = np.random.default_rng(2)

    class BrokenCell(LSTMCell):
        def backward(self, grad):
            dh, dc = grad
            return super().backward((dh, None if dc is None else 0.5 * dc))

    gradcheck(LSTMCell(3, 4, dtype=np.float64, rng=rng), rng.standard_normal((2, 3)), tol=TOL)

    model = CellWithState(BrokenCell(3, 4, dtype=np.float64, rng=rng), n=2, rng=rng)
    with pytest.raises(GradcheckError):
        gradcheck(model, rng.standard_normal((2, 3)), tol=TOL)


def test_shapes_and_returns_follow_pytorch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 2, 3)).astype(np.float32)  # (T, N, I)
    out, h_n = GRU(3, 5, num_layers=2, bidirectional=True, rng=rng)(x)
    assert out.shape == (7, 2, 10) and h_n.shape == (4, 2, 5)
    out, (h_n, c_n) = LSTM(3, 5, batch_first=True, rng=rng)(x)  # read as (N=7, T=2, I=3)
    assert out.shape == (7, 2, 5) and h_n.shape == c_n.shape == (1, 7, 5)
    # the last output of a one-directional single layer is its final state
    np.testing.assert_array_equal(out[:, -1], h_n[0])
    assert out.dtype == np.float32


def test_bidirectional_reverse_half_runs_backwards_in_time():
    """h_n of the reverse direction is its output at t = 0."""
    rng = np.random.default_rng(3)
    out, h_n = RNN(2, 3, bidirectional=True, dtype=np.float64, rng=rng)(
        rng.standard_normal((6, 1, 2)))
    np.testing.assert_array_equal(out[0, :, 3:], h_n[1])
    np.testing.assert_array_equal(out[-1, :, :3], h_n[0])


def test_the_sequence_layer_is_the_cell_in_a_loop():
    """One step of LSTM equals LSTMCell with the same weights."""
    rng = np.random.default_rng(5)
    lstm = LSTM(3, 4, dtype=np.float64, rng=rng)
    cell = LSTMCell(3, 4, dtype=np.float64, rng=rng)
    cell.load_state_dict({k[:-3]: v for k, v in lstm.state_dict().items()})
    x = rng.standard_normal((3, 2, 3))
    out, (h_n, c_n) = lstm(x)
    h, c = None, None
    for t in range(3):
        h, c = cell(x[t], None if h is None else (h, c))
        np.testing.assert_allclose(out[t], h, rtol=1e-12)
    np.testing.assert_allclose(c_n[0], c, rtol=1e-12)


def test_step_functions_take_missing_gradients_as_zero():
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((8, 3)), rng.standard_normal((8, 2)), None, None)
    _, _, cache = lstm_step(rng.standard_normal((4, 3)), rng.standard_normal((4, 2)),
                            rng.standard_normal((4, 2)), w)
    dx, dh, dc, grads = lstm_step_backward(None, None, cache)
    assert not dx.any() and not dh.any() and not dc.any() and not grads[0].any()


def test_init_is_pytorch_uniform():
    layer = LSTM(10, 25, num_layers=2, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(25)
    for name, p in layer.named_parameters():
        assert np.abs(p.data).max() <= bound, name
        assert np.abs(p.data).max() > 0.9 * bound, name  # spread over the whole range
    assert layer.weight_ih_l1.shape == (100, 25) and layer.bias_hh_l0.shape == (100,)


def test_state_dict_keys_in_pytorch_order():
    layer = GRU(3, 4, num_layers=2, bidirectional=True)
    keys = list(layer.state_dict())
    expected = [f"{w}_l{k}{s}" for k in range(2) for s in ("", "_reverse")
                for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert keys == expected
    assert list(RNN(3, 4, bias=False).state_dict()) == ["weight_ih_l0", "weight_hh_l0"]


def test_float32_runs_and_keeps_dtypes():
    rng = np.random.default_rng(0)
    layer = LSTM(3, 4, num_layers=2, rng=rng)
    out, _ = layer(rng.standard_normal((5, 2, 3)).astype(np.float32))
    dx = layer.backward(np.ones_like(out))
    assert dx.dtype == np.float32 and layer.weight_ih_l0.grad.dtype == np.float32
    assert layer.grad_hx[0].shape == (2, 2, 4)


def test_gradients_accumulate_over_two_backwards():
    rng = np.random.default_rng(1)
    layer = GRU(2, 3, dtype=np.float64, rng=rng)
    x = rng.standard_normal((4, 1, 2))
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    once = layer.weight_hh_l0.grad.copy()
    layer(x)
    layer.backward(np.ones_like(out))
    np.testing.assert_allclose(layer.weight_hh_l0.grad, 2 * once)


def test_bad_inputs_are_clear_errors():
    rng = np.random.default_rng(0)
    lstm = LSTM(3, 4, num_layers=2, rng=rng)
    x = np.zeros((5, 2, 3), dtype=np.float32)
    with pytest.raises(LayerInputError, match=r"LSTM expected a 3-D input \(T, N, input_size\)"):
        lstm(np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(LayerInputError, match="expected 3 features"):
        lstm(np.zeros((5, 2, 4), dtype=np.float32))
    with pytest.raises(LayerInputError, match=r"pair \(h_0, c_0\)"):
        lstm(x, np.zeros((2, 2, 4), dtype=np.float32))
    with pytest.raises(LayerInputError, match=r"h_0 of shape \(2, 2, 4\), got \(1, 2, 4\)"):
        lstm(x, (np.zeros((1, 2, 4), np.float32), np.zeros((2, 2, 4), np.float32)))
    with pytest.raises(LayerInputError, match="dtype float32, got float64"):
        RNN(3, 4)(x, np.zeros((1, 2, 4)))
    with pytest.raises(LayerInputError, match="at least one time step"):
        GRU(3, 4)(np.zeros((0, 2, 3), dtype=np.float32))
    with pytest.raises(BackwardBeforeForwardError):
        LSTM(3, 4).backward(np.zeros((5, 2, 4), dtype=np.float32))
    out, _ = lstm(x)
    with pytest.raises(LayerInputError, match=r"LSTM.backward expected a gradient of shape"):
        lstm.backward(np.zeros((5, 3, 4), dtype=np.float32))
    with pytest.raises(LayerInputError, match=r"grad_state as a pair"):
        lstm.backward(np.zeros_like(out), np.zeros((2, 2, 4), np.float32))
    with pytest.raises(LayerInputError, match=r"final state 0 of shape \(2, 2, 4\)"):
        lstm.backward(np.zeros_like(out), (np.zeros((2, 3, 4), np.float32), None))
    with pytest.raises(LayerInputError, match=r"RNNCell expected 3 features"):
        RNNCell(3, 4)(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(LayerInputError, match=r"LSTMCell expected the state as a pair"):
        LSTMCell(3, 4)(np.zeros((2, 3), dtype=np.float32), np.zeros((2, 4), np.float32))
    cell = LSTMCell(3, 4)
    cell(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(LayerInputError, match=r"LSTMCell.backward expected a tuple of 2"):
        cell.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(LayerInputError, match=r"shape \(2, 4\) \(output 1\)"):
        cell.backward((None, np.zeros((3, 4), np.float32)))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RNN(3, 4, nonlinearity="sigmoid"), "nonlinearity must be 'tanh' or 'relu'"),
        (lambda: RNNCell(3, 4, nonlinearity="gelu"), "nonlinearity must be 'tanh' or 'relu'"),
        (lambda: LSTM(0, 4), "input_size must be an int >= 1"),
        (lambda: GRU(3, 4.0), "hidden_size must be an int >= 1"),
        (lambda: LSTM(3, 4, num_layers=0), "num_layers must be an int >= 1"),
        (lambda: LSTM(3, 4, dropout=1.5), r"dropout must be in \[0.0, 1.0\]"),
        (lambda: GRU(3, 4, bidirectional="yes"), "bidirectional must be True or False"),
        (lambda: GRUCell(3, 4, bias=1), "bias must be True or False"),
    ],
)
def test_bad_constructor_arguments(build, message):
    with pytest.raises((TypeError, ValueError), match=message):
        build()


def test_dropout_with_one_layer_warns_as_in_pytorch():
    with pytest.warns(UserWarning, match="does nothing with num_layers=1"):
        GRU(3, 4, dropout=0.2)


def test_repr_reads_like_pytorch():
    assert repr(LSTM(3, 4, num_layers=2, batch_first=True, dropout=0.5)) == (
        "LSTM(3, 4, num_layers=2, batch_first=True, dropout=0.5)")
    assert repr(RNN(3, 4, nonlinearity="relu")) == "RNN(3, 4, nonlinearity='relu')"
    assert repr(GRUCell(3, 4, bias=False)) == "GRUCell(3, 4, bias=False)"
