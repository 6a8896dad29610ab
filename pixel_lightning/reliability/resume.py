"""Exact mid-epoch resume: a stateful training loader and the random number generators' states.

Lightning (2.6) restores the model, optimizers, schedulers and loop counters from a checkpoint, and it
saves and restores the state of a training loader that has ``state_dict``/``load_state_dict``. A plain
DataLoader has neither, so a resumed epoch would start again from its first batch. :class:`ResumableLoader`
wraps a DataLoader and adds them:

* at the start of every epoch it records the RNG states its sampler draws from (torch's global generator,
  the loader's and the sampler's own); the order of an epoch is then reproducible for samplers seeded by
  the epoch (``set_epoch``: the data package's ShardedBatchSampler, DistributedSampler) and for
  RandomSampler alike;
* its state is (epoch, batches already yielded, those RNG states); after a restore, the next epoch of the
  same number replays the recorded RNG states and skips the yielded batches at the sampler level (no
  data is loaded for them), so the remaining batches are exactly those of an uninterrupted run.

:class:`RNGState` saves the python, numpy and torch (CPU and CUDA) generators in every checkpoint and
restores them when training starts.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader


class SkipFirst:
    """An index sampler proxy: the next pass skips its first ``skip`` items, later passes are whole."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.skip, self.epoch = inner, 0, 0

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.inner), skip, None)

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.inner, "set_epoch", None)):
            self.inner.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:  # everything else (generator, shuffle, ...) is the inner's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _generator_states(loader: DataLoader, sampler: Any) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    for key, gen in (("loader", loader.generator), ("sampler", getattr(sampler, "generator", None))):
        if isinstance(gen, torch.Generator):
            states[key] = gen.get_state()
    return states


def _set_generator_states(loader: DataLoader, sampler: Any, states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    for key, gen in (("loader", loader.generator), ("sampler", getattr(sampler, "generator", None))):
        if key in states and isinstance(gen, torch.Generator):
            gen.set_state(states[key])


class ResumableLoader:
    """A training DataLoader with ``state_dict``/``load_state_dict`` for exact mid-epoch resume.

    Its length is the whole epoch's; Lightning counts the batches of a resumed epoch from where the
    checkpoint was taken, and this loader yields exactly the ones that remain.
    """

    def __init__(self, loader: DataLoader) -> None:
        if not isinstance(loader, DataLoader):
            raise TypeError(f"ResumableLoader wraps a torch DataLoader, got {type(loader).__name__}")
        self.loader = loader
        # the index sampler is what the loader's iterators draw from: batch_sampler with auto-collation,
        # else sampler (batch_size=None). Replaced before any iterator exists (persistent workers keep it).
        self._attr = "batch_sampler" if loader.batch_sampler is not None else "sampler"
        self.index_sampler = SkipFirst(getattr(loader, self._attr))
        object.__setattr__(loader, self._attr, self.index_sampler)  # DataLoader forbids plain assignment
        self.yielded = 0
        self.epoch_rng: dict[str, torch.Tensor] | None = None
        self._pending: dict[str, Any] | None = None

    # Lightning calls set_epoch on ``.sampler`` / ``.batch_sampler.sampler`` of the loader it is given
    @property
    def sampler(self) -> SkipFirst:
        return self.index_sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        resume = pending is not None and pending["epoch"] == self.index_sampler.epoch
        now = _generator_states(self.loader, self.index_sampler.inner)
        if resume:
            _set_generator_states(self.loader, self.index_sampler.inner, pending["epoch_rng"])
            self.index_sampler.skip = pending["yielded"]
        self.epoch_rng = _generator_states(self.loader, self.index_sampler.inner)
        self.yielded = pending["yielded"] if resume else 0
        iterator = iter(self.loader)
        first = next(iterator, _END)  # the sampler draws its order here, from the epoch-start states
        if resume:
            _set_generator_states(self.loader, self.index_sampler.inner, now)  # back to the restored states
        if first is _END:
            return
        for batch in itertools.chain([first], iterator):
            self.yielded += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.index_sampler.epoch, "yielded": self.yielded, "epoch_rng": self.epoch_rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("epoch_rng") is not None and 0 < state["yielded"] < len(self):
            self._pending = dict(state)


_END = object()


def make_resumable(datamodule: pl.LightningDataModule) -> pl.LightningDataModule:
    """Make ``datamodule.train_dataloader()`` return a :class:`ResumableLoader` (in place; returned)."""
    original = datamodule.train_dataloader
    if getattr(original, "_pixel_lightning_resumable", False):
        return datamodule

    def train_dataloader() -> ResumableLoader:
        loader = original()
        return loader if isinstance(loader, ResumableLoader) else ResumableLoader(loader)

    train_dataloader._pixel_lightning_resumable = True  # type: ignore[attr-defined]
    datamodule.train_dataloader = train_dataloader  # type: ignore[method-assign]
    return datamodule


class RNGState(Callback):
    """Save the python, numpy and torch RNG states in every checkpoint; restore them at train start.

    Restored at ``on_train_start``, after the sanity check, so the generators continue exactly where the
    interrupted run's were when its checkpoint was taken.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # plain python values and tensors only: Lightning loads checkpoints with ``weights_only=True``
        version, internal, gauss_next = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state: dict[str, Any] = {
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
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._to_restore = self._to_restore, None
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
    """Save the accumulated states of the module's torchmetrics in every checkpoint; restore them at train
    start. Epoch-level metrics of an epoch interrupted mid-way then cover the whole epoch, as in an
    uninterrupted run (Lightning does not save them: they are not part of the module's state_dict, and
    this keeps them out of it, so ``load_model`` and plain ``load_state_dict`` are unaffected)."""

    def __init__(self) -> None:
        self._module: pl.LightningModule | None = None
        self._to_restore: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._module, self._trainer = pl_module, trainer

    def _metrics(self) -> dict[str, Any]:
        from torchmetrics import Metric

        if self._module is None:
            return {}
        return {name: m for name, m in self._module.named_modules() if isinstance(m, Metric)}

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return {}  # the epoch is complete: a resumed run starts the next one with fresh metrics
        return {
            name: {
                "states": {key: getattr(m, key) for key in m._defaults},
                "update_count": int(m._update_count),
            }
            for name, m in self._metrics().items()
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._to_restore = self._to_restore, None
        metrics = self._metrics()
        for name, saved in (state or {}).items():
            metric = metrics.get(name)
            if metric is None:
                continue
            for key, value in saved["states"].items():
                setattr(metric, key, value.to(metric.device) if isinstance(value, torch.Tensor) else value)
            metric._update_count = saved["update_count"]
            metric._computed = None
