"""The GPU backend (CuPy): kernels, layers, gradient checks, training, devices.

Four groups of tests:

* **Host emulation** (no GPU needed, only a C++ compiler): ``tinycnn/fast/cuda.py`` is
  loaded with a stand-in ``cupy`` module whose ``ElementwiseKernel`` / ``ReductionKernel``
  compile the very kernel bodies of that file as C++ (``g++``) and run one loop iteration
  per CUDA thread. This checks every kernel's index arithmetic and its Python wrapper
  against the reference kernels. It does not check CuPy itself (type resolution, launch
  configuration, memory): the GPU group does.
* **CUDA compilation** (needs CuPy and NVRTC, not a GPU): every kernel, in the source CuPy's
  own generator makes for it, compiles with NVRTC for sm_90.
* **Device errors**: what a user sees without a GPU (needs its absence), and the
  device-mismatch check of ``check_input`` through a stand-in GPU array type (an ndarray
  subclass whose type lives in a ``cupy...`` module, which is how
  :func:`tinycnn.backend.is_gpu_array` recognizes CuPy arrays).
* **GPU**: kernels, every layer against the CPU, float64 gradient checks on the device,
  training steps, optimizer state, the DataLoader. Skipped, with the reason, unless CuPy
  imports and sees a CUDA device.
"""

from __future__ import annotations

import atexit
import copy
import ctypes
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinycnn.fast
from tinycnn import backend, optim
from tinycnn.backend import DeviceError
from tinycnn.containers import Concat, Residual, Sequential
from tinycnn.fast import plain as ref
from tinycnn.gradcheck import gradcheck
from tinycnn.layers import (
    AdaptiveAvgPool2D,
    Affine,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    ConvTranspose2D,
    Dropout,
    Dropout2D,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
    Upsample,
    ZeroPad2D,
)
from tinycnn.losses import MSELoss, SoftmaxCrossEntropy
from tinycnn.models import resnet20, simple_convnet
from tinycnn.models.resnet_cifar import BasicBlock, ShortcutA
from tinycnn.module import Parameter

GPU = backend.gpu_available()
needs_gpu = pytest.mark.skipif(
    not GPU,
    reason="no usable GPU: CuPy is not installed or sees no CUDA device "
    "(install with pip install -e '.[gpu]' on a machine with an NVIDIA GPU)",
)
no_gpu_only = pytest.mark.skipif(GPU, reason="a GPU is present; this tests its absence")
CXX = shutil.which("g++") or shutil.which("c++")
needs_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++) for the host emulation")

SETTINGS = settings(max_examples=25, deadline=None)
DTYPES = [np.float32, np.float64]


def tol(dtype: Any) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-11, "atol": 1e-11}


def tie_free(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Distinct values (a shuffled ramp), so the max-pool winner is unambiguous."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / 7).astype(dtype)


# ======================================================================= host emulation

_CTYPES = {
    "float32": "float",
    "float64": "double",
    "int32": "int32_t",
    "int64": "int64_t",
}


def _parse(params: str) -> list[tuple[bool, str, str]]:
    """``"raw T x, int32 N"`` -> ``[(True, "T", "x"), (False, "int32", "N")]``."""
    out = []
    for part in params.split(","):
        words = part.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        out.append((raw, words[0], words[1]))
    return out


class _HostCompiler:
    """Collects kernel bodies; compiles all of them per element type ``T`` into one library."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self.libs: dict[str, ctypes.CDLL] = {}
        self.folder = Path(tempfile.mkdtemp(prefix="tinycnn-host-cuda-"))

    def register(self, in_params: str, out_params: str, body: str) -> str:
        fname = f"kernel_{len(self.sources)}"
        ins, outs = _parse(in_params), _parse(out_params)
        lines = [f'extern "C" void {fname}(long long n_threads, void** args) {{']
        per_thread = []
        for k, (raw, typ, name) in enumerate(ins + outs):
            ctype = "T" if typ == "T" else _CTYPES[typ]
            if raw:
                lines.append(f"  const {ctype}* {name} = (const {ctype}*)args[{k}];")
            elif k < len(ins):
                lines.append(f"  const {ctype}* p{k} = (const {ctype}*)args[{k}];")
                per_thread.append(f"    const {ctype} {name} = p{k}[i];")
            else:
                lines.append(f"  {ctype}* p{k} = ({ctype}*)args[{k}];")
                per_thread.append(f"    {ctype}& {name} = p{k}[i];")
        lines.append("  for (long long i = 0; i < n_threads; ++i) {")
        lines += per_thread
        lines += ["    {", body + ";", "    }", "  }", "}"]  # CuPy adds the final ";" too
        self.sources.append("\n".join(lines))
        return fname

    def lib(self, t_name: str) -> ctypes.CDLL:
        if t_name not in self.libs:
            src = self.folder / f"kernels_{t_name}.cpp"
            so = self.folder / f"kernels_{t_name}.so"
            header = (
                "#include <cmath>\n#include <cstdint>\nusing std::sqrt;\n"
                f"typedef {_CTYPES[t_name]} T;\n"
            )
            src.write_text(header + "\n\n".join(self.sources))
            # TINYCNN_HOST_CXXFLAGS="-fsanitize=address" (with libasan preloaded) turns any
            # out-of-bounds read or write of a kernel into an error.
            extra = os.environ.get("TINYCNN_HOST_CXXFLAGS", "").split()
            done = subprocess.run([CXX, "-O1", "-shared", "-fPIC", *extra, "-o", str(so),
                                   str(src)], capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"compiling the kernels as C++ failed:\n{done.stderr}")
            self.libs[t_name] = ctypes.CDLL(str(so))
        return self.libs[t_name]


class _HostElementwise:
    """``cupy.ElementwiseKernel`` on the host: one loop iteration per output element."""

    def __init__(self, compiler: _HostCompiler, in_params: str, out_params: str,
                 operation: str, name: str = "kernel", **_: Any) -> None:
        self.compiler = compiler
        self.ins, self.outs = _parse(in_params), _parse(out_params)
        self.fname = compiler.register(in_params, out_params, operation)

    def __call__(self, *args: Any, t_dtype: Any = None) -> Any:
        n_in = len(self.ins)
        inputs, outputs = list(args[:n_in]), list(args[n_in:])
        assert len(inputs) == n_in and len(outputs) in (0, len(self.outs))
        if t_dtype is None:  # CuPy's rule: T is the dtype of the first array bound to T
            t_dtype = next(np.dtype(a.dtype) for (_, typ, _), a in zip(self.ins + self.outs,
                           inputs + outputs, strict=False) if typ == "T" and hasattr(a, "dtype"))
        t_dtype = np.dtype(t_dtype)

        def dtype_of(typ: str) -> np.dtype:
            return t_dtype if typ == "T" else np.dtype(typ)

        elementwise = [a for (raw, _, _), a in zip(self.ins, inputs, strict=True)
                       if not raw and hasattr(a, "shape")]
        shape = outputs[0].shape if outputs else np.broadcast_shapes(
            *(a.shape for a in elementwise))
        buffers = []
        for (raw, typ, _), a in zip(self.ins, inputs, strict=True):
            a = np.asarray(a, dtype=dtype_of(typ))
            buffers.append(np.ascontiguousarray(a if raw else np.broadcast_to(a, shape)))
        if not outputs:
            outputs = [np.empty(shape, dtype=dtype_of(typ)) for _, typ, _ in self.outs]
        for (_, typ, name), a in zip(self.outs, outputs, strict=True):
            assert a.dtype == dtype_of(typ) and a.flags.c_contiguous and a.shape == shape, name
            buffers.append(a)
        pointers = (ctypes.c_void_p * len(buffers))(*(b.ctypes.data for b in buffers))
        fn = getattr(self.compiler.lib(t_dtype.name), self.fname)
        fn.argtypes = [ctypes.c_longlong, ctypes.c_void_p]
        fn(int(np.prod(shape)), pointers)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class _HostReduction:
    """``cupy.ReductionKernel`` on the host, for the sums cuda.py uses (``a + b``, identity 0).

    The map expression is compiled and run per element (in ``reduce_type``), the values
    are summed over ``axis`` in float64, then the post-map expression is compiled and run.
    """

    def __init__(self, compiler: _HostCompiler, in_params: str, out_params: str,
                 map_expr: str, reduce_expr: str, post_map_expr: str, identity: str,
                 name: str = "reduce", reduce_type: str | None = None, **_: Any) -> None:
        assert reduce_expr == "a + b" and identity == "0", "the stand-in only sums"
        # CuPy pastes reduce_type into the source as a C type (default: the output's type)
        rc = reduce_type or _parse(out_params)[0][1]
        rtype = {"double": "float64", "float": "float32", "T": "T"}[rc]
        self.map = _HostElementwise(compiler, in_params, f"{rtype} mapped",
                                    f"mapped = static_cast<{rc}>({map_expr})")
        self.post = _HostElementwise(compiler, f"{rtype} a", out_params, post_map_expr)
        self.ins = _parse(in_params)

    def __call__(self, *args: Any, axis: Any = None) -> Any:
        t_dtype = next(np.dtype(a.dtype) for (_, typ, _), a in zip(self.ins, args, strict=True)
                       if typ == "T" and hasattr(a, "dtype"))
        mapped = self.map(*args, t_dtype=t_dtype)
        summed = np.asarray(mapped.sum(axis=axis, dtype=np.float64))
        return self.post(summed, t_dtype=t_dtype)


def _host_cupy(compiler: _HostCompiler) -> types.ModuleType:
    fake = types.ModuleType("cupy")
    fake.ElementwiseKernel = lambda *a, **k: _HostElementwise(compiler, *a, **k)
    fake.ReductionKernel = lambda *a, **k: _HostReduction(compiler, *a, **k)
    fake.empty = np.empty
    fake.ascontiguousarray = np.ascontiguousarray
    fake.int64 = np.int64
    return fake


_HOST: dict[str, Any] = {}


def host_cuda() -> Any:
    """``tinycnn/fast/cuda.py`` loaded with the host stand-in for CuPy (built once)."""
    if "module" not in _HOST:
        compiler = _HostCompiler()
        atexit.register(shutil.rmtree, compiler.folder, True)
        path = Path(tinycnn.fast.__file__).parent / "cuda.py"
        spec = importlib.util.spec_from_file_location("tinycnn_cuda_on_host", path)
        module = importlib.util.module_from_spec(spec)
        saved = sys.modules.get("cupy")
        sys.modules["cupy"] = _host_cupy(compiler)  # only while cuda.py imports it
        try:
            spec.loader.exec_module(module)
        finally:
            if saved is None:
                del sys.modules["cupy"]
            else:
                sys.modules["cupy"] = saved
        _HOST["module"] = module
    return _HOST["module"]


# ------------------------------------------------------------- kernels: host or real GPU


def _gpu_cuda() -> Any:
    return backend._load("cuda")


IMPLS = [
    pytest.param("host", marks=needs_cxx, id="host-emulated"),
    pytest.param("gpu", marks=needs_gpu, id="gpu"),
]


def call(impl: str, host_module: Any, name: str, *args: Any) -> Any:
    """Run kernel ``name`` of the CUDA module; arrays go in and come back as NumPy."""
    if impl == "host":
        return getattr(host_module, name)(*args)
    dev = [backend.to_device(a, "gpu") if isinstance(a, np.ndarray) else a for a in args]
    out = getattr(_gpu_cuda(), name)(*dev)
    if isinstance(out, tuple):
        return tuple(backend.to_device(o, "cpu") for o in out)
    return backend.to_device(out, "cpu")


def _module_for(impl: str) -> Any:
    return host_cuda() if impl == "host" else None


def same(got: np.ndarray, want: np.ndarray, dtype: Any) -> None:
    assert got.dtype == np.dtype(dtype), f"dtype changed: {got.dtype} instead of {dtype}"
    assert got.shape == want.shape, f"shape {got.shape} instead of {want.shape}"
    np.testing.assert_allclose(got, want, **tol(dtype))


conv_geometry = st.fixed_dictionaries({
    "n": st.integers(1, 3), "c": st.integers(1, 4), "h": st.integers(1, 9),
    "w": st.integers(1, 9), "kh": st.integers(1, 4), "kw": st.integers(1, 4),
    "stride": st.tuples(st.integers(1, 4), st.integers(1, 4)),
    "padding": st.tuples(st.integers(0, 2), st.integers(0, 2)),
    "dilation": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "seed": st.integers(0, 2**16),
})

pool_geometry = st.fixed_dictionaries({
    "n": st.integers(1, 3), "c": st.integers(1, 4), "h": st.integers(1, 9),
    "w": st.integers(1, 9), "kh": st.integers(1, 4), "kw": st.integers(1, 4),
    "stride": st.tuples(st.integers(1, 4), st.integers(1, 4)),
    "ph": st.integers(0, 2), "pw": st.integers(0, 2), "seed": st.integers(0, 2**16),
})


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=conv_geometry)
def test_im2col_col2im_match_reference(impl, dtype, g):
    k = _module_for(impl)
    oh = ref.out_size(g["h"], g["kh"], g["stride"][0], g["padding"][0], g["dilation"][0])
    ow = ref.out_size(g["w"], g["kw"], g["stride"][1], g["padding"][1], g["dilation"][1])
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["n"], g["c"], g["h"], g["w"])).astype(dtype)
    geo = (g["kh"], g["kw"], g["stride"], g["padding"], g["dilation"])
    same(call(impl, k, "im2col", x, *geo), ref.im2col(x, *geo), dtype)
    cols = rng.standard_normal((g["n"] * oh * ow, g["c"] * g["kh"] * g["kw"])).astype(dtype)
    same(call(impl, k, "col2im", cols, x.shape, *geo), ref.col2im(cols, x.shape, *geo), dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(g=pool_geometry)
def test_pooling_matches_reference(impl, dtype, g):
    k = _module_for(impl)
    kh, kw = g["kh"], g["kw"]
    pad = (min(g["ph"], kh // 2), min(g["pw"], kw // 2))  # the layers' rule
    oh = ref.out_size(g["h"], kh, g["stride"][0], pad[0])
    ow = ref.out_size(g["w"], kw, g["stride"][1], pad[1])
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(g["seed"])
    x = tie_free(rng, (g["n"], g["c"], g["h"], g["w"]), dtype)
    geo = (kh, kw, g["stride"], pad)
    out, arg = call(impl, k, "maxpool2d_forward", x, *geo)
    ref_out, ref_arg = ref.maxpool2d_forward(x, *geo)
    same(out, ref_out, dtype)
    np.testing.assert_array_equal(arg, ref_arg)
    grad = rng.standard_normal(ref_out.shape).astype(dtype)
    same(call(impl, k, "maxpool2d_backward", grad, ref_arg, x.shape, *geo),
         ref.maxpool2d_backward(grad, ref_arg, x.shape, *geo), dtype)
    same(call(impl, k, "avgpool2d_forward", x, *geo), ref.avgpool2d_forward(x, *geo), dtype)
    same(call(impl, k, "avgpool2d_backward", grad, x.shape, *geo),
         ref.avgpool2d_backward(grad, x.shape, *geo), dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("out_shape", [(1, 1, 1, 1), (2, 3, 4, 5), (3, 7, 1, 6)])
def test_rows_to_nchw_matches_reference(impl, dtype, with_bias, out_shape):
    k = _module_for(impl)
    n, o, oh, ow = out_shape
    rng = np.random.default_rng(o)
    rows = rng.standard_normal((n * oh * ow, o)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if with_bias else None
    same(call(impl, k, "rows_to_nchw", rows, bias, out_shape),
         ref.rows_to_nchw(rows, bias, out_shape), dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (3, 2, 5, 4), (2, 1, 3, 3)])
def test_batchnorm_kernels_match_reference(impl, dtype, shape):
    k = _module_for(impl)
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    mean, var = call(impl, k, "batchnorm_stats", x)
    ref_mean, ref_var = ref.batchnorm_stats(x)
    same(mean, ref_mean, dtype)
    same(var, ref_var, dtype)
    g = rng.standard_normal(shape).astype(dtype)
    scale = rng.uniform(0.5, 2.0, size=shape[1]).astype(dtype)
    inv_std = (1 / np.sqrt(ref_var + 1e-5)).astype(dtype)
    for got, want in zip(call(impl, k, "batchnorm_backward", g, x, ref_mean, inv_std, scale),
                         ref.batchnorm_backward(g, x, ref_mean, inv_std, scale), strict=True):
        same(got, want, dtype)
    weight, bias = scale, rng.standard_normal(shape[1]).astype(dtype)
    for w, b in ((weight, bias), (None, None)):
        same(call(impl, k, "batchnorm_forward", x, ref_mean, inv_std, w, b),
             ref.batchnorm_forward(x, ref_mean, inv_std, w, b), dtype)


def _optimizer_reference(cls: Any, kwargs: dict, data: np.ndarray, grads: list) -> tuple:
    """Parameter and state after NumPy optimizer steps (the CPU path of tinycnn.optim)."""
    p = Parameter(data.copy())
    opt = cls([p], **kwargs)
    for g in grads:
        p.grad = g.copy()
        opt.step()
    return p.data, opt.state[0]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_kernel_matches_the_numpy_optimizer(impl, dtype, nesterov):
    k = _module_for(impl)
    rng = np.random.default_rng(3)
    data = rng.standard_normal((4, 5)).astype(dtype)
    grads = [rng.standard_normal((4, 5)).astype(dtype) for _ in range(3)]
    kwargs = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov}
    want_p, want_state = _optimizer_reference(optim.SGD, kwargs, data, grads)
    p, buf = data.copy(), grads[0].copy()  # the optimizer's first step: buf <- g
    p -= dtype(0.1) * (grads[0] + dtype(0.9) * buf if nesterov else buf)
    if impl == "gpu":
        p, buf = backend.to_device(p, "gpu"), backend.to_device(buf, "gpu")
        kmod = _gpu_cuda()
        for g in grads[1:]:
            kmod.sgd_momentum_update(p, backend.to_device(g, "gpu"), buf, 0.1, 0.9, 0.0, nesterov)
        p, buf = backend.to_device(p, "cpu"), backend.to_device(buf, "cpu")
    else:
        for g in grads[1:]:
            k.sgd_momentum_update(p, g, buf, 0.1, 0.9, 0.0, nesterov)
    same(p, want_p, dtype)
    same(buf, want_state["momentum_buffer"], dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_kernel_matches_the_numpy_optimizer(impl, dtype):
    k = _module_for(impl)
    rng = np.random.default_rng(4)
    data = rng.standard_normal((6, 3)).astype(dtype)
    grads = [rng.standard_normal((6, 3)).astype(dtype) for _ in range(4)]
    want_p, want_state = _optimizer_reference(optim.Adam, {"lr": 0.01}, data, grads)
    arrays = [data.copy(), np.zeros_like(data), np.zeros_like(data)]
    kmod = k
    if impl == "gpu":
        arrays = [backend.to_device(a, "gpu") for a in arrays]
        kmod = _gpu_cuda()
    p, m, v = arrays
    for t, g in enumerate(grads, start=1):
        g = backend.to_device(g, "gpu") if impl == "gpu" else g
        kmod.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, t)
    p, m, v = (backend.to_device(a, "cpu") for a in (p, m, v))
    same(p, want_p, dtype)
    same(m, want_state["exp_avg"], dtype)
    same(v, want_state["exp_avg_sq"], dtype)


def test_every_reference_kernel_has_a_cuda_version():
    """A kernel missing from cuda.py would silently fall back to the slow reference code."""
    public = {name for name, f in vars(ref).items()
              if callable(f) and not name.startswith("_") and f.__module__ == ref.__name__}
    # on the GPU ReLU runs the layer's own code; the register-tiled convolution is a CPU
    # path (FastConv2D takes it only on the CPU; cuBLAS serves the GPU)
    cpu_only = {"relu_forward", "relu_backward", "conv2d_tiled", "conv2d_tiled_weight_grad",
                "conv2d_tiled_input_grad", "channel_affine", "add",
                "add_relu"}  # the CPU's tiled path and folds
    missing = public - cpu_only - set(host_cuda().__all__)
    assert not missing, f"no CUDA version of {sorted(missing)} in tinycnn/fast/cuda.py"


@needs_cxx
def test_host_emulation_can_fail():
    """The stand-in really runs the kernel text: a corrupted index gives wrong results."""
    compiler = _HostCompiler()
    broken = _HostElementwise(compiler, "raw T x, int32 W", "T y", "y = x[i + 1 < W ? i + 1 : i];")
    x = np.arange(4, dtype=np.float64)
    out = broken(x, 4, np.empty(4))
    shutil.rmtree(compiler.folder, ignore_errors=True)
    assert not np.array_equal(out, x)
    np.testing.assert_array_equal(out, [1, 2, 3, 3])


# ------------------------------------------------- real CuPy code generation, no GPU needed

_ARG_NDARRAY, _ARG_INDEXER, _ARG_SCALAR = 1, 2, 3  # CuPy's _ArgKind enum


def _nvrtc_toolchain() -> Any:
    """CuPy's private kernel-source generator and NVRTC (both work without a GPU), or skip."""
    pytest.importorskip("cupy", reason="CuPy is not installed")
    try:
        import cupy._core._kernel as kernel_mod
        import cupy._core._reduction as reduction_mod
        from cupy._core import _carray, _scalar
        from cupy.cuda import compiler

        parts = (kernel_mod._get_elementwise_kernel_code, kernel_mod._ArgInfo,
                 kernel_mod._TypeMap, reduction_mod._ReductionKernel_get_cached_function_code,
                 compiler._NVRTCProgram, _carray.Indexer, _scalar.CScalar)
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"CuPy's private code generator is not the one this test was written "
                    f"against (CuPy 14.2): {exc}")
    return types.SimpleNamespace(K=kernel_mod, R=reduction_mod, compiler=compiler,
                                 Indexer=_carray.Indexer, CScalar=_scalar.CScalar, parts=parts)


def _nvrtc_compile(tc: Any, code: str) -> None:
    import cupy

    inc = Path(cupy.__file__).parent / "_core" / "include"
    cccl = inc / "cupy" / "_cccl"
    options = ("-arch=compute_90", "--device-as-default-execution-space", "--std=c++17",
               f"-I{inc}", f"-I{cccl / 'thrust'}", f"-I{cccl / 'libcudacxx'}",
               f"-I{cccl / 'cub'}")
    header = "#include <cupy/complex.cuh>\n#include <cupy/carray.cuh>\n"
    tc.compiler._NVRTCProgram(header + code, "kern.cu", (), (), method="ptx").compile(options)


def test_cuda_kernels_compile_with_nvrtc_as_cupy_generates_them():
    """Every kernel of cuda.py, in the source CuPy generates for it, compiles for sm_90.

    Runs where CuPy and NVRTC are installed, with or without a GPU (no device is touched).
    Catches CUDA C errors (types, overloads, CuPy's template) before a GPU run does.
    """
    tc = _nvrtc_toolchain()
    try:
        _nvrtc_compile(tc, 'extern "C" __global__ void probe(float* x) { x[0] = 1.0f; }')
    except Exception as exc:  # NVRTC library missing or unusable
        pytest.skip(f"NVRTC is not usable here ({type(exc).__name__}: {exc}); "
                    "pip install nvidia-cuda-nvrtc-cu12")
    cuda = backend._load("cuda")
    failures, compiled = [], 0
    for name, k in vars(cuda).items():
        kind = type(k).__name__
        if kind not in ("ElementwiseKernel", "ReductionKernel"):
            continue
        for dtype in (np.float32, np.float64):
            tmap = [("T", np.dtype(dtype).type)]
            if kind == "ElementwiseKernel":
                infos = []
                for pos, p in enumerate(k.params):
                    if p.name == "_ind":
                        infos.append(tc.K._ArgInfo(_ARG_INDEXER, tc.Indexer, None, 1, True, True))
                    elif p.dtype is not None and not p.raw and pos < k.nin:  # typed scalar
                        infos.append(tc.K._ArgInfo(_ARG_SCALAR, tc.CScalar, p.dtype, 0, True,
                                                   True))
                    else:
                        dt = np.dtype(dtype) if p.dtype is None else p.dtype
                        infos.append(tc.K._ArgInfo(_ARG_NDARRAY, cupy_ndarray(), dt,
                                                   2 if p.raw else 1, True, True))
                code = tc.K._get_elementwise_kernel_code(
                    tuple(infos), tc.K._TypeMap(tuple(tmap)), k.params, k.operation, k.name,
                    k.preamble)
            else:
                infos = []
                for pos, p in enumerate(k._params):
                    if p.name in ("_in_ind", "_out_ind"):
                        infos.append(tc.K._ArgInfo(_ARG_INDEXER, tc.Indexer, None,
                                                   3 if p.name == "_in_ind" else 1, True, True))
                    elif p.name == "_block_stride":
                        infos.append(tc.K._ArgInfo(_ARG_SCALAR, tc.CScalar, np.dtype("int32"),
                                                   0, True, True))
                    else:
                        infos.append(tc.K._ArgInfo(_ARG_NDARRAY, cupy_ndarray(),
                                                   np.dtype(dtype), 3 if pos < k.nin else 1,
                                                   False, True))
                tmap.append(("IndexT", np.int32))
                code = tc.R._ReductionKernel_get_cached_function_code(
                    k.nin, k.nout, k._params, tuple(infos), tc.K._TypeMap(tuple(tmap)), k.name,
                    512, k.reduce_type, k.identity, k.map_expr, k.reduce_expr, k.post_map_expr,
                    k.preamble, k.options)
            try:
                _nvrtc_compile(tc, code)
                compiled += 1
            except Exception as exc:
                failures.append(f"{name} ({np.dtype(dtype).name}): {exc}")
    assert not failures, "\n\n".join(failures)
    assert compiled >= 30  # 15 kernels x 2 dtypes: none was silently left out


def cupy_ndarray() -> type:
    import cupy

    return cupy.ndarray


# ========================================================================= device errors


class _StandInGpuArray(np.ndarray):
    """An ndarray that :func:`tinycnn.backend.is_gpu_array` takes for a CuPy array."""


_StandInGpuArray.__module__ = "cupy._stand_in"


def _on_stand_in_gpu(module: Any) -> Any:
    for p in module.parameters():
        p.data = p.data.view(_StandInGpuArray)
    for m in module.modules():
        for name, b in list(m._buffers.items()):
            m._set_buffer(name, b.view(_StandInGpuArray))
    return module


def test_stand_in_type_is_recognized_as_a_gpu_array():
    assert backend.is_gpu_array(np.zeros(2).view(_StandInGpuArray))
    assert not backend.is_gpu_array(np.zeros(2))


@pytest.mark.parametrize("make, shape", [
    (lambda: Affine(4, 3), (2, 4)),
    (lambda: Conv2D(2, 3, 3), (1, 2, 5, 5)),
    (lambda: BatchNorm2D(2), (2, 2, 3, 3)),
    (lambda: BatchNorm2D(2, affine=False), (2, 2, 3, 3)),
], ids=["Affine", "Conv2D", "BatchNorm2D", "BatchNorm2D-buffers-only"])
def test_gpu_layer_given_a_numpy_batch_names_both_devices(make, shape):
    layer = _on_stand_in_gpu(make())
    with pytest.raises(DeviceError, match=r"input on the CPU.*parameters are on the GPU"):
        layer(np.zeros(shape, dtype=np.float32))


def test_cpu_layer_given_a_gpu_batch_names_both_devices():
    layer = Conv2D(2, 3, 3)
    x = np.zeros((1, 2, 5, 5), dtype=np.float32).view(_StandInGpuArray)
    with pytest.raises(DeviceError, match=r"input on the GPU.*parameters are on the CPU"):
        layer(x)


def test_device_check_lets_matching_devices_and_array_free_layers_through():
    x = np.ones((1, 2, 5, 5), dtype=np.float32)
    assert Conv2D(2, 3, 3)(x).shape == (1, 3, 3, 3)
    assert Flatten()(x.view(_StandInGpuArray)).shape == (1, 50)  # no arrays to compare with


@no_gpu_only
def test_to_gpu_without_gpu_raises_with_the_install_hint():
    net = simple_convnet(seed=0)
    with pytest.raises(DeviceError) as info:
        net.to("gpu")
    message = str(info.value)
    if backend._try_cupy() is None:
        assert "pip install" in message and ".[gpu]" in message
    else:
        assert "no CUDA GPU" in message
    assert net.device == "cpu"


@no_gpu_only
def test_to_device_and_loader_without_gpu_raise_device_error():
    from tinycnn.data import DataLoader

    with pytest.raises(DeviceError):
        backend.to_device(np.zeros(3), "gpu")
    x = np.zeros((4, 1, 8, 8), dtype=np.uint8)
    with pytest.raises(DeviceError):
        DataLoader((x, np.zeros(4, dtype=np.int64)), batch_size=2, device="gpu")


@no_gpu_only
def test_cli_train_on_gpu_without_gpu_is_one_clear_line(capsys, tmp_path):
    from tinycnn.cli import main

    status = main(["train", "--device", "gpu", "--out", str(tmp_path / "run"),
                   "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1
    assert "tinycnn train: error:" in err and ("CuPy" in err or "CUDA" in err)
    assert "Traceback" not in err


# =================================================================================== GPU

# name -> (factory, input shape, tie-free input?)
LAYERS: dict[str, tuple[Any, tuple[int, ...], bool]] = {
    "Affine": (lambda: Affine(6, 4, rng=np.random.default_rng(0)), (3, 6), False),
    "Conv2D": (lambda: Conv2D(3, 4, 3, rng=np.random.default_rng(0)), (2, 3, 6, 5), False),
    "Conv2D-stride-pad-dil": (
        lambda: Conv2D(2, 4, 3, stride=2, padding=2, dilation=2,
                       rng=np.random.default_rng(0)), (2, 2, 7, 8), False),
    "Conv2D-groups": (lambda: Conv2D(4, 6, 3, padding=1, groups=2,
                                     rng=np.random.default_rng(0)), (2, 4, 5, 5), False),
    "Conv2D-same-even": (lambda: Conv2D(2, 3, 4, padding="same", bias=False,
                                        rng=np.random.default_rng(0)), (2, 2, 5, 6), False),
    "Conv2D-1x1": (lambda: Conv2D(3, 5, 1, rng=np.random.default_rng(0)), (2, 3, 4, 4), False),
    "ConvTranspose2D": (lambda: ConvTranspose2D(3, 2, 3, stride=2, padding=1, output_padding=1,
                                                rng=np.random.default_rng(0)),
                        (2, 3, 4, 3), False),
    "MaxPool2D": (lambda: MaxPool2D(2), (2, 3, 6, 6), True),
    "MaxPool2D-overlap-pad": (lambda: MaxPool2D(3, stride=2, padding=1), (2, 2, 7, 6), True),
    "AvgPool2D": (lambda: AvgPool2D(3, stride=2, padding=1), (2, 2, 7, 6), False),
    "GlobalAvgPool2D": (GlobalAvgPool2D, (2, 3, 4, 5), False),
    "AdaptiveAvgPool2D": (lambda: AdaptiveAvgPool2D((3, 2)), (2, 2, 7, 5), False),
    "BatchNorm1D": (lambda: BatchNorm1D(4), (5, 4), False),
    "BatchNorm2D": (lambda: BatchNorm2D(3), (4, 3, 3, 3), False),
    "BatchNorm2D-eval": (lambda: BatchNorm2D(3).eval(), (4, 3, 3, 3), False),
    "Dropout": (lambda: Dropout(0.3, seed=1), (4, 6), False),
    "Dropout2D": (lambda: Dropout2D(0.5, seed=2), (3, 4, 2, 2), False),
    "ReLU": (ReLU, (3, 4, 5), False),
    "LeakyReLU": (lambda: LeakyReLU(0.1), (3, 4, 5), False),
    "Sigmoid": (Sigmoid, (3, 4), False),
    "Tanh": (Tanh, (3, 4), False),
    "Flatten": (Flatten, (2, 3, 2, 2), False),
    "ZeroPad2D": (lambda: ZeroPad2D((1, 2, 0, 1)), (2, 2, 3, 3), False),
    "LocalResponseNorm": (lambda: LocalResponseNorm(3), (2, 5, 3, 3), False),
    "Upsample-nearest": (lambda: Upsample(scale_factor=2), (2, 2, 3, 3), False),
    "Upsample-bilinear": (lambda: Upsample(size=(5, 7), mode="bilinear"), (2, 2, 3, 4), False),
    "Sequential": (lambda: Sequential(Conv2D(2, 3, 3, padding=1, rng=np.random.default_rng(0)),
                                      BatchNorm2D(3), ReLU()), (2, 2, 4, 4), False),
    "Residual": (lambda: Residual(Sequential(Affine(4, 4, rng=np.random.default_rng(0)), Tanh()),
                                  post=ReLU()), (3, 4), False),
    "Concat": (lambda: Concat(Conv2D(2, 3, 1, rng=np.random.default_rng(0)),
                              Conv2D(2, 2, 3, padding=1, rng=np.random.default_rng(1))),
               (2, 2, 4, 4), False),
    "ShortcutA": (lambda: ShortcutA(2, 4), (2, 2, 4, 4), False),
    "BasicBlock": (lambda: BasicBlock(2, 4, stride=2, rng=np.random.default_rng(0)),
                   (2, 2, 6, 6), False),
}


def _input(name: str, dtype: Any, seed: int = 0) -> np.ndarray:
    _, shape, ties = LAYERS[name]
    rng = np.random.default_rng(seed)
    if ties:
        return tie_free(rng, shape, dtype)
    return rng.standard_normal(shape).astype(dtype)


def _host(a: Any) -> np.ndarray:
    return np.asarray(backend.to_device(a, "cpu"))


@needs_gpu
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_forward_backward_on_gpu_equals_cpu(name):
    make = LAYERS[name][0]
    cpu = make()
    gpu = copy.deepcopy(cpu).to("gpu")
    x = _input(name, np.float32)
    y_cpu = cpu(x)
    y_gpu = gpu(backend.to_device(x, "gpu"))
    assert backend.is_gpu_array(y_gpu), "the output left the GPU"
    assert y_gpu.dtype == np.float32
    np.testing.assert_allclose(_host(y_gpu), y_cpu, rtol=1e-4, atol=1e-5)
    g = np.random.default_rng(1).standard_normal(y_cpu.shape).astype(np.float32)
    dx_cpu = cpu.backward(g)
    dx_gpu = gpu.backward(backend.to_device(g, "gpu"))
    assert backend.is_gpu_array(dx_gpu)
    np.testing.assert_allclose(_host(dx_gpu), dx_cpu, rtol=1e-4, atol=1e-5)
    for (pname, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters(), strict=True):
        if pc.grad is None:
            assert pg.grad is None, pname
            continue
        assert backend.is_gpu_array(pg.grad), pname
        np.testing.assert_allclose(_host(pg.grad), pc.grad, rtol=1e-4, atol=1e-4, err_msg=pname)
    for (bname, bc), (_, bg) in zip(cpu.named_buffers(), gpu.named_buffers(), strict=True):
        np.testing.assert_allclose(_host(bg), bc, rtol=1e-5, atol=1e-6, err_msg=bname)


@needs_gpu
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_gradcheck_float64_on_gpu(name):
    layer = LAYERS[name][0]().to("gpu")
    x = backend.to_device(_input(name, np.float64, seed=2), "gpu")
    assert gradcheck(layer, x, tol=1e-6, max_entries=60) < 1e-6


@needs_gpu
@pytest.mark.parametrize("loss", [SoftmaxCrossEntropy(), SoftmaxCrossEntropy(0.1), MSELoss()],
                         ids=["xent", "xent-smoothing", "mse"])
def test_losses_on_gpu_equal_cpu_and_gradcheck(loss):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    target = (rng.integers(0, 4, size=5) if isinstance(loss, SoftmaxCrossEntropy)
              else rng.standard_normal((5, 4)))
    cpu_value, cpu_grad = float(loss(x, target)), loss.backward()
    gpu_value = loss(backend.to_device(x, "gpu"), backend.to_device(target, "gpu"))
    gpu_grad = loss.backward()
    assert backend.is_gpu_array(gpu_grad)
    np.testing.assert_allclose(float(gpu_value), cpu_value, rtol=1e-12)
    np.testing.assert_allclose(_host(gpu_grad), cpu_grad, rtol=1e-12, atol=1e-14)
    assert gradcheck(loss, backend.to_device(x, "gpu"), backend.to_device(target, "gpu")) < 1e-6


@needs_gpu
def test_model_round_trip_to_gpu_and_back_keeps_every_array():
    model = resnet20(seed=0)
    before = model.state_dict()
    model.to("gpu")
    assert model.device == "gpu"
    assert all(backend.is_gpu_array(p.data) for p in model.parameters())
    assert all(backend.is_gpu_array(b) for _, b in model.named_buffers() if b is not None)
    on_gpu = model.state_dict()  # host copies, whatever the device
    assert all(type(v) is np.ndarray for v in on_gpu.values())
    model.to("cpu")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
        np.testing.assert_array_equal(on_gpu[key], before[key], err_msg=key)


@needs_gpu
def test_gpu_model_given_a_numpy_batch_is_a_device_error():
    net = simple_convnet(seed=0).to("gpu")
    with pytest.raises(DeviceError, match="input on the CPU.*parameters are on the GPU"):
        net(np.zeros((2, 1, 28, 28), dtype=np.float32))


def _train(model: Any, opt_cls: Any, kwargs: dict, device: str, steps: int = 3,
           in_shape: tuple[int, ...] = (8, 1, 28, 28), dtype: Any = np.float32
           ) -> tuple[Any, Any]:
    """A few optimizer steps on fixed random batches; returns the model and the optimizer."""
    model = model.astype(dtype).to(device)
    opt = opt_cls(model, **kwargs)
    loss = SoftmaxCrossEntropy()
    rng = np.random.default_rng(7)
    for _ in range(steps):
        x = backend.to_device(rng.standard_normal(in_shape).astype(dtype), device)
        y = backend.to_device(rng.integers(0, 10, size=8), device)
        loss(model(x), y)
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()
    return model, opt


@needs_gpu
@pytest.mark.parametrize("opt_cls, kwargs", [
    (optim.SGD, {"lr": 0.05}),
    (optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
    (optim.Adam, {"lr": 1e-3}),
    (optim.AdamW, {"lr": 1e-3}),
], ids=["sgd", "nesterov-wd", "adam", "adamw"])
@pytest.mark.parametrize("build, in_shape", [(simple_convnet, (8, 1, 28, 28)),
                                             (resnet20, (8, 3, 32, 32))],
                         ids=["simple_convnet", "resnet20"])
def test_training_steps_on_gpu_match_cpu(opt_cls, kwargs, build, in_shape):
    # float64: summation-order differences stay near 1e-15, so even Adam's sign-like
    # updates of small gradients agree and the tolerance can be tight.
    args = (opt_cls, kwargs)
    cpu_model, _ = _train(build(seed=0), *args, "cpu", in_shape=in_shape, dtype=np.float64)
    gpu_model, gpu_opt = _train(build(seed=0), *args, "gpu", in_shape=in_shape,
                                dtype=np.float64)
    for state in gpu_opt.state:  # optimizer state lives next to its parameter
        assert all(backend.is_gpu_array(v) for v in state.values() if hasattr(v, "shape"))
    cpu_state, gpu_state = cpu_model.state_dict(), gpu_model.state_dict()
    for key, value in cpu_state.items():
        np.testing.assert_allclose(gpu_state[key], value, rtol=1e-7, atol=1e-9, err_msg=key)


@needs_gpu
def test_optimizer_state_follows_the_model_between_devices():
    model, opt = _train(simple_convnet(seed=0), optim.Adam, {"lr": 1e-3}, "cpu", steps=1)
    model.to("gpu")
    x = backend.to_device(np.zeros((2, 1, 28, 28), dtype=np.float32), "gpu")
    loss = SoftmaxCrossEntropy()
    loss(model(x), backend.to_device(np.array([1, 2]), "gpu"))
    model.backward(loss.backward())
    opt.step()  # state made on the CPU must not meet GPU parameters
    assert all(backend.is_gpu_array(v) for s in opt.state for v in s.values()
               if hasattr(v, "shape"))
    saved = opt.state_dict()
    assert all(type(v) is np.ndarray for k, v in saved.items() if k.startswith("state."))


@needs_gpu
def test_warm_training_step_does_not_grow_the_memory_pool():
    import cupy as cp

    model = simple_convnet(seed=0).to("gpu")
    opt = optim.Adam(model, lr=1e-3)
    loss = SoftmaxCrossEntropy()
    x = backend.to_device(np.ones((16, 1, 28, 28), dtype=np.float32), "gpu")
    y = backend.to_device(np.arange(16) % 10, "gpu")

    def step() -> None:
        loss(model(x), y)
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()

    for _ in range(3):
        step()
    cp.cuda.Device().synchronize()
    pool = cp.get_default_memory_pool()
    before = pool.total_bytes()
    for _ in range(5):
        step()
    cp.cuda.Device().synchronize()
    assert pool.total_bytes() == before


@needs_gpu
def test_dataloader_on_gpu_yields_cupy_batches_equal_to_the_cpu_ones():
    from tinycnn.data import DataLoader

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 1, 6, 6), dtype=np.uint8)
    y = rng.integers(0, 10, size=10)
    cpu = list(DataLoader((x, y), batch_size=4, shuffle=True, seed=3, mean=0.5, std=0.25))
    gpu = list(DataLoader((x, y), batch_size=4, shuffle=True, seed=3, mean=0.5, std=0.25,
                          device="gpu"))
    assert len(cpu) == len(gpu) == 3
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert backend.is_gpu_array(xg) and backend.is_gpu_array(yg)
        np.testing.assert_array_equal(_host(xg), xc)
        np.testing.assert_array_equal(_host(yg), yc)


@needs_gpu
def test_trainer_fits_on_gpu():
    from tinycnn.data import DataLoader
    from tinycnn.trainer import Trainer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=64)
    model = simple_convnet(seed=0)
    trainer = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model, lr=1e-3), device="gpu",
                      progress=False, verbose=False)
    val_on_cpu = DataLoader((x[:32], y[:32]), batch_size=16)  # the trainer moves its batches
    history = trainer.fit(DataLoader((x, y), batch_size=16, device="gpu"), val_on_cpu, epochs=2)
    assert model.device == "gpu"
    assert len(history) == 2 and np.isfinite(history.train_loss).all()
    assert np.isfinite(history.val_accuracy).all()
