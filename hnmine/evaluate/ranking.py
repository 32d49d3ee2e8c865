"""Evaluation: Recall@K / NDCG@K by full ranking, and the false-negative rate of a mined set.

:func:`run_evaluate` is ``hnmine evaluate`` (:class:`hnmine.evaluate.config.EvaluateConfig`).

Protocol (the one published Gowalla numbers use): every item is ranked for every user, the user's
train items masked out; Recall@K = hits in the top K / the user's held-out items; NDCG@K with
binary gains and IDCG over min(held-out, K); both averaged over users that have held-out items.
A user with held-out items but no embedding counts as all misses (and is reported), so a model
cannot score better by dropping users.

:func:`holdout_split` carves a validation set out of the training positives, so rank windows and
weights can be tuned without touching the test set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from hnmine.errors import InputError, reading
from hnmine.evaluate.config import EvaluateConfig
from hnmine.io.embeddings import read_embedding_pair, read_embeddings
from hnmine.io.positives import Positives, csr_rows, index_positives, read_positives
from hnmine.io.storage import local_copy
from hnmine.mining.retrieval import IndexSpec, ItemIndex, retrieve_window

__all__ = [
    "EvalReport", "choose_rank_window", "evaluate", "false_negative_rate", "heldout_rank_rates", "holdout_split",
    "ranking_metrics", "run_evaluate", "user_heldout_counts", "window_false_negative_rates",
]


@dataclass
class EvalReport:
    users: int = 0
    users_without_embedding: int = 0
    heldout_items_without_embedding: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    hard_negatives: dict[str, Any] = field(default_factory=dict)
    window: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranked_items(index: ItemIndex, user_vecs: np.ndarray, rows: np.ndarray, train_indptr: np.ndarray,
                 train_items: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k) item rows: each user's ``k`` best items among its non-positives, best first.

    The ranking core every stage shares: the miner's own :func:`~hnmine.mining.retrieval.retrieve_window`
    (exact; ties by item row; canonical scores), with the user's training items as its positives, so
    a rank here is the rank ``hnmine mine`` gives. -1 pads a user with fewer than ``k`` candidates.
    """
    indptr, items = csr_rows(train_indptr, train_items, rows)
    queries = np.ascontiguousarray(user_vecs[rows], dtype=np.float32)
    return retrieve_window(index, queries, indptr, items, 1, k).items


def exact_index(item_vecs: np.ndarray, queries: int) -> ItemIndex:
    """The exact index the evaluation ranks with (the faster exact engine for this CPU and job size)."""
    return ItemIndex(np.ascontiguousarray(item_vecs, dtype=np.float32), IndexSpec(kind="auto"), queries=queries)


def ranking_metrics(
    user_vecs: np.ndarray,
    item_vecs: np.ndarray,
    train_indptr: np.ndarray,
    train_items: np.ndarray,
    test_indptr: np.ndarray,
    test_items: np.ndarray,
    test_counts: np.ndarray | None = None,
    ks: tuple[int, ...] = (20, 50),
    chunk: int = 2048,
) -> dict[str, float]:
    """Mean Recall@K and NDCG@K over users with held-out items (CSR inputs over user rows).

    ``test_counts`` (per user, default the CSR counts) is the recall denominator: it may include
    held-out items the model has no vector for, which can never be hit.
    """
    n_items = len(item_vecs)
    csr_counts = np.diff(test_indptr)
    counts = csr_counts if test_counts is None else np.asarray(test_counts)
    evaluated = np.flatnonzero(counts > 0)
    kmax = min(max(ks), n_items)
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg")}
    index = exact_index(item_vecs, len(evaluated))
    for start in range(0, len(evaluated), chunk):
        rows = evaluated[start : start + chunk]
        top = ranked_items(index, user_vecs, rows, train_indptr, train_items, kmax)
        heldout = np.zeros((len(rows), n_items + 1), dtype=bool)  # the last column: the -1 padding
        h_rows = np.repeat(np.arange(len(rows)), csr_counts[rows])
        h_items = np.concatenate([test_items[test_indptr[r] : test_indptr[r + 1]] for r in rows])
        heldout[h_rows, h_items.astype(np.int64)] = True
        hits = np.take_along_axis(heldout, top, axis=1).astype(np.float64)
        n_test = counts[rows].astype(np.float64)
        for k in ks:
            kk = min(k, kmax)
            sums[f"recall@{k}"] += float((hits[:, :kk].sum(1) / n_test).sum())
            dcg = (hits[:, :kk] * discounts[:kk]).sum(1)
            idcg = ideal[np.minimum(n_test, kk).astype(np.int64)]
            sums[f"ndcg@{k}"] += float((dcg / idcg).sum())
    total = max(len(evaluated), 1)
    return {key: value / total for key, value in sums.items()}


def user_heldout_counts(table: pl.DataFrame, user_ids: np.ndarray) -> np.ndarray:
    """Distinct held-out items per embedding user row (including items without a vector)."""
    frame = pl.DataFrame({"user_id": user_ids.tolist() if user_ids.dtype == object else user_ids,
                          "row": np.arange(len(user_ids))})
    per_user = table.with_columns(pl.col("user_id").cast(frame.schema["user_id"], strict=False)).group_by(
        "user_id").agg(pl.col("item_id").n_unique().alias("n")).join(frame, on="user_id")
    counts = np.zeros(len(user_ids), dtype=np.int64)
    counts[per_user["row"].to_numpy()] = per_user["n"].to_numpy()
    return counts


def false_negative_rate(hard_negatives: str | Path, heldout: Positives | pl.DataFrame) -> dict[str, Any]:
    """Share of mined hard negatives that are held-out positives of that user (and by rank decile)."""
    with local_copy(hard_negatives, "hard negatives") as path:
        if not path.exists():
            raise InputError(f"{path}: file not found")
        with reading(path, "hard negatives"):
            edges = pl.read_parquet(path, columns=["user_id", "item_id"])
    table = heldout.table if isinstance(heldout, Positives) else heldout
    if edges.height == 0:
        return {"rows": 0, "heldout_positives": 0, "rate": None}
    keyed = table.select("user_id", "item_id").unique().with_columns(
        pl.col("user_id").cast(edges.schema["user_id"], strict=False),
        pl.col("item_id").cast(edges.schema["item_id"], strict=False),
        pl.lit(True).alias("heldout"),
    )
    joined = edges.join(keyed, on=["user_id", "item_id"], how="left").with_columns(pl.col("heldout").fill_null(False))
    hits = int(joined["heldout"].sum())
    return {"rows": edges.height, "heldout_positives": hits, "rate": hits / edges.height}


def evaluate(
    users: str | Path,
    items: str | Path,
    train: str | Path | Positives,
    test: str | Path | Positives,
    ks: tuple[int, ...] = (20, 50),
    hard_negatives: str | Path | None = None,
    window_width: int | None = None,
    max_false_negative_rate: float = 0.007,
    id_column: str = "id",
    vector_column: str = "embedding",
) -> EvalReport:
    """Recall/NDCG@K of exported embeddings on ``test``, train items masked; FN rate of a mined set.

    With ``window_width``: also the hardest rank window of that many ranks whose share of held-out
    positives is at most ``max_false_negative_rate`` (what ``hnmine run --rank-window auto`` picks).
    ``id_column`` and ``vector_column`` name the embedding tables' columns (``USER,ITEM`` when they differ).
    """
    if not ks or min(ks) < 1:
        raise InputError("--k values must be positive integers")
    if not 0 <= max_false_negative_rate <= 1:
        raise InputError(f"--max-false-negative-rate must be between 0 and 1, not {max_false_negative_rate}")
    user_emb, item_emb = read_embedding_pair(users, items, id_column, vector_column)
    train_pos = train if isinstance(train, Positives) else read_positives(train)
    test_pos = test if isinstance(test, Positives) else read_positives(test)
    train_index = index_positives(train_pos, user_emb.ids, item_emb.ids)
    test_index = index_positives(test_pos, user_emb.ids, item_emb.ids)
    counts = user_heldout_counts(test_pos.table, user_emb.ids)
    metrics = ranking_metrics(user_emb.vectors, item_emb.vectors, train_index.indptr, train_index.item_rows,
                              test_index.indptr, test_index.item_rows, counts, ks)
    test_users = test_pos.table["user_id"].n_unique()
    evaluated = int((counts > 0).sum())
    missing = test_users - evaluated
    if missing:  # users without a vector: all misses
        scale = evaluated / test_users
        metrics = {k: v * scale for k, v in metrics.items()}
    report = EvalReport(users=test_users, users_without_embedding=missing,
                        heldout_items_without_embedding=test_index.unknown_item_rows, metrics=metrics)
    if hard_negatives is not None:
        report.hard_negatives = false_negative_rate(hard_negatives, test_pos)
    if window_width is not None:
        rates = window_false_negative_rates(users, items, train_pos, test_pos)
        lo, hi, rate, met = choose_rank_window(rates, window_width, max_false_negative_rate)
        report.window = {"rank_window": f"{lo}:{hi}", "false_negative_rate": rate, "met": met,
                         "max_false_negative_rate": max_false_negative_rate}
    return report


def run_evaluate(config: EvaluateConfig) -> EvalReport:
    """``hnmine evaluate``: :func:`evaluate` with the options of ``config``."""
    config.validate()
    return evaluate(config.users, config.items, config.train, config.test, config.ks, config.hard_negatives,
                    config.window_width, config.max_false_negative_rate, id_column=config.columns.id_column,
                    vector_column=config.columns.vector_column)


def holdout_split(positives: Positives, fraction: float, seed: int = 0) -> tuple[Positives, Positives]:
    """Hold out ``floor(fraction * n)`` random positives of each user with at least 2 (seeded)."""
    if not 0 < fraction < 1:
        raise InputError("--valid-fraction must be between 0 and 1")
    table = positives.table
    rng = np.random.default_rng(seed)
    keyed = table.with_columns(pl.Series("key", rng.random(table.height))).with_columns(
        pl.col("key").rank("ordinal").over("user_id").alias("slot"),
        pl.len().over("user_id").alias("n"),
    )
    held = (pl.col("slot") <= (pl.col("n") * fraction).floor()) & (pl.col("n") >= 2)
    train = keyed.filter(~held).drop("key", "slot", "n")
    valid = keyed.filter(held).drop("key", "slot", "n")
    if valid.height == 0:  # reported against the file the positives came from, not a derived split
        most = int(cast(int | None, keyed["n"].max()) or 0)  # pl.len(): a count
        need = max(2, math.ceil(1 / fraction))  # the fewest positives of which one is held out
        need -= need > 2 and math.floor((need - 1) * fraction) >= 1
        raise InputError(
            f"{positives.source}: too few positives to hold out a validation split: --valid-fraction {fraction} of "
            f"each user's positives rounds down to none (users have at most {most}; a user needs {need}); pass more "
            "positives, a larger --valid-fraction, or --valid-fraction 0 with --test and a fixed --rank-window")
    return (Positives(train, positives.source + "#train", train.height, 0),
            Positives(valid, positives.source + "#valid", valid.height, 0))


def heldout_rank_rates(
    user_vecs: np.ndarray,
    item_vecs: np.ndarray,
    train_indptr: np.ndarray,
    train_items: np.ndarray,
    heldout_indptr: np.ndarray,
    heldout_items: np.ndarray,
    max_rank: int = 1000,
    chunk: int = 2048,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Share of users (with held-out items; only ``rows`` when given) holding a held-out positive at each rank 1..``max_rank``.

    Ranks are counted as the miner counts them: among the user's non-positive items (train items
    left out), best first. Entry r-1 is the false-negative rate a uniformly sampled hard negative
    would have at rank r, so the mean over LO..HI is the expected false-negative rate of a window.
    """
    counts = np.diff(heldout_indptr)
    evaluated = np.flatnonzero(counts > 0)
    if rows is not None:
        evaluated = np.intersect1d(evaluated, rows)
    hits = np.zeros(max_rank + 1, dtype=np.int64)
    index = exact_index(item_vecs, len(evaluated))
    n_items = len(item_vecs)
    depth = min(max_rank, n_items)
    for start in range(0, len(evaluated), chunk):
        rows = evaluated[start : start + chunk]
        top = ranked_items(index, user_vecs, rows, train_indptr, train_items, depth)
        # rank of each held-out item in its user's ranking; max_rank + 1 when it is deeper (or absent)
        place = np.full((len(rows), n_items + 1), max_rank + 1, dtype=np.int64)
        place[np.arange(len(rows))[:, None], top] = np.arange(1, depth + 1)
        place[:, n_items] = max_rank + 1  # the -1 padding
        h_rows = np.repeat(np.arange(len(rows)), counts[rows])
        h_items = np.concatenate([heldout_items[heldout_indptr[r] : heldout_indptr[r + 1]] for r in rows])
        ranks = place[h_rows, h_items.astype(np.int64)]
        hits += np.bincount(np.minimum(ranks, max_rank + 1) - 1, minlength=max_rank + 1)[: max_rank + 1]
    return hits[:max_rank] / max(len(evaluated), 1)


def window_false_negative_rates(
    users: str | Path,
    items: str | Path,
    train: Positives,
    heldout: Positives,
    max_rank: int = 2000,
    max_users: int = 8192,
    seed: int = 0,
) -> np.ndarray:
    """:func:`heldout_rank_rates` of exported embeddings, on at most ``max_users`` users (seeded sample)."""
    user_emb = read_embeddings(users)
    item_emb = read_embeddings(items)
    train_index = index_positives(train, user_emb.ids, item_emb.ids)
    held_index = index_positives(heldout, user_emb.ids, item_emb.ids)
    rows = np.flatnonzero(np.diff(held_index.indptr) > 0)
    if len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    return heldout_rank_rates(user_emb.vectors, item_emb.vectors, train_index.indptr, train_index.item_rows,
                              held_index.indptr, held_index.item_rows, rows=rows,
                              max_rank=min(max_rank, len(item_emb.ids)))


def choose_rank_window(rates: np.ndarray, width: int, max_rate: float) -> tuple[int, int, float, bool]:
    """The hardest window of ``width`` ranks whose expected false-negative rate is at most ``max_rate``.

    ``rates[r-1]`` is the held-out-positive rate at rank r (:func:`heldout_rank_rates`). Returns
    (LO, HI, the window's mean rate, whether it met ``max_rate``); when no window does, the one
    with the lowest rate among the deepest is returned with ``False``.
    """
    width = min(width, len(rates))
    if width < 1:
        raise InputError("--window-width must be at least 1 (and the catalog non-empty)")
    sums = np.convolve(rates, np.ones(width), mode="valid")  # sums[lo - 1] = rates[lo-1 : lo-1+width].sum()
    means = sums / width
    ok = np.flatnonzero(means <= max_rate + 1e-12)
    # the first window that meets the rate; else the lowest mean, the deepest on ties
    lo = int(ok[0]) + 1 if len(ok) else len(means) - int(np.argmin(means[::-1]))
    return lo, lo + width - 1, float(means[lo - 1]), bool(len(ok))
