"""``hnmine run``: parses its options and calls :func:`hnmine.loop.runner.run`."""

from __future__ import annotations

import json
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
    Engine,
    Epochs,
    HardCorrection,
    HardOffset,
    History,
    HistoryDropout,
    ItemShards,
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
    RayAddress,
    Regime,
    Seed,
    Temperature,
    Threads,
    ThreadsPerWorker,
    WaitLock,
    Workers,
    _hard_offset,
    _ks,
    app,
    fail,
)

RUN_EXAMPLE = """Example:

  hnmine run --positives sample_data/train.txt --test sample_data/test.txt --iterations 3 --epochs 10 --out runs/sample
"""


@app.command(epilog=RUN_EXAMPLE)
def run(
    positives: Annotated[Path, typer.Option(help="Training positives (parquet, CSV, LightGCN txt).")],
    out: Annotated[Path, typer.Option(help="Run directory (created; an existing run there is resumed).")],
    iterations: Annotated[int, typer.Option(help="Rounds at most: round 0 without hard negatives, then mine + "
        "retrain (see --round-patience).")] = 12,
    round_patience: Annotated[int, typer.Option(help="Stop before --iterations once this many rounds in a row "
        "have not beaten the best validation Recall@20 (0: run every round; off without a validation "
        "split).")] = 0,
    test: Annotated[Optional[Path], typer.Option(help="Test positives to report metrics on.")] = None,
    valid_fraction: Annotated[float, typer.Option(help="Hold out this share of each user's "
        "positives as validation (0: none; --rank-window auto needs it).")] = 0.1,
    init: Annotated[str, typer.Option(help="Rounds >= 1: warm (from the previous model) or scratch.")] = "warm",
    hard: Annotated[bool, typer.Option(help="Use the mined negatives (--no-hard: same "
        "schedule without them, the control).")] = True,
    control: Annotated[bool, typer.Option("--control", help="Also train the --no-hard control each round (same "
        "schedule and seeds, from the same round 0; about twice the training time) and state mining's gain over it "
        "in the summary, metrics.json, best_round.json and the plot.")] = False,
    refine_epochs: Annotated[int, typer.Option(help="Epochs of rounds >= 1.")] = 3,
    refine_lr: Annotated[float, typer.Option(help="Learning rate of rounds >= 1 (they continue round 0's "
        "converged model; restarting at --lr undoes it).")] = 1e-3,
    refine_lr_min: Annotated[float, typer.Option(help="Final learning rate of rounds >= 1.")] = 1e-4,
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "20,50",
    rank_window: Annotated[str, typer.Option(help="Mining window LO:HI, or auto: each round the hardest "
        "--window-width ranks whose false-negative rate on the validation split is at most "
        "--max-false-negative-rate (needs --valid-fraction). Unlike mine's fixed 101:500: the loop has a validation "
        "split to choose the window on, and the right depth moves as the model improves.")] = "auto",
    window_width: Annotated[int, typer.Option(help="--rank-window auto: ranks in the window.")] = 800,
    max_false_negative_rate: Annotated[float, typer.Option(help="--rank-window auto: the highest share of "
        "validation positives the window may hold.")] = 0.007,
    num_hard: Annotated[int, typer.Option(help="Hard negatives mined per user. 50 (mine: 10) so that the trainer's "
        "--num-hard-sample (50) finds a full set for every user each step.")] = 50,
    strategy: Annotated[str, typer.Option(help="Mining strategy (see hnmine mine).")] = "uniform",
    edge_weight: Annotated[str, typer.Option(help="hard_neg_edge weight: score|rank|order|uniform (see hnmine mine). "
        "uniform (mine: score): the trainer takes all --num-hard mined rows, so the weight orders nothing and "
        "uniform keeps the strategy's draw as it is.")] = "uniform",
    absolute_margin: Annotated[Optional[float], typer.Option(help="Each round: keep window items scoring <= "
        "ref - m (ref: --margin-reference of the user's positives' scores; see hnmine mine).")] = None,
    relative_margin: Annotated[Optional[float], typer.Option(help="Each round: keep window items scoring <= "
        "ref - |ref|*m (0.3: below 70% of ref).")] = None,
    margin_reference: Annotated[str, typer.Option(help="min|median|mean|max of the user's positives' "
        "scores.")] = "median",
    max_item_negatives: Annotated[Optional[int], typer.Option(help="Each round: cap on how many users may "
        "get one item as a hard negative.")] = None,
    engine: Engine = "local",
    ray_address: RayAddress = "auto",
    workers: Workers = 1,
    threads_per_worker: ThreadsPerWorker = 1,
    item_shards: ItemShards = 1,
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
    wait_lock: WaitLock = 0.0,
    valid: Annotated[Optional[Path], typer.Option(help="Validation positives from a file (e.g. the split an external "
        "trainer's data left out); replaces the --valid-fraction split.")] = None,
    train_command: Annotated[Optional[str], typer.Option(help="Train with an external trainer: this command, run "
        "each round, with placeholders such as {round}, {mined}, {model_dir}, {prev_model_dir}, {seed} "
        "(docs/external.md). Default: the built-in trainer.")] = None,
    first_train_command: Annotated[Optional[str], typer.Option(help="Round 0's train command (no mined tables "
        "yet; default: --train-command).")] = None,
    export_command: Annotated[Optional[str], typer.Option(help="Run after the train command; it leaves the user "
        "and item embeddings at --user-embeddings / --item-embeddings (default: the train command does).")] = None,
    user_embeddings: Annotated[str, typer.Option(help="External trainer: where its user embeddings are left "
        "(parquet file or directory, e.g. TorchEasyRec predict output {export_dir}/user_emb).")]
        = "{export_dir}/user.parquet",
    item_embeddings: Annotated[str, typer.Option(help="External trainer: where its item embeddings are "
        "left.")] = "{export_dir}/item.parquet",
    id_column: Annotated[str, typer.Option(help="External trainer: id column of its embedding tables; USER,ITEM "
        "when they differ (user_id,adgroup_id).")] = "id",
    vector_column: Annotated[str, typer.Option(help="External trainer: vector column (list of floats, or "
        "comma-separated numbers); USER,ITEM when they differ (user_tower_emb,item_tower_emb).")] = "embedding",
    train_timeout: Annotated[Optional[float], typer.Option(help="Seconds a train command may run before it is "
        "stopped and the run fails (exit 3; a rerun resumes at that round). Default: no limit.")] = None,
    export_timeout: Annotated[Optional[float], typer.Option(help="The same for the export command.")] = None,
    quiet: Quiet = False,
    config: ConfigFile = None,
) -> None:
    """Train → export → mine → retrain for N rounds; metrics per round, metrics.json and metrics.png."""
    from hnmine.loop.runner import RunConfig, metrics_table, summary_line
    from hnmine.loop.runner import run as run_loop
    from hnmine.training.config import TrainConfig

    tcfg = TrainConfig(
        positives="", out="", dim=dim, history=history, max_history=max_history, history_dropout=history_dropout,
        keep_best=keep_best, patience=patience, epochs=epochs,
        batch_size=batch_size, lr=lr, lr_min=lr_min,
        temperature=temperature, regime=regime, num_sample=num_sample, pop_exponent=pop_exponent, logq=logq,
        num_hard_sample=num_hard_sample, hard_offset=_hard_offset(hard_offset), hard_correction=hard_correction,
        seed=seed, device=device, threads=threads,
    )
    run_config = RunConfig(
        positives=str(positives), out=str(out), iterations=iterations, round_patience=round_patience,
        test=str(test) if test else None,
        valid_fraction=valid_fraction, init=init, hard=hard, control=control, refine_epochs=refine_epochs, refine_lr=refine_lr,
        refine_lr_min=refine_lr_min, ks=_ks(k),
        rank_window=rank_window, window_width=window_width, max_false_negative_rate=max_false_negative_rate,
        num_hard=num_hard, strategy=strategy, edge_weight=edge_weight, absolute_margin=absolute_margin,
        relative_margin=relative_margin, margin_reference=margin_reference, max_item_negatives=max_item_negatives,
        engine=engine, ray_address=ray_address, workers=workers, threads_per_worker=threads_per_worker,
        item_shards=item_shards,
        train=tcfg, wait_lock=wait_lock, valid=str(valid) if valid else None, train_command=train_command,
        first_train_command=first_train_command, export_command=export_command, user_embeddings=user_embeddings,
        item_embeddings=item_embeddings, id_column=id_column, vector_column=vector_column,
        train_timeout=train_timeout, export_timeout=export_timeout,
    )
    try:
        results = run_loop(run_config, ConsoleProgress(quiet))
    except InputError as exc:
        fail(exc)
    table = metrics_table(results)
    import polars as pl

    with pl.Config(tbl_rows=100, tbl_cols=100, float_precision=4, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, tbl_width_chars=200):
        typer.echo(str(table))
    best_path = out / "best_round.json"
    if best_path.exists():  # written by the run when it has a validation split
        best = json.loads(best_path.read_text())
        typer.echo(f"{summary_line(best)}: {best['model']}")
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'metrics.png'}"
               + (f" and {best_path}" if best_path.exists() else ""))
    from .report import write_report_or_fail

    typer.echo(f"wrote {write_report_or_fail(out, out / 'report.html', test)}")
