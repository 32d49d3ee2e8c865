"""Compiled per-user loops of the retrieval and selection stages (numba).

The window of a user needs a handful of passes over its few hundred candidates (drop positives,
find the provable rescoring range, rescore, sort, cut the window). As numpy array passes over a
whole chunk these cost more than the FAISS search itself; as one compiled loop per user, run in
parallel over users, they cost a fraction of it (docs/performance.md).

Determinism: every user is computed by the same sequential code whatever the thread that runs it,
and :func:`dot` fixes its summation order (8 interleaved partial sums, combined pairwise), compiled
without fast-math, so the compiler may not reassociate it: a pair's score is the same in every run,
chunk and thread count (tested).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

__all__ = ["canonical_pairs", "finish_sorted", "post_search", "reservoir_block", "set_threads", "uniforms_into"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_SIGN_OFF = np.int32(0x7FFFFFFF)


def set_threads(threads: int) -> None:
    """Threads of the compiled loops (at most what numba was started with)."""
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


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


@njit(cache=True, parallel=True)
def canonical_pairs(queries, vectors, users, items):  # pragma: no cover - compiled
    """The canonical score of each (user row, item row) pair."""
    out = np.empty(users.shape[0], dtype=np.float32)
    for p in prange(users.shape[0]):
        out[p] = dot(queries[users[p]], vectors[items[p]])
    return out


@njit(cache=True, inline="always")
def _finish_row(q, vectors, fast, items, count, width_c, margin, lo, hi, depth, out_items, out_scores):  # pragma: no cover
    """Canonical ranks ``lo..hi`` of one user from its candidates in fast-score order.

    ``fast[:count]`` are non-increasing finite fast-kernel scores of the user's non-positive
    candidates, ``items[:count]`` their rows; positions ``count..width_c-1`` count as -inf. The
    candidates must include every item within ``margin`` of the ``depth``-th best. Returns the
    number of candidates that can reach the window (``end``); see ``retrieval._finish``.
    """
    neg_inf = np.float32(-np.inf)
    f_d = fast[depth - 1] if count >= depth else neg_inf
    threshold = f_d - margin
    end = 0
    for j in range(count):
        if fast[j] >= threshold:
            end += 1
    # The longest head before rank lo separated from the rest by a gap > margin keeps its order
    # canonically: it only shifts the ranks and is not rescored.
    span = min(lo - 1, width_c - 1)
    head = 0
    for j in range(span):
        a = fast[j] if j < count else neg_inf
        b = fast[j + 1] if j + 1 < count else neg_inf
        if a > neg_inf and a - b > margin:
            head = j + 1
    head = min(head, end)
    n = end - head
    scores = np.empty(max(n, 1), dtype=np.float32)
    for t in range(n):
        scores[t] = dot(q, vectors[items[head + t]])
    bits = scores.view(np.int32)
    keys = np.empty(n, dtype=np.uint64)
    for t in range(n):
        b32 = bits[t]
        # Non-negative floats: flip all bits but the sign; negative: keep. As uint32 that sorts by
        # descending score; the item row in the low half breaks ties.
        desc = b32 ^ (~(b32 >> 31) & _SIGN_OFF)
        keys[t] = (np.uint64(np.uint32(desc)) << np.uint64(32)) | np.uint64(items[head + t])
    # The fast order is the canonical one but for near-ties: insertion sort is ~linear on it.
    for t in range(1, n):
        key = keys[t]
        s = t - 1
        while s >= 0 and keys[s] > key:
            keys[s + 1] = keys[s]
            s -= 1
        keys[s + 1] = key
    back = np.empty(1, dtype=np.int32)
    back_f = back.view(np.float32)
    width = hi - lo + 1
    for c in range(width):
        idx = lo - 1 - head + c
        if 0 <= idx < n:
            key = keys[idx]
            desc = np.int32(np.uint32(key >> np.uint64(32)))
            back[0] = desc ^ (~(desc >> 31) & _SIGN_OFF)
            out_scores[c] = back_f[0]
            out_items[c] = np.int64(key & _LOW32)
        else:
            out_scores[c] = neg_inf
            out_items[c] = -1
    return end


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
def post_search(queries, vectors, fast, rows, users, indptr, pos_rows, margins, lo, hi, need, check,
                out_items, out_scores, retrieved, short):  # pragma: no cover - compiled
    """Windows of users from one FAISS call: drop positives, then :func:`_finish_row`.

    ``fast``/``rows`` are FAISS's (m, depth) results for chunk users ``users``; ``indptr``/``pos_rows``
    the chunk's positives (sorted per user). With ``check``, ``short[i]`` flags a user whose search
    may have stopped within the noise margin of its ``need``-th non-positive (search it deeper).
    """
    m, depth = fast.shape
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
        _finish_row(queries[u], vectors, fc, ic, k, depth, margins[i], lo, hi, need, out_items[i], out_scores[i])
        if check:
            f_d = fc[need - 1] if k >= need else np.float32(-np.inf)
            short[i] = not (fast[i, depth - 1] < f_d - margins[i])


@njit(cache=True, parallel=True)
def finish_sorted(queries, vectors, fast_sorted, item_sorted, margins, lo, hi, depth,
                  out_items, out_scores, ends):  # pragma: no cover - compiled
    """:func:`_finish_row` for every row of candidates already in fast-score order (-inf padded)."""
    m, width_c = fast_sorted.shape
    for i in prange(m):
        count = 0
        while count < width_c and fast_sorted[i, count] > -np.inf:
            count += 1
        ends[i] = _finish_row(queries[i], vectors, fast_sorted[i], item_sorted[i], count, width_c,
                              margins[i], lo, hi, depth, out_items[i], out_scores[i])


@njit(cache=True, parallel=True)
def uniforms_into(streams, cols, out):  # pragma: no cover - compiled
    """``out[i, j]``: splitmix64(streams[i] ^ cols[j]) as a uniform in (0, 1), as hashing.uniforms."""
    m, width = out.shape
    scale = 1.0 / 9007199254740992.0  # 2**-53
    for i in prange(m):
        s = streams[i]
        for j in range(width):
            z = (s ^ cols[j]) + _GOLDEN
            z = (z ^ (z >> np.uint64(30))) * _M1
            z = (z ^ (z >> np.uint64(27))) * _M2
            z = z ^ (z >> np.uint64(31))
            out[i, j] = (np.float64(z >> np.uint64(11)) + 0.5) * scale


@njit(cache=True)
def _next_span(row, j, full, floor):  # pragma: no cover - compiled
    """The first 64-score span from ``j`` (below ``full``) with a score >= ``floor``, else ``full``.

    Fixed-length, branch-free counting: it vectorises (0.15 ns a score here, 0.44 with 32-score spans).
    """
    while j < full:
        hits = 0
        for jj in range(j, j + 64):
            hits += np.int32(row[jj] >= floor)
        if hits:
            return j
        j += 64
    return j


@njit(cache=True, inline="always")
def _compact_row(fast, items, count, depth, margin):  # pragma: no cover - compiled
    """Keep the entries within ``margin`` of the ``depth``-th best; return (count, that score)."""
    threshold = np.partition(fast[:count], count - depth)[count - depth]  # the depth-th best
    keep = threshold - margin
    c = 0
    for t in range(count):
        if fast[t] >= keep:
            fast[c] = fast[t]
            items[c] = items[t]
            c += 1
    return c, threshold


@njit(cache=True, parallel=True)
def reservoir_block(scores, b0, n_items, indptr, pos_rows, margins, depth, thresholds, res_fast, res_items,
                    counts, overflow):  # pragma: no cover - compiled
    """Fold one GEMM block of scores into each user's candidate reservoir (the exact engine).

    A user keeps every non-positive item scoring at least ``threshold - margin``, where ``threshold``
    is a running lower bound on its ``depth``-th best score (the ``depth``-th best of the reservoir,
    updated when it fills up), so the reservoir always holds every item that can reach the top
    ``depth`` canonically. A reservoir that cannot make room (more than its capacity within the
    margin: duplicate vectors) sets ``overflow``; the caller retries with more room.
    """
    mt = scores.shape[0]
    cap = res_fast.shape[1]
    limit = min(scores.shape[1], n_items - b0)
    for i in prange(mt):
        if overflow[i]:
            continue
        a = indptr[i]
        b = indptr[i + 1]
        margin = margins[i]
        floor = thresholds[i] - margin
        c = counts[i]
        row = scores[i]
        full = limit - limit % 64
        j = 0
        while j < limit:
            j = _next_span(row, j, full, floor)  # most spans of a block hold no candidate
            stop = j + 64 if j < full else limit
            for jj in range(j, stop):
                s = row[jj]
                if s < floor:
                    continue
                r = b0 + jj
                if _is_positive(pos_rows, a, b, r):
                    continue
                if c == cap:
                    c, thr = _compact_row(res_fast[i], res_items[i], c, depth, margin)
                    thresholds[i] = thr
                    floor = thr - margin
                    if s < floor:
                        continue
                    if c == cap:
                        overflow[i] = True
                        break
                res_fast[i, c] = s
                res_items[i, c] = r
                c += 1
            if overflow[i]:
                break
            j = stop
        counts[i] = c
