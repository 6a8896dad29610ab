"""Fault injection for the journey matrix (tests/test_journey_matrix.py): a Lightning callback, added to a
run through the real command line (``callbacks=[{class_path: journey_faults.Fault, init_args: ...}]``), that
kills the run's whole process group at one chosen moment, as a job kill (scancel, a lost node) does.

It fires once: before killing it creates ``marker``, and a Fault whose marker exists does nothing. So the
*same command* run again is the user's plain re-run, and the two runs share one configuration (the run
folder's identity includes the callbacks).

Moments (``at``):

* ``training``: at the start of the training step after ``step`` optimizer steps (between checkpoints);
* ``validation``: at the second batch of the first validation after ``step`` steps (not the sanity check);
* ``checkpoint``: as soon as ``checkpoints/step=<step>.ckpt`` exists (a thread polls every millisecond, so
  the kill lands right after the file's atomic rename, before the step's logged row if it can);
* ``test``: at the first batch of the final test;
* ``sampling``: when the final sampling starts (the model's ``sample`` is wrapped after the test);
* ``sigterm``: SIGTERM (not SIGKILL) to the process group at the start of the step after ``step``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L

MOMENTS = ("training", "validation", "checkpoint", "test", "sampling", "sigterm")


class Fault(L.Callback):
    def __init__(self, at: str, marker: str, step: int = 0, run_dir: str = "") -> None:
        if at not in MOMENTS:
            raise ValueError(f"at must be one of {MOMENTS}, got {at!r}")
        self.at, self.marker, self.step, self.run_dir = at, Path(marker), step, Path(run_dir)
        self.armed = not self.marker.exists()

    def _fire(self, sig: int = signal.SIGKILL) -> None:
        if not self.armed:
            return
        self.armed = False
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # another rank fired first
            return
        os.write(fd, f"{self.at} {os.getpid()}\n".encode())
        os.fsync(fd)
        os.close(fd)
        os.killpg(os.getpgrp(), sig)
        if sig != signal.SIGKILL:
            return
        time.sleep(60)  # never reached: SIGKILL

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at == "checkpoint" and self.armed and trainer.is_global_zero:
            path = self.run_dir / "checkpoints" / f"step={self.step:09d}.ckpt"
            threading.Thread(target=self._watch, args=(path,), daemon=True).start()

    def _watch(self, path: Path) -> None:
        while self.armed:
            if path.exists():
                self._fire()
            time.sleep(0.001)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.is_global_zero and trainer.global_step == self.step:
            if self.at == "training":
                self._fire()
            elif self.at == "sigterm":
                self._fire(signal.SIGTERM)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if self.at != "validation" or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.global_step >= self.step and batch_idx == 1:
            self._fire()

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.at == "test" and trainer.is_global_zero:
            self._fire()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at != "sampling" or not self.armed or not trainer.is_global_zero:
            return
        sample = pl_module.sample

        def sample_then_die(*args: Any, **kwargs: Any) -> Any:
            self._fire()
            return sample(*args, **kwargs)

        pl_module.sample = sample_then_die  # the instance's attribute: this process only
