"""threads.split_images: FastConv2D's wide path with each thread owning a range of images."""

from __future__ import annotations

import numpy as np
import pytest

import tinycnn
from tinycnn.fast import threads as backend
from tinycnn.fast.conv import FastConv2D as Conv2D

numba_cpu = pytest.importorskip("tinycnn.fast.numba_cpu", reason="needs Numba")


def _threads_and_blas() -> int:
    return numba_cpu.threads() if backend._openblas_threads_api() is not None else 1


def test_ranges_cover_every_image_once_with_the_serial_kernels() -> None:
    seen: list[tuple[int, int, object]] = []
    with tinycnn.use_kernels("numba"):
        backend.split_images(7, lambda lo, hi, k: seen.append((lo, hi, k)), numba_cpu)
    ranges = sorted((lo, hi) for lo, hi, _ in seen)
    assert ranges[0][0] == 0 and ranges[-1][1] == 7
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:], strict=False))
    count = min(7, _threads_and_blas())
    assert len(seen) == count
    if count > 1:
        assert all(k is numba_cpu.serial for _, _, k in seen)


@pytest.mark.parametrize("setting", ["kernels without serial twins", "no split"])
def test_one_call_without_the_numba_split(setting: str) -> None:
    seen: list[tuple[int, int, object]] = []
    kernels = object() if setting == "kernels without serial twins" else numba_cpu
    backend.split_images(5, lambda lo, hi, k: seen.append((lo, hi, k)), kernels,
                         split=setting != "no split")
    assert seen == [(0, 5, kernels)]


def test_a_worker_error_is_raised_and_blas_gets_its_threads_back() -> None:
    if _threads_and_blas() < 2:
        pytest.skip("one thread, or a BLAS whose threads cannot be set: nothing is split")
    setter, getter = backend._openblas_threads_api()
    before = getter()

    def work(lo: int, hi: int, k: object) -> None:
        assert getter() == 1  # every range runs with single-threaded BLAS
        if lo > 0:
            raise RuntimeError("boom in a worker")

    with tinycnn.use_kernels("numba"), pytest.raises(RuntimeError, match="boom in a worker"):
        backend.split_images(8, work, numba_cpu)
    assert getter() == before


@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_split_and_unsplit_wide_convolution_agree(n: int, input_grad: bool) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 3, 17, 16))
    g = rng.standard_normal((n, 4, 17, 16))
    results = []
    for split in (True, False):
        conv = Conv2D(3, 4, 3, padding=1, rng=np.random.default_rng(0))
        conv.split_images, conv.input_grad = split, input_grad
        conv.max_cached_cols_bytes = 0  # no dx: the wide weight gradient, not cached rows
        conv.max_direct_macs = 0  # 3 -> 4 channels, 3x3 would take the direct path
        with tinycnn.use_kernels("numba"):
            y = conv.forward(x)
            dx = conv.backward(g)
        assert conv.impl == "wide"
        results.append((y, dx, conv.weight.grad, conv.bias.grad))
    for a, b in zip(*results, strict=True):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
