"""The engine proven equal to the reference: every layer, container and zoo model both ways.

Each case is built once and copied; one copy runs the reference layers, the other
runs through ``tinycnn.accelerate``. One training-mode forward and one backward with the
same random upstream gradient must give the same output, input gradient, parameter
gradients and buffers (BatchNorm's running statistics), in float64 (to rounding) and in
float32 (at least about as close to float64 as the float32 reference is; see
``run_both``). The Conv2D cases are chosen so that every accelerated path runs; a last
test checks that they all did.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tinycnn
from tinycnn import models
from tinycnn.containers import Concat, Residual, Sequential
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
    Identity,
    LeakyReLU,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    ReLU6,
    Sigmoid,
    Tanh,
    Upsample,
    ZeroPad2D,
)

pytest.importorskip("numba", reason="numba is not installed: the engine's CPU kernels need it")

PATHS_SEEN: set[str] = set()


def conv(*args: Any, **kwargs: Any) -> Callable[[np.random.Generator], Conv2D]:
    return lambda rng: Conv2D(*args, rng=rng, **kwargs)


def untiled(*args: Any, **kwargs: Any) -> Callable[[np.random.Generator], Conv2D]:
    """A Conv2D whose twin does not take the tiled path (so the path it replaces runs)."""

    def build(rng: np.random.Generator) -> Conv2D:
        layer = Conv2D(*args, rng=rng, **kwargs)
        layer.use_tiles = False  # an instance setting, kept when accelerate swaps the class
        return layer

    return build


# (name, builder taking an rng, input shape)
LAYERS = [
    ("conv_direct_first", conv(1, 6, 5, padding=2), (3, 1, 12, 12)),
    ("conv_direct_narrow", untiled(6, 16, 5), (3, 6, 14, 14)),
    ("conv_wide", untiled(20, 24, 3, padding=1), (3, 20, 12, 12)),
    ("conv_tiled_mixed_backward", conv(6, 16, 5), (3, 6, 14, 14)),
    ("conv_tiled_mixed_backward_padded", conv(7, 12, 3, padding=1), (2, 7, 9, 10)),
    ("conv_tiled_20_to_24", conv(20, 24, 3, padding=1), (3, 20, 12, 12)),
    ("conv_tiled_wide_backward", conv(7, 32, 3, padding=1), (2, 7, 10, 10)),
    ("conv_tiled_3x3_pad2", conv(16, 20, 3, padding=2), (2, 16, 8, 9)),
    ("conv_tiled_3x3_pad3_wide_backward", conv(8, 20, 3, padding=3), (2, 8, 7, 9)),
    ("conv_tiled_partial_block_odd_width", conv(12, 20, 3, padding=1), (2, 12, 9, 13)),
    ("conv_tiled_few_input_channels", conv(4, 16, 3, padding=1), (2, 4, 10, 11)),
    ("conv_tiled_5x5_pad2", conv(8, 20, 5, padding=2), (2, 8, 8, 9)),
    ("conv_tiled_tiles_backward", conv(16, 20, 3, padding=1), (2, 16, 8, 8)),
    ("conv_tiled_strided", conv(12, 20, 3, stride=2, padding=1), (2, 12, 16, 17)),
    ("conv_tiled_strided_narrow_phases", conv(12, 20, 3, stride=2, padding=1), (2, 12, 11, 11)),
    ("conv_tiled_stride3_phases", conv(10, 16, 3, stride=3, padding=1), (2, 10, 20, 22)),
    ("conv_tiled_strided_5x5_phases", conv(8, 12, 5, stride=2, padding=2), (2, 8, 13, 16)),
    ("conv_tiled_strided_few_channels", conv(4, 16, 3, stride=2, padding=1), (2, 4, 16, 16)),
    ("conv_images_untiled", untiled(12, 20, 3, stride=2, padding=1), (2, 12, 34, 33)),
    ("conv_wide_dilated", conv(18, 20, 3, padding=2, dilation=2), (2, 18, 11, 10)),
    ("conv_pointwise", conv(20, 24, 1), (3, 20, 8, 8)),
    ("conv_images_strided", conv(17, 20, 3, stride=2, padding=1), (2, 17, 34, 33)),
    ("conv_rows_small_maps", conv(20, 24, 3, stride=2, padding=1), (3, 20, 6, 6)),
    ("conv_rows_groups", conv(8, 12, 3, padding=1, groups=4), (2, 8, 7, 7)),
    ("conv_rows_same_even", conv(20, 24, 4, padding="same"), (2, 20, 9, 8)),
    ("conv_depthwise", conv(8, 8, 3, stride=2, padding=1, groups=8), (2, 8, 9, 9)),
    ("conv_no_bias", conv(20, 24, 3, padding=1, bias=False), (2, 20, 10, 10)),
    ("maxpool_2x2", lambda rng: MaxPool2D(2), (2, 3, 8, 8)),
    ("maxpool_3x3_s2_p1", lambda rng: MaxPool2D(3, 2, 1), (2, 3, 9, 7)),
    ("avgpool_3x3_s1_p1", lambda rng: AvgPool2D(3, 1, 1), (2, 3, 7, 6)),
    ("maxpool_ceil_overhang", lambda rng: MaxPool2D(3, 2, ceil_mode=True), (2, 3, 8, 7)),
    ("maxpool_ceil_exact", lambda rng: MaxPool2D(3, 2, ceil_mode=True), (2, 3, 9, 9)),
    ("avgpool_ceil_pad", lambda rng: AvgPool2D(3, 2, 1, ceil_mode=True), (2, 3, 8, 6)),
    ("avgpool_exclude_pad", lambda rng: AvgPool2D(3, 1, 1, count_include_pad=False),
     (2, 3, 7, 6)),
    ("avgpool_exclude_no_pad", lambda rng: AvgPool2D(2, count_include_pad=False), (2, 3, 6, 6)),
    ("batchnorm2d", lambda rng: BatchNorm2D(5), (4, 5, 6, 6)),
    ("batchnorm1d", lambda rng: BatchNorm1D(7), (8, 7)),
    ("batchnorm1d_ncl", lambda rng: BatchNorm1D(3, affine=False), (4, 3, 5)),
    ("relu_small", lambda rng: ReLU(), (4, 6)),
    ("relu_large", lambda rng: ReLU(), (4, 16, 32, 33)),
    ("relu6", lambda rng: ReLU6(), (4, 6)),
    ("leaky_relu", lambda rng: LeakyReLU(0.1), (4, 6)),
    ("sigmoid", lambda rng: Sigmoid(), (4, 6)),
    ("tanh", lambda rng: Tanh(), (4, 6)),
    ("affine", lambda rng: Affine(12, 5, rng=rng), (4, 12)),
    ("flatten", lambda rng: Flatten(), (2, 3, 4, 4)),
    ("identity", lambda rng: Identity(), (2, 3)),
    ("dropout", lambda rng: Dropout(0.3, seed=1), (4, 10)),
    ("dropout2d", lambda rng: Dropout2D(0.3, seed=1), (4, 3, 5, 5)),
    ("global_avg_pool", lambda rng: GlobalAvgPool2D(), (2, 3, 5, 4)),
    ("adaptive_avg_pool", lambda rng: AdaptiveAvgPool2D(3), (2, 3, 7, 8)),
    ("conv_transpose", lambda rng: ConvTranspose2D(3, 4, 3, stride=2, rng=rng), (2, 3, 5, 5)),
    ("lrn", lambda rng: LocalResponseNorm(3), (2, 5, 4, 4)),
    ("upsample", lambda rng: Upsample(scale_factor=2), (2, 3, 4, 4)),
    ("zero_pad", lambda rng: ZeroPad2D(1), (2, 3, 4, 4)),
]

CONTAINERS = [
    ("sequential_relu_pool", lambda rng: Sequential(
        Conv2D(3, 20, 3, padding=1, rng=rng), BatchNorm2D(20), ReLU(), MaxPool2D(2),
        Conv2D(20, 24, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2), Flatten(),
        Affine(24 * 4, 5, rng=rng)), (3, 3, 8, 8)),
    ("residual", lambda rng: Residual(Sequential(
        Conv2D(20, 20, 3, padding=1, rng=rng), BatchNorm2D(20), ReLU(),
        Conv2D(20, 20, 3, padding=1, rng=rng), BatchNorm2D(20)), post=ReLU()), (2, 20, 8, 8)),
    ("concat", lambda rng: Concat(
        Conv2D(4, 6, 1, rng=rng), Sequential(Conv2D(4, 5, 3, padding=1, rng=rng), ReLU()),
        MaxPool2D(3, 1, 1)), (2, 4, 9, 9)),
    ("sequential_relu_ceil_pool", lambda rng: Sequential(
        Conv2D(3, 6, 3, rng=rng), ReLU(), MaxPool2D(2, ceil_mode=True), ReLU(),
        MaxPool2D(2, ceil_mode=True), Flatten()), (2, 3, 9, 9)),
]

# (builder, keyword arguments, input shape): small inputs keep the reference side quick
ZOO = [
    ("simple_convnet", {}, (4, 1, 28, 28)),
    ("lenet5", {}, (4, 1, 28, 28)),
    ("deep_convnet", {}, (2, 1, 28, 28)),
    ("resnet20", {}, (2, 3, 32, 32)),
    ("fast_cifar", {}, (2, 3, 32, 32)),
    ("vgg_cifar", {}, (2, 3, 32, 32)),
    ("vgg11_cifar", {}, (2, 3, 32, 32)),
    ("mobilenet_v1_cifar", {}, (2, 3, 32, 32)),
    ("mobilenet_v2_cifar", {}, (2, 3, 32, 32)),
    ("densenet_cifar", {}, (2, 3, 32, 32)),
    ("nin", {"num_classes": 10}, (2, 3, 96, 96)),
    ("resnet18", {"num_classes": 10}, (2, 3, 64, 64)),
    ("resnext50_32x4d", {"num_classes": 10}, (2, 3, 64, 64)),
    ("googlenet", {"num_classes": 10}, (2, 3, 64, 64)),
    ("alexnet_paper_cifar", {}, (2, 3, 32, 32)),
    # 107, not the smallest 75: at 75 Mixed_7 is 1x1, and a training-mode BatchNorm over
    # 2 values per channel leaves the 8th digit to round-off
    ("inception_v3", {"num_classes": 10, "aux_logits": False}, (2, 3, 107, 107)),
]


def _as_tuple(a: Any) -> tuple[Any, ...]:
    return tuple(a) if isinstance(a, tuple) else (a,)


def one_step(model: Any, x: Any, g_seed: int) -> dict[str, Any]:
    """Output, input gradient, parameter gradients and buffers of one training step."""
    y = model(x)
    rng = np.random.default_rng(g_seed)
    grads = tuple(rng.standard_normal(np.shape(a)).astype(x.dtype) for a in _as_tuple(y))
    dx = model.backward(grads if isinstance(y, tuple) else grads[0])
    arrays = {f"output {i}": a for i, a in enumerate(_as_tuple(y))}
    arrays["input gradient"] = dx
    arrays |= {f"gradient of {n}": p.grad for n, p in model.named_parameters()}
    arrays |= {f"buffer {n}": b for n, b in model.named_buffers()}
    for m in model.modules():
        if getattr(m, "impl", None):
            PATHS_SEEN.add(m.impl)
        if getattr(m, "tiled_backward", None):
            PATHS_SEEN.add(f"tiled, {m.tiled_backward} backward")
    return arrays


def _rel(a: Any, b: Any) -> float:
    """Relative error of ``a`` against ``b`` in the 2-norm (over the whole array)."""
    diff = np.linalg.norm(np.asarray(a, dtype=np.float64) - b)
    return float(diff) / max(float(np.linalg.norm(b)), 1e-12)


def run_both(build: Callable[[], Any], x_shape: tuple[int, ...], seed: int = 0) -> None:
    """One training step of the reference and of the accelerated copy, in float64 and in
    float32, compared array by array.

    float64: equal to rounding, element by element. float32: the kernels sum in another
    order, and a deep net's gradients can lose digits to cancellation in either order
    (a BatchNorm scale's gradient, a sum over the batch, can be off by a percent in
    float32 in the reference itself), so each float32 array of the engine must be within
    3x of the float32 reference's error against float64 (that array's, or the median over
    the model's parameter gradients where it is larger).
    """
    x64 = np.random.default_rng(seed).standard_normal(x_shape)
    model = build()
    truth = one_step(copy.deepcopy(model).astype(np.float64).train(), x64, seed + 1)
    fast64 = one_step(tinycnn.accelerate(copy.deepcopy(model).astype(np.float64).train()),
                      x64, seed + 1)
    ref32 = one_step(copy.deepcopy(model).astype(np.float32).train(),
                     x64.astype(np.float32), seed + 1)
    fast32 = one_step(tinycnn.accelerate(copy.deepcopy(model).astype(np.float32).train()),
                      x64.astype(np.float32), seed + 1)
    assert truth.keys() == fast64.keys() == ref32.keys() == fast32.keys()
    # the float32 reference's typical error on this model: an array that loses digits to
    # cancellation in one summation order can keep them in the other by chance
    typical = float(np.median([_rel(ref32[k], v) for k, v in truth.items()
                               if v is not None and k.startswith("gradient")] or [0.0]))
    for what, want in truth.items():
        if want is None:
            assert fast64[what] is None and fast32[what] is None, what
            continue
        got = fast64[what]
        assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, reference {want.dtype}"
        np.testing.assert_allclose(got, want, rtol=1e-9,
                                   atol=1e-9 * max(1.0, float(np.abs(want).max(initial=0))),
                                   err_msg=f"float64 {what}")
        if what.startswith(("output", "input")):
            assert fast32[what].dtype == np.float32, what
        bound = 3 * max(_rel(ref32[what], want), typical) + 1e-5
        assert _rel(fast32[what], want) <= bound, (
            f"float32 {what}: relative error {_rel(fast32[what], want):.2e} against float64, "
            f"the reference's {_rel(ref32[what], want):.2e}")


@pytest.mark.parametrize(("name", "build", "shape"), LAYERS + CONTAINERS,
                         ids=[c[0] for c in LAYERS + CONTAINERS])
def test_layers_and_containers(name: str, build: Any, shape: tuple[int, ...]) -> None:
    run_both(lambda: build(np.random.default_rng(7)), shape)


@pytest.mark.parametrize(("name", "kwargs", "shape"), ZOO, ids=[z[0] for z in ZOO])
def test_zoo_models(name: str, kwargs: dict[str, Any], shape: tuple[int, ...]) -> None:
    builder = getattr(models, name)
    run_both(lambda: builder(seed=3, **kwargs), shape)


def test_eval_mode_uses_running_statistics_both_ways() -> None:
    model = models.resnet20(seed=1)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    model(x)  # one training step's statistics
    model.eval()
    y_ref = model(x)
    tinycnn.accelerate(model)
    np.testing.assert_allclose(model(x), y_ref, rtol=2e-4, atol=2e-4)


def test_every_accelerated_conv_path_ran() -> None:
    """The cases above cover each of Conv2D's accelerated paths and each backward of the
    tiled path (run after them)."""
    if not PATHS_SEEN:
        pytest.skip("run together with the equality tests above (it checks what they ran)")
    assert PATHS_SEEN >= {"rows", "wide", "pointwise", "images", "depthwise", "direct", "tiled"}
    assert PATHS_SEEN >= {f"tiled, {mode} backward"
                          for mode in ("tiles", "mixed", "direct", "phases", "strided", "wide",
                                     "rows")}


def test_switching_back_and_forth_keeps_state_and_names() -> None:
    model = models.lenet5(seed=0)
    state = model.state_dict()
    names = [n for n, _ in model.named_modules()]
    text = repr(model)
    tinycnn.accelerate(model)
    assert tinycnn.is_accelerated(model)
    assert repr(model) == text  # the twins keep the layers' names
    assert [n for n, _ in model.named_modules()] == names
    assert model.state_dict().keys() == state.keys()
    tinycnn.accelerate(model, False)
    assert not tinycnn.is_accelerated(model)
    assert all(type(m).__module__.startswith("tinycnn.layers") or m is model
               or type(m).__module__.startswith("tinycnn.containers")
               for m in model.modules())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key])


def test_reference_kernels_switch_runs_the_layers_own_code() -> None:
    layer = tinycnn.accelerate(Conv2D(20, 24, 3, padding=1))
    x = np.ones((1, 20, 8, 8), dtype=np.float32)
    with tinycnn.use_kernels("reference"):
        layer(x)
        assert layer.impl is None
    layer(x)
    assert layer.impl == "tiled"


def test_relu_before_max_pool_is_folded_into_its_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    """The accelerated Sequential skips the ReLU's own backward before a max-pool (the pool's
    kernel drops windows whose output is not positive) and gets the reference's gradient;
    the ReLU's cache still holds its full-size output."""
    from tinycnn.fast.layers import FastReLU

    rng = np.random.default_rng(5)
    reference = Sequential(Conv2D(2, 4, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
                           ReLU(), MaxPool2D(3, 2, 1), Flatten())
    fast = tinycnn.accelerate(copy.deepcopy(reference))
    calls = []
    original = FastReLU.backward
    monkeypatch.setattr(FastReLU, "backward", lambda self, g: calls.append(1) or original(self, g))
    x = rng.standard_normal((3, 2, 9, 9))
    x[:, :, ::2] = 0.0  # zeros and ties before the ReLU
    g = rng.standard_normal(reference(x).shape)
    np.testing.assert_allclose(fast(x), reference(x), rtol=1e-12, atol=1e-14)
    assert "_deferred_input" in fast[1].__dict__  # the first pair ran as one kernel
    np.testing.assert_allclose(fast.backward(g), reference.backward(g), rtol=1e-12, atol=1e-14)
    assert calls == []  # both ReLUs folded
    for i in (1, 3):  # every cache as if the layers had run one by one
        np.testing.assert_allclose(fast[i].y, reference[i].y, rtol=1e-12, atol=1e-14)
    for i in (2, 4):
        np.testing.assert_array_equal(fast[i].argmax, reference[i].argmax)
        assert fast[i].x_shape == reference[i].x_shape
    np.testing.assert_allclose(fast[2].backward(g2 := rng.standard_normal(fast[2].out.shape)),
                               reference[2].backward(g2), rtol=1e-12, atol=1e-14)
    fast[1].backward = lambda g: original(fast[1], g)  # something attached: no folding
    fast(x)
    np.testing.assert_allclose(fast.backward(g), reference.backward(g), rtol=1e-12, atol=1e-14)
    assert calls == []  # the instance attribute, not the class method, ran
    assert "backward" in fast[1].__dict__


def test_an_accelerated_model_copies_and_pickles_after_a_step() -> None:
    """deepcopy (transfer learning copies a trained model) and pickle keep working."""
    import pickle

    model = tinycnn.accelerate(models.simple_convnet(seed=0))
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    y = model(x)
    model.backward(np.ones_like(y))
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert tinycnn.is_accelerated(twin)
        np.testing.assert_array_equal(twin(x), y)


def test_accelerate_names_what_it_takes() -> None:
    with pytest.raises(TypeError, match="accelerate takes a tinycnn Module .* got list"):
        tinycnn.accelerate([Conv2D(1, 1, 3)])


def test_batchnorm_twin_makes_xhat_only_when_read() -> None:
    """The BatchNorm twin writes y only; the reference's cache ``xhat`` is made from the
    kept input when something reads it, and a reference-mode backward after a fast
    forward gets the same gradients."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 5, 6, 6)) * 3 + 2).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    reference = BatchNorm2D(5)
    reference.weight.data[...] = rng.uniform(0.5, 2.0, 5)
    fast = tinycnn.accelerate(copy.deepcopy(reference))
    np.testing.assert_allclose(fast(x), reference(x), rtol=1e-5, atol=1e-5)
    assert fast.__dict__.get("xhat") is None  # not written by forward
    np.testing.assert_allclose(fast.xhat, reference.xhat, rtol=1e-5, atol=1e-5)
    with tinycnn.use_kernels("reference"):
        dx = fast.backward(g)
    np.testing.assert_allclose(dx, reference.backward(g), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)


def _with_running_statistics(model: Any, rng: np.random.Generator) -> Any:
    """Every BatchNorm with running statistics and an affine part far from the defaults,
    so that an eval-mode fold that got them wrong shows."""
    for m in model.modules():
        if isinstance(m, (BatchNorm1D, BatchNorm2D)) and m.track_running_stats:
            c = m.num_features
            m.running_mean[...] = rng.standard_normal(c)
            m.running_var[...] = rng.uniform(0.3, 3.0, c)
            if m.affine:
                m.weight.data[...] = rng.uniform(-2.0, 2.0, c)
                m.bias.data[...] = rng.standard_normal(c)
    return model


def eval_step(model: Any, x: Any, g_seed: int) -> tuple[dict[str, Any], int]:
    """Output of an eval-mode forward, then the input and parameter gradients of a
    backward after it; and how many containers folded that forward."""
    y = model(x)
    folded = sum("_folded_input" in m.__dict__ for m in model.modules())
    g = np.random.default_rng(g_seed).standard_normal(y.shape).astype(x.dtype)
    model.train()  # a switch between forward and backward changes nothing
    arrays = {"output": y, "input gradient": model.backward(g)}
    arrays |= {f"gradient of {n}": p.grad for n, p in model.named_parameters()}
    arrays |= {f"buffer {n}": b for n, b in model.named_buffers()}
    return arrays, folded


EVAL_FOLDS = [
    ("sequential_conv_bn_relu", lambda rng: Sequential(
        Conv2D(3, 20, 3, padding=1, rng=rng), BatchNorm2D(20), ReLU(), MaxPool2D(2),
        Conv2D(20, 24, 3, padding=1, rng=rng), BatchNorm2D(24),
        Conv2D(24, 16, 1, rng=rng), BatchNorm2D(16, affine=False), ReLU()), (3, 3, 8, 8)),
    ("residual_post_relu", CONTAINERS[1][1], (2, 20, 8, 8)),
    ("resnet20", lambda rng: models.resnet20(seed=rng), (2, 3, 32, 32)),
    ("resnet20_option_b", lambda rng: models.resnet20(shortcut="B", seed=rng), (2, 3, 32, 32)),
    ("resnet18", lambda rng: models.resnet18(num_classes=10, seed=rng), (2, 3, 64, 64)),
    ("resnext50_32x4d", lambda rng: models.resnext50_32x4d(num_classes=10, seed=rng),
     (2, 3, 64, 64)),
    ("vgg_cifar", lambda rng: models.vgg_cifar(seed=rng), (2, 3, 32, 32)),
    ("mobilenet_v2_cifar", lambda rng: models.mobilenet_v2_cifar(seed=rng), (2, 3, 32, 32)),
]


@pytest.mark.parametrize(("name", "build", "shape"), EVAL_FOLDS, ids=[c[0] for c in EVAL_FOLDS])
def test_eval_mode_folds_match_the_reference(name: str, build: Any, shape: tuple) -> None:
    """Eval mode: Conv2D -> BatchNorm2D (-> ReLU) runs and residual sums folded by the
    engine give the reference's output; a backward after the folded forward (the model
    switched to training in between) gives the reference's eval-mode gradients."""
    model = _with_running_statistics(build(np.random.default_rng(7)), np.random.default_rng(8))
    x64 = np.random.default_rng(9).standard_normal(shape)
    truth, _ = eval_step(copy.deepcopy(model).astype(np.float64).eval(), x64, 10)
    fast64, folded = eval_step(
        tinycnn.accelerate(copy.deepcopy(model).astype(np.float64)).eval(), x64, 10)
    assert folded > 0, "nothing was folded"
    fast32, _ = eval_step(tinycnn.accelerate(copy.deepcopy(model).astype(np.float32)).eval(),
                          x64.astype(np.float32), 10)
    for what, want in truth.items():
        scale = max(1.0, float(np.abs(want).max(initial=0)))
        np.testing.assert_allclose(fast64[what], want, rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=f"float64 {what}")
        if not what.startswith("buffer"):
            assert fast32[what].dtype == np.float32, what
        assert _rel(fast32[what], want) <= 1e-3, f"float32 {what}"


def test_folding_leaves_wrapped_or_training_layers_as_written() -> None:
    """A layer with something attached (a user's or the anomaly mode's wrapper) and a
    container with a layer in training mode run layer by layer."""
    rng = np.random.default_rng(1)
    model = tinycnn.accelerate(Sequential(Conv2D(3, 16, 3, padding=1, rng=rng),
                                          BatchNorm2D(16), ReLU())).eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    model(x)
    assert "_folded_input" in model.__dict__ and model[1].xhat is None
    seen = []
    inner = model[1].forward
    object.__setattr__(model[1], "forward", lambda a: seen.append(1) or inner(a))
    model(x)
    assert seen and "_folded_input" not in model.__dict__
    del model[1].__dict__["forward"]
    model[2].train()
    model(x)
    assert "_folded_input" not in model.__dict__ and model[1].xhat is not None
