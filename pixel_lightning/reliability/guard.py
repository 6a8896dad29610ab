"""Non-finite guard: catch a NaN/inf loss or gradient at the step it happens, skip it, stop if it recurs.

At ``on_before_optimizer_step`` (after backward, before the optimizer moves anything) the guard checks
the step's loss and every gradient. A non-finite one is reported with its step; its gradients are dropped
(``grad = None``: torch optimizers then leave those parameters and their state untouched), so the step
changes no weight. After ``max_skips`` skipped steps the next non-finite one stops the run with
:class:`~pixel_lightning.errors.NonFiniteError`, naming the step. Weights therefore never become
non-finite through a skipped step, and the checkpoint writers refuse non-finite weights anyway.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from pixel_lightning.errors import NonFiniteError


def grads_finite(params: list[torch.Tensor]) -> bool:
    """True when every gradient in ``params`` is finite (one device sync for all of them)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([g.isfinite().all() for g in grads]).all())


class NonFiniteGuard(Callback):
    """Skip optimizer steps with a non-finite loss or gradient; stop after ``max_skips`` of them."""

    def __init__(self, max_skips: int = 5) -> None:
        if max_skips < 0:
            raise ValueError(f"guard.max_skips must be >= 0, got {max_skips}")
        self.max_skips = max_skips
        self.skipped: list[int] = []
        self._loss: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": list(self.skipped)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = list(state_dict.get("skipped", []))

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        self._loss = float(loss.detach())

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        loss, self._loss = self._loss, None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        loss_bad = loss is not None and not torch.isfinite(torch.tensor(loss))
        if not loss_bad and grads_finite(params):
            return
        what = f"non-finite loss ({loss})" if loss_bad else "non-finite gradient"
        step = trainer.global_step
        for p in params:
            p.grad = None  # the optimizer skips parameters without a gradient: this step changes nothing
        self.skipped.append(step)
        batch = trainer.fit_loop.epoch_loop.batch_idx
        where = f"training step {step} (epoch {trainer.current_epoch}, batch {batch})"
        if len(self.skipped) > self.max_skips:
            raise NonFiniteError(
                f"{what} at {where}; {len(self.skipped)} non-finite steps so far (at steps "
                f"{', '.join(map(str, self.skipped[-10:]))}), more than guard.max_skips={self.max_skips}. "
                "No checkpoint holds non-finite weights",
                "lower model.lr (or add gradient clipping with trainer.gradient_clip_val), check the data "
                "for bad values, then re-run the same command to resume from the last checkpoint",
            )
        print(f"[guard] {what} at {where}: step skipped ({len(self.skipped)}/{self.max_skips})", flush=True)
        pl_module.log("guard/skipped_steps", float(len(self.skipped)), on_step=True, on_epoch=False)
