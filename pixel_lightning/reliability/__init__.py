"""Reliability: exact resume, preemption, finite-only checkpoints and the non-finite guard, for any Trainer.

Wiring (what ``pixel_lightning.runner`` does)::

    resume = prepare_resume(run_dir, model)                    # validated newest checkpoint, or None
    trainer = L.Trainer(..., callbacks=callbacks(run_dir, CheckpointConfig(), GuardConfig()),
                        logger=HistoryLogger(run_dir, keep=resume.history_rows if resume else 0),
                        plugins=plugins())
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume and resume.path)  # Preempted / NonFiniteError
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from pixel_lightning.reliability.checkpoints import (
    LAST,
    AtomicCheckpointIO,
    BestCheckpoint,
    CheckpointInfo,
    PeriodicCheckpoint,
    check_compatible,
    find_resume_checkpoint,
    inspect_checkpoint,
    non_finite_tensors,
    step_name,
)
from pixel_lightning.reliability.guard import NonFiniteGuard, set_aside_diverged
from pixel_lightning.reliability.history import HistoryLogger, HistoryRows
from pixel_lightning.reliability.preemption import Preemption, requeue_slurm, slurm_job_id
from pixel_lightning.reliability.resume import (
    MetricState,
    RNGState,
)
from pixel_lightning.reliability.rundir import RunLock, ensure_writable

CHECKPOINT_DIR = "checkpoints"


@dataclass
class CheckpointConfig:
    """Checkpoints in <out>/checkpoints/ (recipes: ``checkpoint.*``): the best by ``monitor``, last.ckpt,
    and periodic ones; re-running the same command resumes from the newest valid one (docs/reliability.md)."""

    monitor: str = "val/nll_nats"  # metric that picks the best checkpoint (lower is better)
    every_n_steps: int | None = None  # save every N optimizer steps (None: every_n_minutes)
    every_n_minutes: float | None = 30.0  # save every N minutes of training (when every_n_steps is None)
    keep_last_k: int = 3  # periodic checkpoints kept (older ones are deleted)
    requeue: bool = True  # under SLURM, requeue the job on SIGTERM/SIGUSR1


@dataclass
class GuardConfig:
    """The non-finite guard: a step with a NaN/inf loss or gradient is skipped (no weight changes)."""

    max_skips: int = 5  # skipped steps allowed per run; the next non-finite step stops the run (exit 3)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def callbacks(
    run_dir: str | Path, checkpoint: CheckpointConfig | None = None, guard: GuardConfig | None = None
) -> list[Callback]:
    """RNG and metric states, the history's row count, the non-finite guard, best and periodic checkpoints,
    preemption."""
    c, g = checkpoint or CheckpointConfig(), guard or GuardConfig()
    periodic = PeriodicCheckpoint(checkpoint_dir(run_dir), c.every_n_steps, c.every_n_minutes, c.keep_last_k)
    best = BestCheckpoint(checkpoint_dir(run_dir), c.monitor)
    return [
        RNGState(),
        MetricState(),
        HistoryRows(),
        NonFiniteGuard(g.max_skips),
        best,
        periodic,
        Preemption(periodic, c.requeue),
    ]


def plugins() -> list[Any]:
    """Trainer plugins: the finite-only, fsynced checkpoint writer."""
    return [AtomicCheckpointIO()]


def prepare_resume(
    run_dir: str | Path,
    model: pl.LightningModule,
    report: Callable[[str], None] = print,
) -> CheckpointInfo | None:
    """The checkpoint to resume from (None: start fresh). The training loader must be resumable itself
    (``state_dict``/``load_state_dict``, as the data package's BatchLoader is).

    Raises CheckpointError when the newest valid checkpoint is of another model (compared on the fields
    of the model's config class that shape its parameters), or when checkpoints exist but none is usable.
    """
    info = find_resume_checkpoint(checkpoint_dir(run_dir), report)
    if info is None:
        return None
    config = model.config
    shaping = [f.name for f in fields(config) if f.name not in type(config).RESUMABLE_CHANGES]
    check_compatible(info, model.arch, {k: getattr(config, k) for k in shaping}, shaping)
    report(f"[resume] resuming from {info.path} (step {info.step}, epoch {info.epoch})")
    return info


__all__ = [
    "CHECKPOINT_DIR",
    "LAST",
    "AtomicCheckpointIO",
    "CheckpointConfig",
    "CheckpointInfo",
    "GuardConfig",
    "BestCheckpoint",
    "HistoryLogger",
    "HistoryRows",
    "MetricState",
    "NonFiniteGuard",
    "PeriodicCheckpoint",
    "Preemption",
    "RNGState",
    "RunLock",
    "callbacks",
    "check_compatible",
    "checkpoint_dir",
    "ensure_writable",
    "find_resume_checkpoint",
    "inspect_checkpoint",
    "non_finite_tensors",
    "plugins",
    "prepare_resume",
    "requeue_slurm",
    "set_aside_diverged",
    "slurm_job_id",
    "step_name",
]
