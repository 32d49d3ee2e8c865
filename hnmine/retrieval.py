"""Stage 2: FAISS top-K retrieval of each user's rank window, positives excluded.

A chunk of users is searched deep enough that its rank window is complete whatever the user's
number of positives: user u is searched to depth ``hi + |positives of u|`` (users are grouped into a
few depth levels so that every FAISS call still carries many queries). Positives are then removed
and ranks counted among the remaining items, so rank r is the r-th best item the user has not
interacted with.

Determinism: FAISS's flat search computes scores through different kernels depending on the number
of queries per call and the thread count (their last bits differ), so the retrieved candidates are
rescored with one fixed kernel and sorted by (score desc, item row asc). The window therefore does
not depend on chunk size or threads. A small safety margin of extra candidates is retrieved so that
re-sorting near-ties at the cut-off cannot pull in an unseen item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import faiss
import numpy as np

__all__ = ["SAFETY_MARGIN", "IndexSpec", "ItemIndex", "Window", "retrieve_window", "search_depths"]

SAFETY_MARGIN = 16
_RESCORE_BLOCK = 64
_DEPTH_STEPS = (0, 32, 64, 128, 256, 512, 1024, 2048, 4096)

IndexKind = Literal["flat", "ivf", "hnsw"]
Metric = Literal["ip", "cosine"]


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index to search and its parameters.

    ``flat`` is exact. ``ivf`` (IndexIVFFlat: ``nlist`` clusters, ``nprobe`` searched) and ``hnsw``
    (IndexHNSWFlat: ``hnsw_m`` links, ``ef_construction``, ``ef_search`` raised to at least the
    search depth) are approximate: audit them with ``audit_sample``.
    """

    kind: IndexKind = "flat"
    metric: Metric = "ip"
    nlist: int | None = None
    nprobe: int = 64
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 512

    def resolved_nlist(self, n_items: int) -> int:
        return self.nlist or max(1, min(int(4 * math.sqrt(n_items)), n_items // 39))


class ItemIndex:
    """A FAISS inner-product index over the item vectors (unit-normalised first for cosine)."""

    def __init__(self, vectors: np.ndarray, spec: IndexSpec = IndexSpec(), threads: int | None = None) -> None:
        self.spec = spec
        if threads:
            faiss.omp_set_num_threads(threads)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = self.vectors.shape
        self.n_items = n
        self.max_norm = float(np.linalg.norm(self.vectors, axis=1).max()) if n else 0.0
        if spec.kind == "flat":
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
    def exact(self) -> bool:
        return self.spec.kind == "flat"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search: (scores, item rows) of shape (m, k); rows are -1 where fewer were found."""
        k = min(k, self.n_items)
        if self.spec.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.spec.ef_search, k)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


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


def search_depths(positive_counts: np.ndarray, hi: int, n_items: int) -> np.ndarray:
    """Search depth per user: ``hi`` plus the user's positives, rounded up to a few shared levels."""
    need = positive_counts.astype(np.int64)
    steps = np.asarray((*_DEPTH_STEPS, max(int(need.max(initial=0)), _DEPTH_STEPS[-1])), dtype=np.int64)
    level = steps[np.searchsorted(steps, need)]
    return np.minimum(hi + level + SAFETY_MARGIN, n_items)


def _rescore(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact float32 scores of (query, item row) pairs with one fixed kernel, block by block."""
    m, k = rows.shape
    out = np.empty((m, k), dtype=np.float32)
    buf = np.empty((_RESCORE_BLOCK, k, vectors.shape[1]), dtype=np.float32)
    safe = np.where(rows >= 0, rows, 0)
    for start in range(0, m, _RESCORE_BLOCK):
        stop = min(start + _RESCORE_BLOCK, m)
        block = buf[: stop - start]
        np.take(vectors, safe[start:stop], axis=0, out=block)
        np.einsum("ij,ikj->ik", queries[start:stop], block, out=out[start:stop])
    return out


def _descending_keys(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """uint64 keys whose ascending order is (score desc, item row asc)."""
    bits = scores.view(np.uint32).astype(np.uint64)
    negative = (bits >> np.uint64(31)) == 1
    ascending = np.where(negative, ~bits & np.uint64(0xFFFFFFFF), bits | np.uint64(0x80000000))
    descending = np.uint64(0xFFFFFFFF) - ascending
    return (descending << np.uint64(32)) | rows.astype(np.uint64)


def _scores_from_keys(keys: np.ndarray) -> np.ndarray:
    ascending = np.uint64(0xFFFFFFFF) - (keys >> np.uint64(32))
    negative = (ascending >> np.uint64(31)) == 0
    bits = np.where(negative, ~ascending & np.uint64(0xFFFFFFFF), ascending & np.uint64(0x7FFFFFFF))
    return bits.astype(np.uint32).view(np.float32)


def _window_for_level(
    index: ItemIndex,
    queries: np.ndarray,
    indptr: np.ndarray,
    pos_rows: np.ndarray,
    users: np.ndarray,
    depth: int,
    lo: int,
    hi: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows of ``users`` searched to ``depth``, and whether each is provably complete."""
    faiss_scores, rows = index.search(queries[users], depth)
    scores = _rescore(queries[users], index.vectors, rows)
    n_items = np.int64(index.n_items)
    # A user's positives, as sorted keys (local user, item row); membership by binary search.
    starts, stops = indptr[users], indptr[users + 1]
    lengths = stops - starts
    local = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    gather = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    pos_keys = local * n_items + pos_rows[gather].astype(np.int64)
    cand_keys = np.arange(len(users), dtype=np.int64)[:, None] * n_items + rows
    if pos_keys.size:
        at = np.searchsorted(pos_keys, cand_keys).clip(max=pos_keys.size - 1)
        drop = pos_keys[at] == cand_keys
    else:
        drop = np.zeros(rows.shape, dtype=bool)
    drop |= rows < 0
    scores[drop] = -np.inf
    keys = np.sort(_descending_keys(scores, np.where(rows >= 0, rows, 0)), axis=1, kind="stable")
    window = keys[:, lo - 1 : hi]
    win_scores = _scores_from_keys(window)
    win_items = (window & np.uint64(0xFFFFFFFF)).astype(np.int64)
    win_items[~np.isfinite(win_scores)] = -1
    pad = hi - lo + 1 - window.shape[1]
    if pad > 0:  # the catalog is smaller than the window
        win_items = np.pad(win_items, ((0, 0), (0, pad)), constant_values=-1)
        win_scores = np.pad(win_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    complete = np.ones(len(users), dtype=bool)
    if index.exact and depth < index.n_items:
        # An item FAISS did not return scores at most the last returned FAISS score, and FAISS and the
        # rescoring kernel differ by at most 2 d u |q| max|x| (float32 dot-product error bound). If that
        # still falls below the window's last score, no unseen item can belong in the window; else
        # (exact ties at the cut-off, e.g. duplicate or zero item vectors) the user is searched deeper.
        boundary = _scores_from_keys(keys[:, hi - 1]) if keys.shape[1] >= hi else np.full(len(users), -np.inf)
        dim = queries.shape[1]
        tolerance = 2.0 * dim * 2.0**-24 * np.linalg.norm(queries[users], axis=1) * index.max_norm
        complete = faiss_scores[:, -1].astype(np.float64) < boundary.astype(np.float64) - tolerance
    return win_items, win_scores, (~drop).sum(axis=1), complete


def retrieve_window(
    index: ItemIndex,
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
    m = len(queries)
    counts = np.diff(indptr)
    depths = search_depths(counts, hi, index.n_items)
    width = hi - lo + 1
    items = np.full((m, width), -1, dtype=np.int64)
    scores = np.full((m, width), -np.inf, dtype=np.float32)
    retrieved = np.zeros(m, dtype=np.int64)
    pending = [(int(depth), np.flatnonzero(depths == depth)) for depth in np.unique(depths)]
    while pending:
        depth, users = pending.pop(0)
        window_items, window_scores, kept, complete = _window_for_level(
            index, queries, indptr, pos_rows, users, depth, lo, hi
        )
        done = users[complete]
        items[done], scores[done], retrieved[done] = window_items[complete], window_scores[complete], kept[complete]
        if not complete.all():
            pending.append((min(index.n_items, 2 * depth), users[~complete]))
    available = index.n_items - counts
    return Window(items=items, scores=scores, available=available, lo=lo, retrieved=retrieved)
