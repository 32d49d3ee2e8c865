"""Markdown table of `hnmine run` directories round by round, against round 0 and a control run.

    python scripts/rounds_table.py --control runs/g-control runs/g-mined runs/g-mis

Columns: test and valid Recall/NDCG@20/@50 of every round, Recall@20 relative to round 0 (test /
valid) and to the control's same round (test / valid), the mined set's test false-negative rate,
training seconds. Rounds are read from each round's own metrics.json (complete rounds only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rounds(run: Path) -> list[dict]:
    out = []
    r = 0
    while (run / f"round_{r:02d}" / "manifest.json").exists():
        out.append(json.loads((run / f"round_{r:02d}" / "metrics.json").read_text()))
        r += 1
    return out


def rel(a: float, b: float) -> str:
    return f"{100 * (a / b - 1):+.2f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--control", type=Path, help="run to compare each round with (same round number)")
    parser.add_argument("--first", type=int, default=0, help="skip rounds before this one (round 0 still the base)")
    args = parser.parse_args()
    control = {r["round"]: r["metrics"] for r in rounds(args.control)} if args.control else {}
    keys = ("recall@20", "ndcg@20", "recall@50", "ndcg@50")
    head = (["run", "round"] + [f"test {k}" for k in keys] + [f"valid {k}" for k in keys]
            + ["R@20 vs round 0 (test / valid)", "R@20 vs control (test / valid)", "FN rate (test)", "train s"])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for run in ([args.control] if args.control else []) + args.runs:
        results = rounds(run)
        if not results:
            continue
        base = results[0]["metrics"]
        for res in results:
            if res["round"] < args.first:
                continue
            m = res["metrics"]
            cells = [run.name, str(res["round"])]
            cells += [f"{m['test'][k]:.4f}" for k in keys] + [f"{m['valid'][k]:.4f}" for k in keys]
            cells.append("" if res["round"] == 0 else " / ".join(
                rel(m[s]["recall@20"], base[s]["recall@20"]) for s in ("test", "valid")))
            other = control.get(res["round"])
            cells.append("" if other is None or run == args.control or res["round"] == 0 else " / ".join(
                rel(m[s]["recall@20"], other[s]["recall@20"]) for s in ("test", "valid")))
            fn = res["hard_negatives"].get("false_negative_rate_test")
            cells.append("" if fn is None else f"{fn:.2%}")
            cells.append(f"{res['train_seconds']:.0f}")
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
