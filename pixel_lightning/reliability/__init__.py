"""Reliability for any Trainer: exact resume, preemption, finite-only atomic checkpoints, the non-finite guard
and one writer per run folder (docs/reliability.md); wired by ``runner.make_trainer``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from pixel_lightning.reliability.checkpoints import (
    LAST,
    AtomicCheckpointIO,
    BestCheckpoint,
    CheckpointInfo,
    MetricState,
    PeriodicCheckpoint,
    RNGState,
    check_compatible,
    find_resume_checkpoint,
    read_checkpoint,
)
from pixel_lightning.reliability.guard import NonFiniteGuard, set_aside_diverged
from pixel_lightning.reliability.history import HistoryLogger
from pixel_lightning.reliability.rundir import RunLock, ensure_writable
from pixel_lightning.runfolder import RunFolder

if TYPE_CHECKING:
    from pixel_lightning.config import CheckpointConfig, GuardConfig

__all__ = [
    "LAST",
    "AtomicCheckpointIO",
    "HistoryLogger",
    "RunLock",
    "ensure_writable",
    "read_checkpoint",
    "set_aside_diverged",
]


def callbacks(run_dir: str | Path, checkpoint: CheckpointConfig, guard: GuardConfig) -> list[Callback]:
    c, folder = checkpoint, RunFolder(run_dir).checkpoints
    best, guarded = BestCheckpoint(folder, c.monitor), NonFiniteGuard(guard.max_skips)
    periodic = PeriodicCheckpoint(folder, c.every_n_steps, c.every_n_minutes, c.keep_last_k, c.requeue)
    return [RNGState(), MetricState(), guarded, best, periodic]


def prepare_resume(
    run_dir: str | Path, model: pl.LightningModule, report: Callable[[str], None] = print
) -> CheckpointInfo | None:
    """The checkpoint to resume from (None: start fresh); CheckpointError when it is of another model or
    when checkpoints exist but none is usable."""
    info = find_resume_checkpoint(RunFolder(run_dir).checkpoints, report)
    if info is None:
        return None
    check_compatible(info, model)
    report(f"[resume] resuming from {info.path} (step {info.step}, epoch {info.epoch})")
    return info
