"""RNN, LSTM, GRU and their cells against PyTorch in float64, weights moved by state dict.

Random configurations of every option (a seeded list, the same on every run): outputs,
final states, input gradients, initial-state gradients and weight gradients must agree to
1e-6 relative, with random upstream gradients on the outputs and on the final states.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; the reference tests against it need it"
)

from tinycnn.layers.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # noqa: E402

TOL = 1e-6
OURS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
CELLS = {"RNNCell": RNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}


def assert_close(ours, theirs, what: str) -> None:
    """Relative error ``max|a - b| / max|b|`` (absolute when ``b`` is all zeros) under TOL."""
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    scale = float(np.abs(theirs).max(initial=0.0))
    err = float(np.abs(ours - theirs).max(initial=0.0)) / (scale if scale > 0.0 else 1.0)
    assert err <= TOL, f"{what}: relative error {err:.2e} against PyTorch exceeds {TOL:.0e}"


def configurations(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    configs = []
    for kind in ("RNN", "LSTM", "GRU"):
        for _ in range(count):
            c = dict(kind=kind, input_size=int(rng.integers(1, 6)),
                     hidden_size=int(rng.integers(1, 7)), num_layers=int(rng.integers(1, 4)),
                     bias=bool(rng.random() < 0.7), batch_first=bool(rng.random() < 0.5),
                     bidirectional=bool(rng.random() < 0.5),
                     # dropout only matters in training, where the two frameworks draw
                     # different masks: compared in eval mode
                     dropout=float(rng.choice([0.0, 0.3])),
                     steps=int(rng.integers(1, 7)), batch=int(rng.integers(1, 5)),
                     initial_state=bool(rng.random() < 0.6), state_grad=bool(rng.random() < 0.6),
                     seed=int(rng.integers(1 << 30)))
            if c["num_layers"] == 1:
                c["dropout"] = 0.0  # PyTorch warns: no layer to drop between
            if kind == "RNN":
                c["nonlinearity"] = str(rng.choice(["tanh", "relu"]))
            configs.append(c)
    return configs


CONFIGS = configurations(10, seed=2026)


def _ids(c: dict) -> str:
    flags = [k for k in ("bias", "batch_first", "bidirectional", "initial_state", "state_grad")
             if c[k]]
    return f"{c['kind']}-{c.get('nonlinearity', '')}L{c['num_layers']}-" + "-".join(flags)


@pytest.mark.parametrize("c", CONFIGS, ids=[_ids(c) for c in CONFIGS])
def test_sequence_layer_matches_pytorch(c):
    rng = np.random.default_rng(c["seed"])
    kwargs = dict(num_layers=c["num_layers"], bias=c["bias"], batch_first=c["batch_first"],
                  dropout=c["dropout"], bidirectional=c["bidirectional"])
    if "nonlinearity" in c:
        kwargs["nonlinearity"] = c["nonlinearity"]
    ours = OURS[c["kind"]](c["input_size"], c["hidden_size"], dtype=np.float64, rng=rng,
                           **kwargs).eval()
    theirs = getattr(torch.nn, c["kind"])(c["input_size"], c["hidden_size"],
                                          dtype=torch.float64, **kwargs).eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    assert list(theirs.state_dict()) == list(ours.state_dict())

    t, n = c["steps"], c["batch"]
    x = rng.standard_normal((n, t, c["input_size"]) if c["batch_first"] else
                            (t, n, c["input_size"]))
    state_shape = (c["num_layers"] * (2 if c["bidirectional"] else 1), n, c["hidden_size"])
    lstm = c["kind"] == "LSTM"
    n_states = 2 if lstm else 1
    states = [rng.standard_normal(state_shape) for _ in range(n_states)]
    tx = torch.tensor(x, requires_grad=True)
    tstates = [torch.tensor(s, requires_grad=True) for s in states]
    if c["initial_state"]:
        hx = (states[0], states[1]) if lstm else states[0]
        thx = (tstates[0], tstates[1]) if lstm else tstates[0]
    else:
        hx = thx = None

    out, final = ours(x, hx)
    tout, tfinal = theirs(tx, thx)
    finals = list(final) if lstm else [final]
    tfinals = list(tfinal) if lstm else [tfinal]
    assert_close(out, tout, "output")
    for j, (f, tf) in enumerate(zip(finals, tfinals, strict=True)):
        assert_close(f, tf, f"final state {j}")

    g_out = rng.standard_normal(out.shape)
    g_states = [rng.standard_normal(state_shape) if c["state_grad"] else None
                for _ in range(n_states)]
    loss = (tout * torch.from_numpy(g_out)).sum()
    for tf, g in zip(tfinals, g_states, strict=True):
        if g is not None:
            loss = loss + (tf * torch.from_numpy(g)).sum()
    loss.backward()
    dx = ours.backward(g_out, tuple(g_states) if lstm else g_states[0])

    assert_close(dx, tx.grad, "input gradient")
    if c["initial_state"]:
        grads = list(ours.grad_hx) if lstm else [ours.grad_hx]
        for j, (g, ts) in enumerate(zip(grads, tstates, strict=True)):
            assert_close(g, ts.grad, f"initial state {j} gradient")
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, tparams[name].grad, f"{name} gradient")


CELL_CONFIGS = [(kind, bias, nl) for kind in CELLS for bias in (True, False)
                for nl in (("tanh", "relu") if kind == "RNNCell" else ("tanh",))]


@pytest.mark.parametrize(("kind", "bias", "nonlinearity"), CELL_CONFIGS)
def test_cell_matches_pytorch(kind, bias, nonlinearity):
    rng = np.random.default_rng(11)
    kwargs = {"nonlinearity": nonlinearity} if kind == "RNNCell" else {}
    ours = CELLS[kind](4, 5, bias=bias, dtype=np.float64, rng=rng, **kwargs)
    theirs = getattr(torch.nn, kind)(4, 5, bias=bias, dtype=torch.float64, **kwargs)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((3, 4))
    lstm = kind == "LSTMCell"
    states = [rng.standard_normal((3, 5)) for _ in range(2 if lstm else 1)]
    tx = torch.tensor(x, requires_grad=True)
    tstates = [torch.tensor(s, requires_grad=True) for s in states]
    out = ours(x, tuple(states) if lstm else states[0])
    tout = theirs(tx, tuple(tstates) if lstm else tstates[0])
    outs, touts = (list(out), list(tout)) if lstm else ([out], [tout])
    grads = [rng.standard_normal(o.shape) for o in outs]
    sum((to * torch.from_numpy(g)).sum() for to, g in zip(touts, grads, strict=True)).backward()
    for o, to in zip(outs, touts, strict=True):
        assert_close(o, to, "output")
    dx = ours.backward(tuple(grads) if lstm else grads[0])
    dstates = ours.grad_hx if lstm else (ours.grad_hx,)
    assert_close(dx, tx.grad, "input gradient")
    for g, ts in zip(dstates, tstates, strict=True):
        assert_close(g, ts.grad, "state gradient")
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, tparams[name].grad, f"{name} gradient")


def test_pytorch_weights_load_unchanged():
    """A state dict from torch.nn.LSTM loads strictly and gives torch's output."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    ours = LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    assert_close(ours(x)[0], theirs(torch.from_numpy(x))[0], "output")
