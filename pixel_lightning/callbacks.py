"""Callbacks of a recipe run: sample grids, throughput, gradient norm, the run's config record, a line per
validation. Scalars go through ``pl_module.log``, grids through :func:`sample_grid`: to every logger."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import grad_norm, rank_zero_only

from pixel_lightning.runfolder import RunFolder
from pixel_lightning.visual import readable_grid, save_grid


def sample_grid(
    trainer: L.Trainer, model: Any, path: Path, key: str, n: int, seed: int, progress: bool
) -> float:
    """Draw ``n`` samples with a fixed seed, write their grid to ``path`` and log it as ``key`` (each image
    >= 56 screen pixels wide) to W&B / TensorBoard; returns the seconds the drawing took."""
    start = time.perf_counter()
    x = model.sample(n, generator=torch.Generator().manual_seed(seed), progress=progress)
    seconds = time.perf_counter() - start
    save_grid(path, x, model.levels)
    grid = readable_grid(x, model.levels)  # uint8 (H', W', 3)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, trainer.global_step, dataformats="HWC")
    return seconds


class SampleGrid(L.Callback):
    """Every ``every_n_epochs`` epochs, rank 0 draws ``n`` samples: ``<out_dir>/epoch_XXXX.png``."""

    def __init__(self, out_dir: Path, every_n_epochs: int, n: int, seed: int, progress: bool) -> None:
        self.out_dir, self.every_n_epochs, self.n = out_dir, every_n_epochs, n
        self.seed, self.progress = seed, progress

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0  # build_trainer: every_n_epochs, n > 0
        if not due or trainer.sanity_checking or not trainer.is_global_zero:
            return
        path = self.out_dir / f"epoch_{trainer.current_epoch:04d}.png"
        sample_grid(trainer, pl_module, path, "samples", self.n, self.seed, self.progress)


class Throughput(L.Callback):
    """Training images per second over all devices (``train/images_per_sec``), per step; not counting the
    time between epochs (validation, sampling)."""

    _last: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last is not None:
            images = pl_module.batch_images(batch).shape[0] * trainer.world_size
            pl_module.log("train/images_per_sec", images / max(now - self._last, 1e-9), on_step=True)
        self._last = now


class GradNorm(L.Callback):
    """The gradient's global L2 norm (``train/grad_norm``) on the steps Lightning logs, by its own rule
    (private ``trainer._logger_connector``, as in ``reliability.checkpoints.write_step_row``), so rows match
    before and after a resume (tests/test_journeys.py checks the whole history)."""

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if trainer._logger_connector.should_update_logs:
            norms = grad_norm(pl_module, norm_type=2)
            if "grad_2.0_norm_total" in norms:
                pl_module.log("train/grad_norm", norms["grad_2.0_norm_total"], on_step=True, on_epoch=False)


class RunRecord(L.Callback):
    """Rank 0 writes ``<run_dir>/config.yaml`` once the data is set up (plus ``data_resolved``: the data used)
    and adds it to the W&B config (``data.variant``, ``data.source`` replacing ``auto``, split sizes)."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any]) -> None:
        self.folder, self.config = RunFolder(run_dir), config

    @rank_zero_only
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if hasattr(trainer.datamodule, "describe"):
            data = self.config["data_resolved"] = trainer.datamodule.describe()
            resolved = {"data.variant": data["variant"], "data.source": data["source"]}
            resolved.update({f"data.splits.{split}": n for split, n in data["splits"].items()})
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.experiment.config.update(resolved, allow_val_change=True)
        self.folder.write_config(self.config)


class ValidationLine(L.Callback):
    """A line per validation for logs that are not a terminal (SLURM), instead of progress bars: ``[val] step
    1200 | epoch 3 | 3.41 bits/dim | 812 img/s | ETA 0:41:07``; ETA: steps left at this pace, or max_time."""

    _start: tuple[float, int] | None = None  # (seconds, step) when training started

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.perf_counter(), trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self._start is None:
            return
        m = trainer.callback_metrics
        parts = [f"step {trainer.global_step}", f"epoch {trainer.current_epoch}"]
        if "val/bits_per_dim" in m:
            parts.append(f"{float(m['val/bits_per_dim']):.4f} bits/dim")
        if "train/images_per_sec" in m:
            parts.append(f"{float(m['train/images_per_sec']):.0f} img/s")
        t0, step0 = self._start
        done, total = trainer.global_step - step0, trainer.estimated_stepping_batches
        timers = [t for t in trainer.callbacks if isinstance(t, Timer)]  # Lightning's, for max_time
        lefts = [t.time_remaining() for t in timers if t.time_remaining() is not None]  # seconds
        if done > 0 and total != float("inf"):
            lefts.append((time.perf_counter() - t0) / done * max(0, int(total) - trainer.global_step))
        if lefts:
            left = int(max(0.0, min(lefts)))  # whichever budget ends the run first
            parts.append(f"ETA {left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}")
        print("[val] " + " | ".join(parts), flush=True)
