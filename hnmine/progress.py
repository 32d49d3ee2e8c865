"""One progress interface for every long stage, and the library's logger.

Stages report two things. Counted work (users mined, steps of an epoch) goes through a
:class:`Progress`: ``start(total, label)``, ``advance(n)``, ``stop()``; the CLI draws it as a rich bar
on a terminal and as periodic lines otherwise. Events (a round starts, an epoch ends with its loss
and validation metrics, a run resumes) are ``logging`` records on the ``hnmine`` logger, which an
application configures like any other; the CLI prints them as ``[HH:MM:SS] message`` on stderr.
"""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["NoProgress", "Progress", "logger"]

logger = logging.getLogger("hnmine")


class Progress(Protocol):
    """Counted work of one stage at a time; the library calls it, the CLI shows it."""

    def start(self, total: int, label: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def stop(self) -> None: ...


class NoProgress:
    """The library's default: nothing shown."""

    def start(self, total: int, label: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def stop(self) -> None:
        pass
