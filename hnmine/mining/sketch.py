"""What ``hnmine report`` needs of the rank window, recorded while mining.

The published tables hold only the chosen negatives; the window they were drawn from and the
users' positive scores are gone once mining ends, and recomputing them means a second retrieval.
:class:`WindowSketch` keeps a bounded sample of users while the chunks stream by: the ``sample``
users with the smallest per-user hash (so the sample does not depend on chunking or threads), each
with its window's scores at up to ``columns`` evenly spaced ranks and its positives' median and
minimum score. :meth:`WindowSketch.summary` turns that into the few hundred numbers that
``manifest.json`` records under ``summary.window``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from hnmine.mining.retrieval import Window

__all__ = ["WindowSketch"]

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 201)
MARGIN_BINS = 40


class WindowSketch:
    """A bounded, chunking-independent sample of users' windows and positive scores."""

    def __init__(self, lo: int, width: int, sample: int = 4096, columns: int = 64) -> None:
        self.lo = lo
        self.width = width
        self.sample = sample
        self.cols = np.unique(np.linspace(0, width - 1, min(columns, width)).round().astype(np.int64))
        self.keys = np.zeros(0, dtype=np.uint64)
        self.ids: list[Any] = []
        self.scores = np.zeros((0, len(self.cols)), dtype=np.float32)
        self.refs = np.zeros((0, 2), dtype=np.float64)  # median, min of the user's positives' scores

    def add(self, window: Window, user_ids: np.ndarray, keys: np.ndarray, queries: np.ndarray,
            item_vectors: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray) -> None:
        """Offer one chunk's users; keeps the ``sample`` smallest keys seen so far."""
        if self.sample <= 0 or not len(keys):
            return
        threshold = np.sort(self.keys)[self.sample - 1] if len(self.keys) >= self.sample else None
        rows = np.flatnonzero(keys < threshold) if threshold is not None else np.arange(len(keys))
        if not len(rows):
            return
        rows = rows[np.argsort(keys[rows], kind="stable")[: self.sample]]
        scores = window.scores[rows][:, self.cols].astype(np.float32)
        scores[~np.isfinite(scores)] = np.nan
        refs = _positive_refs(rows, queries, item_vectors, indptr, pos_rows)
        keys_all = np.concatenate([self.keys, keys[rows]])
        keep = np.argsort(keys_all, kind="stable")[: self.sample]
        ids_all = [*self.ids, *user_ids[rows].tolist()]
        self.keys = keys_all[keep]
        self.ids = [ids_all[i] for i in keep]
        self.scores = np.concatenate([self.scores, scores])[keep]
        self.refs = np.concatenate([self.refs, refs])[keep]

    def merge(self, other: WindowSketch) -> None:
        """Take in another chunk's sketch (offered after this one's chunks): the same sample as if its
        users had been added here, whatever the engine or worker that sketched them."""
        if not other.ids:
            return
        keys_all = np.concatenate([self.keys, other.keys])
        keep = np.argsort(keys_all, kind="stable")[: self.sample]
        ids_all = [*self.ids, *other.ids]
        self.keys = keys_all[keep]
        self.ids = [ids_all[i] for i in keep]
        self.scores = np.concatenate([self.scores, other.scores])[keep]
        self.refs = np.concatenate([self.refs, other.refs])[keep]

    def summary(self, hard_neg_edge: Path | None) -> dict[str, Any]:
        """Window score quantiles and score by rank; margins of the sampled users' published negatives.

        ``hard_neg_edge`` is the published parquet table (None for a text-only output: no margins),
        so the margins are those of what was published, after any ``--max-item-negatives`` cap.
        """
        if not self.ids:
            return {}
        values = self.scores[np.isfinite(self.scores)]
        out: dict[str, Any] = {
            "sample_users": len(self.ids),
            "ranks": (self.cols + self.lo).tolist(),
            "score_by_rank": [_num(v) for v in _nanmean(self.scores)],
            "score_quantiles": {"levels": QUANTILE_LEVELS.round(4).tolist(),
                                "values": np.quantile(values, QUANTILE_LEVELS).tolist() if values.size else []},
        }
        has_ref = np.isfinite(self.refs[:, 0])
        if hard_neg_edge is None or not hard_neg_edge.exists() or not has_ref.any():
            return out
        ids = pl.Series("user_id", self.ids)
        refs = pl.DataFrame({"user_id": ids, "ref_median": self.refs[:, 0], "ref_min": self.refs[:, 1]})
        scan = pl.scan_parquet(hard_neg_edge)
        id_type = scan.collect_schema()["user_id"]
        refs = refs.with_columns(pl.col("user_id").cast(id_type))
        negatives = (
            scan.select("user_id", "score").filter(pl.col("user_id").is_in(refs["user_id"].implode()))
            .collect().join(refs, on="user_id").filter(pl.col("ref_median").is_not_nan())
        )
        window_margins = (self.scores[has_ref] - self.refs[has_ref, :1]).ravel()
        window_margins = window_margins[np.isfinite(window_margins)]
        neg_margins = (negatives["score"].cast(pl.Float64) - negatives["ref_median"]).to_numpy()
        both = np.concatenate([window_margins, neg_margins])
        if not both.size:
            return out
        lo, hi = (float(v) for v in np.quantile(both, [0.001, 0.999]))
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, MARGIN_BINS + 1)

        def shares(x: np.ndarray) -> list[float]:
            counts = np.histogram(np.clip(x, edges[0], edges[-1]), edges)[0]
            return (counts / max(counts.sum(), 1)).tolist()

        out["margin"] = {
            "reference": "median score of the user's positives",
            "edges": edges.tolist(),
            "window": shares(window_margins),
            "negatives": shares(neg_margins),
            "negative_rows": len(neg_margins),
            "negatives_median": _num(np.median(neg_margins)) if neg_margins.size else None,
            "window_median": _num(np.median(window_margins)) if window_margins.size else None,
            "share_above_median_positive": float((neg_margins > 0).mean()) if neg_margins.size else None,
            "share_above_min_positive": float(
                (negatives["score"].cast(pl.Float64) > negatives["ref_min"]).mean()) if neg_margins.size else None,
        }
        return out


def _positive_refs(rows: np.ndarray, queries: np.ndarray, item_vectors: np.ndarray, indptr: np.ndarray,
                   pos_rows: np.ndarray) -> np.ndarray:
    """(median, min) of each user's positives' scores (float32, as ``np.median`` gives them; NaN for a
    user without positives), all users' positives at once: one pass, no loop over users."""
    counts = indptr[rows + 1] - indptr[rows]
    starts = np.cumsum(counts) - counts
    group = np.repeat(np.arange(len(rows)), counts)
    pos = pos_rows[np.arange(int(counts.sum())) - starts[group] + indptr[rows][group]]
    scores = np.einsum("ij,ij->i", item_vectors[pos], queries[rows][group])
    ordered = scores[np.lexsort((scores, group))]
    refs = np.full((len(rows), 2), np.nan)
    has = counts > 0
    first, below, above = starts[has], (counts[has] - 1) // 2, counts[has] // 2
    refs[has, 0] = (ordered[first + below] + ordered[first + above]) / np.float32(2)
    refs[has, 1] = ordered[first]
    return refs


def _nanmean(a: np.ndarray) -> np.ndarray:
    counts = np.isfinite(a).sum(axis=0)
    sums = np.where(np.isfinite(a), a, 0.0).sum(axis=0, dtype=np.float64)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _num(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)
