"""Inception v3: torchvision's parameter counts and state-dict keys, the same outputs and
gradients as the network written in plain torch.nn (torchvision's layout, float64, 1e-6
relative), the branch-and-concatenate block gradient-checked, and the paper's training
recipe built with the Trainer."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tinycnn import models
from tinycnn.gradcheck import gradcheck
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.models.inception import InceptionOutputs, _Branches, basic_conv
from tinycnn.optim import RMSProp
from tinycnn.schedules import StepLR
from tinycnn.trainer import Trainer

try:
    import torch
except ImportError:  # the comparisons with torch.nn skip, saying why
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def test_parameter_counts_are_torchvisions():
    assert models.inception_v3(seed=0).num_parameters() == 27_161_264
    assert models.inception_v3(aux_logits=False, seed=0).num_parameters() == 23_834_568


def test_state_dict_keys_follow_torchvisions_layout():
    keys = list(models.inception_v3(seed=0).state_dict())
    basic = [f"{n}.{k}" for n in ("conv",) for k in ("weight",)] + [
        f"bn.{k}" for k in ("weight", "bias", "running_mean", "running_var",
                            "num_batches_tracked")]
    assert keys[:6] == [f"Conv2d_1a_3x3.{k}" for k in basic]
    for name in ("Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "Mixed_5b.branch1x1", "Mixed_5b.branch5x5_2", "Mixed_5d.branch_pool",
                 "Mixed_6a.branch3x3dbl_3", "Mixed_6e.branch7x7dbl_5", "Mixed_7a.branch7x7x3_4",
                 "Mixed_7b.branch3x3_2a", "Mixed_7c.branch3x3dbl_3b", "AuxLogits.conv0",
                 "AuxLogits.conv1"):
        assert all(f"{name}.{k}" in keys for k in basic), name
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    assert {"AuxLogits.fc.weight", "AuxLogits.fc.bias"} <= set(keys)
    # BasicConv2d blocks (6 keys each): stem 5, InceptionA 7 (x3), B 4, C 10 (x4), D 6,
    # E 9 (x2), aux head 2; and two Linear layers
    assert len(keys) == (5 + 3 * 7 + 4 + 4 * 10 + 6 + 2 * 9 + 2) * 6 + 4


def test_branch_block_gradcheck():
    """A small block with every kind of step: a chain, a split into two halves, a pool."""

    class Small(_Branches):
        branches = (("a",), ("b", ("c1", "c2")), ("pool", "d"))

        def __init__(self, rng):
            super().__init__()
            self.a = basic_conv(3, 2, 1, rng)
            self.b = basic_conv(3, 2, 1, rng)
            self.c1 = basic_conv(2, 2, (1, 3), rng, padding=(0, 1))
            self.c2 = basic_conv(2, 3, (3, 1), rng, padding=(1, 0))
            from tinycnn.layers import AvgPool2D

            self.pool = AvgPool2D(3, 1, 1)
            self.d = basic_conv(3, 2, 1, rng)

    block = Small(np.random.default_rng(0)).astype(np.float64).eval()
    rng = np.random.default_rng(2)
    for name, p in block.named_parameters():  # BN shifts off zero: no ReLU input sits at
        if name.endswith("bn.bias"):          # its kink where a ReLU output of 0 comes in
            p.data[...] = rng.uniform(0.2, 0.5, p.shape) * rng.choice([-1, 1], p.shape)
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 4))
    assert block(x).shape == (2, 2 + 5 + 2, 5, 4)
    assert gradcheck(block, x, tol=1e-6) < 1e-6


if torch is not None:
    tnn = torch.nn

    class _TBasicConv(tnn.Module):
        def __init__(self, cin, cout, **kw):
            super().__init__()
            self.conv = tnn.Conv2d(cin, cout, bias=False, **kw)
            self.bn = tnn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    B = _TBasicConv
    avg3 = lambda x: tnn.functional.avg_pool2d(x, 3, 1, 1)  # noqa: E731
    cat = lambda xs: torch.cat(xs, 1)  # noqa: E731

    class _TA(tnn.Module):
        def __init__(self, c, pf):
            super().__init__()
            self.branch1x1 = B(c, 64, kernel_size=1)
            self.branch5x5_1 = B(c, 48, kernel_size=1)
            self.branch5x5_2 = B(48, 64, kernel_size=5, padding=2)
            self.branch3x3dbl_1 = B(c, 64, kernel_size=1)
            self.branch3x3dbl_2 = B(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = B(96, 96, kernel_size=3, padding=1)
            self.branch_pool = B(c, pf, kernel_size=1)

        def forward(self, x):
            return cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        self.branch_pool(avg3(x))])

    class _TB(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.branch3x3 = B(c, 384, kernel_size=3, stride=2)
            self.branch3x3dbl_1 = B(c, 64, kernel_size=1)
            self.branch3x3dbl_2 = B(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = B(96, 96, kernel_size=3, stride=2)

        def forward(self, x):
            return cat([self.branch3x3(x),
                        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                        tnn.functional.max_pool2d(x, 3, 2)])

    class _TC(tnn.Module):
        def __init__(self, c, c7):
            super().__init__()
            self.branch1x1 = B(c, 192, kernel_size=1)
            self.branch7x7_1 = B(c, c7, kernel_size=1)
            self.branch7x7_2 = B(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7_3 = B(c7, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = B(c, c7, kernel_size=1)
            self.branch7x7dbl_2 = B(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = B(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = B(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = B(c7, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch_pool = B(c, 192, kernel_size=1)

        def forward(self, x):
            b2 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            b3 = x
            for i in range(1, 6):
                b3 = getattr(self, f"branch7x7dbl_{i}")(b3)
            return cat([self.branch1x1(x), b2, b3, self.branch_pool(avg3(x))])

    class _TD(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.branch3x3_1 = B(c, 192, kernel_size=1)
            self.branch3x3_2 = B(192, 320, kernel_size=3, stride=2)
            self.branch7x7x3_1 = B(c, 192, kernel_size=1)
            self.branch7x7x3_2 = B(192, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = B(192, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = B(192, 192, kernel_size=3, stride=2)

        def forward(self, x):
            b2 = x
            for i in range(1, 5):
                b2 = getattr(self, f"branch7x7x3_{i}")(b2)
            return cat([self.branch3x3_2(self.branch3x3_1(x)), b2,
                        tnn.functional.max_pool2d(x, 3, 2)])

    class _TE(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.branch1x1 = B(c, 320, kernel_size=1)
            self.branch3x3_1 = B(c, 384, kernel_size=1)
            self.branch3x3_2a = B(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = B(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = B(c, 448, kernel_size=1)
            self.branch3x3dbl_2 = B(448, 384, kernel_size=3, padding=1)
            self.branch3x3dbl_3a = B(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = B(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = B(c, 192, kernel_size=1)

        def forward(self, x):
            b2 = self.branch3x3_1(x)
            b3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            return cat([self.branch1x1(x), cat([self.branch3x3_2a(b2), self.branch3x3_2b(b2)]),
                        cat([self.branch3x3dbl_3a(b3), self.branch3x3dbl_3b(b3)]),
                        self.branch_pool(avg3(x))])

    class _TAux(tnn.Module):
        def __init__(self, c, classes):
            super().__init__()
            self.conv0 = B(c, 128, kernel_size=1)
            self.conv1 = B(128, 768, kernel_size=5)
            self.fc = tnn.Linear(768, classes)

        def forward(self, x):
            x = self.conv1(self.conv0(tnn.functional.avg_pool2d(x, 5, 3)))
            return self.fc(torch.flatten(tnn.functional.adaptive_avg_pool2d(x, 1), 1))

    class _TInception3(tnn.Module):
        """torchvision's Inception3 (transform_input=False), dropout left out (p = 0)."""

        def __init__(self, classes, aux):
            super().__init__()
            self.Conv2d_1a_3x3 = B(3, 32, kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = B(32, 32, kernel_size=3)
            self.Conv2d_2b_3x3 = B(32, 64, kernel_size=3, padding=1)
            self.maxpool1 = tnn.MaxPool2d(3, 2)
            self.Conv2d_3b_1x1 = B(64, 80, kernel_size=1)
            self.Conv2d_4a_3x3 = B(80, 192, kernel_size=3)
            self.maxpool2 = tnn.MaxPool2d(3, 2)
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _TA(192, 32), _TA(256, 64), _TA(288, 64)
            self.Mixed_6a = _TB(288)
            self.Mixed_6b, self.Mixed_6c = _TC(768, 128), _TC(768, 160)
            self.Mixed_6d, self.Mixed_6e = _TC(768, 160), _TC(768, 192)
            self.AuxLogits = _TAux(768, classes) if aux else None
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = _TD(768), _TE(1280), _TE(2048)
            self.fc = tnn.Linear(2048, classes)

        def forward(self, x):
            names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
                     "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c",
                     "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]
            for name in names:
                x = getattr(self, name)(x)
            aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
            x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
            x = self.fc(torch.flatten(tnn.functional.adaptive_avg_pool2d(x, 1), 1))
            return (x, aux) if aux is not None else x


def _compare(aux: bool, mode: str, size: int) -> None:
    ours = models.inception_v3(num_classes=10, aux_logits=aux, dropout=0.0, seed=0)
    rng = np.random.default_rng(1)
    for name, buf in ours.named_buffers():  # statistics that are not the identity
        if name.endswith("running_mean"):
            buf[...] = rng.standard_normal(buf.shape) * 0.1
        elif name.endswith("running_var"):
            buf[...] = rng.uniform(0.5, 2.0, buf.shape)
    ours = ours.astype(np.float64).train(mode == "train")
    theirs = _TInception3(10, aux).double().train(mode == "train")
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v))
                            for k, v in ours.state_dict().items()})  # strict
    x = rng.standard_normal((2, 3, size, size))
    out = ours(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = theirs(xt)
    outs = list(out) if isinstance(out, tuple) else [out]
    refs = list(ref) if isinstance(ref, tuple) else [ref]
    assert len(outs) == len(refs) == (2 if aux and mode == "train" else 1)
    grads = [rng.standard_normal(o.shape) for o in outs]
    for o, r in zip(outs, refs, strict=True):
        np.testing.assert_allclose(o, r.detach().numpy(), rtol=1e-6, atol=1e-9)
    dx = ours.backward(InceptionOutputs(*grads) if len(grads) == 2 else grads[0])
    torch.autograd.backward(refs, [torch.from_numpy(g) for g in grads])
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6,
                               atol=1e-9 * np.abs(xt.grad.numpy()).max())
    ref_grads = dict(theirs.named_parameters())
    floor = 1e-9 * max(float(p.grad.abs().max()) for p in ref_grads.values()
                       if p.grad is not None)
    for name, p in ours.named_parameters():
        want = ref_grads[name].grad
        if want is None:
            assert p.grad is None, name
            continue
        np.testing.assert_allclose(p.grad, want.numpy(), rtol=1e-6, atol=floor, err_msg=name)


@needs_torch
@pytest.mark.parametrize("aux, mode", [(True, "eval"), (False, "train")])
def test_matches_torchvisions_layout_in_torch_at_75(aux, mode):
    """75x75, the smallest input the trunk takes (the auxiliary head needs 299x299)."""
    _compare(aux, mode, 75)


@needs_torch
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TINYCNN_SLOW"),
                    reason="Inception v3 in float64 at 299x299 (the auxiliary head's smallest "
                           "input), both sides, takes about 30 s on 2 cores: set "
                           "TINYCNN_SLOW=1 to run it")
def test_matches_torch_with_the_auxiliary_head_at_299():
    _compare(True, "train", 299)


def test_aux_head_gradient_without_the_head_is_refused():
    model = models.inception_v3(num_classes=10, aux_logits=False, seed=0).eval()
    y = model(np.zeros((1, 3, 75, 75), np.float32))
    with pytest.raises(ValueError, match="expected one gradient array of shape"):
        model.backward(InceptionOutputs(np.ones_like(y), np.ones_like(y)))


def test_the_papers_training_recipe_runs_from_the_trainer():
    model = models.inception_v3(num_classes=10, aux_logits=False, seed=0)
    opt = RMSProp(model, lr=0.045, alpha=0.9, eps=1.0, max_grad_norm=2.0)
    sched = StepLR(opt, step_size=2, gamma=0.94)
    trainer = Trainer(model, SoftmaxCrossEntropy(label_smoothing=0.1), opt, sched,
                      aux_weight=0.4)
    x = np.random.default_rng(0).standard_normal((2, 3, 75, 75)).astype(np.float32)
    before = model.fc.weight.data.copy()
    loss, _, n = trainer.train_step(x, np.array([1, 7]))
    assert np.isfinite(loss) and n == 2
    assert not np.array_equal(model.fc.weight.data, before)
    for _ in range(4):
        sched.step()
    assert opt.lr == pytest.approx(0.045 * 0.94**2)
    assert (opt.alpha, opt.eps, opt.max_grad_norm) == (0.9, 1.0, 2.0)
