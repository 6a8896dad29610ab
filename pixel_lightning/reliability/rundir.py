"""The run directory: checked writable before anything starts. A failed start deletes nothing: the files
it wrote (config.yaml, logs) are overwritten or continued by the next start."""

from __future__ import annotations

from pathlib import Path

from pixel_lightning.atomic import temp_path
from pixel_lightning.errors import RunDirError


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
