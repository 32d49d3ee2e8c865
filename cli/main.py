"""The ``hnmine`` command line: one module per command, each registered on the app of :mod:`hnmine.cli.common`.

Installed as ``hnmine.cli`` (see pyproject.toml). Commands only parse options and call the library;
each imports the library modules it runs when it runs, so ``hnmine --help`` loads none of them.
"""

from __future__ import annotations

from . import blend, evaluate, export, mine, report, run, select, svd, train  # noqa: F401  (register the commands)
from .common import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
