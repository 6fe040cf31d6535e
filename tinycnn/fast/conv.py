"""Conv2D's accelerated paths and the rules that choose them.

:class:`FastConv2D` is the engine's twin of :class:`tinycnn.layers.conv.Conv2D`: the same
parameters, buffers and state-dict keys (``accelerate`` swaps the class of a model's
``Conv2D`` instances), and seven implementations that all compute the reference's result
(``tests/test_equality.py`` compares them); ``_path`` picks one in forward, backward
follows it:

* ``"rows"``: the reference's algorithm, im2col + one GEMM over the whole batch, with the
  Numba or CUDA im2col/col2im (GPU, groups, asymmetric padding, and CPU layers with fewer
  than ``min_image_positions`` outputs per image, whose per-image GEMMs would be too small).
* ``"wide"`` (CPU, one group, stride 1): the input is padded once; per image, row
  ``(c, i, j)`` of ``cols_n (C*kH*kW, OH*Wp)`` is one contiguous run of the padded
  plane (output rows keep the padded width ``Wp``; the extra ``Wp - OW`` columns are
  cropped). ``Y_n = W_col cols_n + b`` is NCHW. Backward: dx is itself a stride-1
  convolution of G (padded by ``d*(k-1) - p``) with the flipped, transposed kernel,
  and the same columns of G give dW (no im2col of x, no col2im). Each thread takes its
  own range of images (:func:`tinycnn.fast.threads.split_images`).
* ``"pointwise"`` (CPU, one group, 1x1, stride 1, no padding): x as ``(C, N*H*W)``,
  ``Y^T = W X^T``: one matrix product for the whole batch (and two in backward).
* ``"images"`` (CPU, one group, other strides): per image ``n``,
  ``cols_n (C*kH*kW, OH*OW)`` and ``Y_n = W_col cols_n + b`` is already NCHW;
  ``dW = sum_n G_n cols_n^T`` and ``dx_n = col2im(W_col^T G_n)``, ``G_n (O, OH*OW)``.
  Like ``"wide"``, it goes through the images in chunks whose columns stay about
  ``chunk_bytes`` (in L2 cache), and backward rebuilds them.
* ``"depthwise"`` (``groups == in_channels == out_channels``): a loop over the kH*kW
  taps, ``y[n, c] = sum_ij w[c, i, j] * x_pad[n, c, tap ij]``, no column matrix.
* ``"direct"`` (CPU, one group, stride 1, no dilation, at most ``max_direct_taps`` taps
  C*kH*kW, e.g. a first layer on MNIST or CIFAR-10, or at most
  ``max_direct_out_channels`` output channels, e.g. LeNet-5's second layer):
  ``y[n, o] = b[o] + sum_{c,i,j} w[o, c, i, j] * x_pad[n, c, tap ij]``, no column
  matrix; for so few taps or channels im2col, its skinny GEMM and the transposes
  cost more.
* ``"tiled"`` (CPU, one group, no dilation, at least ``min_tiled_out_channels`` outputs,
  rows at least ``numba_cpu.TILE_PIXELS`` wide; it takes over most layers of "wide",
  "direct" and "images"): the same sum as "direct", computed in register tiles of 6 or 8
  neighbouring outputs x 16 output channels by a small LLVM-IR micro-kernel
  (``numba_cpu.conv2d_tiled``). No padded copy of the input is made: each task copies
  the rows it reads, zero-padded, into a small buffer in cache. Backward, stride 1 and
  at least ``min_tiled_in_channels`` input channels: a tiled dW and a tiled dx (the
  convolution of the padded G with the flipped, transposed kernel); strided: a tiled dW
  and dx as one stride-1 tiled convolution of G per phase of dx (the one-GEMM path's dx
  where the phases are narrower than a tile); 6-7 input channels: a tiled dW and the
  direct kernel's dx; fewer: the direct kernel's backward where it pays, otherwise the
  backward of the path tiles replaced. Forward measured 1.1-2.3x
  faster than that path (one core, batch 32, the benchmark nets' layers).

Memory: ``X_col`` is about kH*kW times larger than x. When it exceeds
``max_cached_cols_bytes``, forward keeps x instead and backward rebuilds ``X_col``
(one more im2col; ResNet-20 at batch 128 would otherwise hold about 0.9 GB of them).
The thresholds were measured on the project's 2-core machines (``docs/kernels.md``).

``input_grad = False`` (set by ``accelerate(model, input_grad=False)`` on a network's first
layer) skips dL/dx: backward then returns ``None``.
"""

from __future__ import annotations

import importlib
from typing import Any

from tinycnn import backend
from tinycnn.fast import _load, kernels_for, threads, twin_of
from tinycnn.layers.conv import Conv2D


@twin_of(Conv2D)
class FastConv2D(Conv2D):
    """:class:`~tinycnn.layers.conv.Conv2D` with the engine's paths (see the module docstring)."""

    #: Column matrices larger than this are rebuilt in backward instead of kept.
    max_cached_cols_bytes = 16 * 2**20
    #: CPU, one group: images per chunk so a chunk's column matrix is about this size.
    chunk_bytes = 2**19
    #: False forces the one-big-GEMM path on the CPU too (for comparisons).
    use_image_chunks = True
    #: Wide path on the CPU: each thread takes a range of images in chunks of about this
    #: many bytes of columns. False: one thread walks the chunks and every kernel and
    #: product is parallel on its own (for comparisons).
    split_images = True
    split_chunk_bytes = 2**21
    #: Per-image paths only for at least this many output positions per image: "images"
    #: (strided) ...
    min_image_positions = 256
    #: ... and "wide" (stride 1; measured faster than one big GEMM down to 7x7 maps).
    min_wide_positions = 32
    #: "direct" path (stride 1, no dilation) when a layer has at most this many taps
    #: C*kH*kW per output channel (a first layer: 1 channel 5x5, 3 channels 3x3) ...
    max_direct_taps = 27
    #: ... or at most this many output channels and at most ``max_direct_macs``
    #: multiply-adds C*kH*kW*O per output position (LeNet-5's 6 -> 16 5x5); with more
    #: channels the im2col GEMMs win (measurements in docs/kernels.md). 0 turns it off.
    max_direct_out_channels = 16
    max_direct_macs = 6400
    #: "tiled" path (CPU, one group, no dilation, outputs at least
    #: ``numba_cpu.TILE_PIXELS`` wide): register-tiled sums, no column matrix. False
    #: turns it off (for comparisons).
    use_tiles = True
    #: ... for layers with at least this many output channels (fewer leave most vector
    #: lanes idle: LeNet-5's 1 -> 6 first layer ran 0.8x as fast tiled) ...
    min_tiled_out_channels = 8
    #: ... and at least this many taps C*kH*kW (forward at batch 128 on 2 cores, tiled
    #: against direct: SimpleConvNet's 1 -> 30 5x5 1.28 against 1.81 ms, ResNet-20's
    #: 3 -> 16 3x3 1.53 against 2.15, deep_convnet's 1 -> 16 3x3 0.76 against 0.81) ...
    min_tiled_taps = 9
    #: ... and dx tiled too for at least this many input channels (the direct kernel's
    #: dx for fewer)
    min_tiled_in_channels = 8

    input_grad = True
    impl = None  # the path of the last forward; None: the reference layer's code ran
    #: "tiled" path: the backward that follows (see ``_tiled_backward_for``)
    tiled_backward = None
    x = None

    kernel_module = None  # name of the kernel module the last forward used

    @property
    def _k(self) -> Any:
        """The kernel module of the last forward (its name is kept: models stay copyable)."""
        return importlib.import_module(self.kernel_module)

    def forward(self, x: Any) -> Any:
        k = kernels_for(x)
        if k is None:  # reference mode: the layer's own code
            self.impl = None
            return super().forward(x)
        self.kernel_module = k.__name__
        self._check(x)
        self.x_shape = x.shape
        # backward follows the same path, whatever changes in between (its caches differ)
        self.impl = self._path(x.shape, backend.is_gpu_array(x))
        self.tiled_backward = None  # set again by the tiled path
        return getattr(self, f"_forward_{self.impl}")(x)

    def forward_folded(self, x: Any, scale: Any, shift: Any, relu: bool) -> Any:
        """``self(x) * scale + shift`` per output channel, then ``max(., 0)`` if ``relu``:
        an eval-mode BatchNorm (and a ReLU) after this convolution folded into it
        (:mod:`tinycnn.fast.graph`). The tiled path convolves with ``W * scale`` and the
        bias ``b * scale + shift`` and applies the ReLU to each band of rows while it is in
        cache; the other paths add one in-place pass. Keeps no cache: a backward needs a
        forward first."""
        k = kernels_for(x)
        self._check(x)
        if self._path(x.shape, backend.is_gpu_array(x)) == "tiled":
            top, _, left, _ = self._pads
            w = self.weight.data.astype(x.dtype, copy=False) * scale.reshape(-1, 1, 1, 1)
            b = shift if self.bias is None else (
                self.bias.data.astype(x.dtype, copy=False) * scale + shift)
            y = k.conv2d_tiled(x, w, b, self.stride, (top, left),
                               self.output_shape(x.shape)[2:], relu=relu)
        else:
            y = self.forward(x)
            fresh = y.flags.c_contiguous and y.flags.writeable
            out = y if fresh else backend.get_array_module(y).empty_like(y)
            y = k.channel_affine(y, scale, shift, relu, out)
        self._clear_cache()
        return y

    def backward(self, grad_out: Any) -> Any:
        if self.impl is None:
            dx = super().backward(grad_out)
            return dx if self.input_grad else None
        self._need_cache(self.x_shape)
        # the direct kernel sums it on the way
        direct = self.impl == "direct" or self.tiled_backward == "direct"
        if self.bias is not None and not direct:
            db = self._k.channel_sums(grad_out)
            self.bias.accumulate(db.astype(self.bias.dtype, copy=False))
        return getattr(self, f"_backward_{self.impl}")(grad_out)

    def _is_pointwise(self) -> bool:
        """A 1x1 kernel, stride 1, no padding: the convolution is a plain matrix product."""
        return self.kernel_size == (1, 1) and self.stride == (1, 1) and self._pads == (0,) * 4

    def _to_cols(self, x: Any) -> Any:
        """The column matrix ``(N*OH*OW, C*kH*kW)`` of x (padding applied)."""
        if self._is_pointwise():
            n, c, h, w = x.shape
            return x.transpose(0, 2, 3, 1).reshape(n * h * w, c)
        top, bottom, left, right = self._pads
        if bottom != top or right != left:
            # im2col pads symmetrically; add the one extra bottom row / right column here
            xp = backend.get_array_module(x)
            x = xp.pad(x, ((0, 0), (0, 0), (0, bottom - top), (0, right - left)))
        kh, kw = self.kernel_size
        return self._k.im2col(x, kh, kw, self.stride, (top, left), self.dilation)

    def _from_cols(self, dcols: Any) -> Any:
        """The adjoint of :meth:`_to_cols`: fold column gradients back to ``(N, C, H, W)``."""
        n, c, h, w = self.x_shape
        if self._is_pointwise():
            return dcols.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        top, bottom, left, right = self._pads
        padded_shape = (n, c, h + bottom - top, w + right - left)
        kh, kw = self.kernel_size
        k = self._k
        dx = k.col2im(dcols, padded_shape, kh, kw, self.stride, (top, left), self.dilation)
        return dx[:, :, :h, :w]

    def _split_groups(self, a: Any) -> Any:
        """``(M, g*K) -> (g, M, K)``: the columns of each group as one matrix."""
        return a.reshape(a.shape[0], self.groups, -1).transpose(1, 0, 2)

    def _join_groups(self, a: Any) -> Any:
        """``(g, M, K) -> (M, g*K)``, the inverse of :meth:`_split_groups`."""
        return a.transpose(1, 0, 2).reshape(a.shape[1], -1)

    def _matmul(self, a: Any, w: Any, transpose_w: bool) -> Any:
        """Per group, ``a_g @ W_g^T`` (``transpose_w``) or ``a_g @ W_g``, joined as ``(M, .)``.

        With one group this is a single 2-D product: stacked 3-D operands with these
        strides make NumPy leave BLAS for a loop about 10x slower.
        """
        if self.groups == 1:
            w2 = w.reshape(self.out_channels, -1)
            return a @ (w2.T if transpose_w else w2)
        w_g = w.reshape(self.groups, self.out_channels // self.groups, -1)
        return self._join_groups(
            threads.matmul(self._split_groups(a), w_g.transpose(0, 2, 1) if transpose_w else w_g)
        )

    def _path(self, x_shape: tuple[int, ...], on_gpu: bool) -> str:
        """Which implementation runs (all give the same results; see the class docstring).

        ``"depthwise"``: one filter per channel, a loop over taps (no column matrix);
        ``"tiled"``: CPU, one group, no dilation, enough output channels and taps, rows at
        least a tile wide: register-tiled sums (no column matrix);
        ``"wide"``: CPU, one group, stride 1, not 1x1: contiguous per-image columns of the
        padded input in cache-sized chunks;
        ``"pointwise"``: CPU, one group, 1x1 stride 1 unpadded: one GEMM for the batch;
        ``"direct"``: CPU, one group, stride 1, few taps (a first layer) or few output
        channels: tap loops;
        ``"images"``: CPU, one group, other strides, at least ``min_image_positions``
        outputs per image: per-image column matrices in cache-sized chunks;
        ``"rows"``: the one-big-GEMM im2col path (GPU, groups, asymmetric padding).
        """
        top, bottom, left, right = self._pads
        if top != bottom or left != right:
            return "rows"
        if self.groups == self.in_channels == self.out_channels and self.groups > 1:
            return "depthwise"
        if self.groups == 1 and self.use_image_chunks and not on_gpu:
            if self._is_pointwise():
                return "pointwise"
            kh, kw = self.kernel_size
            taps = self.in_channels * kh * kw
            if self._tiles_pay(x_shape, taps):
                return "tiled"
            if self._direct_pays(taps):
                return "direct"
            _, _, oh, ow = self.output_shape(x_shape)
            # measured: with fewer positions per image the per-image GEMMs are too small
            if self.stride != (1, 1):
                return "images" if oh * ow >= self.min_image_positions else "rows"
            if oh * ow >= self.min_wide_positions:
                # no dx (a first layer): a cached column matrix makes dW one GEMM
                cols_bytes = x_shape[0] * oh * ow * self.in_channels * kh * kw * 4  # float32
                small = cols_bytes <= self.max_cached_cols_bytes
                return "rows" if small and not self.input_grad else "wide"
        return "rows"

    def _tiles_pay(self, x_shape: tuple[int, ...], taps: int) -> bool:
        """No dilation, rows wide enough for a tile, enough output channels, and (stride 1)
        a direct weight gradient or enough outputs for the wide path's backward."""
        if not self.use_tiles or self.dilation != (1, 1):
            return False
        try:
            tile = _load("numba_cpu").TILE_PIXELS  # only the Numba kernels have tiles
        except ImportError:
            return False
        _, _, oh, ow = self.output_shape(x_shape)
        if (ow < tile or oh < 1 or self.out_channels < self.min_tiled_out_channels
                or taps < self.min_tiled_taps):
            return False
        if self.stride != (1, 1):  # backward: the per-image or the one-GEMM path's
            return True
        # the direct kernel's backward, or the wide path's (at least 32 outputs an image)
        return self._direct_pays(taps) or oh * ow >= self.min_wide_positions

    def _tiled_dx_fits(self, width: int) -> bool:
        """dx as a tiled convolution: rows wide enough, padding at most ``k - 1``."""
        top, _, left, _ = self._pads
        kh, kw = self.kernel_size
        return width >= _load("numba_cpu").TILE_PIXELS and top <= kh - 1 and left <= kw - 1

    def _direct_pays(self, taps: int) -> bool:
        """Stride 1, no dilation, and few taps or few output channels (see the limits)."""
        if self.stride != (1, 1) or self.dilation != (1, 1) or self.max_direct_macs <= 0:
            return False
        narrow = (self.out_channels <= self.max_direct_out_channels
                  and taps * self.out_channels <= self.max_direct_macs)
        return taps <= self.max_direct_taps or narrow

    # --- one big GEMM over the (N*OH*OW, C*kH*kW) column matrix

    def _forward_rows(self, x: Any) -> Any:
        out_shape = self.output_shape(x.shape)
        cols = self._to_cols(x)  # (M, C*kH*kW) with M = N*OH*OW
        # Keep a small column matrix for backward; for a large one keep x and rebuild it.
        keep = cols.nbytes <= self.max_cached_cols_bytes
        self.cols, self.x = (cols, None) if keep else (None, x)
        # Compute in x's dtype: a float32 input never meets float64 weights.
        w = self.weight.data.astype(x.dtype, copy=False)
        rows = self._matmul(cols, w, transpose_w=True)  # (M, O)
        # rows are ordered (n, oh, ow): add the bias and go back to (N, O, OH, OW) in one pass
        bias = self._bias_data()
        return self._k.rows_to_nchw(rows, bias, out_shape)

    def _backward_rows(self, grad_out: Any) -> Any:
        grad = grad_out.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)  # (M, O)
        if self.weight.requires_grad:
            cols = self.cols if self.cols is not None else self._to_cols(self.x)
            if self.groups == 1:
                dw = grad.T @ cols  # (O, C*kH*kW), one BLAS product
            else:
                dw = threads.matmul(self._split_groups(grad).transpose(0, 2, 1),
                                    self._split_groups(cols))
            dw = dw.reshape(self.weight.shape).astype(self.weight.dtype, copy=False)
            self.weight.accumulate(dw)
            del cols  # a rebuilt column matrix can go before dcols is made
        if not self.input_grad:
            return None
        return self._rows_input_grad(grad)

    def _rows_input_grad(self, grad: Any) -> Any:
        """dx from ``grad (M, O)``: ``col2im(grad @ W_col)``."""
        w = self.weight.data.astype(grad.dtype, copy=False)
        dcols = self._matmul(grad, w, transpose_w=False)  # (M, C*kH*kW)
        return self._from_cols(dcols)

    # --- per image: Y_n = W_col @ cols_n lands in (O, OH*OW), i.e. NCHW, with no transpose

    def _image_cols(self, x: Any, out: Any) -> Any:
        """``(n, C*kH*kW, OH*OW)`` column matrices of a chunk of images."""
        kh, kw = self.kernel_size
        top, _, left, _ = self._pads
        k = self._k
        out = None if out is None else out[: x.shape[0]]  # the last chunk may be shorter
        return k.im2col_images(x, kh, kw, self.stride, (top, left), self.dilation, out=out)

    def _chunk(self, out_shape: tuple[int, ...], itemsize: int) -> int:
        """Images per chunk: the chunk's column matrix stays about ``chunk_bytes`` (in L2)."""
        kh, kw = self.kernel_size
        per_image = self.in_channels * kh * kw * out_shape[2] * out_shape[3] * itemsize
        return max(1, min(out_shape[0], self.chunk_bytes // per_image))

    def _forward_images(self, x: Any) -> Any:
        xp = backend.get_array_module(x)
        n, o, oh, ow = out_shape = self.output_shape(x.shape)
        self.x, self.cols = x, None  # backward rebuilds each chunk's columns (cheap, in cache)
        w = self.weight.data.astype(x.dtype, copy=False).reshape(o, -1)
        y = xp.empty(out_shape, dtype=x.dtype)
        y3 = y.reshape(n, o, oh * ow)
        step, buf = self._chunk(out_shape, x.dtype.itemsize), None
        for s in range(0, n, step):
            cols = self._image_cols(x[s : s + step], buf)
            threads.matmul(w, cols, out=y3[s : s + step])  # (O, CKK) @ (n, CKK, L) -> (n, O, L)
            if self.bias is not None:
                y3[s : s + step] += self.bias.data.astype(x.dtype, copy=False)[:, None]
            buf = cols if buf is None else buf
        return y

    def _backward_images(self, grad_out: Any) -> Any:
        xp = backend.get_array_module(grad_out)
        x = self.x
        n, c, h, wd = x.shape
        o = self.out_channels
        positions = grad_out.shape[2] * grad_out.shape[3]  # not -1: fails for an empty batch
        g3 = xp.ascontiguousarray(grad_out).reshape(n, o, positions)  # (N, O, L): G_n per image
        w = self.weight.data.astype(g3.dtype, copy=False).reshape(o, -1)
        need_w = self.weight.requires_grad
        dw = xp.zeros(w.shape, dtype=g3.dtype) if need_w else None
        dx = xp.empty(x.shape, dtype=g3.dtype) if self.input_grad else None
        step, buf = self._chunk(grad_out.shape, g3.dtype.itemsize), None
        kh, kw = self.kernel_size
        top, _, left, _ = self._pads
        for s in range(0, n, step):
            g = g3[s : s + step]
            if need_w:  # dW = sum_n G_n cols_n^T
                cols = self._image_cols(x[s : s + step], buf)
                threads.matmul_sum(g, cols.transpose(0, 2, 1), dw)
                buf = cols if buf is None else buf
            if dx is None:
                continue
            dcols = threads.matmul(w.T, g, out=buf[: g.shape[0]] if buf is not None else None)
            buf = dcols if buf is None else buf
            self._k.col2im_images(
                dcols, dx[s : s + step].shape, kh, kw, self.stride, (top, left),
                self.dilation, out=dx[s : s + step],
            )
        if need_w:
            self.weight.accumulate(
                dw.reshape(self.weight.shape).astype(self.weight.dtype, copy=False)
            )
        return dx

    # --- 1x1, stride 1, unpadded: one GEMM for the whole batch in (C, N*H*W) layout

    def _forward_pointwise(self, x: Any) -> Any:
        """``Y^T = W X^T`` with ``X^T = x`` as ``(C, N*H*W)``: one BLAS call, not one per image."""
        xp = backend.get_array_module(x)
        n, c, h, w = x.shape
        o = self.out_channels
        xt = xp.ascontiguousarray(x.reshape(n, c, h * w).transpose(1, 0, 2)).reshape(c, -1)
        self.x, self.cols = xt, None  # backward needs x in this layout
        wt = self.weight.data.astype(x.dtype, copy=False).reshape(o, c)
        yt = (wt @ xt).reshape(o, n, h, w).transpose(1, 0, 2, 3)
        y = xp.empty((n, o, h, w), dtype=x.dtype)
        return self._k.crop_bias(yt, self._bias_data(), y)

    def _backward_pointwise(self, grad_out: Any) -> Any:
        """``dW = G^T X``, ``dx^T = W^T G^T`` with ``G^T`` as ``(O, N*H*W)``: two BLAS calls."""
        xp = backend.get_array_module(grad_out)
        n, c, h, w = self.x_shape
        o = self.out_channels
        gt = xp.ascontiguousarray(grad_out.reshape(n, o, h * w).transpose(1, 0, 2))
        gt = gt.reshape(o, -1)
        if self.weight.requires_grad:
            dw = (gt @ self.x.T).reshape(self.weight.shape)
            self.weight.accumulate(dw.astype(self.weight.dtype, copy=False))
        if not self.input_grad:
            return None
        wt = self.weight.data.astype(gt.dtype, copy=False).reshape(o, c)
        dxt = (wt.T @ gt).reshape(c, n, h, w).transpose(1, 0, 2, 3)
        dx = xp.empty(self.x_shape, dtype=gt.dtype)
        return self._k.crop_bias(dxt, None, dx)

    def _bias_data(self) -> Any:
        """The bias array, or None without one."""
        return None if self.bias is None else self.bias.data

    # --- stride 1: contiguous columns of the padded input, output rows of padded width

    def _wide_step(self, rows: int, length: int, itemsize: int, n: int) -> int:
        """Images per chunk so that a chunk's ``(rows, length)`` columns stay in L2."""
        size = self.split_chunk_bytes if self.split_images else self.chunk_bytes
        return max(1, min(n, size // (rows * length * itemsize)))

    def _forward_wide(self, x: Any) -> Any:
        xp = backend.get_array_module(x)
        n, o, oh, ow = out_shape = self.output_shape(x.shape)
        top, _, left, _ = self._pads
        self.x = self._k.pad2d(x, top, left)  # backward rebuilds the columns
        self.cols = None
        wp = self.x.shape[3]
        w = self.weight.data.astype(x.dtype, copy=False).reshape(o, -1)
        length = oh * wp
        y = xp.empty(out_shape, dtype=x.dtype)
        bias = self._bias_data()

        def work(lo: int, hi: int, k: Any) -> None:  # images [lo, hi), chunk by chunk
            step = self._wide_step(w.shape[1], length, x.dtype.itemsize, hi - lo)
            cols = xp.empty((step, w.shape[1], length), dtype=x.dtype)
            rows = xp.empty((step, o, length), dtype=x.dtype)
            for s in range(lo, hi, step):
                nb = min(step, hi - s)
                k.im2col_wide(self.x[s : s + nb], *self.kernel_size, self.dilation,
                              out=cols[:nb])
                threads.matmul(w, cols[:nb], out=rows[:nb])  # (O, CKK) @ (nb, CKK, OH*Wp)
                # drop the wrapped columns, add the bias, write NCHW
                k.crop_bias(rows[:nb].reshape(nb, o, oh, wp), bias, y[s : s + nb])

        threads.split_images(n, work, self._k, self.split_images)
        return y

    def _backward_wide(self, grad_out: Any) -> Any:
        """dW and dx of a stride-1 convolution, image chunk by image chunk.

        With dx: ``Gc_n = im2col_wide(pad(G_n, d*(k-1) - p))`` (rows ``(o, i', j')``,
        ``i' = kH-1-i``), ``dx_n = Wf @ Gc_n`` with ``Wf[c, (o, i', j')] = W[o, c, i, j]``
        and ``dW[o, c, i, j] = sum_n (Gc_n @ x_n^T)[(o, i', j'), c]``, x_n widened with zero
        columns to Gc's row width. Without dx: ``dW = sum_n G_n cols_n^T``, G_n widened
        with zero columns to the padded width of x.
        """
        xp = backend.get_array_module(grad_out)
        xpad = self.x
        n, c, h, w = self.x_shape
        o, (kh, kw), (dh, dil_w) = self.out_channels, self.kernel_size, self.dilation
        top, _, left, _ = self._pads
        g = xp.ascontiguousarray(grad_out)
        oh, ow = g.shape[2:]
        wt = self.weight.data.astype(g.dtype, copy=False)
        need_w = self.weight.requires_grad
        if not self.input_grad:
            if need_w:
                self.weight.accumulate(self._wide_weight_grad(g, xpad).reshape(wt.shape)
                                       .astype(self.weight.dtype, copy=False))
            return None
        # G padded by d*(k-1) - p (cropped where that is negative): its stride-1
        # convolution with the flipped kernel has the input's size H x W.
        ph, pw = dh * (kh - 1) - top, dil_w * (kw - 1) - left
        g = g[:, :, max(-ph, 0) : oh - max(-ph, 0), max(-pw, 0) : ow - max(-pw, 0)]
        ph, pw = max(ph, 0), max(pw, 0)
        gpad = self._k.pad2d(g, ph, pw)
        wg = gpad.shape[3]  # = W + dw*(kw - 1): the row width of Gc and of dx before the crop
        wf = xp.ascontiguousarray(wt[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)
        length = h * wg
        dx = xp.empty(self.x_shape, dtype=g.dtype)
        dw_parts: dict[int, Any] = {}  # per range of images, summed in a fixed order

        def work(lo: int, hi: int, k: Any) -> None:  # images [lo, hi), chunk by chunk
            step = self._wide_step(wf.shape[1], length, g.dtype.itemsize, hi - lo)
            gc = xp.empty((step, wf.shape[1], length), dtype=g.dtype)
            dx_rows = xp.empty((step, c, length), dtype=g.dtype)
            x_wide = xp.empty((step, c, h, wg), dtype=g.dtype)  # x, zero columns up to wg
            dw_rows = xp.zeros((wf.shape[1], c), dtype=g.dtype) if need_w else None
            for s in range(lo, hi, step):
                nb = min(step, hi - s)
                k.im2col_wide(gpad[s : s + nb], kh, kw, self.dilation, out=gc[:nb])
                threads.matmul(wf, gc[:nb], out=dx_rows[:nb])  # (C, OKK) @ (nb, OKK, H*Wg)
                k.crop_bias(dx_rows[:nb].reshape(nb, c, h, wg), None, dx[s : s + nb])
                if need_w:
                    k.widen(xpad[s : s + nb, :, top : top + h, left : left + w], x_wide[:nb])
                    xw = x_wide[:nb].reshape(nb, c, length)
                    threads.matmul_sum(gc[:nb], xw.transpose(0, 2, 1), dw_rows)
            dw_parts[lo] = dw_rows

        threads.split_images(n, work, self._k, self.split_images)
        if need_w:
            dw_rows = sum(dw_parts[lo] for lo in sorted(dw_parts))
        if need_w:  # rows (o, i', j'), columns c: flip the taps back
            d = dw_rows.reshape(o, kh, kw, c)[:, ::-1, ::-1, :].transpose(0, 3, 1, 2)
            self.weight.accumulate(xp.ascontiguousarray(d, dtype=self.weight.dtype))
        return dx

    def _wide_weight_grad(self, g: Any, xpad: Any) -> Any:
        """``dW = sum_n G_n cols_n^T`` as ``(O, C*kH*kW)``, one GEMM per chunk of images.

        The chunk's columns are laid out ``(C*kH*kW, nb, OH*Wp)`` and G (widened with zero
        columns to the padded width) ``(O, nb, OH*Wp)``, so the sum over images is inside
        the matrix product.
        """
        xp = backend.get_array_module(g)
        n, o, oh, ow = g.shape
        wp = xpad.shape[3]
        rows = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        length = oh * wp
        dw_parts: dict[int, Any] = {}  # per range of images, summed in a fixed order

        def work(lo: int, hi: int, k: Any) -> None:  # images [lo, hi), chunk by chunk
            step = self._wide_step(rows, length, g.dtype.itemsize, hi - lo)
            cols = xp.empty((rows, step, length), dtype=g.dtype)
            g_wide = xp.empty((o, step, oh, wp), dtype=g.dtype)
            dw = xp.zeros((o, rows), dtype=g.dtype)
            for s in range(lo, hi, step):
                nb = min(step, hi - s)
                c_view, g_view = cols[:, :nb], g_wide[:, :nb]
                k.im2col_wide(xpad[s : s + nb], *self.kernel_size, self.dilation,
                              out=c_view.transpose(1, 0, 2))
                k.widen(g[s : s + nb], g_view.transpose(1, 0, 2, 3))
                # full chunks are contiguous already; only the short last one is copied
                g2 = xp.ascontiguousarray(g_view).reshape(o, -1)
                dw += g2 @ xp.ascontiguousarray(c_view).reshape(rows, -1).T
            dw_parts[lo] = dw

        threads.split_images(n, work, self._k, self.split_images)
        return sum(dw_parts[lo] for lo in sorted(dw_parts))

    # --- depthwise (groups == in == out channels): a loop over the kH*kW taps

    def _forward_depthwise(self, x: Any) -> Any:
        self.x, self.cols = x, None
        top, _, left, _ = self._pads
        y = self._k.depthwise_conv2d_forward(
            x, self.weight.data, self.stride, (top, left), self.dilation
        )
        if self.bias is not None:
            y += self.bias.data.astype(x.dtype, copy=False).reshape(1, -1, 1, 1)
        return y

    def _backward_depthwise(self, grad_out: Any) -> Any:
        top, _, left, _ = self._pads
        dx, dw = self._k.depthwise_conv2d_backward(
            grad_out, self.x, self.weight.data, self.stride, (top, left), self.dilation,
            input_grad=self.input_grad,
        )
        self.weight.accumulate(dw.astype(self.weight.dtype, copy=False))
        return dx

    # --- direct (few taps): a loop over the C*kH*kW taps per output plane

    # --- register-tiled sums, no column matrix (numba_cpu.conv2d_tiled)

    def _forward_tiled(self, x: Any) -> Any:
        top, _, left, _ = self._pads
        self.tiled_backward = self._tiled_backward_for(x.shape)
        # the wide path's backward reads the padded input; the others pad where they read
        self.x = self._k.pad2d(x, top, left) if self.tiled_backward == "wide" else x
        self.cols = None
        w = self.weight.data.astype(x.dtype, copy=False)
        return self._k.conv2d_tiled(x, w, self._bias_data(), self.stride, (top, left),
                                    self.output_shape(x.shape)[2:])

    def _tiled_backward_for(self, x_shape: tuple[int, ...]) -> str:
        """How the tiled path's backward runs (measured at batch 128 on 2 cores):

        * ``"tiles"`` (stride 1, at least ``min_tiled_in_channels``): dW and dx both
          register-tiled (dW alone: 16 -> 16 channels at 32x32 5.6 ms against 7.2 for the
          direct kernel's, at 28x28 3.8 against 6.0; 32 -> 32 at 16x16 4.7 against 9.2);
        * ``"mixed"`` (stride 1, ``TILE_PIXELS`` up to ``min_tiled_in_channels`` input
          channels, where the direct path pays): a tiled dW and the direct kernel's dx
          (most lanes of a tiled dx would idle; LeNet-5's 6 -> 16 5x5 at 14x14: 0.67 +
          1.3 ms against 2.65 for the direct kernel's dW and dx);
        * ``"direct"``: fewer input channels, few taps or output channels: the direct
          kernel's dW (and db) and dx;
        * ``"phases"`` (strided, at least ``TILE_PIXELS`` input channels, each phase of
          dx at least ``TILE_PIXELS`` wide): a tiled dW and dx as one stride-1 tiled
          convolution of G per phase of dx (``numba_cpu.conv2d_tiled_input_grad``);
        * ``"strided"`` (the same with narrower phases): a tiled dW and the
          one-GEMM path's dx (16 -> 32, stride 2, at 32x32: 11.5 ms against 24-31 for the
          per-image path's);
        * otherwise the backward of the path that tiles replaced (``"wide"``, ``"images"``,
          ``"rows"``).
        """
        kh, kw = self.kernel_size
        enough = self.in_channels >= self._k.TILE_PIXELS
        _, _, oh, ow = self.output_shape(x_shape)
        if self.stride != (1, 1):
            if enough:
                sh, sw = self.stride
                phases_fit = min(x_shape[2] // sh, x_shape[3] // sw) >= self._k.TILE_PIXELS
                return "phases" if phases_fit else "strided"
            return "images" if oh * ow >= self.min_image_positions else "rows"
        if (enough and self.in_channels >= self.min_tiled_in_channels
                and (not self.input_grad or self._tiled_dx_fits(x_shape[3]))):
            return "tiles"
        if self._direct_pays(self.in_channels * kh * kw):
            return "mixed" if enough else "direct"
        return "wide"

    def _backward_tiled(self, grad_out: Any) -> Any:
        """The backward :meth:`_tiled_backward_for` chose. dx, where tiled, is the tiled
        convolution of G padded by ``k - 1 - p`` with the flipped, transposed kernel."""
        mode = self.tiled_backward
        if mode in ("wide", "images", "rows"):
            return getattr(self, f"_backward_{mode}")(grad_out)
        xp = backend.get_array_module(grad_out)
        k = self._k
        (top, _, left, _), (kh, kw) = self._pads, self.kernel_size
        g = xp.ascontiguousarray(grad_out)
        w = self.weight.data.astype(g.dtype, copy=False)
        if mode == "direct":
            return self._backward_direct(g)
        dx = None
        if self.weight.requires_grad:
            dw = k.conv2d_tiled_weight_grad(g, self.x, kh, kw, self.stride, (top, left))
            self.weight.accumulate(dw.astype(self.weight.dtype, copy=False))
        if mode == "mixed" and self.input_grad:
            dx = k.conv2d_direct_backward(g, self.x, w, (top, left), weight_grad=False)[0]
        elif mode == "tiles" and self.input_grad:
            flipped = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            dx = k.conv2d_tiled(g, flipped, None, (1, 1), (kh - 1 - top, kw - 1 - left),
                                self.x_shape[2:])
        elif mode == "phases" and self.input_grad:
            dx = k.conv2d_tiled_input_grad(g, w, self.stride, (top, left), self.x_shape[2:])
        elif mode == "strided" and self.input_grad:
            dx = self._rows_input_grad(g.transpose(0, 2, 3, 1).reshape(-1, self.out_channels))
        return dx if self.input_grad else None

    def _forward_direct(self, x: Any) -> Any:
        self.x, self.cols = x, None
        top, _, left, _ = self._pads
        return self._k.conv2d_direct_forward(
            x, self.weight.data, self._bias_data(), (top, left)
        )

    def _backward_direct(self, grad_out: Any, input_grad: bool | None = None) -> Any:
        """dW, db and (unless ``input_grad`` is False; default: the layer's setting) dx."""
        top, _, left, _ = self._pads
        dx, dw, db = self._k.conv2d_direct_backward(
            grad_out, self.x, self.weight.data, (top, left),
            input_grad=self.input_grad if input_grad is None else input_grad,
        )
        self.weight.accumulate(dw.astype(self.weight.dtype, copy=False))
        if self.bias is not None:
            self.bias.accumulate(db.astype(self.bias.dtype, copy=False))
        return dx

    def _clear_cache(self) -> None:
        super()._clear_cache()
        self.x = None
        self.impl = None
        self.tiled_backward = None
