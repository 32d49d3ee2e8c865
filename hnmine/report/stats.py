"""The numbers of ``hnmine report``: one streaming pass over each published table, bounded memory.

:func:`mined_stats` reads a ``hnmine mine --out`` directory (manifest.json, hard_neg_edge, pos_edge)
batch by batch: memory is one batch plus per-item counters (the catalog), whatever the number of
users. :func:`run_stats` reads a ``hnmine run`` directory: each round's metrics.json and its mined
output's manifest, and streams consecutive rounds' hard_neg_edge tables side by side for churn.
:func:`build_report` picks the right one for a path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from hnmine.errors import InputError
from hnmine.io import storage
from hnmine.io.positives import read_positives
from hnmine.io.publish import atomic_file
from hnmine.options import parse_rank_window

__all__ = ["build_report", "is_report", "mined_stats", "run_stats", "to_json", "write_report"]

BATCH_ROWS = 65_536
RANK_BUCKETS = 20
SCORE_BINS = 40
TOP_SHARES = (0.01, 0.1)


def build_report(path: str | Path, test: str | Path | None = None, batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """The report's numbers for a mined output or a run directory (told apart by their files); either may be
    a URL (:mod:`hnmine.io.storage`: read from a local copy, named by its URL)."""
    if storage.is_url(path):
        with storage.local_copy(path, "output") as local:
            stats = build_report(local, test, batch_rows)
        stats["path"] = storage.url(path)
        return stats
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: not found")
    if (root / "run.json").exists():
        return run_stats(root, test, batch_rows)
    if (root / "manifest.json").exists() and (root / "hard_neg_edge.parquet").exists():
        return mined_stats(root, test, batch_rows)
    if (root / "manifest.json").exists() and (root / "hard_neg_edge.txt").exists():
        raise InputError(f"{root}: the report reads the parquet tables (rank, score); this output has only "
                         "the GraphLearn text form: mine with --formats parquet,graphlearn")
    raise InputError(f"{root}: neither a hnmine mine output (manifest.json, hard_neg_edge.parquet) "
                     "nor a hnmine run directory (run.json)")


# The start of a report hnmine wrote: the HTML page's head (its title names the kind), or the JSON's first key.
_OWN_REPORT = re.compile(rb"^(<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>.*?"
                         rb"<title>hnmine (run|mined-output) report</title>|\{\s*\"kind\": \"(run|mined)\")", re.S)


def is_report(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 4 KiB) is a report hnmine wrote."""
    return _OWN_REPORT.match(head) is not None


def _report_refusal(out: str | Path) -> str | None:
    """Why ``out`` may not be replaced by a report without ``overwrite``: it exists and hnmine did not write it."""
    if storage.is_url(out):
        from pyarrow import fs

        store, inner = storage.filesystem(out)
        with storage.store_errors(storage.url(out), "read the report's target"):
            info = store.get_file_info(inner)
            if info.type == fs.FileType.NotFound:
                return None
            if info.type != fs.FileType.File:
                return f"{storage.url(out)}: exists and is not a file"
            with store.open_input_stream(inner) as source:
                head = bytes(source.read(4096))
    else:
        target = Path(out)
        if not os.path.lexists(target):
            return None
        if target.is_symlink() or not target.is_file():
            return f"{target}: exists and is not a file"
        with open(target, "rb") as source:
            head = source.read(4096)
    if is_report(head):
        return None
    return f"{storage.url(out)}: exists and is not a report hnmine wrote; pass --overwrite to replace it"


def write_report(path: str | Path, out: str | Path, test: str | Path | None = None, fmt: str = "html",
                 batch_rows: int = BATCH_ROWS, overwrite: bool = False) -> str | Path:
    """Write the report of ``path`` to ``out`` as ``html`` or ``json``; returns ``out``.

    Either may be a URL. A report hnmine wrote at ``out`` is replaced; any other file only with ``overwrite``
    (checked before the report is built, and again before it is written).
    """
    if fmt not in ("html", "json"):
        raise InputError(f"--format must be html or json, not '{fmt}'")
    out = storage.url(out) if storage.is_url(out) else Path(out)
    reason = None if overwrite else _report_refusal(out)
    if reason:
        raise InputError(reason)
    stats = build_report(path, test, batch_rows)
    if fmt == "json":
        text = to_json(stats)
    else:
        from hnmine.report.html import render_html

        text = render_html(stats)
    reason = None if overwrite else _report_refusal(out)
    if reason:
        raise InputError(reason)
    if not isinstance(out, Path):
        # one PUT (visible only once complete), not atomic_file's <name>.tmp: a report is written into a
        # published output, where a leftover .tmp object would make the output foreign to hnmine
        store, inner = storage.filesystem(out)
        with storage.store_errors(out, "write the report"), store.open_output_stream(inner) as sink:
            sink.write(text.encode("utf-8"))
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


def to_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, indent=2, default=str)


# ----------------------------------------------------------------------------------- mined output
def _manifest(root: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{root / 'manifest.json'}: cannot read ({exc})") from None
    if "summary" not in manifest or "options" not in manifest:
        raise InputError(f"{root / 'manifest.json'}: not a hnmine mine manifest (no summary or options)")
    if not (root / "_SUCCESS").exists():
        raise InputError(f"{root}: no _SUCCESS marker: not a complete published output")
    return manifest


def _batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pl.DataFrame]:
    try:
        source = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    missing = set(columns) - set(source.schema_arrow.names)
    if missing:
        raise InputError(f"{path}: no column {', '.join(sorted(missing))}")
    for batch in source.iter_batches(batch_size=batch_rows, columns=columns):
        yield cast(pl.DataFrame, pl.from_arrow(batch))  # a record batch converts to a DataFrame


class _Counter:
    """Rows per key (item id) accumulated over batches; bounded by the number of distinct keys."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype
        self.parts: list[pl.DataFrame] = []
        self.rows = 0

    def add(self, keys: pl.Series) -> None:
        self.parts.append(keys.value_counts(name="n"))
        self.rows += self.parts[-1].height
        if self.rows > 4 * BATCH_ROWS:
            self._merge()

    def _merge(self) -> None:
        if len(self.parts) > 1:
            merged = pl.concat(self.parts)
            key = merged.columns[0]
            self.parts = [merged.group_by(key).agg(pl.col("n").sum())]
        self.rows = self.parts[0].height if self.parts else 0

    def frame(self, name: str) -> pl.DataFrame:
        self._merge()
        if not self.parts:
            return pl.DataFrame(schema={"item_id": self.dtype, name: pl.UInt32})
        return self.parts[0].rename({self.parts[0].columns[0]: "item_id", "n": name})


def _gini(counts: np.ndarray) -> float | None:
    """Gini coefficient of non-negative counts (0: all equal, ~1: all on one item)."""
    if not len(counts) or counts.sum() == 0:
        return None
    x = np.sort(counts.astype(np.float64))
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


def _lorenz(counts: np.ndarray, points: int = 101) -> list[float]:
    """Share of the total held by the least-used fraction p of the catalog, p = 0, 0.01, ..., 1."""
    x = np.sort(counts.astype(np.float64))
    cum = np.concatenate([[0.0], np.cumsum(x)]) / max(x.sum(), 1.0)
    idx = np.linspace(0, len(x), points).round().astype(np.int64)
    return cum[idx].round(6).tolist()


def _heldout_keys(test: str | Path, schema: dict[str, Any]) -> pl.DataFrame:
    table = read_positives(test).table.select("user_id", "item_id").unique()
    return table.with_columns(
        pl.col("user_id").cast(schema["user_id"], strict=False),
        pl.col("item_id").cast(schema["item_id"], strict=False),
        pl.lit(True).alias("heldout"),
    )


def mined_stats(root: str | Path, test: str | Path | None = None, batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """Every number of a mined output's report (see docs/report.md for what each one means)."""
    root = Path(root)
    manifest = _manifest(root)
    options, summary = manifest["options"], manifest["summary"]
    lo, hi = parse_rank_window(options["rank_window"])
    width = hi - lo + 1
    buckets = min(RANK_BUCKETS, width)
    window = summary.get("window") or {}
    score = summary.get("score") or {}
    wq = (window.get("score_quantiles") or {}).get("values") or []
    # the bulk of both, up to the window's 99th percentile: a few extreme scores would squash the
    # histogram; what lies beyond the range is counted in the last bin
    lows = [v for v in (score.get("min"), *wq[:1]) if v is not None]
    highs = [v for v in (score.get("p95"), wq[int(0.99 * (len(wq) - 1))] if wq else None) if v is not None]
    s_lo = min(lows) if lows else 0.0
    s_hi = max(highs) if highs else s_lo + 1.0
    score_edges = np.linspace(s_lo, s_hi if s_hi > s_lo else s_lo + 1.0, SCORE_BINS + 1)
    rank_hist = np.zeros(buckets, dtype=np.int64)
    rank_score = np.zeros(buckets)
    score_hist = np.zeros(SCORE_BINS, dtype=np.int64)
    per_user = np.zeros(0, dtype=np.int64)
    fn_hits = np.zeros(buckets, dtype=np.int64)
    path = root / "hard_neg_edge.parquet"
    schema = pl.read_parquet_schema(path)
    items = _Counter(schema.get("item_id", pl.Int64))
    heldout = _heldout_keys(test, schema) if test is not None else None
    last_user: Any = None
    run = 0
    rows = 0
    for batch in _batches(path, ["user_id", "item_id", "rank", "score"], batch_rows):
        if not batch.height:
            continue
        rows += batch.height
        bucket = ((batch["rank"].to_numpy().astype(np.int64) - lo) * buckets // width).clip(0, buckets - 1)
        scores = batch["score"].to_numpy().astype(np.float64)
        rank_hist += np.bincount(bucket, minlength=buckets)
        rank_score += np.bincount(bucket, weights=scores, minlength=buckets)
        score_hist += np.histogram(scores.clip(score_edges[0], score_edges[-1]), score_edges)[0]
        items.add(batch["item_id"])
        runs = batch["user_id"].rle().struct.unnest()
        lengths = runs["len"].to_numpy().astype(np.int64)
        values = runs["value"]
        if last_user is not None and values[0] == last_user:
            lengths[0] += run
        elif last_user is not None:
            per_user = _bump(per_user, np.array([run]))
        per_user = _bump(per_user, lengths[:-1])
        last_user, run = values[-1], int(lengths[-1])
        if heldout is not None:
            hit = batch.join(heldout, on=["user_id", "item_id"], how="left", maintain_order="left")["heldout"]
            fn_hits += np.bincount(bucket[hit.fill_null(False).to_numpy()], minlength=buckets)
    if last_user is not None:
        per_user = _bump(per_user, np.array([run]))
    rank_edges = (lo + np.arange(buckets + 1) * width / buckets).tolist()
    users_with = int(per_user.sum())
    needed = width if options.get("strategy") == "all" else min(int(options.get("num_hard", 0)), width)
    stats: dict[str, Any] = {
        "kind": "mined",
        "path": str(root.absolute()),
        "rank_window": [lo, hi],
        "rows": rows,
        "users": {
            "total": summary.get("users"), "complete": summary.get("users_complete"),
            "short": summary.get("users_short", {}), "empty": summary.get("users_empty", {}),
            "needed": needed, "with_negatives": users_with,
            "negatives_per_user": {str(k): int(v) for k, v in enumerate(per_user) if v},
        },
        "rank": {
            "bucket_edges": rank_edges, "negatives": rank_hist.tolist(),
            "mean_score": [float(s / n) if n else None for s, n in zip(rank_score, rank_hist)],
            "summary": summary.get("rank", {}),
        },
        "score": {"edges": score_edges.tolist(), "negatives": score_hist.tolist(), "summary": score,
                  "window": _window_shares(wq, window, score_edges)},
        "window": {k: v for k, v in window.items() if k in ("sample_users", "ranks", "score_by_rank")},
        "margin": window.get("margin"),
        "popularity": _popularity(root, items, summary, options, batch_rows),
        "manifest": {k: manifest.get(k) for k in ("tool", "command", "options", "inputs", "versions", "host",
                                                   "started_at", "finished_at")},
        "timings": summary.get("timings", {}),
    }
    if heldout is not None:
        stats["false_negatives"] = {
            "test": str(test), "bucket_edges": rank_edges, "rows": rank_hist.tolist(), "heldout": fn_hits.tolist(),
            "rate_by_bucket": [float(h / n) if n else None for h, n in zip(fn_hits, rank_hist)],
            "rate": float(fn_hits.sum() / rows) if rows else None,
        }
    return stats


def _bump(hist: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Add a histogram of ``lengths`` (users per negatives count) to ``hist``."""
    if not len(lengths):
        return hist
    add = np.bincount(lengths)
    if len(add) > len(hist):
        hist = np.concatenate([hist, np.zeros(len(add) - len(hist), dtype=np.int64)])
    hist[: len(add)] += add
    return hist


def _window_shares(quantiles: list[float], window: dict[str, Any], edges: np.ndarray) -> list[float] | None:
    """The window's share of scores per bin, read off its recorded quantiles (a piecewise-linear CDF)."""
    if not quantiles:
        return None
    levels = np.asarray(window["score_quantiles"]["levels"])
    q = np.maximum.accumulate(np.asarray(quantiles))
    cdf = np.interp(edges, q, levels, left=0.0, right=1.0)
    return np.diff(cdf).tolist()


def _popularity(root: Path, negatives: _Counter, summary: dict[str, Any], options: dict[str, Any],
                batch_rows: int) -> dict[str, Any]:
    """Where the mined items sit in the catalog's popularity (positives per item)."""
    pos_path = root / "pos_edge.parquet"
    positives = _Counter(pl.read_parquet_schema(pos_path).get("item_id") if pos_path.exists() else pl.Int64)
    if pos_path.exists():
        for batch in _batches(pos_path, ["item_id"], batch_rows):
            positives.add(batch["item_id"])
    neg = negatives.frame("negatives")
    pos = positives.frame("positives")
    if pos.height and neg.height:
        neg = neg.with_columns(pl.col("item_id").cast(pos.schema["item_id"], strict=False))
    joined = pos.join(neg, on="item_id", how="full", coalesce=True).fill_null(0) if pos.height else neg.with_columns(
        pl.lit(0).alias("positives"))
    catalog = int(summary.get("items") or joined.height)
    pad = max(catalog - joined.height, 0)
    # most popular first; ties by id so the buckets do not depend on file order
    joined = joined.sort(["positives", "item_id"], descending=[True, False])
    pos_counts = np.concatenate([joined["positives"].to_numpy().astype(np.int64), np.zeros(pad, dtype=np.int64)])
    neg_counts = np.concatenate([joined["negatives"].to_numpy().astype(np.int64), np.zeros(pad, dtype=np.int64)])
    total_neg, total_pos = max(int(neg_counts.sum()), 1), max(int(pos_counts.sum()), 1)
    deciles = np.array_split(np.arange(catalog), 10)
    mined_items = neg_counts[neg_counts > 0]
    cap = options.get("max_item_negatives")
    top = neg_counts.max(initial=0)
    edges = np.unique(np.concatenate([[1], np.geomspace(1, max(top, 1) + 1, 25).round()])).astype(np.int64)
    hist = np.histogram(mined_items, edges)[0] if len(mined_items) else np.zeros(len(edges) - 1, dtype=np.int64)
    return {
        "catalog_items": catalog,
        "distinct_mined_items": len(mined_items),
        "distinct_share": len(mined_items) / catalog if catalog else None,
        "gini_negatives": _gini(neg_counts),
        "gini_positives": _gini(pos_counts),
        "top_shares": {f"top {100 * share:g}%": {
            "negatives": float(neg_counts[: max(round(share * catalog), 1)].sum() / total_neg),
            "positives": float(pos_counts[: max(round(share * catalog), 1)].sum() / total_pos),
        } for share in TOP_SHARES},
        "deciles": {"negatives": [float(neg_counts[d].sum() / total_neg) for d in deciles],
                    "positives": [float(pos_counts[d].sum() / total_pos) for d in deciles]},
        "lorenz": {"negatives": _lorenz(neg_counts), "positives": _lorenz(pos_counts)},
        "per_item": {"edges": edges.tolist(), "items": hist.tolist(), "max": int(top), "cap": cap,
                     "items_at_cap": int((neg_counts == cap).sum()) if cap else None},
    }


# ---------------------------------------------------------------------------------------------- run
def _user_groups(path: Path, batch_rows: int) -> Iterator[tuple[Any, np.ndarray]]:
    """(user id, item ids) per user, in file order: the table holds each user's rows together."""
    pending_user: Any = None
    pending: list[np.ndarray] = []
    for batch in _batches(path, ["user_id", "item_id"], batch_rows):
        if not batch.height:
            continue
        runs = batch["user_id"].rle().struct.unnest()
        items = batch["item_id"].to_numpy()
        start = 0
        for user, n in zip(runs["value"].to_list(), runs["len"].to_list()):
            part = items[start : start + n]
            start += n
            if user == pending_user:
                pending.append(part)
                continue
            if pending_user is not None:
                yield pending_user, np.concatenate(pending)
            pending_user, pending = user, [part]
    if pending_user is not None:
        yield pending_user, np.concatenate(pending)


def churn(a: Path, b: Path, users: Path, batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """Per-user overlap (Jaccard) of two rounds' negatives, walking both tables in user-table order.

    Both rounds' tables list users in the order of the same user table (the run's users), so one
    forward pass over each suffices; a user missing from one round has overlap 0.
    """
    ga, gb = _user_groups(a, batch_rows), _user_groups(b, batch_rows)
    head_a, head_b = next(ga, None), next(gb, None)
    hist = np.zeros(10, dtype=np.int64)
    total = 0.0
    n = 0
    for batch in _batches(users, ["id"], batch_rows):
        for user in batch["id"].to_list():
            items_a = items_b = None
            if head_a is not None and head_a[0] == user:
                items_a, head_a = head_a[1], next(ga, None)
            if head_b is not None and head_b[0] == user:
                items_b, head_b = head_b[1], next(gb, None)
            if items_a is None and items_b is None:
                continue
            sa = set(items_a.tolist()) if items_a is not None else set()
            sb = set(items_b.tolist()) if items_b is not None else set()
            j = len(sa & sb) / len(sa | sb)
            total += j
            n += 1
            hist[min(int(j * 10), 9)] += 1
    if head_a is not None or head_b is not None:
        raise InputError(f"{a} and {b}: users are not in the order of {users}; cannot compare rounds")
    return {"users": n, "mean_overlap": total / n if n else None, "overlap_hist": hist.tolist()}


def run_stats(root: str | Path, test: str | Path | None = None, batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """Every number of a run's report: metrics, churn, hardness drift, FN rates, time per round."""
    root = Path(root)
    rounds = []
    r = 0
    while (root / f"round_{r:02d}" / "manifest.json").exists():
        rounds.append(root / f"round_{r:02d}")
        r += 1
    if not rounds:
        raise InputError(f"{root}: no complete round (round_00/manifest.json)")
    best_path = root / "best_round.json"
    best = json.loads(best_path.read_text()) if best_path.exists() else None
    per_round: list[dict[str, Any]] = []
    latest_mined: Path | None = None
    previous: Path | None = None
    for round_dir in rounds:
        metrics = json.loads((round_dir / "metrics.json").read_text())
        entry: dict[str, Any] = {
            "round": metrics["round"], "metrics": metrics["metrics"], "epochs": metrics.get("epochs"),
            "loss": metrics.get("loss"), "train_seconds": metrics.get("train_seconds"),
            "mine_seconds": metrics.get("mine_seconds"),
            "control": metrics.get("control"),  # the --no-hard control's metrics (hnmine run --control)
            "false_negative_rate": {k.removeprefix("false_negative_rate_"): v
                                    for k, v in metrics.get("hard_negatives", {}).items()
                                    if k.startswith("false_negative_rate_") and "window" not in k},
        }
        mined = round_dir / "mined"
        if (mined / "manifest.json").exists():
            summary = _manifest(mined)["summary"]
            options = _manifest(mined)["options"]
            entry["mined"] = {"rank_window": parse_rank_window(options["rank_window"]),
                              "score": summary.get("score", {}), "rank": summary.get("rank", {}),
                              "rows": summary.get("rows", {}).get("hard_neg_edge"),
                              "timings": summary.get("timings", {})}
            if test is not None:
                fn = mined_stats(mined, test, batch_rows).get("false_negatives", {})
                entry["false_negative_rate"].setdefault("test", fn.get("rate"))  # the run's own, if it had one
            if previous is not None:
                entry["churn"] = churn(previous / "hard_neg_edge.parquet", mined / "hard_neg_edge.parquet",
                                       mined / "user.parquet", batch_rows)
            previous = latest_mined = mined
        per_round.append(entry)
    stats: dict[str, Any] = {
        "kind": "run", "path": str(root.absolute()), "rounds": per_round, "best": best,
        "options": json.loads((root / "run.json").read_text()),
    }
    if latest_mined is not None:
        stats["latest_mined"] = mined_stats(latest_mined, test, batch_rows)
        stats["latest_mined"]["round"] = int(latest_mined.parent.name.removeprefix("round_"))
    return stats
