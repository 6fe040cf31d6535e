"""``tinycnn.gradcheck`` itself: it passes correct layers, fails broken ones with a readable
per-array report, treats missing parameter gradients as failures, replays dropout masks and
leaves the caller's module untouched."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn.containers import Sequential
from tinycnn.gradcheck import GradcheckError, GradcheckResult, gradcheck
from tinycnn.layers import Affine, Dropout, ReLU, Tanh
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.module import Module

RNG = np.random.default_rng(0)


class WrongInputGrad(Affine):
    """dL/dx off by 10%: a plausible slip (a stray factor) that gradcheck must catch."""

    def backward(self, grad_out):
        return 1.1 * super().backward(grad_out)


class WrongWeightGrad(Affine):
    """dL/dW computed from the transposed product: the shape fits only for a square W."""

    def backward(self, grad_out):
        dx = grad_out @ self.weight.data
        self.weight.accumulate((grad_out.T @ self.x).T)
        self.bias.accumulate(grad_out.sum(axis=0))
        return dx


class ForgetsParamGrads(Affine):
    """Returns the right dL/dx but never accumulates dL/dW, dL/db."""

    def backward(self, grad_out):
        return grad_out @ self.weight.data


class FlatInputGrad(Affine):
    """Right values, wrong shape: dL/dx flattened (the next layer down would break)."""

    def backward(self, grad_out):
        return super().backward(grad_out).reshape(-1)


class RowBiasGrad(Affine):
    """dL/db kept as a (1, out) row instead of (out,)."""

    def backward(self, grad_out):
        self.bias.accumulate(grad_out.sum(axis=0, keepdims=True))
        self.weight.accumulate(grad_out.T @ self.x)
        return grad_out @ self.weight.data


class HiddenNoise(Module):
    """Multiplies by fresh random noise on every forward, from a generator gradcheck cannot
    find (kept in a list): the numerical derivative then compares different functions."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = [np.random.default_rng(1)]
        self.noise = None

    def forward(self, x):
        self.noise = self.hidden[0].uniform(0.5, 1.5, size=x.shape)
        return x * self.noise

    def backward(self, grad_out):
        return grad_out * self.noise


def test_passes_correct_layers_with_a_per_array_result():
    net = Sequential(Affine(4, 3, rng=RNG), Tanh(), Affine(3, 2, rng=RNG), ReLU())
    result = gradcheck(net, RNG.normal(size=(5, 4)), return_result=True)
    assert isinstance(result, GradcheckResult)
    assert set(result.errors) == {"input", "0.weight", "0.bias", "2.weight", "2.bias"}
    assert result.worst < 1e-7
    x = RNG.normal(size=(5, 4))
    assert gradcheck(net, x) == gradcheck(net, x, return_result=True).worst


def test_broken_input_gradient_raises_a_readable_report():
    layer = WrongInputGrad(3, 3, rng=RNG)
    with pytest.raises(GradcheckError) as info:
        gradcheck(layer, RNG.normal(size=(4, 3)))
    text = str(info.value)
    assert "gradcheck of WrongInputGrad failed (tolerance 1.0e-06)" in text
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert lines["input"].endswith("<-- FAIL")
    assert not lines["weight"].endswith("FAIL") and not lines["bias"].endswith("FAIL")
    err = float(lines["input"].split()[1])
    assert 0.05 < err < 0.2  # about the 10% slip


def test_broken_parameter_gradient_is_flagged_by_name():
    layer = WrongWeightGrad(3, 3, rng=RNG)
    result = gradcheck(layer, RNG.normal(size=(4, 3)), raise_on_fail=False, return_result=True)
    assert result.errors["weight"] > 1e-2
    assert result.errors["input"] < 1e-7 and result.errors["bias"] < 1e-7
    assert "weight  " in result.report() and "<-- FAIL" in result.report()


def test_missing_parameter_gradients_are_failures():
    layer = ForgetsParamGrads(3, 2, rng=RNG)
    with pytest.raises(GradcheckError, match=r"weight\s+inf\s+<-- FAIL \(no gradient"):
        gradcheck(layer, RNG.normal(size=(4, 3)))
    worst = gradcheck(layer, RNG.normal(size=(4, 3)), raise_on_fail=False)
    assert worst == float("inf")
    # frozen parameters are not expected to have gradients
    layer.freeze()
    assert gradcheck(layer, RNG.normal(size=(4, 3))) < 1e-7


@pytest.mark.parametrize(
    "cls, name, shapes",
    [(FlatInputGrad, "input", r"\(12,\), expected \(4, 3\)"),
     (RowBiasGrad, "bias", r"\(1, 2\), expected \(2,\)")],
)
def test_gradients_of_the_wrong_shape_fail_with_both_shapes(cls, name, shapes):
    layer = cls(3, 2 if cls is RowBiasGrad else 3, rng=RNG)
    with pytest.raises(GradcheckError, match=name + r"\s+inf\s+<-- FAIL.*" + shapes):
        gradcheck(layer, RNG.normal(size=(4, 3)))


def test_dropout_masks_are_replayed():
    net = Sequential(Affine(4, 6, rng=RNG), Dropout(0.5, seed=3), Tanh())
    result = gradcheck(net, RNG.normal(size=(3, 4)), return_result=True)
    assert result.worst < 1e-7
    # the same kind of randomness out of gradcheck's sight breaks the check
    assert gradcheck(HiddenNoise(), RNG.normal(size=(3, 4)), raise_on_fail=False) > 1e-2


def test_callers_module_is_left_untouched():
    layer = Affine(3, 2, rng=RNG)
    before = layer.weight.data.copy()
    gradcheck(layer, RNG.normal(size=(2, 3)).astype(np.float32))
    assert layer.weight.data.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.data, before)
    assert layer.weight.grad is None and layer.x is None


def test_checks_losses_with_targets_and_options():
    logits = RNG.normal(size=(4, 5))
    assert gradcheck(SoftmaxCrossEntropy(), logits, np.array([0, 4, 2, 2])) < 1e-7
    layer = Affine(30, 20, rng=RNG)
    result = gradcheck(layer, RNG.normal(size=(3, 30)), max_entries=10, check_input=False,
                       return_result=True)
    assert set(result.errors) == {"weight", "bias"} and result.worst < 1e-7
    assert gradcheck(layer, RNG.normal(size=(3, 30)), check_params=False,
                     return_result=True).errors.keys() == {"input"}
