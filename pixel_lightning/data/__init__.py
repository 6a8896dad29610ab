"""Data for pixel-lightning: binarized MNIST, CIFAR-10, downsampled ImageNet 32/64 and 32x32 patches of
scikit-image's photographs (offline natural images) as LightningDataModules.

Every module converts its source once into a memory-mapped Arrow dataset (Hugging Face ``datasets``) and
yields ``(x, y)``: x uint8 (B, C, H, W) in [0, levels), y int64 labels (-1 where the source has none).
Under DDP build the Trainer with ``use_distributed_sampler=False``: the loaders shard by rank themselves.
"""

from .base import ImageDataModule
from .cifar10 import CIFAR10DataModule
from .errors import DataError, DataWarning
from .imagenet import ImageNetDataModule
from .mnist import BinarizedMNISTDataModule
from .photos import PhotoPatchesDataModule

DATASETS = ("mnist", "binarized_mnist", "cifar10", "imagenet32", "imagenet64", "skimage_patches")


def build_datamodule(name: str, **kwargs) -> ImageDataModule:
    """The DataModule for ``name`` (one of ``DATASETS``), constructed with ``kwargs``."""
    if name in ("mnist", "binarized_mnist"):
        return BinarizedMNISTDataModule(**kwargs)
    if name == "cifar10":
        return CIFAR10DataModule(**kwargs)
    if name in ("imagenet32", "imagenet64"):
        return ImageNetDataModule(size=int(name[-2:]), **kwargs)
    if name == "skimage_patches":
        return PhotoPatchesDataModule(**kwargs)
    raise DataError(f"unknown dataset {name!r}: choose one of {list(DATASETS)}")


__all__ = [
    "DATASETS",
    "BinarizedMNISTDataModule",
    "CIFAR10DataModule",
    "DataError",
    "DataWarning",
    "ImageDataModule",
    "ImageNetDataModule",
    "PhotoPatchesDataModule",
    "build_datamodule",
]
