"""Reliability for any Trainer: exact resume, preemption, finite-only atomic checkpoints, the non-finite guard
and one writer per run folder (docs/reliability.md); wired by ``runner.make_trainer``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lightning.pytorch.callbacks import Callback

# ``name as name``: re-exported, for ``reliability.name`` (the runner, tests/rel_tiny.py, the tests)
from pixel_lightning.reliability.checkpoints import LAST as LAST
from pixel_lightning.reliability.checkpoints import AtomicCheckpointIO as AtomicCheckpointIO
from pixel_lightning.reliability.checkpoints import BestCheckpoint, MetricState, PeriodicCheckpoint, RNGState
from pixel_lightning.reliability.checkpoints import HistoryLogger as HistoryLogger
from pixel_lightning.reliability.checkpoints import find_resume_checkpoint as find_resume_checkpoint
from pixel_lightning.reliability.checkpoints import prepare_resume as prepare_resume
from pixel_lightning.reliability.checkpoints import read_checkpoint as read_checkpoint
from pixel_lightning.reliability.guard import NonFiniteGuard
from pixel_lightning.reliability.guard import set_aside_diverged as set_aside_diverged
from pixel_lightning.reliability.rundir import RunLock as RunLock
from pixel_lightning.reliability.rundir import ensure_writable as ensure_writable
from pixel_lightning.runfolder import RunFolder

if TYPE_CHECKING:
    from pixel_lightning.config import CheckpointConfig, GuardConfig


def callbacks(run_dir: str | Path, checkpoint: CheckpointConfig, guard: GuardConfig) -> list[Callback]:
    c, folder = checkpoint, RunFolder(run_dir).checkpoints
    best, guarded = BestCheckpoint(folder, c.monitor), NonFiniteGuard(guard.max_skips)
    periodic = PeriodicCheckpoint(folder, c.every_n_steps, c.every_n_minutes, c.keep_last_k, c.requeue)
    return [RNGState(), MetricState(), guarded, best, periodic]
