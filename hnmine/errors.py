"""Errors that the CLI turns into a one-line message and an exit code (2; 75 for a held lock)."""

from __future__ import annotations


class InputError(Exception):
    """Bad input: the message names the file, row or column and what is wrong.

    Raised by every reader and validator; the CLI prints ``hnmine: error: <message>``
    on one line and exits with code 2, leaving no output behind.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class OutputLockedError(InputError):
    """Another hnmine process is writing the same output (it holds the lock): try again later.

    Exit code 75 (EX_TEMPFAIL of sysexits.h), so a cron wrapper can tell "still running" from bad input.
    """

    exit_code = 75
