"""The CLI's errors: what is the user's to fix (one line, exit status 2) and a diverged run (exit status 3)."""

from __future__ import annotations

import errno


class UsageError(ValueError):
    """A mistake in what the user asked for; the CLI prints it as one line."""


#: Errors that are the user's to fix: one line, exit status 2 (``--debug`` shows the traceback).
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, TypeError)
#: Exit status of a run stopped by a non-finite loss.
DIVERGED = 3


def message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" while writing {exc.filename}" if exc.filename else ""
        return (f"no space left on the device{where}. Nothing half-written was kept; free some space and rerun the "
                "same command (a training run resumes from its last checkpoint).")
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
