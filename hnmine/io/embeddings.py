"""Stage 1, input: user and item embeddings from parquet (one file or a directory) or ``.npy``.

Parquet tables have an id column (int64 or string) and a vector column: a fixed-size list or list of
float, or a string of comma-separated numbers (TorchEasyRec's predict output writes either form, in a
directory of ``part-N.parquet`` files). A ``.npy`` matrix comes with an ids file (``.npy``,
``.parquet`` or text, one id a line).
Everything is validated on the way in; any defect raises :class:`InputError` naming the file, the
row and the column, so a bad export never turns into silently wrong negatives.

Users are streamed: :meth:`EmbeddingSource.read_ids` reads only the id column, and
:meth:`EmbeddingSource.iter_chunks` yields validated vector chunks, so memory does not grow with
the number of users. Items are read whole (:func:`read_embeddings`): the index needs them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hnmine.errors import InputError, reading
from hnmine.io.checks import check_ids
from hnmine.io.publish import Publication
from hnmine.io.storage import LocalCopy, join, reworded
from hnmine.options import column_pair

__all__ = ["EmbeddingSource", "Embeddings", "normalize_rows", "read_embedding_pair", "read_embeddings"]


@dataclass
class Embeddings:
    """Ids and their vectors, row-aligned. ``vectors`` is float32, C-contiguous, shape (n, d)."""

    ids: np.ndarray
    vectors: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows (for cosine similarity); zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _list_parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise InputError(f"{path}: directory contains no .parquet files")
        return files
    return [path]


def _plain_numpy(array: pa.Array, dtype: Any) -> np.ndarray:
    """A view of a null-free numeric Arrow array. ``Array.to_numpy`` would do the same but imports pandas
    when it is installed (about 0.3 s of every run's start)."""
    width = np.dtype(dtype).itemsize
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * width)


def _ids_to_numpy(column: pa.ChunkedArray | pa.Array, where: str, id_column: str) -> np.ndarray:
    """Arrow id column to int64 or str numpy, rejecting nulls and other types."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        row = int(pc.index(pc.is_null(column), True).as_py())
        raise InputError(f"{where}: column '{id_column}' has a null id at row {row}")
    kind = column.type
    if pa.types.is_integer(kind):
        # uint64 ids are accepted while every value fits int64 (the type of every output id column)
        if pa.types.is_uint64(kind) and len(column) and pc.max(column).as_py() > np.iinfo(np.int64).max:
            row = int(pc.index(pc.greater(column, pa.scalar(np.iinfo(np.int64).max, pa.uint64())), True).as_py())
            raise InputError(f"{where}: column '{id_column}' has id {column[row].as_py()} at row {row}, beyond the "
                             "int64 range; ids must fit int64 or be strings")
        return _plain_numpy(column.cast(pa.int64()), np.int64).copy()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.asarray(column.to_pylist(), dtype=object)
    raise InputError(f"{where}: column '{id_column}' has type {kind}; ids must be integers or strings")


def _vectors_to_numpy(
    column: pa.ChunkedArray | pa.Array, where: str, vector_column: str, first_row: int, ids: np.ndarray
) -> np.ndarray:
    """Arrow list column to a float32 (n, d) matrix, rejecting nulls, ragged rows, NaN and inf."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        row = int(pc.index(pc.is_null(column), True).as_py())
        raise InputError(f"{where}: column '{vector_column}' is null at row {first_row + row} (id {ids[row]})")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = _parse_vector_text(column, where, vector_column, first_row, ids)
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise InputError(
            f"{where}: column '{vector_column}' has type {kind}; expected a list of floats or comma-separated numbers"
        )
    value_type = kind.value_type
    if pa.types.is_list(value_type) or pa.types.is_large_list(value_type) or pa.types.is_fixed_size_list(value_type):
        raise InputError(f"{where}: column '{vector_column}' holds lists of vectors (multi-interest user embeddings, "
                         "as MIND's); hnmine ranks with one vector per user")
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise InputError(
            f"{where}: column '{vector_column}' holds {value_type}; expected a list of floats"
        )
    n = len(column)
    if pa.types.is_fixed_size_list(kind):
        dim = kind.list_size
        values = column.flatten()
    else:
        lengths = _plain_numpy(pc.list_value_length(column), np.int32)
        dim = int(lengths[0]) if n else 0
        bad = np.flatnonzero(lengths != dim)
        if bad.size:
            row = int(bad[0])
            raise InputError(
                f"{where}: column '{vector_column}' has length {int(lengths[row])} at row "
                f"{first_row + row} (id {ids[row]}) but {dim} at row {first_row}; vectors must all "
                "have the same length"
            )
        values = pc.list_flatten(column)
    if values.null_count:
        flat = int(pc.index(pc.is_null(values), True).as_py())
        row = flat // max(dim, 1)
        raise InputError(f"{where}: column '{vector_column}' has a null value at row {first_row + row} (id {ids[row]})")
    if dim == 0:
        raise InputError(f"{where}: column '{vector_column}' has empty vectors")
    matrix = np.ascontiguousarray(_plain_numpy(values, values.type.to_pandas_dtype()).reshape(n, dim), dtype=np.float32)
    _check_finite(matrix, where, vector_column, first_row, ids)
    return matrix


# One number as text: what float() reads, inf and nan included (they are refused with their row afterwards).
_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)$"


def _parse_vector_text(column: pa.Array, where: str, vector_column: str, first_row: int,
                       ids: np.ndarray) -> pa.Array:
    """``"0.12,-0.5,..."`` strings to a list<float32> column; a value that is not a number names its row."""
    if len(column) and pc.any(pc.match_substring(column, ";")).as_py():
        row = int(pc.index(pc.match_substring(column, ";"), True).as_py())
        raise InputError(f"{where}: column '{vector_column}' holds several vectors at row {first_row + row} "
                         f"(id {ids[row]}; ';'-separated, as MIND's multi-interest output); hnmine ranks with one "
                         "vector per user")
    parts = pc.split_pattern(pc.utf8_trim_whitespace(column), ",")
    values = pc.utf8_trim_whitespace(pc.list_flatten(parts))
    numeric = pc.match_substring_regex(values, _NUMBER, ignore_case=True)
    if len(values) and not pc.all(numeric).as_py():
        flat = int(pc.index(numeric, False).as_py())
        row = int(pc.list_parent_indices(parts)[flat].as_py())
        raise InputError(f"{where}: column '{vector_column}' has '{values[flat].as_py()[:40]}' at row "
                         f"{first_row + row} (id {ids[row]}), not a number; expected comma-separated numbers")
    lengths = _plain_numpy(pc.list_value_length(parts), np.int32)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    # parsed straight to float32: the shortest decimal form of a float32 (what writers print) reads back exactly
    return pa.ListArray.from_arrays(pa.array(offsets), pc.cast(values, pa.float32()))


def _check_finite(matrix: np.ndarray, where: str, column: str, first_row: int, ids: np.ndarray) -> None:
    finite = np.isfinite(matrix)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        bad = matrix[row][~finite[row]][0]
        raise InputError(f"{where}: column '{column}' has {bad} at row {first_row + row} (id {ids[row]})")


def _check_unique(ids: np.ndarray, where: str, id_column: str) -> None:
    series = pl.Series("id", ids if ids.dtype != object else ids.tolist())
    duplicated = series.is_duplicated()
    if duplicated.any():
        row = int(duplicated.arg_true()[0])
        raise InputError(f"{where}: column '{id_column}' has duplicate id {ids[row]} (first at row {row})")


_INTEGER = re.compile(r"-?[0-9]+")
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def _read_ids_file(path: Path, id_column: str) -> np.ndarray:
    if not path.exists():
        raise InputError(f"{path}: ids file not found")
    if path.suffix == ".npy":
        with reading(path, "as .npy"):
            ids = np.load(path, allow_pickle=False)
        if ids.ndim != 1:
            raise InputError(f"{path}: ids array must be 1-D, got shape {ids.shape}")
        if ids.dtype.kind in "iu":
            return ids.astype(np.int64)
        if ids.dtype.kind == "U":
            return ids.astype(object)
        raise InputError(f"{path}: ids array has dtype {ids.dtype}; expected integers or strings")
    if path.suffix in (".parquet", ".pq"):
        with reading(path, "as parquet"):
            table = pq.ParquetFile(path).read()  # not pq.read_table: that imports pyarrow.dataset (and pandas)
        if id_column not in table.column_names:
            raise InputError(f"{path}: no column '{id_column}' (columns: {', '.join(table.column_names)})")
        return _ids_to_numpy(table[id_column], str(path), id_column)
    with reading(path, "as text"):
        lines = path.read_text(encoding="utf-8").splitlines()
    if lines and all(_INTEGER.fullmatch(s.strip()) for s in lines if s.strip()):
        for number, text in enumerate(lines, start=1):
            if text.strip() and not _INT64_MIN <= int(text) <= _INT64_MAX:
                raise InputError(f"{path}: line {number}: id {text.strip()} is beyond the int64 range; ids must "
                                 "fit int64 or be strings")
        return np.asarray([int(s) for s in lines if s.strip()], dtype=np.int64)
    return np.asarray([s for s in lines if s.strip()], dtype=object)


class EmbeddingSource:
    """An embedding table on disk: parquet file(s), or ``.npy`` plus an ids file.

    Opening checks existence, columns and types from metadata only; rows are read by
    :meth:`read_ids`, :meth:`iter_chunks` or :meth:`read_all`. A URL (:mod:`hnmine.io.storage`) is read
    from a local copy kept while the source lives; errors name the URL.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        id_column: str = "id",
        vector_column: str = "embedding",
        ids_path: str | Path | None = None,
    ) -> None:
        with reworded():
            self._copies = [LocalCopy(path, "embeddings")]
            if ids_path is not None:
                self._copies.append(LocalCopy(ids_path, "ids file"))
            self._open(self._copies[0].path, id_column, vector_column,
                       self._copies[1].path if ids_path is not None else None)

    def _open(self, path: Path, id_column: str, vector_column: str, ids_path: Path | None) -> None:
        self.path = path
        self.id_column = id_column
        self.vector_column = vector_column
        if not self.path.exists():
            raise InputError(f"{self.path}: file not found")
        self.is_npy = self.path.suffix == ".npy"
        if self.is_npy:
            if ids_path is None:
                raise InputError(f"{self.path}: a .npy embedding matrix needs an ids file (--user-ids/--item-ids)")
            self.ids_path = Path(ids_path)
            with reading(self.path, "as a numeric .npy array"):
                self._matrix = np.load(self.path, mmap_mode="r", allow_pickle=False)
            if self._matrix.ndim != 2 or self._matrix.dtype.kind not in "fiu":
                raise InputError(
                    f"{self.path}: expected a 2-D float array, got shape {self._matrix.shape} dtype {self._matrix.dtype}"
                )
            self.num_rows = int(self._matrix.shape[0])
            self.files: list[Path] = [self.path]
        else:
            self.files = _list_parquet_files(self.path)
            self.num_rows = 0
            for file in self.files:
                with reading(file, "as parquet"):
                    meta = pq.ParquetFile(file)
                    names = meta.schema_arrow.names
                for column in (id_column, vector_column):
                    if column not in names:
                        raise InputError(f"{file}: no column '{column}' (columns: {', '.join(names)})")
                self.num_rows += meta.metadata.num_rows
        if self.num_rows == 0:
            raise InputError(f"{self.path}: embedding table is empty")

    def read_ids(self) -> np.ndarray:
        """All ids in row order (int64 or str), checked for nulls and duplicates."""
        if self.is_npy:
            ids = _read_ids_file(self.ids_path, self.id_column)
            check_ids(ids, str(self.ids_path), self.id_column)
            if len(ids) != self.num_rows:
                raise InputError(
                    f"{self.ids_path}: has {len(ids)} ids but {self.path} has {self.num_rows} rows"
                )
        else:
            parts = []
            for f in self.files:
                with reading(f, "as parquet"):
                    column = pq.ParquetFile(f).read(columns=[self.id_column])[self.id_column]
                parts.append(_ids_to_numpy(column, str(f), self.id_column))
                check_ids(parts[-1], str(f), self.id_column)
            kinds = {p.dtype.kind for p in parts}
            if len(kinds) > 1:
                raise InputError(f"{self.path}: files disagree on the type of column '{self.id_column}'")
            ids = np.concatenate(parts)
        _check_unique(ids, str(self.ids_path if self.is_npy else self.path), self.id_column)
        return ids

    def iter_chunks(self, rows: int, ids: np.ndarray | None = None) -> Iterator[tuple[int, Embeddings]]:
        """Yield ``(first_row, Embeddings)`` chunks of at most ``rows`` rows, each validated."""
        if self.is_npy:
            ids = self.read_ids() if ids is None else ids
            for start in range(0, self.num_rows, rows):
                block = np.ascontiguousarray(self._matrix[start : start + rows], dtype=np.float32)
                _check_finite(block, str(self.path), "vector", start, ids[start : start + rows])
                yield start, Embeddings(ids[start : start + rows], block, str(self.path))
            return
        # Row groups can be small: gather batches into full chunks so FAISS gets many queries per call.
        offset = 0
        pending: list[Embeddings] = []
        pending_rows = 0
        for batch in self._validated_batches(rows):
            pending.append(batch)
            pending_rows += len(batch)
            while pending_rows >= rows:
                chunk, pending = _take_rows(pending, rows)
                pending_rows -= rows
                yield offset, chunk
                offset += rows
        if pending_rows:
            chunk, _ = _take_rows(pending, pending_rows)
            yield offset, chunk

    def _validated_batches(self, rows: int) -> Iterator[Embeddings]:
        for file in self.files:
            file_row = 0
            for batch in _batches(file, rows, [self.id_column, self.vector_column]):
                batch_ids = _ids_to_numpy(batch.column(0), str(file), self.id_column)
                vectors = _vectors_to_numpy(batch.column(1), str(file), self.vector_column, file_row, batch_ids)
                yield Embeddings(batch_ids, vectors, str(file))
                file_row += len(batch_ids)

    def read_all(self) -> Embeddings:
        """The whole table in memory, validated (ids unique, one dimension throughout)."""
        with reworded():
            return self._read_all()

    def _read_all(self) -> Embeddings:
        ids = self.read_ids()
        chunks = [emb.vectors for _, emb in self.iter_chunks(1 << 16, ids=ids)]
        dims = {c.shape[1] for c in chunks}
        if len(dims) > 1:
            raise InputError(f"{self.path}: vectors have different lengths across files: {sorted(dims)}")
        source = self._copies[0].url if self._copies[0].remote else str(self.path)
        return Embeddings(ids, np.ascontiguousarray(np.concatenate(chunks)), source)

    def peek_dim(self) -> int:
        """The vector length, read from the first row."""
        if self.is_npy:
            return int(self._matrix.shape[1])
        # the first row of the first file that has one (a file of a directory may be empty)
        batch = next((b for f in self.files for b in _batches(f, 1, [self.vector_column]) if b.num_rows), None)
        if batch is None:
            raise InputError(f"{self.path}: embedding table is empty")
        kind = batch.schema.field(0).type
        if pa.types.is_fixed_size_list(kind):
            return int(kind.list_size)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            text = batch.column(0)[0].as_py() or ""
            return text.count(",") + 1 if text.strip() else 0
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            raise InputError(f"{self.files[0]}: column '{self.vector_column}' has type {kind}; expected a list of floats")
        return int(pc.list_value_length(batch.column(0))[0].as_py() or 0)


def _batches(file: Path, rows: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Record batches of ``file``; a page that cannot be decoded is an InputError naming the file."""
    with reading(file, "as parquet"):
        yield from pq.ParquetFile(file).iter_batches(batch_size=rows, columns=columns)


def _take_rows(parts: list[Embeddings], rows: int) -> tuple[Embeddings, list[Embeddings]]:
    """The first ``rows`` rows of ``parts`` as one chunk, and what is left."""
    taken: list[Embeddings] = []
    need = rows
    while need:
        head = parts[0]
        if len(head) <= need:
            taken.append(parts.pop(0))
            need -= len(head)
        else:
            taken.append(Embeddings(head.ids[:need], head.vectors[:need], head.source))
            parts[0] = Embeddings(head.ids[need:], head.vectors[need:], head.source)
            need = 0
    if len(taken) == 1:
        return taken[0], parts
    dims = {t.dim for t in taken}
    if len(dims) > 1:
        raise InputError(f"{taken[-1].source}: vectors have length {taken[-1].dim} but earlier rows have {taken[0].dim}")
    return (
        Embeddings(np.concatenate([t.ids for t in taken]), np.concatenate([t.vectors for t in taken]), taken[0].source),
        parts,
    )


def read_embeddings(
    path: str | Path,
    *,
    id_column: str = "id",
    vector_column: str = "embedding",
    ids_path: str | Path | None = None,
) -> Embeddings:
    """Read and validate a whole embedding table (see :class:`EmbeddingSource`)."""
    return EmbeddingSource(path, id_column=id_column, vector_column=vector_column, ids_path=ids_path).read_all()


def read_embedding_pair(users: str | Path, items: str | Path, id_column: str = "id",
                        vector_column: str = "embedding") -> tuple[Embeddings, Embeddings]:
    """The user and item tables of one model, read whole and checked to share a dimension.

    ``id_column`` / ``vector_column`` name both tables' columns, or ``USER,ITEM`` when they differ.
    """
    (user_id, item_id), (user_vector, item_vector) = (column_pair(id_column, "--id-column"),
                                                      column_pair(vector_column, "--vector-column"))
    user_emb = read_embeddings(users, id_column=user_id, vector_column=user_vector)
    item_emb = read_embeddings(items, id_column=item_id, vector_column=item_vector)
    if user_emb.dim != item_emb.dim:
        raise InputError(f"{users}: user vectors have length {user_emb.dim} but {items} has {item_emb.dim}")
    return user_emb, item_emb


def write_embedding_dir(out_dir: str | Path, user_ids: np.ndarray, user_vectors: np.ndarray, item_ids: np.ndarray,
                        item_vectors: np.ndarray, tool: str = "hnmine export") -> tuple[str | Path, str | Path]:
    """Publish ``user.parquet`` and ``item.parquet`` in ``out_dir`` (the input form of ``hnmine mine``).

    The directory is published like a mined output (:class:`hnmine.io.publish.Publication`): both
    tables with a ``manifest.json`` (``format: embeddings``) and ``_SUCCESS``, swapped in at once
    under the directory's lock. A previous embeddings directory is replaced without ``--overwrite``;
    anything hnmine did not write there (other files, a foreign ``user.parquet``) is refused.
    """
    with Publication(out_dir, overwrite=True, fmt="embeddings") as publication, \
            publication.staging_dir() as staging:
        write_embeddings(staging / "user.parquet", user_ids, user_vectors)
        write_embeddings(staging / "item.parquet", item_ids, item_vectors)
        dim = int(np.shape(item_vectors)[1])
        target = publication.commit({"tool": tool, "users": len(user_ids), "items": len(item_ids), "dim": dim})
    return join(target, "user.parquet"), join(target, "item.parquet")


def write_embeddings(path: str | Path, ids: np.ndarray, vectors: np.ndarray, *, id_column: str = "id",
                     vector_column: str = "embedding") -> None:
    """Write ids and vectors as parquet with a fixed-size-list float32 column (hnmine's input form)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    id_array = pa.array(ids.tolist() if np.asarray(ids).dtype == object else np.asarray(ids, dtype=np.int64))
    pq.write_table(pa.table({id_column: id_array, vector_column: column}), path, compression="zstd")
