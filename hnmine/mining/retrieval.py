"""Stage 2: FAISS top-K retrieval of each user's rank window, positives excluded.

A chunk of users is searched deep enough that its rank window is complete whatever the user's
number of positives: user u is searched to depth ``hi + |positives of u|`` (users are grouped into a
few depth levels so that every FAISS call still carries many queries). Positives are then removed
and ranks counted among the remaining items, so rank r is the r-th best item the user has not
interacted with.

Determinism: FAISS's flat search computes scores through different kernels depending on the number
of queries per call and the thread count (their last bits differ), so the window is ordered by one
fixed canonical kernel (:func:`_canonical_pairs`) and sorted by (score desc, item row asc). The window
therefore does not depend on chunk size or threads. Any two float32 kernels of a length-d dot product
differ by at most ``2 gamma_d |q| max|v|`` (:func:`_noise_margin`), which makes it provable which
candidates can reach ranks ``lo..hi`` canonically: only those are rescored, and a user
whose FAISS results stop within that margin of its ``hi``-th score is searched deeper.

``exact`` is a second exact engine without FAISS (:mod:`hnmine.mining.exact`); it returns the same windows
bit for bit. ``--item-shards`` searches the catalog block by block and merges exactly
(:mod:`hnmine.mining.sharded`). Every index answers :class:`Index`; :func:`retrieve_window` asks it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, cast

import numba
import numpy as np

from hnmine.mining import kernels
from hnmine.mining.config import INDEX_KINDS, METRICS, PRECISIONS, IndexSpec
from hnmine.mining.exact import ExactCatalog, retrieve_exact

if TYPE_CHECKING:  # imported where used: a run loads FAISS only for its FAISS kinds
    import faiss

__all__ = ["INDEX_KINDS", "METRICS", "PRECISIONS", "SAFETY_MARGIN", "Index", "IndexSpec", "ItemIndex", "Window",
           "call_depths", "resolved_spec", "retrieve_window", "search_depths"]

SAFETY_MARGIN = 16
_MIN_CALL = 256
# ``kind="auto"`` takes the exact engine from this many (user, item) pairs: below it, FAISS flat is as
# fast and its kernels compile in half the time on a cold start (9 against 16 CPU-seconds).
_AUTO_EXACT_PAIRS = 200_000_000
# The last ``threads`` an index was given (FAISS, torch and numba keep one process-wide setting each).
_threads: int | None = None
# Depth levels (extra ranks for a user's positives): every 32 up to 1,024, then doubling.
_DEPTH_STEPS = (*range(0, 1025, 32), 2048, 4096)


def resolved_spec(spec: IndexSpec, n_items: int, queries: int | None) -> IndexSpec:
    """``auto`` made concrete for a catalog of ``n_items`` searched by ``queries`` users."""
    if spec.kind != "auto":
        return spec
    big = queries is None or queries * n_items >= _AUTO_EXACT_PAIRS
    return replace(spec, kind="exact" if big else "flat")



class ItemIndex:
    """An inner-product index over the item vectors (unit-normalised first for cosine): the exact
    engine's catalog or a FAISS index.

    ``queries`` (how many users the job will search, if known) only informs ``auto``'s choices.
    """

    def __init__(self, vectors: np.ndarray, spec: IndexSpec = IndexSpec(), threads: int | None = None,
                 queries: int | None = None) -> None:
        spec = resolved_spec(spec, len(vectors), queries)
        self.spec = spec
        if threads:
            global _threads
            _threads = threads  # for torch too, should an exact index (an audit) follow a FAISS one
            kernels.set_threads(threads)
            if spec.kind != "exact":
                import faiss

                faiss.omp_set_num_threads(threads)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = self.vectors.shape
        self.n_items = n
        self.index: faiss.Index | None = None
        self._max_norm = float(np.linalg.norm(self.vectors.astype(np.float64), axis=1).max(initial=0.0))
        self.catalog: ExactCatalog | None = None
        if spec.kind == "exact":
            self.catalog = ExactCatalog(self.vectors, spec.precision, queries, _threads)
            return
        import faiss

        if spec.kind == "flat":
            # FAISS 1.15 only takes its BLAS path from ~2,000 queries per call (its default threshold
            # is 128,000); below that a call cost 3x as much per query here (Gowalla, k=548: 1,024
            # queries 483 us/query, 2,048 queries 157 us/query; with 20, 256 queries: 131 us/query).
            faiss.cvar.distance_compute_blas_threshold = 20
            self.index = faiss.IndexFlatIP(dim)
        elif spec.kind == "ivf":
            quantizer = faiss.IndexFlatIP(dim)
            self.index = faiss.IndexIVFFlat(quantizer, dim, spec.resolved_nlist(n), faiss.METRIC_INNER_PRODUCT)
            self.index.cp.seed = 1234
            self.index.train(self.vectors)
            self.index.nprobe = spec.nprobe
            self._quantizer = quantizer  # keep it alive: the IVF index does not own it
        elif spec.kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = spec.ef_construction
        else:
            raise ValueError(f"unknown index kind {spec.kind!r}")
        self.index.add(self.vectors)

    @property
    def precision(self) -> str:
        """The GEMM the exact engine uses (``bf16`` or ``fp32``); FAISS indexes: ``fp32``."""
        return "bf16" if self.catalog is not None and self.catalog.bf16 else "fp32"

    @property
    def exact(self) -> bool:
        return self.spec.kind in ("flat", "exact")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search: (scores, item rows) of shape (m, k); rows are -1 where fewer were found."""
        k = min(k, self.n_items)
        if self.index is None:
            raise ValueError("the 'exact' index has no FAISS search; use retrieve_window")
        if self.spec.kind == "hnsw":  # built as an IndexHNSWFlat
            cast("faiss.IndexHNSWFlat", self.index).hnsw.efSearch = max(self.spec.ef_search, k)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return self.index.search(queries, k)

    def window(self, queries: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray, lo: int, hi: int) -> Window:
        """:func:`retrieve_window` on this index: the exact engine, or FAISS searches by depth level."""
        counts = np.diff(indptr)
        if self.catalog is not None:
            items, scores, retrieved = retrieve_exact(self.catalog, queries, indptr, pos_rows, lo, hi)
            return Window(items=items, scores=scores, available=self.n_items - counts, lo=lo, retrieved=retrieved)
        m = len(queries)
        depths = call_depths(counts, hi, self.n_items)
        width = hi - lo + 1
        items = np.full((m, width), -1, dtype=np.int64)
        scores = np.full((m, width), -np.inf, dtype=np.float32)
        retrieved = np.zeros(m, dtype=np.int64)
        for depth in np.unique(depths):
            users = np.flatnonzero(depths == depth)
            items[users], scores[users], retrieved[users] = _window_for_level(
                self, queries, indptr, pos_rows, users, int(depth), lo, hi
            )
        available = self.n_items - counts
        return Window(items=items, scores=scores, available=available, lo=lo, retrieved=retrieved)


@dataclass
class Window:
    """Each user's rank window: column j holds rank ``lo + j`` among the user's non-positives.

    ``items`` are item rows (-1 where the window has no item), ``scores`` float32 (-inf there).
    ``available`` is how many non-positive items the catalog has for the user.
    """

    items: np.ndarray
    scores: np.ndarray
    available: np.ndarray
    lo: int
    retrieved: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def width(self) -> int:
        return self.items.shape[1]

    def filled(self) -> np.ndarray:
        return (self.items >= 0).sum(axis=1)


class Index(Protocol):
    """What every index answers: :class:`ItemIndex`, and :class:`hnmine.mining.sharded.ShardedIndex`."""

    n_items: int
    spec: IndexSpec

    @property
    def exact(self) -> bool: ...

    @property
    def precision(self) -> str: ...

    def window(self, queries: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray, lo: int, hi: int) -> Window: ...


def search_depths(positive_counts: np.ndarray, hi: int, n_items: int) -> np.ndarray:
    """Search depth per user: ``hi`` plus the user's positives, rounded up to a few shared levels."""
    need = positive_counts.astype(np.int64)
    steps = np.asarray((*_DEPTH_STEPS, max(int(need.max(initial=0)), _DEPTH_STEPS[-1])), dtype=np.int64)
    level = steps[np.searchsorted(steps, need)]
    return np.minimum(hi + level + SAFETY_MARGIN, n_items)


def call_depths(positive_counts: np.ndarray, hi: int, n_items: int) -> np.ndarray:
    """The depth each user of a chunk is searched to: one FAISS call per distinct value.

    :func:`search_depths`, with every level of fewer than ``_MIN_CALL`` users searched with the next
    deeper level instead (deeper is always correct): a call has a fixed cost, and a few users
    searched a little deeper cost less than it.
    """
    depths = search_depths(positive_counts, hi, n_items)
    for shallow, deeper in itertools.pairwise(np.unique(depths)):
        moving = depths == shallow
        if moving.sum() < _MIN_CALL:
            depths[moving] = deeper
    return depths


def _rescore(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Canonical scores of every (query row, item) pair in ``rows`` (-1 entries score item 0)."""
    m, k = rows.shape
    users = np.repeat(np.arange(m, dtype=np.int64), k)
    return _canonical_pairs(queries, vectors, users, np.where(rows >= 0, rows, 0).ravel()).reshape(m, k)


def _canonical_pairs(queries: np.ndarray, vectors: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The canonical score of each (user, item) pair: one fixed compiled kernel whatever the batch.

    :func:`hnmine.mining.kernels.dot` sums in one fixed order, so a pair's score does not depend on the
    chunk, the block or the thread count (checked in the tests).
    """
    return kernels.canonical_pairs(
        np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(vectors, dtype=np.float32),
        np.ascontiguousarray(users, dtype=np.int64), np.ascontiguousarray(items, dtype=np.int64),
    )



def _window_for_level(
    index: ItemIndex,
    queries: np.ndarray,
    indptr: np.ndarray,
    pos_rows: np.ndarray,
    users: np.ndarray,
    depth: int,
    lo: int,
    hi: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of ``users`` from one FAISS search to ``depth``; too-shallow users are searched deeper."""
    fast, rows = index.search(queries[users], depth)
    m = len(users)
    width = hi - lo + 1
    win_items = np.empty((m, width), dtype=np.int64)
    win_scores = np.empty((m, width), dtype=np.float32)
    retrieved = np.empty(m, dtype=np.int64)
    short = np.zeros(m, dtype=np.bool_)
    margins = _noise_margin(queries[users], index._max_norm)
    need = min(hi, index.n_items)
    # Complete only if every item FAISS did not return scores below F - margin (F: the hi-th best
    # non-positive); otherwise the user is searched deeper.
    check = bool(index.exact and fast.shape[1] < index.n_items)
    cand_items = np.empty((m, fast.shape[1]), dtype=np.int64)
    counts = np.empty(m, dtype=np.int64)
    heads = np.empty(m, dtype=np.int64)
    kernels.post_search_candidates(
        np.ascontiguousarray(fast, dtype=np.float32), np.ascontiguousarray(rows, dtype=np.int64),
        np.ascontiguousarray(users, dtype=np.int64), np.ascontiguousarray(indptr, dtype=np.int64),
        np.ascontiguousarray(pos_rows, dtype=np.int64), margins, lo, need, check, cand_items, counts, heads,
        retrieved, short,
    )
    # Canonical scores item by item (one read of each item vector), then the window per user.
    no_skip = np.zeros(m, dtype=np.bool_)
    canon = np.empty((m, max(int(counts.max(initial=0)), 1)), dtype=np.float32)
    kernels.rescore_reservoirs(np.ascontiguousarray(queries[users], dtype=np.float32), index.vectors, cand_items,
                               counts, no_skip, 8 * numba.get_num_threads(), canon)
    kernels.window_from_scores(cand_items, canon, counts, heads, no_skip, lo, hi, win_items, win_scores)
    redo = np.flatnonzero(short)
    if redo.size:  # rare: exact ties or near-ties past the search depth
        deeper = min(max(2 * depth, depth + hi), index.n_items)
        win_items[redo], win_scores[redo], retrieved[redo] = _window_for_level(
            index, queries, indptr, pos_rows, users[redo], deeper, lo, hi
        )
    return win_items, win_scores, retrieved



def retrieve_window(
    index: Index,
    queries: np.ndarray,
    indptr: np.ndarray,
    pos_rows: np.ndarray,
    lo: int,
    hi: int,
) -> Window:
    """Each user's ranks ``lo..hi`` among its non-positive items (a pure function of the chunk).

    ``queries`` are the chunk's user vectors (normalised for cosine), ``indptr``/``pos_rows`` the
    chunk's positives as CSR over item rows (sorted within each user).
    """
    return index.window(queries, indptr, pos_rows, lo, hi)


def _noise_margin(queries: np.ndarray, max_norm: float) -> np.ndarray:
    """Per user, a float32 margin ``4 gamma_d |q| max|v|`` that covers any two float32 kernels.

    Any float32 dot product of length d (any summation order, FMA or not) lies within
    ``gamma_d * sum|q_i v_i| <= gamma_d |q| |v|`` of the exact value, ``gamma_d = d u / (1 - d u)``,
    ``u = 2**-24``; so the GEMM's score and the canonical score differ by at most twice that, and a
    candidate test against a lower bound must allow for twice the difference.
    """
    dim = queries.shape[1]
    unit = 2.0**-24
    gamma = dim * unit / (1.0 - dim * unit)
    norms = np.linalg.norm(queries.astype(np.float64), axis=1)
    return (4.0 * gamma * norms * max_norm * 1.01 + 1e-30).astype(np.float32)
