"""``hnmine evaluate``: calls :func:`hnmine.evaluate.ranking.run_evaluate`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hnmine.evaluate.config import EvaluateConfig  # light: the options' declarations

from .common import ConfigFile, app
from .options import config_command

EVALUATE_EXAMPLE = (
    "Example:\n\n"
    "  hnmine evaluate --users emb/user.parquet --items emb/item.parquet --train sample_data/train.txt "
    "--test sample_data/test.txt --hard-negatives mined/hard_neg_edge.parquet\n"
)


@app.command(epilog=EVALUATE_EXAMPLE)
@config_command(EvaluateConfig)
def evaluate(
    cfg: EvaluateConfig,
    json_summary: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    config: ConfigFile = None,
) -> None:
    """Recall@K and NDCG@K by full ranking with train items masked; FN rate of a mined set."""
    from hnmine.evaluate.ranking import run_evaluate

    report = run_evaluate(cfg)
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


