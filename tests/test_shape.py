"""Flatten and Identity: shapes, gradients, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.gradcheck import gradcheck
from tinycnn.layers import Flatten, Identity
from tinycnn.module import BackwardBeforeForwardError, LayerInputError

RNG = np.random.default_rng(11)


@pytest.mark.parametrize(
    "start, end, shape, expected",
    [
        (1, -1, (2, 3, 4, 5), (2, 60)),
        (0, -1, (2, 3, 4), (24,)),
        (1, 2, (2, 3, 4, 5), (2, 12, 5)),
        (-2, -1, (2, 3, 4, 5), (2, 3, 20)),
        (1, -1, (2, 3), (2, 3)),
        (1, -1, (0, 3, 4), (0, 12)),
    ],
)
def test_flatten_shapes_match_pytorch_semantics(start, end, shape, expected):
    x = RNG.normal(size=shape).astype(np.float32)
    layer = Flatten(start, end)
    y = layer(x)
    assert y.shape == expected and y.dtype == np.float32
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))  # row-major order kept
    g = RNG.normal(size=expected).astype(np.float32)
    dx = layer.backward(g)
    assert dx.shape == shape and dx.dtype == np.float32
    np.testing.assert_array_equal(dx.reshape(-1), g.reshape(-1))


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=5).map(tuple),
       training=st.booleans(), seed=st.integers(0, 999))
def test_gradcheck_flatten_and_identity(shape, training, seed):
    x = np.random.default_rng(seed).normal(size=shape)
    assert gradcheck(Flatten().train(training), x, seed=seed) < 1e-6
    assert gradcheck(Identity().train(training), x, seed=seed) < 1e-6


@pytest.mark.parametrize(
    "layer, x, pattern",
    [
        (Flatten(), np.ones(3, np.float32), r"Flatten\(start_dim=1, end_dim=-1\).*\(3,\)"),
        (Flatten(2, 1), np.ones((2, 3, 4), np.float32), r"Flatten.*got shape \(2, 3, 4\)"),
        (Flatten(), np.ones((2, 3), np.int64), r"Flatten .*floating.*int64"),
        (Flatten(), [[1.0]], r"Flatten expected an array, got list"),
    ],
)
def test_flatten_bad_inputs(layer, x, pattern):
    with pytest.raises(LayerInputError, match=pattern):
        layer(x)


def test_flatten_backward_before_forward():
    with pytest.raises(BackwardBeforeForwardError, match="Flatten"):
        Flatten().backward(np.ones((2, 3)))


def test_identity_passes_values_and_gradients_through():
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    layer = Identity()
    assert layer(x) is x
    assert layer.backward(x) is x
    assert layer.state_dict() == {}
