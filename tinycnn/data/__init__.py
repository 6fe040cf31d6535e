"""Datasets, checked downloads, the embedded MNIST subset, the DataLoader and augmentations.

    from tinycnn.data import MNIST, DataLoader, RandomCrop, compute_mean_std
    train = MNIST(train=True, download=True)
    loader = DataLoader(train, batch_size=128, shuffle=True, seed=0,
                        mean=(0.1307,), std=(0.3081,), transform=RandomCrop(28, padding=2))
"""

from tinycnn.data import download  # the module (callable, for the function's old name)
from tinycnn.data.augment import (
    ColorJitter,
    Compose,
    Cutout,
    GaussianNoise,
    PCAColorJitter,
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomVerticalFlip,
    Transform,
    affine_sample,
    pca_color_basis,
    resized_crop,
)
from tinycnn.data.cifar import CIFAR10, parse_cifar_batch
from tinycnn.data.dataset import (
    ArrayDataset,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetWarning,
    train_val_split,
)
from tinycnn.data.download import (
    DownloadError,
    check_file,
    data_root,
    download_file,
    file_digest,
)
from tinycnn.data.loader import DataLoader, compute_mean_std
from tinycnn.data.mnist import (
    MNIST,
    FashionMNIST,
    load_embedded_mnist,
    load_mnist,
    parse_idx,
    read_idx,
)
from tinycnn.data.sequences import CharVocab, load_sunspots, load_text

__all__ = [
    "CIFAR10",
    "MNIST",
    "ArrayDataset",
    "CharVocab",
    "ColorJitter",
    "Compose",
    "Cutout",
    "DataLoader",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetWarning",
    "DownloadError",
    "FashionMNIST",
    "GaussianNoise",
    "PCAColorJitter",
    "RandomAffine",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomVerticalFlip",
    "Transform",
    "affine_sample",
    "check_file",
    "compute_mean_std",
    "data_root",
    "download",
    "download_file",
    "file_digest",
    "load_embedded_mnist",
    "load_mnist",
    "load_sunspots",
    "load_text",
    "parse_cifar_batch",
    "parse_idx",
    "pca_color_basis",
    "read_idx",
    "resized_crop",
    "train_val_split",
]
