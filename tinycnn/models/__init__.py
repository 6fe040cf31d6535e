"""Ready-made networks. Each builder takes ``num_classes`` and a ``seed`` for its weights."""

from tinycnn.models.alexnet import alexnet, alexnet_paper, alexnet_paper_cifar
from tinycnn.models.densenet import densenet121, densenet_cifar
from tinycnn.models.googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from tinycnn.models.inception import Inception3, InceptionOutputs, inception_v3
from tinycnn.models.mobilenet import (
    mobilenet_v1,
    mobilenet_v1_cifar,
    mobilenet_v2,
    mobilenet_v2_cifar,
)
from tinycnn.models.nin import nin
from tinycnn.models.resnet import resnet18, resnet34, resnet50, resnext50_32x4d
from tinycnn.models.resnet_cifar import (
    BasicBlock,
    ResNetCIFAR,
    ShortcutA,
    resnet20,
    resnet32,
    resnet56,
    resnet110,
)
from tinycnn.models.small import deep_convnet, fast_cifar, lenet5, simple_convnet, vgg_cifar
from tinycnn.models.vgg import vgg11, vgg11_cifar, vgg16

__all__ = [
    "GoogLeNet",
    "GoogLeNetOutputs",
    "alexnet",
    "alexnet_paper",
    "alexnet_paper_cifar",
    "densenet121",
    "densenet_cifar",
    "googlenet",
    "Inception3",
    "InceptionOutputs",
    "inception_v3",
    "mobilenet_v1",
    "mobilenet_v1_cifar",
    "mobilenet_v2",
    "mobilenet_v2_cifar",
    "nin",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnext50_32x4d",
    "vgg11",
    "vgg11_cifar",
    "vgg16",
    "BasicBlock",
    "ResNetCIFAR",
    "ShortcutA",
    "deep_convnet",
    "fast_cifar",
    "lenet5",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "simple_convnet",
    "vgg_cifar",
]
