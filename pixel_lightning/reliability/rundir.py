"""The run directory: checked writable before anything starts, and written by one process at a time
(:class:`RunLock`). A failed start deletes nothing: the next start overwrites or continues its files."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import OwnerRecord, SoftFileLease, Timeout

from pixel_lightning.errors import RunDirError, RunLockedError
from pixel_lightning.runfolder import RunFolder


def ensure_writable(folder: str | Path, name: str = "the run directory") -> Path:
    """Create ``folder`` if needed and prove a file can be written in it (the run directory, the ``--out`` of
    ``sample`` and ``complete``); RunDirError naming it as ``name`` otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        reason = "it is a file" if folder.is_file() else e.strerror or type(e).__name__
        if e.filename and str(e.filename) != str(folder):
            reason += f": {e.filename}"
        raise RunDirError(
            f"cannot write to {name} {folder} ({reason})",
            "choose another --out that you can write to, or fix the folder's permissions",
        ) from e
    return folder


HEARTBEAT_S = 10.0  # the holder refreshes the lock this often
STALE_AFTER_S = 60.0  # a lock of another host whose heartbeat did not move for this long is stale


class RunLock:
    """``<out>/run.lock`` while a run trains, tests or samples there: filelock's ``SoftFileLease``, a file
    made with ``O_EXCL`` (an NFS flock needs a lock manager; a lost node's is never released) naming its
    holder's host, pid and process start, refreshed every ``HEARTBEAT_S``. filelock takes over the lock of a
    dead (or reused) pid of this host at once. A live process of this host is refused at once; another host's
    lock is taken over when its heartbeat stays still for ``STALE_AFTER_S`` (filelock alone would take over a
    stopped process of this host too: test_run_folder.py::test_a_second_process_on_one_folder_is_refused)."""

    def __init__(self, run_dir: str | Path, report: Callable[[str], None] = print) -> None:
        self.path, self.report = RunFolder(run_dir).lock_file, report
        self.lease = SoftFileLease(
            self.path, lease_duration=STALE_AFTER_S, heartbeat_interval=HEARTBEAT_S, poll_interval=0.2
        )

    def __enter__(self) -> RunLock:
        found = self.lease.owner  # the lock's holder as we came (None: free)
        while not self._acquired():
            holder = self.lease.owner
            if holder is not None and _alive_here(holder.hostname, holder.pid):
                raise self._locked(holder)
            if self._outlived(holder):
                break
            if self.path.exists():  # alive (else released meanwhile: try again)
                raise self._locked(self.lease.owner or holder)
        if found is not None:
            where = f"{self.path} of {found.hostname} pid {found.pid}"
            self.report(f"[lock] taking over the stale lock {where}: that process is gone")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lease.release()

    def _acquired(self, timeout: float = 0, cancel: Callable[[], bool] | None = None) -> bool:
        try:
            self.lease.acquire(timeout, blocking=timeout > 0, cancel_check=cancel)
        except Timeout:
            return False
        return True

    def _outlived(self, holder: OwnerRecord | None) -> bool:
        """Watch the heartbeat of ``holder`` (another host's, or a lock being written): True when it stayed
        still for ``STALE_AFTER_S`` and the lock is ours, False as soon as it moves."""
        beat = self._heartbeat(holder)
        return self._acquired(STALE_AFTER_S + HEARTBEAT_S, lambda: self._heartbeat(holder) != beat)

    def _heartbeat(self, holder: OwnerRecord | None) -> int | None:
        """The lock file's mtime (ns) while ``holder`` holds it; None: released or taken over."""
        with contextlib.suppress(OSError):
            mtime = self.path.stat().st_mtime_ns
            if self.lease.owner == holder:
                return mtime
        return None

    def _locked(self, holder: OwnerRecord | None) -> RunLockedError:
        who = f"{holder.hostname} pid {holder.pid}" if holder is not None else "unknown (unreadable lock)"
        return RunLockedError(
            f"the run directory {self.path.parent} is in use by another process: {who} (lock {self.path})",
            "wait for that run to end (or stop it), or choose another --out; if that process is surely gone "
            f"(a lost node), delete {self.path}",
        )


def _alive_here(hostname: str, pid: int) -> bool:
    """Is ``pid`` a live process of this host (filelock writes ``<host>?pidns-<n>`` in a container)?"""
    if hostname.partition("?")[0] != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    return True
