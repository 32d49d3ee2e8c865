"""``hnmine select`` from a candidate cache against ``hnmine mine``, on Gowalla SVD embeddings.

Not a test (pytest does not collect ``benchmarks/``). Usage, from the repository root after ``make setup``::

    .venv/bin/python benchmarks/bench_select.py --out bench-select [--repeat 3] [--threads N]

Writes SVD embeddings (d=64) of the Gowalla train split, mines once with ``--save-candidates`` (ranks
1..HI), then alternates ``mine`` and ``select`` with the same options (a few windows and strategies),
checking each pair publishes the same bytes, and prints the median wall-clock seconds of each and
their ratio, measured in the same process one after the other (so the machine's load hits both).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOWALLA = Path(os.environ.get("HNMINE_GOWALLA", ROOT.parent / "shared" / "datasets" / "gowalla"))
CASES = [
    {"rank_window": "101:500"},
    {"rank_window": "201:1000", "strategy": "softmax-v", "rho": 0.05},
    {"rank_window": "51:300", "strategy": "top", "seed": 1},
]


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir()) if p.name != "manifest.json"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-select"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    from hnmine.embed.svd import write_svd_embeddings
    from hnmine.io.positives import read_positives
    from hnmine.mining.config import MineConfig
    from hnmine.mining.pipeline import mine, select

    out = args.out.absolute()
    user, item = write_svd_embeddings(read_positives(GOWALLA / "train.txt"), out / "emb", dim=64, seed=0)
    depth = max(int(case["rank_window"].split(":")[1]) for case in CASES)
    base = MineConfig.of(users=str(user), items=str(item), positives=str(GOWALLA / "train.txt"), out="",
                      threads=args.threads, overwrite=True)
    start = time.perf_counter()
    mine(base.with_options(out=str(out / "cached"), rank_window=f"1:{depth}", save_candidates=str(out / "cand")))
    results = {"load_before": os.getloadavg(), "save_seconds": time.perf_counter() - start, "cases": []}
    for case in CASES:
        times: dict[str, list[float]] = {"mine": [], "select": []}
        for _ in range(args.repeat):
            for kind in ("mine", "select"):
                config = base.with_options(out=str(out / kind), **case)
                start = time.perf_counter()
                mine(config) if kind == "mine" else select(config, out / "cand")
                times[kind].append(time.perf_counter() - start)
            assert digests(out / "mine") == digests(out / "select"), f"{case}: select differs from mine"
        row = {"case": case, **{k: statistics.median(v) for k, v in times.items()}}
        row["ratio"] = row["select"] / row["mine"]
        results["cases"].append(row)
        print(json.dumps(row))
    results["load_after"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "cases"}))


if __name__ == "__main__":
    main()
