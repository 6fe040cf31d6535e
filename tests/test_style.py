"""Style transfer: Gram matrix and its backward, the style/content losses, image gradients
through a frozen network, and a few optimization steps on the image; plus the pixel losses
of image-to-image training (BCEWithLogits, L1Loss)."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn.containers import Sequential
from tinycnn.gradcheck import gradcheck
from tinycnn.layers import AvgPool2D, Conv2D, ReLU
from tinycnn.losses import BCEWithLogits, L1Loss
from tinycnn.module import BackwardBeforeForwardError, LayerInputError
from tinycnn.optim import SGD
from tinycnn.style import (
    ContentLoss,
    GramMatrix,
    StyleLoss,
    StyleTransfer,
    gram_matrix,
)

try:
    import torch
except ImportError:  # the PyTorch comparison skips, saying why
    torch = None


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _features(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2D(3, 4, 3, padding=1, rng=rng), ReLU(),
        Conv2D(4, 6, 3, padding=1, rng=rng), ReLU(), AvgPool2D(2),
        Conv2D(6, 8, 3, padding=1, rng=rng), ReLU(),
    )


def test_gram_matrix_definition():
    f = _x((2, 3, 4, 5))
    g = gram_matrix(f)
    assert g.shape == (2, 3, 3)
    for n in range(2):
        for i in range(3):
            for j in range(3):
                assert np.isclose(g[n, i, j], np.sum(f[n, i] * f[n, j]) / (3 * 4 * 5))
    np.testing.assert_allclose(g, g.transpose(0, 2, 1))
    assert gram_matrix(f.astype(np.float32)).dtype == np.float32


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_style_loss_matches_the_pytorch_tutorial():
    """The tutorial's loss: mse_loss(gram(F), gram(S)) with gram = F F^T / (a*b*c*d)."""
    f, s = _x((1, 3, 4, 5)), _x((1, 3, 6, 2), seed=1)

    def tgram(t):
        a, b, c, d = t.shape
        m = t.reshape(a * b, c * d)
        return m @ m.t() / (a * b * c * d)

    ft = torch.from_numpy(f).requires_grad_(True)
    ref = torch.nn.functional.mse_loss(tgram(ft), tgram(torch.from_numpy(s)))
    ref.backward()
    loss = StyleLoss(s)
    np.testing.assert_allclose(loss(f), ref.item(), rtol=1e-10)
    np.testing.assert_allclose(loss.backward(), ft.grad.numpy(), rtol=1e-10)


def test_gradchecks():
    f = _x((2, 3, 3, 4))
    worst = {
        "GramMatrix": gradcheck(GramMatrix(), f),
        "StyleLoss": gradcheck(StyleLoss(_x((1, 3, 5, 2), seed=2), weight=3.0), f),
        "ContentLoss": gradcheck(ContentLoss(_x(f.shape, seed=3), weight=0.5), f),
    }
    assert max(worst.values()) < 1e-6, worst


def test_losses_per_call_targets_and_errors():
    f, t = _x((2, 3, 3, 3)), _x((2, 3, 3, 3), seed=1)
    assert np.isclose(ContentLoss()(f, t), np.mean((f - t) ** 2))
    assert np.isclose(StyleLoss()(f, t), np.mean((gram_matrix(f) - gram_matrix(t)) ** 2))
    with pytest.raises(ValueError, match="ContentLoss needs target"):
        ContentLoss()(f)
    with pytest.raises(LayerInputError, match="ContentLoss expected features of shape"):
        ContentLoss(t)(f[:, :2])
    with pytest.raises(LayerInputError, match="StyleLoss.*Gram"):
        StyleLoss(t)(f[:, :2])
    with pytest.raises(LayerInputError, match="StyleLoss expected 4-D"):
        StyleLoss(t)(f[0])
    with pytest.raises(BackwardBeforeForwardError):
        StyleLoss(t).backward()


def test_sequential_backward_is_the_image_gradient_and_freeze_stops_updates():
    net = _features().freeze()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    image = _x((1, 3, 8, 8))
    # with every parameter frozen, only the input gradient is left to check
    assert gradcheck(net, image, tol=1e-6) < 1e-6
    net.zero_grad()
    out = net(image.astype(np.float32))
    dx = net.backward(np.ones_like(out))
    assert dx.shape == image.shape
    assert all(p.grad is None for p in net.parameters())
    SGD(net, lr=1.0).step()
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # unfrozen, the same step does change the weights
    net.unfreeze()
    net(image.astype(np.float32))
    net.backward(np.ones_like(out))
    SGD(net, lr=1.0).step()
    assert not np.array_equal(before["0.weight"], net.state_dict()["0.weight"])


def test_style_transfer_gradient_and_optimization():
    rng = np.random.default_rng(0)
    style, content = rng.random((1, 3, 8, 8)), rng.random((1, 3, 8, 8))
    net = _features().astype(np.float64)
    st = StyleTransfer(net, style, content, style_layers=[1, 3, 6], content_layers=[3],
                       style_weight=1e3, content_weight=1.0)
    weights = {k: v.copy() for k, v in net.state_dict().items()}
    image = content + 0.1 * rng.standard_normal(content.shape)
    loss, grad = st.loss_and_grad(image)
    assert grad.shape == image.shape
    # <grad, v> against the central difference of the total loss along v
    v = rng.standard_normal(image.shape)
    eps = 1e-6
    numeric = (st.loss_and_grad(image + eps * v)[0] - st.loss_and_grad(image - eps * v)[0]) / (
        2 * eps
    )
    assert abs(numeric - np.sum(grad * v)) <= 1e-6 * abs(numeric)
    # plain gradient descent on the image lowers the loss; the network never changes
    first = loss
    for _ in range(30):
        loss, grad = st.loss_and_grad(image)
        image = image - 0.025 * grad / np.abs(grad).max()  # steps of at most 0.025 a pixel
    assert loss < 0.7 * first
    after = net.state_dict()
    assert all(np.array_equal(weights[k], after[k]) for k in weights)
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="out of range"):
        StyleTransfer(net, style, content, style_layers=[7], content_layers=[])


# --- pixel losses for image-to-image training (tinycnn.losses) -----------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("pos_weight", [None, (0.5, 2.0, 3.0)])
def test_bce_with_logits(reduction, pos_weight):
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 3)), rng.random((4, 3))
    pw = None if pos_weight is None else np.array(pos_weight)
    assert gradcheck(BCEWithLogits(pos_weight=pw, reduction=reduction), x, t) < 1e-6
    if torch is None:
        pytest.skip("PyTorch is not installed: the gradient check ran, the comparison did not")
    big = 30 * x  # far into the saturated range, where a naive log(sigmoid) overflows
    loss = BCEWithLogits(pos_weight=pw, reduction=reduction)
    value, grad = loss(big, t), loss.backward(0.7)
    xt = torch.from_numpy(big).requires_grad_(True)
    ref = torch.nn.BCEWithLogitsLoss(
        pos_weight=None if pw is None else torch.from_numpy(pw), reduction=reduction
    )(xt, torch.from_numpy(t))
    (0.7 * ref).backward()
    np.testing.assert_allclose(value, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_l1_loss(reduction):
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))
    assert gradcheck(L1Loss(reduction), x, t) < 1e-6
    loss = L1Loss(reduction)
    n = x.size if reduction == "mean" else 1
    assert np.isclose(loss(x, t), np.abs(x - t).sum() / n)
    np.testing.assert_array_equal(loss.backward(), np.sign(x - t) / n)
    assert L1Loss()(x.astype(np.float32), t).dtype == np.float32


def test_pixel_loss_errors():
    x = np.zeros((2, 3), dtype=np.float32)
    for loss in (BCEWithLogits(), L1Loss()):
        with pytest.raises(LayerInputError, match=type(loss).__name__):
            loss(x, np.zeros((2, 4), dtype=np.float32))
        with pytest.raises(LayerInputError, match=type(loss).__name__):
            loss(x.astype(np.int64), x)
        with pytest.raises(BackwardBeforeForwardError):
            type(loss)().backward()
    with pytest.raises(ValueError, match="reduction"):
        L1Loss("avg")
