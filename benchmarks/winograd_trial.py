"""Winograd F(2x2, 3x3) tried for the engine's stride-1 3x3 convolutions, and measured.

Issue 17's first direction: the transforms as Numba passes, the 16 element-wise products
as matrix products (2.25x fewer multiplications than a direct 3x3 convolution). This
script holds the trial: a plain NumPy version (the oracle), the Numba transforms, and a
timing of each stage on one core against the engine's current path for the same layer::

    python benchmarks/winograd_trial.py

Finding (see benchmarks/RESULTS.md, "Winograd trial"): the 16 products are fast, but the
two transforms cost more than the whole current convolution at 16-32 channels. Their
loops over the tiles of a row are only 4-16 long, too short for LLVM to vectorize, so
they run at a fraction of memory speed. The engine therefore does not use Winograd.
"""

from __future__ import annotations

import time
from typing import Any

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

import tinycnn  # before NumPy: its thread defaults must precede OpenBLAS's load
from tinycnn.fast import numba_cpu, threads  # noqa: E402

# Winograd F(2x2, 3x3) (Lavin and Gray, 2016): a 2x2 tile of a stride-1 3x3 convolution's
# output from a 4x4 tile d of its input with 16 multiplications instead of 36:
#     Y = A^T [ (G g G^T) * (B^T d B) ] A      (* element-wise, summed over input channels)
# Summed over channels, the 16 element-wise products become 16 matrix products
# M[p] = U[p] @ V[p] of the transformed filters U (O, C) and tiles V (C, tiles).
WINOGRAD_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
WINOGRAD_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
WINOGRAD_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def winograd_tiles(out_h: int, out_w: int) -> tuple[int, int]:
    """Rows and columns of 2x2 output tiles that cover an ``out_h x out_w`` output."""
    return (out_h + 1) // 2, (out_w + 1) // 2


def winograd_weights(weight: Any) -> Any:
    """``U[p] = (G g G^T)[p]`` of every filter: ``(O, C, 3, 3) -> (16, O, C)``."""
    g = np.asarray(WINOGRAD_G, dtype=weight.dtype)
    o, c = weight.shape[:2]
    return np.einsum("ai,ocij,bj->aboc", g, weight, g).reshape(16, o, c)


def plain_winograd_input(xpad: Any, th: int, tw: int, out: Any) -> Any:
    """``V[p] = (B^T d B)[p]`` of every 4x4 input tile: ``(N, C, Hp, Wp) -> (16, C, N*th*tw)``.

    Tile ``(ti, tj)`` of an image starts at row ``2*ti``, column ``2*tj`` of the padded
    input; rows and columns past its edge count as zeros. Columns of ``out`` are ordered
    ``(n, ti, tj)``.
    """
    n, c, hp, wp = xpad.shape
    full = np.zeros((n, c, 2 * th + 2, 2 * tw + 2), dtype=xpad.dtype)
    rows, cols = min(hp, 2 * th + 2), min(wp, 2 * tw + 2)
    full[:, :, :rows, :cols] = xpad[:, :, :rows, :cols]
    d = np.stack([full[:, :, a : a + 2 * th : 2, b : b + 2 * tw : 2]
                  for a in range(4) for b in range(4)], axis=-1).reshape(n, c, th, tw, 4, 4)
    bt = np.asarray(WINOGRAD_BT, dtype=xpad.dtype)
    v = np.einsum("ia,nctuab,jb->ijcntu", bt, d, bt)
    out[...] = v.reshape(16, c, n * th * tw)
    return out


def plain_winograd_output(m: Any, bias: Any, out: Any) -> Any:
    """``Y = A^T M A`` of every tile, plus the bias: ``(16, O, N*th*tw) -> out (N, O, OH, OW)``."""
    n, o, oh, ow = out.shape
    th, tw = winograd_tiles(oh, ow)
    at = np.asarray(WINOGRAD_AT, dtype=m.dtype)
    y = np.einsum("ai,ijontu,bj->notaub", at, m.reshape(4, 4, o, n, th, tw), at)
    y = y.reshape(n, o, 2 * th, 2 * tw)[:, :, :oh, :ow]
    out[...] = y if bias is None else y + bias.reshape(1, -1, 1, 1)
    return out




@njit(parallel=True, cache=True)
def _winograd_input_kernel(xpad, th, tw, v):  # pragma: no cover
    # B^T d B of each 4x4 tile in scalars (32 additions), over the tiles of one tile row at
    # a time: four input row views read at stride 2, sixteen output row views from index 0,
    # no branches, so LLVM vectorizes the loop over tiles (a per-tile branch for the edge
    # and indexing into the 3-D arrays made it 3x slower, measured on one core).
    n, c_in = xpad.shape[:2]
    tiles = th * tw
    for nc in prange(n * c_in):
        i = nc // c_in
        c = nc - i * c_in
        plane = xpad[i, c]
        for ti in range(th):
            x0, x1, x2, x3 = plane[2 * ti], plane[2 * ti + 1], plane[2 * ti + 2], plane[2 * ti + 3]
            lo = i * tiles + ti * tw
            hi = lo + tw
            v0, v1, v2, v3 = v[0, c, lo:hi], v[1, c, lo:hi], v[2, c, lo:hi], v[3, c, lo:hi]
            v4, v5, v6, v7 = v[4, c, lo:hi], v[5, c, lo:hi], v[6, c, lo:hi], v[7, c, lo:hi]
            v8, v9, v10, v11 = v[8, c, lo:hi], v[9, c, lo:hi], v[10, c, lo:hi], v[11, c, lo:hi]
            v12, v13, v14, v15 = v[12, c, lo:hi], v[13, c, lo:hi], v[14, c, lo:hi], v[15, c, lo:hi]
            for tj in range(tw):
                s = 2 * tj
                # t = B^T d, one column b at a time: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3
                t00, t10, t20, t30 = x0[s] - x2[s], x1[s] + x2[s], x2[s] - x1[s], x1[s] - x3[s]
                t01, t11 = x0[s + 1] - x2[s + 1], x1[s + 1] + x2[s + 1]
                t21, t31 = x2[s + 1] - x1[s + 1], x1[s + 1] - x3[s + 1]
                t02, t12 = x0[s + 2] - x2[s + 2], x1[s + 2] + x2[s + 2]
                t22, t32 = x2[s + 2] - x1[s + 2], x1[s + 2] - x3[s + 2]
                t03, t13 = x0[s + 3] - x2[s + 3], x1[s + 3] + x2[s + 3]
                t23, t33 = x2[s + 3] - x1[s + 3], x1[s + 3] - x3[s + 3]
                # V = t B, entry (a, b) into matrix 4a + b
                v0[tj], v1[tj], v2[tj], v3[tj] = t00 - t02, t01 + t02, t02 - t01, t01 - t03
                v4[tj], v5[tj], v6[tj], v7[tj] = t10 - t12, t11 + t12, t12 - t11, t11 - t13
                v8[tj], v9[tj], v10[tj], v11[tj] = t20 - t22, t21 + t22, t22 - t21, t21 - t23
                v12[tj], v13[tj], v14[tj], v15[tj] = t30 - t32, t31 + t32, t32 - t31, t31 - t33


def winograd_input(xpad: Any, th: int, tw: int, out: Any) -> np.ndarray:
    """``V = B^T d B`` of every 4x4 tile: ``(N, C, Hp, Wp) -> out (16, C, N*th*tw)``."""
    return _winograd_input(_winograd_input_kernel, xpad, th, tw, out)


def _winograd_input(kernel: Any, xpad: Any, th: int, tw: int, out: Any) -> Any:
    xpad = np.ascontiguousarray(xpad)
    n, c, hp, wp = xpad.shape
    assert out.shape == (16, c, n * th * tw)
    if hp < 2 * th + 2 or wp < 2 * tw + 2:  # an odd output size: the last tiles need zeros
        full = np.zeros((n, c, max(hp, 2 * th + 2), max(wp, 2 * tw + 2)), dtype=xpad.dtype)
        full[:, :, :hp, :wp] = xpad
        xpad = full
    kernel(xpad, th, tw, out)
    return out


@njit(parallel=True, cache=True)
def _winograd_output_kernel(m, bias, has_bias, y):  # pragma: no cover
    # A^T M A of each tile in scalars (24 additions), plus the bias; like the input
    # transform, one tile row at a time over row views (y's size is 2*th x 2*tw here)
    n, o_out, oh, ow = y.shape
    th, tw = oh // 2, ow // 2
    tiles = th * tw
    for no in prange(n * o_out):
        i = no // o_out
        o = no - i * o_out
        b0 = bias[o] if has_bias else bias[0] * 0
        for ti in range(th):
            lo = i * tiles + ti * tw
            hi = lo + tw
            m0, m1, m2, m3 = m[0, o, lo:hi], m[1, o, lo:hi], m[2, o, lo:hi], m[3, o, lo:hi]
            m4, m5, m6, m7 = m[4, o, lo:hi], m[5, o, lo:hi], m[6, o, lo:hi], m[7, o, lo:hi]
            m8, m9, m10, m11 = m[8, o, lo:hi], m[9, o, lo:hi], m[10, o, lo:hi], m[11, o, lo:hi]
            m12, m13, m14, m15 = m[12, o, lo:hi], m[13, o, lo:hi], m[14, o, lo:hi], m[15, o, lo:hi]
            y0, y1 = y[i, o, 2 * ti], y[i, o, 2 * ti + 1]
            for tj in range(tw):
                # the two rows of A^T M (rows m0 + m1 + m2 and m1 - m2 - m3), column by column
                s0, q0 = m0[tj] + m4[tj] + m8[tj], m4[tj] - m8[tj] - m12[tj]
                s1, q1 = m1[tj] + m5[tj] + m9[tj], m5[tj] - m9[tj] - m13[tj]
                s2, q2 = m2[tj] + m6[tj] + m10[tj], m6[tj] - m10[tj] - m14[tj]
                s3, q3 = m3[tj] + m7[tj] + m11[tj], m7[tj] - m11[tj] - m15[tj]
                s = 2 * tj
                y0[s], y0[s + 1] = s0 + s1 + s2 + b0, s1 - s2 - s3 + b0
                y1[s], y1[s + 1] = q0 + q1 + q2 + b0, q1 - q2 - q3 + b0


def winograd_output(m: Any, bias: Any, out: Any) -> np.ndarray:
    """``Y = A^T M A`` of every tile, plus the bias: ``(16, O, N*th*tw) -> out (N, O, OH, OW)``."""
    return _winograd_output(_winograd_output_kernel, m, bias, out)


def _winograd_output(kernel: Any, m: Any, bias: Any, out: Any) -> Any:
    n, o, oh, ow = out.shape
    th, tw = winograd_tiles(oh, ow)
    assert m.shape == (16, o, n * th * tw)
    b = np.zeros(1, dtype=out.dtype) if bias is None else bias.astype(out.dtype)
    if (oh, ow) == (2 * th, 2 * tw) and out.flags.c_contiguous:
        kernel(np.ascontiguousarray(m), b, bias is not None, out)
    else:  # an odd output size: whole tiles into a scratch array, then the crop
        full = np.empty((n, o, 2 * th, 2 * tw), dtype=out.dtype)
        kernel(np.ascontiguousarray(m), b, bias is not None, full)
        out[...] = full[:, :, :oh, :ow]
    return out




def check(rng: Any) -> float:
    """Largest difference between Winograd (plain and Numba) and tinycnn's Conv2D."""
    worst = 0.0
    for n, c, o, h, w, pad in ((2, 3, 4, 6, 6, 1), (2, 5, 3, 7, 9, 1), (3, 4, 6, 8, 5, 2)):
        x = rng.standard_normal((n, c, h, w))
        conv = tinycnn.Conv2D(c, o, 3, padding=pad, dtype=np.float64)
        want = conv(x)
        oh, ow = want.shape[2:]
        th, tw = winograd_tiles(oh, ow)
        xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        u = winograd_weights(conv.weight.data)
        for transform_in, transform_out in ((plain_winograd_input, plain_winograd_output),
                                            (winograd_input, winograd_output)):
            v = transform_in(xpad, th, tw, np.empty((16, c, n * th * tw)))
            y = transform_out(np.matmul(u, v), conv.bias.data, np.empty(want.shape))
            worst = max(worst, float(np.abs(y - want).max()))
    return worst


def cpu_ms(fn: Any, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1000 * sorted(times)[repeats // 2]


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"largest difference from Conv2D (float64): {check(rng):.1e}")
    numba.set_num_threads(1)  # one core, CPU time: the comparison holds on a busy machine
    api = threads._openblas_threads_api()
    if api is not None:
        api[0](1)
    print("one core, CPU ms per forward of 32 images")
    for c, o, h in ((16, 16, 28), (32, 32, 14), (64, 64, 8)):
        n = 32
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        xpad = numba_cpu.pad2d(x, 1, 1)
        th = tw = (h + 1) // 2
        v = np.empty((16, c, n * th * tw), np.float32)
        m = np.empty((16, o, n * th * tw), np.float32)
        y = np.empty((n, o, h, h), np.float32)
        u = winograd_weights(rng.standard_normal((o, c, 3, 3)).astype(np.float32))
        t_in = cpu_ms(lambda: winograd_input(xpad, th, tw, v))  # noqa: B023
        t_mm = cpu_ms(lambda: threads.matmul(u, v, out=m))  # noqa: B023
        t_out = cpu_ms(lambda: winograd_output(m, None, y))  # noqa: B023
        conv = tinycnn.accelerate(tinycnn.Conv2D(c, o, 3, padding=1))
        conv.split_images = False
        t_now = cpu_ms(lambda: conv(x))  # noqa: B023
        print(f"  {c:2d}->{o:2d} channels, {h}x{h}: input transform {t_in:.2f}, 16 products "
              f"{t_mm:.2f}, output transform {t_out:.2f}, Winograd {t_in + t_mm + t_out:.2f} "
              f"against the engine's {conv.impl!r} path {t_now:.2f}")


if __name__ == "__main__":
    main()
