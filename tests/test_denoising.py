"""tinycnn.denoising: the corruptions, the denoising autoencoder (gradient check and PyTorch
reference), the pre-training loop, and clear errors for bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from tinycnn import Sequential
from tinycnn.denoising import (
    DenoisingAutoencoder,
    gaussian_noise,
    masking_noise,
    train_denoising,
)
from tinycnn.gradcheck import gradcheck
from tinycnn.losses import MSELoss
from tinycnn.module import LayerInputError

try:
    import torch
except ImportError:  # torch is an optional extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def test_masking_noise_zeroes_about_the_fraction_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.0, (200, 300)).astype(np.float32)
    out = masking_noise(x, 0.3, rng)
    assert out.dtype == x.dtype and out.shape == x.shape
    zero = out == 0
    assert abs(zero.mean() - 0.3) < 0.01
    np.testing.assert_array_equal(out[~zero], x[~zero])
    assert not np.any(x == 0)  # the input is left unchanged
    np.testing.assert_array_equal(masking_noise(x, 0.0, rng), x)


def test_masking_noise_is_reproducible_from_the_generator() -> None:
    x = np.ones((4, 1, 5, 5))
    a = masking_noise(x, 0.5, np.random.default_rng(7))
    b = masking_noise(x, 0.5, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 1, 5, 5)


def test_gaussian_noise_has_the_given_std() -> None:
    rng = np.random.default_rng(1)
    x = np.full((400, 500), 0.5, dtype=np.float64)
    out = gaussian_noise(x, 0.3, rng)
    assert out.dtype == np.float64
    noise = out - x
    assert abs(noise.std() - 0.3) < 0.005 and abs(noise.mean()) < 0.005
    np.testing.assert_array_equal(gaussian_noise(x, 0.0, rng), x)
    assert gaussian_noise(x.astype(np.float32), 0.1, rng).dtype == np.float32


@pytest.mark.parametrize("corrupt, arg", [(masking_noise, 0.2), (gaussian_noise, 0.2)])
def test_corruptions_refuse_bad_arguments(corrupt, arg) -> None:
    name = corrupt.__name__
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match=f"{name}: x must hold floating-point values.*uint8"):
        corrupt(np.ones((2, 3), np.uint8), arg, rng)
    with pytest.raises(TypeError, match=f"{name}: x must be an array, got list"):
        corrupt([1.0, 2.0], arg, rng)
    with pytest.raises(TypeError, match=f"{name}: rng must be a numpy.random.Generator"):
        corrupt(np.ones((2, 3)), arg, 0)
    with pytest.raises(TypeError, match="must be a finite number"):
        corrupt(np.ones((2, 3)), float("nan"), rng)
    with pytest.raises(ValueError, match=r"must be in \[0.0"):
        corrupt(np.ones((2, 3)), -0.1, rng)
    if corrupt is masking_noise:
        with pytest.raises(ValueError, match=r"fraction must be in \[0.0, 1.0\), got 1"):
            masking_noise(np.ones((2, 3)), 1, rng)


def test_autoencoder_structure_and_keys() -> None:
    dae = DenoisingAutoencoder(6, 4, rng=np.random.default_rng(0))
    assert isinstance(dae.encoder, Sequential)
    assert list(dae.state_dict()) == ["encoder.0.weight", "encoder.0.bias",
                                      "decoder.0.weight", "decoder.0.bias"]
    assert dae.encoder[0].weight.shape == (4, 6) and dae.decoder[0].weight.shape == (6, 4)
    x = np.random.default_rng(1).random((3, 6)).astype(np.float32)
    assert dae(x).shape == (3, 6) and dae.encode(x).shape == (3, 4)
    assert np.all((dae(x) > 0) & (dae(x) < 1))
    assert repr(dae).startswith("DenoisingAutoencoder(6, 4")


@pytest.mark.parametrize("args, error, message", [
    ((0, 4), ValueError, "DenoisingAutoencoder: in_features must be an int >= 1, got 0"),
    ((6, 2.5), TypeError, "DenoisingAutoencoder: hidden_features must be an int >= 1"),
])
def test_autoencoder_validates_its_sizes(args, error, message) -> None:
    with pytest.raises(error, match=message):
        DenoisingAutoencoder(*args)


def test_autoencoder_names_a_wrong_input() -> None:
    dae = DenoisingAutoencoder(6, 4)
    expected = r"DenoisingAutoencoder expected 6 features on axis 1 of \(N, in_features\), got 5"
    with pytest.raises(LayerInputError, match=expected):
        dae(np.ones((2, 5), np.float32))
    with pytest.raises(LayerInputError, match="DenoisingAutoencoder expected a 2-D input"):
        dae(np.ones((2, 1, 6), np.float32))


def test_autoencoder_gradcheck() -> None:
    dae = DenoisingAutoencoder(5, 3, rng=np.random.default_rng(2))
    x = np.random.default_rng(3).random((4, 5))
    assert gradcheck(dae, x) < 1e-6


@needs_torch
def test_autoencoder_and_its_loss_match_pytorch() -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        n_in, n_hidden, n = (int(v) for v in rng.integers(1, 9, size=3))
        dae = DenoisingAutoencoder(n_in, n_hidden, rng=rng).astype(np.float64)
        net = torch.nn.Sequential(torch.nn.Linear(n_in, n_hidden), torch.nn.Sigmoid(),
                                  torch.nn.Linear(n_hidden, n_in), torch.nn.Sigmoid()).double()
        net.load_state_dict({k.replace("encoder.0", "0").replace("decoder.0", "2"):
                             torch.tensor(v) for k, v in dae.state_dict().items()})
        x = rng.random((n, n_in))
        noisy = masking_noise(x, 0.3, rng)
        loss = MSELoss()
        value = loss(dae(noisy), x)
        dx = dae.backward(loss.backward())
        xt = torch.tensor(noisy, requires_grad=True)
        vt = torch.nn.functional.mse_loss(net(xt), torch.tensor(x))
        vt.backward()
        np.testing.assert_allclose(float(value), vt.item(), rtol=1e-6)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-14)
        grads = {"encoder.0.weight": net[0].weight, "encoder.0.bias": net[0].bias,
                 "decoder.0.weight": net[2].weight, "decoder.0.bias": net[2].bias}
        for name, p in dae.named_parameters():
            np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), rtol=1e-6,
                                       atol=1e-14, err_msg=name)


def test_train_denoising_lowers_the_reconstruction_error() -> None:
    rng = np.random.default_rng(5)
    # data on a 3-dimensional subspace of 12 pixels: learnable structure
    x = (rng.random((300, 3)) @ rng.random((3, 12)) / 3).astype(np.float32)
    dae = DenoisingAutoencoder(12, 6, rng=rng)
    curve = train_denoising(dae, x, lambda b, r: masking_noise(b, 0.2, r), epochs=15,
                            batch_size=32, lr=1e-2, seed=0)
    assert len(curve) == 15
    assert curve[-1] < 0.5 * curve[0]
    again = train_denoising(DenoisingAutoencoder(12, 6, rng=np.random.default_rng(5)),
                            x, lambda b, r: b, epochs=1, seed=0)
    assert len(again) == 1


def test_train_denoising_refuses_bad_arguments() -> None:
    dae = DenoisingAutoencoder(6, 3)
    x = np.zeros((10, 6), np.float32)
    with pytest.raises(LayerInputError, match=r"x must be \(N, 6\), got shape \(10, 5\)"):
        train_denoising(dae, np.zeros((10, 5), np.float32), lambda b, r: b)
    with pytest.raises(TypeError, match="corrupt must be a function"):
        train_denoising(dae, x, 0.3)
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        train_denoising(dae, x, lambda b, r: b, epochs=0)
    with pytest.raises(TypeError, match="floating-point"):
        train_denoising(dae, x.astype(np.uint8), lambda b, r: b)
