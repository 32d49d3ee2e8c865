"""CLI commands of the training loop: ``train``, ``export``, ``evaluate``, ``run``.

Each parses options, builds the library's config and calls one function in ``hnmine/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from hnmine.cli.main import WaitLock, app, fail, log_line

from hnmine.errors import InputError

TRAIN_EXAMPLE = (
    "Example:\n\n"
    "  hnmine train --positives sample_data/train.txt --epochs 5 --out model.pt\n\n"
    "  hnmine train --positives mined/pos_edge.parquet --item-nodes mined/item.parquet "
    "--hard-negatives mined/hard_neg_edge.parquet --regime shared --init model.pt --epochs 3 --lr 1e-3 --lr-min 1e-4 "
    "--out model2.pt\n"
)
EXPORT_EXAMPLE = """Example:

  hnmine export --model model.pt --out-dir emb/
"""
EVALUATE_EXAMPLE = (
    "Example:\n\n"
    "  hnmine evaluate --users emb/user.parquet --items emb/item.parquet --train sample_data/train.txt "
    "--test sample_data/test.txt --hard-negatives mined/hard_neg_edge.parquet\n"
)
RUN_EXAMPLE = """Example:

  hnmine run --positives sample_data/train.txt --test sample_data/test.txt --iterations 3 --epochs 10 --out runs/sample
"""


class ConsoleTrainProgress:
    """A rich bar over each epoch's steps on a terminal; one log line per epoch and stage either way.

    Implements :class:`hnmine.loop.RunProgress` (not subclassed: that module imports torch).
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.epoch = 0
        self.epochs = 0

    def log(self, message: str) -> None:
        log_line(message, self.quiet)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.epochs = epoch, epochs
        if self.quiet or not self.tty:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(f"epoch {epoch}/{epochs}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), transient=True)
        self.task = self.bar.add_task("train", total=steps)
        self.bar.start()

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1)

    def end_epoch(self, stats: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        valid = "".join(f", {k.replace('_', ' ')} {v:.4f}" for k, v in stats.items() if k.startswith("valid_"))
        self.log(f"epoch {self.epoch}/{self.epochs}: loss {stats['loss']:.4f}, {stats['seconds']:.1f} s, "
                 f"lr {stats['lr']:.2e}{valid}")


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        fail(f"--k '{text}' must be comma-separated integers, e.g. 20,50")
    if not ks or min(ks) < 1:
        fail(f"--k '{text}' must be positive integers")
    return ks


def _hard_offset(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        fail(f"--hard-offset '{text}' must be a number or auto")
    return None


# Options shared by train and run (typer has no option groups; keep the two signatures in step).
Dim = Annotated[int, typer.Option(help="Embedding dimension.")]
History = Annotated[bool, typer.Option(help="User tower adds the mean of the user's history item embeddings.")]
MaxHistory = Annotated[Optional[int], typer.Option(help="Pool a fixed random subset of at most N history items "
                                                        "per user (bounds the cost of heavy users; default: all).")]
HistoryDropout = Annotated[float, typer.Option(help="Training only: leave each history item out of the user's "
    "pooled mean with this probability (besides the target), so the tower cannot memorise the training positives.")]
KeepBest = Annotated[bool, typer.Option(help="With a validation set: keep the weights of the epoch with the best "
    "validation Recall@20 (--no-keep-best: the last epoch's).")]
Patience = Annotated[Optional[int], typer.Option(help="With a validation set: stop after N epochs without a better "
    "validation Recall@20 (default: run every epoch).")]
Epochs = Annotated[int, typer.Option(help="Epochs (passes over the positives).")]
BatchSize = Annotated[int, typer.Option(help="Positives per step.")]
Lr = Annotated[float, typer.Option(help="Adam learning rate, cosine-decayed to --lr-min.")]
LrMin = Annotated[float, typer.Option(help="Final learning rate.")]
Temperature = Annotated[float, typer.Option(help="Softmax temperature on cosine scores.")]
Regime = Annotated[str, typer.Option(help="Easy negatives: shared (num_sample by item node weight, NegativeSampler), "
                                          "v2 (uniform over pos_edge items, NegativeSamplerV2), "
                                          "mixed (in-batch + num_sample uniform).")]
NumSample = Annotated[int, typer.Option(help="Easy negatives per batch (shared/v2), or the uniform ones added to the "
                                             "in-batch negatives (mixed).")]
PopExponent = Annotated[float, typer.Option(help="Item weight = popularity ** b when no item node table is given.")]
Logq = Annotated[bool, typer.Option(help="Subtract log(expected count) from each easy negative's logit.")]
NumHardSample = Annotated[int, typer.Option(help="Hard negatives per user: the first N of hard_neg_edge by weight "
                                                 "(HardNegativeSampler's num_hard_sample).")]
HardOffset = Annotated[str, typer.Option(help="Added to each hard negative's logit; auto = "
    "log(window / num_hard_sample).")]
HardCorrection = Annotated[str, typer.Option(help="How hard logits are corrected: offset (+ --hard-offset) or mis "
    "(multiple importance sampling: every easy and hard candidate weighted by 1 / (M q + H/window if in the user's "
    "window); needs the mining embeddings and window).")]
Seed = Annotated[int, typer.Option(help="Random seed (init, order, negatives).")]
Device = Annotated[str, typer.Option(help="auto (GPU when present)|cpu|cuda.")]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads for torch, at least 1 (default: torch's choice).")]
Quiet = Annotated[bool, typer.Option(help="No progress output.")]


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
) -> None:
    """Train the two-tower model with sampled softmax over \\[positive | easy | hard negatives]."""
    from hnmine.train import TrainConfig
    from hnmine.train import train as run_train

    config = TrainConfig(
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
        report = run_train(config, ConsoleTrainProgress(quiet))
    except InputError as exc:
        fail(str(exc))
    typer.echo(f"wrote {report.out}: {report.users:,} users, {report.items:,} items, {report.interactions:,} "
               f"positives, {report.hard_rows:,} hard negatives for {report.hard_users:,} users, "
               f"{report.seconds:.1f} s on {report.device}")


@app.command(epilog=EXPORT_EXAMPLE)
def export(
    model: Annotated[Path, typer.Option(help="Model file written by hnmine train.")],
    out_dir: Annotated[Path, typer.Option(help="Directory for user.parquet and item.parquet.")],
) -> None:
    """Write the model's unit-length user and item vectors in the input form of `hnmine mine`."""
    from hnmine.export import export_embeddings

    try:
        report = export_embeddings(model, out_dir)
    except InputError as exc:
        fail(exc)
    typer.echo(f"wrote {report.user_path} ({report.users:,} users) and {report.item_path} ({report.items:,} items), "
               f"dim {report.dim}")


@app.command(epilog=EVALUATE_EXAMPLE)
def evaluate(
    users: Annotated[Path, typer.Option(help="User embeddings (parquet: id, embedding).")],
    items: Annotated[Path, typer.Option(help="Item embeddings (parquet: id, embedding).")],
    train: Annotated[Path, typer.Option(help="Train positives (masked out of the ranking).")],
    test: Annotated[Path, typer.Option(help="Held-out positives to score.")],
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "20,50",
    hard_negatives: Annotated[Optional[Path], typer.Option(help="hard_neg_edge.parquet: report the share "
        "that are held-out positives.")] = None,
    window_width: Annotated[Optional[int], typer.Option(help="Also suggest a --rank-window of this many ranks: "
        "the hardest whose share of held-out positives is at most --max-false-negative-rate.")] = None,
    max_false_negative_rate: Annotated[float, typer.Option(help="With --window-width: the highest share of "
        "held-out positives the window may hold.")] = 0.007,
    json_summary: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Recall@K and NDCG@K by full ranking with train items masked; FN rate of a mined set."""
    from hnmine.evaluate import evaluate as run_evaluate

    if window_width is not None and window_width < 1:
        fail("--window-width must be at least 1")
    try:
        report = run_evaluate(users, items, train, test, _ks(k), hard_negatives, window_width,
                              max_false_negative_rate)
    except InputError as exc:
        fail(str(exc))
    if json_summary:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    typer.echo(f"users with held-out items: {report.users:,} ({report.users_without_embedding:,} without embedding)")
    typer.echo("  ".join(f"{name} {value:.4f}" for name, value in report.metrics.items()))
    if report.hard_negatives:
        hn = report.hard_negatives
        rate = "n/a" if hn["rate"] is None else f"{hn['rate']:.4%}"
        typer.echo(f"hard negatives: {hn['rows']:,}, held-out positives among them "
                   f"{hn['heldout_positives']:,} ({rate})")
    if report.window:
        w = report.window
        verdict = "" if w["met"] else f" (no window meets {w['max_false_negative_rate']:.2%}: the lowest)"
        typer.echo(f"rank window: --rank-window {w['rank_window']}, expected false-negative rate "
                   f"{w['false_negative_rate']:.2%}{verdict}")


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
    refine_epochs: Annotated[int, typer.Option(help="Epochs of rounds >= 1.")] = 3,
    refine_lr: Annotated[float, typer.Option(help="Learning rate of rounds >= 1 (they continue round 0's "
        "converged model; restarting at --lr undoes it).")] = 1e-3,
    refine_lr_min: Annotated[float, typer.Option(help="Final learning rate of rounds >= 1.")] = 1e-4,
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "20,50",
    rank_window: Annotated[str, typer.Option(help="Mining window LO:HI, or auto: each round the hardest "
        "--window-width ranks whose false-negative rate on the validation split is at most "
        "--max-false-negative-rate (needs --valid-fraction).")] = "auto",
    window_width: Annotated[int, typer.Option(help="--rank-window auto: ranks in the window.")] = 800,
    max_false_negative_rate: Annotated[float, typer.Option(help="--rank-window auto: the highest share of "
        "validation positives the window may hold.")] = 0.007,
    num_hard: Annotated[int, typer.Option(help="Hard negatives mined per user.")] = 50,
    strategy: Annotated[str, typer.Option(help="Mining strategy (see hnmine mine).")] = "uniform",
    edge_weight: Annotated[str, typer.Option(help="hard_neg_edge weight: score|rank|order|uniform (see hnmine mine).")] = "uniform",
    absolute_margin: Annotated[Optional[float], typer.Option(help="Each round: keep window items scoring <= "
        "ref - m (ref: --margin-reference of the user's positives' scores; see hnmine mine).")] = None,
    relative_margin: Annotated[Optional[float], typer.Option(help="Each round: keep window items scoring <= "
        "ref - |ref|*m (0.3: below 70% of ref).")] = None,
    margin_reference: Annotated[str, typer.Option(help="min|median|mean|max of the user's positives' "
        "scores.")] = "median",
    max_item_negatives: Annotated[Optional[int], typer.Option(help="Each round: cap on how many users may "
        "get one item as a hard negative.")] = None,
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
    quiet: Quiet = False,
) -> None:
    """Train → export → mine → retrain for N rounds; metrics per round, metrics.json and metrics.png."""
    from hnmine.loop import RunConfig, metrics_table
    from hnmine.loop import run as run_loop
    from hnmine.train import TrainConfig

    tcfg = TrainConfig(
        positives="", out="", dim=dim, history=history, max_history=max_history, history_dropout=history_dropout,
        keep_best=keep_best, patience=patience, epochs=epochs,
        batch_size=batch_size, lr=lr, lr_min=lr_min,
        temperature=temperature, regime=regime, num_sample=num_sample, pop_exponent=pop_exponent, logq=logq,
        num_hard_sample=num_hard_sample, hard_offset=_hard_offset(hard_offset), hard_correction=hard_correction,
        seed=seed, device=device, threads=threads,
    )
    config = RunConfig(
        positives=str(positives), out=str(out), iterations=iterations, round_patience=round_patience,
        test=str(test) if test else None,
        valid_fraction=valid_fraction, init=init, hard=hard, refine_epochs=refine_epochs, refine_lr=refine_lr,
        refine_lr_min=refine_lr_min, ks=_ks(k),
        rank_window=rank_window, window_width=window_width, max_false_negative_rate=max_false_negative_rate,
        num_hard=num_hard, strategy=strategy, edge_weight=edge_weight, absolute_margin=absolute_margin,
        relative_margin=relative_margin, margin_reference=margin_reference, max_item_negatives=max_item_negatives,
        train=tcfg, wait_lock=wait_lock,
    )
    try:
        results = run_loop(config, ConsoleTrainProgress(quiet))
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
        gain = "" if best["gain_over_round_0"] is None else f", {100 * best['gain_over_round_0']:+.2f}% over round 0"
        typer.echo(f"best round by validation {best['metric']}: {best['round']} ({best['value']:.4f}{gain}): "
                   f"{best['model']}")
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'metrics.png'}"
               + (f" and {best_path}" if best_path.exists() else ""))
    from hnmine.cli.report import write_report_or_fail

    typer.echo(f"wrote {write_report_or_fail(out, out / 'report.html', test)}")
