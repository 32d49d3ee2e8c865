"""Errors that the CLI turns into a one-line message and an exit code (2; 75 for a held lock)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


def read_errors() -> tuple[type[BaseException], ...]:
    """What the parquet, CSV and numpy readers raise on bytes they cannot decode: corrupt pages behind
    an intact footer, truncated files, invalid UTF-8, numbers too large for their type. polars reports
    some of these as a Rust panic, which Python sees as a BaseException. (Imported here, not at the top,
    so that ``hnmine --help`` loads neither library.)"""
    import polars as pl
    import pyarrow as pa

    return (pa.ArrowException, pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError,
            EOFError, OverflowError)


@contextmanager
def reading(path: str | Path, what: str = "") -> Iterator[None]:
    """Turn a reader library's failure on ``path`` into an :class:`InputError` naming the file.

    ``what`` says what was being read (``"item nodes"``): ``<path>: cannot read item nodes (<reason>)``.
    """
    try:
        yield
    except InputError:
        raise
    except BaseException as exc:
        if not isinstance(exc, read_errors()):
            raise
        lines = str(exc).strip().splitlines()
        reason = (lines[0] if lines else type(exc).__name__)[:200]
        raise InputError(f"{path}: cannot read{' ' + what if what else ''} ({reason})") from None
