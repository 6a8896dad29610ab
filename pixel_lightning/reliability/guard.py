"""Non-finite guard: skip a step with a NaN/inf loss or gradient, stop if it recurs, and at the stop set
aside the checkpoints after the last sane loss, so that the same command with a lower ``model.lr`` resumes
from a sane one (tests/test_run_folder.py::test_guard_recovery_trains_on_from_a_sane_checkpoint)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from pixel_lightning.errors import CheckpointError, ConfigError, NonFiniteError
from pixel_lightning.reliability.checkpoints import read_checkpoint

DIVERGED = 10.0  # a loss this many times the run's lowest: finite weights that diverged, not a batch's noise


class NonFiniteGuard(Callback):
    def __init__(self, max_skips: int = 5) -> None:
        self.check(max_skips)
        self.max_skips = max_skips
        self.skipped: list[int] = []
        self.lowest, self.sane_step = math.inf, 0  # the run's lowest loss; the newest step not DIVERGED
        self._loss: float | None = None

    @staticmethod
    def check(max_skips: int) -> None:  # RunConfig.validate calls it too
        if max_skips < 0:
            raise ConfigError(f"guard.max_skips={max_skips} is impossible: it must be >= 0")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": list(self.skipped), "lowest": self.lowest, "sane_step": self.sane_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = list(state_dict.get("skipped", []))
        self.lowest = float(state_dict.get("lowest", math.inf))
        self.sane_step = int(state_dict.get("sane_step", 0))

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        self._loss = float(loss.detach())

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        loss, self._loss = self._loss, None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        loss_bad = loss is not None and not math.isfinite(loss)
        if loss is not None and not loss_bad:
            if loss <= DIVERGED * max(self.lowest, 0.0):
                self.sane_step = trainer.global_step  # the weights of this step's checkpoint give a sane loss
            self.lowest = min(self.lowest, loss)
        if not loss_bad:
            grads = [p.grad.isfinite().all() for p in params if p.grad is not None]
            if not grads or bool(torch.stack(grads).all()):  # one device sync for all gradients
                return
        what = f"non-finite loss ({loss})" if loss_bad else "non-finite gradient"
        step = trainer.global_step
        for p in params:
            p.grad = None  # the optimizer skips parameters without a gradient: this step changes nothing
        self.skipped.append(step)
        batch = trainer.fit_loop.epoch_loop.batch_idx
        where = f"training step {step} (epoch {trainer.current_epoch}, batch {batch})"
        if len(self.skipped) > self.max_skips:
            error = NonFiniteError(
                f"{what} at {where}; {len(self.skipped)} non-finite steps so far (at steps "
                f"{', '.join(map(str, self.skipped[-10:]))}), more than guard.max_skips={self.max_skips}. "
                f"No checkpoint holds non-finite weights; the loss was last sane at step {self.sane_step}",
                "lower model.lr (or add gradient clipping with trainer.gradient_clip_val), check the data "
                "for bad values, then re-run the same command to resume from the last sane checkpoint",
            )
            error.sane_step = self.sane_step  # type: ignore[attr-defined]  # for set_aside_diverged
            raise error
        print(f"[guard] {what} at {where}: step skipped ({len(self.skipped)}/{self.max_skips})", flush=True)
        pl_module.log("guard/skipped_steps", float(len(self.skipped)), on_step=True, on_epoch=False)


def set_aside_diverged(directory: Path, sane_step: int) -> tuple[Path | None, int | None]:
    """Move the checkpoints in ``directory`` saved after ``sane_step`` into ``<run>/diverged-after-step-N/``;
    return that folder (None: nothing moved) and the step a re-run resumes from (None: it starts over)."""
    steps: dict[Path, int] = {}  # a bad file is left for the resume to report
    for path in sorted(Path(directory).glob("*.ckpt")):
        with contextlib.suppress(CheckpointError, KeyError, TypeError, ValueError):
            steps[path] = int(read_checkpoint(path, mmap=True)["global_step"])
    later = [p for p, step in steps.items() if step > sane_step]
    resume_step = max((step for step in steps.values() if step <= sane_step), default=None)
    if not later:
        return None, resume_step
    folder, n = Path(directory).parent / f"diverged-after-step-{sane_step}", 1
    while folder.exists():
        n += 1
        folder = Path(directory).parent / f"diverged-after-step-{sane_step}-{n}"
    folder.mkdir()
    for path in later:
        path.rename(folder / path.name)
    return folder, resume_step
