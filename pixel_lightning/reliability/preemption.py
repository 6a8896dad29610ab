"""Preemption: on SIGTERM or SIGUSR1, checkpoint the current step, requeue under SLURM, stop cleanly.

Clusters stop jobs with SIGTERM (and SIGKILL some seconds later); SLURM sends a warning signal first when
asked (``#SBATCH --signal=USR1@90``). The handler only records the signal; the checkpoint is written at
the end of the training step in progress (``on_train_batch_end``, the state Lightning resumes from
exactly), then :class:`~pixel_lightning.errors.Preempted` stops the run. Under SLURM (``SLURM_JOB_ID``
set) the job is requeued with ``scontrol requeue``; it resumes from that checkpoint when it starts again.

The handlers are ours only while training runs (``on_train_start`` .. ``on_train_end``/``on_exception``);
outside, the previous handlers apply. A signal during a validation pass is acted on at the next training
step, after the pass. Lightning's own SLURM auto-requeue handler (which saves from inside the
signal handler, in the middle of a step) is replaced by ours while training runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from pixel_lightning.errors import Preempted
from pixel_lightning.reliability.checkpoints import PeriodicCheckpoint, plain_batch_end

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)  # SIGINT: Ctrl-C saves a resumable step too


def slurm_job_id() -> str | None:
    """``<array job>_<task>`` or the job id of the SLURM job we run in, else None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


def requeue_slurm(job_id: str, timeout: float = 10.0) -> bool:
    """``scontrol requeue <job_id>``; True when it succeeded (failures are reported, not raised)."""
    try:
        result = subprocess.run(
            ["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"[preemption] could not requeue SLURM job {job_id}: {e}", flush=True)
        return False
    if result.returncode != 0:
        print(f"[preemption] scontrol requeue {job_id} failed: {result.stderr.strip()}", flush=True)
    return result.returncode == 0


class Preemption(Callback):
    """Checkpoint and stop on SIGTERM/SIGUSR1; requeue under SLURM (``requeue=True``)."""

    def __init__(self, checkpoint: PeriodicCheckpoint, requeue: bool = True) -> None:
        self.checkpoint, self.requeue = checkpoint, requeue
        self.received: int | None = None
        self.received_at: float | None = None
        self._previous: dict[int, Any] = {}

    # -- signal handling (main thread only: Python delivers signals there)
    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received, self.received_at = signum, time.monotonic()
            again = " (Ctrl-C again: stop at once)" if signum == signal.SIGINT else ""
            print(
                f"[preemption] received signal {signum}: checkpointing at the end of this step{again}",
                flush=True,
            )
        elif signum == signal.SIGINT:  # Ctrl-C again: stop now, from the last checkpoint written
            raise KeyboardInterrupt

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # -- hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = None
        self._install()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if plain_batch_end(trainer, batch_idx):  # else after the validation / epoch end, at the next one
            self._stop(trainer, batch_end=True)

    def _stop(self, trainer: pl.Trainer, batch_end: bool = False) -> None:
        received = self._agreed_signal(trainer)
        if received is None:
            return
        path = self.checkpoint.save_now(trainer, batch_end)
        job = slurm_job_id()
        requeue = self.requeue and received != signal.SIGINT  # Ctrl-C is the user's, not the scheduler's
        requeued = bool(requeue and job and trainer.is_global_zero and requeue_slurm(job))
        self._restore()
        raise Preempted(received, trainer.global_step, str(path) if path else None, requeued)

    def _agreed_signal(self, trainer: pl.Trainer) -> int | None:
        """The signal received, as rank 0 saw it (all ranks must save and stop at the same step)."""
        if trainer.world_size > 1:
            return trainer.strategy.broadcast(self.received, src=0)
        return self.received

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop(trainer)  # a signal after the last plain batch end
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()
