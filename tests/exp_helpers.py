"""Helpers of the experiment tests: tiny overrides for any recipe, and tiny real-format data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A model and a run small enough for a second: every recipe keeps its architecture and dataset.
TINY = [
    "model.hidden=4",
    "model.layers=1",
    "model.head_channels=8",
    "trainer.max_steps=2",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "data.batch_size=2",
    "logger=none",
    "threads=1",
]


def write_mnist_amat(data_dir: Path, digits: np.ndarray, write_amat) -> None:
    """binarized_mnist_{train,valid,test}.amat from real digits (12 / 4 / 4 images)."""
    binary = (digits > 127).astype(np.uint8)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", slice(0, 12)), ("valid", slice(12, 16)), ("test", slice(16, 20))):
        write_amat(data_dir / f"binarized_mnist_{name}.amat", binary[rows])


def write_cifar(data_dir: Path, data_write) -> None:
    """cifar-10-batches-py/ with 5 training batches of 2 images and a test batch of 4."""
    images = data_write.photos(14)
    labels = np.arange(14) % 10
    batches = {f"data_batch_{k}": (images[2 * k - 2 : 2 * k], labels[2 * k - 2 : 2 * k]) for k in range(1, 6)}
    batches["test_batch"] = (images[10:], labels[10:])
    data_write.cifar(data_dir / "cifar-10-batches-py", batches)


def write_imagenet_png(data_dir: Path, data_write, size: int) -> None:
    """train_SxS/ (8 PNGs) and valid_SxS/ (4 PNGs) of real photo crops."""
    images = data_write.photos(12, size)
    data_write.pngs(data_dir / f"train_{size}x{size}", images[:8], [f"{i:05d}.png" for i in range(8)])
    data_write.pngs(data_dir / f"valid_{size}x{size}", images[8:], [f"{i:05d}.png" for i in range(4)])


def tiny_data(recipe: str, root: Path, digits: np.ndarray, data_write) -> list[str]:
    """Overrides pointing ``recipe`` at a tiny real-format copy of its dataset under ``root``."""
    from pixel_lightning.config import load_config

    name = load_config(recipe).data.name
    data_dir = root / name
    if not data_dir.exists():
        if name == "mnist":
            write_mnist_amat(data_dir, digits, data_write.amat)
        elif name == "cifar10":
            write_cifar(data_dir, data_write)
        else:
            write_imagenet_png(data_dir, data_write, int(name[-2:]))
    extra = ["data.val_size=2"] if name != "mnist" else []
    return [f"data.data_dir={data_dir}", "data.strict=false", *extra]
