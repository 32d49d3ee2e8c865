"""``hnmine mine``'s options, each declared once (:func:`hnmine.options.option`), nested by what they
set: the inputs, the output, the selection from each user's rank window, the index, the execution.

:class:`MineConfig` nests them; ``hnmine run`` nests the same :class:`SelectionConfig`. This module
imports nothing heavy: the command line builds ``hnmine mine``'s options from it at ``--help`` time.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from hnmine.errors import InputError
from hnmine.options import (
    EDGE_WEIGHTS,
    MAX_COUNT,
    EdgeWeight,
    EmbeddingColumns,
    RankWindow,
    build_config,
    check_finite_options,
    column_pair,
    flat_options,
    group,
    option,
    parse_list,
    parse_number,
    parse_size,
    parse_window_or_auto,
    show_list,
    show_text,
)

__all__ = ["ENGINES", "FORMATS", "INDEX_KINDS", "METRICS", "MISSING_ITEM_FEATURES", "PRECISIONS", "REFERENCES",
           "STRATEGIES", "Execution", "IndexSpec", "MineConfig", "MineInputs", "MineOutput", "SelectionConfig"]

FORMATS = ("parquet", "graphlearn")
# local: this process, chunk by chunk; ray: the same per-chunk work mapped over a Ray actor pool
ENGINES = ("local", "ray")
MISSING_ITEM_FEATURES = ("fill", "error")
Strategy = Literal["uniform", "top", "softmax", "softmax-v", "all"]
STRATEGIES: tuple[Strategy, ...] = ("uniform", "top", "softmax", "softmax-v", "all")
REFERENCES: tuple[str, ...] = ("min", "median", "mean", "max")
IndexKind = Literal["auto", "flat", "exact", "ivf", "hnsw"]
Metric = Literal["ip", "cosine"]
Precision = Literal["auto", "fp32", "bf16"]
INDEX_KINDS: tuple[IndexKind, ...] = ("auto", "flat", "exact", "ivf", "hnsw")
METRICS: tuple[Metric, ...] = ("ip", "cosine")
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16")


def _delimiter(text: str) -> str:
    """``\\x02`` (as typed) -> the character."""
    try:
        return codecs.decode(text, "unicode_escape")
    except UnicodeDecodeError:
        raise InputError(f"--attr-delimiter '{text}' is not a valid escape") from None


def _escaped(text: str) -> str:
    return codecs.encode(text, "unicode_escape").decode("ascii")


@dataclass(frozen=True)
class MineInputs:
    """The embeddings and positives to mine, and how to read them."""

    users: str = option(help="User embeddings: parquet file or directory, or .npy with --user-ids.", path=True)
    items: str = option(help="Item embeddings: parquet file or directory, or .npy with --item-ids.", path=True)
    positives: str = option(help="Users' positives: parquet, CSV/TSV or LightGCN text (user item item ...).",
                            path=True)
    user_ids: str | None = option(None, help="Ids for a .npy user matrix (.npy, .parquet or one id per line).",
                                  path=True)
    item_ids: str | None = option(None, help="Ids for a .npy item matrix.", path=True)
    columns: EmbeddingColumns = group(EmbeddingColumns)  # --id-column, --vector-column (evaluate's and run's too)
    positives_format: str = option("auto", help="auto|parquet|csv|lightgcn (auto: by file suffix).")
    user_column: str = option("user_id", help="User id column of the positives.")
    item_column: str = option("item_id", help="Item id column of the positives.")
    weight_column: str | None = option(None, help="Weight column of the positives (default: weight 1).")
    item_features: str | None = option(None, help="Item feature table (parquet/CSV) whose columns become the "
                                                  "item attrs.", path=True)
    item_features_id_column: str = option("id", help="Id column of the item feature table.")
    attr_columns: list[str] | None = option(None, help="Comma-separated feature columns, in attr_fields order "
                                                       "(default: all but the id).",
                                            parse=parse_list, show=show_list, cli_type=str)
    attr_delimiter: str = option("\x02", help="Delimiter joining attrs, escapes allowed (the sampler's "
                                              "attr_delimiter).", parse=_delimiter, show=_escaped)
    # "fill" gives items absent from --item-features their node id as the id attr (the consumer takes
    # a negative's item id from the attrs), "error" refuses them
    missing_item_features: str = option("fill", help="Items absent from --item-features: fill (their id attr is "
                                                     "the node id, other attrs empty) or error.")


@dataclass(frozen=True)
class MineOutput:
    """Where and in which forms the tables are published."""

    out: str = option(help="Output directory, published atomically.", path=True)
    formats: list[str] = option(help="Comma-separated: parquet,graphlearn.", default_factory=lambda: list(FORMATS),
                                parse=parse_list, show=show_list, cli_type=str)
    pop_exponent: float = option(0.75, help="Item node weight = popularity ** b.")
    overwrite: bool = option(False, help="Replace an existing hnmine output at --out.")
    wait_lock: float = option(0.0, help="Seconds to wait while another hnmine process writes the same output "
                                        "(holds its lock); then, or at once with 0, exit 75.")
    # an output without hard negatives or without positive edges is an error unless this is set
    allow_empty: bool = option(False, help="Publish even if hard_neg_edge or pos_edge has no rows (an error "
                                           "otherwise).", switch=True)
    # also publish each user's ranks 1..HI with their scores here, for `hnmine select` (hnmine/mining/candidates.py)
    save_candidates: str | None = option(None, help=(
        "Also publish each user's ranks 1..HI with their scores into this directory, for hnmine select "
        "(docs/select.md)."), path=True)


@dataclass(frozen=True)
class SelectionConfig:
    """How hard negatives are picked from each user's rank window, and how their rows are weighted.

    Margins compare a negative's score ``s`` with the user's reference positive score ``p``
    (the ``margin_reference`` statistic of the scores of the user's positives):
    ``absolute_margin`` m keeps ``s <= p - m``; ``relative_margin`` m keeps ``s <= p - |p| m``
    (m=0.05 keeps negatives below 95% of a positive reference). Users without positives are not
    margin-filtered. ``rank_window`` ``"auto"`` is ``hnmine run``'s: it chooses a window each round.
    """

    rank_window: RankWindow | Literal["auto"] = option(
        RankWindow(101, 500), help="LO:HI, 1-based ranks among the user's non-positive items.",
        parse=parse_window_or_auto, show=show_text, cli_type=str)
    num_hard: int = option(10, help="Hard negatives per user.")
    strategy: Strategy = option("uniform", help="uniform|top|softmax|softmax-v|all.")
    temperature: float = option(1.0, help="softmax: sampling temperature on scores.")
    rho: float = option(0.1, help="softmax-v: rho of the adaptive temperature sqrt(Var/(2 rho)); smaller is harder.")
    max_score: float | None = option(None, help="Drop negatives scoring above this.",
                                     parse=parse_number("max-score"), cli_type=str)
    min_score: float | None = option(None, help="Drop negatives scoring below this.",
                                     parse=parse_number("min-score"), cli_type=str)
    absolute_margin: float | None = option(
        None, help="Keep negatives with score <= ref - m (ref: --margin-reference of the user's positives' scores).",
        parse=parse_number("absolute-margin"), cli_type=str)
    relative_margin: float | None = option(
        None, help="Keep negatives with score <= ref - |ref|*m (0.05: below 95% of ref).",
        parse=parse_number("relative-margin"), cli_type=str)
    margin_reference: str = option("median", help="min|median|mean|max of the user's positives' scores.")
    max_item_negatives: int | None = option(None, help="Cap on how many users may get one item as a hard "
                                                       "negative.")
    # near duplicates of a user's positives are no negatives: drop window items whose cosine with one
    # of them (on the item embeddings) is above this, or that share this --item-features column's value
    max_positive_similarity: float | None = option(None, help=(
        "Drop window items whose cosine with one of the user's positives (item embeddings) is above this: near "
        "duplicates."))
    exclude_same: str | None = option(None, help=(
        "Drop window items sharing this --item-features column's value (a product or cluster id) with one of the "
        "user's positives."))
    # a second model's scores for the filters, margins and near-duplicate cosine (its embeddings, read
    # as --users/--items are); the miner's model still ranks the window and the strategy's draw
    teacher_users: str | None = option(None, help=(
        "Teacher model's user embeddings (parquet or .npy like --users): --max-score/--min-score, the margins and "
        "--max-positive-similarity use its scores; the mined model still sets the rank window and the strategy's "
        "ranking. Needs --teacher-items; its ids must cover --users'."), path=True)
    teacher_items: str | None = option(None, help="Teacher model's item embeddings; its ids must cover --items'.",
                                       path=True)
    teacher_id_column: str = option("id", help="Id column of the teacher's tables; USER,ITEM when they differ.")
    teacher_vector_column: str = option("embedding", help="Vector column of the teacher's tables; USER,ITEM when "
                                                          "they differ.")
    # each user's window moved by how well the model ranks the user's own positives (selection.adaptive_shifts)
    adaptive_window: int | None = option(None, help=(
        "Move each user's window by S ranks by how many non-positives the model scores above the user's median "
        "positive: fewer than ceil(LO/2): S earlier; fewer than LO: unchanged; fewer than HI: S later; else 2S later "
        "(the same width; each user's bucket and window in user_bucket.parquet)."))
    seed: int = option(0, help="Random seed; a user's draw depends only on (seed, user id).")
    edge_weight: EdgeWeight = option("score", help="hard_neg_edge weight: score|rank|order|uniform (the consumer "
                                                   "keeps each user's top num_hard_sample by weight).")
    # picks beyond num_hard (the item cap drops some afterwards); set by the pipeline, not an option
    extra: int = 0

    @property
    def uses_margins(self) -> bool:
        return self.absolute_margin is not None or self.relative_margin is not None

    @property
    def uses_teacher(self) -> bool:
        return self.teacher_users is not None

    def retrieved_window(self, n_items: int) -> tuple[int, int]:
        """The ranks retrieved for each user: the window itself, or with ``adaptive_window`` S every
        window a user may move to (LO-S..HI+2S, within the catalog) and rank ceil(LO/2), which the
        buckets are cut at."""
        window = self.window()
        if not self.adaptive_window:
            return window.lo, window.hi
        shift = self.adaptive_window
        return max(1, min(window.lo - shift, (window.lo + 1) // 2)), max(window.hi, min(window.hi + 2 * shift, n_items))

    def window(self) -> RankWindow:
        """The fixed rank window (``auto`` is resolved by ``hnmine run`` before mining)."""
        return RankWindow.parse(self.rank_window)  # "auto" is refused there: a fixed window was asked for


@dataclass(frozen=True)
class IndexSpec:
    """Which index to search and its parameters.

    ``auto`` is the faster exact engine for the job: ``exact`` from ``_AUTO_EXACT_PAIRS`` (user, item)
    pairs, FAISS ``flat`` below (the windows are the same either way).

    ``precision`` is the ``exact`` engine's GEMM: ``fp32`` (numpy's BLAS) or ``bf16`` (torch, on AMX /
    AVX512-BF16 tiles, several times the fp32 rate); ``auto`` takes bf16 where the CPU has it and the
    job is big enough to pay for loading torch (``_AUTO_BF16_MACS``; ``queries``, the users the job
    will search, tells), fp32 otherwise. Either way every candidate is rescored in float32 and the
    window is the same bit for bit: bf16 only widens the provable bound on each fast score, so more
    candidates are rescored.

    ``flat`` (FAISS IndexFlatIP) and ``exact`` (tiled GEMM, see
    :func:`hnmine.mining.exact.retrieve_exact`) are exact and give identical windows (which is
    faster depends on the machine: docs/performance.md). ``ivf`` (IndexIVFFlat: ``nlist`` clusters,
    ``nprobe`` searched) and ``hnsw`` (IndexHNSWFlat: ``hnsw_m`` links, ``ef_construction``,
    ``ef_search`` raised to at least the search depth) are approximate: audit them with ``audit_sample``
    (users compared with exact search by the pipeline).
    """

    kind: IndexKind = option("flat", name="index", help=(
        "auto|flat|exact (exact, same output: flat = FAISS, exact = tiled GEMM engine, auto = exact from 2e8 "
        "user-item pairs, else flat)|ivf|hnsw (approximate)."))
    metric: Metric = option("ip", help="ip|cosine.")
    precision: Precision = option("auto", help=(
        "exact: GEMM precision auto|fp32|bf16 (bf16 tiles by torch, every candidate rescored in fp32: same output; "
        "auto = bf16 for big jobs where the CPU has AMX/AVX512-BF16)."))
    nlist: int | None = option(None, help="ivf: number of clusters (default 4*sqrt(items)).")
    nprobe: int = option(64, help="ivf: clusters searched per query.")
    hnsw_m: int = option(32, help="hnsw: links per node.")
    ef_construction: int = option(200, help="hnsw: build-time beam.")
    ef_search: int = option(512, help="hnsw: search beam (raised to at least the search depth).")
    audit_sample: int = option(0, help="Approximate index: compare this many users with exact search; window "
                                       "recall goes into manifest.json.")

    def resolved_nlist(self, n_items: int) -> int:
        return self.nlist or max(1, min(int(4 * math.sqrt(n_items)), n_items // 39))


@dataclass(frozen=True)
class Execution:
    """How the job runs: none of these changes the output."""

    chunk_size: int = option(16384, help="Users per chunk (bounds memory; the output does not depend on it).")
    # a cap on the process's resident memory: chunks are made small enough to stay under it
    max_memory: str | None = option(None, help=(
        "Cap on resident memory, e.g. 2G or 500M: --chunk-size is lowered to stay under it (the output does not "
        "depend on it); refused if the inputs and index alone do not fit."))
    threads: int | None = option(None, help="Threads of FAISS and the compiled loops, at least 1 (default: all "
                                            "cores).")
    # the catalog in this many blocks of items, searched one at a time and merged exactly (docs/scale.md)
    item_shards: int = option(1, help="Split the items into K blocks searched one at a time (one block's index in "
                                      "memory), merged exactly: the same output for any K with an exact index.")
    engine: str = option("local", help="local (this process) or ray (the users mapped over a Ray actor pool; needs "
                                       "hnmine[ray]): the same output.")
    # --engine ray: "auto" (a running cluster: RAY_ADDRESS or the local one), an address
    # (ray://host:10001 or host:6379), or "local" (a cluster started for the run and stopped after it)
    ray_address: str = option("auto", help="--engine ray: auto (a running cluster: RAY_ADDRESS or this machine's), "
                                           "a cluster address (ray://head:10001, head:6379), or local (a cluster "
                                           "started for this run).")
    workers: int = option(1, help="--engine ray: actors in the pool, each with its own item index.")
    threads_per_worker: int = option(1, help="--engine ray: threads (and Ray CPUs) of each actor.")


@dataclass(frozen=True)
class MineConfig:
    """Every option of ``hnmine mine``, nested by what it sets.

    ``MineConfig.of(users=..., items=..., positives=..., out=..., num_hard=20)`` builds one from the
    option names the command line and TOML configs use; ``options()`` gives them back (manifest.json).
    """

    inputs: MineInputs = group()
    output: MineOutput = group()
    selection: SelectionConfig = group(SelectionConfig)
    index: IndexSpec = group(lambda: IndexSpec(kind="auto"))
    execution: Execution = group(Execution)

    @classmethod
    def of(cls, **options: Any) -> MineConfig:
        """A config from option values by option name (text parsed as on the command line)."""
        return build_config(cls, options)

    def with_options(self, **options: Any) -> MineConfig:
        """A copy with these options (by option name, as :meth:`of` takes them) changed."""
        return build_config(MineConfig, options, self)

    def options(self) -> dict[str, Any]:
        """The options by name, as manifest.json stores them (the window as ``LO:HI``)."""
        return flat_options(self)

    def embedding_columns(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """((user id, item id), (user vector, item vector)) column names of the embedding tables."""
        columns = self.inputs.columns
        return column_pair(columns.id_column, "--id-column"), column_pair(columns.vector_column, "--vector-column")

    def window(self) -> tuple[int, int]:
        window = self.selection.window()
        return window.lo, window.hi

    def with_extra(self, extra: int) -> SelectionConfig:
        """The selection, taking ``extra`` picks beyond ``num_hard`` (the item cap drops some afterwards)."""
        return replace(self.selection, extra=extra)

    def validate(self) -> None:
        """Reject impossible option values before any input is read."""
        check_finite_options(self)
        self.window()
        self.embedding_columns()
        column_pair(self.selection.teacher_id_column, "--teacher-id-column")
        column_pair(self.selection.teacher_vector_column, "--teacher-vector-column")
        s, i, x, o, n = self.selection, self.index, self.execution, self.output, self.inputs
        checks: list[tuple[bool, str]] = [
            (s.num_hard >= 1, "--num-hard must be at least 1"),
            (s.strategy in STRATEGIES, f"--strategy must be one of {', '.join(STRATEGIES)}"),
            (s.temperature > 0, "--temperature must be positive"),
            (s.rho > 0, "--rho must be positive"),
            (s.margin_reference in REFERENCES, f"--margin-reference must be one of {', '.join(REFERENCES)}"),
            (s.absolute_margin is None or s.absolute_margin >= 0, "--absolute-margin must be >= 0"),
            (s.relative_margin is None or s.relative_margin >= 0, "--relative-margin must be >= 0"),
            (s.max_item_negatives is None or s.max_item_negatives >= 1, "--max-item-negatives must be at least 1"),
            (i.metric in METRICS, "--metric must be ip or cosine"),
            (i.kind in INDEX_KINDS, "--index must be auto, flat, exact, ivf or hnsw"),
            (i.precision in PRECISIONS, "--precision must be auto, fp32 or bf16"),
            (1 <= x.chunk_size <= MAX_COUNT, f"--chunk-size must be between 1 and {MAX_COUNT}"),
            (x.threads is None or 1 <= x.threads <= MAX_COUNT,
             "--threads must be at least 1 (leave it out to use all cores)"),
            (i.nlist is None or 1 <= i.nlist <= MAX_COUNT,
             "--nlist must be at least 1 (leave it out for 4*sqrt(items))"),
            (1 <= x.item_shards <= MAX_COUNT, "--item-shards must be at least 1"),
            (x.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
            (1 <= x.workers <= MAX_COUNT, "--workers must be at least 1"),
            (1 <= x.threads_per_worker <= MAX_COUNT, "--threads-per-worker must be at least 1"),
            (bool(x.ray_address.strip()), "--ray-address must be auto, local or a cluster address"),
            (1 <= i.ef_construction <= MAX_COUNT, "--ef-construction must be at least 1"),
            (s.edge_weight in EDGE_WEIGHTS, f"--edge-weight must be one of {', '.join(EDGE_WEIGHTS)}"),
            (o.pop_exponent >= 0, "--pop-exponent must be >= 0"),
            (bool(o.formats) and set(o.formats) <= set(FORMATS), f"--formats must be a subset of {', '.join(FORMATS)}"),
            (len(n.attr_delimiter) == 1, "--attr-delimiter must be one character"),
            (n.attr_delimiter not in "\t\n\r", "--attr-delimiter cannot be TAB or a newline"),
            (n.missing_item_features in MISSING_ITEM_FEATURES,
             f"--missing-item-features must be one of {', '.join(MISSING_ITEM_FEATURES)}"),
            (i.audit_sample >= 0, "--audit-sample must be >= 0"),
            (i.nprobe >= 1 and i.hnsw_m >= 2 and i.ef_search >= 1, "index parameters must be positive"),
            (max(s.num_hard, i.nprobe, i.hnsw_m, i.ef_search, i.audit_sample,
                 s.max_item_negatives or 0) <= MAX_COUNT, f"counts and sizes must be at most {MAX_COUNT}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if s.min_score is not None and s.max_score is not None and s.min_score > s.max_score:
            raise InputError("--min-score is above --max-score: no negative could pass")
        if x.max_memory is not None:
            parse_size(x.max_memory)
        if s.max_positive_similarity is not None and not -1 <= s.max_positive_similarity <= 1:
            raise InputError("--max-positive-similarity is a cosine: between -1 and 1")
        if (s.teacher_users is None) != (s.teacher_items is None):
            raise InputError("--teacher-users and --teacher-items go together: pass both")
        if s.adaptive_window is not None and not 1 <= s.adaptive_window <= MAX_COUNT:
            raise InputError("--adaptive-window must be at least 1 (leave it out for the same window for every user)")
        if s.exclude_same is not None and n.item_features is None:
            raise InputError("--exclude-same names a column of --item-features: pass --item-features")
