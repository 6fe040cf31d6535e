"""Module and Parameter: registration, traversal, modes, freezing, dtypes, devices, state."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tinycnn import backend
from tinycnn.backend import DeviceError
from tinycnn.layers import Affine, BatchNorm1D, Dropout, ReLU
from tinycnn.module import BackwardBeforeForwardError, Module, Parameter, StateDictError


class Block(Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = Affine(3, 4, rng=np.random.default_rng(0))
        self.bn = BatchNorm1D(4)
        self.act = ReLU()
        self.scale = Parameter(np.ones(4, np.float32))


class Net(Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = Block()
        self.drop = Dropout(0.5, seed=0)
        self.head = Affine(4, 2, rng=np.random.default_rng(1))
        self.register_buffer("steps", np.array(0, np.int64))


def test_registration_of_parameters_buffers_and_children():
    net = Net()
    assert list(dict(net.named_children())) == ["first", "drop", "head"]
    assert set(net.first._parameters) == {"scale"}
    assert set(net._buffers) == {"steps"}
    # replacing a registered attribute by a plain value unregisters it
    net.first.scale = None
    assert "scale" not in net.first._parameters
    net.head = ReLU()
    assert "head.weight" not in dict(net.named_parameters())


def test_assigning_before_super_init_is_a_clear_error():
    class Broken(Module):
        def __init__(self) -> None:
            self.w = Parameter(np.zeros(2))

    with pytest.raises(RuntimeError, match=r"Broken.__init__ must call super\(\).__init__\(\)"):
        Broken()


def test_named_parameters_order_and_state_dict_keys_follow_pytorch():
    net = Net()
    assert [name for name, _ in net.named_parameters()] == [
        "first.scale",
        "first.fc.weight",
        "first.fc.bias",
        "first.bn.weight",
        "first.bn.bias",
        "head.weight",
        "head.bias",
    ]
    # module by module, parameters before buffers, as torch.nn.Module.state_dict()
    assert list(net.state_dict()) == [
        "steps",
        "first.scale",
        "first.fc.weight",
        "first.fc.bias",
        "first.bn.weight",
        "first.bn.bias",
        "first.bn.running_mean",
        "first.bn.running_var",
        "first.bn.num_batches_tracked",
        "head.weight",
        "head.bias",
    ]
    assert net.num_parameters() == 4 + 12 + 4 + 4 + 4 + 8 + 2


def test_shared_parameter_is_listed_once_but_saved_under_both_names():
    net = Net()
    net.head.weight = Parameter(np.ones((2, 4), np.float32))
    net.first.fc2 = Affine(4, 2)
    net.first.fc2.weight = net.head.weight
    names = [name for name, _ in net.named_parameters()]
    assert "head.weight" not in names and names.count("first.fc2.weight") == 1
    assert len(net.parameters()) == len(names) == len({id(p) for p in net.parameters()})
    state = net.state_dict()
    assert "head.weight" in state and "first.fc2.weight" in state
    state["head.weight"] = np.full((2, 4), 7.0)
    state["first.fc2.weight"] = np.full((2, 4), 7.0)
    net.load_state_dict(state)  # strict round trip of a tied model
    assert net.head.weight is net.first.fc2.weight
    np.testing.assert_array_equal(net.head.weight.data, 7.0)


def test_train_and_eval_recurse():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.first.train()
    assert net.first.bn.training and not net.drop.training and not net.training
    assert net.train() is net
    assert all(m.training for m in net.modules())


def test_freeze_unfreeze_and_trainable_count():
    net = Net()
    total = net.num_parameters()
    net.first.freeze()
    assert not any(p.requires_grad for p in net.first.parameters())
    assert net.head.weight.requires_grad
    assert net.num_parameters(trainable_only=True) == total - net.first.num_parameters()
    x = np.ones((3, 3), np.float32)
    net.first.fc(x)
    net.first.fc.backward(np.ones((3, 4), np.float32))
    assert net.first.fc.weight.grad is None  # frozen parameters collect nothing
    net.unfreeze()
    assert net.num_parameters(trainable_only=True) == total


def test_zero_grad_and_accumulate():
    p = Parameter(np.zeros(3))
    p.accumulate(np.ones(3))
    p.accumulate(np.ones(3))
    np.testing.assert_array_equal(p.grad, 2.0)
    layer = Affine(3, 2)
    layer.weight.grad = np.ones((2, 3), np.float32)
    layer.zero_grad()
    assert layer.weight.grad is None


def test_astype_casts_floats_keeps_integers_and_clears_caches():
    net = Net()
    net.first.fc(np.ones((2, 3), np.float32))
    net.first.fc.weight.grad = np.ones((4, 3), np.float32)
    assert net.astype(np.float64) is net
    for _, p in net.named_parameters():
        assert p.dtype == np.float64 and p.grad is None
    assert net.first.bn.running_var.dtype == np.float64
    assert net.first.bn.num_batches_tracked.dtype == np.int64
    assert net.steps.dtype == np.int64
    assert net.first.fc.x is None  # the float32 cache is gone
    with pytest.raises(BackwardBeforeForwardError, match="Affine.backward"):
        net.first.fc.backward(np.ones((2, 4)))


def test_to_cpu_keeps_numpy_arrays():
    net = Net()
    assert net.to("cpu") is net and net.to("CPU") is net
    assert net.device == "cpu"
    assert all(type(p.data) is np.ndarray for p in net.parameters())
    assert all(type(b) is np.ndarray for _, b in net.named_buffers())
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        net.to("tpu")


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present; this tests its absence")
@pytest.mark.parametrize("module", [Net(), ReLU()], ids=["with-arrays", "no-arrays"])
def test_to_gpu_without_a_gpu_is_a_clear_error_and_moves_nothing(module):
    with pytest.raises(DeviceError, match=r"CuPy|CUDA"):
        module.to("gpu")
    assert module.device == "cpu"
    assert all(type(p.data) is np.ndarray for p in module.parameters())


def test_load_state_dict_lists_every_problem_and_loads_nothing():
    net = Net()
    before = net.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    del state["head.bias"]
    state["first.fc.weight"] = np.zeros((5, 3))
    state["extra.weight"] = np.zeros(2)
    with pytest.raises(RuntimeError) as info:  # PyTorch's exception type
        net.load_state_dict(state)
    assert isinstance(info.value, KeyError) and isinstance(info.value, StateDictError)
    message = str(info.value)
    assert message.startswith("load_state_dict into Net failed")  # not quoted like KeyError
    assert "nothing was loaded" in message
    assert "unexpected keys: ['extra.weight']" in message
    assert "missing keys: ['head.bias']" in message
    assert "first.fc.weight: model has (4, 3), got (5, 3)" in message
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_strict_keeps_dtype_and_copies():
    net = Net()
    state = {k: np.asarray(v, dtype=np.float64) + 1 for k, v in net.state_dict().items()}
    del state["head.bias"]
    state["not.ours"] = np.zeros(1)
    net.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(net.head.bias.data, 0.0)  # missing: left alone
    assert net.first.fc.weight.dtype == np.float32
    assert net.first.bn.num_batches_tracked.dtype == np.int64
    assert int(net.first.bn.num_batches_tracked) == 1
    state["first.fc.bias"][...] = 100.0
    assert not np.any(net.first.fc.bias.data == 100.0)  # loaded arrays are copies
    with pytest.raises(KeyError, match="shape mismatches"):
        net.load_state_dict({"head.bias": np.zeros(3)}, strict=False)


def test_save_and_load_round_trip(tmp_path):
    a, b = Net(), Net()
    a.first.bn(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    a.head.weight.data[...] = 3.0
    path = tmp_path / "sub" / "net.npz"
    a.save(path)
    assert b.load(path) is b
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    assert [f for f in os.listdir(path.parent) if f.startswith(".tmp-")] == []


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "net.npz"
    Net().save(path)
    original = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        Net().save(path)
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["net.npz"]


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"head.bias": np.array([object(), object()], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        Net().load(path, strict=False)


def test_base_module_errors_and_repr():
    m = Module()
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        m(np.ones(2))
    with pytest.raises(NotImplementedError, match="backward"):
        m.backward(np.ones(2))
    text = repr(Net())
    assert "(first): Block(" in text and "(fc): Affine(3, 4, bias=True)" in text
    assert repr(Parameter(np.zeros((2, 3)), requires_grad=False)) == (
        "Parameter(shape=(2, 3), dtype=float64, requires_grad=False)"
    )


@pytest.mark.parametrize("bad, message", [
    (np.array(["a", "b"]), "got dtype <U1"),
    (np.array([1 + 2j, 3j]), "got dtype complex128"),
    (np.array([object(), object()], dtype=object), "got dtype object"),
    ([[1.0, 2.0], [3.0]], "expected an array of numbers, got list"),
])
def test_load_state_dict_checks_every_value_before_writing_any(bad, message):
    """A value that cannot be cast used to raise after earlier keys had been written,
    while the message said nothing was loaded."""
    net = Net()
    before = net.state_dict()
    state = {k: np.full_like(v, 7) for k, v in before.items()}
    state["head.bias"] = bad  # the last key: every other one would be written first
    with pytest.raises(StateDictError, match=rf"nothing was loaded.*head\.bias: .*{message}"):
        net.load_state_dict(state)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_integer_buffers_take_whole_numbers_only():
    net = Net()
    state = net.state_dict()
    state["first.bn.num_batches_tracked"] = np.array(2.5)
    with pytest.raises(StateDictError, match="num_batches_tracked: expected whole numbers"):
        net.load_state_dict(state)
    state["first.bn.num_batches_tracked"] = np.array(3.0)
    net.load_state_dict(state)
    assert int(net.first.bn.num_batches_tracked) == 3


def test_load_state_dict_takes_nan_and_inf_as_values():
    net = Net()
    state = net.state_dict()
    state["head.bias"] = np.array([np.nan, np.inf])
    state["head.weight"] = np.full((2, 4), 1e300)  # inf in the model's float32
    net.load_state_dict(state)
    assert np.isnan(net.head.bias.data[0]) and np.all(np.isinf(net.head.weight.data))
