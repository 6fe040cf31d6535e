"""Plots of training runs, drawn with Matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


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
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix or ".png"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _epoch_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_history(history: Any, path: str | os.PathLike, title: str | None = None) -> Path:
    """Loss, accuracy and learning rate per epoch of a :class:`~tinycnn.trainer.History`.

    Validation curves are drawn when the history has them. Returns the written path.
    """
    if len(history.epoch) == 0:
        raise ValueError("plot_history: the history has no epochs to plot")
    fig, axes = _figure(1, 3, (13.0, 3.8))
    ep = history.epoch
    panels = (
        ("loss", history.train_loss, history.val_loss),
        ("accuracy", history.train_accuracy, history.val_accuracy),
    )
    for ax, (name, train, val) in zip(axes[0][:2], panels, strict=True):
        ax.plot(ep, train, marker="o", ms=3, label=f"train {name}")
        if any(v == v for v in val):  # any non-NaN validation value
            ax.plot(ep, val, marker="o", ms=3, label=f"validation {name}")
        _epoch_axis(ax)
        ax.set_ylabel(name)
        ax.legend()
    ax = axes[0][2]
    ax.plot(ep, history.lr, marker="o", ms=3, color="tab:green")
    _epoch_axis(ax)
    ax.set_ylabel("learning rate")
    if min(history.lr) > 0 and max(history.lr) / min(history.lr) > 20:
        ax.set_yscale("log")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
