"""The scikit-image photo patches: split by photograph, exact pixels, a clear error without scikit-image."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pixel_lightning.data import DataError, PhotoPatchesDataModule, build_datamodule
from pixel_lightning.data.photos import PHOTOS, STRIDE, patch_corners, photo_index

skimage_data = pytest.importorskip("skimage.data")


def photo(name: str) -> np.ndarray:
    """The photograph straight from scikit-image, (H, W, 3) uint8."""
    if name.startswith("motorcycle_"):
        left, right, _ = skimage_data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(skimage_data, name)()


@pytest.fixture(scope="module")
def dm(tmp_path_factory) -> PhotoPatchesDataModule:
    module = build_datamodule("skimage_patches", data_dir=tmp_path_factory.mktemp("photos"), batch_size=512)
    module.prepare_data()
    module.setup("fit")
    module.loaded = {}  # split -> (x, y), read once per module
    return module


def collect(dm: PhotoPatchesDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every patch of ``split`` in source order, through the real loader."""
    if split not in dm.loaded:
        xs, ys = zip(*dm.dataloader(split, shuffle=False), strict=True)
        x, y = torch.cat(xs), torch.cat(ys)
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        dm.loaded[split] = (x.numpy(), y.numpy())
    return dm.loaded[split]


def test_every_patch_is_the_photographs_pixels_in_order(dm):
    for split in ("train", "val", "test"):
        x, y = collect(dm, split)
        want, labels = [], []
        for name in PHOTOS[split]:
            image = photo(name)
            corners = patch_corners(*image.shape[:2], STRIDE[split])
            want += [image[r : r + 32, c : c + 32].transpose(2, 0, 1) for r, c in corners]
            labels += [photo_index(name)] * len(corners)
        assert x.shape[0] == len(want) == dm.describe()["splits"][split]
        np.testing.assert_array_equal(x, np.stack(want))
        np.testing.assert_array_equal(y, labels)


def test_split_is_by_photograph_test_photos_never_seen_in_training(dm):
    names = [set(PHOTOS[s]) for s in ("train", "val", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    splits = {s: {int(v) for v in collect(dm, s)[1]} for s in ("train", "val", "test")}
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["val"])
    train = {p.tobytes() for p in collect(dm, "train")[0]}
    assert not any(p.tobytes() in train for p in collect(dm, "test")[0])  # not one test patch in training


def test_evaluation_tiles_do_not_overlap_training_patches_do():
    assert patch_corners(64, 96, 32) == [(0, 0), (0, 32), (0, 64), (32, 0), (32, 32), (32, 64)]
    assert len(patch_corners(64, 64, 16)) == 9  # 3 x 3 overlapping corners
    assert STRIDE["val"] == STRIDE["test"] == 32


def test_without_scikit_image_a_clear_error_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage.data now raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    module = PhotoPatchesDataModule(data_dir=tmp_path)
    with pytest.raises(DataError, match="scikit-image") as err:
        module.prepare_data()
    assert "pip install scikit-image" in str(err.value)


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(DataError, match="skimage"):
        PhotoPatchesDataModule(data_dir=tmp_path, source="hub")


def test_val_size_is_refused_with_the_fix(tmp_path):
    with pytest.raises(DataError, match="data.val_size=null"):
        PhotoPatchesDataModule(data_dir=tmp_path, val_size=5000)
