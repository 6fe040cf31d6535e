"""Embedding, one_hot, sequence cross-entropy with ignore_index, and the embedded sequence data."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn.data.sequences import CharVocab, load_sunspots, load_text
from tinycnn.gradcheck import gradcheck
from tinycnn.layers.embedding import Embedding, one_hot
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.module import BackwardBeforeForwardError, LayerInputError, Module


def test_one_hot_places_a_single_one():
    ids = np.array([[2, 0], [1, 2]])
    v = one_hot(ids, 3)
    assert v.shape == (2, 2, 3) and v.dtype == np.float32
    np.testing.assert_array_equal(v.argmax(-1), ids)
    assert (v.sum(-1) == 1).all()
    with pytest.raises(LayerInputError, match=r"ids in \[0, 2\], got values from 0 to 3"):
        one_hot(np.array([0, 3]), 3)
    with pytest.raises(LayerInputError, match="integer array of ids"):
        one_hot(np.array([0.0, 1.0]), 3)


def test_embedding_is_one_hot_times_weight_and_gradchecks():
    rng = np.random.default_rng(0)
    emb = Embedding(6, 4, dtype=np.float64, rng=rng)
    ids = np.array([[0, 5, 5], [2, 0, 1]])  # repeated ids: gradients must add up
    np.testing.assert_array_equal(emb(ids), one_hot(ids, 6, np.float64) @ emb.weight.data)

    class ScaledLookup(Module):
        """x * emb(ids): gradcheck perturbs the float x and the weight."""

        def __init__(self) -> None:
            super().__init__()
            self.emb = emb

        def forward(self, x):
            self.x, self.e = x, self.emb(ids)
            return x * self.e

        def backward(self, g):
            self.emb.backward(g * self.x)
            return g * self.e

    gradcheck(ScaledLookup(), rng.standard_normal((2, 3, 4)), tol=1e-7)


def test_embedding_padding_idx_starts_at_zero_and_never_trains():
    rng = np.random.default_rng(1)
    emb = Embedding(5, 3, padding_idx=-1, rng=rng)
    assert emb.padding_idx == 4 and not emb.weight.data[4].any()
    ids = np.array([4, 1, 4])
    emb(ids)
    emb.backward(np.ones((3, 3), dtype=np.float32))
    assert not emb.weight.grad[4].any() and (emb.weight.grad[1] == 1).all()
    assert emb.backward(np.ones((3, 3), dtype=np.float32)) is None


def test_embedding_init_and_errors():
    w = Embedding(2000, 50, rng=np.random.default_rng(0)).weight.data
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1) < 0.01  # N(0, 1), as in PyTorch
    emb = Embedding(5, 3)
    with pytest.raises(LayerInputError, match=r"Embedding expected ids in \[0, 4\]"):
        emb(np.array([5]))
    with pytest.raises(LayerInputError, match="integer array of ids"):
        emb(np.array([0.5]))
    with pytest.raises(ValueError, match="padding_idx must be an int in"):
        Embedding(5, 3, padding_idx=5)
    with pytest.raises(ValueError, match="num_embeddings must be an int >= 1"):
        Embedding(0, 3)
    with pytest.raises(BackwardBeforeForwardError):
        Embedding(5, 3).backward(np.zeros((1, 3), np.float32))


def test_sequence_cross_entropy_is_the_flat_one_and_ignores_padding():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 4, 5))
    labels = rng.integers(0, 5, (3, 4))
    labels[1, 2:] = -100
    seq = SoftmaxCrossEntropy()
    loss = seq(logits, labels)
    grad = seq.backward()
    keep = labels.reshape(-1) != -100
    flat = SoftmaxCrossEntropy()
    expected = flat(logits.reshape(-1, 5)[keep], labels.reshape(-1)[keep])
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-12)
    assert grad.shape == logits.shape and not grad[1, 2:].any()
    np.testing.assert_allclose(grad.reshape(-1, 5)[keep], flat.backward(), rtol=1e-12)
    gradcheck(SoftmaxCrossEntropy(label_smoothing=0.1), logits, labels)


def test_sequence_cross_entropy_matches_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 6, 4))
    labels = rng.integers(0, 4, (2, 6))
    labels[0, :3] = 7
    loss_fn = SoftmaxCrossEntropy(label_smoothing=0.2, ignore_index=7)
    loss = loss_fn(logits, labels)
    t = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(t.permute(0, 2, 1), torch.tensor(labels),
                                           ignore_index=7, label_smoothing=0.2)
    tl.backward()
    np.testing.assert_allclose(float(loss), tl.item(), rtol=1e-10)
    np.testing.assert_allclose(loss_fn.backward(), t.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_embedded_text_and_vocabulary():
    text = load_text()
    assert 250_000 < len(text) <= 300_000 and text.startswith("PRIDE AND PREJUDICE")
    assert "It is a truth universally acknowledged" in text
    vocab = CharVocab(text)
    ids = vocab.encode(text[:1000])
    assert ids.dtype == np.int64 and ids.max() < len(vocab)
    assert vocab.decode(ids) == text[:1000]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("\u00e9")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, "):
        vocab.decode([len(vocab)])


def test_embedded_sunspots():
    values, dates = load_sunspots(with_dates=True)
    assert values.shape == (3126,) and dates[0].tolist() == [1749, 1]
    assert dates[-1].tolist() == [2009, 6] and values.min() >= 0
    # the solar cycle: about 11 years between maxima shows as autocorrelation near 132 months
    v = values - values.mean()
    ac = [float(v[:-k] @ v[k:]) for k in range(100, 160)]
    assert 115 <= 100 + int(np.argmax(ac)) <= 145

