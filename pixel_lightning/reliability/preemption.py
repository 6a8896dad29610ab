"""Preemption: on SIGTERM, SIGUSR1 or Ctrl-C, checkpoint the current step, requeue under SLURM, stop cleanly.

The handler only records the signal; the checkpoint is written at the next point Lightning resumes exactly
(:func:`~pixel_lightning.reliability.checkpoints.plain_batch_end`), then
:class:`~pixel_lightning.errors.Preempted` stops the run. The handlers are ours only while training runs,
replacing Lightning's SLURM auto-requeue handler meanwhile (it saves from inside the signal handler, in the
middle of a step).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl

from pixel_lightning.errors import Preempted
from pixel_lightning.reliability.checkpoints import PeriodicCheckpoint, plain_batch_end

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)  # SIGINT: Ctrl-C saves a resumable step too


def requeue_slurm() -> bool:
    """``scontrol requeue`` the SLURM job we run in (``<array job>_<task>`` or the job id); True when it
    succeeded (failures are reported, not raised)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    if not job or not re.fullmatch(r"[0-9_]+", job):
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=10.0)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"[preemption] could not requeue SLURM job {job}: {e}", flush=True)
        return False
    if done.returncode != 0:
        print(f"[preemption] scontrol requeue {job} failed: {done.stderr.strip()}", flush=True)
    return done.returncode == 0


class Preemption(PeriodicCheckpoint):
    """The periodic checkpoints, and on SIGTERM/SIGUSR1/SIGINT a checkpoint of the current step and a stop;
    under SLURM (``requeue=True``) the job is requeued. A ``Checkpoint``, so Lightning runs its hooks after
    every other callback's: a weight average (EMA) is saved as of that step
    (tests/test_journey_matrix.py, the ``sigterm-*-ema-1`` cases)."""

    def __init__(
        self, dirpath: Path, every_n_steps: int | None, every_minutes: float | None, keep: int, requeue: bool
    ) -> None:
        super().__init__(dirpath, every_n_steps, every_minutes, keep)
        self.requeue = requeue
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            again = " (Ctrl-C again: stop at once)" if signum == signal.SIGINT else ""
            print(
                f"[preemption] received signal {signum}: checkpointing at the end of this step{again}",
                flush=True,
            )
        elif signum == signal.SIGINT:  # Ctrl-C again: stop now, from the last checkpoint written
            raise KeyboardInterrupt

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.received = None
        if threading.current_thread() is threading.main_thread() and not self._previous:  # signals go there
            self._previous = {sig: signal.signal(sig, self._handler) for sig in SIGNALS}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if plain_batch_end(trainer, batch_idx):  # else after the validation / epoch end, at the next one
            self._stop(trainer, batch_end=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._stop(trainer)  # a signal after the last plain batch end
        self._restore()

    def _stop(self, trainer: pl.Trainer, batch_end: bool = False) -> None:
        received = self.received  # as rank 0 saw it: all ranks must save and stop at the same step
        if trainer.world_size > 1:
            received = trainer.strategy.broadcast(received, src=0)
        if received is None:
            return
        path = self.save_now(trainer, batch_end)
        requeue = self.requeue and received != signal.SIGINT  # Ctrl-C is the user's, not the scheduler's
        requeued = bool(requeue and trainer.is_global_zero and requeue_slurm())
        raise Preempted(received, trainer.global_step, path, requeued)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, error: BaseException) -> None:
        self._restore()  # Preempted included: Lightning calls this for every exception of fit
