"""Runtime set-up that must happen before FAISS, numba or torch load: thread waiting and the kernel cache.

:func:`configure` runs when the ``hnmine`` package is imported (``hnmine/__init__.py``), before any
module that loads those libraries, because their thread runtimes read the environment once, when
they start:

- ``OMP_WAIT_POLICY=PASSIVE``: an idle OpenMP thread sleeps instead of spinning. FAISS and torch each
  bring their own OpenMP runtime, and numba has its own pool; hnmine alternates between them many
  times a second, so with spinning (libgomp's default) the idle pool's threads burn the cores the
  busy pool needs: 3-5x slower on a shared machine (docs/performance.md, "Three spinning thread
  pools on shared cores").
- ``NUMBA_CACHE_DIR``: the compiled kernels are cached in a user cache directory
  (``$HNMINE_CACHE_DIR/numba``, else ``$XDG_CACHE_HOME/hnmine/numba``, else ``~/.cache/hnmine/numba``),
  so an install into a read-only location still compiles them once, not on every run.

A variable the user has set is never overridden. Imported before ``hnmine`` by someone else's code,
the runtimes have read their environment already; then set these variables yourself.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "configure"]

#: Variables :func:`configure` sets when the user has not; the values are hnmine's defaults.
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


def cache_dir() -> Path:
    """hnmine's cache directory: ``$HNMINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/hnmine``, else ``~/.cache/hnmine``."""
    explicit = os.environ.get("HNMINE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "hnmine"


def configure() -> None:
    """Set hnmine's runtime defaults in ``os.environ`` where the user has not (cheap: no imports)."""
    name, value = WAIT_POLICY
    os.environ.setdefault(name, value)
    if not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = str(cache_dir() / "numba")

