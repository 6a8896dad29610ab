"""Exact mid-epoch resume: what Lightning does not save itself.

Lightning (2.6) restores the model, optimizers, schedulers, loop counters and the position of a training
loader that has ``state_dict``/``load_state_dict`` (the data package's BatchLoader: its sampler's
position). It does not save

* the random number generators (:class:`RNGState`), which any stochastic training step draws from;
* the accumulated states of the module's torchmetrics (:class:`MetricState`), so an epoch-level metric of
  an epoch interrupted mid-way would cover only the batches after the resume.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import Metric


def all_ranks(trainer: pl.Trainer | None, mine: Any) -> list[Any]:
    """``mine`` of every rank, in rank order, for a checkpoint (rank 0 writes it). A collective under DDP:
    every rank calls a callback's ``state_dict`` together, in Lightning's ``save_checkpoint`` (collective
    itself: it ends with a barrier)."""
    world = trainer.world_size if trainer is not None else 1
    if world == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [mine]
    ranks: list[Any] = [None] * world
    torch.distributed.all_gather_object(ranks, mine)
    return ranks


def this_ranks(trainer: pl.Trainer, state: dict[str, Any]) -> Any | None:
    """This rank's part of a state saved by :func:`all_ranks` (None: saved on another number of ranks)."""
    ranks = state.get("ranks") or []
    return ranks[trainer.global_rank] if len(ranks) == trainer.world_size else None


class RNGState(Callback):
    """Save the python, numpy and torch (CPU, CUDA) RNG states of every rank in every checkpoint; restore
    each rank its own at train start.

    Lightning's checkpoints do not hold them. Restored at ``on_train_start``, after the sanity check, so the
    generators continue exactly where the interrupted run's were when its checkpoint was taken; without it
    a training step that draws random numbers (dropout, augmentation) draws other ones after a resume
    (tests/test_reliability.py::test_resume_without_rng_state_differs, the control of
    test_resume_is_exact_with_random_draws_in_the_step_and_two_workers).
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._to_restore: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        # plain python values and tensors only: Lightning loads checkpoints with ``weights_only=True``
        version, internal, gauss_next = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        mine: dict[str, Any] = {
            "python": [version, list(internal), gauss_next],
            "numpy": [
                str(kind),
                torch.from_numpy(keys.astype(np.int64)),
                int(pos),
                int(has_gauss),
                float(cached),
            ],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            mine["cuda"] = torch.cuda.get_rng_state_all()
        return {"ranks": all_ranks(self._trainer, mine)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._to_restore = self._to_restore or {}, None
        state = this_ranks(trainer, state) if "ranks" in state else state  # before issue 19: rank 0's
        if not state:
            return
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


class MetricState(Callback):
    """Save the accumulated states of the module's torchmetrics of every rank in every checkpoint; restore
    each rank its own at train start, so an epoch-level metric of an epoch interrupted mid-way covers the
    whole epoch, as in an uninterrupted run
    (tests/test_reliability.py::test_resume_without_metric_state_differs; under DDP
    tests/test_ddp.py::test_ddp_resume_is_exact: with rank 0's states on every rank the synced epoch
    metric is off).

    Through torchmetrics' public persistence: ``Metric.metric_state`` to save, ``reset`` and the metric's
    own ``load_state_dict`` to restore. The states stay out of the module's ``state_dict`` (metrics are not
    made persistent), so saved weights, ``load_model`` and older checkpoints are unaffected.
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._to_restore: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def _metrics(self) -> dict[str, Metric]:
        module = self._trainer.lightning_module if self._trainer is not None else None
        if module is None:
            return {}
        return {name: m for name, m in module.named_modules() if isinstance(m, Metric)}

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return {}  # the epoch is complete: a resumed run starts the next one with fresh metrics
        mine = {name: _to_cpu(m.metric_state) for name, m in self._metrics().items()}
        return {"ranks": all_ranks(trainer, mine)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._to_restore = self._to_restore or {}, None
        mine = this_ranks(trainer, state) or {}  # none: an epoch end, or another data split (world size)
        for name, metric in self._metrics().items():
            if name in mine:
                metric.reset()
                metric.load_state_dict(_to_device(mine[name], metric.device))


def _to_cpu(states: dict[str, Any]) -> dict[str, Any]:
    return {
        k: [t.detach().cpu() for t in v] if isinstance(v, list) else v.detach().cpu()
        for k, v in states.items()
    }


def _to_device(states: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: [t.to(device) for t in v] if isinstance(v, list) else v.to(device) for k, v in states.items()}
