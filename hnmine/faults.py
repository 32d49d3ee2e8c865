"""Fault points: a test hook that kills the process at a named place, to prove crash safety.

``point("mine.select")`` does nothing unless the environment variable ``HNMINE_FAULT`` names that
point when the module is first imported; then the process sends itself SIGKILL (no cleanup, no
``finally``, exactly like ``kill -9`` or the OOM killer). ``HNMINE_FAULT=mine.select@3`` kills at the
third hit of the point. The fault-injection tests (tests/test_faults.py) run real ``hnmine``
processes with it; it is not meant for anything else.
"""

from __future__ import annotations

import os
import signal

__all__ = ["point"]


def _parse(value: str) -> tuple[str, int]:
    name, _, nth = value.partition("@")
    return name.strip(), int(nth) if nth.strip() else 1


_TARGET, _NTH = _parse(os.environ["HNMINE_FAULT"]) if os.environ.get("HNMINE_FAULT") else ("", 0)
_hits = 0


def point(name: str) -> None:
    """Kill this process here if ``HNMINE_FAULT`` names ``name`` (at its Nth hit); otherwise nothing."""
    global _hits
    if name != _TARGET:
        return
    _hits += 1
    if _hits >= _NTH:
        os.kill(os.getpid(), signal.SIGKILL)
