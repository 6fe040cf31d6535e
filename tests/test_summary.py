"""``tinycnn.summary``: rows per leaf layer, totals, MACs, eval mode during the pass, and
clean restoration of the model (modes, forward wrappers) even when the pass fails."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import summary
from tinycnn.containers import Residual, Sequential
from tinycnn.layers import Affine, BatchNorm2D, Conv2D, Dropout, Flatten, MaxPool2D, ReLU
from tinycnn.module import LayerInputError


def affine_net() -> Sequential:
    rng = np.random.default_rng(0)
    return Sequential(Affine(4, 8, rng=rng), ReLU(), Affine(8, 3, rng=rng))


def conv_net() -> Sequential:
    rng = np.random.default_rng(1)
    return Sequential(
        Conv2D(1, 4, 3, padding=1, rng=rng),
        BatchNorm2D(4),
        ReLU(),
        Residual(Sequential(Conv2D(4, 4, 3, padding=1, bias=False, rng=rng), BatchNorm2D(4)),
                 post=ReLU()),
        MaxPool2D(2),
        Flatten(),
        Dropout(0.5, seed=0),
        Affine(4 * 3 * 3, 10, rng=rng),
    )


def test_affine_only_net_macs_params_and_rows():
    lines = []
    info = summary(affine_net(), (4,), batch_size=2, print_fn=lines.append)
    assert info["macs"] == 2 * 4 * 8 + 2 * 8 * 3
    assert info["params"] == info["trainable_params"] == (4 * 8 + 8) + (8 * 3 + 3)
    assert info["output_shape"] == (2, 3)
    assert [(r["name"], r["type"], r["output_shape"]) for r in info["layers"]] == [
        ("0", "Affine", (2, 8)), ("1", "ReLU", (2, 8)), ("2", "Affine", (2, 3))]
    assert [r["params"] for r in info["layers"]] == [40, 0, 27]
    text = "\n".join(lines)
    assert "Affine" in text and "(2, 8)" in text and "Total params:         67" in text
    assert f"{info['macs']:,}" in text


def test_conv_net_totals_equal_sum_of_parameter_sizes():
    net = conv_net()
    net[0].freeze()
    info = summary(net, (1, 6, 6), print_fn=None)
    assert info["params"] == sum(p.data.size for p in net.parameters())
    assert info["trainable_params"] == info["params"] - net[0].weight.size - net[0].bias.size
    assert info["params"] == sum(r["params"] for r in info["layers"])
    assert info["output_shape"] == (1, 10)
    names = [r["name"] for r in info["layers"]]
    assert "3.body.0" in names and "3.post" in names
    conv_rows = [r for r in info["layers"] if r["type"] == "Conv2D"]
    assert conv_rows[0]["macs"] == 4 * 6 * 6 * 1 * 9
    assert info["macs"] == sum(r["macs"] for r in info["layers"]) > 0


def test_runs_in_eval_mode_and_restores_modes_and_forward():
    net = conv_net()
    net.train()
    net[6].eval()  # a mixed state must come back exactly
    modes = [m.training for m in net.modules()]
    running = net[1].running_mean.copy()
    seen = []
    original = Dropout.forward

    def spy(self, x):
        seen.append(self.training)
        return original(self, x)

    Dropout.forward = spy
    try:
        summary(net, (1, 6, 6), print_fn=None)
    finally:
        Dropout.forward = original
    assert seen == [False]
    assert [m.training for m in net.modules()] == modes
    np.testing.assert_array_equal(net[1].running_mean, running)  # eval: statistics untouched
    assert all("forward" not in vars(m) for m in net.modules())


def test_wrappers_removed_and_modes_restored_on_error():
    net = affine_net().train()
    with pytest.raises(LayerInputError, match="Affine expected 4 features"):
        summary(net, (5,), print_fn=None)
    assert all("forward" not in vars(m) for m in net.modules())
    assert all(m.training for m in net.modules())


def test_leaf_model_and_dtype():
    layer = Affine(3, 2, rng=np.random.default_rng(2))
    info = summary(layer, (3,), batch_size=4, dtype=np.float64, print_fn=None)
    assert info["layers"][0]["name"] == "(model)"
    assert info["macs"] == 4 * 3 * 2 and info["params"] == 8
