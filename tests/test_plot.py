"""Every figure of :mod:`tinycnn.plot` renders to a valid, non-empty PNG file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinycnn import Conv2D, plot
from tinycnn.metrics import confusion_matrix
from tinycnn.trainer import History

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path: Path) -> tuple[int, int]:
    """Walk the PNG chunks (CRC-checked) and return ``(width, height)``."""
    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE, f"{path} does not start with the PNG signature"
    pos, chunks, size = 8, [], None
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        kind = raw[pos + 4:pos + 8]
        body = raw[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r} of {path}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    assert size is not None and size[0] > 50 and size[1] > 50
    return size


def history(epochs: int = 4, offset: float = 0.0) -> History:
    h = History()
    for e in range(1, epochs + 1):
        h.append(epoch=e, train_loss=1.0 / e + offset, train_accuracy=0.5 + 0.1 * e,
                 val_loss=1.2 / e + offset, val_accuracy=0.45 + 0.1 * e, lr=0.1 * 0.5**e,
                 time=1.0, images_per_s=100.0)
    return h


def test_curves_of_several_runs(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    fig = plot.plot_curves({"a": history(), "b": history(offset=0.3)},
                           metrics=("loss", "accuracy", "lr"), path=path, title="runs")
    check_png(path)
    assert len(fig.axes) == 3
    # two runs x (train + validation) on the loss panel
    assert len(fig.axes[0].get_lines()) == 4


def test_curves_of_many_runs_share_one_legend(tmp_path: Path) -> None:
    runs = {f"run {i}": history(offset=0.1 * i) for i in range(4)}
    fig = plot.plot_curves(runs, path=tmp_path / "many.png")
    check_png(tmp_path / "many.png")
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert len(fig.legends[0].get_texts()) == 8  # train and validation of each run


def test_curves_reject_unknown_metric_and_empty_history(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no metric"):
        plot.plot_curves(history(), metrics=("bogus",))
    with pytest.raises(ValueError, match="at least one epoch"):
        plot.plot_curves(History())


def test_history_plot_still_works(tmp_path: Path) -> None:
    check_png(history().plot(tmp_path / "history.png"))


def test_filters_from_a_layer_and_rgb_weights(tmp_path: Path) -> None:
    conv = Conv2D(1, 6, 5, rng=np.random.default_rng(0))
    fig = plot.plot_filters(conv, path=tmp_path / "gray.png", ncols=3)
    check_png(tmp_path / "gray.png")
    assert sum(ax.axison for ax in fig.axes) == 6
    rgb = np.random.default_rng(1).standard_normal((5, 3, 3, 3))
    fig = plot.plot_filters(rgb, path=tmp_path / "rgb.png")
    check_png(tmp_path / "rgb.png")
    assert fig.axes[0].get_images()[0].get_array().shape == (3, 3, 3)
    with pytest.raises(ValueError, match=r"\(O, C, kH, kW\)"):
        plot.plot_filters(np.zeros((3, 3)))


def test_feature_maps(tmp_path: Path) -> None:
    maps = np.random.default_rng(0).random((1, 12, 10, 10)).astype(np.float32)
    fig = plot.plot_feature_maps(maps, path=tmp_path / "maps.png", ncols=4, max_maps=10)
    check_png(tmp_path / "maps.png")
    assert sum(len(ax.get_images()) for ax in fig.axes) == 10
    with pytest.raises(ValueError, match="one activation"):
        plot.plot_feature_maps(np.zeros((2, 3, 4, 4)))


def test_confusion_matrix_counts_are_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.7, target, rng.integers(0, 4, 200))
    cm = confusion_matrix(pred, target, 4)
    fig = plot.plot_confusion_matrix(cm, classes=["a", "b", "c", "d"],
                                     path=tmp_path / "cm.png")
    check_png(tmp_path / "cm.png")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[0] == str(cm[0, 0]) and len(texts) == 16
    fig = plot.plot_confusion_matrix(cm, normalize=True, path=tmp_path / "cm_norm.png")
    check_png(tmp_path / "cm_norm.png")
    assert float(fig.axes[0].texts[0].get_text()) == pytest.approx(
        cm[0, 0] / cm[0].sum(), abs=0.005)


def test_images_with_labels_and_predictions(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (10, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(10) % 3
    preds = np.array([0, 1, 2, 0, 0, 0, 0, 1, 2, 0])
    fig = plot.plot_images(images, labels, preds, classes=["x", "y", "z"],
                           path=tmp_path / "images.png", ncols=5)
    check_png(tmp_path / "images.png")
    colors = [ax.title.get_color() for ax in fig.axes if ax.title.get_text()]
    assert colors.count("red") == int((labels != preds).sum())
    assert fig.axes[1].title.get_text() == "y -> y"
    normalized = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    plot.plot_images(normalized, labels=[0, 1, 2], path=tmp_path / "rgb.png")
    check_png(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="2 labels for 10 images"):
        plot.plot_images(images, labels=[1, 2])


def test_image_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fig = plot.plot_image_rows({"noisy": rng.random((5, 1, 8, 8)), "clean": rng.random((4, 8, 8))},
                               path=tmp_path / "rows.png")
    check_png(tmp_path / "rows.png")
    assert sum(len(ax.get_images()) for ax in fig.axes) == 9


def test_trajectories(tmp_path: Path) -> None:
    def f(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return x**2 / 20 + y**2

    t = np.linspace(0, 1, 30)[:, None]
    paths = {"straight": np.hstack([-7 * (1 - t), 2 * (1 - t)]), "short": [[-7, 2], [-3, 0]]}
    fig = plot.plot_trajectories(f, paths, path=tmp_path / "traj.png", xlim=(-10, 10),
                                 ylim=(-5, 5))
    width, height = check_png(tmp_path / "traj.png")
    assert width > height
    assert fig.axes[0].get_title() == "straight (29 steps)"
    assert fig.axes[1].get_title() == "short (1 steps)"


def test_save_is_atomic_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "folder" / "f.png"
    plot.plot_feature_maps(np.ones((2, 4, 4)), path=target)
    check_png(target)
    assert [p.name for p in target.parent.iterdir()] == ["f.png"]


def test_saved_figure_is_readable_by_others_and_a_failed_save_leaves_nothing(
    tmp_path: Path,
) -> None:
    target = tmp_path / "f.png"
    plot.plot_feature_maps(np.ones((2, 4, 4)), path=target)
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600

    class Broken:
        def savefig(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        plot.save_figure(Broken(), tmp_path / "g.svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]


def _constant_lr_history(epochs: int) -> History:
    h = History()
    for e in range(1, epochs + 1):
        h.append(epoch=e, train_loss=1.0 / e, train_accuracy=0.5, val_loss=float("nan"),
                 val_accuracy=float("nan"), lr=1e-3, time=1.0, images_per_s=100.0)
    return h


def test_history_figure_has_a_title_whole_epochs_and_markers_when_few() -> None:
    fig = plot.history_figure(history(4), title="lenet5 on mnist: test accuracy 98.10%")
    assert fig._suptitle.get_text() == "lenet5 on mnist: test accuracy 98.10%"
    assert len(fig.axes) == 3  # the rate changes: it gets its panel
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1, 2, 3, 4]
        assert all(line.get_marker() == "o" for line in ax.get_lines())


def test_history_figure_of_one_epoch_shows_one_whole_tick() -> None:
    fig = plot.history_figure(_constant_lr_history(1))
    assert [list(ax.get_xticks()) for ax in fig.axes] == [[1], [1]]


def test_constant_learning_rate_is_named_in_the_title_not_drawn() -> None:
    fig = plot.history_figure(_constant_lr_history(3), title="run")
    assert len(fig.axes) == 2
    assert fig._suptitle.get_text() == "run\nlearning rate 0.001 throughout"


def test_many_epochs_have_no_markers_and_whole_ticks() -> None:
    fig = plot.history_figure(history(40))
    for ax in fig.axes:
        assert all(line.get_marker() in ("None", "", None) for line in ax.get_lines())
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 40]
        assert ticks and all(float(t).is_integer() for t in ticks)
