"""``hnmine evaluate``: calls :func:`hnmine.evaluate.evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from hnmine.errors import InputError

from .common import ConfigFile, _ks, app, fail

EVALUATE_EXAMPLE = (
    "Example:\n\n"
    "  hnmine evaluate --users emb/user.parquet --items emb/item.parquet --train sample_data/train.txt "
    "--test sample_data/test.txt --hard-negatives mined/hard_neg_edge.parquet\n"
)
@app.command(epilog=EVALUATE_EXAMPLE)
def evaluate(
    users: Annotated[Path, typer.Option(help="User embeddings (parquet file or directory: id, embedding).")],
    items: Annotated[Path, typer.Option(help="Item embeddings (parquet file or directory: id, embedding).")],
    train: Annotated[Path, typer.Option(help="Train positives (masked out of the ranking).")],
    test: Annotated[Path, typer.Option(help="Held-out positives to score.")],
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "20,50",
    hard_negatives: Annotated[Optional[Path], typer.Option(help="hard_neg_edge.parquet: report the share "
        "that are held-out positives.")] = None,
    window_width: Annotated[Optional[int], typer.Option(help="Also suggest a --rank-window of this many ranks: "
        "the hardest whose share of held-out positives is at most --max-false-negative-rate.")] = None,
    max_false_negative_rate: Annotated[float, typer.Option(help="With --window-width: the highest share of "
        "held-out positives the window may hold.")] = 0.007,
    id_column: Annotated[str, typer.Option(help="Id column of the embedding tables; USER,ITEM when they differ "
        "(TorchEasyRec predict output: user_id,adgroup_id).")] = "id",
    vector_column: Annotated[str, typer.Option(help="Vector column (list of floats, or comma-separated numbers); "
        "USER,ITEM when they differ (user_tower_emb,item_tower_emb).")] = "embedding",
    json_summary: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    config: ConfigFile = None,
) -> None:
    """Recall@K and NDCG@K by full ranking with train items masked; FN rate of a mined set."""
    from hnmine.evaluate import evaluate as run_evaluate

    if window_width is not None and window_width < 1:
        fail("--window-width must be at least 1")
    try:
        report = run_evaluate(users, items, train, test, _ks(k), hard_negatives, window_width,
                              max_false_negative_rate, id_column=id_column, vector_column=vector_column)
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
        for name, bucket in hn.get("buckets", {}).items():  # --adaptive-window's buckets
            share = "n/a" if bucket["rate"] is None else f"{bucket['rate']:.4%}"
            typer.echo(f"  {name}: {bucket['users']:,} users, ranks {bucket['rank_window']}, {bucket['rows']:,} rows, "
                       f"{bucket['heldout_positives']:,} held-out positives ({share})")
    if report.window:
        w = report.window
        verdict = "" if w["met"] else f" (no window meets {w['max_false_negative_rate']:.2%}: the lowest)"
        typer.echo(f"rank window: --rank-window {w['rank_window']}, expected false-negative rate "
                   f"{w['false_negative_rate']:.2%}{verdict}")


