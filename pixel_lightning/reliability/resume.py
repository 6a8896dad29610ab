"""Exact mid-epoch resume: what Lightning does not save itself (it saves the model, optimizers, loop counters
and a loader's position): the random generators and torchmetrics' states, of every rank."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import move_data_to_device
from torchmetrics import Metric


class PerRankState(Callback):
    """A state of every rank (``mine``) in every checkpoint, gathered in the collective ``state_dict`` under
    DDP; each rank ``restore``s its own at ``on_train_start``, after the sanity check."""

    FLAT_BEFORE_ISSUE_19 = False  # a checkpoint of before issue 19 holds rank 0's state only

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._to_restore: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        mine = self.mine()
        if mine is None:
            return {}
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return {"ranks": [mine]}
        ranks: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(ranks, mine)
        return {"ranks": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._to_restore = self._to_restore or {}, None
        ranks = state.get("ranks") or ([state] * trainer.world_size if self.FLAT_BEFORE_ISSUE_19 else [])
        mine = ranks[trainer.global_rank] if len(ranks) == trainer.world_size else None  # else: other ranks
        if mine:
            self.restore(mine)


class RNGState(PerRankState):
    """The python, numpy and torch (CPU, CUDA) RNG states, for the steps that draw random numbers
    (tests/test_reliability.py::test_resume_without_rng_state_differs)."""

    FLAT_BEFORE_ISSUE_19 = True

    def mine(self) -> dict[str, Any]:
        # plain python values and tensors only: Lightning loads checkpoints with ``weights_only=True``
        version, internal, gauss_next = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        keys = torch.from_numpy(keys.astype(np.int64))
        mine: dict[str, Any] = {
            "python": [version, list(internal), gauss_next],
            "numpy": [str(kind), keys, int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            mine["cuda"] = torch.cuda.get_rng_state_all()
        return mine

    def restore(self, mine: dict[str, Any]) -> None:
        version, internal, gauss_next = mine["python"]
        random.setstate((version, tuple(internal), gauss_next))
        kind, keys, pos, has_gauss, cached = mine["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and torch.cuda.is_available() and len(mine["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(mine["cuda"])


class MetricState(PerRankState):
    """The accumulated states of the module's torchmetrics, so an interrupted epoch's metric covers the whole
    epoch (tests/test_reliability.py::test_resume_without_metric_state_differs, tests/test_ddp.py::
    test_ddp_resume_is_exact); kept out of the module's ``state_dict`` (the saved weights)."""

    def _metrics(self) -> dict[str, Metric]:
        module = self._trainer.lightning_module if self._trainer is not None else None
        return {} if module is None else {n: m for n, m in module.named_modules() if isinstance(m, Metric)}

    def mine(self) -> dict[str, Any] | None:
        if self._trainer is None or self._trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return None  # the epoch is complete: a resumed run starts the next one with fresh metrics
        return {name: move_data_to_device(m.metric_state, "cpu") for name, m in self._metrics().items()}

    def restore(self, mine: dict[str, Any]) -> None:
        for name, metric in self._metrics().items():
            if name in mine:
                metric.reset()
                metric.load_state_dict(move_data_to_device(mine[name], metric.device))
