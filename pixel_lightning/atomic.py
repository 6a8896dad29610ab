"""The one atomic file write of the project: checkpoints, config.yaml, metrics.json, sample grids, data
conversions all go through :func:`atomic_write`.

The content is written to ``.<name>.tmp-<pid>-<rand>`` in the same directory, flushed, fsynced and renamed
over the final name (``os.replace`` is atomic on POSIX), then the directory is fsynced: a kill at any
moment leaves the previous file or the new one, never a half-written file under the final name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def temp_path(final: Path) -> Path:
    """A unique temporary name next to ``final`` (same directory, so the rename is atomic)."""
    return final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


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


def atomic_write(final: str | Path, content: bytes | str | Callable[[IO[bytes]], Any]) -> Path:
    """Write ``content`` (bytes, text as UTF-8, or a function writing to the open binary file) to
    ``final`` atomically; parent folders are created. Returns ``final`` as a Path."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return final
