"""The candidate cache: each user's ranks 1..DEPTH among its non-positive items, kept by
``hnmine mine --save-candidates DIR`` and re-selected from by ``hnmine select``.

Retrieval is what mining spends its time on; the window, the strategy, the filters, the cap and
the seed only change what is picked from the ranked candidates. The cache holds, for every user row
in order, the item rows of its ranks 1..DEPTH (DEPTH = the HI of the window it was mined with; -1
where the catalog runs out) and their canonical fp32 scores, in canonical order (score desc, item
row asc): ``item_rows.npy`` (int32) and ``scores.npy`` (float32), each a users x DEPTH matrix, so
``[u, r - 1]`` is user row u's rank r. Any window LO:HI with HI <= DEPTH is a slice of it
(:func:`window_slice`): the same window retrieval would return. Matrices, memory-mapped, rather than
parquet: a reader copies only the window's ranks, where parquet decodes every value to DEPTH (a
flat parquet column of the same values made reading the cache as slow as the selection on Gowalla,
a list column 4-7x slower still; scores barely compress).

A cache is an hnmine output of format ``candidates`` (published like ``mine``'s output:
hnmine/io/publish.py): the two matrices plus ``manifest.json``, whose ``candidates`` entry
holds the depth, the engine and the fingerprint: a sha256 over the user and item ids and vectors,
the positives (as item rows per user row), the metric, the depth, the engine and
:data:`CACHE_VERSION`. A reader is given the inputs again and refuses, in one line, a cache whose
fingerprint differs (:class:`CandidateReader`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hnmine.errors import InputError
from hnmine.io.manifest import MANIFEST
from hnmine.io.publish import output_format
from hnmine.mining.retrieval import IndexSpec, Window

__all__ = ["CACHE_FORMAT", "CACHE_VERSION", "CandidateReader", "CandidateWriter", "Fingerprint", "cache_entry",
           "engine_name", "window_slice"]

CACHE_FORMAT = "candidates"
# Bumped whenever what a cache holds, or how ranks and scores are computed, changes: an older cache is refused.
CACHE_VERSION = 1
ITEMS_FILE, SCORES_FILE = "item_rows.npy", "scores.npy"


def window_slice(window: Window, lo: int, hi: int) -> Window:
    """Ranks ``lo..hi`` of a window holding ranks ``window.lo..``: the window retrieval would return
    for ``lo:hi`` (ranks are canonical, so they do not depend on the window asked for)."""
    start, stop = lo - window.lo, hi - window.lo + 1
    if start < 0 or stop > window.width:
        raise ValueError(f"ranks {lo}:{hi} are outside the window's {window.lo}:{window.lo + window.width - 1}")
    return Window(items=window.items[:, start:stop], scores=window.scores[:, start:stop],
                  available=window.available, lo=lo, retrieved=window.retrieved)


def engine_name(spec: IndexSpec) -> str:
    """What decides a cache's candidates: 'exact' for every exact engine (they give the same ranks),
    else the approximate index with its parameters."""
    if spec.kind in ("auto", "flat", "exact"):
        return "exact"
    if spec.kind == "ivf":
        return f"ivf(nlist={spec.nlist},nprobe={spec.nprobe})"
    return f"hnsw(m={spec.hnsw_m},ef_construction={spec.ef_construction},ef_search={spec.ef_search})"


def _ids_bytes(ids: np.ndarray) -> bytes:
    if ids.dtype == object:
        return b"s" + "\x00".join(map(str, ids.tolist())).encode()
    return b"i" + np.ascontiguousarray(ids, dtype=np.int64).tobytes()


class Fingerprint:
    """sha256 over what a cache's candidates depend on; the user vectors are added chunk by chunk
    (in row order, so the digest does not depend on the chunk size)."""

    def __init__(self, user_ids: np.ndarray, item_ids: np.ndarray, item_vectors: np.ndarray, indptr: np.ndarray,
                 item_rows: np.ndarray, metric: str, depth: int, engine: str) -> None:
        head = hashlib.sha256()
        for part in (f"hnmine candidates v{CACHE_VERSION} metric={metric} depth={depth} engine={engine}".encode(),
                     _ids_bytes(user_ids), _ids_bytes(item_ids),
                     np.ascontiguousarray(item_vectors, dtype=np.float32).tobytes(),
                     np.ascontiguousarray(indptr, dtype=np.int64).tobytes(),
                     np.ascontiguousarray(item_rows, dtype=np.int64).tobytes()):
            head.update(len(part).to_bytes(8, "little"))
            head.update(part)
        self.inputs = head.hexdigest()  # everything but the user vectors: checked before any work
        self._users = hashlib.sha256()

    def add_users(self, vectors: np.ndarray) -> None:
        self._users.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())

    def user_vectors(self) -> str:
        return self._users.hexdigest()


class CandidateWriter:
    """Writes the chunks' windows of ranks 1..DEPTH into the cache's matrices (in a staging directory)."""

    def __init__(self, directory: Path, users: int, depth: int) -> None:
        shape = (users, depth)
        self.items = np.lib.format.open_memmap(directory / ITEMS_FILE, mode="w+", dtype=np.int32, shape=shape)
        self.scores = np.lib.format.open_memmap(directory / SCORES_FILE, mode="w+", dtype=np.float32, shape=shape)

    def write(self, window: Window, first_row: int) -> None:
        """One chunk (a window of ranks 1..DEPTH, users from ``first_row``)."""
        if window.lo != 1 or window.width != self.items.shape[1]:
            raise ValueError("a candidate cache holds ranks 1..DEPTH")
        stop = first_row + len(window.items)
        self.items[first_row:stop] = window.items
        self.scores[first_row:stop] = window.scores

    def close(self) -> None:
        for matrix in (self.items, self.scores):
            matrix.flush()
        del self.items, self.scores


def _refuse(cache: Path, why: str) -> InputError:
    return InputError(f"{cache}: {why}")


class CandidateReader:
    """A published cache, checked against the inputs it is used with, read in consecutive user ranges."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise _refuse(self.dir, "no candidate cache there (write one with hnmine mine --save-candidates DIR)")
        fmt = output_format(self.dir)
        if fmt != CACHE_FORMAT:
            what = "not an hnmine output" if fmt is None else f"hnmine's {fmt} output"
            raise _refuse(self.dir, f"is {what}, not a candidate cache (hnmine mine --save-candidates DIR writes one)")
        entry = json.loads((self.dir / MANIFEST).read_bytes()).get(CACHE_FORMAT, {})
        if entry.get("version") != CACHE_VERSION:
            raise _refuse(self.dir, f"candidate cache version {entry.get('version')} is not this hnmine's "
                                    f"{CACHE_VERSION}; mine again with --save-candidates")
        self.depth: int = int(entry["depth"])
        self.engine: str = str(entry["engine"])
        self.metric: str = str(entry["metric"])
        self.exact: bool = bool(entry["exact"])
        self.precision: str = str(entry.get("precision", "fp32"))
        self.index: str = str(entry.get("index", self.engine))
        self.max_search_depth: int = int(entry.get("max_search_depth", 0))
        self.fingerprint: dict[str, str] = dict(entry["fingerprint"])
        self.users: int = int(entry["users"])
        self._matrices: tuple[np.ndarray, np.ndarray] | None = None

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        matrices = []
        for name, dtype in ((ITEMS_FILE, np.int32), (SCORES_FILE, np.float32)):
            try:
                matrix = np.load(self.dir / name, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise _refuse(self.dir, f"cannot read {name} ({exc}): the cache is damaged") from None
            if matrix.shape != (self.users, self.depth) or matrix.dtype != dtype:
                raise _refuse(self.dir, f"{name} is {matrix.dtype} {matrix.shape}, not {np.dtype(dtype)} "
                                        f"({self.users}, {self.depth}): the cache is damaged")
            matrices.append(matrix)
        return matrices[0], matrices[1]

    def check_options(self, lo: int, hi: int, metric: str) -> None:
        if hi > self.depth:
            raise _refuse(self.dir, f"rank window {lo}:{hi} goes beyond the cached depth {self.depth}; "
                                    f"mine again with --rank-window ..:{hi} --save-candidates")
        if metric != self.metric:
            raise _refuse(self.dir, f"candidates were ranked with --metric {self.metric}, not {metric}")

    def check_inputs(self, fingerprint: Fingerprint, n_users: int) -> None:
        """Refuse a cache made from other embeddings or positives (all but the user vectors)."""
        if n_users != self.users or fingerprint.inputs != self.fingerprint["inputs"]:
            raise _refuse(self.dir, "stale or mismatched candidate cache: it was made from other embeddings, "
                                    "positives or ids than these; mine again with --save-candidates")

    def check_user_vectors(self, fingerprint: Fingerprint) -> None:
        if fingerprint.user_vectors() != self.fingerprint["user_vectors"]:
            raise _refuse(self.dir, "stale or mismatched candidate cache: it was made from other user vectors "
                                    "than these; mine again with --save-candidates")

    def window(self, first_row: int, stop: int, available: np.ndarray, lo: int, hi: int) -> Window:
        """Ranks ``lo..hi`` of user rows ``first_row..stop-1``."""
        if self._matrices is None:
            self._matrices = self._open()
        items, scores = self._matrices
        window = window_slice(Window(items=items[first_row:stop], scores=scores[first_row:stop],
                                     available=available, lo=1), lo, hi)
        # only the window's ranks are read and copied (the selection reads item rows as int64)
        return replace(window, items=window.items.astype(np.int64), scores=np.ascontiguousarray(window.scores))


def cache_entry(fingerprint: Fingerprint, depth: int, engine: str, metric: str, exact: bool, precision: str,
                index: str, max_search_depth: int, users: int) -> dict[str, Any]:
    """The ``candidates`` entry of a cache's manifest."""
    return {"version": CACHE_VERSION, "depth": depth, "engine": engine, "metric": metric, "exact": exact,
            "precision": precision, "index": index, "max_search_depth": max_search_depth, "users": users,
            "ranks": "item_rows[j] is rank j + 1 among the user's non-positive items; -1 / -inf past the catalog",
            "fingerprint": {"inputs": fingerprint.inputs, "user_vectors": fingerprint.user_vectors()}}
