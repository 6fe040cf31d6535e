"""Optimizers: several steps against ``torch.optim`` from identical parameters and gradients,
weight decay, Nesterov, clipping, frozen parameters, dtypes, in-place updates and
state-dict round trips (through an ``.npz`` file without pickle)."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import backend, optim
from tinycnn.layers import Affine
from tinycnn.module import Parameter
from tinycnn.optim import SGD, AdaGrad, Adam, AdamW, Momentum, RMSProp, clip_grad_norm

try:
    import torch
except ImportError:  # torch is an optional extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

SHAPES = [(3, 4), (4,), (2, 1, 3, 3)]

# (ours, kwargs for ours, torch class name, kwargs for torch)
CASES = [
    (SGD, {"lr": 0.1}, "SGD", {"lr": 0.1}),
    (SGD, {"lr": 0.1, "weight_decay": 0.05}, "SGD", {"lr": 0.1, "weight_decay": 0.05}),
    (Momentum, {"lr": 0.05, "momentum": 0.9}, "SGD", {"lr": 0.05, "momentum": 0.9}),
    (Momentum, {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
     "SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01}),
    (Momentum, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
     "SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    (SGD, {"lr": 0.05, "momentum": 0.7, "nesterov": True},
     "SGD", {"lr": 0.05, "momentum": 0.7, "nesterov": True}),
    (AdaGrad, {"lr": 0.1}, "Adagrad", {"lr": 0.1}),
    (AdaGrad, {"lr": 0.1, "weight_decay": 0.1, "initial_accumulator_value": 0.5},
     "Adagrad", {"lr": 0.1, "weight_decay": 0.1, "initial_accumulator_value": 0.5}),
    (RMSProp, {"lr": 0.01}, "RMSprop", {"lr": 0.01}),
    (RMSProp, {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True,
               "weight_decay": 0.02},
     "RMSprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True,
                 "weight_decay": 0.02}),
    (Adam, {"lr": 0.01}, "Adam", {"lr": 0.01}),
    (Adam, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
     "Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    (AdamW, {"lr": 0.01}, "AdamW", {"lr": 0.01}),
    (AdamW, {"lr": 0.01, "weight_decay": 0.3, "betas": (0.85, 0.95)},
     "AdamW", {"lr": 0.01, "weight_decay": 0.3, "betas": (0.85, 0.95)}),
]
IDS = [f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)]


def make_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.normal(size=s).astype(dtype)) for s in SHAPES]


def gradient(step: int, i: int, data: np.ndarray) -> np.ndarray:
    """A gradient that depends on the current value, so diverging trajectories show."""
    rng = np.random.default_rng(1000 * step + i)
    return rng.normal(size=data.shape) + 0.5 * data


def run_ours(opt, params, steps, start=0):
    for t in range(start, start + steps):
        for i, p in enumerate(params):
            p.grad = gradient(t, i, p.data).astype(p.dtype)
        opt.step()
    return [p.data.copy() for p in params]


def run_torch(cls_name, kwargs, steps, clip=None):
    params = [torch.tensor(p.data, requires_grad=True) for p in make_params()]
    opt = getattr(torch.optim, cls_name)(params, **kwargs)
    for t in range(steps):
        opt.zero_grad()
        for i, p in enumerate(params):
            p.grad = torch.tensor(gradient(t, i, p.detach().numpy()))
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    return [p.detach().numpy() for p in params]


@needs_torch
@pytest.mark.parametrize("ours, kw, torch_name, torch_kw", CASES, ids=IDS)
def test_matches_torch_over_several_steps(ours, kw, torch_name, torch_kw):
    params = make_params()
    got = run_ours(ours(params, **kw), params, 6)
    want = run_torch(torch_name, torch_kw, 6)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    assert not np.allclose(got[0], make_params()[0].data)  # the parameters did move


@needs_torch
@pytest.mark.parametrize(
    "ours, kw, torch_name, torch_kw",
    [CASES[3], next(c for c in CASES if c[0] is Adam)],
    ids=["Momentum-nesterov-wd", "Adam"],
)
def test_max_grad_norm_matches_torch_clipping(ours, kw, torch_name, torch_kw):
    params = make_params()
    got = run_ours(ours(params, max_grad_norm=0.5, **kw), params, 4)
    want = run_torch(torch_name, torch_kw, 4, clip=0.5)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_clip_grad_norm_returns_the_norm_before_clipping():
    params = make_params()
    grads = [np.full(p.shape, 2.0) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    held = params[0].grad
    expected = np.sqrt(sum((g**2).sum() for g in grads))
    norm = clip_grad_norm(params, 1.0)
    assert norm == pytest.approx(expected)
    after = np.sqrt(sum((p.grad**2).sum() for p in params))
    assert after == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(held, 2.0)  # scaled into a new array, not in place
    # below the limit nothing changes
    before = [p.grad.copy() for p in params]
    assert clip_grad_norm(params, 10.0) == pytest.approx(after)
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.grad, b)
    with pytest.raises(ValueError, match="max_norm > 0"):
        clip_grad_norm(params, 0.0)


@needs_torch
def test_clip_grad_norm_matches_torch():
    params = make_params()
    tparams = [torch.tensor(p.data, requires_grad=True) for p in params]
    for i, (p, tp) in enumerate(zip(params, tparams, strict=True)):
        p.grad = gradient(0, i, p.data)
        tp.grad = torch.tensor(p.grad)
    norm = clip_grad_norm(params, 1.5)
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, 1.5)
    assert norm == pytest.approx(tnorm.item(), rel=1e-12)
    for p, tp in zip(params, tparams, strict=True):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)


@needs_torch
@pytest.mark.parametrize("bad", [np.inf, np.nan, -np.inf])
def test_clip_grad_norm_non_finite_scales_like_torch(bad):
    """An inf norm zeroes finite gradients and turns inf into NaN, as PyTorch does: inf no
    longer passes through clipping untouched."""
    grads = [np.array([1.0, bad, 0.5]), np.array([[2.0, -3.0]])]
    params = [Parameter(np.zeros(g.shape)) for g in grads]
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, tp, g in zip(params, tparams, grads, strict=True):
        p.grad, tp.grad = g.copy(), torch.tensor(g)
    norm = clip_grad_norm(params, 1.0)
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, 1.0)
    np.testing.assert_equal(norm, tnorm.item())
    for p, tp in zip(params, tparams, strict=True):
        np.testing.assert_array_equal(p.grad, tp.grad.numpy())
    assert not np.isinf(params[0].grad).any()


def test_clip_grad_norm_error_if_nonfinite_names_the_parameter():
    net = Affine(3, 2, rng=np.random.default_rng(0))
    net.weight.grad = np.ones((2, 3), dtype=np.float32)
    net.bias.grad = np.array([1.0, np.nan], dtype=np.float32)
    with pytest.raises(FloatingPointError,
                       match=r"norm is nan \(the gradient of bias.*error_if_nonfinite=False"):
        clip_grad_norm(net, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(net.weight.grad, 1.0)  # nothing changed
    p = Parameter(np.zeros(3))
    p.grad = np.array([1.0, np.inf, 0.0])
    with pytest.raises(FloatingPointError, match="gradient of parameter 0.*lower learning rate"):
        clip_grad_norm([p], 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("dtype, big", [(np.float32, 3e38), (np.float64, 1e300)])
def test_clip_grad_norm_of_huge_finite_gradients_does_not_overflow(dtype, big):
    """Squares of 3e38 are inf in float32: the norm must still be the true, finite one."""
    params = [Parameter(np.zeros(2, dtype=dtype)), Parameter(np.zeros(1, dtype=dtype))]
    params[0].grad = np.array([big, -big], dtype=dtype)
    params[1].grad = np.array([big], dtype=dtype)
    norm = clip_grad_norm(params, 2.0, error_if_nonfinite=True)
    np.testing.assert_allclose(norm, float(dtype(big)) * np.sqrt(3), rtol=1e-6)
    clipped = np.concatenate([p.grad.astype(np.float64) for p in params])
    assert np.all(np.isfinite(clipped))
    np.testing.assert_allclose(np.linalg.norm(clipped), 2.0, rtol=1e-5)
    assert all(p.grad.dtype == dtype for p in params)


@pytest.mark.parametrize("cls", [SGD, Momentum, AdaGrad, RMSProp, Adam, AdamW])
def test_frozen_and_gradless_parameters_are_untouched(cls):
    params = make_params()
    params[0].requires_grad = False
    params[0].grad = np.ones(params[0].shape)  # even with a stale gradient
    params[1].grad = None
    params[2].grad = np.ones(params[2].shape)
    before = [p.data.copy() for p in params]
    opt = cls(params, lr=0.1, weight_decay=0.1)
    opt.step()
    np.testing.assert_array_equal(params[0].data, before[0])
    np.testing.assert_array_equal(params[1].data, before[1])
    assert not np.allclose(params[2].data, before[2])
    assert opt.state[0] == {} and opt.state[1] == {}


@pytest.mark.parametrize("cls", [SGD, Momentum, AdaGrad, RMSProp, Adam, AdamW])
def test_updates_in_place_and_float32_stays_float32(cls):
    params = make_params(np.float32)
    arrays = [p.data for p in params]
    opt = cls(params, lr=0.01, weight_decay=0.01)
    run_ours(opt, params, 2)
    for p, a in zip(params, arrays, strict=True):
        assert p.data is a and p.data.dtype == np.float32
    for state in opt.state:
        for value in state.values():
            if hasattr(value, "dtype"):
                assert value.dtype == np.float32


def test_sgd_formula_and_lr_is_settable():
    p = Parameter(np.array([1.0, -2.0]))
    opt = SGD([p], lr=0.5)
    p.grad = np.array([1.0, 1.0])
    opt.step()
    np.testing.assert_allclose(p.data, [0.5, -2.5])
    opt.lr = 0.1  # what a schedule does
    opt.step()
    np.testing.assert_allclose(p.data, [0.4, -2.6])


def test_adamw_decay_is_decoupled_from_the_gradient():
    """With a zero gradient, AdamW only shrinks the weights; Adam's L2 moves them by ~lr."""
    w = Parameter(np.array([2.0]))
    w.grad = np.array([0.0])
    AdamW([w], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(w.data, [2.0 * (1 - 0.1 * 0.5)])
    v = Parameter(np.array([2.0]))
    v.grad = np.array([0.0])
    Adam([v], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(v.data, [2.0 - 0.1], rtol=1e-6)


def test_takes_a_module_and_zero_grad_clears():
    net = Affine(3, 2, rng=np.random.default_rng(0))
    opt = Momentum(net, lr=0.1)
    assert opt.params == net.parameters()
    for p in net.parameters():
        p.grad = np.ones(p.shape, dtype=p.dtype)
    opt.step()
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(TypeError, match="got an item of type ndarray"):
        SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match=r"SGD: lr must be >= 0 \(a finite number\), got -1\.0"):
        SGD(net, lr=-1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        Momentum(net, lr=0.1, nesterov=True, dampening=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(net, lr=0.1, nesterov=True)


@pytest.mark.parametrize(
    "cls, kw",
    [(Momentum, {"nesterov": True}), (AdaGrad, {}), (RMSProp, {"momentum": 0.5, "centered": True}),
     (Adam, {}), (AdamW, {"max_grad_norm": 1.0})],
)
def test_state_dict_round_trip_continues_identically(tmp_path, cls, kw):
    params = make_params()
    opt = cls(params, lr=0.01, weight_decay=0.01, **kw)
    run_ours(opt, params, 3)
    opt.lr = 0.005  # as after a schedule step: must be restored too
    path = tmp_path / "opt.npz"
    np.savez(path, **opt.state_dict())
    copies = [Parameter(p.data.copy()) for p in params]
    fresh = cls(copies, lr=1.0, **kw)
    with np.load(path, allow_pickle=False) as f:
        fresh.load_state_dict({k: f[k] for k in f.files})
    assert fresh.lr == 0.005 and fresh.weight_decay == 0.01
    got = run_ours(fresh, copies, 3, start=3)
    want = run_ours(opt, params, 3, start=3)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_load_state_dict_errors_load_nothing():
    params = make_params()
    opt = Adam(params, lr=0.01)
    run_ours(opt, params, 1)
    state = opt.state_dict()
    with pytest.raises(ValueError, match="saved by Adam"):
        SGD(make_params(), lr=0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="state is for 3 parameters, this optimizer has 2"):
        Adam(make_params()[:2]).load_state_dict(state)
    other = Adam([Parameter(np.zeros((4, 3))), *make_params()[1:]], lr=0.5)
    with pytest.raises(ValueError, match=r"state\.0\.exp_avg: parameter has \(4, 3\), got"):
        other.load_state_dict(state)
    assert other.lr == 0.5 and other.state == [{}, {}, {}]


def test_module_is_importable_as_tinycnn_optim():
    import tinycnn

    assert tinycnn.optim is optim and tinycnn.Adam is Adam


GPU_CASES = [(cls, {"weight_decay": 0.01, "max_grad_norm": 1.0})
             for cls in (Momentum, RMSProp, Adam, AdamW)] + [
    (cls, {"l1": 0.05}) for cls in (Momentum, Adam)]  # the L1 term's update on the GPU


@pytest.mark.skipif(not backend.gpu_available(), reason="no CUDA GPU visible to CuPy")
@pytest.mark.parametrize(("cls", "kwargs"), GPU_CASES,
                         ids=[f"{c.__name__}-{'-'.join(k)}" for c, k in GPU_CASES])
def test_gpu_matches_cpu_and_keeps_state_on_the_gpu(cls, kwargs):
    cpu = make_params(np.float32)
    gpu = [Parameter(backend.to_device(p.data, "gpu")) for p in cpu]
    opt_cpu = cls(cpu, lr=0.01, **kwargs)
    opt_gpu = cls(gpu, lr=0.01, **kwargs)
    for t in range(3):
        for i, (c, g) in enumerate(zip(cpu, gpu, strict=True)):
            c.grad = gradient(t, i, c.data).astype(np.float32)
            g.grad = backend.to_device(c.grad, "gpu")
        opt_cpu.step()
        opt_gpu.step()
    for c, g in zip(cpu, gpu, strict=True):
        assert backend.is_gpu_array(g.data) and g.data.dtype == np.float32
        np.testing.assert_allclose(backend.to_device(g.data, "cpu"), c.data, rtol=1e-4, atol=1e-5)
    state = opt_gpu.state_dict()
    assert all(not backend.is_gpu_array(v) for v in state.values())
    opt_gpu.load_state_dict(state)
    assert all(backend.is_gpu_array(v) for s in opt_gpu.state for v in s.values()
               if hasattr(v, "shape"))


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [0.1, 123.4, 1e-3, 3.3])
def test_centered_rmsprop_stays_finite_and_matches_torch_on_a_constant_gradient(dtype, value):
    """alpha m + (1 - alpha) g let m^2 exceed v by a rounding error after ~1,200 steps of a
    constant gradient: sqrt of a negative, NaN. PyTorch (lerp) stays finite, and so must we."""
    p = Parameter(np.zeros(4, dtype=dtype))
    opt = RMSProp([p], lr=1e-3, centered=True, momentum=0.5)
    tp = torch.zeros(4, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    topt = torch.optim.RMSprop([tp], lr=1e-3, centered=True, momentum=0.5)
    g = np.full(4, value, dtype=dtype)
    for step in range(2000):
        p.grad = g
        tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
        if step == 300 or dtype == np.float64:
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-4)
    # Later, sqrt(v - m^2) is a difference of rounding errors in float32: both stay
    # finite, but their last bits (summation order) no longer agree.
    assert np.all(np.isfinite(p.data))


def test_rmsprop_centered_denominator_is_clamped_at_zero():
    """A state where rounding left v below m^2: the step is lr * g / eps-sized, never NaN."""
    p = Parameter(np.zeros(1))
    opt = RMSProp([p], lr=1e-3, centered=True)
    p.grad = np.array([1.0])
    opt.step()
    opt.state[0]["square_avg"][:] = 0.0  # below grad_avg^2
    opt.step()
    assert np.all(np.isfinite(p.data))


BAD_HYPER = [
    (SGD, {"lr": -5}, r"SGD: lr must be >= 0 \(a finite number\), got -5"),
    (SGD, {"lr": float("nan")}, r"lr must be >= 0 \(a finite number\), got nan"),
    (SGD, {"lr": "0.1"}, r"lr must be a number, got '0\.1'"),
    (SGD, {"momentum": -0.1}, r"momentum must be >= 0 \(a finite number\), got -0\.1"),
    (SGD, {"weight_decay": -1e-4}, r"weight_decay must be >= 0 \(a finite number\)"),
    (SGD, {"nesterov": "yes"}, r"nesterov must be True or False, got 'yes'"),
    (SGD, {"max_grad_norm": 0}, r"max_grad_norm must be > 0 \(a finite number\) or None, got 0"),
    (Adam, {"betas": (2, 7)}, r"Adam: betas\[0\] must be in \[0, 1\), got 2"),
    (Adam, {"betas": (0.9, 1.0)}, r"betas\[1\] must be in \[0, 1\), got 1\.0"),
    (Adam, {"betas": 0.9}, r"betas must be a pair \(beta1, beta2\), got 0\.9"),
    (AdamW, {"eps": -1e-8}, r"AdamW: eps must be >= 0 \(a finite number\)"),
    (AdaGrad, {"initial_accumulator_value": -1},
     r"initial_accumulator_value must be >= 0 \(a finite number\), got -1"),
    (RMSProp, {"alpha": 1.0}, r"RMSProp: alpha must be in \[0, 1\), got 1\.0"),
    (RMSProp, {"momentum": -1}, r"momentum must be >= 0 \(a finite number\)"),
]


@pytest.mark.parametrize("cls, kw, message", BAD_HYPER)
def test_constructors_check_every_hyper_parameter(cls, kw, message):
    with pytest.raises(ValueError, match=message):
        cls(make_params(), **{"lr": 0.1, **kw})


@pytest.mark.parametrize("cls, kw, message", BAD_HYPER)
def test_load_state_dict_checks_hyper_parameters_like_the_constructor(cls, kw, message):
    """A state with lr=-5 or betas=(2, 7) used to load; the same rule now refuses it, and
    the optimizer is left as it was."""
    params = make_params()
    opt = cls(params, lr=0.1)
    run_ours(opt, params, 1)
    state = opt.state_dict()
    state.update({k: np.asarray(v) for k, v in kw.items()})
    before = opt.state_dict()
    with pytest.raises(ValueError, match=message.replace(f"{cls.__name__}: ", "")):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


def test_load_state_dict_refuses_nesterov_without_momentum():
    opt = SGD(make_params(), lr=0.1, momentum=0.9, nesterov=True)
    state = opt.state_dict()
    state["momentum"] = np.asarray(0.0)
    with pytest.raises(ValueError, match=r"SGD.load_state_dict: Nesterov.*got momentum=0\.0"):
        opt.load_state_dict(state)
    assert opt.momentum == 0.9


def test_load_state_dict_refuses_text_state():
    params = make_params()
    opt = Adam(params, lr=0.1)
    run_ours(opt, params, 1)
    state = opt.state_dict()
    state["state.1.exp_avg"] = np.array(["a"] * 4)
    with pytest.raises(ValueError, match=r"state\.1\.exp_avg: expected numbers, got dtype <U1"):
        opt.load_state_dict(state)


@pytest.mark.parametrize("cls, kw, drop", [
    (Adam, {}, "state.1.exp_avg_sq"),
    (RMSProp, {"centered": True}, "state.0.grad_avg"),
    (AdaGrad, {}, "state.2.sum"),
])
def test_load_state_dict_refuses_a_parameter_with_part_of_its_state(cls, kw, drop):
    """Loaded, such a state would fail with a KeyError at the next step, mid-training."""
    params = make_params()
    opt = cls(params, lr=0.1, **kw)
    run_ours(opt, params, 1)
    state = opt.state_dict()
    del state[drop]
    index, field = drop.split(".")[1:]
    fresh = cls(make_params(), lr=0.1, **kw)
    with pytest.raises(ValueError, match=rf"state\.{index}: lacks \['{field}'\]"):
        fresh.load_state_dict(state)
    assert fresh.state == [{}, {}, {}]
