"""``hnmine select``: re-selects hard negatives from a candidate cache (``mine --save-candidates``) with
:func:`hnmine.mining.pipeline.select`; the same options as ``mine`` but the index's and where it runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from hnmine.mining.config import MineConfig  # light: the options' declarations

from .common import ConfigFile, ConsoleProgress, Quiet, app, fail
from .mine import HtmlReport, JsonSummary, print_result
from .options import config_command

SELECT_EXAMPLE = """Example:

  hnmine mine --users emb/user.parquet --items emb/item.parquet --positives train.txt --rank-window 1:1000 --save-candidates cand/ --out mined/
  hnmine select --candidates cand/ --users emb/user.parquet --items emb/item.parquet --positives train.txt --rank-window 201:600 --strategy softmax-v --out mined2/
"""

# mine's options select does not take: the cache holds the retrieval (--metric stays: the cache is
# checked against it), and select writes no cache and runs in this process
NOT_SELECT = ("index", "precision", "nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "audit_sample",
              "item_shards", "engine", "ray_address", "workers", "threads_per_worker", "save_candidates")


@app.command(epilog=SELECT_EXAMPLE)
@config_command(MineConfig, exclude=NOT_SELECT)
def select(
    cfg: MineConfig,
    candidates: Annotated[Optional[Path], typer.Option(
        help="Candidate cache written by hnmine mine --save-candidates DIR.")] = None,
    json_summary: JsonSummary = False,
    quiet: Quiet = False,
    html_report: HtmlReport = False,
    config: ConfigFile = None,
) -> None:
    """Re-select hard negatives from a candidate cache: a new window (inside the cached depth), strategy,
    filters, cap or seed without retrieval; the same files as hnmine mine with these options.

    The cache is refused if it was made from other embeddings, positives or --metric.
    """
    if candidates is None:
        fail("missing option --candidates")
    from hnmine.mining.pipeline import select as run_select

    report = run_select(cfg, str(candidates), progress=ConsoleProgress(quiet), command=["hnmine", *sys.argv[1:]])
    print_result(report, cfg, json_summary, html_report, quiet)
