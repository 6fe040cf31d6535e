"""Neural style transfer (Gatys, Ecker and Bethge 2016): Gram matrices and the two losses.

Style transfer optimizes the *image*, not the network: a frozen feature extractor maps the
image to feature maps, a content loss compares them with the content image's, a style loss
compares their Gram matrices (channel correlations) with the style image's, and the
gradient with respect to the image comes out of ``model.backward`` (every layer returns
dL/d(input), so the first layer's is dL/d(image)).

* :func:`gram_matrix` / :func:`gram_matrix_backward`, and :class:`GramMatrix` as a layer;
* :class:`ContentLoss`, :class:`StyleLoss`: the PyTorch tutorial's losses (MSE on features,
  MSE on Gram matrices normalized by ``C*H*W``);
* :class:`StyleTransfer`: loss and image gradient over several layers of a
  :class:`~tinycnn.containers.Sequential` in one forward and one backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tinycnn.losses import Loss, _scale
from tinycnn.module import LayerInputError, Module, check_input


def gram_matrix(features: Any) -> Any:
    """``G[n] = F_n F_n^T / (C*H*W)`` with ``F_n = features[n].reshape(C, H*W)``.

    Shapes: ``(N, C, H, W) -> (N, C, C)``. The normalization is the PyTorch tutorial's
    (per image), so the style loss does not grow with the feature map size.
    """
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return (f @ f.transpose(0, 2, 1)) / (c * h * w)


def gram_matrix_backward(grad_gram: Any, features: Any) -> Any:
    """dL/dF = (dL/dG + dL/dG^T) F / (C*H*W), reshaped to ``(N, C, H, W)``."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    sym = grad_gram + grad_gram.transpose(0, 2, 1)
    return ((sym @ f) / (c * h * w)).reshape(features.shape)


class GramMatrix(Module):
    """:func:`gram_matrix` as a layer, ``(N, C, H, W) -> (N, C, C)``.

    Backward: dL/dF = (G_up + G_up^T) F / (C*H*W), with G_up = dL/dG.
    """

    def __init__(self) -> None:
        super().__init__()
        self.x = None

    def forward(self, x: Any) -> Any:
        check_input(self, x, 4, "(N, C, H, W)")
        self.x = x
        return gram_matrix(x)

    def backward(self, grad_out: Any) -> Any:
        self._need_cache(self.x)
        return gram_matrix_backward(grad_out, self.x)

    def _clear_cache(self) -> None:
        self.x = None


class ContentLoss(Loss):
    """``L = weight * mean((F - T)^2)`` between features ``F`` and target features ``T``.

    ``target`` is fixed at construction (``loss(features)``) or given per call
    (``loss(features, target)``). Backward: dL/dF = weight * 2 (F - T) / F.size.
    """

    def __init__(self, target: Any = None, weight: float = 1.0) -> None:
        self.target = target
        self.weight = float(weight)
        self.diff = None

    def __call__(self, x: Any, target: Any = None) -> Any:
        return self.forward(x, target)

    def forward(self, x: Any, target: Any = None) -> Any:
        target = self.target if target is None else target
        if target is None:
            raise ValueError("ContentLoss needs target features (at construction or per call)")
        if tuple(x.shape) != tuple(target.shape):
            raise LayerInputError(
                f"ContentLoss expected features of shape {tuple(target.shape)} (the target's), "
                f"got {tuple(x.shape)}"
            )
        self.diff = x - target.astype(x.dtype, copy=False)
        return self.weight * (self.diff * self.diff).mean()

    def backward(self, grad: Any = 1.0) -> Any:
        self._need_cache(self.diff)
        scale = self.weight * 2.0 / self.diff.size
        return self.diff * (_scale(grad, self.diff.dtype) * scale)


class StyleLoss(Loss):
    """``L = weight * mean((gram(F) - gram(S))^2)`` for features ``F`` and style features ``S``.

    ``target`` holds the style image's *features* ``(N or 1, C, H', W')`` (their Gram matrix
    is kept; its spatial size may differ from ``F``'s). A one-image target is compared with
    every image of the batch. Backward:
    dL/dG = weight * 2 (G - G_S) / G.size, then dL/dF by :func:`gram_matrix_backward`.
    """

    def __init__(self, target: Any = None, weight: float = 1.0) -> None:
        self.target_gram = None if target is None else gram_matrix(target)
        self.weight = float(weight)
        self.x = None
        self.diff = None

    def __call__(self, x: Any, target: Any = None) -> Any:
        return self.forward(x, target)

    def forward(self, x: Any, target: Any = None) -> Any:
        if getattr(x, "ndim", None) != 4:
            raise LayerInputError(
                f"StyleLoss expected 4-D features (N, C, H, W), got shape {getattr(x, 'shape', x)}"
            )
        target_gram = self.target_gram if target is None else gram_matrix(target)
        if target_gram is None:
            raise ValueError("StyleLoss needs target features (at construction or per call)")
        gram = gram_matrix(x)
        if target_gram.shape[1:] != gram.shape[1:] or target_gram.shape[0] not in (
            1, gram.shape[0]
        ):
            raise LayerInputError(
                f"StyleLoss: features with {x.shape[1]} channels give Gram matrices "
                f"{tuple(gram.shape)}, the target's are {tuple(target_gram.shape)}"
            )
        self.x = x
        self.diff = gram - target_gram.astype(x.dtype, copy=False)
        return self.weight * (self.diff * self.diff).mean()

    def backward(self, grad: Any = 1.0) -> Any:
        self._need_cache(self.x, self.diff)
        d_gram = self.diff * (_scale(grad, self.diff.dtype) * self.weight * 2.0 / self.diff.size)
        return gram_matrix_backward(d_gram, self.x)


class StyleTransfer:
    """Total style + content loss of an image and its gradient, through one network.

    ``features`` is a :class:`~tinycnn.containers.Sequential` (e.g. the ``features`` part of
    :func:`tinycnn.models.vgg16`); it is put in eval mode and frozen, since only the image is
    optimized. ``style_layers`` / ``content_layers`` are indices of its children whose
    *outputs* are compared. Only the children up to the deepest index are run.

    ``loss_and_grad(image)`` runs the layers once, adds the losses at the tapped outputs,
    then runs backward from the deepest tap to the image, adding each tap's loss gradient
    where its layer's output fans out to the loss and to the next layer:
    ``g_i = layer_{i+1}.backward(g_{i+1}) + dL_i/d(out_i)``.
    """

    def __init__(
        self,
        features: Any,
        style_image: Any,
        content_image: Any,
        style_layers: Sequence[int],
        content_layers: Sequence[int],
        style_weight: float = 1e6,
        content_weight: float = 1.0,
    ) -> None:
        layers = list(features)
        taps = list(style_layers) + list(content_layers)
        if not taps:
            raise ValueError("StyleTransfer needs at least one style or content layer")
        bad = [i for i in taps if not 0 <= i < len(layers)]
        if bad:
            raise ValueError(
                f"StyleTransfer: layer indices {bad} are out of range for {len(layers)} layers"
            )
        self.layers = layers[: max(taps) + 1]
        for layer in self.layers:
            layer.eval()
            layer.freeze()
        style_feats = self._run(style_image)
        content_feats = self._run(content_image)
        self.style = {i: StyleLoss(style_feats[i], style_weight) for i in style_layers}
        self.content = {i: ContentLoss(content_feats[i], content_weight) for i in content_layers}

    def _run(self, image: Any) -> list[Any]:
        """Outputs of every kept layer for ``image``."""
        outs = []
        x = image
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs

    def loss_and_grad(self, image: Any) -> tuple[float, Any]:
        """``(total loss, dL/d(image))`` for an image ``(N, C, H, W)``."""
        outs = self._run(image)
        total = 0.0
        for i, loss in (*self.style.items(), *self.content.items()):
            total += float(loss(outs[i]))
        g = None  # the deepest kept layer is a tap, so g is set on the first step
        for i in range(len(self.layers) - 1, -1, -1):
            for table in (self.style, self.content):
                if i in table:
                    local = table[i].backward()
                    g = local if g is None else g + local
            g = self.layers[i].backward(g)
        return total, g
