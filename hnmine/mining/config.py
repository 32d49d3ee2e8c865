"""``hnmine mine``'s options (:class:`MineConfig`), validated before anything is read, and the
retrieval and selection settings derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from hnmine.errors import InputError
from hnmine.io.checks import check_finite_options
from hnmine.io.tables import EDGE_WEIGHTS
from hnmine.mining.retrieval import INDEX_KINDS, METRICS, PRECISIONS, IndexSpec
from hnmine.mining.selection import REFERENCES, STRATEGIES, SelectionConfig
from hnmine.options import MAX_COUNT, column_pair, one_of, parse_rank_window, parse_size

__all__ = ["ENGINES", "FORMATS", "MISSING_ITEM_FEATURES", "MineConfig"]

FORMATS = ("parquet", "graphlearn")
# local: this process, chunk by chunk; ray: the same per-chunk work mapped over a Ray actor pool
ENGINES = ("local", "ray")
MISSING_ITEM_FEATURES = ("fill", "error")


@dataclass
class MineConfig:
    """Every option of ``hnmine mine`` (the CLI and the TOML config map onto these fields)."""

    users: str
    items: str
    positives: str
    out: str
    user_ids: str | None = None
    item_ids: str | None = None
    # one name for both tables, or USER,ITEM (column_pair)
    id_column: str = "id"
    vector_column: str = "embedding"
    positives_format: str = "auto"
    user_column: str = "user_id"
    item_column: str = "item_id"
    weight_column: str | None = None
    item_features: str | None = None
    item_features_id_column: str = "id"
    attr_columns: list[str] | None = None
    attr_delimiter: str = "\x02"
    # items absent from --item-features: "fill" gives them their node id as the id attr (the
    # consumer takes a negative's item id from the attrs), "error" refuses them
    missing_item_features: str = "fill"
    rank_window: str = "101:500"
    num_hard: int = 10
    strategy: str = "uniform"
    temperature: float = 1.0
    rho: float = 0.1
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    margin_reference: str = "median"
    max_item_negatives: int | None = None
    # near duplicates of a user's positives are no negatives: drop window items whose cosine with one
    # of them (on the item embeddings) is above this, or that share this --item-features column's value
    max_positive_similarity: float | None = None
    exclude_same: str | None = None
    seed: int = 0
    metric: str = "ip"
    index: str = "auto"
    precision: str = "auto"
    nlist: int | None = None
    nprobe: int = 64
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 512
    audit_sample: int = 0
    chunk_size: int = 16384
    # a cap on the process's resident memory: chunks are made small enough to stay under it
    max_memory: str | None = None
    threads: int | None = None
    # the catalog in this many blocks of items, searched one at a time and merged exactly (docs/scale.md)
    item_shards: int = 1
    engine: str = "local"
    # --engine ray: "auto" (a running cluster: RAY_ADDRESS or the local one), an address
    # (ray://host:10001 or host:6379), or "local" (a cluster started for the run and stopped after it)
    ray_address: str = "auto"
    workers: int = 1
    threads_per_worker: int = 1
    edge_weight: str = "score"
    pop_exponent: float = 0.75
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    overwrite: bool = False
    # seconds to wait for another hnmine writing the same --out (0: fail at once, exit 75)
    wait_lock: float = 0.0
    # an output without hard negatives or without positive edges is an error unless this is set
    allow_empty: bool = False
    # also publish each user's ranks 1..HI with their scores here, for `hnmine select` (hnmine/mining/candidates.py)
    save_candidates: str | None = None

    def embedding_columns(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """((user id, item id), (user vector, item vector)) column names of the embedding tables."""
        return column_pair(self.id_column, "--id-column"), column_pair(self.vector_column, "--vector-column")

    def window(self) -> tuple[int, int]:
        return parse_rank_window(self.rank_window)

    def validate(self) -> None:
        """Reject impossible option values before any input is read."""
        check_finite_options(self)
        self.window()
        self.embedding_columns()
        checks: list[tuple[bool, str]] = [
            (self.num_hard >= 1, "--num-hard must be at least 1"),
            (self.strategy in STRATEGIES, f"--strategy must be one of {', '.join(STRATEGIES)}"),
            (self.temperature > 0, "--temperature must be positive"),
            (self.rho > 0, "--rho must be positive"),
            (self.margin_reference in REFERENCES, f"--margin-reference must be one of {', '.join(REFERENCES)}"),
            (self.absolute_margin is None or self.absolute_margin >= 0, "--absolute-margin must be >= 0"),
            (self.relative_margin is None or self.relative_margin >= 0, "--relative-margin must be >= 0"),
            (self.max_item_negatives is None or self.max_item_negatives >= 1, "--max-item-negatives must be at least 1"),
            (self.metric in METRICS, "--metric must be ip or cosine"),
            (self.index in INDEX_KINDS, "--index must be auto, flat, exact, ivf or hnsw"),
            (self.precision in PRECISIONS, "--precision must be auto, fp32 or bf16"),
            (1 <= self.chunk_size <= MAX_COUNT, f"--chunk-size must be between 1 and {MAX_COUNT}"),
            (self.threads is None or 1 <= self.threads <= MAX_COUNT,
             "--threads must be at least 1 (leave it out to use all cores)"),
            (self.nlist is None or 1 <= self.nlist <= MAX_COUNT,
             "--nlist must be at least 1 (leave it out for 4*sqrt(items))"),
            (1 <= self.item_shards <= MAX_COUNT, "--item-shards must be at least 1"),
            (self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
            (1 <= self.workers <= MAX_COUNT, "--workers must be at least 1"),
            (1 <= self.threads_per_worker <= MAX_COUNT,
             "--threads-per-worker must be at least 1"),
            (bool(self.ray_address.strip()), "--ray-address must be auto, local or a cluster address"),
            (1 <= self.ef_construction <= MAX_COUNT, "--ef-construction must be at least 1"),
            (self.edge_weight in EDGE_WEIGHTS, f"--edge-weight must be one of {', '.join(EDGE_WEIGHTS)}"),
            (self.pop_exponent >= 0, "--pop-exponent must be >= 0"),
            (bool(self.formats) and set(self.formats) <= set(FORMATS), f"--formats must be a subset of {', '.join(FORMATS)}"),
            (len(self.attr_delimiter) == 1, "--attr-delimiter must be one character"),
            (self.attr_delimiter not in "\t\n\r", "--attr-delimiter cannot be TAB or a newline"),
            (self.missing_item_features in MISSING_ITEM_FEATURES,
             f"--missing-item-features must be one of {', '.join(MISSING_ITEM_FEATURES)}"),
            (self.audit_sample >= 0, "--audit-sample must be >= 0"),
            (self.nprobe >= 1 and self.hnsw_m >= 2 and self.ef_search >= 1, "index parameters must be positive"),
            (max(self.num_hard, self.nprobe, self.hnsw_m, self.ef_search, self.audit_sample,
                 self.max_item_negatives or 0) <= MAX_COUNT, f"counts and sizes must be at most {MAX_COUNT}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise InputError("--min-score is above --max-score: no negative could pass")
        if self.max_memory is not None:
            parse_size(self.max_memory)
        if self.max_positive_similarity is not None and not -1 <= self.max_positive_similarity <= 1:
            raise InputError("--max-positive-similarity is a cosine: between -1 and 1")
        if self.exclude_same is not None and self.item_features is None:
            raise InputError("--exclude-same names a column of --item-features: pass --item-features")

    def index_spec(self) -> IndexSpec:
        return IndexSpec(
            kind=one_of(self.index, INDEX_KINDS, "--index"), metric=one_of(self.metric, METRICS, "--metric"),
            nlist=self.nlist, nprobe=self.nprobe, hnsw_m=self.hnsw_m, ef_construction=self.ef_construction,
            ef_search=self.ef_search, precision=one_of(self.precision, PRECISIONS, "--precision"),
        )

    def selection(self, extra: int = 0) -> SelectionConfig:
        return SelectionConfig(
            num_hard=self.num_hard, strategy=one_of(self.strategy, STRATEGIES, "--strategy"),
            temperature=self.temperature, rho=self.rho,
            max_score=self.max_score, min_score=self.min_score, absolute_margin=self.absolute_margin,
            relative_margin=self.relative_margin, margin_reference=self.margin_reference, extra=extra,
        )
