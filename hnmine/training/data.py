"""The trainer's inputs: positives as CSR by user, item node weights, the history cap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from hnmine.errors import InputError, reading
from hnmine.io.positives import read_positives
from hnmine.io.storage import local_copy
from hnmine.io.tables import ids_frame, read_hard_negatives
from hnmine.training.config import TrainConfig

__all__ = ["TrainData", "cap_history", "load_train_data"]


@dataclass
class TrainData:
    """Positives as rows, the user CSR (sorted item rows) and the easy-negative distributions."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray  # one row per interaction: user row
    items: np.ndarray  # item row
    indptr: np.ndarray  # CSR over user rows
    hist: np.ndarray  # item rows the user tower pools (at most max_history per user), sorted within each user
    item_weight: np.ndarray  # item node weight (NegativeSampler)
    pool: np.ndarray  # item rows of pos_edge (NegativeSamplerV2 pool)
    popularity: np.ndarray  # share of interactions per item (in-batch sampling probability)
    hist_indptr: np.ndarray | None = None  # CSR of ``hist`` (None: same as indptr)
    hard: np.ndarray | None = None  # (users, num_hard_sample) item rows, -1 padded
    hard_rows: int = 0
    hard_users: int = 0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _sorted_ids(series: pl.Series) -> np.ndarray:
    values = series.unique().sort()
    if values.dtype == pl.String:
        return np.asarray(values.to_list(), dtype=object)
    return values.to_numpy().astype(np.int64)


def load_train_data(config: TrainConfig) -> TrainData:
    """Read positives, item nodes and hard negatives into row-indexed arrays."""
    positives = read_positives(config.positives, fmt=config.positives_format).table
    nodes = None
    if config.item_nodes:
        with local_copy(config.item_nodes, "item nodes") as path:
            if not path.exists():
                raise InputError(f"{path}: file not found")
            with reading(path, "item nodes"):
                nodes = pl.read_parquet(path, columns=["id", "weight"])
        if nodes.schema["id"] != positives.schema["item_id"]:
            nodes = nodes.with_columns(pl.col("id").cast(positives.schema["item_id"], strict=False))
    user_ids = _sorted_ids(positives["user_id"])
    item_series = positives["item_id"]
    if nodes is not None:
        item_series = pl.concat([item_series, nodes["id"].rename("item_id")])
    item_ids = _sorted_ids(item_series.drop_nulls())
    rows = (
        positives.join(ids_frame("user_id", user_ids, "u"), on="user_id")
        .join(ids_frame("item_id", item_ids, "i"), on="item_id")
        .sort("u", "i")
    )
    users = rows["u"].to_numpy().astype(np.int64)
    items = rows["i"].to_numpy().astype(np.int64)
    indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=len(user_ids)), out=indptr[1:])
    counts = np.bincount(items, minlength=len(item_ids)).astype(np.float64)
    if nodes is not None:
        weight = np.zeros(len(item_ids))
        joined = ids_frame("id", item_ids, "i").join(nodes, on="id", how="left")
        weight[joined["i"].to_numpy()] = joined["weight"].fill_null(0.0).to_numpy()
    else:
        weight = np.power(counts, config.pop_exponent)
    if not (np.isfinite(weight).all() and (weight >= 0).all() and weight.sum() > 0):
        raise InputError(f"{config.item_nodes or config.positives}: item weights must be finite, >= 0, not all 0")
    data = TrainData(
        user_ids=user_ids, item_ids=item_ids, users=users, items=items, indptr=indptr, hist=items.copy(),
        item_weight=weight, pool=np.flatnonzero(counts > 0), popularity=counts / counts.sum(), hist_indptr=indptr,
    )
    if config.max_history is not None:
        data.hist_indptr, data.hist = cap_history(indptr, items, config.max_history, config.seed)
    if config.hard_negatives and config.num_hard_sample > 0:
        data.hard, data.hard_rows, data.hard_users = read_hard_negatives(
            config.hard_negatives, user_ids, item_ids, config.num_hard_sample
        )
    return data


def cap_history(indptr: np.ndarray, items: np.ndarray, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random subset of at most ``cap`` items per user (seeded), as a sorted CSR.

    Examples are drawn per interaction, so a heavy user is drawn in proportion to its history and
    pooling all of it dominates the step (ml-1m); a fixed subset bounds that cost.
    """
    counts = np.diff(indptr)
    user = np.repeat(np.arange(len(counts)), counts)
    keys = np.random.default_rng(seed).random(len(items))
    order = np.lexsort((keys, user))
    slot = np.arange(len(items)) - indptr[user[order]]
    kept = np.sort(order[slot < cap])  # original order: user, then item row
    new_counts = np.minimum(counts, cap)
    new_indptr = np.zeros_like(indptr)
    np.cumsum(new_counts, out=new_indptr[1:])
    return new_indptr, items[kept]


