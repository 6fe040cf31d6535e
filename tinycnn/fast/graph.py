"""Graph-level work of the engine: layers that follow each other, run as one pass.

Two folds, both invisible to the user (the outputs and every gradient are the same):

**ReLU -> MaxPool2D** (training and eval). ``FastSequential`` is the twin of
:class:`tinycnn.containers.Sequential`. Where a ``ReLU`` feeds a ``MaxPool2D``, it runs
the pair as one max-pool kernel over the ReLU's *input*: max and ReLU commute,
``pool(relu(x)) = relu(pool(x))``, so the ReLU touches only the pooled values (a quarter
of them for a 2x2 pool) instead of making a full-size output that the pool then reads
again. Backward folds the ReLU's backward into the pool's: the pool routes each window's
gradient to its winner, and the ReLU would then zero it where ``y <= 0``; a winner has
``y > 0`` exactly when the window's output is positive, so the pool's kernel drops the
windows whose output is not, and the ReLU's pass over the full-size gradient disappears.
The pool keeps the argmax it would have had on ``relu(x)``, and the ReLU keeps its input
and makes its full-size output ``y`` the first time anything reads it (``model[i].y``).

**Conv2D -> BatchNorm2D (-> ReLU)** in eval mode, and a residual block's
``relu(main + shortcut)``. With running statistics a BatchNorm is a fixed per-channel
``y = x * scale + shift``, so it folds into the convolution before it: the convolution
runs with the weights ``W * scale`` and the bias ``b * scale + shift`` and applies the
ReLU to each band of output rows while it is in cache
(:meth:`FastConv2D.forward_folded`). The BatchNorm and ReLU passes over the full-size
map disappear. ``Sequential`` folds such runs among its children; the residual blocks of
the zoo (:class:`tinycnn.containers.Residual`, ResNet-20/32/56's and torchvision-style
ResNet's) have twins that fold their main path and run their sum and the ReLU after it
as one in-place pass (in training too: the ReLU then keeps that output as its cache, as
its own forward would). Folding the BatchNorms needs every layer of the container in
eval mode (a deterministic forward).
A folded forward keeps no layer caches, only the container's input: a ``backward`` after
it (a saliency map in eval mode) first runs the forward again layer by layer, in eval
mode, to make them, then runs the layers' backward as written.

Either fold applies only to the engine's own twins with nothing attached to their
instances (a user's or the anomaly mode's wrapper sees the layers run as written), on
the CPU kernels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tinycnn.backend import is_gpu_array
from tinycnn.containers import Residual, Sequential
from tinycnn.fast import kernels_for, twin_of
from tinycnn.fast.conv import FastConv2D
from tinycnn.fast.layers import FastBatchNorm2D, FastMaxPool2D, FastReLU
from tinycnn.models import resnet, resnet_cifar
from tinycnn.module import Module, _output_meta, check_input

_folding = {"on": True}  # off while a folded forward is run again layer by layer


def _untouched(*layers: Any) -> bool:
    """Nothing attached to the instances: no user or anomaly-mode wrapper to bypass."""
    return not any({"forward", "backward"} & layer.__dict__.keys() for layer in layers)


def _on_cpu_kernels(array: Any) -> bool:
    return not is_gpu_array(array) and kernels_for(array) is not None


def _plain_pair(relu: Any, pool: Any, array: Any) -> bool:
    """The engine's own ReLU and MaxPool2D twins, nothing attached, on the CPU kernels."""
    return (type(relu) is FastReLU and type(pool) is FastMaxPool2D
            and _untouched(relu, pool) and _on_cpu_kernels(array))


def _foldable_forward(relu: Any, pool: Any, x: Any) -> bool:
    return (_plain_pair(relu, pool, x) and pool.padding == (0, 0)
            and getattr(x, "ndim", 0) == 4)


def _foldable(relu: Any, pool: Any, grad: Any) -> bool:
    return (
        _plain_pair(relu, pool, grad)
        and pool.out is not None and pool.x_shape is not None
        and relu.__dict__.get("_out_meta") is not None
        and relu.__dict__["_out_meta"].shape == tuple(pool.x_shape)
    )


def _conv_bn_folding(conv: Any, bn: Any, x: Any) -> tuple[Any, Any] | None:
    """``(scale, shift)`` of an eval-mode BatchNorm2D twin over the channels of the Conv2D
    twin before it, to fold into that convolution; None where they do not fold."""
    if not (type(conv) is FastConv2D and type(bn) is FastBatchNorm2D and _untouched(conv, bn)
            and bn.num_features == conv.out_channels and getattr(x, "ndim", 0) == 4):
        return None
    return bn.folding(x.dtype)


def _plain_relu(layer: Any) -> bool:
    return type(layer) is FastReLU and _untouched(layer)


def _may_fold(container: Module, x: Any) -> bool:
    """Folding on, every module in ``container`` in eval mode, on the CPU kernels."""
    return (_folding["on"] and _on_cpu_kernels(x)
            and not any(m.training for m in container.modules()))


def run_chain(layers: list[Any], x: Any, fold: bool) -> tuple[Any, bool]:
    """``layers`` applied in turn to ``x``; with ``fold``, each Conv2D -> eval BatchNorm2D
    (-> ReLU) run in one convolution pass (its layers' caches cleared). Returns the output
    and whether anything was folded. ReLU -> MaxPool2D pairs are run as one pass either way.
    """
    folded = False
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        folding = _conv_bn_folding(layer, nxt, x) if fold and nxt is not None else None
        if folding is not None:
            relu = i + 2 < len(layers) and _plain_relu(layers[i + 2])
            x = layer.forward_folded(x, *folding, relu=relu)
            nxt._clear_cache()
            if relu:
                layers[i + 2]._clear_cache()
            folded = True
            i += 3 if relu else 2
        elif nxt is not None and _foldable_forward(layer, nxt, x):
            x = nxt.forward_after_relu(layer, x)
            i += 2
        else:
            x = layer(x)
            i += 1
    return x, folded


@contextmanager
def _unfolded(container: Module) -> Iterator[None]:
    """No folding, every module of ``container`` in eval mode (as when it folded)."""
    modes = [(m, m.training) for m in container.modules()]
    previous = _folding["on"]
    _folding["on"] = False
    try:
        for m, _ in modes:
            object.__setattr__(m, "training", False)
        yield
    finally:
        _folding["on"] = previous
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


class _Folding:
    """What every folding container twin shares: the input kept after a folded forward,
    and the layer-by-layer forward run again before a backward that needs the caches."""

    def _keep_for_backward(self, x: Any, folded: bool) -> None:
        if folded:
            self.__dict__["_folded_input"] = x
        else:
            self.__dict__.pop("_folded_input", None)

    def _caches_for_backward(self) -> None:
        x = self.__dict__.pop("_folded_input", None)
        if x is not None:
            with _unfolded(self):
                self.forward(x)

    def _clear_cache(self) -> None:
        super()._clear_cache()
        self.__dict__.pop("_folded_input", None)


@twin_of(Sequential)
class FastSequential(_Folding, Sequential):
    """:class:`~tinycnn.containers.Sequential` with ReLU -> MaxPool2D pairs folded, and in
    eval mode Conv2D -> BatchNorm2D (-> ReLU) runs."""

    def forward(self, x: Any) -> Any:
        y, folded = run_chain(list(self._modules.values()), x, _may_fold(self, x))
        self._keep_for_backward(x, folded)
        return y

    def backward(self, grad_out: Any) -> Any:
        self._caches_for_backward()
        children = list(self._modules.values())
        i = len(children) - 1
        while i >= 0:
            if i > 0 and _foldable(children[i - 1], children[i], grad_out):
                grad_out = children[i].backward(grad_out, through_relu=True)
                i -= 2
            else:
                grad_out = children[i].backward(grad_out)
                i -= 1
        return grad_out


class _FoldingBlock(_Folding):
    """A residual block ``relu(main(x) + shortcut(x))``: the sum with its ReLU is one
    in-place pass, and in eval mode its main path is run with folds. Subclasses name the
    parts."""

    def _parts(self) -> tuple[list[Any], Any, Any]:
        """(the main path's layers, the shortcut or None, the ReLU after the sum)."""
        raise NotImplementedError

    def _fused_forward(self, x: Any) -> Any | None:
        """The forward with the sum and its ReLU in one pass (in eval mode with the main
        path folded too), or None where it does not apply (the reference runs)."""
        main, shortcut, relu = self._parts()
        if not (_on_cpu_kernels(x) and _plain_relu(relu) and getattr(x, "ndim", 0) == 4):
            return None
        fold = _may_fold(self, x)
        out, _ = run_chain(main, x, fold=fold)
        skip = x if shortcut is None else shortcut(x)
        if out.shape != skip.shape or out.dtype != skip.dtype:
            return None  # the reference says what is wrong
        # in place where the main path ends in a layer that returns a new array of its own
        own = (type(main[-1]) in (FastConv2D, FastBatchNorm2D) and out.flags.c_contiguous
               and out is not x and out is not skip)
        out = kernels_for(x).add_relu(out, skip, out if own else np.empty_like(out))
        if fold:
            relu._clear_cache()
        else:  # what the ReLU's own forward would have kept: its output
            relu.y = out
            object.__setattr__(relu, "_out_meta", _output_meta(out))
        self._keep_for_backward(x, fold)
        return out

    def backward(self, grad_out: Any) -> Any:
        """The reference block's backward, with ``dL/dx = d_main + d_skip`` added on both
        cores into ``d_main`` (the input gradient the main path's first layer just made)."""
        self._caches_for_backward()
        main, shortcut, relu = self._parts()
        if not (_on_cpu_kernels(grad_out) and type(main[0]) is FastConv2D
                and getattr(grad_out, "ndim", 0) == 4):
            return super().backward(grad_out)
        g = relu.backward(grad_out) if relu is not None else grad_out
        d_main = g
        for layer in reversed(main):
            d_main = layer.backward(d_main)
        d_skip = g if shortcut is None else shortcut.backward(g)
        if d_main is None or d_main.shape != d_skip.shape or not d_main.flags.c_contiguous:
            return d_main + d_skip  # as the reference writes it
        return kernels_for(grad_out).add(d_main, d_skip, d_main)


@twin_of(resnet_cifar.BasicBlock)
class FastCifarBasicBlock(_FoldingBlock, resnet_cifar.BasicBlock):
    """:class:`tinycnn.models.resnet_cifar.BasicBlock`: its sum and ReLU in one pass, its
    main path folded in eval mode."""

    def _parts(self) -> tuple[list[Any], Any, Any]:
        return [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2], self.shortcut, self.relu2

    def forward(self, x: Any) -> Any:
        check_input(self, x, 4, "(N, C, H, W)", channels=self.in_channels)
        out = self._fused_forward(x)
        if out is None:
            self._keep_for_backward(x, False)
            return super().forward(x)
        return out


class _FastResNetBlock(_FoldingBlock):
    def _parts(self) -> tuple[list[Any], Any, Any]:
        return self._main_path(), self.downsample, self.relu_out

    def forward(self, x: Any) -> Any:
        out = self._fused_forward(x)
        if out is None:
            self._keep_for_backward(x, False)
            return super().forward(x)
        return out


@twin_of(resnet.BasicBlock)
class FastResNetBasicBlock(_FastResNetBlock, resnet.BasicBlock):
    """:class:`tinycnn.models.resnet.BasicBlock`: sum and ReLU in one pass, folds in eval."""


@twin_of(resnet.Bottleneck)
class FastResNetBottleneck(_FastResNetBlock, resnet.Bottleneck):
    """:class:`tinycnn.models.resnet.Bottleneck`: sum and ReLU in one pass, folds in eval."""


@twin_of(Residual)
class FastResidual(_FoldingBlock, Residual):
    """:class:`~tinycnn.containers.Residual`; with a ReLU after the sum, its sum and ReLU
    are one pass (its body, a ``Sequential``, folds its own runs)."""

    def _parts(self) -> tuple[list[Any], Any, Any]:
        return [self.body], self.shortcut, self.post

    def forward(self, x: Any) -> Any:
        out = self._fused_forward(x)
        if out is None:
            self._keep_for_backward(x, False)
            return super().forward(x)
        self.ran = True
        return out
