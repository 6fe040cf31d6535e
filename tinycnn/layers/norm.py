"""Batch normalization over the channel axis (PyTorch's ``BatchNorm1d`` / ``BatchNorm2d``).

One base class does the work for both: it normalizes each channel (axis 1) over *every
other* axis, i.e. over ``(N,)`` or ``(N, L)`` for 1-D and over ``(N, H, W)`` for 2-D
inputs, so a conv feature map is normalized per channel, never per activation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinycnn.backend import get_array_module
from tinycnn.layers.arguments import check_bool, check_float, check_int
from tinycnn.module import LayerInputError, Module, Parameter, check_input


class _BatchNorm(Module):
    r"""Per-channel batch normalization; subclasses only say which input ranks they take.

    With ``m`` values per channel (``m = N`` or ``N*L`` or ``N*H*W``), in training mode::

        mu = mean(x),  var = mean((x - mu)^2)          (biased, used to normalize)
        xhat = (x - mu) / sigma,  sigma = sqrt(var + eps),  y = gamma * xhat + beta
        running_mean <- (1 - momentum) * running_mean + momentum * mu
        running_var  <- (1 - momentum) * running_var  + momentum * var * m / (m - 1)

    ``momentum=None`` makes the running statistics a cumulative average
    (``momentum = 1 / num_batches_tracked``). In eval mode ``mu`` and ``var`` are the
    running statistics (unless ``track_running_stats=False``: then batch statistics
    are used in both modes, as in PyTorch).

    Backward, with :math:`g = \partial L/\partial y` and sums over the m values of a channel:
    :math:`\partial L/\partial \gamma = \sum g \hat x`, :math:`\partial L/\partial \beta = \sum g`;
    with batch statistics
    :math:`\partial L/\partial x =
    \frac{\gamma}{m \sigma}\left(m g - \sum g - \hat x \sum g \hat x\right)`;
    with running statistics
    :math:`\partial L/\partial x = g \gamma / \sqrt{\mathrm{running\_var} + \epsilon}`.
    """

    _ndims: tuple[int, ...] = ()
    _layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        name = self._name()
        self.num_features = check_int(name, "num_features", num_features)
        self.eps = check_float(name, "eps", eps, 0.0, low_open=True)
        self.momentum = None if momentum is None else check_float(name, "momentum", momentum,
                                                                  0.0, 1.0)
        self.affine = check_bool(name, "affine", affine)
        self.track_running_stats = check_bool(name, "track_running_stats", track_running_stats)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        else:
            self.weight = None
            self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            # Not registered: PyTorch's state dict has no such keys in this case.
            self.running_mean = None
            self.running_var = None
            self.num_batches_tracked = None
        self.xhat = None
        self.inv_std = None
        self.batch_stats = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, self._ndims, self._layout, channels=self.num_features)
        xp = get_array_module(x)
        shape = (1, self.num_features) + (1,) * (x.ndim - 2)  # a per-channel vector, broadcast
        mean, var, use_batch = self._statistics(x)
        inv_std = 1.0 / xp.sqrt(var + self.eps)  # 1 / sigma
        xhat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        y = xhat
        if self.affine:
            weight = self.weight.data.astype(x.dtype, copy=False)
            y = xhat * weight.reshape(shape) + self.bias.data.astype(x.dtype).reshape(shape)
        self.xhat, self.inv_std, self.batch_stats = xhat, inv_std, use_batch
        return y

    def _statistics(self, x: Any) -> tuple[Any, Any, bool]:
        """``(mean, var, batch)``: the batch's per-channel statistics (training, or
        ``track_running_stats=False``; the running ones updated in training), else the
        running statistics."""
        m = x.size // self.num_features
        if not self.training and self.track_running_stats:  # eval: the running statistics
            return (self.running_mean.astype(x.dtype, copy=False),
                    self.running_var.astype(x.dtype, copy=False), False)
        if self.training and m <= 1:
            raise LayerInputError(
                f"{self._name()} expected more than 1 value per channel when training, "
                f"got input shape {tuple(x.shape)}"
            )
        mean, var = self._batch_moments(x)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, m)
        return mean, var, True

    def _batch_moments(self, x: Any) -> tuple[Any, Any]:
        """``mu = mean(x)``, ``var = mean((x - mu)^2)`` per channel, over every axis but 1."""
        axes = (0, *range(2, x.ndim))
        shape = (1, self.num_features) + (1,) * (x.ndim - 2)
        mean = x.mean(axis=axes)
        return mean, ((x - mean.reshape(shape)) ** 2).mean(axis=axes)

    def _update_running_stats(self, mean: Any, var: Any, m: int) -> None:
        count = self.num_batches_tracked
        count += 1  # in place: the 0-d int64 array stays the registered buffer
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)  # cumulative moving average
        else:
            factor = self.momentum
        dt = self.running_mean.dtype
        unbiased = var * (m / (m - 1))
        self._set_buffer(
            "running_mean", (1.0 - factor) * self.running_mean + factor * mean.astype(dt)
        )
        self._set_buffer(
            "running_var", (1.0 - factor) * self.running_var + factor * unbiased.astype(dt)
        )

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.xhat)
        xhat, g = self.xhat, grad_out
        axes = (0, *range(2, g.ndim))
        shape = (1, self.num_features) + (1,) * (g.ndim - 2)
        m = g.size // self.num_features
        g_sum = g.sum(axis=axes)  # sum(g), per channel
        gx_sum = (g * xhat).sum(axis=axes)  # sum(g * xhat), per channel
        scale = self.inv_std.astype(g.dtype, copy=False)  # gamma / sigma
        if self.affine:
            scale = scale * self.weight.data.astype(g.dtype, copy=False)
            self.weight.accumulate(gx_sum.astype(self.weight.dtype, copy=False))
            self.bias.accumulate(g_sum.astype(self.bias.dtype, copy=False))
        if not self.batch_stats:  # running statistics are constants
            return g * scale.reshape(shape)
        dx = m * g - g_sum.reshape(shape) - xhat * gx_sum.reshape(shape)
        return dx * (scale / m).reshape(shape)

    def _clear_cache(self) -> None:
        self.xhat = None
        self.inv_std = None
        self.batch_stats = None

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1D(_BatchNorm):
    """Batch normalization of ``(N, C)`` or ``(N, C, L)`` inputs, per feature ``C``.

    Statistics per feature over ``(N,)`` or ``(N, L)``; see :class:`_BatchNorm` for the
    formulas and the backward pass.
    """

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2D(_BatchNorm):
    """Batch normalization of ``(N, C, H, W)`` feature maps, per channel over ``(N, H, W)``.

    See :class:`_BatchNorm` for the formulas and the backward pass.
    """

    _ndims = (4,)
    _layout = "(N, C, H, W)"


BatchNorm1d = BatchNorm1D
BatchNorm2d = BatchNorm2D
