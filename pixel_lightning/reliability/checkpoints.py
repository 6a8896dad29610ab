"""Checkpoints (docs/reliability.md): periodic and preemption ones where Lightning resumes exactly, the best
one, finite-only atomic writes, the RNG and metric states Lightning does not save, the resume's choice, and
the metric history they count (``<run>/logs/metrics.csv``: each (step, metric) once after interruptions)."""

from __future__ import annotations

import csv
import io
import os
import pickle
import random
import re
import signal
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import move_data_to_device, rank_zero_only
from torchmetrics import Metric

from pixel_lightning.atomic import atomic_write
from pixel_lightning.errors import CheckpointError, NonFiniteError, Preempted, one_line
from pixel_lightning.runfolder import RunFolder

LAST = "last.ckpt"
STEP_RE = re.compile(r"^step=(\d+)\.ckpt$")
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)  # SIGINT: Ctrl-C saves a resumable step too


def step_name(step: int) -> str:  # of the periodic checkpoint after ``step`` optimizer steps (sorts by step)
    return f"step={step:09d}.ckpt"


def step_files(directory: Path) -> list[tuple[int, Path]]:  # (step, path), oldest first
    return sorted((int(m.group(1)), p) for p in directory.glob("step=*.ckpt") if (m := STEP_RE.match(p.name)))


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    floats = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    return [name for name, value in floats.items() if not bool(value.isfinite().all())]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, refusing non-finite weights (Lightning's own writes them without a word:
    tests/test_reliability.py::test_checkpoint_io_refuses_non_finite_weights) and writing atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if bad := non_finite_tensors(checkpoint.get("state_dict", {})):
            raise NonFiniteError(
                f"refusing to write checkpoint {path}: non-finite values in {', '.join(bad[:5])}",
                "the weights diverged; resume from the last checkpoint with a lower learning rate",
            )
        if "://" in str(path):  # remote storage: Lightning's own (transactional) writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))


def plain_batch_end(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Is this training batch end a point Lightning resumes exactly from: an optimizer step, not an epoch's
    last batch, no validation after it (tests/test_journeys.py)? Lightning's rule, from the Trainer's public
    settings; a time-based ``val_check_interval`` cannot be foreseen and counts as no."""
    if (batch_idx + 1) % trainer.accumulate_grad_batches or trainer.is_last_batch:
        return False
    every = trainer.check_val_every_n_epoch
    if not trainer.enable_validation or (every is not None and (trainer.current_epoch + 1) % every):
        return True
    if trainer.should_stop:
        return False
    if not isinstance(trainer.val_check_interval, int | float) or trainer.val_check_batch == float("inf"):
        return True  # (an infinite val_check_batch validates at the last batch only: excluded above)
    batch = trainer.fit_loop.total_batch_idx if every is None else batch_idx
    return (batch + 1) % trainer.val_check_batch != 0


class HistoryLogger(Logger):
    """CSVLogger's format (``step`` and every key, sorted), appended row by row (CSVLogger rewrites the file
    in place for a new key: a kill lost the history). ``keep``: the rows of an existing file kept (0: none;
    None: all). The same row twice in a row is written once (:func:`write_step_row` writes it first)."""

    def __init__(self, save_dir: str | Path, keep: int | None = 0) -> None:
        super().__init__()
        self.folder = RunFolder(save_dir)
        self.path = self.folder.history_file
        self.keep, self.rows = keep, 0
        self._keys: list[str] | None = None  # None: the kept rows are not read yet
        self._last: str | None = None

    name = property(lambda self: self.path.parent.name)
    version = property(lambda self: "")
    save_dir = property(lambda self: str(self.folder.path))
    log_dir = property(lambda self: str(self.path.parent))

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the settings are in ``<run>/config.yaml``."""

    def kept_rows(self) -> list[dict[str, str]]:  # those of before this run started (rank 0)
        self._continue()
        return self.folder.read_history()[: self.rows]

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        row["step"] = self.rows if step is None else step
        if repr(row) == self._last:  # repr: a NaN (a step the guard skipped) equals itself
            return
        self._last = repr(row)
        self._continue()
        if set(row) - set(self._keys):  # a new column: the whole file again, replaced atomically
            self._keys = sorted(set(self._keys) | set(row))
            self._write([*self.folder.read_history(), row])
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._keys, lineterminator="\n").writerow(row)
        self.rows += 1

    def _continue(self) -> None:  # once: keep the first ``keep`` rows of an existing file (None: all)
        if self._keys is not None:
            return
        rows = self.folder.read_history()[: self.keep]
        self._keys, self.rows = sorted(set().union(*rows)) if rows else [], len(rows)
        if rows or self.path.is_file():
            self._write(rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        text = io.StringIO()
        if self._keys:
            writer = csv.DictWriter(text, fieldnames=self._keys, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        atomic_write(self.path, text.getvalue())


def write_step_row(trainer: pl.Trainer) -> None:
    """Write this step's row to the CSV history before a batch-end checkpoint: Lightning logs it after
    ``on_train_batch_end`` and a run resumed from that checkpoint never does. One of the package's two private
    Lightning names, ``trainer._logger_connector`` (no public way to get the row; tests/test_reliability.py::
    test_a_kill_right_after_a_batch_end_checkpoint_keeps_the_step_row). The history drops the repeat."""
    connector = trainer._logger_connector
    history = [logger for logger in trainer.loggers if isinstance(logger, HistoryLogger)]
    if not history or not connector.should_update_logs:
        return
    loggers, trainer.loggers = trainer.loggers, history
    try:
        connector.log_metrics(connector.metrics["log"])
    finally:
        trainer.loggers = loggers


def requeue_slurm() -> bool:
    """``scontrol requeue`` our SLURM job (``<array job>_<task>`` or the job id); True when it succeeded."""
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


class PeriodicCheckpoint(Checkpoint):
    """``step=N.ckpt`` every ``every_n_steps`` steps (or ``every_minutes``), at epoch ends and the run's final
    step (the newest ``keep`` kept, ``last.ckpt`` the newest); on SIGTERM, SIGUSR1 or Ctrl-C the current
    step's, a SLURM requeue (``requeue``) and :class:`Preempted`. Saves wait for a :func:`plain_batch_end`
    (tests/test_reliability.py::test_resume_is_exact); a ``Checkpoint`` runs after the other callbacks (an EMA
    is saved as of that step: test_journey_matrix.py ``sigterm-*-ema-1``). State: the history's rows and the
    scalar ``callback_metrics``, for a re-run resuming at the run's end (test_journey_matrix.py ``test``)."""

    state_key = "HistoryRows"  # its key in checkpoints (the callback's name until issue 21)

    def __init__(
        self, dirpath: Path, every_n_steps: int | None, every_minutes: float | None, keep: int, requeue: bool
    ) -> None:
        self.dirpath, self.keep, self.requeue = Path(dirpath), keep, requeue
        self.every_n_steps = every_n_steps or 0
        self.every_s = every_minutes * 60 if every_minutes and not every_n_steps else None
        self._due, self._saved_step, self._timer = False, -1, time.monotonic()
        self._trainer: pl.Trainer | None = None
        self.received: int | None = None  # the signal to act on
        self._previous: dict[int, Any] = {}  # the signal handlers ours replace

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is None:
            return {}
        logger = next((lg for lg in self._trainer.loggers if isinstance(lg, HistoryLogger)), None)
        metrics = self._trainer.callback_metrics.items()
        state: dict[str, Any] = {"rows": logger.rows} if logger is not None else {}
        state["metrics"] = {k: float(v) for k, v in metrics if getattr(v, "numel", lambda: 1)() == 1}
        return state

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._due, self._saved_step, self._timer = False, trainer.global_step, time.monotonic()
        self.received = None
        # a resume of the save at a max_steps run's end starts the next epoch, not the finished one again
        # (tests/test_reliability.py::test_a_larger_budget_continues_mid_epoch_exactly[10])
        epoch_loop = trainer.fit_loop.epoch_loop
        if epoch_loop.restarted_on_last:  # only a save at train end has its last batch completed
            epoch_loop.restarting = False
        # while training, ours replace Lightning's SLURM handler (which saves mid-step); signals go to main
        if threading.current_thread() is threading.main_thread() and not self._previous:
            self._previous = {sig: signal.signal(sig, self._handler) for sig in SIGNALS}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        every = self.every_n_steps > 0 and step % self.every_n_steps == 0
        final = 0 <= trainer.max_steps <= step
        self._due = self._due or every or final or trainer.is_last_batch
        if not self._due and self.every_s is not None:  # rank 0 decides, for all ranks
            time_is_up = time.monotonic() - self._timer >= self.every_s
            self._due = bool(trainer.strategy.broadcast(time_is_up, src=0))
        if plain_batch_end(trainer, batch_idx):
            if self._due:
                self.save_now(trainer, batch_end=True)
            self._stop(trainer, batch_end=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save_now(trainer)  # the final state: a larger budget continues from it
        self._stop(trainer)  # a signal after the last plain batch end
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, error: BaseException) -> None:
        self._restore()  # Preempted included: Lightning calls this for every exception of fit

    def save_now(self, trainer: pl.Trainer, batch_end: bool = False) -> str:
        """Save the current step (all ranks call) unless saved; return last.ckpt's path. Prunes the step files
        before the newest ``keep`` (later ones, left by a resume from an older one, get overwritten)."""
        step = trainer.global_step
        if self._saved_step != step:
            if batch_end:
                write_step_row(trainer)
            # the whole training state (said, so that Lightning does not log that it assumed it)
            for name in (step_name(step), LAST):
                trainer.save_checkpoint(self.dirpath / name, weights_only=False)
            self._due, self._saved_step, self._timer = False, step, time.monotonic()
            older = [p for s, p in step_files(self.dirpath) if s <= step] if trainer.is_global_zero else []
            for path in older[: max(0, len(older) - self.keep)]:
                path.unlink(missing_ok=True)
        return str(self.dirpath / LAST)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            said = f"[preemption] received signal {signum}: checkpointing at the end of this step"
            print(said + (" (Ctrl-C again: stop at once)" if signum == signal.SIGINT else ""), flush=True)
        elif signum == signal.SIGINT:  # Ctrl-C again: stop now, from the last checkpoint written
            raise KeyboardInterrupt

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _stop(self, trainer: pl.Trainer, batch_end: bool = False) -> None:
        received = trainer.strategy.broadcast(self.received, src=0)  # rank 0's: all stop at the same step
        if received is None:
            return
        path = self.save_now(trainer, batch_end)
        requeue = self.requeue and received != signal.SIGINT  # Ctrl-C is the user's, not the scheduler's
        requeued = bool(requeue and trainer.is_global_zero and requeue_slurm())
        raise Preempted(received, trainer.global_step, path, requeued)


class BestCheckpoint(ModelCheckpoint):
    """The best checkpoint by ``monitor`` (lower is better), one file: the test and the Hub use it. Its saved
    paths are read as names in its folder: Lightning's would drop all but ``best_model_path`` of a moved
    folder (tests/test_reliability.py::test_a_moved_run_folder_keeps_its_bookkeeping)."""

    def __init__(self, dirpath: Path, monitor: str) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="best-{epoch:03d}-{step:07d}",
            monitor=monitor,
            mode="min",  # lower is better: NLLs
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        def here(path: Any) -> Any:  # every file it saves is in its dirpath
            return str(Path(self.dirpath) / Path(path).name) if path else path

        state = {k: here(v) if k.endswith("_model_path") else v for k, v in state_dict.items()}
        state["best_k_models"] = {here(k): v for k, v in state_dict.get("best_k_models", {}).items()}
        super().load_state_dict({**state, "dirpath": self.dirpath})


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
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        keys = torch.from_numpy(keys.astype(np.int64))
        mine: dict[str, Any] = {
            "python": random.getstate(),
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


@dataclass
class CheckpointInfo:
    path: Path
    step: int
    epoch: int
    arch: str
    config: dict[str, Any]
    history_rows: int | None  # rows of logs/metrics.csv logged when it was taken (None: unknown)
    metrics: dict[str, float]  # trainer.callback_metrics when it was taken


def read_checkpoint(
    path: str | Path, map_location: str = "cpu", fix: str | None = None, mmap: bool = False
) -> dict[str, Any]:
    """The one checkpoint reader (resume, guard, test, ``load_model``), with ``weights_only=True``: only
    tensors and plain values are unpickled. CheckpointError naming the file when it is empty, unreadable or
    not pixel-lightning's (``fix``: what the user can do; ``mmap``: read lazily, for one field)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"cannot read {path} as a checkpoint: it is empty (truncated)", fix)
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path} as a checkpoint: corrupt, truncated, or holding more than tensors and plain "
            f"values ({type(e).__name__}: {one_line(e, 160)})",
            fix,
        ) from e
    meta = ckpt.get("pixel_lightning") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "arch" not in meta or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a pixel-lightning checkpoint (no architecture recorded in it)",
            fix or "point to a checkpoint written by pixel-lightning",
        )
    return ckpt


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Load and validate ``path``: readable, a pixel-lightning checkpoint, every weight finite."""
    path = Path(path)
    fix = (
        f"delete {path} (an older checkpoint in the same folder is used), or start a new run with a new --out"
    )
    ckpt = read_checkpoint(path, fix=fix)
    meta = ckpt["pixel_lightning"]
    if bad := non_finite_tensors(ckpt["state_dict"]):
        raise CheckpointError(f"checkpoint {path} has non-finite weights ({', '.join(bad[:3])})", fix)
    record = ckpt.get("callbacks", {}).get(PeriodicCheckpoint.state_key, {})
    return CheckpointInfo(
        path=path,
        step=int(ckpt.get("global_step", 0)),
        epoch=int(ckpt.get("epoch", 0)),
        arch=str(meta["arch"]),
        config=dict(meta.get("config", {})),
        history_rows=record.get("rows"),
        metrics=dict(record.get("metrics", {})),
    )


def find_resume_checkpoint(
    directory: str | Path, report: Callable[[str], None] = print
) -> CheckpointInfo | None:
    """The newest valid checkpoint in ``directory`` (last.ckpt, then the step files; None: none). An unusable
    one is reported and the next older one tried (Lightning would fail: tests/test_reliability.py::
    test_corrupt_newest_checkpoint_falls_back_to_previous); CheckpointError when none is usable."""
    directory = Path(directory)
    for tmp in directory.glob(".*.tmp-*"):  # left by a killed writer (a live one writes only while we wait)
        tmp.unlink(missing_ok=True)
    last = [directory / LAST] if (directory / LAST).is_file() else []
    problems: list[str] = []
    for path in [*last, *(p for _, p in reversed(step_files(directory)))]:
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


def prepare_resume(
    run_dir: str | Path, model: pl.LightningModule, report: Callable[[str], None] = print
) -> CheckpointInfo | None:
    """The checkpoint to resume from (None: start fresh); CheckpointError naming both models when it is of
    another architecture or config (the fields that shape the parameters: all but RESUMABLE_CHANGES)."""
    info = find_resume_checkpoint(RunFolder(run_dir).checkpoints, report)
    if info is None:
        return None

    def norm(config: Mapping[str, Any]) -> dict[str, Any]:
        return {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in config.items()}

    shaping = [f.name for f in fields(model.config) if f.name not in type(model.config).RESUMABLE_CHANGES]
    ours, theirs = norm({k: getattr(model.config, k) for k in shaping}), norm(info.config)
    differ = [k for k in ours if k in theirs and ours[k] != theirs[k]]
    if info.arch != model.arch or differ:
        keys = differ if info.arch == model.arch else ["image_shape", "levels", "hidden", "layers"]

        def describe(arch: str, config: Mapping[str, Any]) -> str:
            parts = [f"{k}={config[k]}" for k in keys if k in config]
            return f"{arch} ({', '.join(parts)})" if parts else arch

        raise CheckpointError(
            f"checkpoint {info.path} is of another model: it holds {describe(info.arch, theirs)}, "
            f"this run builds {describe(model.arch, ours)}",
            "use the recipe and model overrides the checkpoint was trained with, or choose a new --out",
        )
    report(f"[resume] resuming from {info.path} (step {info.step}, epoch {info.epoch})")
    return info
