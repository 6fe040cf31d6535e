"""vgg11(batch_norm=True) and vgg16(batch_norm=True) are torchvision's vgg11_bn and vgg16_bn:
parameter counts, state-dict keys and shapes (written out from torchvision's documented
layout, since torchvision is not a dependency), and the same outputs as the network built
in plain torch.nn with the weights loaded by state dict."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import models
from tinycnn.models.vgg import CONFIGS

try:
    import torch
except ImportError:  # the comparison with torch.nn skips, saying why
    torch = None

COUNTS = {"vgg11": 132_868_840, "vgg16": 138_365_992}  # torchvision's vgg11_bn, vgg16_bn
CONFIG = {"vgg11": "A", "vgg16": "D"}


def torchvision_bn_keys(config: list[int | str]) -> dict[str, tuple[int, ...]]:
    """torchvision's ``vgg*_bn`` state dict: ``features`` holds Conv2d (with bias),
    BatchNorm2d, ReLU per width and a MaxPool2d per "M"; ``classifier`` indices 0, 3, 6."""
    keys: dict[str, tuple[int, ...]] = {}
    i, c = 0, 3
    for item in config:
        if item == "M":
            i += 1
            continue
        keys[f"features.{i}.weight"] = (item, c, 3, 3)
        keys[f"features.{i}.bias"] = (item,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"features.{i + 1}.{name}"] = (item,)
        keys[f"features.{i + 1}.num_batches_tracked"] = ()
        i, c = i + 3, item
    for j, (n_in, n_out) in zip((0, 3, 6), ((512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)),
                                strict=True):
        keys[f"classifier.{j}.weight"] = (n_out, n_in)
        keys[f"classifier.{j}.bias"] = (n_out,)
    return keys


@pytest.mark.parametrize("name", ["vgg11", "vgg16"])
def test_bn_variant_is_torchvisions(name):
    net = getattr(models, name)(batch_norm=True, seed=0)
    assert net.num_parameters() == COUNTS[name]
    state = net.state_dict()
    want = torchvision_bn_keys(CONFIGS[CONFIG[name]])
    assert list(state) == list(want)  # same names, same order
    assert {k: tuple(np.shape(v)) for k, v in state.items()} == want


def test_vgg11_cifar_keeps_its_bias_free_convolutions():
    """Existing vgg11_cifar checkpoints still load: no conv bias in front of its BatchNorms."""
    keys = models.vgg11_cifar(seed=0).state_dict()
    assert "features.0.weight" in keys and "features.0.bias" not in keys


def _torch_vgg_bn(config: list[int | str]) -> torch.nn.Module:
    nn = torch.nn
    layers: list[nn.Module] = []
    c = 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers += [nn.Conv2d(c, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
        c = item
    net = nn.Sequential()
    net.add_module("features", nn.Sequential(*layers))
    net.add_module("avgpool", nn.AdaptiveAvgPool2d(7))
    net.add_module("flatten", nn.Flatten())
    net.add_module("classifier", nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Dropout(), nn.Linear(4096, 1000)))
    return net


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_vgg11_bn_state_dict_loads_both_ways_and_agrees_with_torch():
    ours = models.vgg11(batch_norm=True, seed=0).astype(np.float64).eval()
    rng = np.random.default_rng(1)
    for name, buf in ours.named_buffers():  # statistics that are not the identity
        if name.endswith("running_mean"):
            buf[...] = rng.standard_normal(buf.shape) * 0.1
        elif name.endswith("running_var"):
            buf[...] = rng.uniform(0.5, 2.0, buf.shape)
    theirs = _torch_vgg_bn(CONFIGS["A"]).double().eval()
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v))
                            for k, v in ours.state_dict().items()})  # strict
    x = rng.standard_normal((1, 3, 32, 32))
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(x), want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    back = models.vgg11(batch_norm=True, seed=5)
    back.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})  # strict
    np.testing.assert_array_equal(back.state_dict()["features.0.bias"],
                                  ours.state_dict()["features.0.bias"].astype(np.float32))
