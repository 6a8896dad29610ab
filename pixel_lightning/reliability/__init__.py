"""Reliability: exact resume, preemption, atomic checkpoints and the non-finite guard, for any Trainer.

Wiring (what ``pixel_lightning.runner`` does)::

    rel = ReliabilityConfig(every_n_steps=1000, keep_last=3)
    ckpt = prepare_resume(run_dir, model, datamodule)          # validated newest checkpoint, or None
    trainer = L.Trainer(..., callbacks=[*callbacks(run_dir, rel)], plugins=plugins())
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt)  # raises Preempted / NonFiniteError

and ``recipes/run.py`` wraps ``main`` in :func:`pixel_lightning.errors.cli_errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from pixel_lightning.reliability.checkpoints import (
    LAST,
    AtomicCheckpointIO,
    CheckpointInfo,
    StepCheckpoint,
    check_compatible,
    find_resume_checkpoint,
    inspect_checkpoint,
    non_finite_tensors,
    step_name,
)
from pixel_lightning.reliability.guard import NonFiniteGuard
from pixel_lightning.reliability.preemption import Preemption, requeue_slurm, slurm_job_id
from pixel_lightning.reliability.resume import MetricState, ResumableLoader, RNGState, make_resumable
from pixel_lightning.reliability.rundir import clean_failed_start, ensure_writable

CHECKPOINT_DIR = "checkpoints"


@dataclass
class ReliabilityConfig:
    """Checkpointing and guard settings (recipes: ``checkpoint.*`` and ``guard.*``)."""

    every_n_steps: int | None = 1000  # step checkpoint every N optimizer steps (None: off)
    every_seconds: float | None = 1800.0  # ... and every T seconds of training (None: off)
    keep_last: int = 3  # step checkpoints kept
    link_last: bool = True  # keep last.ckpt pointing at the newest step checkpoint
    max_skips: int = 5  # non-finite steps skipped before the run stops
    requeue: bool = True  # under SLURM, requeue the job on SIGTERM/SIGUSR1
    resume: bool = True  # resume from <out>/checkpoints when it holds a checkpoint


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def callbacks(run_dir: str | Path, config: ReliabilityConfig | None = None) -> list[Callback]:
    """The callbacks of a reliable run: RNG and metric states, non-finite guard, step checkpoints,
    preemption."""
    config = config or ReliabilityConfig()
    saver = StepCheckpoint(
        checkpoint_dir(run_dir),
        config.every_n_steps,
        config.every_seconds,
        config.keep_last,
        config.link_last,
    )
    guard = NonFiniteGuard(config.max_skips)
    return [RNGState(), MetricState(), guard, saver, Preemption(saver, config.requeue)]


def plugins() -> list[Any]:
    """Trainer plugins: the atomic, finite-only checkpoint writer."""
    return [AtomicCheckpointIO()]


def prepare_resume(
    run_dir: str | Path,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule | None = None,
    config: ReliabilityConfig | None = None,
    report: Callable[[str], None] = print,
) -> str | None:
    """Make the training loader resumable and return the checkpoint to resume from (None: start fresh).

    Raises CheckpointError when the newest valid checkpoint is of another model, or when checkpoints exist
    but none is usable.
    """
    config = config or ReliabilityConfig()
    if datamodule is not None:
        make_resumable(datamodule)
    if not config.resume:
        return None
    info = find_resume_checkpoint(checkpoint_dir(run_dir), report)
    if info is None:
        return None
    arch = getattr(model, "arch", "")
    model_config = getattr(model, "config", None)
    check_compatible(info, arch, asdict(model_config) if model_config is not None else {})
    report(f"[resume] resuming from {info.path} (step {info.step}, epoch {info.epoch})")
    return str(info.path)


__all__ = [
    "CHECKPOINT_DIR",
    "LAST",
    "AtomicCheckpointIO",
    "CheckpointInfo",
    "MetricState",
    "NonFiniteGuard",
    "Preemption",
    "RNGState",
    "ReliabilityConfig",
    "ResumableLoader",
    "StepCheckpoint",
    "callbacks",
    "check_compatible",
    "checkpoint_dir",
    "clean_failed_start",
    "ensure_writable",
    "find_resume_checkpoint",
    "inspect_checkpoint",
    "make_resumable",
    "non_finite_tensors",
    "plugins",
    "prepare_resume",
    "requeue_slurm",
    "slurm_job_id",
    "step_name",
]
