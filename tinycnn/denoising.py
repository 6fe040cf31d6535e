r"""Denoising autoencoders (Vincent et al., 2008): corrupt the input, reconstruct the clean one.

A denoising autoencoder is trained to map a *corrupted* input :math:`\tilde x` back to
the clean :math:`x`::

    x_tilde = corrupt(x)                      # masking_noise or gaussian_noise
    h       = sigmoid(x_tilde W1^T + b1)      # encoder: the learned representation
    x_hat   = sigmoid(h W2^T + b2)            # decoder
    loss    = mean((x_hat - x) ** 2)          # against the CLEAN input

It cannot copy its input, so it has to learn which inputs are likely. Stacking the
encoders of autoencoders trained one after the other (each on the codes of the one
below) gives a deep network to fine-tune with labels: ``Sequential(dae1.encoder,
dae2.encoder, Linear(...))``. Notebook 13 does this on MNIST.

The corruptions take any shape (flat vectors or image batches) and leave the input
unchanged; ``rng`` is a ``numpy.random.Generator`` (on the GPU the noise is drawn on the
host and moved).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Protocol

import numpy as np

from tinycnn import backend
from tinycnn.containers import Sequential
from tinycnn.layers.activation import Sigmoid
from tinycnn.layers.arguments import check_int
from tinycnn.layers.linear import Linear
from tinycnn.losses import MSELoss
from tinycnn.module import LayerInputError, Module, check_input
from tinycnn.optim import Adam


class Corruption(Protocol):
    """A corruption: ``corrupt(x, rng)`` returns a corrupted copy of the batch ``x``."""

    def __call__(self, x: Any, rng: np.random.Generator) -> Any: ...


def _check_float_array(who: str, x: Any) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{who}: x must be an array, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: x must hold floating-point values (scale uint8 images to "
                        f"[0, 1] first), got dtype {x.dtype}")


def _check_rng(who: str, rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{who}: rng must be a numpy.random.Generator "
                        f"(numpy.random.default_rng(seed)), got {type(rng).__name__}")


def _check_number(who: str, name: str, value: Any, low: float, high: float,
                  high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise TypeError(f"{who}: {name} must be a finite number, got {value!r}")
    if value < low or value > high or (high_open and value == high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{who}: {name} must be in [{low}, {high}{bracket}, got {value!r}")
    return float(value)


def masking_noise(x: Any, fraction: float, rng: np.random.Generator) -> Any:
    """``x`` with each entry set to 0 independently with probability ``fraction``.

    The "masking noise" of Vincent et al.: the network must fill in the missing pixels
    from the ones that are left. ``fraction`` in ``[0, 1)``; returns a new array.
    """
    _check_float_array("masking_noise", x)
    fraction = _check_number("masking_noise", "fraction", fraction, 0.0, 1.0, high_open=True)
    _check_rng("masking_noise", rng)
    xp = backend.get_array_module(x)
    keep = backend.to_device(rng.random(x.shape) >= fraction, backend.device_of(x))
    return xp.where(keep, x, xp.zeros((), dtype=x.dtype))


def gaussian_noise(x: Any, std: float, rng: np.random.Generator) -> Any:
    """``x + std * N(0, 1)``, independent noise on every entry; returns a new array.

    (:class:`tinycnn.data.augment.GaussianNoise` does the same for image batches in a
    ``DataLoader``; this one takes any shape, such as the codes of a hidden layer.)
    """
    _check_float_array("gaussian_noise", x)
    std = _check_number("gaussian_noise", "std", std, 0.0, math.inf, high_open=True)
    _check_rng("gaussian_noise", rng)
    noise = rng.standard_normal(x.shape).astype(x.dtype, copy=False)
    return x + backend.to_device(noise, backend.device_of(x)) * x.dtype.type(std)


class DenoisingAutoencoder(Module):
    """One layer of a stacked denoising autoencoder, with untied weights.

    ``encoder = Sequential(Linear(in_features, hidden_features), Sigmoid())`` and
    ``decoder = Sequential(Linear(hidden_features, in_features), Sigmoid())``;
    ``forward(x) = decoder(encoder(x))`` reconstructs ``x`` (values in [0, 1]) and
    ``backward`` runs the decoder's backward, then the encoder's. The decoder has its own
    weight (untied: not the transpose of the encoder's). Weights are Xavier-uniform, as
    suits sigmoid units. State-dict keys: ``encoder.0.weight``, ``encoder.0.bias``,
    ``decoder.0.weight``, ``decoder.0.bias``.
    """

    def __init__(self, in_features: int, hidden_features: int,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        in_features = check_int("DenoisingAutoencoder", "in_features", in_features)
        hidden_features = check_int("DenoisingAutoencoder", "hidden_features", hidden_features)
        self.in_features, self.hidden_features = in_features, hidden_features
        self.encoder = Sequential(
            Linear(in_features, hidden_features, init="xavier_uniform", dtype=dtype, rng=rng),
            Sigmoid())
        self.decoder = Sequential(
            Linear(hidden_features, in_features, init="xavier_uniform", dtype=dtype, rng=rng),
            Sigmoid())

    def forward(self, x: Any) -> Any:
        check_input(self, x, 2, "(N, in_features)", channels=self.in_features,
                    what="features")
        return self.decoder(self.encoder(x))

    def backward(self, grad_out: Any) -> Any:
        return self.encoder.backward(self.decoder.backward(grad_out))

    def encode(self, x: Any) -> Any:
        """The hidden representation ``sigmoid(x W1^T + b1)`` of a clean input."""
        return self.encoder(x)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.hidden_features}"


def train_denoising(
    autoencoder: Module,
    x: Any,
    corrupt: Corruption,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Train ``autoencoder`` to reconstruct ``x`` from ``corrupt(x, rng)``; unlabeled.

    ``x``: a float array ``(N, features)`` with values in [0, 1] (MNIST pixels, or the
    codes of the encoder below). Adam with learning rate ``lr``, mean squared error
    against the clean batch, shuffled mini-batches from ``seed``. Returns the mean
    training loss of each epoch.
    """
    _check_float_array("train_denoising", x)
    epochs = check_int("train_denoising", "epochs", epochs)
    batch_size = check_int("train_denoising", "batch_size", batch_size)
    if not callable(corrupt):
        raise TypeError(f"train_denoising: corrupt must be a function (x, rng) -> x_tilde, "
                        f"got {type(corrupt).__name__}")
    in_features = getattr(autoencoder, "in_features", None)
    if x.ndim != 2 or (in_features is not None and x.shape[1] != in_features):
        want = f"(N, {in_features})" if in_features is not None else "(N, features)"
        raise LayerInputError(f"train_denoising: x must be {want}, got shape {tuple(x.shape)}")
    rng = np.random.default_rng(seed)
    loss = MSELoss()
    optimizer = Adam(autoencoder, lr=lr)
    autoencoder.train()
    curve = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch_size):
            clean = x[order[start:start + batch_size]]
            value = loss(autoencoder(corrupt(clean, rng)), clean)
            optimizer.zero_grad()
            autoencoder.backward(loss.backward())
            optimizer.step()
            total += float(value) * len(clean)
        curve.append(total / len(x))
    return curve
