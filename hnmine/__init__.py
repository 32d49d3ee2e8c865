"""hnmine: offline hard-negative mining for two-tower retrieval models.

The pipeline, one module per stage:

1. :mod:`hnmine.embeddings` / :mod:`hnmine.positives`: read and validate inputs;
2. :mod:`hnmine.retrieval`: FAISS top-K, each user's rank window among its non-positives;
3. :mod:`hnmine.selection`: strategies and filters that pick the hard negatives;
4. :mod:`hnmine.tables` / :mod:`hnmine.graphlearn`: the sampler tables, parquet and GraphLearn text;
5. :mod:`hnmine.publish`: atomic publication with manifest and ``_SUCCESS``;

and :mod:`hnmine.mine` runs them chunk by chunk.

Importing the package sets the thread runtimes' defaults first (:mod:`hnmine.runtime`); the names
below load their modules on first use, so ``hnmine --help`` imports none of FAISS, numba or torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from hnmine import runtime

runtime.configure()

if TYPE_CHECKING:
    from hnmine.embeddings import Embeddings, EmbeddingSource, read_embeddings, write_embeddings
    from hnmine.errors import InputError
    from hnmine.mine import MineConfig, MineReport, mine, plan
    from hnmine.positives import index_positives, read_positives
    from hnmine.retrieval import IndexSpec, ItemIndex, Window, retrieve_window
    from hnmine.selection import SelectionConfig, select_hard_negatives

__version__ = "0.1.0"

_EXPORTS = {
    "EmbeddingSource": "embeddings",
    "Embeddings": "embeddings",
    "IndexSpec": "retrieval",
    "InputError": "errors",
    "ItemIndex": "retrieval",
    "MineConfig": "mine",
    "MineReport": "mine",
    "SelectionConfig": "selection",
    "Window": "retrieval",
    "index_positives": "positives",
    "mine": "mine",
    "plan": "mine",
    "read_embeddings": "embeddings",
    "read_positives": "positives",
    "retrieve_window": "retrieval",
    "select_hard_negatives": "selection",
    "write_embeddings": "embeddings",
}

__all__ = [
    "EmbeddingSource",
    "Embeddings",
    "IndexSpec",
    "InputError",
    "ItemIndex",
    "MineConfig",
    "MineReport",
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


class _Package(types.ModuleType):
    """``hnmine.mine`` is the function, as with eager imports: importing the submodule ``hnmine.mine``
    binds it on the package, which would hide the function; that one binding is skipped."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "mine" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
