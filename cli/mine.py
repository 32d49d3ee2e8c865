"""``hnmine mine``: parses its options (and a TOML config) and calls :func:`hnmine.mining.pipeline.mine`."""

from __future__ import annotations

import codecs
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from hnmine.errors import InputError
from hnmine.io.storage import is_url, url

if TYPE_CHECKING:  # the library's modules load FAISS, numba and torch: each command imports what it runs
    from hnmine.mining.config import MineConfig
    from hnmine.mining.pipeline import MineReport


from .common import (
    ConfigFile,
    ConsoleProgress,
    Engine,
    ItemShards,
    RayAddress,
    ThreadsPerWorker,
    WaitLock,
    Workers,
    app,
    fail,
    log_line,
)

MINE_EXAMPLE = """Example:

  hnmine mine --users emb/user.parquet --items emb/item.parquet --positives train.txt --rank-window 101:500 --num-hard 10 --out mined/
"""


def _counted(reasons: dict[str, int]) -> str:
    """``12 (catalog 10, filters 2)``: a total with its reasons."""
    total = f"{sum(reasons.values()):,}"
    return total + (" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())) + ")" if reasons else "")


def print_report(report: MineReport) -> None:
    total_rows = ", ".join(f"{name} {rows:,}" for name, rows in report.rows.items())
    lines = [
        f"published {report.out}",
        f"users {report.users:,}: {report.users_complete:,} complete, "
        f"{_counted(report.users_short)} short, {_counted(report.users_empty)} empty",
        f"items {report.items:,} (dim {report.dim}); positives {report.positives:,} "
        f"({report.duplicate_positives:,} duplicates merged; {report.unknown_user_positives:,} with a user and "
        f"{report.unknown_item_positives:,} with an item that has no embedding, not written)",
        f"rows: {total_rows}",
    ]
    if report.score:
        lines.append("score: " + ", ".join(f"{k} {v:.4g}" for k, v in report.score.items()))
    if report.rank:
        lines.append("rank: " + ", ".join(f"{k} {v:.4g}" for k, v in report.rank.items()))
    if report.attr_fields != ["item_id"]:
        lines.append(f"item features: {report.items_without_features:,} items without a feature row")
    if report.audit:
        lines.append(f"audit: window recall {report.audit['window_recall']:.4f} over {report.audit['users']} users")
    lines.append("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings.items()))
    typer.echo("\n".join(lines))


def _floats(text: str | None) -> float | None:
    return None if text is None else float(text)


def mine_config(ctx: typer.Context) -> MineConfig:
    """The MineConfig of a mine or select command line (options the library does not take left out)."""
    options = {k: v for k, v in ctx.params.items() if k not in OUTPUT_ONLY}
    for required in ("users", "items", "positives", "out"):
        if not options.get(required):
            fail(f"missing option --{required}")
    try:
        options["attr_delimiter"] = codecs.decode(str(options["attr_delimiter"]), "unicode_escape")
    except UnicodeDecodeError:
        fail(f"--attr-delimiter '{options['attr_delimiter']}' is not a valid escape")
    for key in ("max_score", "min_score", "absolute_margin", "relative_margin"):
        try:
            options[key] = _floats(options[key])
        except ValueError:
            fail(f"--{key.replace('_', '-')} '{options[key]}' is not a number")
    for key in ("attr_columns", "formats"):
        if isinstance(options[key], str):
            options[key] = [part.strip() for part in options[key].split(",") if part.strip()]
    options["rank_window"] = str(options["rank_window"])
    from hnmine.mining.config import MineConfig

    known = {f.name for f in fields(MineConfig)}
    settings: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items() if k in known}
    cfg = MineConfig(**settings)
    if ctx.params.get("html_report") and is_url(cfg.out):
        fail(f"{url(cfg.out)}: --report writes into a local --out; run hnmine report on a local copy instead")
    return cfg


def print_result(report: MineReport, cfg: MineConfig, json_summary: bool, html_report: bool, quiet: bool) -> None:
    if json_summary:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if html_report:
        from .report import write_report_or_fail

        log_line(f"wrote {write_report_or_fail(Path(cfg.out), Path(cfg.out) / 'report.html')}", quiet)


# Options of what a command prints and where its cache is read: not MineConfig fields.
OUTPUT_ONLY = ("config", "dry_run", "json_summary", "quiet", "html_report", "candidates")


# Options mine and select share (typer has no option groups: declared once, here).
MaxPositiveSimilarity = Annotated[Optional[float], typer.Option(help="Drop window items whose cosine with one of the user's positives (item embeddings) is above this: near duplicates.")]
ExcludeSame = Annotated[Optional[str], typer.Option(help="Drop window items sharing this --item-features column's value (a product or cluster id) with one of the user's positives.")]
Users = Annotated[Optional[Path], typer.Option(help="User embeddings: parquet file or directory, or .npy with --user-ids.")]
Items = Annotated[Optional[Path], typer.Option(help="Item embeddings: parquet file or directory, or .npy with --item-ids.")]
Positives = Annotated[Optional[Path], typer.Option(help="Users' positives: parquet, CSV/TSV or LightGCN text (user item item ...).")]
Out = Annotated[Optional[Path], typer.Option(help="Output directory, published atomically.")]
UserIds = Annotated[Optional[Path], typer.Option(help="Ids for a .npy user matrix (.npy, .parquet or one id per line).")]
ItemIds = Annotated[Optional[Path], typer.Option(help="Ids for a .npy item matrix.")]
IdColumn = Annotated[str, typer.Option(help="Id column of the embedding tables; USER,ITEM when they differ (TorchEasyRec predict output: user_id,adgroup_id).")]
VectorColumn = Annotated[str, typer.Option(help="Vector column (list of floats, or comma-separated numbers); USER,ITEM when they differ (user_tower_emb,item_tower_emb).")]
PositivesFormat = Annotated[str, typer.Option(help="auto|parquet|csv|lightgcn (auto: by file suffix).")]
UserColumn = Annotated[str, typer.Option(help="User id column of the positives.")]
ItemColumn = Annotated[str, typer.Option(help="Item id column of the positives.")]
WeightColumn = Annotated[Optional[str], typer.Option(help="Weight column of the positives (default: weight 1).")]
ItemFeatures = Annotated[Optional[Path], typer.Option(help="Item feature table (parquet/CSV) whose columns become the item attrs.")]
ItemFeaturesIdColumn = Annotated[str, typer.Option(help="Id column of the item feature table.")]
AttrColumns = Annotated[Optional[str], typer.Option(help="Comma-separated feature columns, in attr_fields order (default: all but the id).")]
AttrDelimiter = Annotated[str, typer.Option(help="Delimiter joining attrs, escapes allowed (the sampler's attr_delimiter).")]
MissingItemFeatures = Annotated[str, typer.Option(help="Items absent from --item-features: fill (their id attr is the node id, other attrs empty) or error.")]
RankWindow = Annotated[str, typer.Option(help="LO:HI, 1-based ranks among the user's non-positive items.")]
NumHard = Annotated[int, typer.Option(help="Hard negatives per user.")]
Strategy = Annotated[str, typer.Option(help="uniform|top|softmax|softmax-v|all.")]
Temperature = Annotated[float, typer.Option(help="softmax: sampling temperature on scores.")]
Rho = Annotated[float, typer.Option(help="softmax-v: rho of the adaptive temperature sqrt(Var/(2 rho)); smaller is harder.")]
MaxScore = Annotated[Optional[str], typer.Option(help="Drop negatives scoring above this.")]
MinScore = Annotated[Optional[str], typer.Option(help="Drop negatives scoring below this.")]
AbsoluteMargin = Annotated[Optional[str], typer.Option(help="Keep negatives with score <= ref - m (ref: --margin-reference of the user's positives' scores).")]
RelativeMargin = Annotated[Optional[str], typer.Option(help="Keep negatives with score <= ref - |ref|*m (0.05: below 95% of ref).")]
MarginReference = Annotated[str, typer.Option(help="min|median|mean|max of the user's positives' scores.")]
MaxItemNegatives = Annotated[Optional[int], typer.Option(help="Cap on how many users may get one item as a hard negative.")]
Seed = Annotated[int, typer.Option(help="Random seed; a user's draw depends only on (seed, user id).")]
Metric = Annotated[str, typer.Option(help="ip|cosine.")]
ChunkSize = Annotated[int, typer.Option(help="Users per chunk (bounds memory; the output does not depend on it).")]
MaxMemory = Annotated[Optional[str], typer.Option(help="Cap on resident memory, e.g. 2G or 500M: --chunk-size is lowered to stay under it (the output does not depend on it); refused if the inputs and index alone do not fit.")]
Threads = Annotated[Optional[int], typer.Option(help="Threads of FAISS and the compiled loops, at least 1 (default: all cores).")]
EdgeWeight = Annotated[str, typer.Option(help="hard_neg_edge weight: score|rank|order|uniform (the consumer keeps each user's top num_hard_sample by weight).")]
PopExponent = Annotated[float, typer.Option(help="Item node weight = popularity ** b.")]
Formats = Annotated[str, typer.Option(help="Comma-separated: parquet,graphlearn.")]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing hnmine output at --out.")]
AllowEmpty = Annotated[bool, typer.Option("--allow-empty", help="Publish even if hard_neg_edge or pos_edge has no rows (an error otherwise).")]
JsonSummary = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
Quiet = Annotated[bool, typer.Option(help="No progress output.")]
HtmlReport = Annotated[bool, typer.Option("--report", help="Also write OUT/report.html (hnmine report).")]


@app.command(epilog=MINE_EXAMPLE)
def mine(
    ctx: typer.Context,
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
    index: Annotated[
        str, typer.Option(help="auto|flat|exact (exact, same output: flat = FAISS, exact = tiled GEMM engine, auto = exact from 2e8 user-item pairs, else flat)|ivf|hnsw (approximate).")
    ] = "auto",
    precision: Annotated[
        str, typer.Option(help="exact: GEMM precision auto|fp32|bf16 (bf16 tiles by torch, every candidate rescored in fp32: same output; auto = bf16 for big jobs where the CPU has AMX/AVX512-BF16).")
    ] = "auto",
    nlist: Annotated[Optional[int], typer.Option(help="ivf: number of clusters (default 4*sqrt(items)).")] = None,
    nprobe: Annotated[int, typer.Option(help="ivf: clusters searched per query.")] = 64,
    hnsw_m: Annotated[int, typer.Option(help="hnsw: links per node.")] = 32,
    ef_construction: Annotated[int, typer.Option(help="hnsw: build-time beam.")] = 200,
    ef_search: Annotated[int, typer.Option(help="hnsw: search beam (raised to at least the search depth).")] = 512,
    audit_sample: Annotated[int, typer.Option(help="Approximate index: compare this many users with exact search; window recall goes into manifest.json.")] = 0,
    chunk_size: ChunkSize = 16384,
    max_memory: MaxMemory = None,
    threads: Threads = None,
    item_shards: ItemShards = 1,
    engine: Engine = "local",
    ray_address: RayAddress = "auto",
    workers: Workers = 1,
    threads_per_worker: ThreadsPerWorker = 1,
    edge_weight: EdgeWeight = "score",
    pop_exponent: PopExponent = 0.75,
    formats: Formats = "parquet,graphlearn",
    overwrite: Overwrite = False,
    wait_lock: WaitLock = 0.0,
    allow_empty: AllowEmpty = False,
    save_candidates: Annotated[Optional[Path], typer.Option(help="Also publish each user's ranks 1..HI with their scores into this directory, for hnmine select (docs/select.md).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan (rows, depth, memory, time) and exit.")] = False,
    json_summary: JsonSummary = False,
    quiet: Quiet = False,
    html_report: HtmlReport = False,
) -> None:
    """Mine hard negatives: FAISS top-K per user, ranks LO..HI among non-positives, sampler tables out.

    Writes hard_neg_edge, pos_edge, user and item tables as parquet and GraphLearn text,
    with manifest.json and _SUCCESS, into --out.
    """
    cfg = mine_config(ctx)
    from hnmine.mining.pipeline import mine as run_mine
    from hnmine.mining.pipeline import plan

    try:
        if dry_run:
            result = plan(cfg)
            if json_summary:
                typer.echo(json.dumps(result.to_dict(), indent=2))
            else:
                for key, value in result.to_dict().items():
                    if key == "estimated_peak_memory_bytes":
                        value = f"{value / 2**20:,.0f} MiB"
                    elif key == "estimated_seconds":
                        value = f"{value:,.1f} s (from {result.sampled_users} sampled users)"
                    typer.echo(f"{key.replace('_', ' ')}: {value}")
            return
        report = run_mine(cfg, progress=ConsoleProgress(quiet), command=["hnmine", *sys.argv[1:]])
    except InputError as exc:
        fail(exc)
    print_result(report, cfg, json_summary, html_report, quiet)
