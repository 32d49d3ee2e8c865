"""One chunk of users mined: retrieve each user's window, select its hard negatives, tabulate them.

:func:`mine_chunk` is a pure function of the chunk and a :class:`ChunkContext` (the process's item index
and the shared inputs): the local driver (:mod:`hnmine.mining.pipeline`) and the Ray engine
(:mod:`hnmine.mining.ray_engine`) both call it, so both write the same rows.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl

from hnmine import faults
from hnmine.errors import InputError
from hnmine.io.checks import ScoreRange
from hnmine.io.embeddings import Embeddings, normalize_rows
from hnmine.io.tables import EDGE_WEIGHTS, hard_neg_edge_table
from hnmine.mining.candidates import CandidateReader, CandidateWriter, Fingerprint, window_slice
from hnmine.mining.config import MineConfig
from hnmine.mining.hashing import id_keys, pair_uniforms, user_streams
from hnmine.mining.retrieval import Index, IndexSpec, Window, resolved_spec, retrieve_window, search_depths
from hnmine.mining.selection import near_duplicates, reference_scores, select_hard_negatives
from hnmine.mining.sharded import make_index
from hnmine.mining.sketch import WindowSketch
from hnmine.options import one_of

__all__ = ["EXACT_KINDS", "ChunkContext", "ChunkInputs", "ChunkResult", "mine_chunk", "prepared"]


def prepared(vectors: np.ndarray, metric: str) -> np.ndarray:
    return normalize_rows(vectors) if metric == "cosine" else vectors


# the index kinds whose windows are exact (auto picks one of the other two)
EXACT_KINDS = ("auto", "flat", "exact")


@dataclass
class ChunkInputs:
    """What every chunk of users is mined against: the options, the items and every user's positives.

    Plain arrays, so a distributed engine ships them to its workers once; each worker then builds a
    :class:`ChunkContext` (its item index) from them.
    """

    config: MineConfig
    item_vectors: np.ndarray  # prepared for the metric (unit rows for cosine)
    item_ids: np.ndarray
    indptr: np.ndarray  # the positives: CSR over all user rows
    item_rows: np.ndarray
    audit_rows: np.ndarray  # user rows the --audit-sample compares with exact search
    n_users: int
    id_column: str  # the users' id column
    vector_column: str  # the users' vector column (how errors name it)
    unit_items: np.ndarray | None = None  # unit item rows for --max-positive-similarity
    item_keys: np.ndarray | None = None  # a code per item row for --exclude-same

    @property
    def needed(self) -> int:
        lo, hi = self.config.window()
        return hi - lo + 1 if self.config.selection.strategy == "all" else min(self.config.selection.num_hard, hi - lo + 1)

    @property
    def capped(self) -> bool:
        return self.config.selection.max_item_negatives is not None

    @property
    def exact(self) -> bool:
        return self.config.index.kind in EXACT_KINDS

    @property
    def index_kind(self) -> str:
        return cast(str, resolved_spec(self.config.index, len(self.item_vectors), self.n_users).kind)


class ChunkContext:
    """A process's item index (built once) and everything else :func:`mine_chunk` reads.

    ``source``: each user's ranked candidates come from a cache (``select``) instead of an index;
    ``saver``: the retrieved candidates are also written to one (``--save-candidates``);
    ``fingerprint``: the cache's fingerprint, fed each chunk's user vectors. All three are local-engine only.
    """

    def __init__(self, shared: ChunkInputs, source: CandidateReader | None = None,
                 fingerprint: Fingerprint | None = None) -> None:
        config = self.config = shared.config
        self.shared = shared
        self.source = source
        self.saver: CandidateWriter | None = None
        self.fingerprint = fingerprint
        self.index = None if source is not None else make_index(
            shared.item_vectors, config.index, config.execution.threads, queries=shared.n_users, shards=config.execution.item_shards)
        self.exact = source.exact if source is not None else bool(self.index is not None and self.index.exact)
        self.audit_index = (make_index(shared.item_vectors, IndexSpec(kind="exact"), shards=config.execution.item_shards)
                            if config.index.audit_sample and self.index is not None and not self.exact else None)
        self.score_range = ScoreRange(shared.item_vectors, shared.item_ids, config.inputs.items)
        capped = shared.capped
        self.selection = config.with_extra(config.selection.num_hard if capped and config.selection.strategy != "all" else 0)
        self.edge_weight = one_of(config.selection.edge_weight, EDGE_WEIGHTS, "--edge-weight")

    def positives_of(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """CSR (local indptr, item rows) of user rows ``start:stop``."""
        ptr = self.shared.indptr[start : stop + 1]
        return ptr - ptr[0], self.shared.item_rows[ptr[0] : ptr[-1]]


@dataclass
class ChunkResult:
    """One chunk's hard_neg_edge rows and its share of the summary, merged in user order by the caller."""

    first_row: int
    users: int
    table: pl.DataFrame
    short: Counter[str]
    empty: Counter[str]
    audit_hits: int
    audit_total: int
    max_depth: int
    sketch: WindowSketch
    precision: str
    seconds: dict[str, float]


def mine_chunk(context: ChunkContext, first_row: int, chunk: Embeddings) -> ChunkResult:
    """Retrieve, select and tabulate the users of rows ``first_row:first_row + len(chunk)``: a pure
    function of the chunk (and the context), which both engines call."""
    shared, config, index = context.shared, context.config, context.index
    lo, hi = config.window()
    width = hi - lo + 1
    needed = shared.needed
    mark = time.perf_counter()
    stop = first_row + len(chunk)
    queries = prepared(chunk.vectors, config.index.metric)
    dim = shared.item_vectors.shape[1]
    if queries.shape[1] != dim:
        raise InputError(f"{chunk.source}: user vectors have length {queries.shape[1]} but items have {dim}")
    context.score_range.check(queries, chunk.ids, first_row, config.inputs.users, shared.vector_column)
    indptr, pos_rows = context.positives_of(first_row, stop)
    if context.fingerprint is not None:
        context.fingerprint.add_users(chunk.vectors)
    n_items = len(shared.item_ids)
    max_depth = 0
    if index is None:
        assert context.source is not None
        window = context.source.window(first_row, stop, n_items - np.diff(indptr), lo, hi)
    else:
        max_depth = int(search_depths(np.diff(indptr), hi, index.n_items).max(initial=0))
        saver = context.saver
        window = retrieve_window(index, queries, indptr, pos_rows, 1 if saver is not None else lo, hi)
        if saver is not None:  # the cache keeps ranks 1..hi; the window is cut from them
            saver.write(window, first_row)
            window = window_slice(window, lo, hi)
    hits = total = 0
    if context.audit_index is not None:
        audit = shared.audit_rows
        hits, total = _audit_chunk(context.audit_index, window, queries, indptr, pos_rows,
                                   audit[(audit >= first_row) & (audit < stop)] - first_row, lo, hi)
    seconds = {"retrieve" if index is not None else "candidates": time.perf_counter() - mark}
    mark = time.perf_counter()
    faults.point("mine.retrieve")
    streams = user_streams(config.selection.seed, id_keys(chunk.ids))
    references = (reference_scores(queries, shared.item_vectors, indptr, pos_rows, config.selection.margin_reference)
                  if context.selection.uses_margins else None)
    exclude = near_duplicates(window, indptr, pos_rows, shared.unit_items, config.selection.max_positive_similarity,
                              shared.item_keys)
    selection = select_hard_negatives(window, streams, context.selection, references, exclude)
    sketch = WindowSketch(lo, width)
    sketch.add(window, chunk.ids, streams, queries, shared.item_vectors, indptr, pos_rows)
    n_selected = np.bincount(selection.user, minlength=len(chunk))
    kept = np.minimum(n_selected, needed)
    reasons = _short_reason(kept, needed, selection.window_filled, width, window.available, hi,
                            selection.after_filters, context.exact)
    table = hard_neg_edge_table(selection, chunk.ids, shared.item_ids, lo, context.edge_weight)
    if shared.capped:
        table = table.with_columns(
            pl.Series("user_row", (selection.user + first_row).astype(np.int64)),
            pl.Series("order", selection.order.astype(np.int32)),
            pl.Series("priority", pair_uniforms(streams[selection.user], id_keys(shared.item_ids[selection.item]))),
        )
    seconds["select"] = time.perf_counter() - mark
    faults.point("mine.select")
    return ChunkResult(first_row=first_row, users=len(chunk), table=table,
                       short=Counter(reasons[(kept > 0) & (reasons != "")].tolist()),
                       empty=Counter(reasons[kept == 0].tolist()), audit_hits=hits, audit_total=total,
                       max_depth=max_depth, sketch=sketch, seconds=seconds,
                       precision=index.precision if index is not None else context.source.precision
                       if context.source is not None else "fp32")


def _short_reason(
    n_selected: np.ndarray, needed: int, filled: np.ndarray, width: int, available: np.ndarray, hi: int,
    after_filters: np.ndarray, exact: bool,
) -> np.ndarray:
    """Why each user got fewer than ``needed`` negatives ('' when it did not)."""
    reason = np.full(len(n_selected), "", dtype=object)
    short = n_selected < needed
    catalog = short & (filled < width) & (available < hi)
    index = short & ~catalog & (filled < width) & (not exact)
    filters = short & ~catalog & ~index & (after_filters < needed)
    cap = short & ~catalog & ~index & ~filters
    reason[catalog] = "catalog"
    reason[index] = "index"
    reason[filters] = "filters"
    reason[cap] = "item-cap"
    return reason




def _audit_chunk(audit_index: Index, window: Window, queries: np.ndarray, indptr: np.ndarray,
                 pos_rows: np.ndarray, users: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """(window items also found by exact search, exact window size) over the chunk's sampled ``users``."""
    if not users.size:
        return 0, 0
    counts = np.diff(indptr)[users]
    sub_ptr = np.concatenate([[0], np.cumsum(counts)])
    sub_pos = np.concatenate([pos_rows[indptr[u] : indptr[u + 1]] for u in users])
    exact = retrieve_window(audit_index, queries[users], sub_ptr, sub_pos, lo, hi)
    hits = total = 0
    for approx_items, exact_items in zip(window.items[users], exact.items):
        truth = set(exact_items[exact_items >= 0].tolist())
        hits += len(truth & set(approx_items[approx_items >= 0].tolist()))
        total += len(truth)
    return hits, total
