"""``--item-shards K``: the catalog as K blocks of items, each searched by its own index, merged exactly."""

from __future__ import annotations

import itertools

import numpy as np

from hnmine.mining.config import IndexSpec
from hnmine.mining.retrieval import ItemIndex, Window, resolved_spec, retrieve_window

__all__ = ["ShardedIndex", "item_shards", "make_index"]


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

    def window(self, queries: np.ndarray, indptr: np.ndarray, pos_rows: np.ndarray, lo: int, hi: int) -> Window:
        return _retrieve_sharded(self, queries, indptr, pos_rows, lo, hi)


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

