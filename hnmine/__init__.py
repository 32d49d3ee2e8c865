"""hnmine: offline hard-negative mining for two-tower retrieval models.

The package reads as the pipeline and the loop; data flows forward, and no stage imports a later one:

- :mod:`hnmine.io`: readers and validators of the inputs (embeddings, positives, item features), the
  sampler tables (parquet and GraphLearn text) and the one publisher (lock, staging, manifest,
  ``_SUCCESS``, atomic rename);
- :mod:`hnmine.mining`: retrieval (each user's rank window among its non-positives), selection (the
  strategies and filters), and :mod:`hnmine.mining.pipeline`, which runs them chunk by chunk;
- :mod:`hnmine.evaluate`: full-ranking metrics and the held-out rank rates a window is chosen on;
- :mod:`hnmine.training`: the built-in two-tower trainer;
- :mod:`hnmine.embed`: embeddings from a trained model (export), from SVD, or blended;
- :mod:`hnmine.loop`: train -> export -> mine -> retrain, round by round, resumable;
- :mod:`hnmine.report`: what was mined, as one HTML page.

Shared below them all: :mod:`hnmine.errors`, :mod:`hnmine.options` (the rank window and other
option types), :mod:`hnmine.progress` (the progress interface and the ``hnmine`` logger),
:mod:`hnmine.runtime`. Importing the package sets the thread runtimes' defaults first;
the names below load their modules on first use, so ``hnmine --help`` imports none of FAISS, numba
or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hnmine import runtime

runtime.configure()

if TYPE_CHECKING:
    from hnmine.errors import InputError
    from hnmine.io.embeddings import Embeddings, EmbeddingSource, read_embeddings, write_embeddings
    from hnmine.io.positives import index_positives, read_positives
    from hnmine.mining.config import MineConfig
    from hnmine.mining.pipeline import MineReport, mine, plan
    from hnmine.mining.retrieval import IndexSpec, ItemIndex, Window, retrieve_window
    from hnmine.mining.selection import SelectionConfig, select_hard_negatives
    from hnmine.options import RankWindow

__version__ = "0.1.0"

_EXPORTS = {
    "EmbeddingSource": "io.embeddings",
    "Embeddings": "io.embeddings",
    "IndexSpec": "mining.retrieval",
    "InputError": "errors",
    "ItemIndex": "mining.retrieval",
    "MineConfig": "mining.config",
    "MineReport": "mining.pipeline",
    "RankWindow": "options",
    "SelectionConfig": "mining.selection",
    "Window": "mining.retrieval",
    "index_positives": "io.positives",
    "mine": "mining.pipeline",
    "plan": "mining.pipeline",
    "read_embeddings": "io.embeddings",
    "read_positives": "io.positives",
    "retrieve_window": "mining.retrieval",
    "select_hard_negatives": "mining.selection",
    "write_embeddings": "io.embeddings",
}

__all__ = [
    "EmbeddingSource",
    "Embeddings",
    "IndexSpec",
    "InputError",
    "ItemIndex",
    "MineConfig",
    "MineReport",
    "RankWindow",
    "SelectionConfig",
    "Window",
    "index_positives",
    "mine",
    "plan",
    "read_embeddings",
    "read_positives",
    "retrieve_window",
    "select_hard_negatives",
    "write_embeddings",
]


def __getattr__(name: str) -> Any:
    """Load an exported name's module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hnmine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hnmine.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
