"""Data for pixel-lightning: binarized MNIST, CIFAR-10, downsampled ImageNet 32/64 and 32x32 patches of
scikit-image's photographs (offline natural images) as LightningDataModules.

Every module converts its source once into a memory-mapped Arrow dataset (Hugging Face ``datasets``) and
yields ``(x, y)``: x uint8 (B, C, H, W) in [0, levels), y int64 labels (-1 where the source has none).
Under DDP build the Trainer with ``use_distributed_sampler=False``: the loaders shard by rank themselves.
"""

from .base import ImageDataModule
from .cifar10 import CIFAR10DataModule
from .errors import DataError, DataWarning
from .imagenet import ImageNet32DataModule, ImageNet64DataModule, ImageNetDataModule
from .mnist import BinarizedMNISTDataModule
from .photos import PhotoPatchesDataModule

# each data set's class: its ``image_shape`` and ``levels`` are class-level facts, its ``check_args`` the
# check of its arguments (what the run config reads and calls without building one)
DATAMODULES: dict[str, type[ImageDataModule]] = {
    "mnist": BinarizedMNISTDataModule,
    "binarized_mnist": BinarizedMNISTDataModule,
    "cifar10": CIFAR10DataModule,
    "imagenet32": ImageNet32DataModule,
    "imagenet64": ImageNet64DataModule,
    "skimage_patches": PhotoPatchesDataModule,
}
DATASETS = tuple(DATAMODULES)


def datamodule_class(name: str, prefix: str = "") -> type[ImageDataModule]:
    """The DataModule class of data set ``name`` (one of ``DATASETS``); ``prefix``: how the caller names
    the setting in the error (the run config: ``data.name=``)."""
    if name not in DATAMODULES:
        raise DataError(f"unknown dataset {prefix}{name!r}: choose one of {list(DATASETS)}")
    return DATAMODULES[name]


def build_datamodule(name: str, **kwargs) -> ImageDataModule:
    """The DataModule for ``name`` (one of ``DATASETS``), constructed with ``kwargs``."""
    return datamodule_class(name)(**kwargs)


__all__ = [
    "DATAMODULES",
    "DATASETS",
    "BinarizedMNISTDataModule",
    "CIFAR10DataModule",
    "DataError",
    "DataWarning",
    "ImageDataModule",
    "ImageNet32DataModule",
    "ImageNet64DataModule",
    "ImageNetDataModule",
    "PhotoPatchesDataModule",
    "build_datamodule",
    "datamodule_class",
]
