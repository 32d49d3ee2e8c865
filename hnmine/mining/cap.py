"""``--max-item-negatives``: each item in at most that many users' lists, decided after every chunk is mined.

The chunks stage their rows with a per-(user, item) priority; the cap is applied to the whole staged table
and the users it left short are counted again.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl

__all__ = ["apply_item_cap", "recount_after_cap"]


def apply_item_cap(staged: Path, cap: int, needed: int) -> pl.DataFrame:
    """Keep each item in at most ``cap`` users' lists, then each user's first ``needed`` survivors.

    Which users keep an over-used item is decided by a per-(user, item) hash priority, so the
    result does not depend on user order or chunking; users refill from their oversampled picks.
    """
    return (
        pl.scan_parquet(staged)
        .filter(pl.col("priority").rank("ordinal", descending=True).over("item_id") <= cap)
        .sort("user_row", "order")
        .filter(pl.col("order").rank("ordinal").over("user_row") <= needed)
        .drop("user_row", "order", "priority")
        .collect()
    )


def recount_after_cap(final: pl.DataFrame, needed: int, short: Counter[str], empty: Counter[str],
                       empty_after: int) -> tuple[Counter[str], Counter[str]]:
    """Users the cap left short: reasons found before the cap stay, the rest are 'item-cap'."""
    per_user = final.group_by("user_id").len()
    short_after = int((per_user["len"] < needed).sum())
    short = Counter(short)
    empty = Counter(empty)
    extra_short = short_after - sum(short.values())
    if extra_short > 0:
        short["item-cap"] += extra_short
    extra_empty = empty_after - sum(empty.values())
    if extra_empty > 0:
        empty["item-cap"] += extra_empty
    return short, empty
