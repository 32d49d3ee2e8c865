"""``hnmine train``: parses its options and calls :func:`hnmine.training.trainer.train`."""

from __future__ import annotations

import typer

from hnmine.training.config import TrainConfig  # light: the options' declarations

from .common import ConfigFile, ConsoleProgress, Quiet, app
from .options import config_command

TRAIN_EXAMPLE = (
    "Example:\n\n"
    "  hnmine train --positives sample_data/train.txt --epochs 5 --out model.pt\n\n"
    "  hnmine train --positives mined/pos_edge.parquet --item-nodes mined/item.parquet "
    "--hard-negatives mined/hard_neg_edge.parquet --regime shared --init model.pt --epochs 3 --lr 1e-3 --lr-min 1e-4 "
    "--out model2.pt\n"
)


@app.command(epilog=TRAIN_EXAMPLE)
@config_command(TrainConfig)
def train(cfg: TrainConfig, quiet: Quiet = False, config: ConfigFile = None) -> None:
    """Train the two-tower model with sampled softmax over (positive, easy and hard negatives)."""
    from hnmine.training.trainer import train as run_train

    report = run_train(cfg, ConsoleProgress(quiet))
    typer.echo(f"wrote {report.out}: {report.users:,} users, {report.items:,} items, {report.interactions:,} "
               f"positives, {report.hard_rows:,} hard negatives for {report.hard_users:,} users, "
               f"{report.seconds:.1f} s on {report.device}")


