"""The errors a user can fix (:class:`PixelLightningError`, the data package's ``DataError``: one paragraph,
the problem then the fix; exit 2, no traceback unless --debug) and :func:`cli_errors`, the one place that
turns them into exit codes (docs/reliability.md). Anything else is a bug: exit 1 with its traceback."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import IO, NoReturn


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

    def __init__(self, signum: int, step: int, checkpoint: str | None, requeued: bool) -> None:
        self.exit_code = 128 + int(signum)
        what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"preempted by signal {int(signum)}"
        where = (
            f"checkpoint of step {step} written to {checkpoint}" if checkpoint else "no checkpoint written"
        )
        requeue = "the SLURM job was requeued and will resume from it"
        fix = requeue if requeued else "re-run the same command (same --out) to resume from it"
        super().__init__(f"{what} at training step {step}; {where}", fix)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Ours and the data package's (imported late: it is heavy)."""
    from pixel_lightning.data.errors import DataError

    return PixelLightningError, DataError


@contextlib.contextmanager
def cli_errors(
    debug: bool = False, stream: IO[str] | None = None, also: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Report user errors as one paragraph on stderr and exit non-zero; re-raise them when ``debug``. Bugs
    keep their traceback. ``also``: more user types in a command whose only checks raise them (``evaluate``:
    the model's input checks raise ValueError naming the image)."""
    try:
        yield
    except KeyboardInterrupt as error:
        _exit(error, stream)
    except SystemExit as error:
        if error.code == 1 and isinstance(error.__context__, KeyboardInterrupt):
            _exit(error.__context__, stream)  # Lightning's Trainer turns Ctrl-C into exit(1)
        raise
    except (*user_error_types(), *also) as error:
        if debug:
            raise
        _exit(error, stream)
    except Exception as error:
        cause = error.__cause__  # a user error a library re-raised as its own (datasets: ``raise X from e``)
        while cause is not None and not isinstance(cause, user_error_types()):
            cause = cause.__cause__
        if debug or cause is None:
            raise
        _exit(cause, stream)


def _exit(error: BaseException, stream: IO[str] | None) -> NoReturn:
    """Print ``error`` as one paragraph (a user error with the --debug hint) and exit with its status."""
    ctrl_c, stopped = isinstance(error, KeyboardInterrupt), isinstance(error, Preempted | NonFiniteError)
    message = " ".join(str(error).split()) or type(error).__name__
    if ctrl_c:
        message = "interrupted (Ctrl-C). Re-run the same command to resume from the last checkpoint"
    out = stream or sys.stderr
    print(f"{'stopped' if stopped else 'error'}: {message}", file=out, flush=True)
    if not (stopped or ctrl_c):
        print("(run with --debug for the traceback)", file=out, flush=True)
    raise SystemExit(130 if ctrl_c else getattr(error, "exit_code", 2))
