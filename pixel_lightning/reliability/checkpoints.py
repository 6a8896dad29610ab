"""Atomic checkpoints, step-based saving with a bounded history, and validated resume discovery.

Layout of a run directory's checkpoints::

    <out>/checkpoints/step=000000200.ckpt   every N steps (and every T seconds), the newest ``keep_last`` kept
    <out>/checkpoints/step=000000300.ckpt
    <out>/checkpoints/last.ckpt             a hard link to the newest step file (a copy where links fail)

Every file is written to ``.<name>.tmp-<pid>-<rand>`` in the same directory, flushed, fsynced and renamed
over the final name (``os.replace`` is atomic on POSIX), then the directory is fsynced: a kill at any
moment leaves either the previous file or the new one, never a half-written file under a final name.
Nothing with a non-finite weight is ever written.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from pixel_lightning.errors import CheckpointError, NonFiniteError

LAST = "last.ckpt"
STEP_RE = re.compile(r"^step=(\d+)\.ckpt$")
TMP_RE = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]+$")
# config fields that change the network's parameters or the optimizer state: a checkpoint whose fields
# differ cannot be resumed by this model
SHAPE_FIELDS = (
    "image_shape",
    "levels",
    "hidden",
    "layers",
    "residual",
    "skip",
    "head_channels",
    "first_kernel",
    "cond_channels",
    "extra",
    "optimizer",
)


def step_name(step: int) -> str:
    """File name of the checkpoint taken after ``step`` optimizer steps (sorts by step)."""
    return f"step={step:09d}.ckpt"


# ----------------------------------------------------------------------------- atomic files


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(final: Path) -> Path:
    """A unique temporary name next to ``final`` (same directory, so the rename is atomic)."""
    return final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def atomic_write(final: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temp file next to ``final``, fsync it, rename it over ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_link(source: Path, final: Path) -> None:
    """Make ``final`` name the same file as ``source`` (hard link; a copy where links are unsupported)."""
    tmp = temp_path(final)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files left by writers that were killed (their process is gone); return them."""
    removed = []
    for tmp in directory.glob(".*.tmp-*"):
        match = TMP_RE.match(tmp.name)
        if match is None or _alive(int(match.group(1))):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state`` with a NaN or an infinity."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(value.isfinite().all())
    ]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, made atomic and durable for local paths, refusing non-finite weights.

    Pass it to the Trainer: ``Trainer(plugins=[AtomicCheckpointIO()])``; every checkpoint Lightning writes
    (ModelCheckpoint, ``trainer.save_checkpoint``, ours) then goes through it.
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


# ----------------------------------------------------------------------------- validation and discovery


@dataclass
class CheckpointInfo:
    """What a valid pixel-lightning checkpoint holds, read once."""

    path: Path
    step: int
    epoch: int
    arch: str
    config: dict[str, Any] = field(default_factory=dict)


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """``torch.load`` a checkpoint on CPU; a corrupt or truncated file raises CheckpointError."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (truncated)", _corrupt_fix(path))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        reason = " ".join(str(e).split())[:160]
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({reason})", _corrupt_fix(path)
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)", _corrupt_fix(path))
    return ckpt


def _corrupt_fix(path: Path) -> str:
    return (
        f"delete {path} (an older checkpoint in the same folder is used), or start a new run with a new --out"
    )


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Load and validate ``path``: readable, a pixel-lightning checkpoint, every weight finite."""
    path = Path(path)
    ckpt = load_checkpoint_file(path)
    meta = ckpt.get("pixel_lightning")
    if not isinstance(meta, dict) or "arch" not in meta:
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
    )


def describe_model(arch: str, config: Mapping[str, Any], keys: tuple[str, ...] | list[str]) -> str:
    """``row_lstm (hidden=128, layers=12)``: the architecture and the fields ``keys``, for messages."""
    parts = [
        f"{k}={tuple(v) if isinstance(v, list) else v}" for k in keys if k in config for v in [config[k]]
    ]
    return f"{arch} ({', '.join(parts)})" if parts else arch


def check_compatible(info: CheckpointInfo, arch: str, config: Mapping[str, Any]) -> None:
    """Raise CheckpointError naming both models unless ``info`` can be resumed by ``arch``/``config``."""

    def norm(value: Any) -> Any:
        return list(value) if isinstance(value, tuple | list) else value

    differ = [
        k
        for k in SHAPE_FIELDS
        if k in config and k in info.config and norm(config[k]) != norm(info.config[k])
    ]
    if info.arch != arch or differ:
        keys = differ if info.arch == arch else ["image_shape", "levels", "hidden", "layers"]
        held, built = describe_model(info.arch, info.config, keys), describe_model(arch, config, keys)
        raise CheckpointError(
            f"checkpoint {info.path} is of another model: it holds {held}, this run builds {built}",
            "use the recipe and model overrides the checkpoint was trained with, or choose a new --out",
        )


def resume_candidates(directory: Path) -> list[Path]:
    """Checkpoints a run can resume from, newest first: step files by step, and ``last.ckpt`` when it
    is not simply a link to one of them (then it goes first: it is written last)."""
    steps = sorted(
        (p for p in directory.glob("step=*.ckpt") if STEP_RE.match(p.name)),
        key=lambda p: int(STEP_RE.match(p.name).group(1)),
        reverse=True,
    )
    last = directory / LAST
    if last.is_file() and not any(_same_file(last, p) for p in steps):
        return [last, *steps]
    return steps


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
    remove_stale_temps(directory)
    candidates = resume_candidates(directory)
    problems: list[str] = []
    for path in candidates:
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


# ----------------------------------------------------------------------------- saving


class StepCheckpoint(Callback):
    """Save ``step=N.ckpt`` every ``every_n_steps`` optimizer steps and every ``every_seconds``, point
    ``last.ckpt`` at the newest (``link_last``), keep the newest ``keep_last`` step files, and save at the
    end of fit.

    Saving happens in ``on_train_batch_end`` (the point Lightning's loops resume from exactly). A model
    with a non-finite weight is never saved (NonFiniteError).
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_steps: int | None = 1000,
        every_seconds: float | None = None,
        keep_last: int = 3,
        link_last: bool = True,
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"checkpoint.every_n_steps must be >= 1 (or None), got {every_n_steps}")
        if every_seconds is not None and every_seconds <= 0:
            raise ValueError(f"checkpoint.every_seconds must be > 0 (or None), got {every_seconds}")
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        self.dirpath = Path(dirpath)
        self.every_n_steps, self.every_seconds, self.keep_last = every_n_steps, every_seconds, keep_last
        self.link_last = link_last
        self.last_saved_step: int | None = None
        self.last_path: Path | None = None
        self._last_time = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_time = time.monotonic()
        self.last_saved_step = trainer.global_step  # resumed (or fresh) state is already on disk

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._due(trainer) or (trainer.global_step != self.last_saved_step and _final_step(trainer)):
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self.last_saved_step:  # stopped early (max_time, early stopping)
            self.save(trainer)

    def _due(self, trainer: pl.Trainer) -> bool:
        step = trainer.global_step
        if step == self.last_saved_step:
            return False
        due = bool(self.every_n_steps) and step % self.every_n_steps == 0
        if self.every_seconds is not None:
            timed = time.monotonic() - self._last_time >= self.every_seconds
            due = due or bool(trainer.strategy.broadcast(timed, src=0))  # ranks must agree
        return due

    def save(self, trainer: pl.Trainer) -> Path:
        """Write the checkpoint of the current step (all ranks call; rank 0 writes) and return its path."""
        bad = non_finite_tensors(trainer.lightning_module.state_dict())
        if bad:
            raise NonFiniteError(
                f"not saving step {trainer.global_step}: non-finite weights in {', '.join(bad[:5])}",
                "the weights diverged; resume from the last checkpoint with a lower learning rate",
            )
        path = self.dirpath / step_name(trainer.global_step)
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:
            if self.link_last:
                atomic_link(path, self.dirpath / LAST)
            self.prune(trainer.global_step)
        trainer.strategy.barrier("StepCheckpoint.save")
        self.last_saved_step, self.last_path, self._last_time = trainer.global_step, path, time.monotonic()
        return path

    def prune(self, current_step: int) -> None:
        """Delete step files older than the newest ``keep_last`` (files of later steps are left alone:
        they belong to a history this run is not continuing and will be overwritten when reached)."""
        older = [p for p in resume_candidates(self.dirpath) if p.name != LAST and _step_of(p) <= current_step]
        for path in older[self.keep_last :]:
            path.unlink(missing_ok=True)


def _final_step(trainer: pl.Trainer) -> bool:
    """Is this the run's last training step (max_steps, or the last batch of the last epoch)? Saved here
    rather than at the end of fit, so a later run with a larger budget continues mid-epoch exactly."""
    if 0 <= trainer.max_steps <= trainer.global_step:
        return True
    loop = trainer.fit_loop
    last_epoch = (
        loop.max_epochs is not None and loop.max_epochs >= 0 and trainer.current_epoch + 1 >= loop.max_epochs
    )
    return bool(last_epoch and loop.epoch_loop.batch_progress.is_last_batch)


def _step_of(path: Path) -> int:
    match = STEP_RE.match(path.name)
    return int(match.group(1)) if match else -1
