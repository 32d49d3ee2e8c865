"""Compiled per-user loops of the retrieval stage (numba).

The window of a user needs a handful of passes over its few hundred candidates (drop positives,
find the provable rescoring range, rescore, sort, cut the window). As numpy array passes over a
whole chunk these cost more than the FAISS search itself; as one compiled loop per user, run in
parallel over users, they cost a fraction of it (docs/performance.md).
The trainer's compiled loops are in :mod:`hnmine.training.kernels`; they share :func:`dot`.

The exact engine's kernels release the GIL: its tiles of users run on a pool of Python threads
(:mod:`hnmine.mining.retrieval`), each calling them with one numba thread. Its own kernels are
therefore sequential (``parallel=True`` would only add to their compilation: seconds each).

Determinism: every user is computed by the same sequential code whatever the thread that runs it,
and :func:`dot` fixes its summation order (8 interleaved partial sums, combined pairwise), compiled
without fast-math, so the compiler may not reassociate it: a pair's score is the same in every run,
chunk and thread count (tested).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.extending import intrinsic, overload

__all__ = [
    "canonical_pairs", "dot", "post_search_candidates", "rescore_reservoirs", "reservoir_block",
    "sample_bounds", "set_threads", "settle_bounded", "window_from_scores",
]

_LOW32 = np.uint64(0xFFFFFFFF)
_SIGN_OFF = np.int32(0x7FFFFFFF)


def set_threads(threads: int) -> None:
    """Threads of the compiled loops (at most what numba was started with)."""
    # numba.config sets its options at import time (from the environment): its stubs do not declare them
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]


@njit(cache=True, inline="always")
def dot(q, v):  # pragma: no cover - compiled
    """float32 dot product in one fixed order: 8 partial sums, combined pairwise."""
    d = q.shape[0]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    j = 0
    while j + 8 <= d:
        a0 += q[j] * v[j]
        a1 += q[j + 1] * v[j + 1]
        a2 += q[j + 2] * v[j + 2]
        a3 += q[j + 3] * v[j + 3]
        a4 += q[j + 4] * v[j + 4]
        a5 += q[j + 5] * v[j + 5]
        a6 += q[j + 6] * v[j + 6]
        a7 += q[j + 7] * v[j + 7]
        j += 8
    while j < d:
        a0 += q[j] * v[j]
        j += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, inline="always")
def dot_rows(queries, u, vectors, r):  # pragma: no cover - compiled
    """:func:`dot` of ``queries[u]`` and ``vectors[r]`` (the same order, so the same bits), indexing the
    matrices directly: no row views to build, about twice as fast in a loop over pairs."""
    d = queries.shape[1]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
    for w in range(d // 8):
        j = w * 8
        a0 += queries[u, j] * vectors[r, j]
        a1 += queries[u, j + 1] * vectors[r, j + 1]
        a2 += queries[u, j + 2] * vectors[r, j + 2]
        a3 += queries[u, j + 3] * vectors[r, j + 3]
        a4 += queries[u, j + 4] * vectors[r, j + 4]
        a5 += queries[u, j + 5] * vectors[r, j + 5]
        a6 += queries[u, j + 6] * vectors[r, j + 6]
        a7 += queries[u, j + 7] * vectors[r, j + 7]
    for j in range(d - d % 8, d):
        a0 += queries[u, j] * vectors[r, j]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, parallel=True)
def canonical_pairs(queries, vectors, users, items):  # pragma: no cover - compiled
    """The canonical score of each (user row, item row) pair."""
    out = np.empty(users.shape[0], dtype=np.float32)
    for p in prange(users.shape[0]):
        out[p] = dot(queries[users[p]], vectors[items[p]])
    return out


@njit(cache=True, inline="always")
def _rescore_range(fast, count, width_c, margin, lo, depth):  # pragma: no cover - compiled
    """``(end, head)``: candidates ``head..end-1`` (in fast-score order) need a canonical score.

    ``fast[:count]`` are non-increasing fast scores (positions up to ``width_c`` count as -inf). Past
    ``end`` every score is below the ``depth``-th best by more than ``margin``; the longest head
    before rank ``lo`` separated from the rest by a gap > ``margin`` keeps its order canonically, so
    it only shifts the ranks.
    """
    neg_inf = np.float32(-np.inf)
    f_d = fast[depth - 1] if count >= depth else neg_inf
    threshold = f_d - margin
    end = 0
    for j in range(count):
        if fast[j] >= threshold:
            end += 1
    head = 0
    for j in range(min(lo - 1, width_c - 1)):
        a = fast[j] if j < count else neg_inf
        b = fast[j + 1] if j + 1 < count else neg_inf
        if a > neg_inf and a - b > margin:
            head = j + 1
    return end, min(head, end)


@njit(cache=True, inline="always")
def _is_positive(pos_rows, start, stop, row):  # pragma: no cover - compiled
    """Whether item ``row`` is among a user's positives ``pos_rows[start:stop]`` (sorted): binary search."""
    lo = start
    hi = stop
    while lo < hi:
        mid = (lo + hi) >> 1
        if pos_rows[mid] < row:
            lo = mid + 1
        else:
            hi = mid
    return lo < stop and pos_rows[lo] == row


@njit(cache=True, parallel=True)
def post_search_candidates(fast, rows, users, indptr, pos_rows, margins, lo, need, check, cand_items, counts,
                           heads, retrieved, short):  # pragma: no cover - compiled
    """After a FAISS call: each user's candidates that need a canonical score.

    ``fast``/``rows`` are FAISS's (m, depth) results for chunk users ``users``; ``indptr``/``pos_rows``
    the chunk's positives (sorted per user). Positives are dropped, then (see :func:`_rescore_range`) the candidates that can reach ranks
    ``lo..need`` canonically are ``cand_items[i, :counts[i]]``, after a head of ``heads[i]`` items
    whose order is settled. :func:`rescore_reservoirs` then scores them item by item and
    :func:`window_from_scores` cuts the window. With ``check``, ``short[i]`` flags a user whose
    search may have stopped within the noise margin of its ``need``-th non-positive (search deeper).
    """
    m, depth = fast.shape
    neg_inf = np.float32(-np.inf)
    for i in prange(m):
        u = users[i]
        a = indptr[u]
        b = indptr[u + 1]
        fc = np.empty(depth, dtype=np.float32)
        ic = np.empty(depth, dtype=np.int64)
        k = 0
        for j in range(depth):
            r = rows[i, j]
            if r < 0:
                continue
            if _is_positive(pos_rows, a, b, r):
                continue
            fc[k] = fast[i, j]
            ic[k] = r
            k += 1
        retrieved[i] = k
        margin = margins[i]
        end, head = _rescore_range(fc, k, depth, margin, lo, need)
        heads[i] = head
        counts[i] = end - head
        for t in range(end - head):
            cand_items[i, t] = ic[head + t]
        if check:
            f_d = fc[need - 1] if k >= need else neg_inf
            short[i] = not (fast[i, depth - 1] < f_d - margin)


# ------------------------------------------------------------------ the exact engine's scan (bf16 or float32 scores)
@njit(cache=True, inline="always")
def _bf16_key(x):  # pragma: no cover - compiled
    """bf16 bits (int16) -> an int32 whose order is the float order (sign-magnitude to two's complement)."""
    v = np.int32(x)
    return v ^ ((v >> np.int32(15)) & np.int32(0x7FFF))


@njit(cache=True, inline="always")
def _bf16_value(x):  # pragma: no cover - compiled
    return np.uint32(np.uint32(np.uint16(x)) << np.uint32(16)).view(np.float32)


@njit(cache=True, inline="always")
def _bf16_floor_key(value):  # pragma: no cover - compiled
    """A key <= the key of every bf16 number >= ``value`` (float32; truncation, less two steps)."""
    if value == -np.inf:
        return np.int32(-(1 << 20))
    bits = np.int32(np.float32(value).view(np.int32) >> np.int32(16))
    return _bf16_key(np.int16(bits)) - np.int32(2)


@intrinsic
def _trailing_zeros(typingctx, word):  # pragma: no cover - compiled
    """Index of the lowest set bit of a uint64 (LLVM cttz: one instruction)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@njit(cache=True)
def _span_mask_raw(span, k16):  # pragma: no cover - compiled
    """Bit t set when the bf16 bits ``span[t]`` >= ``k16`` as int16 (a positive floor's bits).

    ``span`` is a 64-score slice: indexing it from 0 lets LLVM vectorise the loop (an offset index
    may be negative for all it knows, and numba's wraparound check then blocks it: 8x slower).
    """
    mask = np.uint64(0)
    for t in range(64):
        mask |= np.uint64(span[t] >= k16) << np.uint64(t)
    return mask


@njit(cache=True)
def _span_mask_key(span, kfloor):  # pragma: no cover - compiled
    """Bit t set when :func:`_bf16_key` of ``span[t]`` >= ``kfloor`` (any floor)."""
    mask = np.uint64(0)
    for t in range(64):
        mask |= np.uint64(_bf16_key(span[t]) >= kfloor) << np.uint64(t)
    return mask


@njit(cache=True, inline="always")
def _span_mask(row, j, kfloor, raw):  # pragma: no cover - compiled
    """Bit t set when score ``j + t`` may reach the floor (64 scores; vector compares).

    ``raw``: the floor is positive and ``kfloor`` the bf16 bits just below it, so the bits compare as
    int16; otherwise ``kfloor`` is a :func:`_bf16_key`.
    """
    if raw:
        return _span_mask_raw(row[j : j + 64], np.int16(kfloor))
    return _span_mask_key(row[j : j + 64], kfloor)


@njit(cache=True, inline="always")
def _floor_bits(value):  # pragma: no cover - compiled
    """(kfloor, raw) for :func:`_span_mask`: raw int16 bits when ``value`` > 0, else a key."""
    if value > 0:
        return np.int32(np.float32(value).view(np.int32) >> np.int32(16)), True
    return _bf16_floor_key(value), False


@njit(cache=True)
def _span_mask_f32(span, floor):  # pragma: no cover - compiled
    """Bit t set when the float32 score ``span[t]`` >= ``floor`` (a 64-score slice, indexed from 0)."""
    mask = np.uint64(0)
    for t in range(64):
        mask |= np.uint64(span[t] >= floor) << np.uint64(t)
    return mask


# The exact engine's GEMM gives bf16 scores (as int16 bits) or float32 ones: the scan reads either
# through these two, chosen by numba from the score array's type when a kernel is compiled.
def _span_hits(row, j, floor):  # pragma: no cover - compiled only
    """Bit t set when score ``row[j + t]`` may reach ``floor`` (64 scores from ``j``)."""
    raise NotImplementedError


def _fast_value(row, j):  # pragma: no cover - compiled only
    """The fast score ``row[j]`` as float32."""
    raise NotImplementedError


@overload(_span_hits)
def _span_hits_typed(row, j, floor):  # pragma: no cover - compiled
    if row.dtype == types.int16:
        def bf16(row, j, floor):
            kfloor, raw = _floor_bits(floor)
            return _span_mask(row, j, kfloor, raw)
        return bf16
    return lambda row, j, floor: _span_mask_f32(row[j : j + 64], floor)


@overload(_fast_value)
def _fast_value_typed(row, j):  # pragma: no cover - compiled
    if row.dtype == types.int16:
        return lambda row, j: _bf16_value(row[j])
    return lambda row, j: np.float32(row[j])


@njit(cache=True)
def _compact_bounded(fast, items, count, depth, slack, norms):  # pragma: no cover - compiled
    """Keep the entries whose upper bound reaches the ``depth``-th best lower bound; return (count, it).

    Entry t's exact score lies in ``fast[t] -+ slack * norms[items[t]]``. Rare (a full reservoir, a
    user scanned without a guess): the window's radix sort on the lower bounds, not ``np.partition``
    or ``np.sort``, whose compilation alone took as long as every kernel of the engine together.
    """
    keys = np.empty(count, dtype=np.uint64)
    for t in range(count):
        b32 = np.float32(fast[t] - slack * norms[items[t]]).view(np.int32)
        keys[t] = np.uint64(np.uint32(b32 ^ (~(b32 >> 31) & _SIGN_OFF))) << np.uint64(32)  # ascending: best first
    _sort_keys(keys, np.empty(count, dtype=np.uint64))
    desc = np.int32(np.uint32(keys[depth - 1] >> np.uint64(32)))
    bound = np.int32(desc ^ (~(desc >> 31) & _SIGN_OFF)).view(np.float32)
    c = 0
    for t in range(count):
        if fast[t] + slack * norms[items[t]] >= bound:
            fast[c] = fast[t]
            items[c] = items[t]
            c += 1
    return c, bound


@njit(cache=True, nogil=True)
def reservoir_block(scores, b0, order, sorted_norms, indptr, pos_places, cursors, slacks, depth, bounds,
                    res_fast, res_items, counts, overflow):  # pragma: no cover - compiled
    """Fold one GEMM block of fast scores (bf16 as int16 bits, or float32) into each user's reservoir.

    Column ``jj`` of the block is catalog place ``b0 + jj``: item row ``order[b0 + jj]``, the catalog
    in descending norm order, with norm ``sorted_norms[b0 + jj]``. The exact score of (user i, that
    item) lies within ``slacks[i] * norm`` of its fast score. ``bounds[i]`` is a running lower bound
    on the user's ``depth``-th best exact score (the ``depth``-th best lower bound in the reservoir);
    an item is kept when its upper bound reaches it, so the reservoir always holds every item that
    can reach the top ``depth``. Each 64-score span is tested by vectorised integer compares against
    the floor of its largest norm (its first), then each hit against its own bound. The user's
    positives are its places ``pos_places[indptr[i]:indptr[i + 1]]`` (sorted): blocks are scanned in
    place order, so a cursor (``cursors[i]``) walks them instead of a search per hit.
    """
    mt = scores.shape[0]
    cap = res_fast.shape[1]
    limit = min(scores.shape[1], sorted_norms.shape[0] - b0)
    for i in range(mt):
        if overflow[i]:
            continue
        cur = cursors[i]
        end = indptr[i + 1]
        slack = slacks[i]
        bound = bounds[i]
        c = counts[i]
        row = scores[i]
        for j in range(0, limit, 64):
            floor = bound - slack * sorted_norms[b0 + j]
            if j + 64 <= limit:
                mask = _span_hits(row, j, floor)
            else:  # the last, partial span: pad, and keep only its real scores' bits
                span = np.zeros(64, dtype=scores.dtype)
                span[: limit - j] = row[j:limit]
                mask = _span_hits(span, 0, floor) & ((np.uint64(1) << np.uint64(limit - j)) - np.uint64(1))
            while mask:
                jj = j + np.int64(_trailing_zeros(mask))
                mask &= mask - np.uint64(1)
                place = b0 + jj
                s = _fast_value(row, jj)
                if s + slack * sorted_norms[place] < bound:
                    continue
                while cur < end and pos_places[cur] < place:
                    cur += 1
                if cur < end and pos_places[cur] == place:
                    continue
                if c == cap:
                    c, bound = _compact_bounded(res_fast[i], res_items[i], c, depth, slack, sorted_norms)
                    bounds[i] = bound
                    if s + slack * sorted_norms[place] < bound:
                        continue
                    if c == cap:
                        overflow[i] = True
                        break
                res_fast[i, c] = s
                res_items[i, c] = place
                c += 1
            if overflow[i]:
                break
        cursors[i] = cur
        if bound == -np.inf and c >= depth and not overflow[i]:
            c, bound = _compact_bounded(res_fast[i], res_items[i], c, depth, slack, sorted_norms)
            bounds[i] = bound
        counts[i] = c


@njit(cache=True, nogil=True)
def settle_bounded(norms, slacks, guesses, res_fast, res_items, counts, depth, redo):  # pragma: no cover
    """Cut each reservoir to the items whose upper bound reaches a proven lower bound ``L`` on the
    user's ``depth``-th best score; the rest provably rank below ``depth``.

    The scan started from ``guesses[i]`` (items whose upper bound was below it were skipped): that is
    sound only if at least ``depth`` entries have a lower bound >= the guess; otherwise ``redo[i]`` is
    set and the user must be scanned again without a guess. ``L`` is then found by a 256-bucket
    histogram of the lower bounds above the guess: the minimum lower bound among the top buckets
    that hold ``depth`` entries (an actual entry's value, so exactly ``depth`` or more reach it).
    Without a guess, ``L`` is the exact ``depth``-th best (a partition).
    """
    for i in range(res_fast.shape[0]):
        c = counts[i]
        g = guesses[i]
        redo[i] = False
        if c < depth:
            redo[i] = g > -np.inf
            continue
        slack = slacks[i]
        if g == -np.inf:
            counts[i], _ = _compact_bounded(res_fast[i], res_items[i], c, depth, slack, norms)
            continue
        fast = res_fast[i]
        items = res_items[i]
        spread = np.empty(c, dtype=np.float32)  # slack * norm: the half-width of each interval
        top = np.float32(-np.inf)
        above = 0
        for t in range(c):
            spread[t] = slack * norms[items[t]]
            low = fast[t] - spread[t]
            if low >= g:
                above += 1
                top = max(top, low)
        if above < depth:
            redo[i] = True
            continue
        hist = np.zeros(257, dtype=np.int64)
        span = np.float64(top) - np.float64(g)
        scale = 256.0 / span if span > 0 else 0.0  # float64: finite for any float32 span
        for t in range(c):
            low = fast[t] - spread[t]
            if low >= g:
                hist[np.int64(min((np.float64(low) - g) * scale, 256.0))] += 1
        cut = 256
        total = hist[256]
        while total < depth:
            cut -= 1
            total += hist[cut]
        bound = top
        for t in range(c):  # the smallest lower bound in buckets >= cut: >= depth entries reach it
            low = fast[t] - spread[t]
            if low >= g and np.int64(min((np.float64(low) - g) * scale, 256.0)) >= cut:
                bound = min(bound, low)
        keep = 0
        for t in range(c):
            if fast[t] + spread[t] >= bound:
                fast[keep] = fast[t]
                items[keep] = items[t]
                keep += 1
        counts[i] = keep


@njit(cache=True, parallel=True, nogil=True)
def rescore_reservoirs(queries, vectors, res_items, counts, skip, chunks, out):  # pragma: no cover - compiled
    """Canonical score of every reservoir entry (``out[i, t]``), computed item by item.

    The entries are counting-sorted by item row first, so each item vector is read once from memory
    for all the users that hold it, instead of one random read per (user, item): the reads, not the
    arithmetic, were the cost (69 vs 20 ns a pair here). Threads split the item range in ``chunks``;
    each pair's score is the same :func:`dot` whichever thread computes it.
    """
    m = res_items.shape[0]
    n = vectors.shape[0]
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(m):
        if skip[i]:
            continue
        for t in range(counts[i]):
            start[res_items[i, t] + 1] += 1
    for r in range(n):
        start[r + 1] += start[r]
    fill = start[:-1].copy()
    pair_user = np.empty(start[n], dtype=np.int32)
    pair_slot = np.empty(start[n], dtype=np.int32)
    for i in range(m):
        if skip[i]:
            continue
        for t in range(counts[i]):
            r = res_items[i, t]
            p = fill[r]
            pair_user[p] = i
            pair_slot[p] = t
            fill[r] = p + 1
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        for r in range(c * step, min(n, (c + 1) * step)):
            for p in range(start[r], start[r + 1]):
                i = pair_user[p]
                out[i, pair_slot[p]] = dot_rows(queries, i, vectors, r)


@njit(cache=True)
def _sort_keys(keys, tmp):  # pragma: no cover - compiled
    """Sort uint64 keys ascending in place: a stable LSD radix sort by bytes, skipping the low-half
    bytes above the largest low half (item rows: 2 bytes for a 41k catalog). No data-dependent
    branches: ~5x faster than ``np.sort`` on a few hundred keys, and linear however many ties."""
    n = keys.shape[0]
    # Written with scalar loops and explicit int64 indices: slice assignment, max() of uint64 and
    # swapped array variables made this function take 3.5 s to compile, against 0.5 s now.
    low_max = np.uint64(0)
    for t in range(n):
        low = keys[t] & _LOW32
        if low > low_max:
            low_max = low
    count = np.empty(257, dtype=np.int64)
    passes = 0
    for s in range(8):
        shift = np.uint64(8 * s)
        if s < 4 and (low_max >> shift) == np.uint64(0):
            continue
        src = keys if passes % 2 == 0 else tmp
        dst = tmp if passes % 2 == 0 else keys
        for b in range(257):
            count[b] = 0
        for t in range(n):
            count[np.int64((src[t] >> shift) & np.uint64(0xFF)) + 1] += 1
        for b in range(256):
            count[b + 1] += count[b]
        for t in range(n):
            byte = np.int64((src[t] >> shift) & np.uint64(0xFF))
            dst[count[byte]] = src[t]
            count[byte] += 1
        passes += 1
    if passes % 2:
        for t in range(n):
            keys[t] = tmp[t]


@njit(cache=True, parallel=True, nogil=True)
def window_from_scores(res_items, canon, counts, heads, skip, lo, hi, out_items, out_scores):  # pragma: no cover
    """Ranks ``lo..hi`` of each user's rescored candidates, sorted by (score desc, item row asc).

    ``heads[i]`` better-ranked items were left out of the candidates (their order is settled), so
    candidate ``t`` in sorted order has rank ``heads[i] + t + 1``.
    """
    width = hi - lo + 1
    for i in prange(res_items.shape[0]):
        if skip[i]:
            continue
        c = counts[i]
        head = heads[i]
        keys = np.empty(c, dtype=np.uint64)
        for t in range(c):
            b32 = np.float32(canon[i, t]).view(np.int32)
            desc = b32 ^ (~(b32 >> 31) & _SIGN_OFF)
            keys[t] = (np.uint64(np.uint32(desc)) << np.uint64(32)) | np.uint64(res_items[i, t])
        _sort_keys(keys, np.empty(c, dtype=np.uint64))
        for col in range(width):
            idx = lo - 1 - head + col
            if 0 <= idx < c:
                key = keys[idx]
                desc = np.int32(np.uint32(key >> np.uint64(32)))
                out_scores[i, col] = np.int32(desc ^ (~(desc >> 31) & _SIGN_OFF)).view(np.float32)
                out_items[i, col] = np.int64(key & _LOW32)
            else:
                out_scores[i, col] = np.float32(-np.inf)
                out_items[i, col] = -1


@njit(cache=True, nogil=True)
def sample_bounds(scores, norms, slacks, ranks, out):  # pragma: no cover - compiled
    """``out[i]``: the ``ranks[i]``-th best lower bound (fast score - slack * norm) of row i (0: -inf).

    The ranks are small (tens): a sorted top-k buffer rejects most scores with one compare.
    """
    m, s = scores.shape
    for i in range(m):
        k = ranks[i]
        if k < 1 or k > s:
            out[i] = -np.inf
            continue
        best = np.full(k, -np.inf, dtype=np.float32)  # descending
        slack = slacks[i]
        for j in range(s):
            low = _fast_value(scores[i], j) - slack * norms[j]
            if low > best[k - 1]:
                t = k - 1
                while t > 0 and best[t - 1] < low:
                    best[t] = best[t - 1]
                    t -= 1
                best[t] = low
        out[i] = best[k - 1]


@njit(cache=True, nogil=True)
def places_to_rows(res_items, counts, order):  # pragma: no cover - compiled
    """Reservoir entries from catalog places (norm order) to item rows, in place."""
    for i in range(res_items.shape[0]):
        for t in range(counts[i]):
            res_items[i, t] = order[res_items[i, t]]


@njit(cache=True, nogil=True)
def sorted_places(indptr, pos_rows, place, out):  # pragma: no cover - compiled
    """Each user's positives (``pos_rows[indptr[i]:indptr[i + 1]]``) as catalog places, sorted (by
    insertion: a few dozen each, typically; ``np.sort`` costs seconds to compile)."""
    for i in range(indptr.shape[0] - 1):
        a = indptr[i]
        b = indptr[i + 1]
        for t in range(a, b):
            value = place[pos_rows[t]]
            k = t
            while k > a and out[k - 1] > value:
                out[k] = out[k - 1]
                k -= 1
            out[k] = value
