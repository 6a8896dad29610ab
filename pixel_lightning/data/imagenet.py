"""Downsampled ImageNet 32 x 32 and 64 x 64 (levels 256); the paper's Table 6 (bits/dim, validation set).

Two different data sets carry this name, and their bits/dim are NOT comparable:
- ``"png"``: the downsampled ImageNet of van den Oord et al., the one the paper used (``train_32x32/``,
  ``valid_32x32/`` folders of PNG files, or the ``.tar`` files as downloaded; 1,281,149 / 49,999 images).
- ``"npz"``: the box-resized ImageNet32/64 of Chrabaszcz et al. 2017 (``Imagenet32_train_npz/
  train_data_batch_*.npz``, ``Imagenet32_val_npz/val_data.npz``; 1,281,167 / 50,000 images; labels made
  0-based).
- ``"hub"``: any Hub dataset id (``hub_id=``) with an image column; you vouch for its variant.
The official validation set is the ``test`` split (where the paper reports); ``val`` is the last ``val_size``
training images (default 10,000). The variant is recorded in ``variant`` and ``describe()``.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from .base import USER_VARIANT, ImageDataModule
from .errors import DataError
from .sources import (
    Plan,
    batch_number,
    count_pngs,
    hub_blocks,
    load_hub,
    png_folder_blocks,
    png_tar_blocks,
    read_npz,
)

PNG_COUNTS = {"train": 1_281_149, "test": 49_999}  # van den Oord's train_NxN / valid_NxN
NPZ_COUNTS = {"train": 1_281_167, "test": 50_000}  # Chrabaszcz et al.
SIZES = (32, 64)


def _help(size: int) -> str:
    return (
        f"Put the downsampled ImageNet of the paper into data_dir: train_{size}x{size}/ and "
        f"valid_{size}x{size}/ "
        f"folders of PNG files or the train_{size}x{size}.tar and valid_{size}x{size}.tar files "
        "(https://image-net.org/download-images, 'Downsampled ImageNet' by van den Oord et al.; needs an "
        f"ImageNet account). The box-resized variant of Chrabaszcz et al. (Imagenet{size}_train_npz/, "
        f"Imagenet{size}_val_npz/ from https://image-net.org/download-images) is read with source='npz', "
        "but its bits/dim are not comparable with the paper's. Or pass source='hub' with "
        "hub_id='<owner/name>'"
    )


class ImageNetDataModule(ImageDataModule):
    """Downsampled ImageNet: x uint8 (B, 3, size, size) in [0, 256); y the class for npz/hub, else -1.

    Args:
        size: 32 or 64.
        data_dir: where the files are (default ``data_cache/imagenet<size>``).
        source: ``"auto"`` (png, then npz files found in data_dir, else the Hub), ``"png"``, ``"npz"``,
            ``"hub"``.
        hub_id: the Hub dataset for ``source="hub"`` (no default: pick one whose variant you know).
        val_size: the last ``val_size`` training images, held out for validation (default 10,000).
    """

    name = "imagenet"
    levels = 256
    SOURCES = ("png", "npz", "hub")
    LOCAL_SOURCES = ("png", "npz")
    VARIANTS = {"png": "oord-downsampled-png", "npz": "chrabaszcz-box-npz"}

    def __init__(
        self,
        size: int = 32,
        data_dir: str | os.PathLike | None = None,
        source: str = "auto",
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        strict: bool = True,
        val_size: int = 10_000,
        hub_id: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if size not in SIZES:
            raise DataError(f"size must be 32 or 64 (the paper's downsampled ImageNet), got {size!r}")
        self.size, self.name, self.image_shape, self.hub_id = size, f"imagenet{size}", (3, size, size), hub_id
        super().__init__(data_dir, source, batch_size, num_workers, seed, strict, val_size, cache_dir)

    # -- where the files are
    def _png(self, split: str) -> Path | None:
        stem = f"{'train' if split == 'train' else 'valid'}_{self.size}x{self.size}"
        for path in (self.data_dir / stem, self.data_dir / f"{stem}.tar"):
            if path.exists():
                return path
        return None

    def _npz(self) -> dict[str, list[Path]]:
        s = self.size
        train = sorted(self.data_dir.glob(f"Imagenet{s}_train*/train_data_batch_*.npz"), key=batch_number)
        train = train or sorted(self.data_dir.glob("train_data_batch_*.npz"), key=batch_number)
        val = sorted(self.data_dir.glob(f"Imagenet{s}_val*/val_data.npz")) or sorted(
            self.data_dir.glob("val_data.npz")
        )
        return {"train": train, "test": val}

    def _found(self, source: str) -> bool:
        if source == "png":
            return all(self._png(split) is not None for split in PNG_COUNTS)
        return all(self._npz().values())

    def _files(self, source: str) -> list[Path]:
        if source == "png":
            return [self._png(split) for split in PNG_COUNTS]
        return [p for paths in self._npz().values() for p in paths] if source == "npz" else []

    def _missing_help(self) -> str:
        return _help(self.size)

    def _variant(self, source: str) -> str:
        """The release's name, or ``user-png`` for a PNG folder whose counts are not the release's (a
        user's own images read with strict=False): no paper figure belongs beside those."""
        if source == "png" and any(
            count_pngs(path) not in (-1, PNG_COUNTS[split])
            for split in PNG_COUNTS
            if (path := self._png(split)) is not None
        ):
            return f"{USER_VARIANT}png"
        return f"hub:{self.hub_id}" if source == "hub" else self.VARIANTS[source]

    def _plan(self, source: str) -> Plan:
        shape = self.image_shape
        if source == "png":
            splits, problems, expected = {}, [], dict(PNG_COUNTS)
            for split in PNG_COUNTS:
                path = self._png(split)
                reader = png_folder_blocks if path.is_dir() else png_tar_blocks
                splits[split] = partial(reader, path, shape)
                n = count_pngs(path)
                if n >= 0 and n != PNG_COUNTS[split]:  # known before the (long) conversion
                    problems.append(f"{path} holds {n} PNG files, the release has {PNG_COUNTS[split]}")
                    del expected[split]  # reported already
            return Plan(splits, expected, problems)
        if source == "npz":
            return Plan(
                {split: partial(_npz_blocks, paths, shape) for split, paths in self._npz().items()},
                NPZ_COUNTS,
            )
        if self.hub_id is None:
            raise DataError(
                f"{self.name}: no local files in {self.data_dir} and no hub_id given. {_help(self.size)}"
            )
        hub = load_hub(self.hub_id, _help(self.size))
        test = next((s for s in ("validation", "valid", "val", "test") if s in hub), None)
        if "train" not in hub or test is None:
            raise DataError(f"hub dataset {self.hub_id!r} has splits {list(hub)}; need train and validation")
        splits = {"train": hub["train"], "test": hub[test]}
        return Plan({s: partial(hub_blocks, ds, shape, f"{self.hub_id}:{s}") for s, ds in splits.items()}, {})

    def describe(self) -> dict:
        return {**super().describe(), "size": self.size, "hub_id": self.hub_id}


def _npz_blocks(paths: list[Path], shape: tuple[int, int, int]):
    for path in paths:
        yield read_npz(path, shape)


class ImageNet32DataModule(ImageNetDataModule):
    """``ImageNetDataModule(32, ...)``, its shape a class-level fact (read by the run config)."""

    name, image_shape = "imagenet32", (3, 32, 32)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(32, **kwargs)


class ImageNet64DataModule(ImageNetDataModule):
    """``ImageNetDataModule(64, ...)``, its shape a class-level fact (read by the run config)."""

    name, image_shape = "imagenet64", (3, 64, 64)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(64, **kwargs)
