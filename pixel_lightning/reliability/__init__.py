"""Reliability: exact resume, preemption, finite-only checkpoints and the non-finite guard, for any Trainer:
``prepare_resume`` (the checkpoint to resume from), ``callbacks``, the ``HistoryLogger`` (its ``keep``: the
checkpoint's ``history_rows``) and ``AtomicCheckpointIO`` as a plugin (wired by ``runner.build_trainer``)."""

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
    check_compatible,
    find_resume_checkpoint,
    read_checkpoint,
)
from pixel_lightning.reliability.guard import NonFiniteGuard, set_aside_diverged
from pixel_lightning.reliability.history import HistoryLogger
from pixel_lightning.reliability.preemption import Preemption
from pixel_lightning.reliability.resume import MetricState, RNGState
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
    """RNG and metric states, the non-finite guard, the best checkpoint, periodic ones and preemption."""
    c, folder = checkpoint, RunFolder(run_dir).checkpoints
    best = BestCheckpoint(folder, c.monitor)
    periodic = Preemption(folder, c.every_n_steps, c.every_n_minutes, c.keep_last_k, requeue=c.requeue)
    return [RNGState(), MetricState(), NonFiniteGuard(guard.max_skips), best, periodic]


def prepare_resume(
    run_dir: str | Path, model: pl.LightningModule, report: Callable[[str], None] = print
) -> CheckpointInfo | None:
    """The checkpoint to resume from (None: start fresh). Raises CheckpointError when the newest valid one
    is of another model (:func:`check_compatible`), or when checkpoints exist but none is usable."""
    info = find_resume_checkpoint(RunFolder(run_dir).checkpoints, report)
    if info is None:
        return None
    check_compatible(info, model)
    report(f"[resume] resuming from {info.path} (step {info.step}, epoch {info.epoch})")
    return info
