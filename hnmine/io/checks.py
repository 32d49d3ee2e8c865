"""Value checks shared by the readers and the option validators: safe ids, finite numbers.

Every id hnmine publishes goes into line- and TAB-based text (the GraphLearn tables) and into tools
that split lines on more than ``\\n``: Python's ``str.splitlines`` also breaks on VT, FF, FS/GS/RS
(``\\x1c``-``\\x1e``), NEL (U+0085), U+2028 and U+2029, and C readers stop at NUL. So an id must be
non-empty and hold none of those characters, nor TAB; :func:`check_ids` refuses anything else where
the id is read, naming the file, the row and the column. :class:`ScoreRange` refuses vectors whose
inner products could overflow float32, so every published number is finite (the option validators'
check, :func:`hnmine.options.check_finite_options`, lives with the options).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import numpy as np
import polars as pl
import pyarrow as pa

from hnmine.errors import InputError

__all__ = ["FLOAT32_MAX", "SCORE_LIMIT", "UNSAFE_ID_CHARS", "ScoreRange", "check_ids", "row_norms"]

FLOAT32_MAX = float(np.finfo(np.float32).max)
# A quarter of float32's range: a score, its rounding margins (retrieval adds a few ulps times the
# norms) and the softmax/variance arithmetic on it then stay finite.
SCORE_LIMIT = 2.0**126

UNSAFE_ID_CHARS: dict[str, str] = {
    "\x00": "NUL",
    "\t": "TAB",
    "\n": "a newline (LF)",
    "\x0b": "VT (U+000B)",
    "\x0c": "FF (U+000C)",
    "\r": "CR",
    "\x1c": "FS (U+001C)",
    "\x1d": "GS (U+001D)",
    "\x1e": "RS (U+001E)",
    "\x85": "NEL (U+0085)",
    "\u2028": "LINE SEPARATOR (U+2028)",
    "\u2029": "PARAGRAPH SEPARATOR (U+2029)",
}
_UNSAFE_PATTERN = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in UNSAFE_ID_CHARS) + "]"


def _shown(value: str, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def check_ids(ids: pl.Series | np.ndarray | pa.Array | pa.ChunkedArray, where: str, column: str,
              first_row: int = 0, locate: Callable[[int], str] | None = None) -> None:
    """Refuse null, empty and text-unsafe ids; integer ids pass untouched.

    ``where`` is the input file, ``column`` its id column, ``first_row`` the file row of ``ids[0]``;
    ``locate`` (text readers) turns a row index into the file's own position, such as ``line 7``.
    """
    def refuse(row: int, what: str) -> NoReturn:
        if locate is not None:
            raise InputError(f"{where}: {locate(row)}: column '{column}' {what}")
        raise InputError(f"{where}: column '{column}' at row {first_row + row}: {what}")

    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = pl.Series(ids)
    elif isinstance(ids, np.ndarray):
        if ids.dtype != object and ids.dtype.kind not in "US":
            return
        ids = pl.Series(ids.tolist(), dtype=pl.String)
    if ids.dtype != pl.String:
        if ids.dtype.is_integer() and not ids.null_count():
            return
        ids = ids.cast(pl.String)
    nulls = ids.is_null()
    if nulls.any():
        refuse(int(nulls.arg_true()[0]), "has a null id")
    empty = ids.str.len_bytes() == 0
    if empty.any():
        refuse(int(empty.arg_true()[0]), "has an empty id")
    unsafe = ids.str.contains(_UNSAFE_PATTERN)
    if unsafe.any():
        row = int(unsafe.arg_true()[0])
        value = ids[row]
        char = next(c for c in value if c in UNSAFE_ID_CHARS)
        refuse(row, f"has id {_shown(value)}, which contains {UNSAFE_ID_CHARS[char]} (line-based readers of the text "
                    "tables split on it); ids must not hold NUL, TAB, line or record separators")


def row_norms(vectors: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """Euclidean norm of each row, computed in float64 block by block (no float32 overflow, no full copy)."""
    out = np.empty(len(vectors), dtype=np.float64)
    for start in range(0, len(vectors), block):
        part = vectors[start : start + block].astype(np.float64)
        out[start : start + block] = np.sqrt(np.einsum("ij,ij->i", part, part))
    return out


class ScoreRange:
    """Refuses user vectors whose score with some item could overflow float32.

    By Cauchy-Schwarz, |u.v| <= |u| |v|, and so is every partial sum of the dot product, whatever the
    summation order; a user whose norm times the largest item norm stays under :data:`SCORE_LIMIT`
    therefore gets finite scores from every kernel. Checking the norms up front is exact about what
    it promises and costs one pass over the vectors, where detecting NaN or -inf scores after the
    search would have to tell them from the window's empty slots.
    """

    def __init__(self, item_vectors: np.ndarray, item_ids: np.ndarray, items_source: str) -> None:
        norms = row_norms(item_vectors)
        self.item_row = int(np.argmax(norms)) if len(norms) else 0
        self.item_norm = float(norms[self.item_row]) if len(norms) else 0.0
        self.item_id = item_ids[self.item_row] if len(item_ids) else None
        self.items_source = items_source

    def check(self, vectors: np.ndarray, ids: np.ndarray, first_row: int, source: str, column: str) -> None:
        if self.item_norm == 0.0:
            return
        norms = row_norms(vectors)
        over = np.flatnonzero(norms * self.item_norm >= SCORE_LIMIT)
        if over.size:
            row = int(over[0])
            raise InputError(
                f"{source}: column '{column}' at row {first_row + row} (id {ids[row]}): vector norm {norms[row]:.3g} "
                f"times the norm {self.item_norm:.3g} of item {self.item_id} ({self.items_source} row {self.item_row}) "
                f"reaches {SCORE_LIMIT:.3g}: their scores could overflow float32; scale the embeddings down")
