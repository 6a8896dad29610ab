"""The run directory: checked writable before anything starts, and written by one process at a time
(:class:`RunLock`). A failed start deletes nothing: the next start overwrites or continues its files."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixel_lightning.errors import RunDirError, RunLockedError
from pixel_lightning.runfolder import RunFolder


def ensure_writable(run_dir: str | Path) -> None:
    """Create ``run_dir`` if needed and prove a file can be written in it; RunDirError otherwise."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        if e.filename and str(e.filename) != str(run_dir):
            reason += f": {e.filename}"
        raise RunDirError(
            f"cannot write to the run directory {run_dir} ({reason})",
            "choose another --out DIR that you can write to, or fix the folder's permissions",
        ) from e


HEARTBEAT_S = 10.0  # the holder touches the lock this often
STALE_AFTER_S = 60.0  # a lock of another host whose heartbeat did not move for this long is stale


def _process_start(pid: int) -> str | None:  # in clock ticks since boot (Linux ``/proc``); None: unknown
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read(path: Path) -> tuple[dict[str, Any], int] | None:
    """The lock's content and heartbeat (mtime, ns); None: none. Opened, not stat'ed: NFS revalidates then."""
    try:
        with path.open("rb") as f:
            raw, mtime = f.read(), os.fstat(f.fileno()).st_mtime_ns
    except OSError:  # FileNotFoundError: released
        return None
    try:
        return json.loads(raw or b"{}"), mtime
    except ValueError:
        return {}, mtime  # being written, or garbage: judged by its heartbeat alone


class RunLock:
    """``<out>/run.lock`` while a run trains, tests or samples there: made with ``O_EXCL`` (an NFS flock needs
    a lock manager; a lost node's is never released), its mtime the heartbeat. Stale (taken over, saying so):
    its pid on this host and pid namespace dead or reused, else its heartbeat still for ``STALE_AFTER_S``; one
    breaker (``run.lock.break``). tests/test_run_folder.py::test_a_second_process_on_one_folder_is_refused."""

    def __init__(self, run_dir: str | Path, report: Callable[[str], None] = print) -> None:
        self.path, self.report = RunFolder(run_dir).lock_file, report
        pid_ns = None  # containers sharing a host name differ in it
        with contextlib.suppress(OSError):
            pid_ns = os.readlink("/proc/self/ns/pid")
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "proc_start": _process_start(os.getpid()),
            "pid_ns": pid_ns,
            "token": uuid.uuid4().hex,
        }
        self._stop = threading.Event()

    def __enter__(self) -> RunLock:
        while not self._create(self.path):
            held = _read(self.path)
            stale = None if held is None else self._stale(*held)  # None: released meanwhile, retry
            if stale is False:
                h = held[0]
                raise RunLockedError(
                    f"the run directory {self.path.parent} is in use by another process: {h.get('host')} "
                    f"pid {h.get('pid')}, since {h.get('started')} (lock file {self.path})",
                    "wait for that run to end (or stop it), or choose another --out; if that process is "
                    f"surely gone (a lost node), delete {self.path}",
                )
            if stale:
                self._break(held)
        threading.Thread(target=self._beat, daemon=True, name="run-lock-heartbeat").start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        held = _read(self.path)
        if held is not None and held[0].get("token") == self.me["token"]:
            self.path.unlink(missing_ok=True)

    def _create(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.me, f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _stale(self, holder: dict[str, Any], mtime: int) -> bool | None:
        here = [holder.get(k) for k in ("host", "pid_ns")] == [self.me["host"], self.me["pid_ns"]]
        if here and isinstance(holder.get("pid"), int):  # dead, or its pid reused by another process
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass  # someone else's process: alive
            started, now = holder.get("proc_start"), _process_start(holder["pid"])
            return started is not None and now is not None and now != started
        deadline = time.monotonic() + STALE_AFTER_S  # another host (or unreadable): watch its heartbeat
        while time.monotonic() < deadline:
            now = _read(self.path)
            if now is None or now[0] != holder:
                return None  # released or replaced: try again
            if now[1] != mtime:
                return False  # its heartbeat moved: alive
            time.sleep(min(1.0, HEARTBEAT_S / 4))
        return True

    def _break(self, held: tuple[dict[str, Any], int]) -> None:
        """Remove the stale lock ``held`` unless another process does or it changed meanwhile."""
        guard = self.path.with_name(self.path.name + ".break")
        if not self._create(guard):
            with contextlib.suppress(FileNotFoundError):  # the other breaker may have finished meanwhile
                if time.time() - guard.stat().st_mtime > STALE_AFTER_S:  # a breaker killed mid-way
                    guard.unlink(missing_ok=True)
            time.sleep(0.2)
            return
        try:
            if _read(self.path) == held:
                h = held[0]
                self.report(
                    f"[lock] taking over the stale lock {self.path} of {h.get('host')} pid {h.get('pid')} "
                    f"(since {h.get('started')}): that process is gone"
                )
                self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            held = _read(self.path)
            if held is None or held[0].get("token") != self.me["token"]:
                return  # taken over (this host was judged lost): never touch another's lock
            with contextlib.suppress(OSError):
                os.utime(self.path)
