"""Checkpoints on Lightning's ModelCheckpoint, plus what it lacks: finite-only atomic writes, a save at the
run's last step and at epoch ends, and validated resume discovery.

Layout of a run directory's checkpoints (one mechanism: two ModelCheckpoint instances)::

    <out>/checkpoints/step=000000200.ckpt   every N steps or T minutes, at epoch ends and at the last step;
    <out>/checkpoints/step=000000300.ckpt   the newest ``keep_last_k`` kept (top-k by step)
    <out>/checkpoints/last.ckpt             the newest of them (Lightning's save_last): the resume point
    <out>/checkpoints/best-EEE-SSSSSSS.ckpt the best by ``monitor`` (save_top_k=1): the test uses it
"""

from __future__ import annotations

import pickle
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loops import _Loop
from lightning.pytorch.loops.fit_loop import _FitLoop

from pixel_lightning.atomic import atomic_write
from pixel_lightning.errors import CheckpointError, NonFiniteError

LAST = "last.ckpt"
STEP_RE = re.compile(r"^step=(\d+)\.ckpt$")


def step_name(step: int) -> str:
    """File name of the periodic checkpoint taken after ``step`` optimizer steps (sorts by step)."""
    return f"step={step:09d}.ckpt"


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` with a NaN or an infinity."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(value.isfinite().all())
    ]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, refusing non-finite weights and fsyncing local files.

    Lightning's own writer renames a temporary file too, but writes weights with NaNs without a word
    (tests/test_reliability.py::test_checkpoint_io_refuses_non_finite_weights) and does not fsync
    (test_interrupted_write_keeps_the_previous_file checks the rename).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteError(
                f"refusing to write checkpoint {path}: non-finite values in {', '.join(bad[:5])}",
                "the weights diverged; resume from the last checkpoint with a lower learning rate",
            )
        if "://" in str(path):  # remote storage: Lightning's own (transactional) writer
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))


def plain_batch_end(trainer: pl.Trainer) -> bool:
    """Is this training batch end a point to save at and resume from exactly: not the last batch of an
    epoch, and no validation follows? (A run resumed from a save at such a point would skip that
    validation, epoch end and their logged rows; tests/test_journeys.py checks the history.)"""
    loop = trainer.fit_loop.epoch_loop
    return not loop.batch_progress.is_last_batch and not loop._should_check_val_fx(
        trainer.fit_loop._data_fetcher
    )


class PeriodicCheckpoint(ModelCheckpoint):
    """``step=N.ckpt`` every ``every_n_steps`` steps (or every ``every_minutes``), the newest ``keep_last``
    kept, ``last.ckpt`` the newest: Lightning's ModelCheckpoint (top-k by ``step``, save_last) with three
    additions Lightning's triggers cannot express (they are mutually exclusive there):

    * a save at every epoch end, after validation: a step save at the last batch of an epoch is moved
      there, since Lightning resumes such a checkpoint in the next epoch and skips this one's validation
      and epoch-end metrics (tests/test_journeys.py::test_kill_at_an_epoch_boundary_then_rerun);
    * a save at the run's final step (max_steps), so re-running a finished run finds its end state and a
      larger budget continues from it (test_extend_a_finished_run);
    * :meth:`save_now` for preemption (tests/test_preemption.py).
    """

    def __init__(self, dirpath: Path, every_n_steps: int | None, every_minutes: float | None, keep: int):
        timed = timedelta(minutes=every_minutes) if every_minutes and not every_n_steps else None
        super().__init__(
            dirpath=dirpath,
            filename="step={step:09d}",
            monitor="step",
            mode="max",
            save_top_k=keep,
            save_last=True,
            every_n_train_steps=every_n_steps or None,
            train_time_interval=timed,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        self._after_val = False

    @property
    def state_key(self) -> str:  # stable across a change of the save interval (the history is one)
        return "PeriodicCheckpoint"

    def save_now(self, trainer: pl.Trainer, batch_end: bool = False, epoch_end: bool = False) -> str:
        """Save the current step now (all ranks call) unless it is saved; return last.ckpt's path.

        At a (plain) ``batch_end`` the step's logged row, at an ``epoch_end`` the epoch's row, is written
        first: Lightning writes it after this hook, and a run resumed from this checkpoint does not log it
        again, so a kill between the two lost it (test_kill_9_at_a_random_moment_then_rerun,
        test_kill_9_at_an_epoch_boundary_then_rerun). HistoryCSVLogger drops the repeat."""
        if self._last_global_step_saved != trainer.global_step:
            connector = trainer._logger_connector
            if batch_end and connector.should_update_logs:
                connector.log_metrics(connector.metrics["log"])
            if epoch_end:  # logged at the epoch's last step, as Lightning's fit_loop.on_advance_end does
                trainer.fit_loop.epoch_loop._batches_that_stepped -= 1
                connector.log_metrics(connector.metrics["log"])
                trainer.fit_loop.epoch_loop._batches_that_stepped += 1
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        return str(Path(self.dirpath) / LAST)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_global_step_saved = trainer.global_step  # a resumed state is on disk already
        resume_after_epoch_end(trainer.fit_loop)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not plain_batch_end(trainer):  # saved at the epoch end / after the validation
            self._after_val = not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            return
        if self._due(trainer):
            self.save_now(trainer, batch_end=True)

    def _due(self, trainer: pl.Trainer) -> bool:
        """The final step, every ``every_n_steps`` steps, or ``every_minutes`` passed (rank 0 decides)."""
        if 0 <= trainer.max_steps <= trainer.global_step:
            return True
        if self._every_n_train_steps >= 1:
            return trainer.global_step % self._every_n_train_steps == 0
        if self._train_time_interval is None or self._last_time_checked is None:
            return False
        now = time.monotonic()
        due = now - self._last_time_checked >= self._train_time_interval.total_seconds()
        if trainer.strategy.broadcast(due, src=0):
            self._last_time_checked = now
            return True
        return False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._after_val and not trainer.sanity_checking:
            self._after_val = False
            self.save_now(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save_now(trainer, epoch_end=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save_now(trainer)  # stopped by max_time or early stopping


def resume_after_epoch_end(fit_loop: _FitLoop) -> None:
    """Resume a checkpoint saved at an epoch end (in ``on_train_epoch_end``) with the next epoch, as Lightning
    does for an epoch-bounded run, also when the run is bounded by ``max_steps``.

    Lightning (2.6) restarts such a checkpoint of an iteration-based run at "restarted on epoch end": it
    replays the epoch's end (the epoch-end hooks, the epoch count, one logging step), so every later epoch
    gets the sampler epoch after its own (one epoch's data order is skipped) and rows are logged a step
    late. For an epoch-bounded run it resumes instead (not restarting; the epoch counted completed): here
    that path is taken for both. Called at ``on_train_start``, after Lightning picked the restart stage and
    before the first epoch starts (tests/test_journeys.py::test_kill_9_at_an_epoch_boundary_then_rerun,
    the ``steps`` budget; tests/test_reliability.py::test_resume_is_exact at steps 10 and 20).
    """
    if not fit_loop.restarted_on_epoch_end:
        return
    fit_loop.epoch_progress.increment_completed()  # what Lightning's resumed_on_epoch_end path does
    _Loop.restarting.fset(fit_loop, False)  # the fit loop's own setter keeps iteration-based runs restarting
    for loop in (fit_loop, fit_loop.epoch_loop, fit_loop.epoch_loop.val_loop):
        loop.reset_restart_stage()


def best_checkpoint(dirpath: Path, monitor: str) -> ModelCheckpoint:
    """The best checkpoint by ``monitor`` (lower is better), one file: the test and the Hub use it."""
    return ModelCheckpoint(
        dirpath=dirpath,
        filename="best-{epoch:03d}-{step:07d}",
        monitor=monitor,
        mode="min",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )


# ----------------------------------------------------------------------------- validation and discovery


@dataclass
class CheckpointInfo:
    """What a valid pixel-lightning checkpoint holds, read once."""

    path: Path
    step: int
    epoch: int
    arch: str
    config: dict[str, Any] = field(default_factory=dict)
    loops: dict[str, Any] = field(default_factory=dict)


def _corrupt_fix(path: Path) -> str:
    return (
        f"delete {path} (an older checkpoint in the same folder is used), or start a new run with a new --out"
    )


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Load and validate ``path``: readable, a pixel-lightning checkpoint, every weight finite."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (truncated)", _corrupt_fix(path))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        reason = " ".join(str(e).split())[:160]
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({reason})", _corrupt_fix(path)
        ) from e
    meta = ckpt.get("pixel_lightning") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "arch" not in meta or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a pixel-lightning checkpoint (no architecture recorded in it)",
            "point to a checkpoint written by pixel-lightning, or start a new run with a new --out",
        )
    bad = non_finite_tensors(ckpt["state_dict"])
    if bad:
        raise CheckpointError(
            f"checkpoint {path} has non-finite weights ({', '.join(bad[:3])})", _corrupt_fix(path)
        )
    return CheckpointInfo(
        path=path,
        step=int(ckpt.get("global_step", 0)),
        epoch=int(ckpt.get("epoch", 0)),
        arch=str(meta["arch"]),
        config=dict(meta.get("config", {})),
        loops=dict(ckpt.get("loops", {})),
    )


def check_compatible(info: CheckpointInfo, arch: str, config: Mapping[str, Any], fields: list[str]) -> None:
    """Raise CheckpointError naming both models unless ``info`` can be resumed by ``arch``/``config``;
    ``fields``: the config fields that shape the parameters or optimizer state (from the config class)."""

    def norm(value: Any) -> Any:
        return list(value) if isinstance(value, tuple | list) else value

    differ = [
        k for k in fields if k in config and k in info.config and norm(config[k]) != norm(info.config[k])
    ]
    if info.arch != arch or differ:
        keys = differ if info.arch == arch else ["image_shape", "levels", "hidden", "layers"]

        def describe(a: str, c: Mapping[str, Any]) -> str:
            parts = [f"{k}={tuple(c[k]) if isinstance(c[k], list) else c[k]}" for k in keys if k in c]
            return f"{a} ({', '.join(parts)})" if parts else a

        raise CheckpointError(
            f"checkpoint {info.path} is of another model: it holds {describe(info.arch, info.config)}, "
            f"this run builds {describe(arch, config)}",
            "use the recipe and model overrides the checkpoint was trained with, or choose a new --out",
        )


def resume_candidates(directory: Path) -> list[Path]:
    """Checkpoints a run can resume from, newest first: last.ckpt, then the step files by step."""
    steps = sorted(
        (p for p in directory.glob("step=*.ckpt") if STEP_RE.match(p.name)),
        key=lambda p: int(STEP_RE.match(p.name).group(1)),
        reverse=True,
    )
    last = directory / LAST
    return [last, *steps] if last.is_file() else steps


def find_resume_checkpoint(
    directory: str | Path, report: Callable[[str], None] = print
) -> CheckpointInfo | None:
    """The newest valid checkpoint in ``directory``, or None when it holds none.

    Each unusable candidate (corrupt, truncated, non-finite) is reported with ``report`` and the next
    older one tried. Raises CheckpointError when checkpoints exist but none is usable.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for tmp in directory.glob(".*.tmp-*"):  # left by a killed writer (a live one writes only while we wait)
        tmp.unlink(missing_ok=True)
    problems: list[str] = []
    for path in resume_candidates(directory):
        try:
            info = inspect_checkpoint(path)
        except CheckpointError as e:
            problems.append(e.problem)
            report(f"[resume] skipping unusable checkpoint: {e.problem}")
            continue
        if problems:
            report(f"[resume] using the previous valid checkpoint {path} (step {info.step})")
        return info
    if problems:
        raise CheckpointError(
            f"no usable checkpoint in {directory}: " + "; ".join(problems),
            f"delete the unusable files in {directory} to start from scratch, or choose a new --out",
        )
    return None
