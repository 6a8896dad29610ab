"""Natural-image patches (3 x 32 x 32, levels 256) cut from the colour photographs inside scikit-image.

A small, offline stand-in for the paper's natural-image benchmarks (CIFAR-10, ImageNet; Section 5): real
photographs with 256 intensity levels per colour, no download. The split is BY PHOTOGRAPH, so every test
patch comes from a photograph the model never saw in training (patches of one photo are correlated):

    train: astronaut, coffee, motorcycle_left, motorcycle_right (one stereo scene: both views in train)
           32 x 32 patches on a 16-pixel grid (overlapping), 4,525 patches
    val:   chelsea (the cat)   32 x 32 tiles on a 32-pixel grid (disjoint), 126 patches
    test:  rocket              32 x 32 tiles on a 32-pixel grid (disjoint), 260 patches

Patches run row-major over each photograph (top-left corner (r, c) for r, c = 0, stride, ...; the strip
left over at the right and bottom edges is dropped), photographs in the order above. Labels are the
photograph's index in ``PHOTOS``. Results are NOT comparable with the paper's CIFAR-10 / ImageNet figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .base import ImageDataModule
from .errors import DataError
from .sources import BlockReader, Plan, stored_block

PATCH = 32
PHOTOS: dict[str, tuple[str, ...]] = {  # split -> skimage.data photographs
    "train": ("astronaut", "coffee", "motorcycle_left", "motorcycle_right"),
    "val": ("chelsea",),
    "test": ("rocket",),
}
STRIDE = {"train": 16, "val": 32, "test": 32}  # training patches overlap; evaluation tiles do not
COUNTS = {"train": 4525, "val": 126, "test": 260}  # what PHOTOS and STRIDE give (checked at conversion)
INSTALL = "pip install scikit-image==0.26.0"


def _skimage_data():
    try:
        import skimage.data
    except ImportError as e:
        raise DataError(f"the skimage_patches dataset needs the scikit-image package: {INSTALL}") from e
    return skimage.data


def load_photo(name: str) -> np.ndarray:
    """One photograph as scikit-image ships it: uint8 (H, W, 3)."""
    data = _skimage_data()
    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        image = left if name.endswith("left") else right
    else:
        image = getattr(data, name)()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"skimage.data.{name} is {image.dtype} {image.shape}, not RGB uint8: {INSTALL}")
    return image


def patch_corners(height: int, width: int, stride: int, size: int = PATCH) -> list[tuple[int, int]]:
    """Top-left corners of the ``size`` x ``size`` patches on a ``stride`` grid, row-major."""
    return [(r, c) for r in range(0, height - size + 1, stride) for c in range(0, width - size + 1, stride)]


def cut_patches(image: np.ndarray, stride: int, size: int = PATCH) -> np.ndarray:
    """(H, W, 3) uint8 -> (N, 3, size, size) uint8, patches at :func:`patch_corners`."""
    corners = patch_corners(image.shape[0], image.shape[1], stride, size)
    chw = image.transpose(2, 0, 1)  # (3, H, W)
    return np.stack([chw[:, r : r + size, c : c + size] for r, c in corners]).astype(np.uint8)


def _split_block(split: str) -> BlockReader:
    images, labels = [], []
    for name in PHOTOS[split]:
        patches = cut_patches(load_photo(name), STRIDE[split])
        images.append(patches)
        labels.append(np.full(len(patches), photo_index(name), dtype=np.int64))
    return stored_block(np.concatenate(images), np.concatenate(labels))


def photo_index(name: str) -> int:
    """The label of a photograph's patches: its position in train, val, test order."""
    return [p for split in ("train", "val", "test") for p in PHOTOS[split]].index(name)


class PhotoPatchesDataModule(ImageDataModule):
    """32 x 32 RGB patches of scikit-image's photographs: x uint8 (B, 3, 32, 32) in [0, 256); y the photo.

    Args:
        data_dir: where the Arrow conversion goes (default ``data_cache/skimage_patches``); nothing is read
            from it: the photographs come from the installed scikit-image.
        source: ``"auto"`` or ``"skimage"`` (the same: the only source).
    """

    name = "skimage_patches"
    levels = 256
    image_shape = (3, PATCH, PATCH)
    SOURCES = ("skimage",)
    VARIANTS = {"skimage": "skimage-photos-by-photo"}

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        source: str = "auto",
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        strict: bool = True,
        cache_dir: str | os.PathLike | None = None,
        val_size: int | None = None,
    ) -> None:
        super().__init__(data_dir, source, batch_size, num_workers, seed, strict, val_size or 0, cache_dir)

    @classmethod
    def check_args(cls, val_size: int | None = None, prefix: str = "", **kwargs: Any) -> None:
        if val_size:
            raise DataError(
                f"{prefix}val_size={val_size}: skimage_patches validates on its own photograph (chelsea) and "
                "holds out no training patches; drop val_size (on the command line: data.val_size=null)"
            )
        super().check_args(prefix=prefix, **kwargs)

    def _resolve(self) -> str:
        _skimage_data()  # a clear error now, naming the package, not "no files" or a Hub lookup
        return "skimage"

    def _found(self, source: str) -> bool:
        return True

    def _files(self, source: str) -> list[Path]:
        """The photographs' files inside scikit-image (fingerprinted: a new release is converted again)."""
        folder = Path(_skimage_data().__file__).parent
        return sorted(p for p in folder.iterdir() if p.stem in {n for s in PHOTOS.values() for n in s})

    def _missing_help(self) -> str:
        return INSTALL

    def _plan(self, source: str) -> Plan:
        return Plan({split: _split_block(split) for split in PHOTOS}, dict(COUNTS))
