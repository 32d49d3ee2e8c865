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

``exact`` is a second exact engine without FAISS: a tiled GEMM (numpy float32, or torch bf16) whose
score blocks are folded into per-user candidate reservoirs in one compiled pass
(:func:`_retrieve_exact`); it returns the same windows bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import numba
import numpy as np

from hnmine.mining import kernels
from hnmine.mining.config import INDEX_KINDS, METRICS, PRECISIONS, IndexSpec

if TYPE_CHECKING:  # imported where used: a run loads FAISS or torch, whichever its engine needs
    import faiss
    import torch

__all__ = ["INDEX_KINDS", "METRICS", "PRECISIONS", "SAFETY_MARGIN", "IndexSpec", "ItemIndex", "ShardedIndex", "Window",
           "call_depths", "item_shards", "make_index", "resolved_spec", "retrieve_window", "search_depths"]

SAFETY_MARGIN = 16
_MIN_CALL = 256
# The exact engine: users per GEMM tile and items per block (a cache-sized score buffer).
_TILE_USERS = 1024
# ... and at least this many, when a chunk is split among threads.
_MIN_TILE = 128
_TILE_ITEMS = 1024
# The bf16 engine guesses each user's bound from every 8th item (in norm order).
_GUESS_STRIDE = 32
# ``kind="auto"`` takes the exact engine from this many (user, item) pairs: below it, FAISS flat is as
# fast and its kernels compile in half the time on a cold start (9 against 16 CPU-seconds).
_AUTO_EXACT_PAIRS = 200_000_000
# ``precision="auto"`` takes bf16 tiles (torch) from this many multiply-adds (users x items x dim), on
# CPUs with bf16 units: below it, loading torch (~2 CPU-seconds with its exit) and rescoring the more
# candidates its wider bounds keep cost more than its faster GEMM saves over numpy's float32 one
# (AVX512-BF16, one thread: 195 against 62 GFLOP/s, 0.022 ns less per multiply-add; Gowalla with
# d = 64 is 7.8e10).
_AUTO_BF16_MACS = 2e11
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
        self._queries = queries
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
        if spec.kind == "exact":
            self._prepare_exact()
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

    def _prepare_exact(self) -> None:
        """The catalog in descending norm order (a block's items then have similar error bounds), as
        the GEMM reads it: float32 rows for numpy's BLAS, or a bf16 (d, n) torch view."""
        norms = np.linalg.norm(self.vectors.astype(np.float64), axis=1) * (1 + 1e-6)
        self._norms = norms.astype(np.float32)
        self._order = np.argsort(-self._norms, kind="stable").astype(np.int64)
        self._place = np.empty(self.n_items, dtype=np.int64)
        self._place[self._order] = np.arange(self.n_items)
        self._sorted_norms = self._norms[self._order]
        self.bf16 = _wants_bf16(self.spec.precision, self._queries, self.vectors.shape)
        if self.bf16:
            import torch

            if _threads:
                torch.set_num_threads(_threads)
            self._items_bf16_t = torch.from_numpy(self.vectors[self._order]).to(torch.bfloat16).t()
            self._sample_bf16_t = self._items_bf16_t[:, ::_GUESS_STRIDE].contiguous()
            self.bf16 = _bf16_gemm_within_bound(self.vectors)
        if not self.bf16:
            self._items_sorted = self.vectors[self._order]
            self._sample_sorted = np.ascontiguousarray(self._items_sorted[::_GUESS_STRIDE])

    @property
    def precision(self) -> str:
        """The GEMM the exact engine uses (``bf16`` or ``fp32``); FAISS indexes: ``fp32``."""
        return "bf16" if getattr(self, "bf16", False) else "fp32"

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


def item_shards(n_items: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous blocks of item rows ``(start, stop)``, as equal as possible (none empty)."""
    shards = max(1, min(shards, n_items))
    bounds = [n_items * k // shards for k in range(shards + 1)]
    return list(itertools.pairwise(bounds))


class ShardedIndex:
    """The catalog as ``shards`` blocks of items, each searched by its own index, one block at a time.

    Only one block's index is resident while a chunk is searched (:func:`retrieve_window` builds it,
    searches every user of the chunk to its top ``hi`` within the block, and drops it). Building a
    flat or exact index is a copy of the block (plus a sort by norm for bf16), small next to a chunk's
    search. The blocks' top lists merge into the single index's window exactly: each holds its block's
    canonical top ``hi`` non-positives ordered by (canonical score desc, item row asc), and the
    canonical score of a pair does not depend on the block it was computed in.
    """

    def __init__(self, vectors: np.ndarray, spec: IndexSpec, shards: int, threads: int | None = None,
                 queries: int | None = None) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.n_items = len(self.vectors)
        # one choice for every block: the one a single index over the catalog would make
        self.spec = resolved_spec(spec, self.n_items, queries)
        self.threads = threads
        self.blocks = item_shards(self.n_items, shards)
        self._precision = "fp32"

    @property
    def exact(self) -> bool:
        return self.spec.kind in ("flat", "exact")

    @property
    def precision(self) -> str:
        """The GEMM of the last block searched (``bf16`` or ``fp32``)."""
        return self._precision

    def block_index(self, start: int, stop: int) -> ItemIndex:
        index = ItemIndex(self.vectors[start:stop], self.spec, self.threads)
        self._precision = index.precision
        return index


def make_index(vectors: np.ndarray, spec: IndexSpec, threads: int | None = None, queries: int | None = None,
               shards: int = 1) -> ItemIndex | ShardedIndex:
    """One index over the catalog, or ``shards`` blocks searched in turn (:class:`ShardedIndex`)."""
    if shards > 1 and len(vectors) > 1:
        return ShardedIndex(vectors, spec, shards, threads, queries)
    return ItemIndex(vectors, spec, threads, queries)


def _retrieve_sharded(index: ShardedIndex, queries: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray,
                      lo: int, hi: int) -> Window:
    """The window through the blocks: each block's top ``hi`` per user, merged in canonical order."""
    m = len(queries)
    indptr = np.asarray(indptr, dtype=np.int64)
    pos_rows = np.asarray(pos_rows, dtype=np.int64)
    owner = np.repeat(np.arange(m), np.diff(indptr))
    keys: list[np.ndarray] = []
    retrieved = np.zeros(m, dtype=np.int64)
    for start, stop in index.blocks:
        inside = (pos_rows >= start) & (pos_rows < stop)
        block_ptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner[inside], minlength=m), out=block_ptr[1:])
        block = index.block_index(start, stop)
        top = retrieve_window(block, queries, block_ptr, pos_rows[inside] - start, 1, min(hi, stop - start))
        del block
        rows = np.where(top.items >= 0, top.items + start, _NO_ITEM)
        keys.append(_descending_keys(top.scores, rows))
        retrieved += top.retrieved
    merged = np.concatenate(keys, axis=1)
    merged.sort(axis=1)
    width = hi - lo + 1
    empty = _descending_keys(np.full(1, -np.inf, dtype=np.float32), np.full(1, _NO_ITEM, dtype=np.int64))[0]
    window = np.full((m, width), empty, dtype=np.uint64)
    taken = merged[:, lo - 1 : hi]
    window[:, : taken.shape[1]] = taken
    rows = (window & np.uint64(0xFFFFFFFF)).astype(np.int64)
    items = np.where(rows == _NO_ITEM, -1, rows)
    scores = np.where(items >= 0, _scores_from_keys(window), np.float32(-np.inf)).astype(np.float32)
    return Window(items=items, scores=scores, available=index.n_items - np.diff(indptr), lo=lo, retrieved=retrieved)


# An empty window slot in a merge key: after every item row (rows fit 32 bits: ``_descending_keys``).
_NO_ITEM = 0xFFFFFFFF


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


def _descending_keys(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """uint64 keys whose ascending order is (score desc, item row asc)."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32)
    # Non-negative floats: flip all bits but the sign; negative floats: keep. As uint32 that is
    # descending score order (positives first, larger first; then negatives, closest to zero first).
    desc = bits ^ (~(bits >> 31) & np.int32(0x7FFFFFFF))
    keys = desc.view(np.uint32).astype(np.uint64) << np.uint64(32)
    keys |= np.asarray(rows).astype(np.uint64)
    return keys


def _scores_from_keys(keys: np.ndarray) -> np.ndarray:
    desc = (keys >> np.uint64(32)).astype(np.uint32).view(np.int32)
    return (desc ^ (~(desc >> 31) & np.int32(0x7FFFFFFF))).view(np.float32)


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
    index: ItemIndex | ShardedIndex,
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
    if isinstance(index, ShardedIndex):
        return _retrieve_sharded(index, queries, indptr, pos_rows, lo, hi)
    if index.spec.kind == "exact":
        return _retrieve_exact(index, queries, indptr, pos_rows, lo, hi)
    m = len(queries)
    counts = np.diff(indptr)
    depths = call_depths(counts, hi, index.n_items)
    width = hi - lo + 1
    items = np.full((m, width), -1, dtype=np.int64)
    scores = np.full((m, width), -np.inf, dtype=np.float32)
    retrieved = np.zeros(m, dtype=np.int64)
    for depth in np.unique(depths):
        users = np.flatnonzero(depths == depth)
        items[users], scores[users], retrieved[users] = _window_for_level(
            index, queries, indptr, pos_rows, users, int(depth), lo, hi
        )
    available = index.n_items - counts
    return Window(items=items, scores=scores, available=available, lo=lo, retrieved=retrieved)


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


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 in hardware (AMX or AVX512-BF16): Linux cpuinfo flags."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False


def _wants_bf16(precision: str, queries: int | None, shape: tuple[int, ...]) -> bool:
    """Whether the exact engine takes bf16 tiles: asked for, or ``auto`` on a CPU with bf16 units and a
    job of at least ``_AUTO_BF16_MACS`` multiply-adds (``queries`` users; unknown counts as big)."""
    if precision != "auto":
        return precision == "bf16"
    big = queries is None or queries * shape[0] * shape[1] >= _AUTO_BF16_MACS
    return big and cpu_has_bf16()


def _bf16_slack(dim: int) -> float:
    """``c`` with |bf16 GEMM score - canonical float32 score| <= c |q| |v| for any pair.

    Rounding q and v to bf16 (``u = 2**-8``, round to nearest even) moves each product by at most
    ``(2u + u^2) |q_i v_i|``; products of bf16 numbers are exact in float32 and summed in float32
    (``gamma_d``, any order); the sum is rounded to bf16 once more (``u``). The canonical kernel is
    within ``gamma_d`` of the exact value. Sum of |q_i v_i| <= |q| |v|. With 1% to spare.
    """
    u = 2.0**-8
    gamma = dim * 2.0**-24 / (1.0 - dim * 2.0**-24)
    fast = (2 * u + u * u) + gamma * (1 + u) ** 2 + u * (1 + u) ** 2 * (1 + gamma)
    return 1.01 * (fast + gamma)


def _fp32_slack(dim: int) -> float:
    """``c`` with |float32 GEMM score - canonical float32 score| <= c |q| |v| for any pair.

    Both are float32 sums of the same products in some order (FMA or not), each within ``gamma_d
    sum|q_i v_i| <= gamma_d |q| |v|`` of the exact value. The scan's own float32 arithmetic on bounds
    (a few roundings of numbers no larger than ``|q| |v|`` for any item that can reach the bound) is
    covered by 16 units of rounding, ``2**-20``.
    """
    gamma = dim * 2.0**-24 / (1.0 - dim * 2.0**-24)
    return 1.01 * 2 * gamma + 2.0**-20


def _bf16_gemm_within_bound(vectors: np.ndarray, sample: int = 512) -> bool:
    """Check on a sample of items against items that torch's bf16 GEMM stays within its bound.

    The bound assumes float32 accumulation; a backend that accumulated in bf16 would break it, and
    then the exact engine must use float32 (checked once per index, ~1 ms).
    """
    import torch

    rows = vectors[np.linspace(0, len(vectors) - 1, min(sample, len(vectors))).astype(np.int64)]
    if len(rows) == 0:
        return True
    t = torch.from_numpy(np.ascontiguousarray(rows)).to(torch.bfloat16)
    fast = torch.mm(t, t.t()).float().numpy().astype(np.float64)
    exact = rows.astype(np.float64) @ rows.T.astype(np.float64)
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    bound = (_bf16_slack(vectors.shape[1]) * np.outer(norms, norms)) + 1e-30
    return bool(np.all(np.abs(fast - exact) <= bound))


class _Gemm:
    """The exact engine's fast scores, as numpy arrays the compiled scan reads: bf16 tiles by torch
    (returned as their int16 bits) or float32 by numpy's BLAS. ``queries`` are the job's users."""

    def __init__(self, index: ItemIndex, queries: np.ndarray) -> None:
        self.index = index
        self.bf16 = index.bf16
        self._q: Any  # a bf16 torch.Tensor or the float32 queries
        if self.bf16:
            import torch

            self._q = torch.from_numpy(queries).to(torch.bfloat16)
        else:
            self._q = queries

    def tile(self, users: np.ndarray) -> np.ndarray | torch.Tensor:
        """The tile's query rows (``users`` ascending)."""
        if users[-1] - users[0] + 1 == len(users):
            return self._q[users[0] : users[-1] + 1]
        if self.bf16:
            import torch

            return self._q[torch.from_numpy(users)]
        return self._q[users]

    def blocks(self, q: np.ndarray | torch.Tensor, block_items: int, limit: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(b0, scores)``: the tile's scores against catalog places ``b0..b0+block``, for every
        block that starts below place ``limit``; one GEMM each into a cache-sized buffer (each block
        is overwritten by the next)."""
        index = self.index
        mt, n = q.shape[0], index.n_items
        if self.bf16:
            import torch

            buf = torch.empty(mt * block_items, dtype=torch.bfloat16)
            for b0 in range(0, limit, block_items):
                b1 = min(b0 + block_items, n)
                scores = buf[: mt * (b1 - b0)].view(mt, b1 - b0)
                torch.mm(cast("torch.Tensor", q), index._items_bf16_t[:, b0:b1], out=scores)
                yield b0, scores.view(torch.int16).numpy()
            return
        fbuf = np.empty(mt * block_items, dtype=np.float32)
        for b0 in range(0, limit, block_items):
            b1 = min(b0 + block_items, n)
            out = fbuf[: mt * (b1 - b0)].reshape(mt, b1 - b0)
            np.matmul(q, index._items_sorted[b0:b1].T, out=out)
            yield b0, out

    def sample(self, q: np.ndarray | torch.Tensor) -> np.ndarray:
        """The tile's scores against the catalog sample (every ``_GUESS_STRIDE``-th place)."""
        if self.bf16:
            import torch

            return torch.mm(cast("torch.Tensor", q), self.index._sample_bf16_t).view(torch.int16).numpy()
        return np.matmul(q, self.index._sample_sorted.T)

    @contextlib.contextmanager
    def threads(self, threads: int) -> Iterator[None]:
        """The GEMM's own thread pool (numpy's BLAS or torch's) limited to ``threads`` meanwhile."""
        if self.bf16:
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                yield
            finally:
                torch.set_num_threads(before)
            return
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads, user_api="blas"):
            yield


def _workers() -> int:
    """Python threads for the exact engine's tiles: numba's thread count, where its threading layer
    lets several threads launch compiled kernels at once (omp, tbb; not workqueue)."""
    threads = numba.get_num_threads()  # starts numba's threading layer, if no kernel has yet
    if threads < 2:
        return 1
    return threads if numba.threading_layer() in ("omp", "tbb") else 1


def _retrieve_exact(
    index: ItemIndex, queries: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray, lo: int, hi: int
) -> Window:
    """Exact window by tiled GEMM and a per-user candidate reservoir, in canonical order.

    For a tile of users, each block of items (in descending norm order) is scored by one GEMM into
    a cache-sized buffer, and :func:`hnmine.mining.kernels.reservoir_block` folds it into each
    user's reservoir in the same pass over the scores. A fast score (bf16 or float32) is within
    ``slack |q| |v|`` of the canonical one (:func:`_bf16_slack`, :func:`_fp32_slack`), so each item
    carries its own interval: the reservoir keeps every non-positive item whose upper bound reaches
    the running ``hi``-th best lower bound, and all of those are rescored canonically and sorted by
    (score desc, item asc), exactly as the FAISS flat path does, so the window is identical to it and
    independent of tiles, chunks and threads. The scan starts from a guess of that bound taken on a
    sample of the catalog (:func:`_guess_bounds`), checked at the end: a user whose guess was too
    high (rare) is scanned again without one.

    Tiles run on a pool of Python threads, each doing its tile's GEMM, scan and rescoring with one
    thread (the kernels release the GIL): no barrier per block between two thread pools, and a
    thread slowed by another process on its core only delays its own tiles.
    """
    m = len(queries)
    n = index.n_items
    width = hi - lo + 1
    counts = np.diff(indptr)
    if m == 0 or n == 0:
        return Window(items=np.full((m, width), -1, dtype=np.int64), scores=np.full((m, width), -np.inf, dtype=np.float32),
                      available=n - counts, lo=lo, retrieved=np.zeros(m, dtype=np.int64))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not queries.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. from arrow)
        queries = queries.copy()
    items_out = np.empty((m, width), dtype=np.int64)  # every row is written (users are redone until done)
    scores_out = np.empty((m, width), dtype=np.float32)
    retrieved = np.zeros(m, dtype=np.int64)
    depth = min(hi, n)
    slack = _bf16_slack(queries.shape[1]) if index.bf16 else _fp32_slack(queries.shape[1])
    qn = np.linalg.norm(queries.astype(np.float64), axis=1) * (1 + 1e-6)
    slacks = (slack * qn + 1e-30).astype(np.float32)
    sorted_norms = index._sorted_norms
    block_items = min(_TILE_ITEMS, n)
    gemm = _Gemm(index, queries)
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    pos_rows = np.ascontiguousarray(pos_rows, dtype=np.int64)

    guesses = np.full(m, -np.inf, dtype=np.float32)

    def guess(users: np.ndarray) -> None:
        guesses[users] = _guess_bounds(index, gemm, gemm.tile(users), slacks[users], counts[users], depth)

    def tile(users: np.ndarray) -> None:
        guessing = True
        cap = 4 * depth + 256
        while users.size:
            mt = users.size
            contiguous = users[-1] - users[0] + 1 == mt
            q = gemm.tile(users)
            # Each user's positives as catalog places (norm order), sorted: the scan walks them in order.
            tile_ptr = np.concatenate(([0], np.cumsum(counts[users]))).astype(np.int64)
            rows = (pos_rows[indptr[users[0]] : indptr[users[-1] + 1]] if contiguous
                    else np.concatenate([pos_rows[indptr[u] : indptr[u + 1]] for u in users]))
            tile_pos = np.empty(len(rows), dtype=np.int64)
            kernels.sorted_places(tile_ptr, np.ascontiguousarray(rows, dtype=np.int64), index._place, tile_pos)
            cursors = np.zeros(mt, dtype=np.int64) + tile_ptr[:-1]
            start = guesses[users] if guessing else np.full(mt, -np.inf, dtype=np.float32)
            bounds = start.copy()
            res_fast = np.empty((mt, cap), dtype=np.float32)
            res_items = np.empty((mt, cap), dtype=np.int64)
            found = np.zeros(mt, dtype=np.int64)
            overflow = np.zeros(mt, dtype=np.bool_)
            limit = int(reach[users].max()) if guessing else n
            for b0, scores in gemm.blocks(q, block_items, limit):
                kernels.reservoir_block(scores, b0, index._order, sorted_norms, tile_ptr, tile_pos, cursors,
                                        slacks[users], depth, bounds, res_fast, res_items, found, overflow)
            found[overflow] = 0
            redo = np.zeros(mt, dtype=np.bool_)
            kernels.settle_bounded(sorted_norms, slacks[users], start, res_fast, res_items, found, depth, redo)
            skip = overflow | redo
            kernels.places_to_rows(res_items, np.where(skip, 0, found), index._order)
            canon = np.empty((mt, int(found.max(initial=0))), dtype=np.float32)
            kernels.rescore_reservoirs(queries[users], index.vectors, res_items, found, skip,
                                       8 * numba.get_num_threads(), canon)
            if contiguous:  # the kernel writes the done rows in place (skipped rows: written when redone)
                win_items = items_out[users[0] : users[-1] + 1]
                win_scores = scores_out[users[0] : users[-1] + 1]
            else:
                win_items = np.empty((mt, width), dtype=np.int64)
                win_scores = np.empty((mt, width), dtype=np.float32)
            kernels.window_from_scores(res_items, canon, found, np.zeros(mt, dtype=np.int64), skip, lo, hi,
                                       win_items, win_scores)
            done = ~skip
            if not contiguous:
                items_out[users[done]] = win_items[done]
                scores_out[users[done]] = win_scores[done]
            retrieved[users[done]] = found[done]
            if overflow.any():  # many items within their bounds of each other: again with more room
                cap *= 4
            guessing = False
            users = users[~done]

    workers = _workers()
    size = min(_TILE_USERS, max(_MIN_TILE, -(-m // workers)))
    serial = workers == 1 or m <= size
    with contextlib.ExitStack() as stack:
        stack.enter_context(gemm.threads(numba.get_num_threads() if serial else 1))
        if serial:
            def run(task: Callable[[np.ndarray], None], tiles: list[np.ndarray]) -> None:
                for users in tiles:
                    task(users)
        else:
            pool = stack.enter_context(ThreadPoolExecutor(workers))

            def run(task: Callable[[np.ndarray], None], tiles: list[np.ndarray]) -> None:
                def one_thread(users: np.ndarray) -> None:
                    numba.set_num_threads(1)  # per thread: this one's kernels run on it alone
                    task(users)

                for _ in pool.map(one_thread, tiles):
                    pass

        run(guess, [np.arange(t0, min(t0 + size, m)) for t0 in range(0, m, size)])
        # An item scores at most |q| |v| (Cauchy-Schwarz): the catalog in norm order, past the places a
        # user's guess allows (``reach``), holds none of its top ``depth``, provided the guess is proven
        # (else the user is scanned again in full). Tiles of users with similar reach stop early together.
        reach = _reach(sorted_norms, qn, guesses, queries.shape[1])
        order = np.argsort(reach, kind="stable")
        run(tile, [np.sort(order[t0 : t0 + size]) for t0 in range(0, m, size)])
    return Window(items=items_out, scores=scores_out, available=n - counts, lo=lo, retrieved=retrieved)


def _reach(sorted_norms: np.ndarray, qn: np.ndarray, guesses: np.ndarray, dim: int) -> np.ndarray:
    """Per user, how many catalog places (descending norms) may score at least its guess: past them,
    every canonical score is below it, as it is at most ``(1 + gamma_d) |q| |v|`` (``qn`` and the
    norms are rounded up; twice ``gamma_d`` to spare)."""
    gamma = dim * 2.0**-24 / (1.0 - dim * 2.0**-24)
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = np.where((guesses > 0) & (qn > 0), guesses.astype(np.float64) / (qn * (1 + 2 * gamma)), -np.inf)
    return np.searchsorted(-sorted_norms.astype(np.float64), -floor, side="right")


def _guess_bounds(index: ItemIndex, gemm: _Gemm, q: np.ndarray | torch.Tensor, slacks: np.ndarray,
                  pos_counts: np.ndarray, depth: int) -> np.ndarray:
    """Per user, a likely lower bound on its ``depth``-th best score, from a sample of the catalog.

    The sample (every ``stride``-th item in norm order) is scored by the engine's GEMM; a user's guess
    is the lower bound at the sample rank that matches ``(depth + positives) / 0.6`` in the catalog,
    so about 1.7x ``depth`` items reach it. Without a guess the reservoir starts empty and compacts
    many times before its bound rises (the first blocks, highest norms, hold most candidates). A
    guess is only a starting point: :func:`hnmine.mining.kernels.settle_bounded` checks it.
    """
    n = index.n_items
    stride = _GUESS_STRIDE
    mt = q.shape[0]
    if n < 16 * depth:
        return np.full(mt, -np.inf, dtype=np.float32)
    sample = index._order[::stride]
    ranks = np.ceil((depth + pos_counts) * len(sample) / n / 0.6).astype(np.int64)
    ranks[(ranks < 8) | (depth + pos_counts >= n // 2)] = 0  # too few sample items above: no guess
    guesses = np.empty(mt, dtype=np.float32)
    kernels.sample_bounds(gemm.sample(q), index._norms[sample], slacks, ranks, guesses)
    return guesses
