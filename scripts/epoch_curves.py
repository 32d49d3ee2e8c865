"""Plot validation Recall@20 per epoch of round 0 for several `hnmine run` directories.

    python scripts/epoch_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Reads each RUN_DIR/round_00/manifest.json (the per-epoch validation metrics that `hnmine run
--valid-fraction` records), or the epoch lines of a run's terminal log (RUN_DIR ending in .log: a
run stopped part-way), and prints one row per epoch.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

EPOCH_LINE = re.compile(r"epoch (\d+)/\d+: loss ([\d.]+),.* valid recall@20 ([\d.]+)")


def read_epochs(run: str) -> list[dict[str, float]]:
    if run.endswith(".log"):
        text = Path(run).read_text().replace("\r", "\n")
        return [{"epoch": int(m[1]), "loss": float(m[2]), "valid_recall@20": float(m[3])}
                for m in EPOCH_LINE.finditer(text)]
    return json.loads((Path(run) / "round_00" / "manifest.json").read_text())["train_report"]["epochs"]


def main(argv: list[str]) -> None:
    out, runs = Path(argv[0]), [arg.split("=", 1) for arg in argv[1:]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, run in runs:
        epochs = read_epochs(run)
        xs = [e["epoch"] for e in epochs]
        axes[0].plot(xs, [e["valid_recall@20"] for e in epochs], marker="o", ms=3, label=label)
        axes[1].plot(xs, [e["loss"] for e in epochs], marker="o", ms=3, label=label)
        print(label, " ".join(f"{e['epoch']}:{e['valid_recall@20']:.4f}/{e['loss']:.2f}" for e in epochs))
    axes[0].set_title("validation Recall@20 (Gowalla, 10% of train held out)")
    axes[1].set_title("training loss")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1:])
