"""A tiny model, data set and Trainer for runs of many steps in seconds: the soak benchmark
(benchmarks/soak.py) and the reliability tests (tests/rel_tiny.py) train them through the runner's own
Trainer factory (:func:`pixel_lightning.runner.make_trainer`), so they exercise fit's reliability wiring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

import pixel_lightning
from pixel_lightning.config import CheckpointConfig, GuardConfig
from pixel_lightning.data.base import BatchLoader, ImageBatches, ShardedBatchSampler, dist_info
from pixel_lightning.runner import make_trainer


class MemoryStore:
    """The store interface ImageBatches reads (take, labels), over arrays in memory."""

    def __init__(self, images: np.ndarray) -> None:
        self.images, self.labels = images, np.full(len(images), -1, dtype=np.int64)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.images[rows]


class TinyData(L.LightningDataModule):
    """``n_train`` train / 8 val / 8 test binary 8x8 images (blobs, so the model has something to learn),
    served by the package's resumable, rank-sharding loader."""

    def __init__(self, batch_size: int = 4, seed: int = 0, n_train: int = 40, num_workers: int = 0) -> None:
        super().__init__()
        self.num_workers = num_workers
        rng = np.random.default_rng(123)
        yy, xx = np.mgrid[:8, :8]
        centres = rng.uniform(1, 7, size=(n_train + 16, 2))
        images = ((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2 < 6).astype(np.uint8)
        self.images = images[:, None]  # (N, 1, 8, 8)
        self.n_train, self.batch_size, self.seed = n_train, batch_size, seed

    def _loader(self, rows: np.ndarray, shuffle: bool) -> BatchLoader:
        data = ImageBatches(MemoryStore(self.images), rows)
        sampler = ShardedBatchSampler(len(rows), self.batch_size, shuffle, self.seed, *dist_info())
        return BatchLoader(data, sampler, self.num_workers)

    def train_dataloader(self) -> BatchLoader:
        return self._loader(np.arange(self.n_train), True)

    def val_dataloader(self) -> BatchLoader:
        return self._loader(np.arange(self.n_train, self.n_train + 8), False)

    def test_dataloader(self) -> BatchLoader:
        return self._loader(np.arange(self.n_train + 8, self.n_train + 16), False)


def tiny_model(
    arch: str = "pixelcnn", hidden: int = 4, scheduler: str = "cosine", seed: int = 0
) -> pixel_lightning.AutoregressiveImageModel:
    """Seed everything with ``seed``, then build a one-layer model of 8x8 binary images (its initial
    weights depend on the seed)."""
    L.seed_everything(seed, workers=True, verbose=False)
    return pixel_lightning.build_model(
        arch, image_shape=(1, 8, 8), levels=2, hidden=hidden, layers=1, head_channels=8, lr=3e-3,
        scheduler=scheduler,
    )  # fmt: skip


def tiny_trainer(
    out: str | Path,
    steps: int,
    every: int,
    keep: int = 3,
    max_skips: int = 5,
    devices: int = 1,
    callbacks: Sequence[L.Callback] = (),
    loggers: Any = False,
) -> L.Trainer:
    """A CPU Trainer of ``steps`` steps with a checkpoint every ``every`` (``keep`` kept), writing ``out``:
    the runner's factory with fit's reliability wiring; ``callbacks`` run before it."""
    trainer = {
        "max_steps": steps,
        "accelerator": "cpu",
        "devices": devices,
        "strategy": "ddp_fork" if devices > 1 else "auto",
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": True,
    }
    checkpoint = CheckpointConfig(every_n_steps=every, keep_last_k=keep)
    return make_trainer(trainer, out, checkpoint, GuardConfig(max_skips), callbacks, loggers=loggers)
