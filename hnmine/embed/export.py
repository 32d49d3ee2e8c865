"""Export a trained model's user and item vectors in the input form of ``hnmine mine``.

Vectors are unit length, so the model's cosine score is their inner product: mining with
``--metric ip`` (the default) ranks exactly as the model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hnmine.io.embeddings import write_embedding_dir
from hnmine.training.model import load_model, model_vectors

__all__ = ["ExportReport", "export_embeddings"]


@dataclass
class ExportReport:
    user_path: str
    item_path: str
    users: int
    items: int
    dim: int


def export_embeddings(model_path: str | Path, out_dir: str | Path) -> ExportReport:
    """Write ``user.parquet`` and ``item.parquet`` (columns id, embedding) into ``out_dir``."""
    loaded = load_model(model_path)
    users, items = model_vectors(loaded)
    user_path, item_path = write_embedding_dir(out_dir, loaded.user_ids, users, loaded.item_ids, items)
    return ExportReport(str(user_path), str(item_path), len(users), len(items), loaded.dim)
