"""``hnmine select``: re-selects hard negatives from a candidate cache (``mine --save-candidates``) with
:func:`hnmine.mining.pipeline.select`; the same options as ``mine`` but the index's."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from hnmine.errors import InputError

from .common import ConfigFile, ConsoleProgress, WaitLock, app, fail
from .mine import (
    AbsoluteMargin,
    AllowEmpty,
    AttrColumns,
    AttrDelimiter,
    ChunkSize,
    EdgeWeight,
    ExcludeSame,
    Formats,
    HtmlReport,
    IdColumn,
    ItemColumn,
    ItemFeatures,
    ItemFeaturesIdColumn,
    ItemIds,
    Items,
    JsonSummary,
    MarginReference,
    MaxItemNegatives,
    MaxMemory,
    MaxPositiveSimilarity,
    MaxScore,
    Metric,
    MinScore,
    MissingItemFeatures,
    NumHard,
    Out,
    Overwrite,
    PopExponent,
    Positives,
    PositivesFormat,
    Quiet,
    RankWindow,
    RelativeMargin,
    Rho,
    Seed,
    Strategy,
    Temperature,
    Threads,
    UserColumn,
    UserIds,
    Users,
    VectorColumn,
    WeightColumn,
    mine_config,
    print_result,
)

SELECT_EXAMPLE = """Example:

  hnmine mine --users emb/user.parquet --items emb/item.parquet --positives train.txt --rank-window 1:1000 --save-candidates cand/ --out mined/
  hnmine select --candidates cand/ --users emb/user.parquet --items emb/item.parquet --positives train.txt --rank-window 201:600 --strategy softmax-v --out mined2/
"""


@app.command(epilog=SELECT_EXAMPLE)
def select(
    ctx: typer.Context,
    candidates: Annotated[Optional[Path], typer.Option(help="Candidate cache written by hnmine mine --save-candidates DIR.")] = None,
    users: Users = None,
    items: Items = None,
    positives: Positives = None,
    out: Out = None,
    config: ConfigFile = None,
    user_ids: UserIds = None,
    item_ids: ItemIds = None,
    id_column: IdColumn = "id",
    vector_column: VectorColumn = "embedding",
    positives_format: PositivesFormat = "auto",
    user_column: UserColumn = "user_id",
    item_column: ItemColumn = "item_id",
    weight_column: WeightColumn = None,
    item_features: ItemFeatures = None,
    item_features_id_column: ItemFeaturesIdColumn = "id",
    attr_columns: AttrColumns = None,
    attr_delimiter: AttrDelimiter = "\\x02",
    missing_item_features: MissingItemFeatures = "fill",
    rank_window: RankWindow = "101:500",
    num_hard: NumHard = 10,
    strategy: Strategy = "uniform",
    temperature: Temperature = 1.0,
    rho: Rho = 0.1,
    max_score: MaxScore = None,
    min_score: MinScore = None,
    absolute_margin: AbsoluteMargin = None,
    relative_margin: RelativeMargin = None,
    margin_reference: MarginReference = "median",
    max_item_negatives: MaxItemNegatives = None,
    max_positive_similarity: MaxPositiveSimilarity = None,
    exclude_same: ExcludeSame = None,
    seed: Seed = 0,
    metric: Metric = "ip",
    chunk_size: ChunkSize = 16384,
    max_memory: MaxMemory = None,
    threads: Threads = None,
    edge_weight: EdgeWeight = "score",
    pop_exponent: PopExponent = 0.75,
    formats: Formats = "parquet,graphlearn",
    overwrite: Overwrite = False,
    wait_lock: WaitLock = 0.0,
    allow_empty: AllowEmpty = False,
    json_summary: JsonSummary = False,
    quiet: Quiet = False,
    html_report: HtmlReport = False,
) -> None:
    """Re-select hard negatives from a candidate cache: a new window (inside the cached depth), strategy,
    filters, cap or seed without retrieval; the same files as hnmine mine with these options.

    The cache is refused if it was made from other embeddings, positives or --metric.
    """
    if candidates is None:
        fail("missing option --candidates")
    cfg = mine_config(ctx)
    from hnmine.mining.pipeline import select as run_select

    try:
        report = run_select(cfg, str(candidates), progress=ConsoleProgress(quiet), command=["hnmine", *sys.argv[1:]])
    except InputError as exc:
        fail(exc)
    print_result(report, cfg, json_summary, html_report, quiet)
