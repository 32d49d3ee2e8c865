"""Benchmark ``hnmine report``: seconds and peak memory on a Gowalla-size output, and on outputs of
growing user counts (memory must stay flat: the report streams the tables).

Not a test. Usage (from the repository root, after ``make setup``)::

    .venv/bin/hnmine svd --positives ../shared/datasets/gowalla/train.txt --dim 64 --out-dir /tmp/g-emb
    .venv/bin/hnmine mine --users /tmp/g-emb/user.parquet --items /tmp/g-emb/item.parquet \\
        --positives ../shared/datasets/gowalla/train.txt --out /tmp/g-mined
    .venv/bin/python benchmarks/bench_report.py --mined /tmp/g-mined \\
        --test ../shared/datasets/gowalla/test.txt --out bench-out/report

Every measurement runs ``hnmine report`` in its own process; its peak RSS is the child's ``ru_maxrss``,
its CPU seconds the child's user + system time (the wall clock of a loaded machine also counts the wait).
The scaling cases are synthetic published outputs (hard_neg_edge, pos_edge, item, user, manifest)
with 10 negatives per user over a fixed 40,981-item catalog, 10k to 1M users.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
HNMINE = Path(sys.executable).with_name("hnmine")


def measure(args: list[str], repeat: int) -> dict:
    """Median wall seconds and the largest peak RSS (MiB) of ``hnmine report ARGS`` over ``repeat`` runs."""
    times, cpus, peaks = [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # child: exec hnmine so its ru_maxrss is the report's own
            os.execv(str(HNMINE), [str(HNMINE), "report", *args])
        _, status, usage = os.wait4(pid, 0)
        times.append(time.perf_counter() - start)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"hnmine report {' '.join(args)} failed")
        peaks.append(usage.ru_maxrss / 1024)
        cpus.append(usage.ru_utime + usage.ru_stime)
    # CPU seconds as well as wall: on a shared machine the wall clock also counts waiting for a core
    return {"seconds": float(np.median(times)), "cpu_seconds": float(np.median(cpus)), "peak_rss_mib": max(peaks),
            "repeat": repeat}


def synthetic_output(out: Path, users: int, items: int = 40_981, per_user: int = 10, seed: int = 0) -> Path:
    """A published-output lookalike: Zipf-popular items, scores falling with rank 101..500."""
    if (out / "_SUCCESS").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    import pyarrow as pa
    import pyarrow.parquet as pq

    block = 100_000
    with pq.ParquetWriter(out / "hard_neg_edge.parquet", pa.schema([
        ("user_id", pa.int64()), ("item_id", pa.int64()), ("weight", pa.float32()), ("rank", pa.int32()),
        ("score", pa.float32())]), compression="zstd") as neg, pq.ParquetWriter(
            out / "pos_edge.parquet", pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                                                  ("weight", pa.float32())]), compression="zstd") as pos:
        for start in range(0, users, block):
            n = min(block, users - start)
            user = np.repeat(np.arange(start, start + n), per_user)
            rank = rng.integers(101, 501, n * per_user).astype(np.int32)
            score = (0.02 - rank * 2e-5 + rng.normal(0, 0.003, len(rank))).astype(np.float32)
            neg.write_table(pa.table({"user_id": user, "item_id": rng.choice(items, len(user), p=popularity),
                                      "weight": score, "rank": rank, "score": score}))
            pu = np.repeat(np.arange(start, start + n), 10)
            pos.write_table(pa.table({"user_id": pu, "item_id": rng.choice(items, len(pu), p=popularity),
                                      "weight": np.ones(len(pu), dtype=np.float32)}))
    pl.DataFrame({"id": np.arange(users), "weight": np.ones(users, dtype=np.float32)}).write_parquet(out / "user.parquet")
    pl.DataFrame({"id": np.arange(items), "weight": np.ones(items, dtype=np.float32),
                  "attrs": np.arange(items).astype(str)}).write_parquet(out / "item.parquet")
    q = np.sort(0.02 - rng.integers(101, 501, 20_000) * 2e-5 + rng.normal(0, 0.003, 20_000))
    levels = np.linspace(0, 1, 201)
    manifest = {
        "tool": "hnmine mine", "command": ["synthetic"],
        "options": {"rank_window": "101:500", "num_hard": per_user, "strategy": "uniform", "max_item_negatives": None},
        "inputs": {},
        "summary": {"users": users, "items": items, "users_complete": users, "users_short": {}, "users_empty": {},
                    "rows": {"hard_neg_edge": users * per_user}, "score": {"min": float(q[0]), "p95": float(q[-1000]),
                                                                          "max": float(q[-1]), "median": float(q[10_000])},
                    "rank": {}, "timings": {},
                    "window": {"sample_users": 4096, "ranks": [101, 500], "score_by_rank": [0.018, 0.01],
                               "score_quantiles": {"levels": levels.tolist(), "values": np.quantile(q, levels).tolist()}}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "_SUCCESS").touch()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mined", type=Path, help="A published hnmine mine output (Gowalla-size).")
    parser.add_argument("--test", type=Path, help="Held-out positives for --mined.")
    parser.add_argument("--out", type=Path, default=Path("bench-out/report"))
    parser.add_argument("--users", default="10000,100000,1000000", help="Synthetic user counts.")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "cases": []}
    if args.mined:
        rows = json.loads((args.mined / "manifest.json").read_text())["summary"]["rows"]
        for fmt in ("html", "json"):
            extra = ["--test", str(args.test)] if args.test else []
            case = measure([str(args.mined), "--out", str(args.out / f"gowalla.{fmt}"), "--format", fmt, *extra],
                           args.repeat)
            results["cases"].append({"case": f"gowalla {fmt}" + (" --test" if args.test else ""), **rows, **case})
            print(results["cases"][-1], flush=True)
    for users in (int(u) for u in args.users.split(",")):
        path = synthetic_output(args.out / f"synthetic-{users}", users)
        case = measure([str(path), "--out", str(args.out / f"synthetic-{users}.html")], args.repeat)
        results["cases"].append({"case": f"synthetic {users:,} users html", "users": users,
                                 "hard_neg_edge": users * 10, **case})
        print(results["cases"][-1], flush=True)
    results["load_average_after"] = os.getloadavg()
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
