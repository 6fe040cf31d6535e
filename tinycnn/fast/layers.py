"""Fast twins of the pooling, BatchNorm and ReLU layers: one kernel call per pass.

Each twin computes what its reference layer computes, with one Numba (CPU) or CUDA (GPU)
kernel per pass instead of several NumPy passes over the array (the reference max-pool
builds a ``(N, C, OH, OW, kH*kW)`` window array; the kernel reads each input once).
It keeps the reference's caches (``argmax``, ``x_shape``, ``xhat``, ``y``), so backward
works whichever of the two ran forward, and falls back to the reference code where
:func:`tinycnn.fast.kernels_for` says so, and for average-pooling options the kernels lack
(a ``ceil_mode`` window past the padded edge, ``count_include_pad=False`` with padding).
A ``ceil_mode`` max-pool runs the kernel on the input padded with -inf.
"""

from __future__ import annotations

from typing import Any

from tinycnn.backend import get_array_module, is_gpu_array
from tinycnn.fast import kernels_for, twin_of
from tinycnn.layers.activation import ReLU
from tinycnn.layers.norm import BatchNorm1D, BatchNorm2D, _BatchNorm
from tinycnn.layers.pool import AvgPool2D, MaxPool2D, overhang
from tinycnn.module import _output_meta, check_input


@twin_of(MaxPool2D)
class FastMaxPool2D(MaxPool2D):
    """:class:`~tinycnn.layers.pool.MaxPool2D` with one kernel per pass."""

    out = None  # the output of the last forward (for backward_through_relu)
    ran_kernel = False  # whether the last forward ran the kernel (backward follows it)
    kernel_shape = None  # the input shape the kernel saw (ceil_mode: with the overhang)

    def forward(self, x: Any) -> Any:
        k = kernels_for(x)
        self.ran_kernel = k is not None
        if not self.ran_kernel:
            self.out = None
            return super().forward(x)
        self._check(x)
        kh, kw = self.kernel_size
        xk = self._with_overhang(x)
        self.out, self.argmax = k.maxpool2d_forward(xk, kh, kw, self.stride, self.padding)
        self.x_shape, self.kernel_shape = x.shape, xk.shape
        return self.out

    def _with_overhang(self, x: Any) -> Any:
        """``x``, or with ``ceil_mode`` ``x`` padded at the bottom/right with -inf as far as
        the last window reaches: the kernels' floor-mode windows are then the ceil-mode
        ones, and -inf never wins (each window holds a real pixel), so the output and the
        window-relative argmax are the reference's."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        eh = overhang(x.shape[2], kh, sh, ph, self.ceil_mode)
        ew = overhang(x.shape[3], kw, sw, pw, self.ceil_mode)
        if not (eh or ew):
            return x
        xp = get_array_module(x)
        return xp.pad(x, ((0, 0), (0, 0), (0, eh), (0, ew)), constant_values=-xp.inf)

    def forward_after_relu(self, relu: FastReLU, x: Any) -> Any:
        """``self(relu(x))`` in one kernel pass over ``x``; ``relu`` keeps ``x`` and makes
        its output only if something reads it. Every cache is what the two layers would
        hold after running one after the other (tests/test_equality.py compares)."""
        if self.has_overhang(x.shape):  # ceil_mode's overhang: the two layers in turn
            return self.forward(relu.forward(x))
        relu.defer(x)
        self._check(x)
        kh, kw = self.kernel_size
        self.out, self.argmax = kernels_for(x).maxpool2d_forward(
            x, kh, kw, self.stride, self.padding, relu=True)
        self.ran_kernel = True
        self.x_shape = self.kernel_shape = x.shape
        object.__setattr__(self, "_out_meta", _output_meta(self.out))
        return self.out

    def backward(self, grad_out: Any, through_relu: bool = False) -> Any:
        """dL/dx; with ``through_relu`` (only after a forward whose input was a ReLU's
        output, on the CPU kernels) the gradient through that ReLU too, in one pass."""
        k = kernels_for(grad_out)
        if k is None or not self.ran_kernel:
            return super().backward(grad_out)
        self._need_cache(self.argmax, self.x_shape, self.kernel_shape)
        kh, kw = self.kernel_size
        dx = k.maxpool2d_backward(grad_out, self.argmax, self.kernel_shape, kh, kw, self.stride,
                                  self.padding, **({"relu_out": self.out} if through_relu
                                                   else {}))
        h, w = self.x_shape[2:]
        if dx.shape == tuple(self.x_shape):
            return dx
        return get_array_module(dx).ascontiguousarray(dx[:, :, :h, :w])  # overhang dropped

    def _clear_cache(self) -> None:
        super()._clear_cache()
        self.out = None
        for key in ("ran_kernel", "kernel_shape"):
            self.__dict__.pop(key, None)  # back to the class defaults


@twin_of(AvgPool2D)
class FastAvgPool2D(AvgPool2D):
    """:class:`~tinycnn.layers.pool.AvgPool2D` with one kernel per pass."""

    ran_kernel = False  # whether the last forward ran the kernel (backward follows it)

    def _kernel_fits(self, x_shape: tuple[int, ...]) -> bool:
        """The kernel divides every window by kH*kW: right unless a window holds padding
        that must not count, or a ``ceil_mode`` overhang."""
        return not self.has_overhang(x_shape) and (
            self.count_include_pad or self.padding == (0, 0))

    def forward(self, x: Any) -> Any:
        k = kernels_for(x)
        self.ran_kernel = k is not None and self._kernel_fits(x.shape)
        if not self.ran_kernel:
            return super().forward(x)
        self._check(x)
        kh, kw = self.kernel_size
        self.x_shape = x.shape
        return k.avgpool2d_forward(x, kh, kw, self.stride, self.padding)

    def backward(self, grad_out: Any) -> Any:
        k = kernels_for(grad_out)
        if k is None or not self.ran_kernel:
            return super().backward(grad_out)
        self._need_cache(self.x_shape)
        kh, kw = self.kernel_size
        return k.avgpool2d_backward(grad_out, self.x_shape, kh, kw, self.stride, self.padding)

    def _clear_cache(self) -> None:
        super()._clear_cache()
        self.__dict__.pop("ran_kernel", None)  # back to the class default


class _FastBatchNorm(_BatchNorm):
    """Batch statistics, normalization and backward in one kernel each.

    Forward writes ``y`` only: it keeps its input ``x`` and the mean (no copies) and makes
    the reference's ``xhat = (x - mean) * inv_std`` the first time something reads it; the
    backward kernel recomputes ``xhat`` where it reads it. That is one full-size array
    less to write per forward (a ResNet-20 step: 19 of them).
    """

    @property
    def xhat(self) -> Any:
        """The normalized input of the last forward (``None`` before one)."""
        xhat = self.__dict__.get("xhat")
        kept = self.__dict__.get("_normalized_input")
        if xhat is None and kept is not None:
            x, mean = kept
            shape = (1, self.num_features) + (1,) * (x.ndim - 2)
            xhat = (x - mean.reshape(shape)) * self.inv_std.reshape(shape)  # the layer's formula
            self.__dict__["xhat"] = xhat
        return xhat

    @xhat.setter
    def xhat(self, value: Any) -> None:
        self.__dict__["xhat"] = value
        self.__dict__.pop("_normalized_input", None)

    def forward(self, x: Any) -> Any:
        k = kernels_for(x)
        if k is None:
            return super().forward(x)
        check_input(self, x, self._ndims, self._layout, channels=self.num_features)
        xp = get_array_module(x)
        mean, var, use_batch = self._statistics(x)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        weight = self.weight.data if self.affine else None
        bias = self.bias.data if self.affine else None
        y = k.batchnorm_forward(x, mean, inv_std, weight, bias)
        self.xhat, self.inv_std, self.batch_stats = None, inv_std, use_batch
        self.__dict__["_normalized_input"] = (x, mean)
        return y

    def _batch_moments(self, x: Any) -> tuple[Any, Any]:
        k = kernels_for(x)
        return super()._batch_moments(x) if k is None else k.batchnorm_stats(x)

    def folding(self, dtype: Any) -> tuple[Any, Any] | None:
        """``(scale, shift)`` with ``y = x * scale + shift`` per channel in eval mode with
        running statistics (``None`` otherwise: the batch's statistics are not known
        before the batch), for folding into the layer before (:mod:`tinycnn.fast.graph`)."""
        if self.training or not self.track_running_stats:
            return None
        xp = get_array_module(self.running_var)
        scale = 1.0 / xp.sqrt(self.running_var.astype(xp.float64) + self.eps)
        shift = -self.running_mean * scale
        if self.affine:
            scale = scale * self.weight.data
            shift = shift * self.weight.data + self.bias.data
        return scale.astype(dtype), shift.astype(dtype)

    def backward(self, grad_out: Any) -> Any:
        k = kernels_for(grad_out)
        kept = self.__dict__.get("_normalized_input")
        # running statistics: one multiply, no kernel; after a reference forward: its xhat
        if k is None or not self.batch_stats or kept is None:
            return super().backward(grad_out)
        x, mean = kept
        scale = self.inv_std.astype(grad_out.dtype, copy=False)
        if self.affine:
            scale = self.weight.data.astype(grad_out.dtype, copy=False) * scale
        dx, g_sum, gx_sum = k.batchnorm_backward(grad_out, x, mean, self.inv_std, scale)
        if self.affine:
            self.weight.accumulate(gx_sum.astype(self.weight.dtype, copy=False))
            self.bias.accumulate(g_sum.astype(self.bias.dtype, copy=False))
        return dx


@twin_of(BatchNorm1D)
class FastBatchNorm1D(_FastBatchNorm, BatchNorm1D):
    """:class:`~tinycnn.layers.norm.BatchNorm1D` with one kernel per pass."""


@twin_of(BatchNorm2D)
class FastBatchNorm2D(_FastBatchNorm, BatchNorm2D):
    """:class:`~tinycnn.layers.norm.BatchNorm2D` with one kernel per pass."""


@twin_of(ReLU)
class FastReLU(ReLU):
    """:class:`~tinycnn.layers.activation.ReLU` with parallel kernels on large CPU arrays.

    On the GPU the reference's elementwise expressions are one CuPy kernel already. When
    the accelerated ``Sequential`` runs this ReLU inside the max-pool after it
    (:mod:`tinycnn.fast.graph`), the full-size output is not made then: ``y`` is computed
    from the kept input the first time something reads it.
    """

    @property
    def y(self) -> Any:
        """The output of the last forward (``None`` before one)."""
        y = self.__dict__.get("y")
        x = self.__dict__.get("_deferred_input")
        if y is None and x is not None:
            y = get_array_module(x).maximum(x, x.dtype.type(0))  # the layer's own formula
            self.__dict__["y"] = y
            del self.__dict__["_deferred_input"]
        return y

    @y.setter
    def y(self, value: Any) -> None:
        self.__dict__["y"] = value
        self.__dict__.pop("_deferred_input", None)

    def defer(self, x: Any) -> None:
        """Forward whose output is made only when read (the pool after it used ``x``)."""
        check_input(self, x, (1, 2, 3, 4, 5), "(N, ...)")
        self.y = None
        self.__dict__["_deferred_input"] = x
        object.__setattr__(self, "_out_meta", _output_meta(x))  # what backward will check

    def forward(self, x: Any) -> Any:
        k = kernels_for(x)
        if k is None or is_gpu_array(x):
            return super().forward(x)
        check_input(self, x, (1, 2, 3, 4, 5), "(N, ...)")
        self.y = k.relu_forward(x)
        return self.y

    def backward(self, grad_out: Any) -> Any:
        k = kernels_for(grad_out)
        if k is None or is_gpu_array(grad_out):
            return super().backward(grad_out)
        self._need_cache(self.y)
        return k.relu_backward(grad_out, self.y)
