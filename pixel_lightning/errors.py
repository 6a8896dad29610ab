"""The exceptions pixel-lightning reports to users, and the one place that turns them into exit codes.

Every error a user can fix is a :class:`PixelLightningError` (or the data package's ``DataError``): its
message is one paragraph that names the problem and the fix. Anything else (a ``ValueError`` from inside
the code included) is a bug: exit 1 with its traceback. ``recipes/run.py`` wraps its ``main`` in
:func:`cli_errors`, which prints a user error's paragraph and exits 2 without a traceback (``--debug``
shows it).

Exit codes::

    0    finished (or already finished: its result is printed)
    1    an internal error (a bug): the traceback is printed
    2    a user error: bad recipe, override, value, data, run directory or checkpoint
    3    training stopped by a guard (non-finite loss or gradient too often)
    130  interrupted by Ctrl-C (during training: after writing a checkpoint of the current step, as for
         SIGTERM; a second Ctrl-C stops at once, from the last checkpoint written)
    143  preempted by SIGTERM, 138 by SIGUSR1 (128 + signal): a checkpoint of the current step was written,
         re-run the same command to resume
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import IO, NoReturn

RESUME = "re-run the same command (same --out) to resume from it"


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
    """A file or value the user passed to a command (images, arrays, masks, --batch-size) that cannot be
    read as asked: the message names the file, what it is, what was expected, and the fix."""


class RunDirError(PixelLightningError):
    """The run directory cannot be created or written."""


class RunLockedError(RunDirError):
    """Another live process is writing the run directory (reliability/rundir.py, RunLock)."""


class OtherRunError(RunDirError):
    """The run directory holds another run: settings that define a run differ (RunFolder.check_same_run)."""


class NonFiniteError(PixelLightningError):
    """Training produced a non-finite loss or gradient more often than the guard allows."""

    exit_code = 3


class Preempted(PixelLightningError):
    """The run received SIGTERM/SIGUSR1, wrote a checkpoint of its current step and stopped."""

    def __init__(self, signum: int, step: int, checkpoint: str | None, requeued: bool) -> None:
        self.signum, self.step, self.checkpoint, self.requeued = signum, step, checkpoint, requeued
        self.exit_code = 128 + int(signum)
        where = (
            f"checkpoint of step {step} written to {checkpoint}" if checkpoint else "no checkpoint written"
        )
        if int(signum) == signal.SIGINT:
            super().__init__(f"interrupted (Ctrl-C) at training step {step}; {where}", RESUME)
            return
        fix = "the SLURM job was requeued and will resume from it" if requeued else RESUME
        super().__init__(f"preempted by signal {int(signum)} at training step {step}; {where}", fix)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types reported as user errors: ours and the data package's."""
    types: list[type[BaseException]] = [PixelLightningError]
    with contextlib.suppress(ImportError):  # optional: the data package may be absent in a slim install
        from pixel_lightning.data.errors import DataError

        types.append(DataError)
    return tuple(types)


def one_paragraph(error: BaseException) -> str:
    """The error's message on one line (no traceback)."""
    return " ".join(str(error).split()) or type(error).__name__


def exit_code(error: BaseException) -> int:
    """The process exit status that reports ``error``."""
    if isinstance(error, KeyboardInterrupt):
        return 130
    return int(getattr(error, "exit_code", 2))


@contextlib.contextmanager
def cli_errors(
    debug: bool = False, stream: IO[str] | None = None, also: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Report user errors as one paragraph on stderr and exit non-zero; re-raise them when ``debug``.

    Unexpected errors (bugs) keep their traceback: they are not the user's to fix. ``also``: more types
    that are the user's in a command whose only checks raise them (``pixel-lightning evaluate``: the
    model's input checks raise ValueError naming the image).
    """
    interrupted = "interrupted (Ctrl-C). Re-run the same command to resume from the last checkpoint"
    try:
        yield
    except KeyboardInterrupt as error:
        _exit(error, interrupted, stream)
    except SystemExit as error:
        if error.code == 1 and isinstance(error.__context__, KeyboardInterrupt):
            _exit(error.__context__, interrupted, stream)  # Lightning's Trainer turns Ctrl-C into exit(1)
        raise
    except (*user_error_types(), *also) as error:
        if debug:
            raise
        _exit(error, one_paragraph(error), stream)
    except Exception as error:
        cause = wrapped_user_error(error)
        if debug or cause is None:
            raise
        _exit(cause, one_paragraph(cause), stream)


def wrapped_user_error(error: BaseException) -> BaseException | None:
    """A user error that a library re-raised inside its own exception (``raise Other(...) from error``,
    e.g. ``datasets`` wraps errors of a dataset generator): followed through explicit causes only."""
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, user_error_types()):
            return cause
        cause = cause.__cause__
    return None


def _exit(error: BaseException, message: str, stream: IO[str] | None) -> NoReturn:
    out = stream if stream is not None else sys.stderr
    label = "stopped" if isinstance(error, Preempted | NonFiniteError) else "error"
    print(f"{label}: {message}", file=out, flush=True)
    if not isinstance(error, Preempted | NonFiniteError | KeyboardInterrupt):
        print("(run with --debug for the traceback)", file=out, flush=True)
    raise SystemExit(exit_code(error))
