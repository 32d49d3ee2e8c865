"""Stage 3: choose each user's hard negatives from its rank window.

Filters first (absolute score caps, margins relative to the user's positives, near duplicates of
the user's positives: :func:`near_duplicates`), then a strategy picks ``num_hard`` of the survivors:

- ``uniform``: uniformly at random (the Facebook EBR recipe);
- ``top``: the best-ranked (hardest);
- ``softmax``: without replacement with probability ~ exp(score / temperature) (Gumbel top-k);
- ``softmax-v``: the same with the adaptive temperature of Softmax-v(rho, N):
  ``tau = sqrt(Var(score) / (2 rho))`` over the user's window, so hardness is set by ``rho``
  whatever the score scale;
- ``all``: every survivor.

With a teacher (a second model's embeddings, :func:`pair_scores`) the score filters, margins and
the near-duplicate cosine read the teacher's scores; the window and the strategy stay the miner's.
With an adaptive window (:func:`adaptive_buckets`, :func:`shifted_windows`) each user's window moves
by how the model ranks the user's own positives.

Every random draw comes from :mod:`hnmine.mining.hashing` keyed by (seed, user id, window position), so a
user's negatives never depend on chunking, threads or the other users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from hnmine.io.embeddings import normalize_rows, read_embedding_pair, vectors_for
from hnmine.mining.config import REFERENCES, STRATEGIES, SelectionConfig
from hnmine.mining.hashing import uniforms
from hnmine.mining.kernels import dot, dot_rows
from hnmine.mining.retrieval import Window

__all__ = [
    "ADAPTIVE_BUCKETS",
    "ADAPTIVE_SHIFTS",
    "BUCKET_TABLE",
    "REFERENCES",
    "STRATEGIES",
    "Selection",
    "SelectionConfig",
    "Teacher",
    "adaptive_buckets",
    "choose_negatives",
    "median_positive_scores",
    "near_duplicates",
    "pair_scores",
    "read_teacher",
    "reference_scores",
    "select_hard_negatives",
    "shifted_windows",
]
# Up to this many picks per user, a compiled sorted-buffer pass chooses them (else argpartition).
_BUFFERED_TAKE = 64


@dataclass
class Selection:
    """Chosen negatives of a chunk, flat, grouped by user in preference order.

    ``user`` is the chunk-local user index, ``column`` the window column (rank = lo + column),
    ``order`` the position in the user's preference order (0 = first choice).
    """

    user: np.ndarray
    column: np.ndarray
    item: np.ndarray
    score: np.ndarray
    order: np.ndarray
    window_filled: np.ndarray
    after_filters: np.ndarray


def reference_scores(
    queries: np.ndarray, item_vectors: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray, statistic: str
) -> np.ndarray:
    """Per user, the chosen statistic of its positives' scores (NaN for users without positives)."""
    if statistic not in REFERENCES:
        raise ValueError(f"margin reference must be one of {REFERENCES}")
    m = len(queries)
    counts = np.diff(indptr)
    owner = np.repeat(np.arange(m), counts)
    scores = np.einsum("ij,ij->i", queries[owner], item_vectors[pos_rows]).astype(np.float64)
    out = np.full(m, np.nan)
    has = counts > 0
    if not has.any():
        return out
    starts = indptr[:-1][has]
    if statistic == "mean":
        out[has] = np.add.reduceat(scores, starts) / counts[has]
    elif statistic == "max":
        out[has] = np.maximum.reduceat(scores, starts)
    elif statistic == "min":
        out[has] = np.minimum.reduceat(scores, starts)
    else:
        order = np.lexsort((scores, owner))
        ranked = scores[order]
        lo_idx = indptr[:-1][has] + (counts[has] - 1) // 2
        hi_idx = indptr[:-1][has] + counts[has] // 2
        out[has] = (ranked[lo_idx] + ranked[hi_idx]) / 2
    return out


@dataclass
class Teacher:
    """A second model whose scores the filters read, row-aligned with the mined model's users and items."""

    users: np.ndarray  # per user row of --users (unit rows for --metric cosine)
    items: np.ndarray  # per item row of --items (likewise)
    unit_items: np.ndarray | None = None  # unit item rows, for --max-positive-similarity

    def scores(self, items: np.ndarray, first_row: int) -> np.ndarray:
        """The teacher's scores of a chunk's window items (users from ``first_row``)."""
        return pair_scores(items, self.users[first_row : first_row + len(items)], self.items)


def read_teacher(cfg: SelectionConfig, user_ids: np.ndarray, users: str, item_ids: np.ndarray, items: str,
                 metric: str) -> Teacher | None:
    """``--teacher-users/--teacher-items`` read whole and put in the order of ``--users``/``--items``
    (whose ids they must cover; None without a teacher). The teacher is scored with ``metric``, as the
    mined model is."""
    if cfg.teacher_users is None or cfg.teacher_items is None:
        return None
    t_users, t_items = read_embedding_pair(cfg.teacher_users, cfg.teacher_items, cfg.teacher_id_column,
                                           cfg.teacher_vector_column)
    user_vectors, item_vectors = vectors_for(t_users, user_ids, users), vectors_for(t_items, item_ids, items)
    if metric == "cosine":
        user_vectors, item_vectors = normalize_rows(user_vectors), normalize_rows(item_vectors)
    unit = normalize_rows(item_vectors) if cfg.max_positive_similarity is not None else None
    return Teacher(user_vectors, item_vectors, unit)


def pair_scores(items: np.ndarray, user_vectors: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """Scores of each user row's window items (``items``: item rows, -1 for none, giving -inf) under
    another model's vectors: :func:`hnmine.mining.kernels.dot`'s one summation order, so the same bits
    whatever the chunking or threads."""
    out = np.empty(items.shape, dtype=np.float32)
    _pair_scores(np.ascontiguousarray(user_vectors, dtype=np.float32),
                 np.ascontiguousarray(item_vectors, dtype=np.float32),
                 np.ascontiguousarray(items, dtype=np.int64), out)
    return out


@njit(cache=True, parallel=True)
def _pair_scores(users, vectors, items, out):  # pragma: no cover - compiled
    m, width = items.shape
    for i in prange(m):
        for c in range(width):
            item = items[i, c]
            out[i, c] = dot_rows(users, i, vectors, item) if item >= 0 else -np.inf


# --adaptive-window: a user's bucket by where its median positive ranks among its non-positives,
# and the window's shift in units of S (ranks, LO:HI the given window)
ADAPTIVE_BUCKETS = ("confident", "sure", "unsure", "lost")  # fewer than ceil(LO/2), LO, HI non-positives above; more
ADAPTIVE_SHIFTS = (-1, 0, 1, 2)
# the side table of an adaptive mine: user_id, bucket (a name above), rank_lo, rank_hi (the user's window);
# beside hard_neg_edge, never a column of it (the samplers read hard_neg_edge's columns as they are)
BUCKET_TABLE = "user_bucket.parquet"


def median_positive_scores(queries: np.ndarray, item_vectors: np.ndarray, indptr: np.ndarray,
                           pos_rows: np.ndarray) -> np.ndarray:
    """Per user, the median of its positives' scores (NaN without positives), each score in
    :func:`hnmine.mining.kernels.dot`'s order: the same bits as the window's scores it is compared with."""
    out = np.empty(len(queries), dtype=np.float64)
    _median_scores(np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(item_vectors, dtype=np.float32),
                   np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(pos_rows, dtype=np.int64), out)
    return out


@njit(cache=True, parallel=True)
def _median_scores(queries, vectors, indptr, pos_rows, out):  # pragma: no cover - compiled
    for i in prange(len(queries)):
        n = indptr[i + 1] - indptr[i]
        if n == 0:
            out[i] = np.nan
            continue
        scores = np.empty(n, dtype=np.float32)
        for k in range(n):
            scores[k] = dot_rows(queries, i, vectors, pos_rows[indptr[i] + k])
        scores.sort()
        out[i] = (np.float64(scores[(n - 1) // 2]) + np.float64(scores[n // 2])) / 2


def adaptive_buckets(window: Window, medians: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Each user's bucket (an index into :data:`ADAPTIVE_BUCKETS`) by how many of its non-positives
    score above its median positive: fewer than ceil(LO/2) is 0, fewer than LO 1, fewer than HI 2,
    else 3 (fewer than k: the median is at least the score at rank k; a rank the catalog does not
    fill scores -inf). A user without positives is 1: no evidence, no shift. ``window`` must hold
    those ranks (:meth:`SelectionConfig.retrieved_window`)."""
    def at(rank: int) -> np.ndarray:
        return window.scores[:, rank - window.lo].astype(np.float64)

    with np.errstate(invalid="ignore"):
        bucket = np.where(medians >= at((lo + 1) // 2), 0,
                          np.where(medians >= at(lo), 1, np.where(medians >= at(hi), 2, 3)))
    bucket[np.isnan(medians)] = 1
    return bucket.astype(np.int8)


def shifted_windows(window: Window, bucket: np.ndarray, lo: int, hi: int, shift: int) -> tuple[Window, np.ndarray]:
    """(the window with each user's ranks outside its own moved window masked out, each user's first
    rank). A user's window is ``LO:HI`` moved by ``ADAPTIVE_SHIFTS[bucket] * shift`` ranks, the same
    width, kept inside the retrieved ranks (so never above rank 1 nor past the catalog's depth)."""
    width = hi - lo + 1
    last = window.lo + window.width - width  # the latest first rank whose window was retrieved
    start = np.clip(lo + np.asarray(ADAPTIVE_SHIFTS, dtype=np.int64)[bucket] * shift, window.lo, last)
    column = np.arange(window.width)[None, :] + window.lo
    outside = (column < start[:, None]) | (column > start[:, None] + width - 1)
    items = np.where(outside, -1, window.items)
    scores = np.where(outside, np.float32(-np.inf), window.scores).astype(np.float32)
    return Window(items=items, scores=scores, available=window.available, lo=window.lo,
                  retrieved=window.retrieved), start


def near_duplicates(
    window: Window, indptr: np.ndarray, pos_rows: np.ndarray, unit_items: np.ndarray | None = None,
    max_similarity: float | None = None, item_keys: np.ndarray | None = None,
) -> np.ndarray | None:
    """Window items too close to one of the user's positives (a pure function of the chunk): True where
    the item's cosine with a positive is above ``max_similarity`` (``unit_items``: the item vectors,
    unit length) or where it shares a key with a positive (``item_keys``: an int64 code per item row, -1
    for none, never matching). None when neither is asked for.

    A near duplicate (the same product in another colour, a venue's second listing) is a positive in
    all but id: as a hard negative it teaches the model to push the positive away.
    """
    if max_similarity is None and item_keys is None:
        return None
    items = np.ascontiguousarray(window.items, dtype=np.int64)
    out = np.zeros(items.shape, dtype=np.bool_)
    ptr = np.ascontiguousarray(indptr, dtype=np.int64)
    rows = np.ascontiguousarray(pos_rows, dtype=np.int64)
    if max_similarity is not None and unit_items is not None:
        _similar_to_positives(np.ascontiguousarray(unit_items, dtype=np.float32), items, ptr, rows,
                              np.float32(max_similarity), out)
    if item_keys is not None:
        _shares_a_key(np.ascontiguousarray(item_keys, dtype=np.int64), items, ptr, rows, out)
    return out


@njit(cache=True, parallel=True)
def _similar_to_positives(unit, items, indptr, pos_rows, threshold, out):  # pragma: no cover - compiled
    """out[i, c] |= cosine(item, some positive of user i) > threshold, in one fixed summation order
    (:func:`hnmine.mining.kernels.dot`), so the result does not depend on chunks or threads."""
    m, width = items.shape
    for i in prange(m):
        for c in range(width):
            item = items[i, c]
            if item < 0 or out[i, c]:
                continue
            for k in range(indptr[i], indptr[i + 1]):
                if dot(unit[item], unit[pos_rows[k]]) > threshold:
                    out[i, c] = True
                    break


@njit(cache=True, parallel=True)
def _shares_a_key(keys, items, indptr, pos_rows, out):  # pragma: no cover - compiled
    """out[i, c] |= the item's key is the key of one of user i's positives (keys < 0 never match)."""
    m, width = items.shape
    for i in prange(m):
        n = indptr[i + 1] - indptr[i]
        own = np.empty(n, dtype=np.int64)
        for k in range(n):
            own[k] = keys[pos_rows[indptr[i] + k]]
        own.sort()
        for c in range(width):
            item = items[i, c]
            if item < 0:
                continue
            key = keys[item]
            if key < 0:
                continue
            j = np.searchsorted(own, key)
            if j < n and own[j] == key:
                out[i, c] = True


def _keep_mask(window: Window, references: np.ndarray | None, cfg: SelectionConfig,
               exclude: np.ndarray | None = None, filter_scores: np.ndarray | None = None) -> np.ndarray:
    keep = window.items >= 0
    if exclude is not None:
        keep &= ~exclude
    scores = window.scores if filter_scores is None else filter_scores
    if cfg.max_score is not None:
        keep &= scores <= cfg.max_score
    if cfg.min_score is not None:
        keep &= scores >= cfg.min_score
    if cfg.uses_margins and references is not None:
        ref = references[:, None]
        has_ref = ~np.isnan(ref)
        if cfg.absolute_margin is not None:
            keep &= ~has_ref | (scores <= ref - cfg.absolute_margin)
        if cfg.relative_margin is not None:
            keep &= ~has_ref | (scores <= ref - np.abs(ref) * cfg.relative_margin)
    return keep


def _preference_keys(window: Window, keep: np.ndarray, streams: np.ndarray, cfg: SelectionConfig) -> np.ndarray:
    """Per candidate a key; the user's choice is its ``num_hard`` largest keys."""
    m, width = window.items.shape
    if cfg.strategy in ("top", "all"):
        keys = np.broadcast_to(-np.arange(width, dtype=np.float64), (m, width)).copy()
    else:
        u = uniforms(streams, width)
        if cfg.strategy == "uniform":
            keys = u
        else:
            scores = window.scores.astype(np.float64)
            if cfg.strategy == "softmax":
                tau = np.full((m, 1), cfg.temperature)
            else:
                count = np.maximum(keep.sum(axis=1, keepdims=True), 1)
                kept = np.where(keep, scores, 0.0)
                mean = kept.sum(axis=1, keepdims=True) / count
                var = (np.where(keep, scores - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count
                tau = np.sqrt(var / (2.0 * cfg.rho))
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                logits = np.where(tau > 0, scores / np.where(tau > 0, tau, 1.0), 0.0)
            keys = logits - np.log(-np.log(u))  # Gumbel top-k == sampling without replacement
    keys[~keep] = -np.inf
    return keys


def select_hard_negatives(
    window: Window,
    streams: np.ndarray,
    cfg: SelectionConfig,
    references: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    filter_scores: np.ndarray | None = None,
) -> Selection:
    """Pick each user's negatives from its window (a pure function of the chunk).

    ``streams`` are the users' random streams (:func:`hnmine.mining.hashing.user_streams`); ``references``
    the users' reference positive scores, needed only when margins are set; ``exclude`` window items
    never to pick (:func:`near_duplicates`); ``filter_scores`` the scores the score caps and margins
    compare (a teacher's, :func:`pair_scores`; default the window's own), the strategy always ranks by
    the window's.
    """
    m, width = window.items.shape
    keep = _keep_mask(window, references, cfg, exclude, filter_scores)
    after_filters = keep.sum(axis=1)
    take = width if cfg.strategy == "all" else min(cfg.num_hard + cfg.extra, width)
    keys = _preference_keys(window, keep, streams, cfg)
    # Chosen in preference order: key desc, ties by column (rank) asc, deterministic.
    if take <= _BUFFERED_TAKE:
        columns = np.empty((m, take), dtype=np.int64)
        chosen_keys = np.empty((m, take), dtype=np.float64)
        top_columns(np.ascontiguousarray(keys, dtype=np.float64), columns, chosen_keys)
    else:
        part = np.broadcast_to(np.arange(width), (m, width)).copy()
        if take < width:
            part = np.argpartition(-keys, take - 1, axis=1)[:, :take]
        part_keys = np.take_along_axis(keys, part, axis=1)
        order = np.lexsort((part, -part_keys), axis=1)
        columns = np.take_along_axis(part, order, axis=1)
        chosen_keys = np.take_along_axis(part_keys, order, axis=1)
    valid = np.isfinite(chosen_keys)
    users, slots = np.nonzero(valid)
    cols = columns[users, slots]
    return Selection(
        user=users,
        column=cols,
        item=window.items[users, cols],
        score=window.scores[users, cols],
        order=slots,
        window_filled=window.filled(),
        after_filters=after_filters,
    )


@njit(cache=True, parallel=True)
def top_columns(keys, out_cols, out_keys):  # pragma: no cover - compiled
    """Per row, the columns of the ``take`` largest keys (``take = out_cols.shape[1]``), by key
    descending, ties by column ascending; rows with fewer finite keys end in -inf. One pass with a
    sorted buffer: most keys are rejected by one compare (replaces argpartition + lexsort)."""
    m, width = keys.shape
    take = out_cols.shape[1]
    for i in prange(m):
        for t in range(take):
            out_keys[i, t] = -np.inf
            out_cols[i, t] = 0
        n = 0
        for c in range(width):
            k = keys[i, c]
            if k != k:  # NaN ranks last
                k = -np.inf
            if n == take and not k > out_keys[i, take - 1]:
                continue
            t = n if n < take else take - 1
            while t > 0 and out_keys[i, t - 1] < k:
                out_keys[i, t] = out_keys[i, t - 1]
                out_cols[i, t] = out_cols[i, t - 1]
                t -= 1
            out_keys[i, t] = k
            out_cols[i, t] = c
            if n < take:
                n += 1


@dataclass
class ChunkChoice:
    """:func:`choose_negatives`' result: the picks, the window they were picked from (each user's own
    ranks with ``--adaptive-window``) and, with it, each user's bucket and first rank."""

    selection: Selection
    window: Window
    bucket: np.ndarray | None = None
    start: np.ndarray | None = None


def choose_negatives(window: Window, streams: np.ndarray, cfg: SelectionConfig, queries: np.ndarray,
                     item_vectors: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray, first_row: int,
                     teacher: Teacher | None = None, unit_items: np.ndarray | None = None,
                     item_keys: np.ndarray | None = None) -> ChunkChoice:
    """A chunk's selection from its retrieved ranks (:meth:`SelectionConfig.retrieved_window`): each
    user's window moved (``adaptive_window``), the filters on the teacher's scores when there is one
    (its positives' scores the margins' reference, its item vectors the near-duplicate cosine), the
    strategy on the mined model's. ``first_row`` is the chunk's first user row (the teacher's rows)."""
    lo, hi = cfg.window().lo, cfg.window().hi
    bucket = start = None
    if cfg.adaptive_window:
        bucket = adaptive_buckets(window, median_positive_scores(queries, item_vectors, indptr, pos_rows), lo, hi)
        window, start = shifted_windows(window, bucket, lo, hi, cfg.adaptive_window)
    filter_scores = None
    ref_users, ref_items = queries, item_vectors
    if teacher is not None:
        ref_users, ref_items = teacher.users[first_row : first_row + len(queries)], teacher.items
        if cfg.max_score is not None or cfg.min_score is not None or cfg.uses_margins:
            filter_scores = teacher.scores(window.items, first_row)
        unit_items = teacher.unit_items
    references = (reference_scores(ref_users, ref_items, indptr, pos_rows, cfg.margin_reference)
                  if cfg.uses_margins else None)
    exclude = near_duplicates(window, indptr, pos_rows, unit_items, cfg.max_positive_similarity, item_keys)
    return ChunkChoice(select_hard_negatives(window, streams, cfg, references, exclude, filter_scores), window,
                       bucket, start)
