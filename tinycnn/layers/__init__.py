"""Layers: each one a class with ``forward`` and its hand-written ``backward`` side by side."""

from tinycnn.layers.activation import (
    LeakyReLU,
    LogSoftmax,
    ReLU,
    ReLU6,
    Sigmoid,
    Softmax,
    Tanh,
)
from tinycnn.layers.adaptive_pool import AdaptiveAvgPool2D
from tinycnn.layers.conv import Conv2D
from tinycnn.layers.conv_transpose import ConvTranspose2D
from tinycnn.layers.dropout import Dropout, Dropout2D, Dropout2d
from tinycnn.layers.embedding import Embedding, one_hot
from tinycnn.layers.linear import Affine, Linear
from tinycnn.layers.lrn import LocalResponseNorm
from tinycnn.layers.norm import BatchNorm1D, BatchNorm1d, BatchNorm2D, BatchNorm2d
from tinycnn.layers.padding import ZeroPad2D
from tinycnn.layers.pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from tinycnn.layers.recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from tinycnn.layers.shape import Flatten, Identity
from tinycnn.layers.upsample import Upsample

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "Embedding",
    "one_hot",
    "AdaptiveAvgPool2D",
    "ConvTranspose2D",
    "LocalResponseNorm",
    "Upsample",
    "ZeroPad2D",
    "Affine",
    "BatchNorm1D",
    "BatchNorm1d",
    "BatchNorm2D",
    "BatchNorm2d",
    "Dropout",
    "Dropout2D",
    "Dropout2d",
    "Flatten",
    "Identity",
    "LeakyReLU",
    "LogSoftmax",
    "Softmax",
    "Sigmoid",
    "Tanh",
    "AvgPool2D",
    "Conv2D",
    "GlobalAvgPool2D",
    "Linear",
    "MaxPool2D",
    "ReLU",
    "ReLU6",
]
