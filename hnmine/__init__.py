"""hnmine: offline hard-negative mining for two-tower retrieval models.

The pipeline, one module per stage:

1. :mod:`hnmine.embeddings` / :mod:`hnmine.positives`: read and validate inputs;
2. :mod:`hnmine.retrieval`: FAISS top-K, each user's rank window among its non-positives;
3. :mod:`hnmine.selection`: strategies and filters that pick the hard negatives;
4. :mod:`hnmine.tables` / :mod:`hnmine.graphlearn`: the sampler tables, parquet and GraphLearn text;
5. :mod:`hnmine.publish`: atomic publication with manifest and ``_SUCCESS``;

and :mod:`hnmine.mine` runs them chunk by chunk.
"""

from hnmine.embeddings import Embeddings, EmbeddingSource, read_embeddings, write_embeddings
from hnmine.errors import InputError
from hnmine.mine import MineConfig, MineReport, mine, plan
from hnmine.positives import index_positives, read_positives
from hnmine.retrieval import IndexSpec, ItemIndex, Window, retrieve_window
from hnmine.selection import SelectionConfig, select_hard_negatives

__version__ = "0.1.0"

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
