"""The errors a user can fix (:class:`PixelLightningError`, the data package's ``DataError``: one paragraph,
the problem then the fix; exit 2, no traceback unless --debug) and :func:`cli_errors`, the one place that
turns them into exit codes (docs/reliability.md). Anything else is a bug: exit 1 with its traceback."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import IO


class PixelLightningError(Exception):
    """A problem the user can fix. ``str(error)`` is one paragraph: the problem, then the fix."""

    exit_code: int = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem, self.fix = problem.rstrip(". "), fix
        super().__init__(f"{self.problem}. {fix}" if fix else self.problem)


class ConfigError(PixelLightningError, ValueError):
    """A recipe, override or config value that is wrong (unknown key, wrong type, impossible value)."""


class CheckpointError(PixelLightningError):
    """A checkpoint that cannot be used: corrupt, truncated, non-finite, or of another model."""


class InputError(PixelLightningError, ValueError):
    """A file or value given to a command (images, arrays, masks, --batch-size) that cannot be read."""


class RunDirError(PixelLightningError):
    """The run directory cannot be created or written."""


class RunLockedError(RunDirError):
    """Another live process is writing the run directory (reliability.RunLock)."""


class OtherRunError(RunDirError):
    """The run directory holds another run (RunFolder.check_same_run)."""


class NonFiniteError(PixelLightningError):
    """Training produced a non-finite loss or gradient more often than the guard allows."""

    exit_code = 3


class Preempted(PixelLightningError):
    """The run received SIGTERM/SIGUSR1, wrote a checkpoint of its current step and stopped."""

    def __init__(self, signum: int, step: int, path: str | None, requeued: bool) -> None:
        self.exit_code = 128 + int(signum)
        what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"preempted by signal {int(signum)}"
        where = f"checkpoint of step {step} written to {path}" if path else "no checkpoint written"
        requeue = "the SLURM job was requeued and will resume from it"
        fix = requeue if requeued else "re-run the same command (same --out) to resume from it"
        super().__init__(f"{what} at training step {step}; {where}", fix)


def one_line(error: BaseException | str, limit: int | None = 200) -> str:
    """An error's text on one line (whitespace runs as one space), at most ``limit`` characters."""
    return " ".join(str(error).split())[:limit]


@contextlib.contextmanager
def cli_errors(debug: bool = False, stream: IO[str] | None = None) -> Iterator[None]:
    """Report a user error (ours, the data package's, also one a library re-raised as its own: datasets'
    ``raise X from e``) as one paragraph on stderr and exit with its status; ``debug`` re-raises it. Bugs
    keep their traceback. Ctrl-C: exit 130."""
    try:
        yield
        return
    except KeyboardInterrupt as error:
        reported: BaseException = error
    except SystemExit as error:
        if error.code != 1 or not isinstance(error.__context__, KeyboardInterrupt):
            raise
        reported = error.__context__  # Lightning's Trainer turns Ctrl-C into exit(1)
    except Exception as error:
        from pixel_lightning.data.errors import DataError  # late: the data package is heavy

        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, PixelLightningError | DataError):
            cause = cause.__cause__
        if debug or cause is None:
            raise
        reported = cause
    ctrl_c = isinstance(reported, KeyboardInterrupt)
    stopped = isinstance(reported, Preempted | NonFiniteError)
    message = one_line(reported, None) or type(reported).__name__
    if ctrl_c:
        message = "interrupted (Ctrl-C). Re-run the same command to resume from the last checkpoint"
    print(f"{'stopped' if stopped else 'error'}: {message}", file=stream or sys.stderr, flush=True)
    if not (stopped or ctrl_c):
        print("(run with --debug for the traceback)", file=stream or sys.stderr, flush=True)
    raise SystemExit(130 if ctrl_c else getattr(reported, "exit_code", 2))
