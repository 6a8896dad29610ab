"""The run directory: checked writable before anything starts, and left as it was when a run fails on a
user error before it made progress (no partial files; existing files, checkpoints above all, untouched)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from pixel_lightning.errors import NonFiniteError, Preempted, RunDirError, user_error_types
from pixel_lightning.reliability.checkpoints import temp_path


def ensure_writable(run_dir: str | Path) -> Path:
    """Create ``run_dir`` if needed and prove a file can be written in it; RunDirError otherwise."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = temp_path(run_dir / ".write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise RunDirError(
            f"cannot write to the run directory {run_dir} ({reason}"
            + (f": {e.filename}" if e.filename and str(e.filename) != str(run_dir) else "")
            + ")",
            "choose another --out DIR that you can write to, or fix the folder's permissions",
        ) from e
    return run_dir


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*")) if root.is_dir() else set()


def _made_progress(created: set[Path]) -> bool:
    """Did this invocation write a checkpoint (then its files are a resumable run, not debris)?"""
    return any(p.suffix == ".ckpt" and p.parent.name == "checkpoints" for p in created)


@contextlib.contextmanager
def clean_failed_start(run_dir: str | Path) -> Iterator[None]:
    """On a user error, remove what this invocation created under ``run_dir`` (the folder itself too if
    it is new), unless it wrote a checkpoint. Files that existed before are never touched; bugs,
    preemption and the non-finite guard leave everything in place."""
    run_dir = Path(run_dir)
    existed = run_dir.exists()
    top = run_dir  # the highest folder this invocation may create (ensure_writable makes parents)
    while not existed and not top.parent.exists() and top.parent != top:
        top = top.parent
    before = _tree(run_dir)
    try:
        yield
    except user_error_types() as error:
        if not isinstance(error, Preempted | NonFiniteError):
            created = _tree(run_dir) - before
            if not _made_progress(created):
                _remove(top if not existed else run_dir, created, existed)
        raise


def _remove(root: Path, created: set[Path], existed: bool) -> None:
    if not existed:
        shutil.rmtree(root, ignore_errors=True)
        return
    for path in sorted(created, key=lambda p: len(p.parts), reverse=True):  # files before their folders
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
