"""The project's one atomic file write: a temporary file in the same directory, fsynced, renamed over the
final name, the directory fsynced. A kill at any moment leaves the previous file or the new one."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def temp_path(final: Path) -> Path:  # unique, and next to ``final``: the rename is atomic
    return final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def atomic_write(final: str | Path, content: bytes | str | Callable[[IO[bytes]], Any]) -> Path:
    """Write ``content`` (bytes, text as UTF-8, or a function writing to the binary file) to ``final``."""
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
        with contextlib.suppress(OSError):  # makes the rename durable (where a directory can be opened)
            directory = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)
    return final
