"""AlexNet as in the paper: its layer list (two towers as groups=2, LRN, overlapping pools,
dropout after FC1/FC2), the parameter count stated in its docstring, the paper's
initialization, and the same outputs and gradients as the network written in torch.nn."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import models
from tinycnn.layers import Conv2D, Dropout, LocalResponseNorm, MaxPool2D, ReLU

try:
    import torch
except ImportError:  # the comparisons with torch.nn skip, saying why
    torch = None

# (in, out, kernel, stride, padding, groups) of the paper's five convolutions
PAPER_CONVS = [(3, 96, 11, 4, 2, 1), (96, 256, 5, 1, 2, 2), (256, 384, 3, 1, 1, 1),
               (384, 384, 3, 1, 1, 2), (384, 256, 3, 1, 1, 2)]
PAPER_FCS = [(256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)]


def _count(convs, fcs) -> int:
    return (sum(o * (i // g) * k * k + o for i, o, k, _, _, g in convs)
            + sum(i * o + o for i, o in fcs))


def test_parameter_count_is_the_one_stated():
    model = models.alexnet_paper(seed=0)
    assert model.num_parameters() == _count(PAPER_CONVS, PAPER_FCS) == 60_965_224
    assert "60,965,224" in models.alexnet_paper.__doc__
    cifar = models.alexnet_paper_cifar(seed=0)
    assert cifar.num_parameters() == 1_329_802
    assert "1,329,802" in models.alexnet_paper_cifar.__doc__


def test_layer_list_is_the_papers():
    model = models.alexnet_paper(seed=0)
    convs = [m for m in model.features if isinstance(m, Conv2D)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0],
             c.groups) for c in convs] == PAPER_CONVS
    # filters of layers 2, 4, 5 see one tower's channels: 5x5x48, 3x3x192, 3x3x192
    assert [c.weight.shape[1] for c in convs] == [3, 48, 256, 192, 192]
    kinds = [type(m).__name__ for m in model.features]
    assert kinds[:8] == ["Conv2D", "ReLU", "LocalResponseNorm", "MaxPool2D"] * 2
    assert kinds.count("LocalResponseNorm") == 2
    lrn = model.features[2]
    assert (lrn.size, lrn.alpha / lrn.size, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    pools = [m for m in model.features if isinstance(m, MaxPool2D)]
    assert all(p.kernel_size == (3, 3) and p.stride == (2, 2) for p in pools)  # overlapping
    head = [type(m).__name__ for m in model.classifier]
    assert head == ["Affine", "ReLU", "Dropout", "Affine", "ReLU", "Dropout", "Affine"]
    assert all(m.p == 0.5 for m in model.classifier if isinstance(m, Dropout))
    assert model(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 1000)


def test_paper_initialization():
    model = models.alexnet_paper(paper_init=True, seed=0)
    state = model.state_dict()
    for name in ("features.0", "features.8"):
        assert np.all(state[f"{name}.bias"] == 0)
    for name in ("features.4", "features.10", "features.12", "classifier.0", "classifier.3"):
        assert np.all(state[f"{name}.bias"] == 1)
    assert np.all(state["classifier.6.bias"] == 0)
    assert state["classifier.0.weight"].std() == pytest.approx(0.01, rel=0.01)


def _torch_twin(convs, fcs, pools_after=(0, 1, 4), lrn_after=(0, 1)):
    nn = torch.nn
    layers = []
    for j, (i, o, k, s, p, g) in enumerate(convs):
        layers += [nn.Conv2d(i, o, k, s, p, groups=g), nn.ReLU()]
        if j in lrn_after:
            layers.append(nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0))
        if j in pools_after:
            layers.append(nn.MaxPool2d(3, 2))
    head = []
    for j, (i, o) in enumerate(fcs):
        head.append(nn.Linear(i, o))
        if j < len(fcs) - 1:
            head += [nn.ReLU(), nn.Dropout(0.0)]
    net = nn.Sequential()
    net.add_module("features", nn.Sequential(*layers))
    net.add_module("flatten", nn.Flatten())
    net.add_module("classifier", nn.Sequential(*head))
    return net


def _compare(ours, theirs, x, grads: bool) -> None:
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v))
                            for k, v in ours.state_dict().items()})  # strict
    xt = torch.from_numpy(x).requires_grad_(True)
    want = theirs(xt)
    y = ours(x)
    np.testing.assert_allclose(y, want.detach().numpy(), rtol=1e-6,
                               atol=1e-9 * float(want.detach().abs().max()))
    if not grads:
        return
    g = np.random.default_rng(3).standard_normal(y.shape)
    want.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-6,
                               atol=1e-9 * float(xt.grad.abs().max()))
    ref = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, ref[name].grad.numpy(), rtol=1e-6,
                                   atol=1e-9 * float(ref[name].grad.abs().max()), err_msg=name)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_paper_model_matches_torch_nn():
    ours = models.alexnet_paper(seed=0).astype(np.float64).eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224))
    _compare(ours, _torch_twin(PAPER_CONVS, PAPER_FCS).double().eval(), x, grads=False)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_cifar_variant_matches_torch_nn_with_gradients():
    convs = [(3, 64, 5, 1, 2, 1), (64, 128, 5, 1, 2, 2), (128, 192, 3, 1, 1, 1),
             (192, 192, 3, 1, 1, 2), (192, 128, 3, 1, 1, 2)]
    fcs = [(128 * 3 * 3, 512), (512, 256), (256, 10)]
    ours = models.alexnet_paper_cifar(dropout=0.0, seed=0).astype(np.float64)
    assert ours.num_parameters() == _count(convs, fcs)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
    _compare(ours, _torch_twin(convs, fcs).double(), x, grads=True)


def test_relu_precedes_each_lrn():
    feats = list(models.alexnet_paper_cifar(seed=0).features)
    for i, m in enumerate(feats):
        if isinstance(m, LocalResponseNorm):
            assert isinstance(feats[i - 1], ReLU) and isinstance(feats[i + 1], MaxPool2D)
