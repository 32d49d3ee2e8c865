"""``hnmine train``: parses its options and calls :func:`hnmine.training.trainer.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hnmine.errors import InputError

from .common import (
    BatchSize,
    ConfigFile,
    ConsoleProgress,
    Device,
    Dim,
    Epochs,
    HardCorrection,
    HardOffset,
    History,
    HistoryDropout,
    KeepBest,
    Logq,
    Lr,
    LrMin,
    MaxHistory,
    NumHardSample,
    NumSample,
    Patience,
    PopExponent,
    Quiet,
    Regime,
    Seed,
    Temperature,
    Threads,
    _hard_offset,
    app,
    fail,
)

TRAIN_EXAMPLE = (
    "Example:\n\n"
    "  hnmine train --positives sample_data/train.txt --epochs 5 --out model.pt\n\n"
    "  hnmine train --positives mined/pos_edge.parquet --item-nodes mined/item.parquet "
    "--hard-negatives mined/hard_neg_edge.parquet --regime shared --init model.pt --epochs 3 --lr 1e-3 --lr-min 1e-4 "
    "--out model2.pt\n"
)
@app.command(epilog=TRAIN_EXAMPLE)
def train(
    positives: Annotated[Path, typer.Option(help="Training positives: pos_edge.parquet, or any "
        "positives file (parquet, CSV, LightGCN txt).")],
    out: Annotated[Path, typer.Option(help="Model file to write (.pt).")],
    item_nodes: Annotated[Optional[Path], typer.Option(help="Item node table (item.parquet: id, weight) for "
        "the shared regime's weights.")] = None,
    hard_negatives: Annotated[Optional[Path], typer.Option(help="hard_neg_edge.parquet from hnmine mine.")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Warm start from this model file.")] = None,
    hard_window: Annotated[int, typer.Option(help="Size of the rank window the hard negatives were "
        "mined from (for --hard-offset auto).")] = 800,
    valid: Annotated[Optional[Path], typer.Option(help="Validation positives: Recall/NDCG@20 after each epoch "
        "(train positives masked); see --keep-best and --patience.")] = None,
    window_embeddings: Annotated[Optional[Path], typer.Option(help="--hard-correction mis: directory with the "
        "user.parquet / item.parquet the hard negatives were mined with.")] = None,
    rank_window: Annotated[Optional[str], typer.Option(help="--hard-correction mis: the window LO:HI they were "
        "mined from (sets the window size).")] = None,
    dim: Dim = 64,
    history: History = True,
    max_history: MaxHistory = None,
    history_dropout: HistoryDropout = 0.5,
    keep_best: KeepBest = True,
    patience: Patience = None,
    epochs: Epochs = 20,
    batch_size: BatchSize = 2048,
    lr: Lr = 1e-2,
    lr_min: LrMin = 1e-3,
    temperature: Temperature = 0.1,
    regime: Regime = "mixed",
    num_sample: NumSample = 2048,
    pop_exponent: PopExponent = 0.75,
    logq: Logq = True,
    num_hard_sample: NumHardSample = 50,
    hard_offset: HardOffset = "auto",
    hard_correction: HardCorrection = "offset",
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
    config: ConfigFile = None,
) -> None:
    """Train the two-tower model with sampled softmax over (positive, easy and hard negatives)."""
    from hnmine.training.config import TrainConfig
    from hnmine.training.trainer import train as run_train

    train_config = TrainConfig(
        positives=str(positives), out=str(out), item_nodes=str(item_nodes) if item_nodes else None,
        hard_negatives=str(hard_negatives) if hard_negatives else None, init=str(init) if init else None,
        dim=dim, history=history, max_history=max_history, history_dropout=history_dropout, keep_best=keep_best,
        patience=patience, valid=str(valid) if valid else None,
        epochs=epochs, batch_size=batch_size, lr=lr, lr_min=lr_min,
        temperature=temperature, regime=regime, num_sample=num_sample, pop_exponent=pop_exponent, logq=logq,
        num_hard_sample=num_hard_sample, hard_offset=_hard_offset(hard_offset), hard_window=hard_window,
        hard_correction=hard_correction, window_embeddings=str(window_embeddings) if window_embeddings else None,
        rank_window=rank_window, seed=seed, device=device, threads=threads,
    )
    try:
        report = run_train(train_config, ConsoleProgress(quiet))
    except InputError as exc:
        fail(str(exc))
    typer.echo(f"wrote {report.out}: {report.users:,} users, {report.items:,} items, {report.interactions:,} "
               f"positives, {report.hard_rows:,} hard negatives for {report.hard_users:,} users, "
               f"{report.seconds:.1f} s on {report.device}")


