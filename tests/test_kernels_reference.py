"""The engine's convolution and pooling kernels against their loop definitions.

Both the plain twins (:mod:`tinycnn.fast.plain`, the oracle of the fast kernels) and the
Numba kernels (:mod:`tinycnn.fast.numba_cpu`) are checked against plain loops here; the
layers themselves are checked against the same loops in test_conv.py and test_pool.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycnn.layers.conv import out_size


def kernels_of(name: str):
    """The plain twins for ``"reference"``, the Numba kernels for ``"numba"``."""
    if name == "reference":
        from tinycnn.fast import plain

        return plain
    from tinycnn.fast import numba_cpu

    return numba_cpu


@st.composite
def window_cases(draw, max_pad: str = "any"):
    """Shapes, kernel, stride, padding and dilation that give at least one output."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if max_pad == "half":  # pooling: PyTorch's rule, no dilation
        ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
        dh = dw = 1
    else:
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = max(1, dh * (kh - 1) + 1 - 2 * ph) + draw(st.integers(0, 4))
    w = max(1, dw * (kw - 1) + 1 - 2 * pw) + draw(st.integers(0, 4))
    return {
        "shape": (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w),
        "k": (kh, kw),
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "padding": (ph, pw),
        "dilation": (dh, dw),
        "seed": draw(st.integers(0, 2**16)),
    }


def loop_im2col(x, kh, kw, stride, padding, dilation):
    """cols[(n, oh, ow), (c, i, j)] = x_pad[n, c, oh*sH + i*dH, ow*sW + j*dW]."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.zeros((n * oh * ow, c * kh * kw), dtype=x.dtype)
    for b in range(n):
        for r in range(oh):
            for s in range(ow):
                for ch in range(c):
                    for i in range(kh):
                        for j in range(kw):
                            cols[(b * oh + r) * ow + s, (ch * kh + i) * kw + j] = xpad[
                                b, ch, r * sh + i * dh, s * sw + j * dw
                            ]
    return cols


def loop_col2im(cols, x_shape, kh, kw, stride, padding, dilation):
    """Every column entry added back onto the (padded) pixel it was copied from."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
    img = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for b in range(n):
        for r in range(oh):
            for s in range(ow):
                for ch in range(c):
                    for i in range(kh):
                        for j in range(kw):
                            img[b, ch, r * sh + i * dh, s * sw + j * dw] += cols[
                                (b * oh + r) * ow + s, (ch * kh + i) * kw + j
                            ]
    return img[:, :, ph : ph + h, pw : pw + w]


def loop_pool(x, kh, kw, stride, padding):
    """Max (first maximum wins), its flat window index, and the zero-padded window mean."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    mx, arg, avg = (np.zeros((n, c, oh, ow)) for _ in range(3))
    for b in range(n):
        for ch in range(c):
            for r in range(oh):
                for s in range(ow):
                    best, where, total = -np.inf, -1, 0.0
                    for i in range(kh):
                        for j in range(kw):
                            y, xx = r * sh + i - ph, s * sw + j - pw
                            inside = 0 <= y < h and 0 <= xx < w
                            v = x[b, ch, y, xx] if inside else -np.inf
                            total += v if inside else 0.0
                            if v > best:
                                best, where = v, i * kw + j
                    mx[b, ch, r, s], arg[b, ch, r, s] = best, where
                    avg[b, ch, r, s] = total / (kh * kw)
    return mx, arg.astype(np.int64), avg


def loop_pool_backward(g, argmax, x_shape, kh, kw, stride, padding):
    """(max-pool dx, avg-pool dx) by scattering each output's gradient."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    dmax, davg = np.zeros(x_shape), np.zeros(x_shape)
    for b, ch, r, s in np.ndindex(*g.shape):
        a = int(argmax[b, ch, r, s])
        y, xx = r * sh + a // kw - ph, s * sw + a % kw - pw
        dmax[b, ch, y, xx] += g[b, ch, r, s]
        for i in range(kh):
            for j in range(kw):
                y, xx = r * sh + i - ph, s * sw + j - pw
                if 0 <= y < h and 0 <= xx < w:
                    davg[b, ch, y, xx] += g[b, ch, r, s] / (kh * kw)
    return dmax, davg


def test_out_size_formula():
    # brute force: count window starts whose (dilated) window fits inside the padded size
    for size in range(1, 9):
        for k in range(1, 4):
            for s in range(1, 4):
                for p in range(3):
                    for d in range(1, 3):
                        span = d * (k - 1) + 1
                        fits = sum(1 for t in range(0, size + 2 * p, s) if t + span <= size + 2 * p)
                        if fits:
                            assert out_size(size, k, s, p, d) == fits


@settings(max_examples=25, deadline=None)
@given(case=window_cases())
def test_im2col_and_col2im_match_loops(kernel_set, case):
    k = kernels_of(kernel_set)
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    geometry = (*case["k"], case["stride"], case["padding"], case["dilation"])
    cols = k.im2col(x, *geometry)
    np.testing.assert_array_equal(cols, loop_im2col(x, *geometry))
    c = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(
        k.col2im(c, x.shape, *geometry), loop_col2im(c, x.shape, *geometry), rtol=1e-12,
        atol=1e-12,
    )


@settings(max_examples=25, deadline=None)
@given(case=window_cases())
def test_col2im_is_the_adjoint_of_im2col(kernel_set, case):
    k = kernels_of(kernel_set)
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    geometry = (*case["k"], case["stride"], case["padding"], case["dilation"])
    cols = k.im2col(x, *geometry)
    c = rng.standard_normal(cols.shape)
    lhs = float(np.sum(cols * c))  # <im2col(x), c>
    rhs = float(np.sum(x * k.col2im(c, x.shape, *geometry)))  # <x, col2im(c)>
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@settings(max_examples=25, deadline=None)
@given(case=window_cases(max_pad="half"))
def test_pooling_kernels_match_loops(kernel_set, case):
    k = kernels_of(kernel_set)
    rng = np.random.default_rng(case["seed"])
    # one decimal: ties are frequent, so the first-maximum rule is exercised
    x = np.round(rng.standard_normal(case["shape"]), 1)
    geometry = (*case["k"], case["stride"], case["padding"])
    mx, arg, avg = loop_pool(x, *geometry)
    out, argmax = k.maxpool2d_forward(x, *geometry)
    np.testing.assert_array_equal(out, mx)
    np.testing.assert_array_equal(argmax, arg)
    np.testing.assert_allclose(k.avgpool2d_forward(x, *geometry), avg, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(out.shape)
    dmax, davg = loop_pool_backward(g, argmax, x.shape, *geometry)
    np.testing.assert_allclose(
        k.maxpool2d_backward(g, argmax, x.shape, *geometry), dmax, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        k.avgpool2d_backward(g, x.shape, *geometry), davg, rtol=1e-12, atol=1e-12
    )


def test_kernels_accept_strided_views_and_keep_float32(kernel_set):
    k = kernels_of(kernel_set)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((5, 6, 3, 2)).astype(np.float32)
    x = base.transpose(3, 2, 1, 0)  # (2, 3, 6, 5), not contiguous
    dense = np.ascontiguousarray(x)
    cols = k.im2col(x, 3, 2, (1, 2), (1, 1), (2, 1))
    np.testing.assert_array_equal(cols, loop_im2col(dense, 3, 2, (1, 2), (1, 1), (2, 1)))
    dx = k.col2im(cols.T.copy().T, x.shape, 3, 2, (1, 2), (1, 1), (2, 1))  # Fortran order
    out, argmax = k.maxpool2d_forward(x, 2, 2, (2, 2), (1, 0))
    avg = k.avgpool2d_forward(x, 2, 2, (2, 2), (1, 0))
    g = np.ones_like(out)[..., ::-1]  # a negative-stride view
    dmax = k.maxpool2d_backward(g, argmax, x.shape, 2, 2, (2, 2), (1, 0))
    davg = k.avgpool2d_backward(g, x.shape, 2, 2, (2, 2), (1, 0))
    for a in (cols, dx, out, avg, dmax, davg):
        assert a.dtype == np.float32
    np.testing.assert_array_equal(out, loop_pool(dense.astype(np.float64), 2, 2, (2, 2), (1, 0))[0])
