"""Plot and tabulate several `hnmine run` directories side by side (the per-round plots of docs/results.md).

    python scripts/compare_runs.py --out docs/img/compare.png runs/a runs/a-control
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--split", default="test")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    print("| run | round | Recall@20 | NDCG@20 | Recall@50 | NDCG@50 | R@20 vs round 0 | FN rate | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    all_rounds: set[int] = set()
    for run in args.runs:
        rounds = json.loads((run / "metrics.json").read_text())
        base = rounds[0]["metrics"][args.split]["recall@20"]
        for r in rounds:
            m = r["metrics"][args.split]
            fn = next((v for k, v in r["hard_negatives"].items() if k.startswith("false_negative_rate")), None)
            print(f"| {run.name} | {r['round']} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | {m['recall@50']:.4f} "
                  f"| {m['ndcg@50']:.4f} | {100 * (m['recall@20'] / base - 1):+.2f}% | "
                  f"{'' if fn is None else f'{fn:.4%}'} | {r['train_seconds']:.0f} |")
        for ax, key in zip(axes, ("recall@20", "ndcg@20", "recall@50", "ndcg@50"), strict=True):
            ax.plot([r["round"] for r in rounds], [r["metrics"][args.split][key] for r in rounds], marker="o",
                    label=run.name)
            ax.set_title(f"{args.split} {key}")
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        all_rounds.update(r["round"] for r in rounds)
    for ax in axes:
        ax.set_xticks(sorted(all_rounds))  # every run's rounds, not just the last one's
    axes[0].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)


if __name__ == "__main__":
    main()
