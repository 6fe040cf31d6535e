"""Plots of training runs, drawn with Matplotlib's Agg backend (no display needed).

:func:`plot_history` writes one run's curves to a file (:func:`history_figure` draws them).
The notebook figures return the Matplotlib ``Figure`` (Jupyter shows it inline) and also
save it when given ``path``:
:func:`plot_curves` (several runs), :func:`plot_filters` (first-layer weights),
:func:`plot_feature_maps`, :func:`plot_confusion_matrix`, :func:`plot_images` (with labels
and predictions), :func:`plot_image_rows` and :func:`plot_trajectories` (optimizer paths
on a 2-D function).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinycnn.files import atomic_write


def _figure(nrows: int, ncols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    # The object-oriented API with an Agg canvas never touches pyplot's global backend,
    # so plotting works on headless machines and inside notebooks alike.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` atomically (temp file in the same folder, then rename); returns the path."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_write(path) as f:  # readable by others (0644), like every other file
        fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight")
    return path


# Up to this many epochs, every epoch gets a marker and, up to half of it, its own tick.
FEW_EPOCHS = 20


def _epoch_axis(ax: Any, epochs: Sequence[int] | None = None) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs is not None and len(epochs) <= FEW_EPOCHS // 2:
        ax.set_xticks(list(epochs))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)  # one epoch: a point, not 0.95..1.05
    ax.grid(alpha=0.3)


def plot_history(history: Any, path: str | os.PathLike, title: str | None = None) -> Path:
    """Save :func:`history_figure` of a :class:`~tinycnn.trainer.History`; returns the path."""
    return save_figure(history_figure(history, title), path)


def history_figure(history: Any, title: str | None = None) -> Any:
    """Loss, accuracy and learning rate per epoch of a :class:`~tinycnn.trainer.History`.

    Validation curves are drawn when the history has them; the learning-rate panel only
    when the rate changed (a constant rate is named in the title instead). Epochs are
    whole numbers on the axis, and marked when there are few of them. ``title``: e.g. the
    model, the dataset and the final test accuracy. Returns the Matplotlib ``Figure``.
    """
    if len(history.epoch) == 0:
        raise ValueError("plot_history: the history has no epochs to plot")
    ep = list(history.epoch)
    lrs = [float(v) for v in history.lr]
    lr_changes = max(lrs) != min(lrs)
    fig, axes = _figure(1, 3 if lr_changes else 2, (13.0 if lr_changes else 9.0, 3.8))
    style = {"marker": "o", "ms": 4} if len(ep) <= FEW_EPOCHS else {}
    panels = (
        ("loss", history.train_loss, history.val_loss),
        ("accuracy", history.train_accuracy, history.val_accuracy),
    )
    for ax, (name, train, val) in zip(axes[0][:2], panels, strict=True):
        ax.plot(ep, train, label=f"train {name}", **style)
        if any(v == v for v in val):  # any non-NaN validation value
            ax.plot(ep, val, label=f"validation {name}", **style)
        _epoch_axis(ax, ep)
        ax.set_ylabel(name)
        ax.legend()
    if lr_changes:
        ax = axes[0][2]
        ax.plot(ep, lrs, color="tab:green", **style)
        _epoch_axis(ax, ep)
        ax.set_ylabel("learning rate")
        if min(lrs) > 0 and max(lrs) / min(lrs) > 20:
            ax.set_yscale("log")
    else:
        constant = f"learning rate {lrs[0]:g} throughout"
        title = f"{title}\n{constant}" if title else constant
    fig.suptitle(title)
    return fig


# Figures for the notebooks ---------------------------------------------------------------
# Each function below builds one Figure, saves it when ``path`` is given (atomically, via
# save_figure) and returns the Figure, which Jupyter displays inline.


def _finish(fig: Any, path: str | os.PathLike | None, title: str | None) -> Any:
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def _host(a: Any) -> np.ndarray:
    """A NumPy copy of an array, a Parameter's data, or a layer's weight (CuPy included)."""
    if hasattr(a, "weight") and hasattr(a.weight, "data"):
        a = a.weight
    if hasattr(a, "data") and hasattr(a, "requires_grad"):
        a = a.data
    from tinycnn import backend

    return np.asarray(backend.to_device(a, "cpu"))


def _grid(count: int, ncols: int | None) -> tuple[int, int]:
    ncols = max(1, min(count, ncols or int(np.ceil(np.sqrt(count)))))
    return int(np.ceil(count / ncols)), ncols


def _rescale(img: np.ndarray) -> np.ndarray:
    """Map an image to [0, 1] for display: uint8 by /255, floats by their own min and max."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    img = img.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    if lo >= 0.0 and hi <= 1.0:
        return img
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _show(ax: Any, img: np.ndarray, cmap: str = "gray") -> None:
    """Draw a ``(C, H, W)`` or ``(H, W)`` image; 3 channels as RGB, else the first channel."""
    if img.ndim == 3:
        img = img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0]
    ax.imshow(img, cmap=None if img.ndim == 3 else cmap, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_curves(
    histories: Any,
    metrics: Sequence[str] = ("loss", "accuracy"),
    path: str | os.PathLike | None = None,
    title: str | None = None,
    validation: bool = True,
) -> Any:
    """Compare runs: one panel per metric, one colour per run, train solid, validation dashed.

    ``histories``: a :class:`~tinycnn.trainer.History` or a mapping ``{label: History}``.
    ``metrics``: names among ``"loss"``, ``"accuracy"`` (train and validation curves) and
    any other per-epoch list of a History, such as ``"lr"``.
    """
    runs = histories if isinstance(histories, Mapping) else {"": histories}
    if not runs or any(len(h.epoch) == 0 for h in runs.values()):
        raise ValueError("plot_curves: every history needs at least one epoch")
    legend_width = 2.8 if len(runs) > 2 else 0.0
    fig, axes = _figure(1, len(metrics), (4.3 * len(metrics) + legend_width, 3.6))
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, metric in zip(axes[0], metrics, strict=True):
        for color, (label, h) in zip(colors, runs.items(), strict=True):
            name = f"{label} " if label else ""
            if metric in ("loss", "accuracy"):
                ax.plot(h.epoch, getattr(h, f"train_{metric}"), color=color,
                        label=f"{name}train")
                val = getattr(h, f"val_{metric}")
                if validation and any(v == v for v in val):
                    ax.plot(h.epoch, val, color=color, ls="--", label=f"{name}validation")
            elif hasattr(h, metric):
                ax.plot(h.epoch, getattr(h, metric), color=color, label=label or metric)
            else:
                raise ValueError(f"plot_curves: a History has no metric {metric!r}")
        _epoch_axis(ax)
        ax.set_ylabel(metric)
        if len(runs) <= 2:
            ax.legend(fontsize="small")
    if len(runs) > 2:  # one shared legend beside the panels keeps many curves readable
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize="small")
    return _finish(fig, path, title)


def plot_filters(
    weight: Any,
    path: str | os.PathLike | None = None,
    ncols: int | None = None,
    channel: int = 0,
    title: str | None = None,
) -> Any:
    """Show convolution filters ``(O, C, kH, kW)`` as a grid of small images.

    ``weight``: an array, a Parameter or a layer with ``.weight`` (e.g. the first Conv2D).
    Each filter is scaled to its own min/max; three input channels are drawn as RGB,
    otherwise input channel ``channel`` is drawn in grey (dark = negative weights).
    """
    w = _host(weight)
    if w.ndim != 4:
        raise ValueError(f"plot_filters expects weights (O, C, kH, kW), got shape {w.shape}")
    if not (w.shape[1] == 3 or 0 <= channel < w.shape[1]):
        raise ValueError(f"plot_filters: channel {channel} outside 0..{w.shape[1] - 1}")
    rows, cols = _grid(w.shape[0], ncols)
    fig, axes = _figure(rows, cols, (1.1 * cols + 0.4, 1.1 * rows + 0.4))
    for i, ax in enumerate(axes.flat):
        if i >= w.shape[0]:
            ax.axis("off")
            continue
        f = w[i] if w.shape[1] == 3 else w[i, channel]
        lo, hi = float(f.min()), float(f.max())
        _show(ax, (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f))
    return _finish(fig, path, title)


def plot_feature_maps(
    maps: Any,
    path: str | os.PathLike | None = None,
    ncols: int = 8,
    max_maps: int = 32,
    title: str | None = None,
    cmap: str = "viridis",
) -> Any:
    """Show the channels of one activation ``(C, H, W)`` (or ``(1, C, H, W)``) side by side.

    At most ``max_maps`` channels are drawn, each scaled to its own min/max; the panel
    title is the channel index.
    """
    m = _host(maps)
    if m.ndim == 4 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 3:
        raise ValueError(
            f"plot_feature_maps expects one activation (C, H, W) or (1, C, H, W), got {m.shape}"
        )
    count = min(len(m), max_maps)
    rows, cols = _grid(count, ncols)
    fig, axes = _figure(rows, cols, (1.4 * cols + 0.4, 1.5 * rows + 0.4))
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.axis("off")
            continue
        lo, hi = float(m[i].min()), float(m[i].max())
        _show(ax, (m[i] - lo) / (hi - lo) if hi > lo else np.zeros_like(m[i]), cmap=cmap)
        ax.set_title(str(i), fontsize="small")
    return _finish(fig, path, title)


def plot_confusion_matrix(
    cm: Any,
    classes: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    normalize: bool = False,
    title: str | None = None,
) -> Any:
    """Draw a confusion matrix (rows: true class, columns: predicted class) with its counts.

    ``cm``: the ``(C, C)`` counts of :func:`tinycnn.metrics.confusion_matrix`.
    ``normalize=True`` divides each row by its total (each row then shows recall).
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"plot_confusion_matrix expects a square (C, C) matrix, got {cm.shape}")
    k = cm.shape[0]
    classes = [str(c) for c in (classes if classes is not None else range(k))]
    if len(classes) != k:
        raise ValueError(f"plot_confusion_matrix: {len(classes)} class names for {k} classes")
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = 1.2 + 0.55 * k
    fig, axes = _figure(1, 1, (size + 1.2, size))
    ax = axes[0][0]
    image = ax.imshow(values, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8)
    top = float(values.max()) if values.size else 0.0
    for i in range(k):
        for j in range(k):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(values[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize="x-small",
                    color="white" if values[i, j] > 0.5 * top else "black")
    ax.set_xticks(range(k), classes, rotation=45 if max(map(len, classes)) > 2 else 0)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return _finish(fig, path, title)


def plot_images(
    images: Any,
    labels: Any = None,
    predictions: Any = None,
    classes: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    ncols: int = 8,
    title: str | None = None,
) -> Any:
    """A grid of images ``(N, C, H, W)`` or ``(N, H, W)`` with their labels and predictions.

    uint8 images are divided by 255; float images outside [0, 1] (e.g. normalized) are
    scaled to their own min/max. With ``predictions`` each caption reads
    ``"label -> prediction"``, green when right and red when wrong.
    """
    x = _host(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"plot_images expects (N, C, H, W) or (N, H, W), got shape {x.shape}")
    n = len(x)
    for name, given in (("labels", labels), ("predictions", predictions)):
        if given is not None and len(given) != n:
            raise ValueError(f"plot_images: {len(given)} {name} for {n} images")

    def name_of(c: Any) -> str:
        return classes[int(c)] if classes is not None else str(int(c))

    rows, cols = _grid(n, ncols)
    fig, axes = _figure(rows, cols, (1.3 * cols + 0.3, 1.45 * rows + 0.3))
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        _show(ax, _rescale(x[i]))
        if predictions is not None:
            right = labels is None or int(labels[i]) == int(predictions[i])
            caption = name_of(predictions[i]) if labels is None else (
                f"{name_of(labels[i])} -> {name_of(predictions[i])}")
            ax.set_title(caption, fontsize="small", color="green" if right else "red")
        elif labels is not None:
            ax.set_title(name_of(labels[i]), fontsize="small")
    return _finish(fig, path, title)


def plot_image_rows(
    rows: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Any:
    """Rows of images with a label each, e.g. ``{"noisy": a, "clean": b, "output": c}``.

    Every value is ``(N, C, H, W)`` or ``(N, H, W)``; rows may hold different counts.
    """
    if not rows:
        raise ValueError("plot_image_rows needs at least one row")
    data = {}
    for label, images in rows.items():
        x = _host(images)
        data[label] = x[:, None] if x.ndim == 3 else x
        if data[label].ndim != 4:
            raise ValueError(f"plot_image_rows: row {label!r} has shape {x.shape}, "
                             "expected (N, C, H, W) or (N, H, W)")
    cols = max(len(x) for x in data.values())
    fig, axes = _figure(len(data), cols, (1.3 * cols + 0.8, 1.35 * len(data) + 0.3))
    for r, (label, x) in enumerate(data.items()):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(x):
                ax.axis("off")
                continue
            _show(ax, _rescale(x[c]))
            if c == 0:
                ax.set_ylabel(label)
    return _finish(fig, path, title)


def plot_trajectories(
    f: Callable[[Any, Any], Any],
    trajectories: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    xlim: tuple[float, float] = (-10.0, 10.0),
    ylim: tuple[float, float] = (-10.0, 10.0),
    minimum: tuple[float, float] | None = (0.0, 0.0),
    ncols: int = 3,
    title: str | None = None,
) -> Any:
    """Optimizer paths on a 2-D function: one panel per path, over ``f``'s contour lines.

    ``f(X, Y)`` must accept NumPy grids; ``trajectories`` maps a name to the visited points
    ``(T, 2)``. ``minimum`` is marked with a cross.
    """
    if not trajectories:
        raise ValueError("plot_trajectories needs at least one trajectory")
    xs = np.linspace(*xlim, 200)
    ys = np.linspace(*ylim, 200)
    gx, gy = np.meshgrid(xs, ys)
    gz = np.asarray(f(gx, gy), dtype=np.float64)
    levels = np.quantile(gz, np.linspace(0.0, 1.0, 16) ** 2)
    rows, cols = _grid(len(trajectories), ncols)
    fig, axes = _figure(rows, cols, (4.0 * cols, 3.2 * rows))
    for ax, (name, points) in zip(axes.flat, trajectories.items(), strict=False):
        p = _host(points).reshape(-1, 2)
        ax.contour(gx, gy, gz, levels=np.unique(levels), colors="0.7", linewidths=0.7)
        ax.plot(p[:, 0], p[:, 1], "o-", color="tab:red", ms=2.5, lw=1.0)
        ax.plot(p[0, 0], p[0, 1], "s", color="black", ms=4)
        if minimum is not None:
            ax.plot(*minimum, "+", color="black", ms=10, mew=2)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_title(f"{name} ({len(p) - 1} steps)")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    for ax in list(axes.flat)[len(trajectories):]:
        ax.axis("off")
    return _finish(fig, path, title)
