"""Layers: each one a class with ``forward`` and its hand-written ``backward`` side by side."""

from tinycnn.layers.activation import ReLU
from tinycnn.layers.linear import Affine, Linear

__all__ = ["Affine", "Linear", "ReLU"]
