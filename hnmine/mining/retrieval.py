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
candidates can reach ranks ``lo..hi`` canonically: only those are rescored (:func:`_finish`), and a user
whose FAISS results stop within that margin of its ``hi``-th score is searched deeper.

``exact`` is a second exact engine without FAISS: a tiled torch GEMM whose score blocks are folded
into per-user candidate reservoirs in one compiled pass (:func:`_retrieve_exact`); it returns the
same windows bit for bit.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, cast

import numba
import numpy as np

from hnmine.mining import kernels
from hnmine.mining.config import INDEX_KINDS, METRICS, PRECISIONS, IndexSpec

if TYPE_CHECKING:  # imported where used: a run loads FAISS or torch, whichever its engine needs
    import faiss
    import torch

__all__ = ["INDEX_KINDS", "METRICS", "PRECISIONS", "SAFETY_MARGIN", "IndexSpec", "ItemIndex", "Window", "call_depths", "retrieve_window", "search_depths"]

SAFETY_MARGIN = 16
_MIN_CALL = 256
# The exact engine: users per GEMM tile and items per block (a cache-sized score buffer).
_TILE_USERS = 1024
_TILE_ITEMS = 1024
# The bf16 engine guesses each user's bound from every 8th item (in norm order).
_GUESS_STRIDE = 32
# ``auto`` takes the bf16 engine from this many (user, item) pairs: below it, loading torch (~1.5 s)
# costs more than the faster GEMM saves (Gowalla, 29,858 x 40,981: 12.5 ns less per 1,000 pairs).
_AUTO_EXACT_PAIRS = 200_000_000
# The last ``threads`` an index was given (FAISS, torch and numba keep one process-wide setting each).
_threads: int | None = None
# Depth levels (extra ranks for a user's positives): every 32 up to 1,024, then doubling.
_DEPTH_STEPS = (*range(0, 1025, 32), 2048, 4096)



class ItemIndex:
    """A FAISS inner-product index over the item vectors (unit-normalised first for cosine).

    ``queries`` (how many users the job will search, if known) only informs ``auto``'s choice.
    """

    def __init__(self, vectors: np.ndarray, spec: IndexSpec = IndexSpec(), threads: int | None = None,
                 queries: int | None = None) -> None:
        if spec.kind == "auto":
            big = queries is None or queries * len(vectors) >= _AUTO_EXACT_PAIRS
            spec = replace(spec, kind="exact" if big and _wants_bf16(spec.precision) else "flat")
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
        """Items as a (d, n) torch view for the tiled GEMM (a private copy: torch needs it writable)."""
        import torch

        if _threads:
            torch.set_num_threads(_threads)
        self._items_t = torch.from_numpy(self.vectors.copy()).t()  # (d, n) view of a row-major matrix
        self.bf16 = False
        if _wants_bf16(self.spec.precision):
            norms = np.linalg.norm(self.vectors.astype(np.float64), axis=1) * (1 + 1e-6)
            self._norms = norms.astype(np.float32)
            # Blocks of items in descending norm order: a block's items then have similar error bounds.
            self._order = np.argsort(-self._norms, kind="stable").astype(np.int64)
            self._place = np.empty(self.n_items, dtype=np.int64)
            self._place[self._order] = np.arange(self.n_items)
            self._sorted_norms = self._norms[self._order]
            self._items_bf16_t = torch.from_numpy(self.vectors[self._order]).to(torch.bfloat16).t()
            self._sample_bf16_t = self._items_bf16_t[:, ::_GUESS_STRIDE].contiguous()
            self.bf16 = _bf16_gemm_within_bound(self.vectors)

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


def _wants_bf16(precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and cpu_has_bf16())


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


def _score_blocks(q: torch.Tensor, items_t: torch.Tensor, buf: torch.Tensor, block_items: int):
    """Yield ``(b0, scores)``: the tile's scores against items ``b0..b0+block`` by one ``torch.mm`` into
    the reused, cache-sized buffer ``buf`` (each block is overwritten by the next)."""
    import torch

    mt, n = q.shape[0], items_t.shape[1]
    for b0 in range(0, n, block_items):
        b1 = min(b0 + block_items, n)
        scores = buf[: mt * (b1 - b0)].view(mt, b1 - b0)
        torch.mm(q, items_t[:, b0:b1], out=scores)
        yield b0, scores


def _retrieve_exact(
    index: ItemIndex, queries: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray, lo: int, hi: int
) -> Window:
    """Exact window by tiled GEMM and a per-user candidate reservoir, in canonical order.

    For a tile of users, each block of items is scored by one ``torch.mm`` into a reused, cache-sized
    buffer, and :func:`hnmine.mining.kernels.reservoir_block` folds it into each user's reservoir in the same
    pass over the scores: positives are skipped, and only items scoring at least a running lower bound
    on the user's ``hi``-th best non-positive score, minus the noise margin (see :func:`_noise_margin`),
    are kept. That provably includes every item of the canonical top ``hi`` whatever the GEMM's
    rounding; the candidates are then rescored with the canonical kernel and sorted by (score desc,
    item asc), exactly as the FAISS flat path does, so the window is identical to it and independent
    of tiles, chunks and threads.
    """
    m = len(queries)
    n = index.n_items
    width = hi - lo + 1
    counts = np.diff(indptr)
    items_out = np.full((m, width), -1, dtype=np.int64)
    scores_out = np.full((m, width), -np.inf, dtype=np.float32)
    retrieved = np.zeros(m, dtype=np.int64)
    available = n - counts
    if m == 0 or n == 0:
        return Window(items=items_out, scores=scores_out, available=available, lo=lo, retrieved=retrieved)
    depth = min(hi, n)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not queries.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. from arrow)
        queries = queries.copy()
    if index.bf16:
        return _retrieve_bf16(index, queries, indptr, pos_rows, lo, hi)
    import torch

    margins = _noise_margin(queries, index._max_norm)
    items_t = index._items_t
    block_items = min(_TILE_ITEMS, n)
    buf = torch.empty(min(_TILE_USERS, m) * block_items)
    q_all = torch.from_numpy(queries)
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    pos_rows = np.ascontiguousarray(pos_rows, dtype=np.int64)
    for t0 in range(0, m, _TILE_USERS):
        t1 = min(t0 + _TILE_USERS, m)
        mt = t1 - t0
        q = q_all[t0:t1]
        tile_ptr = indptr[t0 : t1 + 1] - indptr[t0]
        tile_pos = pos_rows[indptr[t0] : indptr[t1]]
        cap = 2 * depth + 64
        while True:
            thresholds = np.full(mt, -np.inf, dtype=np.float32)
            res_fast = np.empty((mt, cap), dtype=np.float32)
            res_items = np.empty((mt, cap), dtype=np.int64)
            found = np.zeros(mt, dtype=np.int64)
            overflow = np.zeros(mt, dtype=np.bool_)
            for b0, scores in _score_blocks(q, items_t, buf, block_items):
                kernels.reservoir_block(scores.numpy(), b0, n, tile_ptr, tile_pos, margins[t0:t1], depth,
                                        thresholds, res_fast, res_items, found, overflow)
            if not overflow.any():
                break
            cap *= 4  # many items within the margin of each other (duplicates): retry with more room
        width_c = max(int(found.max()), 1)
        fast2d = np.full((mt, width_c), -np.inf, dtype=np.float32)
        item2d = np.zeros((mt, width_c), dtype=np.int64)
        valid = np.arange(width_c)[None, :] < found[:, None]
        fast2d[valid] = res_fast[:, :width_c][valid]
        item2d[valid] = res_items[:, :width_c][valid]
        # Fast-score order per user: uint64 keys (score desc, slot) sort fast in numpy.
        skeys = _descending_keys(fast2d, np.broadcast_to(np.arange(width_c), fast2d.shape))
        skeys.sort(axis=1)
        fast_sorted = _scores_from_keys(skeys)
        item_sorted = np.take_along_axis(item2d, (skeys & np.uint64(0xFFFFFFFF)).astype(np.int64), axis=1)
        win_items, win_scores, end = _finish(queries[t0:t1], index.vectors, fast_sorted, item_sorted,
                                             margins[t0:t1], lo, hi, depth)
        items_out[t0:t1] = win_items
        scores_out[t0:t1] = win_scores
        retrieved[t0:t1] = end
    return Window(items=items_out, scores=scores_out, available=available, lo=lo, retrieved=retrieved)


def _retrieve_bf16(
    index: ItemIndex, queries: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray, lo: int, hi: int
) -> Window:
    """The exact engine with bf16 GEMM tiles (see :func:`_retrieve_exact`).

    A bf16 score is within ``slack |q| |v|`` of the canonical one (:func:`_bf16_slack`), so each
    item carries its own interval: the reservoir keeps every item whose upper bound reaches the
    running ``hi``-th best lower bound, and all of those are rescored canonically. The scan starts
    from a guess of that bound taken on a sample of the catalog (:func:`_guess_bounds`), checked
    at the end: a user whose guess was too high (rare) is scanned again without one.
    """
    import torch

    m = len(queries)
    n = index.n_items
    width = hi - lo + 1
    counts = np.diff(indptr)
    items_out = np.empty((m, width), dtype=np.int64)  # every row is written (users are redone until done)
    scores_out = np.empty((m, width), dtype=np.float32)
    retrieved = np.zeros(m, dtype=np.int64)
    depth = min(hi, n)
    qn = np.linalg.norm(queries.astype(np.float64), axis=1) * (1 + 1e-6)
    slacks = (_bf16_slack(queries.shape[1]) * qn + 1e-30).astype(np.float32)
    sorted_norms = index._sorted_norms
    block_items = min(_TILE_ITEMS, n)
    buf = torch.empty(min(_TILE_USERS, m) * block_items, dtype=torch.bfloat16)
    q_all = torch.from_numpy(queries).to(torch.bfloat16)
    items_t = index._items_bf16_t
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    pos_rows = np.ascontiguousarray(pos_rows, dtype=np.int64)
    for t0 in range(0, m, _TILE_USERS):
        users = np.arange(t0, min(t0 + _TILE_USERS, m))
        guessing = True
        cap = 4 * depth + 256
        while users.size:
            mt = users.size
            contiguous = users[-1] - users[0] + 1 == mt
            q = q_all[users[0] : users[-1] + 1] if contiguous else q_all[torch.from_numpy(users)]
            # Each user's positives as catalog places (norm order), sorted: the scan walks them in order.
            tile_ptr = np.concatenate(([0], np.cumsum(counts[users]))).astype(np.int64)
            rows = (pos_rows[indptr[users[0]] : indptr[users[-1] + 1]] if contiguous
                    else np.concatenate([pos_rows[indptr[u] : indptr[u + 1]] for u in users]))
            tile_pos = np.empty(len(rows), dtype=np.int64)
            kernels.sorted_places(tile_ptr, np.ascontiguousarray(rows, dtype=np.int64), index._place, tile_pos)
            cursors = np.zeros(mt, dtype=np.int64) + tile_ptr[:-1]
            if guessing:
                guesses = _guess_bounds(index, q, slacks[users], counts[users], depth)
            else:
                guesses = np.full(mt, -np.inf, dtype=np.float32)
            bounds = guesses.copy()
            res_fast = np.empty((mt, cap), dtype=np.float32)
            res_items = np.empty((mt, cap), dtype=np.int64)
            found = np.zeros(mt, dtype=np.int64)
            overflow = np.zeros(mt, dtype=np.bool_)
            for b0, scores in _score_blocks(q, items_t, buf, block_items):
                kernels.reservoir_block_bf16(scores.view(torch.int16).numpy(), b0, index._order, sorted_norms,
                                             tile_ptr, tile_pos, cursors, slacks[users], depth, bounds, res_fast,
                                             res_items, found, overflow)
            found[overflow] = 0
            redo = np.zeros(mt, dtype=np.bool_)
            kernels.settle_bounded(sorted_norms, slacks[users], guesses, res_fast, res_items, found, depth, redo)
            skip = overflow | redo
            kernels.places_to_rows(res_items, np.where(skip, 0, found), index._order)
            canon = np.empty((mt, int(found.max(initial=0))), dtype=np.float32)
            kernels.rescore_reservoirs(queries[users], index.vectors, res_items, found, skip, 8 * numba.get_num_threads(), canon)
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
    return Window(items=items_out, scores=scores_out, available=n - counts, lo=lo, retrieved=retrieved)


def _guess_bounds(index: ItemIndex, q: torch.Tensor, slacks: np.ndarray, pos_counts: np.ndarray, depth: int,
                  ) -> np.ndarray:
    """Per user, a likely lower bound on its ``depth``-th best score, from a sample of the catalog.

    The sample (every ``stride``-th item in norm order) is scored in bf16; a user's guess is the lower
    bound at the sample rank that matches ``(depth + positives) / 0.6`` in the catalog, so about 1.7x
    ``depth`` items reach it. Without a guess the reservoir starts empty and compacts many times
    before its bound rises (the first blocks, highest norms, hold most candidates). A guess is only a
    starting point: :func:`hnmine.mining.kernels.finish_bounded` checks it.
    """
    import torch

    n = index.n_items
    stride = _GUESS_STRIDE
    mt = q.shape[0]
    if n < 16 * depth:
        return np.full(mt, -np.inf, dtype=np.float32)
    sample = index._order[::stride]
    fast = torch.mm(q, index._sample_bf16_t)
    ranks = np.ceil((depth + pos_counts) * len(sample) / n / 0.6).astype(np.int64)
    ranks[(ranks < 8) | (depth + pos_counts >= n // 2)] = 0  # too few sample items above: no guess
    guesses = np.empty(mt, dtype=np.float32)
    kernels.sample_bounds(fast.view(torch.int16).numpy(), index._norms[sample], slacks, ranks, guesses)
    return guesses


def _finish(
    queries: np.ndarray,
    vectors: np.ndarray,
    fast_sorted: np.ndarray,
    item_sorted: np.ndarray,
    margin_np: np.ndarray,
    lo: int,
    hi: int,
    depth: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical window from candidates sorted by a fast kernel's score (desc, -inf padded).

    The candidates must include every non-positive item whose fast score is within ``margin`` of the
    ``depth``-th best. Only the candidates that can land in ranks ``lo..hi`` are rescored with the
    canonical kernel: the ``depth``-th fast score ``F`` bounds the window's tail (``F - margin``), and
    the longest head (< ``lo``) separated from the rest by a fast-score gap > ``margin`` is in the
    same order canonically, so it only shifts the ranks. Returns (items, scores, candidates used).
    """
    mt = fast_sorted.shape[0]
    width = hi - lo + 1
    win_items = np.empty((mt, width), dtype=np.int64)
    win_scores = np.empty((mt, width), dtype=np.float32)
    ends = np.empty(mt, dtype=np.int64)
    kernels.finish_sorted(
        np.ascontiguousarray(queries, dtype=np.float32), vectors, np.ascontiguousarray(fast_sorted, dtype=np.float32),
        np.ascontiguousarray(item_sorted, dtype=np.int64), np.ascontiguousarray(margin_np, dtype=np.float32),
        lo, hi, depth, win_items, win_scores, ends,
    )
    return win_items, win_scores, ends
