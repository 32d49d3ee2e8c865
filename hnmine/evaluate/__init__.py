"""Evaluation: Recall@K / NDCG@K by full ranking, the false-negative rate of a mined set, and the
held-out rank rates a window is chosen on (:mod:`hnmine.evaluate.ranking`).

:mod:`hnmine.evaluate.config` holds ``hnmine evaluate``'s options (:class:`EvaluateConfig`). Importing
this package imports neither: the names below load their module on first use, so the command line
builds its options without numpy, polars or FAISS.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hnmine.evaluate.config import EvaluateConfig
    from hnmine.evaluate.ranking import (
        EvalReport,
        choose_rank_window,
        evaluate,
        exact_index,
        false_negative_rate,
        heldout_rank_rates,
        holdout_split,
        ranked_items,
        ranking_metrics,
        run_evaluate,
        user_heldout_counts,
        window_false_negative_rates,
    )

__all__ = [
    "EvalReport", "EvaluateConfig", "choose_rank_window", "evaluate", "exact_index", "false_negative_rate",
    "heldout_rank_rates", "holdout_split", "ranked_items", "ranking_metrics", "run_evaluate", "user_heldout_counts",
    "window_false_negative_rates",
]


def __getattr__(name: str) -> Any:
    if name == "EvaluateConfig":
        return importlib.import_module("hnmine.evaluate.config").EvaluateConfig
    if name in __all__:
        return getattr(importlib.import_module("hnmine.evaluate.ranking"), name)
    raise AttributeError(f"module 'hnmine.evaluate' has no attribute {name!r}")
