"""Dropout / Dropout2D: drop rate, inverted scaling, eval identity, seeding, gradients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.layers import Dropout, Dropout2D
from tinycnn.module import BackwardBeforeForwardError, LayerInputError

RNG = np.random.default_rng(99)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_fraction_dropped_is_p_and_kept_values_are_scaled(p):
    x = RNG.uniform(1.0, 2.0, size=(50, 40, 100)).astype(np.float32)  # no zeros in x
    y = Dropout(p, seed=0)(x)
    dropped = y == 0
    n = x.size
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[~dropped], x[~dropped] / np.float32(1 - p), rtol=1e-6)
    # inverted dropout keeps the expected value
    assert abs(y.mean() / x.mean() - 1) < 0.02


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_dropout2d_drops_whole_channels_at_rate_p(p):
    x = RNG.uniform(1.0, 2.0, size=(200, 50, 3, 2))
    y = Dropout2D(p, seed=1)(x)
    per_channel = (y == 0).reshape(200, 50, -1)
    assert np.all(per_channel.all(axis=2) | ~per_channel.any(axis=2))  # all or nothing
    dropped = per_channel[:, :, 0]
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / dropped.size)
    kept = ~(y == 0)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-12)


@pytest.mark.parametrize("cls, shape", [(Dropout, (3, 4, 5)), (Dropout2D, (3, 4, 5, 5))])
def test_eval_is_the_identity(cls, shape):
    layer = cls(0.7, seed=3).eval()
    x = RNG.normal(size=shape).astype(np.float32)
    g = RNG.normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(g), g)


def test_p_zero_is_the_identity_in_training():
    x = RNG.normal(size=(4, 5))
    layer = Dropout(0.0)
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)


@pytest.mark.parametrize("cls", [Dropout, Dropout2D])
def test_same_seed_same_masks_and_fresh_masks_each_call(cls):
    x = np.ones((8, 6, 4, 4), np.float32)
    a, b, c = cls(0.5, seed=42), cls(0.5, seed=42), cls(0.5, seed=43)
    first_a, first_b = a(x), b(x)
    np.testing.assert_array_equal(first_a, first_b)
    np.testing.assert_array_equal(a(x), b(x))  # the sequences stay in step
    assert not np.array_equal(first_a, a(x))  # a new mask on each call
    assert not np.array_equal(first_a, c(x))
    assert isinstance(a.rng, np.random.Generator)


@pytest.mark.parametrize("cls", [Dropout, Dropout2D])
def test_backward_uses_the_forward_mask(cls):
    x = RNG.uniform(1.0, 2.0, size=(5, 4, 3, 3))
    g = RNG.normal(size=x.shape)
    g_before = g.copy()
    layer = cls(0.4, seed=5)
    y = layer(x)
    dx = layer.backward(g)
    np.testing.assert_allclose(dx, g * (y / x), rtol=1e-12)
    np.testing.assert_array_equal(g, g_before)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
    p=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    training=st.booleans(),
    seed=st.integers(0, 999),
)
def test_gradcheck_dropout(shape, p, training, seed):
    layer = Dropout(p, seed=seed).train(training)
    x = np.random.default_rng(seed).normal(size=shape)
    assert gradcheck(layer, x, seed=seed) < 1e-6


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
    p=st.sampled_from([0.2, 0.5]),
    training=st.booleans(),
    seed=st.integers(0, 999),
)
def test_gradcheck_dropout2d(shape, p, training, seed):
    layer = Dropout2D(p, seed=seed).train(training)
    x = np.random.default_rng(seed).normal(size=shape)
    assert gradcheck(layer, x, seed=seed) < 1e-6


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_invalid_p(p):
    with pytest.raises(ValueError, match=r"Dropout: p \(the probability of dropping a value\) "
                                         r"must be in \[0.0, 1.0\]"):
        Dropout(p)


@pytest.mark.parametrize("cls", [Dropout, Dropout2D])
def test_p_one_drops_everything_in_training_only(cls):
    # PyTorch allows p = 1: zeros out and zero gradient in training, identity in eval
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4)) + 5.0
    layer = cls(1.0, seed=0)
    y = layer(x)
    assert np.all(y == 0) and np.all(np.isfinite(y))
    assert np.all(layer.backward(np.ones_like(x)) == 0)
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)


@pytest.mark.parametrize(
    "layer, x, pattern",
    [
        (Dropout(0.5), np.ones((2, 3), np.int64), r"Dropout .*floating.*int64"),
        (Dropout2D(0.5), np.ones((2, 3, 4), np.float32), r"Dropout2D .*4-D.*\(2, 3, 4\)"),
        (Dropout2D(0.5), np.ones((2, 3, 4, 4), np.int32), r"Dropout2D .*floating.*int32"),
    ],
)
def test_bad_inputs_name_the_layer(layer, x, pattern):
    with pytest.raises(LayerInputError, match=pattern):
        layer(x)


@pytest.mark.parametrize("cls", [Dropout, Dropout2D])
def test_backward_before_forward(cls):
    with pytest.raises(BackwardBeforeForwardError, match=cls.__name__):
        cls(0.5).backward(np.ones((2, 3, 2, 2), np.float32))


@pytest.mark.parametrize("cls", [Dropout, Dropout2D])
@pytest.mark.parametrize("training", [True, False])
def test_float32_stays_float32(cls, training):
    layer = cls(0.3, seed=0).train(training)
    x = RNG.normal(size=(4, 3, 2, 2)).astype(np.float32)
    assert layer(x).dtype == np.float32
    assert layer.backward(x).dtype == np.float32
