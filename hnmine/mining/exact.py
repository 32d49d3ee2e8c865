"""The exact engine without FAISS: a tiled GEMM (numpy float32, or torch bf16) with proven error bounds.

Score blocks are folded into per-user candidate reservoirs in one compiled pass (:func:`retrieve_exact`);
the candidates are rescored by the canonical kernel, so the windows are the same bit for bit as FAISS
flat's (:func:`hnmine.mining.retrieval.retrieve_window`, which calls it for ``kind="exact"``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

import numba
import numpy as np

from hnmine.mining import kernels

if TYPE_CHECKING:  # imported where used: only a bf16 engine loads torch
    import torch

__all__ = ["ExactCatalog", "cpu_has_bf16", "retrieve_exact"]

# The exact engine: users per GEMM tile and items per block (a cache-sized score buffer).
_TILE_USERS = 1024
# ... and at least this many, when a chunk is split among threads.
_MIN_TILE = 128
_TILE_ITEMS = 1024
# Each user's starting bound is guessed from a sample of the catalog: every 32nd item in norm order.
_GUESS_STRIDE = 32
# ``precision="auto"`` takes bf16 tiles (torch) from this many multiply-adds (users x items x dim), on
# CPUs with bf16 units: below it, loading torch (~2 CPU-seconds with its exit) and rescoring the more
# candidates its wider bounds keep cost more than its faster GEMM saves over numpy's float32 one
# (AVX512-BF16, one thread: 195 against 62 GFLOP/s, 0.022 ns less per multiply-add; Gowalla with
# d = 64 is 7.8e10).
_AUTO_BF16_MACS = 2e11


class ExactCatalog:
    """The catalog in descending norm order (a block's items then have similar error bounds), as the GEMM
    reads it: float32 rows for numpy's BLAS, or a bf16 (d, n) torch view. ``precision`` and ``queries`` (the
    users the job will search, if known) choose the GEMM (:func:`_wants_bf16`); ``threads``: torch's."""

    def __init__(self, vectors: np.ndarray, precision: str, queries: int | None, threads: int | None) -> None:
        self.vectors = vectors
        self.n_items = len(vectors)
        norms = np.linalg.norm(self.vectors.astype(np.float64), axis=1) * (1 + 1e-6)
        self.norms = norms.astype(np.float32)
        self.order = np.argsort(-self.norms, kind="stable").astype(np.int64)
        self.place = np.empty(self.n_items, dtype=np.int64)
        self.place[self.order] = np.arange(self.n_items)
        self.sorted_norms = self.norms[self.order]
        self.bf16 = _wants_bf16(precision, queries, self.vectors.shape)
        if self.bf16:
            import torch

            if threads:
                torch.set_num_threads(threads)
            self.items_bf16_t = torch.from_numpy(self.vectors[self.order]).to(torch.bfloat16).t()
            self.sample_bf16_t = self.items_bf16_t[:, ::_GUESS_STRIDE].contiguous()
            self.bf16 = _bf16_gemm_within_bound(self.vectors)
        if not self.bf16:
            self.items_sorted = self.vectors[self.order]
            self.sample_sorted = np.ascontiguousarray(self.items_sorted[::_GUESS_STRIDE])


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

    def __init__(self, catalog: ExactCatalog, queries: np.ndarray) -> None:
        self.catalog = catalog
        self.bf16 = catalog.bf16
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
        catalog = self.catalog
        mt, n = q.shape[0], catalog.n_items
        if self.bf16:
            import torch

            buf = torch.empty(mt * block_items, dtype=torch.bfloat16)
            for b0 in range(0, limit, block_items):
                b1 = min(b0 + block_items, n)
                scores = buf[: mt * (b1 - b0)].view(mt, b1 - b0)
                torch.mm(cast("torch.Tensor", q), catalog.items_bf16_t[:, b0:b1], out=scores)
                yield b0, scores.view(torch.int16).numpy()
            return
        fbuf = np.empty(mt * block_items, dtype=np.float32)
        for b0 in range(0, limit, block_items):
            b1 = min(b0 + block_items, n)
            out = fbuf[: mt * (b1 - b0)].reshape(mt, b1 - b0)
            np.matmul(q, catalog.items_sorted[b0:b1].T, out=out)
            yield b0, out

    def sample(self, q: np.ndarray | torch.Tensor) -> np.ndarray:
        """The tile's scores against the catalog sample (every ``_GUESS_STRIDE``-th place)."""
        if self.bf16:
            import torch

            return torch.mm(cast("torch.Tensor", q), self.catalog.sample_bf16_t).view(torch.int16).numpy()
        return np.matmul(q, self.catalog.sample_sorted.T)

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


def retrieve_exact(
    catalog: ExactCatalog, queries: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact window (items, scores, candidates retrieved per user) by tiled GEMM and a per-user candidate reservoir, in canonical order.

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
    n = catalog.n_items
    width = hi - lo + 1
    counts = np.diff(indptr)
    if m == 0 or n == 0:
        return (np.full((m, width), -1, dtype=np.int64), np.full((m, width), -np.inf, dtype=np.float32),
                np.zeros(m, dtype=np.int64))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not queries.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. from arrow)
        queries = queries.copy()
    items_out = np.empty((m, width), dtype=np.int64)  # every row is written (users are redone until done)
    scores_out = np.empty((m, width), dtype=np.float32)
    retrieved = np.zeros(m, dtype=np.int64)
    depth = min(hi, n)
    slack = _bf16_slack(queries.shape[1]) if catalog.bf16 else _fp32_slack(queries.shape[1])
    qn = np.linalg.norm(queries.astype(np.float64), axis=1) * (1 + 1e-6)
    slacks = (slack * qn + 1e-30).astype(np.float32)
    sorted_norms = catalog.sorted_norms
    block_items = min(_TILE_ITEMS, n)
    gemm = _Gemm(catalog, queries)
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    pos_rows = np.ascontiguousarray(pos_rows, dtype=np.int64)

    guesses = np.full(m, -np.inf, dtype=np.float32)

    def guess(users: np.ndarray) -> None:
        guesses[users] = _guess_bounds(catalog, gemm, gemm.tile(users), slacks[users], counts[users], depth)

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
            kernels.sorted_places(tile_ptr, np.ascontiguousarray(rows, dtype=np.int64), catalog.place, tile_pos)
            cursors = np.zeros(mt, dtype=np.int64) + tile_ptr[:-1]
            start = guesses[users] if guessing else np.full(mt, -np.inf, dtype=np.float32)
            bounds = start.copy()
            res_fast = np.empty((mt, cap), dtype=np.float32)
            res_items = np.empty((mt, cap), dtype=np.int64)
            found = np.zeros(mt, dtype=np.int64)
            overflow = np.zeros(mt, dtype=np.bool_)
            limit = int(reach[users].max()) if guessing else n
            for b0, scores in gemm.blocks(q, block_items, limit):
                kernels.reservoir_block(scores, b0, catalog.order, sorted_norms, tile_ptr, tile_pos, cursors,
                                        slacks[users], depth, bounds, res_fast, res_items, found, overflow)
            found[overflow] = 0
            redo = np.zeros(mt, dtype=np.bool_)
            kernels.settle_bounded(sorted_norms, slacks[users], start, res_fast, res_items, found, depth, redo)
            skip = overflow | redo
            kernels.places_to_rows(res_items, np.where(skip, 0, found), catalog.order)
            canon = np.empty((mt, int(found.max(initial=0))), dtype=np.float32)
            kernels.rescore_reservoirs(queries[users], catalog.vectors, res_items, found, skip,
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
    return items_out, scores_out, retrieved


def _reach(sorted_norms: np.ndarray, qn: np.ndarray, guesses: np.ndarray, dim: int) -> np.ndarray:
    """Per user, how many catalog places (descending norms) may score at least its guess: past them,
    every canonical score is below it, as it is at most ``(1 + gamma_d) |q| |v|`` (``qn`` and the
    norms are rounded up; twice ``gamma_d`` to spare)."""
    gamma = dim * 2.0**-24 / (1.0 - dim * 2.0**-24)
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = np.where((guesses > 0) & (qn > 0), guesses.astype(np.float64) / (qn * (1 + 2 * gamma)), -np.inf)
    return np.searchsorted(-sorted_norms.astype(np.float64), -floor, side="right")


def _guess_bounds(catalog: ExactCatalog, gemm: _Gemm, q: np.ndarray | torch.Tensor, slacks: np.ndarray,
                  pos_counts: np.ndarray, depth: int) -> np.ndarray:
    """Per user, a likely lower bound on its ``depth``-th best score, from a sample of the catalog.

    The sample (every ``stride``-th item in norm order) is scored by the engine's GEMM; a user's guess
    is the lower bound at the sample rank that matches ``(depth + positives) / 0.6`` in the catalog,
    so about 1.7x ``depth`` items reach it. Without a guess the reservoir starts empty and compacts
    many times before its bound rises (the first blocks, highest norms, hold most candidates). A
    guess is only a starting point: :func:`hnmine.mining.kernels.settle_bounded` checks it.
    """
    n = catalog.n_items
    stride = _GUESS_STRIDE
    mt = q.shape[0]
    if n < 16 * depth:
        return np.full(mt, -np.inf, dtype=np.float32)
    sample = catalog.order[::stride]
    ranks = np.ceil((depth + pos_counts) * len(sample) / n / 0.6).astype(np.int64)
    ranks[(ranks < 8) | (depth + pos_counts >= n // 2)] = 0  # too few sample items above: no guess
    guesses = np.empty(mt, dtype=np.float32)
    kernels.sample_bounds(gemm.sample(q), catalog.norms[sample], slacks, ranks, guesses)
    return guesses
