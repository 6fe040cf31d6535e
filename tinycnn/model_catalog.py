"""What ``tinycnn models`` lists: every model builder, its parameter count and one line.

The counts are for each builder's defaults (classes, input channels and size). They are
stored rather than computed because building the ImageNet-sized networks takes seconds;
``tests/test_cli.py`` rebuilds every model and checks this table against it.
"""

from __future__ import annotations

import inspect
import re

PARAMETERS = {
    "alexnet": 61_100_840,
    "alexnet_paper": 60_965_224,
    "alexnet_paper_cifar": 1_329_802,
    "deep_convnet": 123_552,
    "densenet121": 7_978_856,
    "densenet_cifar": 102_730,
    "fast_cifar": 295_490,
    "googlenet": 13_004_888,
    "inception_v3": 27_161_264,
    "lenet5": 61_706,
    "mobilenet_v1": 4_231_976,
    "mobilenet_v1_cifar": 3_217_226,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v2_cifar": 2_236_682,
    "nin": 7_439_608,
    "resnet110": 1_727_962,
    "resnet18": 11_689_512,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet56": 853_018,
    "resnext50_32x4d": 25_028_904,
    "simple_convnet": 433_890,
    "vgg11": 132_863_336,
    "vgg11_cifar": 9_228_362,
    "vgg16": 138_357_544,
    "vgg_cifar": 814_570,
}


def _first_line(doc: str | None) -> str:
    """The docstring's first sentence as plain text (no reST markup)."""
    line = (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""
    line = re.sub(r":\w+:`~?([^`]+)`", r"\1", line)
    return line.replace("``", "")


def describe() -> list[tuple[str, int | None, str]]:
    """``(name, parameters or None if unknown, description)`` of every model, by name."""
    from tinycnn.cli import model_builders

    return [(name, PARAMETERS.get(name), _first_line(inspect.getdoc(builder)))
            for name, builder in sorted(model_builders().items())]
