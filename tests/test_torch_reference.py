"""tinycnn against PyTorch in float64: outputs, input gradients and parameter gradients.

Weights go across through ``state_dict()`` -> torch ``load_state_dict``, so these tests also
check that names and layouts are PyTorch's. Everything must agree to 1e-6 relative.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed; the reference tests against it need it"
)
F = torch.nn.functional

from conftest import engine  # noqa: E402

from tinycnn.layers import (  # noqa: E402
    Affine,
    AvgPool2D,
    Conv2D,
    GlobalAvgPool2D,
    MaxPool2D,
)
from tinycnn.layers.norm import BatchNorm1D, BatchNorm2D  # noqa: E402
from tinycnn.losses import SoftmaxCrossEntropy  # noqa: E402

TOL = 1e-6


def assert_close(ours, theirs, what: str) -> None:
    """Relative error ``max|a - b| / max|b|`` (absolute when ``b`` is all zeros) under TOL."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    scale = float(np.abs(theirs).max(initial=0.0))
    err = float(np.abs(ours - theirs).max(initial=0.0)) / (scale if scale > 0.0 else 1.0)
    assert err <= TOL, f"{what}: relative error {err:.2e} against PyTorch exceeds {TOL:.0e}"


def load_into_torch(ours, theirs) -> None:
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state, strict=True)


def randomize(layer, rng: np.random.Generator):
    """Random (non-default) parameters, so a swapped weight/bias cannot pass."""
    for p in layer.parameters():
        p.data = rng.standard_normal(p.shape)
    return layer


def compare(ours, theirs, x: np.ndarray, rng: np.random.Generator) -> None:
    """Forward, then backward of sum(y * g) with a random g: y, dL/dx and every parameter."""
    load_into_torch(ours, theirs)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    y_t = theirs(xt)
    y = ours(x)
    assert_close(y, y_t, "output")
    g = rng.standard_normal(y.shape)
    (y_t * torch.from_numpy(g)).sum().backward()
    ours.zero_grad()
    dx = ours.backward(g)
    assert_close(dx, xt.grad, "input gradient")
    torch_params = dict(theirs.named_parameters())
    ours_params = dict(ours.named_parameters())
    assert ours_params.keys() == torch_params.keys()
    for name, p in ours_params.items():
        assert_close(p.grad, torch_params[name].grad, f"gradient of {name}")


def tie_free(shape, rng):
    return (rng.permutation(int(np.prod(shape))) * 0.1 - 2.0).reshape(shape)


CONV_CONFIGS = [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=3, out_channels=5, kernel_size=5, stride=2, padding=2),
    dict(in_channels=2, out_channels=3, kernel_size=(2, 3), stride=(2, 1), padding=(1, 0)),
    dict(in_channels=2, out_channels=4, kernel_size=3, dilation=2, padding=2, stride=2),
    dict(in_channels=2, out_channels=3, kernel_size=(3, 2), dilation=(1, 2), padding=(0, 1)),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="same"),
    dict(in_channels=2, out_channels=3, kernel_size=4, padding="same"),
    dict(in_channels=2, out_channels=3, kernel_size=(2, 3), dilation=(3, 2), padding="same"),
    dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, padding=1),
    dict(in_channels=3, out_channels=6, kernel_size=3, groups=3, stride=2, padding=1),
    dict(in_channels=4, out_channels=5, kernel_size=1),
    dict(in_channels=4, out_channels=6, kernel_size=1, groups=2, stride=2),
    dict(in_channels=3, out_channels=2, kernel_size=3, padding="valid", bias=False),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("args", CONV_CONFIGS, ids=lambda a: repr(Conv2D(**a)))
def test_conv2d(kernel_set, args):
    rng = np.random.default_rng(0)
    ours = randomize(Conv2D(**args, dtype=np.float64), rng)
    theirs = torch.nn.Conv2d(**args, dtype=torch.float64)
    x = rng.standard_normal((2, args["in_channels"], 9, 8))
    with engine(kernel_set, ours):
        compare(ours, theirs, x, rng)


@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding"),
    [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1)), (3, 1, 0), (2, 2, 1)],
)
def test_max_pool(kernel_set, kernel_size, stride, padding):
    rng = np.random.default_rng(1)
    x = tie_free((2, 3, 7, 8), rng)
    ours = MaxPool2D(kernel_size, stride, padding)
    with engine(kernel_set, ours):
        compare(ours, torch.nn.MaxPool2d(kernel_size, stride, padding), x, rng)


def test_max_pool_ties_route_like_torch(kernel_set):
    rng = np.random.default_rng(2)
    x = np.round(rng.standard_normal((2, 2, 6, 6)), 0)  # integers: many ties
    ours = MaxPool2D(3, 1, 1)
    with engine(kernel_set, ours):
        compare(ours, torch.nn.MaxPool2d(3, 1, 1), x, rng)


@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding"),
    [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1)), (3, 1, 1)],
)
def test_avg_pool(kernel_set, kernel_size, stride, padding):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 8))
    theirs = torch.nn.AvgPool2d(kernel_size, stride, padding, count_include_pad=True)
    ours = AvgPool2D(kernel_size, stride, padding)
    with engine(kernel_set, ours):
        compare(ours, theirs, x, rng)


def test_global_avg_pool():
    rng = np.random.default_rng(4)
    theirs = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(1))
    compare(GlobalAvgPool2D(), theirs, rng.standard_normal((3, 4, 5, 6)), rng)


def test_affine():
    rng = np.random.default_rng(5)
    ours = randomize(Affine(7, 4, dtype=np.float64), rng)
    compare(ours, torch.nn.Linear(7, 4, dtype=torch.float64), rng.standard_normal((5, 7)), rng)


BN_CASES = [
    pytest.param(BatchNorm1D, torch.nn.BatchNorm1d, (8, 3), id="BatchNorm1D-NC"),
    pytest.param(BatchNorm1D, torch.nn.BatchNorm1d, (4, 3, 5), id="BatchNorm1D-NCL"),
    pytest.param(BatchNorm2D, torch.nn.BatchNorm2d, (4, 3, 5, 6), id="BatchNorm2D"),
]


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), BN_CASES)
@pytest.mark.parametrize("momentum", [0.1, 0.35, None])
def test_batchnorm_train_mode(ours_cls, torch_cls, shape, momentum):
    rng = np.random.default_rng(6)
    ours = randomize(ours_cls(3, eps=1e-4, momentum=momentum, dtype=np.float64), rng)
    ours._set_buffer("running_mean", rng.standard_normal(3))
    ours._set_buffer("running_var", rng.uniform(0.5, 2.0, 3))
    theirs = torch_cls(3, eps=1e-4, momentum=momentum, dtype=torch.float64)
    ours.train()
    theirs.train()
    x = rng.standard_normal(shape) * 3.0 + 1.5
    compare(ours, theirs, x, rng)
    for _ in range(2):  # more steps: the running statistics keep following torch's
        x = rng.standard_normal(shape) * 2.0 - 0.5
        ours(x)
        theirs(torch.from_numpy(x))
    assert_close(ours.running_mean, theirs.running_mean, "running_mean")
    assert_close(ours.running_var, theirs.running_var, "running_var")
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), BN_CASES)
def test_batchnorm_eval_mode(ours_cls, torch_cls, shape):
    rng = np.random.default_rng(7)
    ours = randomize(ours_cls(3, dtype=np.float64), rng)
    ours._set_buffer("running_mean", rng.standard_normal(3))
    ours._set_buffer("running_var", rng.uniform(0.5, 2.0, 3))
    theirs = torch_cls(3, dtype=torch.float64)
    ours.eval()
    theirs.eval()
    compare(ours, theirs, rng.standard_normal(shape), rng)
    assert_close(ours.running_mean, theirs.running_mean, "running_mean (unchanged in eval)")


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("target_kind", ["labels", "soft"])
@pytest.mark.parametrize("upstream", [1.0, 2.5])
def test_softmax_cross_entropy(smoothing, target_kind, upstream):
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((6, 5)) * 3.0
    if target_kind == "labels":
        target = rng.integers(0, 5, size=6)
    else:
        target = rng.dirichlet(np.ones(5), size=6)
    loss_fn = SoftmaxCrossEntropy(label_smoothing=smoothing)
    loss = loss_fn(logits, target)
    lt = torch.from_numpy(logits.copy()).requires_grad_(True)
    loss_t = F.cross_entropy(lt, torch.from_numpy(target), label_smoothing=smoothing)
    (loss_t * upstream).backward()
    assert np.ndim(loss) == 0
    assert_close(float(loss), loss_t, "mean loss")
    assert_close(loss_fn.backward(upstream), lt.grad, "logits gradient")
