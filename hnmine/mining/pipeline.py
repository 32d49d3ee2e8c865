"""The ``mine`` job: embeddings -> FAISS window -> hard negatives -> sampler tables, published atomically.

:func:`mine` streams the users chunk by chunk through :func:`~hnmine.mining.chunk.mine_chunk` (retrieve,
select, tabulate) and appends each chunk to the output files, so memory is bounded by the item index, the
positives and one chunk; ``--max-item-negatives`` is applied to the whole table afterwards
(:mod:`hnmine.mining.cap`). :func:`plan` reads only what it needs to print what a run would do.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import math
import os
import platform
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from hnmine import faults
from hnmine.errors import InputError
from hnmine.io.embeddings import Embeddings, EmbeddingSource, normalize_rows
from hnmine.io.graphlearn import TextTableWriter
from hnmine.io.positives import PositiveIndex, Positives, index_positives, read_positives
from hnmine.io.publish import Publication, resolve_output
from hnmine.io.storage import LocalCopy, is_url, reworded, unfolded
from hnmine.io.tables import (
    ParquetTableWriter,
    item_attrs,
    item_node_table,
    read_item_features,
    user_node_table,
    write_parquet_table,
)
from hnmine.mining.candidates import (
    CACHE_FORMAT,
    CandidateReader,
    CandidateWriter,
    Fingerprint,
    cache_entry,
    engine_name,
)
from hnmine.mining.cap import apply_item_cap, recount_after_cap
from hnmine.mining.chunk import EXACT_KINDS, ChunkContext, ChunkInputs, ChunkResult, mine_chunk, prepared
from hnmine.mining.config import MineConfig
from hnmine.mining.hashing import id_keys, user_streams
from hnmine.mining.retrieval import retrieve_window, search_depths
from hnmine.mining.selection import select_hard_negatives
from hnmine.mining.sharded import make_index
from hnmine.mining.sketch import WindowSketch
from hnmine.options import parse_size
from hnmine.progress import NoProgress, Progress

__all__ = ["MineConfig", "MinePlan", "MineReport", "mine", "plan", "select"]

@dataclass
class MineReport:
    """What a run did; also the body of ``manifest.json``'s ``summary``."""

    out: str = ""
    users: int = 0
    items: int = 0
    dim: int = 0
    positives: int = 0
    duplicate_positives: int = 0
    unknown_user_positives: int = 0
    unknown_item_positives: int = 0
    unknown_users: int = 0
    unknown_items: int = 0
    chunk_size: int = 0
    users_complete: int = 0
    users_short: dict[str, int] = field(default_factory=dict)
    users_empty: dict[str, int] = field(default_factory=dict)
    max_search_depth: int = 0
    gemm_precision: str = "fp32"
    index: str = ""
    rows: dict[str, int] = field(default_factory=dict)
    score: dict[str, float] = field(default_factory=dict)
    rank: dict[str, float] = field(default_factory=dict)
    items_without_features: int = 0
    attr_fields: list[str] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
    # a bounded sample of the window and the positives' scores, for `hnmine report` (hnmine/mining/sketch.py)
    window: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MinePlan:
    """What :func:`mine` would do (``--dry-run``)."""

    users: int
    items: int
    dim: int
    positives: int
    unknown_user_positives: int
    unknown_item_positives: int
    rank_window: str
    num_hard: int
    index: str
    search_depth_max: int
    search_depth_mean: float
    chunk_size: int
    chunks: int
    estimated_rows: int
    estimated_peak_memory_bytes: int
    estimated_seconds: float
    sampled_users: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Timer:
    def __init__(self) -> None:
        self.totals: defaultdict[str, float] = defaultdict(float)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.totals[stage] += now - since
        return now


@dataclass
class _Inputs:
    users: EmbeddingSource
    user_ids: np.ndarray
    items: Embeddings
    positives: PositiveIndex
    duplicates: int
    rows_read: int


def _read_inputs(config: MineConfig) -> _Inputs:
    # The positives are parsed on a second thread while the embeddings are read here (polars and
    # pyarrow both release the GIL); errors are still raised in the order the checks below make them.
    with ThreadPoolExecutor(max_workers=1) as pool:
        positives = pool.submit(
            read_positives, config.inputs.positives, fmt=config.inputs.positives_format,
            user_column=config.inputs.user_column, item_column=config.inputs.item_column,
            weight_column=config.inputs.weight_column)
        try:
            return _read_embeddings_and(config, positives)
        finally:
            positives.cancel()


def _read_embeddings_and(config: MineConfig, positives_read: Future[Positives]) -> _Inputs:
    (user_id, item_id), (user_vector, item_vector) = config.embedding_columns()
    users = EmbeddingSource(config.inputs.users, id_column=user_id, vector_column=user_vector,
                            ids_path=config.inputs.user_ids)
    items = EmbeddingSource(config.inputs.items, id_column=item_id, vector_column=item_vector,
                            ids_path=config.inputs.item_ids).read_all()
    user_dim = users.peek_dim()
    if user_dim != items.dim:
        raise InputError(f"{config.inputs.users}: user vectors have length {user_dim} but {config.inputs.items} has {items.dim}")
    lo, hi = config.window()
    if hi > len(items):
        raise InputError(f"rank window {lo}:{hi} goes beyond the catalog of {len(items)} items in {config.inputs.items}")
    if config.index.kind == "ivf" and config.index.nlist is not None and config.index.nlist > len(items):
        raise InputError(f"--nlist {config.index.nlist} is above the {len(items)} items in {config.inputs.items}: "
                         "IVF needs at least one item per cluster")
    user_ids = users.read_ids()
    positives = positives_read.result()
    index = index_positives(positives, user_ids, items.ids)
    return _Inputs(users, user_ids, items, index, positives.duplicates, positives.rows_read)


# The options that name an input: each may be a URL (hnmine.io.storage), read once from a local copy.
_INPUT_FIELDS = ("users", "items", "positives", "user_ids", "item_ids", "item_features")


@contextlib.contextmanager
def _local_inputs(config: MineConfig) -> Iterator[MineConfig]:
    """``config`` with every input that is a URL replaced by a local copy (removed on exit)."""
    with contextlib.ExitStack() as stack:
        local: dict[str, Any] = {
            name: str(stack.enter_context(LocalCopy(getattr(config.inputs, name), name.replace("_", " "))))
            for name in _INPUT_FIELDS if is_url(getattr(config.inputs, name))}
        yield replace(config, inputs=replace(config.inputs, **local)) if local else config


def _fingerprint(path: str | None, shown: str | None = None) -> dict[str, Any] | None:
    if path is None:
        return None
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    size = 0
    for file in files:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    return {"path": shown if is_url(shown) else str(root.absolute()), "files": len(files), "bytes": size,
            "sha256": digest.hexdigest()}


def _versions() -> dict[str, str]:
    names = ["hnmine", "numpy", "faiss-cpu", "polars", "pyarrow"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


# A chunk under --max-memory: at least this many users (fewer make FAISS calls slow), and at most
# this share of the room left beside the inputs and the index (the per-user estimate is a model).
_MIN_CHUNK = 64
_ROOM_SHARE = 0.8


def _bytes_per_user(depth: int, width: int, needed: int, dim: int) -> int:
    """Memory one user of a chunk takes while it is mined, an upper bound (docs/mine.md, "Memory").

    FAISS scores and rows, candidate rows and canonical scores to the search depth; the window and
    the selection's arrays over its width; the user's output rows as numpy, polars, arrow and text;
    its vector as arrow, numpy and prepared copy.
    """
    return depth * 32 + width * 40 + needed * 160 + dim * 16 + 1024


# Per chunk, whatever its size: FAISS's BLAS tiles, per-thread buffers of the compiled loops.
_CHUNK_OVERHEAD = 64 << 20


def _rss() -> tuple[int, int]:
    """(resident bytes now, peak resident bytes so far) of this process."""
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak, peak


def _user_read_bytes(source: EmbeddingSource) -> int:
    """Memory the user vectors take while read, whatever the chunk: parquet reads a whole row group at
    once; a .npy matrix is memory-mapped and every page read stays resident while memory is free."""
    if source.is_npy:
        return int(source._matrix.nbytes)
    largest = 0
    for file in source.files:
        meta = pq.ParquetFile(file).metadata
        for group in range(meta.num_row_groups):
            largest = max(largest, meta.row_group(group).total_byte_size)
    return 2 * largest


def _chunk_plan(config: MineConfig, inputs: _Inputs, depth_max: int, needed: int) -> tuple[int, int]:
    """(users per chunk, estimated peak bytes): ``--chunk-size``, made smaller to fit ``--max-memory``.

    What is resident now (inputs, index) is measured; what does not shrink with the chunk is added
    (see :func:`_user_read_bytes`; the positives copied into pos_edge; with --max-item-negatives every
    selected row, gathered at the end); one chunk is estimated per user (:func:`_bytes_per_user`).
    """
    n_users = len(inputs.user_ids)
    lo, hi = config.window()
    per_user = _bytes_per_user(depth_max, hi - lo + 1, needed, inputs.items.dim)
    now, peak = _rss()
    fixed = now + _user_read_bytes(inputs.users) + 2 * int(inputs.positives.pos_edge.estimated_size())
    if config.selection.max_item_negatives is not None:
        fixed += n_users * needed * 2 * 160
    chunk = max(1, min(config.execution.chunk_size, n_users))
    if config.execution.max_memory is not None:
        budget = parse_size(config.execution.max_memory)
        room = budget - fixed - _CHUNK_OVERHEAD
        smallest = min(_MIN_CHUNK, n_users)
        if peak > budget or room * _ROOM_SHARE < smallest * per_user:
            raise InputError(
                f"--max-memory {config.execution.max_memory}: the inputs and the item index alone take "
                f"{max(fixed, peak) / 2**20:,.0f} MiB (plus {(_CHUNK_OVERHEAD + smallest * per_user) / 2**20:,.0f} MiB "
                f"for a chunk of {smallest} users); allow more memory")
        chunk = min(chunk, int(room * _ROOM_SHARE // per_user))
    return chunk, max(peak, fixed + _CHUNK_OVERHEAD + chunk * per_user)


def plan(config: MineConfig, sample_users: int = 8192) -> MinePlan:
    """Read the inputs, time a search on a sample of users, and estimate the whole run."""
    config.validate()
    config = unfolded(config)
    with reworded(), _local_inputs(config) as local:
        return _plan(local, sample_users)


def _plan(config: MineConfig, sample_users: int) -> MinePlan:
    inputs = _read_inputs(config)
    lo, hi = config.window()
    counts = np.diff(inputs.positives.indptr)
    depths = search_depths(counts, hi, len(inputs.items))
    n_users, dim = len(inputs.user_ids), inputs.items.dim
    index = make_index(prepared(inputs.items.vectors, config.index.metric), config.index, config.execution.threads,
                       queries=n_users, shards=config.execution.item_shards)
    depth_max = int(depths.max())
    per_user_rows = (hi - lo + 1) if config.selection.strategy == "all" else min(config.selection.num_hard, hi - lo + 1)
    chunk, memory = _chunk_plan(config, inputs, depth_max, per_user_rows)  # before the sample search's memory
    _, first = next(inputs.users.iter_chunks(min(sample_users, chunk), ids=inputs.user_ids))
    indptr, rows = inputs.positives.slice(0, len(first))
    queries = prepared(first.vectors, config.index.metric)
    streams = user_streams(config.selection.seed, id_keys(first.ids))
    warm = min(256, len(first))  # the first FAISS call pays for thread start-up and page faults
    retrieve_window(index, queries[:warm], indptr[: warm + 1], rows[: indptr[warm]], lo, hi)
    start = time.perf_counter()
    window = retrieve_window(index, queries, indptr, rows, lo, hi)
    select_hard_negatives(window, streams, config.selection)
    per_user = (time.perf_counter() - start) / len(first)
    return MinePlan(
        users=n_users, items=len(inputs.items), dim=dim, positives=inputs.positives.pos_edge.height,
        unknown_user_positives=inputs.positives.unknown_user_rows,
        unknown_item_positives=inputs.positives.unknown_item_rows,
        rank_window=f"{lo}:{hi}", num_hard=config.selection.num_hard, index=config.index.kind,
        search_depth_max=depth_max, search_depth_mean=round(float(depths.mean()), 1),
        chunk_size=chunk, chunks=math.ceil(n_users / chunk), estimated_rows=n_users * per_user_rows,
        estimated_peak_memory_bytes=int(memory), estimated_seconds=per_user * n_users,
        sampled_users=len(first),
    )




def mine(config: MineConfig, progress: Progress | None = None, command: list[str] | None = None) -> MineReport:
    """Run the whole job and publish ``config.output.out`` atomically; returns the summary.

    The output's lock is held from before the inputs are read until the output is published, so a
    second writer of the same ``--out`` fails fast (docs/reliability.md).
    """
    config.validate()
    if config.execution.engine == "ray":
        from hnmine.mining.ray_engine import require_ray

        require_ray()
    config = unfolded(config)
    if config.output.save_candidates is not None:
        if config.execution.engine == "ray":
            raise InputError("--save-candidates works with --engine local only")
        if is_url(config.output.save_candidates):
            raise InputError(f"--save-candidates {config.output.save_candidates}: the cache is a local directory")
        if not is_url(config.output.out) and resolve_output(config.output.save_candidates) == resolve_output(config.output.out):
            raise InputError(f"--save-candidates {config.output.save_candidates} is --out: the cache needs a directory "
                             "of its own")
    with contextlib.ExitStack() as stack:
        stack.enter_context(reworded())
        publication = stack.enter_context(
            Publication(config.output.out, overwrite=config.output.overwrite, wait_lock=config.output.wait_lock))
        cache = None
        if config.output.save_candidates is not None:
            cache = stack.enter_context(Publication(config.output.save_candidates, overwrite=config.output.overwrite,
                                                    fmt=CACHE_FORMAT, wait_lock=config.output.wait_lock))
        local = stack.enter_context(_local_inputs(config))
        return _mine(local, publication, progress, command, shown=config, cache=cache)


def select(config: MineConfig, candidates: str | Path, progress: Progress | None = None,
           command: list[str] | None = None) -> MineReport:
    """``hnmine select``: :func:`mine` with each user's ranked candidates read from a cache written by
    ``mine --save-candidates`` instead of retrieved; publishes the same files ``mine`` would with
    ``config`` (manifest.json aside). The cache must match the inputs (its fingerprint) and hold
    the window (``HI`` <= its depth); otherwise one-line :class:`InputError`. The index options of
    ``config`` are not used: the cache's engine ranked the candidates.
    """
    config.validate()
    config = unfolded(config)
    if config.output.save_candidates is not None:
        raise InputError("select reads a candidate cache; --save-candidates is mine's option")
    reader = CandidateReader(candidates)
    lo, hi = config.window()
    reader.check_options(lo, hi, config.index.metric)
    with reworded(), Publication(config.output.out, overwrite=config.output.overwrite, wait_lock=config.output.wait_lock) as publication, \
            _local_inputs(config) as local:
        return _mine(local, publication, progress, command, shown=config, source=reader)


def _mine(config: MineConfig, publication: Publication, progress: Progress | None,
          command: list[str] | None, shown: MineConfig, *, source: CandidateReader | None = None,
          cache: Publication | None = None) -> MineReport:
    """``config`` names the inputs as read (local copies of URLs); ``shown`` as given, for the manifest.
    ``source``: candidates read from a cache instead of retrieved (``select``); ``cache``: the cache
    publication the retrieved candidates are also written to (``--save-candidates``)."""
    progress = progress or NoProgress()
    timer = _Timer()
    started = time.time()
    mark = time.perf_counter()
    lo, hi = config.window()
    width = hi - lo + 1
    inputs = _read_inputs(config)
    if inputs.positives.pos_edge.height == 0 and not config.output.allow_empty:
        raise InputError(
            f"{config.inputs.positives}: none of its {inputs.rows_read} positives has both its user in {config.inputs.users} and its "
            f"item in {config.inputs.items} ({inputs.positives.unknown_user_rows} with an unknown user, "
            f"{inputs.positives.unknown_item_rows} with an unknown item): pos_edge would be empty; check the id "
            "columns, or pass --allow-empty if that is expected")
    features = read_item_features(config.inputs.item_features, config.inputs.item_features_id_column) if config.inputs.item_features else None
    attrs, attr_fields, without_features = item_attrs(
        inputs.items.ids, features, id_column=config.inputs.item_features_id_column, attr_columns=config.inputs.attr_columns,
        delimiter=config.inputs.attr_delimiter, source=str(config.inputs.item_features or config.inputs.items),
        missing=config.inputs.missing_item_features, items_source=config.inputs.items,
    )
    item_keys = _item_keys(inputs.items.ids, features, config) if config.selection.exclude_same else None
    unit_items = normalize_rows(inputs.items.vectors) if config.selection.max_positive_similarity is not None else None
    fingerprints = {name: _fingerprint(getattr(config.inputs, name), getattr(shown.inputs, name))
                    for name in _INPUT_FIELDS}
    fingerprint = None
    if source is not None or cache is not None:
        fingerprint = Fingerprint(inputs.user_ids, inputs.items.ids, inputs.items.vectors, inputs.positives.indptr,
                                  inputs.positives.item_rows, config.index.metric, hi if source is None else source.depth,
                                  engine_name(config.index) if source is None else source.engine)
    if source is not None and fingerprint is not None:
        source.check_inputs(fingerprint, len(inputs.user_ids))
    mark = timer.add("read", mark)
    faults.point("mine.read")
    item_vectors = prepared(inputs.items.vectors, config.index.metric)
    audit_rows = np.zeros(0, dtype=np.int64)
    if config.index.audit_sample and source is None and config.index.kind not in EXACT_KINDS:  # an exact index needs no audit
        order = np.argsort(user_streams(config.selection.seed ^ 0x5A5A, id_keys(inputs.user_ids)), kind="stable")
        audit_rows = np.sort(order[: config.index.audit_sample])
    shared = ChunkInputs(config, item_vectors, inputs.items.ids, inputs.positives.indptr,
                         inputs.positives.item_rows, audit_rows, len(inputs.user_ids),
                         inputs.users.id_column, "vector" if inputs.users.is_npy else inputs.users.vector_column,
                         unit_items=unit_items, item_keys=item_keys)
    # the item index is built here (inside "index") for the local engine; Ray's actors build their own
    context = None if config.execution.engine == "ray" else ChunkContext(shared, source=source, fingerprint=fingerprint)
    mark = timer.add("index", mark)
    faults.point("mine.index")
    needed = shared.needed
    depth_max = int(search_depths(np.diff(inputs.positives.indptr), hi, len(inputs.items)).max(initial=0))
    chunk_size, _ = _chunk_plan(config, inputs, depth_max, needed)

    report = MineReport(out=str(publication.target), users=len(inputs.user_ids), items=len(inputs.items),
                        dim=inputs.items.dim, positives=inputs.positives.pos_edge.height,
                        duplicate_positives=inputs.duplicates,
                        unknown_user_positives=inputs.positives.unknown_user_rows,
                        unknown_item_positives=inputs.positives.unknown_item_rows,
                        unknown_users=inputs.positives.unknown_users, unknown_items=inputs.positives.unknown_items,
                        items_without_features=without_features, attr_fields=attr_fields, chunk_size=chunk_size)
    capped = shared.capped
    audit_hits = audit_total = 0
    short_reasons: Counter[str] = Counter()
    empty_reasons: Counter[str] = Counter()
    max_depth = 0
    gemm_precision = "fp32"
    sketch = WindowSketch(lo, width)
    if context is None:
        from hnmine.mining.ray_engine import mine_chunks_on_ray

        results: Iterator[ChunkResult] = mine_chunks_on_ray(shared, inputs.users, inputs.user_ids, chunk_size)
    else:
        results = (mine_chunk(context, first_row, chunk)
                   for first_row, chunk in inputs.users.iter_chunks(chunk_size, ids=inputs.user_ids))

    with publication.staging_dir() as staging, (
            cache.staging_dir() if cache is not None else contextlib.nullcontext(None)) as cache_staging:
        saver = CandidateWriter(cache_staging, len(inputs.user_ids), hi) if cache_staging is not None else None
        if context is not None:
            context.saver = saver
        parquet_path = staging / ("_hard_neg_staged.parquet" if capped else "hard_neg_edge.parquet")
        parquet_writer: ParquetTableWriter | None = None
        text_writer = TextTableWriter(staging / "hard_neg_edge.txt", "hard_neg_edge") if (
            "graphlearn" in config.output.formats and not capped) else None
        write_parquet = capped or "parquet" in config.output.formats
        progress.start(len(inputs.user_ids), "mining users")
        for result in results:
            mark = time.perf_counter()
            for stage, seconds in result.seconds.items():
                timer.totals[stage] += seconds
            max_depth = max(max_depth, result.max_depth)
            gemm_precision = result.precision
            audit_hits += result.audit_hits
            audit_total += result.audit_total
            short_reasons.update(result.short)
            empty_reasons.update(result.empty)
            sketch.merge(result.sketch)
            if write_parquet:
                if parquet_writer is None:
                    parquet_writer = ParquetTableWriter(parquet_path)
                parquet_writer.write(result.table)
            if text_writer is not None:
                text_writer.write(result.table)
            timer.add("write", mark)
            faults.point("mine.write")
            progress.advance(result.users)
        progress.stop()
        mark = time.perf_counter()
        if parquet_writer is not None:
            parquet_writer.close()
        if capped:
            final = apply_item_cap(parquet_path, config.selection.max_item_negatives or 0, needed)
            parquet_path.unlink()
            empty_after = len(inputs.user_ids) - final["user_id"].n_unique()
            short_reasons, empty_reasons = recount_after_cap(final, needed, short_reasons, empty_reasons, empty_after)
            if "parquet" in config.output.formats:
                write_parquet_table(final, staging / "hard_neg_edge.parquet")
            if "graphlearn" in config.output.formats:
                text_writer = TextTableWriter(staging / "hard_neg_edge.txt", "hard_neg_edge")
                text_writer.write(final)
        if text_writer is not None:
            text_writer.close(schema=_hard_neg_schema(inputs.user_ids, inputs.items.ids))
        faults.point("mine.write.edges")
        report.rows = _write_node_tables(staging, config, inputs, attrs)
        faults.point("mine.write.nodes")
        report.rows["hard_neg_edge"] = _hard_neg_stats(staging, config, report)
        if report.rows["hard_neg_edge"] == 0 and not config.output.allow_empty:
            because = ", ".join(f"{k} {v:,}" for k, v in sorted(empty_reasons.items()))
            raise InputError(
                f"no hard negatives for any of the {len(inputs.user_ids):,} users of {config.inputs.users} (empty because of: "
                f"{because or 'none recorded'}); widen --rank-window or loosen the score filters, or pass --allow-empty "
                "if an empty hard_neg_edge is expected")
        report.window = sketch.summary(staging / "hard_neg_edge.parquet")
        report.users_complete = len(inputs.user_ids) - sum(short_reasons.values()) - sum(empty_reasons.values())
        report.users_short = dict(short_reasons)
        report.users_empty = dict(empty_reasons)
        report.max_search_depth = max_depth if source is None else source.max_search_depth
        report.gemm_precision = gemm_precision if source is None else source.precision
        report.index = shared.index_kind if source is None else source.index
        if len(audit_rows) and config.index.audit_sample:
            report.audit = {"users": len(audit_rows), "window_recall": audit_hits / audit_total if audit_total else None,
                            "index": config.index.kind}
        timer.add("write", mark)
        report.timings = {k: round(v, 4) for k, v in timer.totals.items()}
        report.timings["total"] = round(time.time() - started, 4)
        if source is not None and fingerprint is not None:
            source.check_user_vectors(fingerprint)  # a stale cache never becomes output
        manifest = {
            "tool": "hnmine mine" if source is None else "hnmine select",
            "command": command if command is not None else sys.argv,
            "options": shown.options(),
            "inputs": {**fingerprints, **({"candidates": str(source.dir.absolute())} if source else {})},
            "summary": report.to_dict(),
            "versions": _versions(),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if cache is not None and saver is not None and fingerprint is not None and context is not None:
            index = context.index
            assert index is not None
            saver.close()
            cache.commit({
                "tool": "hnmine mine", "command": manifest["command"], "inputs": fingerprints,
                CACHE_FORMAT: cache_entry(fingerprint, hi, engine_name(config.index), config.index.metric,
                                          index.exact, index.precision, shared.index_kind, max_depth,
                                          len(inputs.user_ids)),
            })
            faults.point("mine.candidates")
        publication.commit(manifest)
    return report


def _item_keys(item_ids: np.ndarray, features: pl.DataFrame | None, config: MineConfig) -> np.ndarray:
    """--exclude-same: a code per item row for its value of that feature column (-1: no value, no match)."""
    column = config.selection.exclude_same
    if features is None or column is None:
        raise InputError("--exclude-same names a column of --item-features: pass --item-features")
    if column not in features.columns or column == config.inputs.item_features_id_column:
        raise InputError(f"{config.inputs.item_features}: no column '{column}' to compare items on "
                         f"(columns: {', '.join(c for c in features.columns if c != config.inputs.item_features_id_column)})")
    id_column = config.inputs.item_features_id_column
    ids = pl.Series("id", item_ids.tolist() if item_ids.dtype == object else item_ids)
    table = features.select(pl.col(id_column).cast(pl.String), pl.col(column).cast(pl.String).alias("key"))
    joined = pl.DataFrame({"id": ids.cast(pl.String)}).join(table, left_on="id", right_on=id_column, how="left",
                                                              maintain_order="left")
    codes = joined["key"].cast(pl.Categorical).to_physical().cast(pl.Int64).fill_null(-1)
    return codes.to_numpy()




def _hard_neg_schema(user_ids: np.ndarray, item_ids: np.ndarray) -> pl.Schema:
    def dtype(ids: np.ndarray) -> pl.DataType:
        return pl.String() if ids.dtype == object else pl.Int64()

    return pl.Schema({"user_id": dtype(user_ids), "item_id": dtype(item_ids), "weight": pl.Float32(),
                      "rank": pl.Int32(), "score": pl.Float32()})




def _write_node_tables(staging: Path, config: MineConfig, inputs: _Inputs, attrs: pl.Series) -> dict[str, int]:
    tables = {
        "pos_edge": inputs.positives.pos_edge.with_columns(pl.col("weight").cast(pl.Float32)),
        "user": user_node_table(inputs.user_ids),
        "item": item_node_table(inputs.items.ids, inputs.positives.item_counts, config.output.pop_exponent, attrs,
                                source=config.inputs.items),
    }
    for name, frame in tables.items():
        if "parquet" in config.output.formats:
            write_parquet_table(frame, staging / f"{name}.parquet")
        if "graphlearn" in config.output.formats:
            writer = TextTableWriter(staging / f"{name}.txt", name)
            writer.write(frame)
            writer.close()
    return {name: frame.height for name, frame in tables.items()}


def _number(statistic: object) -> float:
    """A statistic of a non-empty numeric column: a number (polars types it as any Python scalar)."""
    return float(cast(float, statistic))


def _hard_neg_stats(staging: Path, config: MineConfig, report: MineReport) -> int:
    """Row count and score/rank statistics of the published hard_neg_edge table.

    Statistics come from the parquet table; a text-only output carries neither rank nor score
    (its weight column is only a score with ``--edge-weight score``), so they are left out then.
    """
    source = staging / "hard_neg_edge.parquet"
    if not source.exists():
        with open(staging / "hard_neg_edge.txt", "rb") as handle:
            return sum(1 for _ in handle) - 1
    frame = pl.read_parquet(source, columns=["score", "rank"])
    for column, target in (("score", report.score), ("rank", report.rank)):
        values = frame[column]
        if values.len():
            target.update({
                "min": _number(values.min()), "p05": _number(values.quantile(0.05)),
                "median": _number(values.median()), "mean": _number(values.mean()),
                "p95": _number(values.quantile(0.95)), "max": _number(values.max()),
            })
    return frame.height
