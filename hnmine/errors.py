"""Errors that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad input: the message names the file, row or column and what is wrong.

    Raised by every reader and validator; the CLI prints ``hnmine: error: <message>``
    on one line and exits with code 2, leaving no output behind.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
