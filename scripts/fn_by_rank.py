"""Held-out-positive rate by rank (the false-negative rate a hard negative mined at that rank has).

    python scripts/fn_by_rank.py --out docs/img/fn-rate-by-rank.png gowalla=runs/g/round_00 ml-1m=runs/m/round_00

Each argument is NAME=ROUND_DIR of an `hnmine run` with a validation split: the round's embeddings,
the run's data/train.parquet (masked) and data/valid.parquet (held out). Prints the rate of a few
windows and the window `--rank-window auto` picks at widths 200 and 800; plots the rate per rank.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hnmine.evaluate import choose_rank_window, window_false_negative_rates
from hnmine.io.positives import read_positives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rounds", nargs="+", help="NAME=ROUND_DIR")
    parser.add_argument("--out", type=Path, help="PNG to write")
    parser.add_argument("--max-rate", type=float, default=0.007)
    args = parser.parse_args()
    curves = {}
    for spec in args.rounds:
        name, path = spec.split("=", 1)
        round_dir = Path(path)
        run = round_dir.parent
        rates = window_false_negative_rates(round_dir / "embeddings" / "user.parquet",
                                            round_dir / "embeddings" / "item.parquet",
                                            read_positives(run / "data" / "train.parquet"),
                                            read_positives(run / "data" / "valid.parquet"))
        curves[name] = rates
        windows = [(1, 20), (1, 100), (1, 200), (101, 500), (201, 1000), (1, 1000)]
        print(name + ": " + ", ".join(f"{lo}:{hi} {rates[lo - 1 : hi].mean():.2%}" for lo, hi in windows))
        for width in (200, 800):
            lo, hi, rate, met = choose_rank_window(rates, width, args.max_rate)
            print(f"  auto, width {width}: {lo}:{hi} ({rate:.2%}{'' if met else ', not met'})")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        for name, rates in curves.items():
            smooth = np.convolve(rates, np.ones(10) / 10, mode="valid")
            ax.plot(np.arange(1, len(smooth) + 1), smooth * 100, label=name)
        ax.axhline(args.max_rate * 100, color="grey", ls="--", lw=1, label=f"{args.max_rate:.1%}: auto's limit on a window's mean")
        ax.set_xscale("log")
        ax.set_xlabel("rank among the user's non-positive items")
        ax.set_ylabel("held-out positives at that rank (%)")
        ax.set_title("False-negative rate by rank (validation split, round 0)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(args.out, dpi=110)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
