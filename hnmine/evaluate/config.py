"""``hnmine evaluate``'s options (:class:`EvaluateConfig`), each declared once; the embedding tables'
columns are the group ``hnmine run`` nests too (:class:`hnmine.options.EmbeddingColumns`).

Light: no heavy import, so the command line builds the options from it at ``--help`` time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hnmine.errors import InputError
from hnmine.options import EmbeddingColumns, build_config, cutoffs_option, group, option

__all__ = ["EvaluateConfig"]


@dataclass(frozen=True)
class EvaluateConfig:
    """Every option of ``hnmine evaluate``: the embeddings, the train and held-out positives, the cut-offs,
    a mined set to check and the window to suggest."""

    users: str = option(help="User embeddings (parquet file or directory: id, embedding).", path=True)
    items: str = option(help="Item embeddings (parquet file or directory: id, embedding).", path=True)
    train: str = option(help="Train positives (masked out of the ranking).", path=True)
    test: str = option(help="Held-out positives to score.", path=True)
    ks: tuple[int, ...] = cutoffs_option()
    hard_negatives: str | None = option(None, help="hard_neg_edge.parquet: report the share that are held-out "
                                                   "positives.", path=True)
    window_width: int | None = option(None, help="Also suggest a --rank-window of this many ranks: the hardest whose "
                                                 "share of held-out positives is at most --max-false-negative-rate.")
    max_false_negative_rate: float = option(0.007, help="With --window-width: the highest share of held-out "
                                                        "positives the window may hold.")
    columns: EmbeddingColumns = group(EmbeddingColumns)

    @classmethod
    def of(cls, **options: Any) -> EvaluateConfig:
        """A config from option values by option name (``k="10,20"``, ``id_column="user_id,adgroup_id"``)."""
        return build_config(cls, options)

    def validate(self) -> None:
        if self.window_width is not None and self.window_width < 1:
            raise InputError("--window-width must be at least 1")
