"""Stage 1, input: the users' positives (interactions), and their index by embedding row.

Formats: parquet (file or directory), CSV/TSV with a header, and the LightGCN text format used by
../shared/datasets (``user item item ...`` one user a line, fields separated by any whitespace).
Column names are configurable. Errors name the file and where in it: ``line N`` for CSV and
LightGCN text (1-based line of the file, a CSV header is line 1), ``row N`` for parquet (0-based).

:func:`index_positives` maps ids to embedding rows and builds a CSR (per user row, sorted item
rows), which retrieval uses to exclude positives and count ranks among non-positives. Positives
whose user or item has no embedding are counted and reported, never silently dropped.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl

from hnmine.errors import InputError, reading
from hnmine.io.checks import FLOAT32_MAX, check_ids
from hnmine.io.storage import is_url, local_copy, url

__all__ = ["PositiveIndex", "Positives", "detect_format", "index_positives", "read_positives"]

FORMATS = ("auto", "parquet", "csv", "lightgcn")


@dataclass
class Positives:
    """Deduplicated (user_id, item_id, weight) rows, as read."""

    table: pl.DataFrame
    source: str
    rows_read: int
    duplicates: int


def detect_format(path: Path) -> str:
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        return "parquet"
    if path.suffix in (".csv", ".tsv"):
        return "csv"
    if path.suffix == ".txt":
        return "lightgcn"
    raise InputError(f"{path}: cannot tell the positives format from the name; pass --positives-format")


_INT64_MAX = 2**63 - 1


def _read_lightgcn(path: Path) -> pl.DataFrame:
    """``user item item ...`` lines (fields separated by spaces, TABs or any whitespace) to one row per
    (user, item), with the file's 1-based ``line_no``."""
    lines = pl.read_csv(
        path, has_header=False, new_columns=["line"], separator="\x1f", quote_char=None,
        schema_overrides={"line": pl.String},
    )
    tokens = (
        lines.with_row_index("line_no", offset=1)
        .with_columns(pl.col("line").str.extract_all(r"\S+"))
        .filter(pl.col("line").list.len() > 0)
        .select(
            "line_no",
            pl.col("line").list.first().alias("user_id"),
            pl.col("line").list.slice(1).alias("item_id"),
        )
        .explode("item_id")
        .filter(pl.col("item_id").is_not_null() & (pl.col("item_id") != ""))
    )
    casted = tokens.with_columns(
        pl.col("user_id").cast(pl.Int64, strict=False).alias("u"),
        pl.col("item_id").cast(pl.Int64, strict=False).alias("i"),
    )
    bad = casted.filter(pl.col("u").is_null() | pl.col("i").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        value = row["user_id"] if row["u"] is None else row["item_id"]
        what = "is beyond the int64 range" if _looks_integer(value) else "is not an integer id"
        raise InputError(f"{path}: line {row['line_no']}: '{value}' {what}")
    return casted.select(pl.col("u").alias("user_id"), pl.col("i").alias("item_id"), pl.lit(1.0).alias("weight"),
                         "line_no")


def _looks_integer(value: str) -> bool:
    return value.lstrip("+-").isascii() and value.lstrip("+-").isdigit()


def _csv_line(path: Path, row: int, separator: str) -> int:
    """The 1-based line of ``path`` where data row ``row`` (0-based, after the header) starts.

    Only called to word an error: a quoted field may span lines, so the file is scanned as CSV.
    """
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as file:
            reader = csv.reader(file, delimiter=separator)
            start = 1
            for index, _ in enumerate(reader):
                if index == row + 1:
                    return start
                start = reader.line_num + 1
    except (csv.Error, OSError):
        pass
    return row + 2


def _csv_ids(column: pl.Series, name: str, path: Path, locate: Callable[[int], str]) -> pl.Series:
    """A CSV id column read as text: int64 when every value is an integer, else the strings."""
    text = column.str.strip_chars()
    if column.null_count() == len(column) or not text.str.contains(r"^[+-]?[0-9]+$").fill_null(True).all():
        return column
    ints = text.cast(pl.Int64, strict=False)
    over = ints.is_null() & column.is_not_null()
    if over.any():
        row = int(over.arg_true()[0])
        raise InputError(f"{path}: {locate(row)}: column '{name}' has id {text[row]}, beyond the int64 range; ids "
                         "must fit int64 or be strings")
    return ints


def _csv_weights(column: pl.Series, name: str, path: Path, locate: Callable[[int], str]) -> pl.Series:
    weights = column.str.strip_chars().cast(pl.Float64, strict=False)
    bad = weights.is_null() & column.is_not_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise InputError(f"{path}: {locate(row)}: column '{name}' has {column[row]!r}; expected a number")
    return weights


def _may_repeat(table: pl.DataFrame) -> bool:
    """Whether a (user, item) pair may occur twice. Non-negative integer ids that fit 32 bits are
    packed into one int64 and counted (0.07 s for Gowalla's 810k rows, against 0.16–0.33 s for the
    de-duplicating group_by, which then only runs when it has work)."""
    users, items = table["user_id"], table["item_id"]
    if not (users.dtype.is_integer() and items.dtype.is_integer()):
        return True
    # integer columns, non-empty and without nulls (read_positives checks both): their extremes are ints
    if (cast(int, users.min()) < 0 or cast(int, items.min()) < 0
            or cast(int, users.max()) >= 2**31 or cast(int, items.max()) >= 2**32):
        return True
    keys = (users.cast(pl.Int64) * 2**32) + items.cast(pl.Int64)
    return keys.n_unique() != len(keys)


def read_positives(
    path: str | Path,
    *,
    fmt: str = "auto",
    user_column: str = "user_id",
    item_column: str = "item_id",
    weight_column: str | None = None,
) -> Positives:
    """Read interactions into (user_id, item_id, weight), validated and deduplicated.

    A repeated (user, item) pair keeps its largest weight; the count of duplicates is reported.
    ``path`` may be a URL (:mod:`hnmine.io.storage`).
    """
    with local_copy(path, "positives") as local:
        positives = _read_positives(local, fmt, user_column, item_column, weight_column)
    if is_url(path):
        positives.source = url(path)
    return positives


def _read_positives(path: Path, fmt: str, user_column: str, item_column: str,
                    weight_column: str | None) -> Positives:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if fmt not in FORMATS:
        raise InputError(f"unknown positives format '{fmt}' (choose from {', '.join(FORMATS)})")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if path.is_file() and not path.read_bytes()[:4096].strip():
        raise InputError(f"{path}: positives table is empty")
    names = {"user_id": user_column, "item_id": item_column, "weight": weight_column or "weight"}
    separator = "\t" if path.suffix == ".tsv" else ","
    locate: Callable[[int], str] = lambda row: f"row {row}"  # noqa: E731  (parquet; text formats below)
    with reading(path, f"as {fmt}"):
        if fmt == "lightgcn":
            table = _read_lightgcn(path)
            line_numbers = table["line_no"]
            table = table.drop("line_no")
            locate = lambda row: f"line {line_numbers[row]}"  # noqa: E731
        else:
            if fmt == "parquet":
                source = str(path / "**" / "*.parquet") if path.is_dir() else path
                raw = pl.read_parquet(source)
            else:  # read as text and typed here, so a bad value is reported with its line
                raw = pl.read_csv(path, separator=separator, infer_schema=False)
                locate = lambda row: f"line {_csv_line(path, row, separator)}"  # noqa: E731
            wanted = [user_column, item_column] + ([weight_column] if weight_column else [])
            for column in wanted:
                if column not in raw.columns:
                    raise InputError(f"{path}: no column '{column}' (columns: {', '.join(raw.columns)})")
            table = raw.select(
                pl.col(user_column).alias("user_id"),
                pl.col(item_column).alias("item_id"),
                (pl.col(weight_column) if weight_column else pl.lit(1.0)).alias("weight"),
            )
            if fmt == "csv":
                table = table.with_columns(
                    _csv_ids(table["user_id"], user_column, path, locate),
                    _csv_ids(table["item_id"], item_column, path, locate),
                    _csv_weights(table["weight"], names["weight"], path, locate) if weight_column
                    else pl.col("weight"),
                )
    if table.height == 0:
        raise InputError(f"{path}: positives table is empty")
    for column in ("user_id", "item_id"):
        dtype = table.schema[column]
        if not (dtype.is_integer() or dtype == pl.String):
            raise InputError(f"{path}: column '{names[column]}' has type {dtype}; ids must be integers or strings")
        nulls = table[column].is_null()
        if nulls.any():
            raise InputError(f"{path}: {locate(int(nulls.arg_true()[0]))}: column '{names[column]}' is null")
        if dtype.is_integer() and dtype != pl.Int64:  # uint64 ids are accepted while every value fits int64
            over = table[column] > _INT64_MAX if dtype in (pl.UInt64, pl.Int128) else None
            under = table[column] < -_INT64_MAX - 1 if dtype == pl.Int128 else None
            for out_of_range in (over, under):
                if out_of_range is not None and out_of_range.any():
                    row = int(out_of_range.arg_true()[0])
                    raise InputError(f"{path}: {locate(row)}: column '{names[column]}' has id {table[column][row]}, "
                                     "beyond the int64 range; ids must fit int64 or be strings")
            table = table.with_columns(pl.col(column).cast(pl.Int64))
        check_ids(table[column], str(path), names[column], locate=locate)
    if not table.schema["weight"].is_numeric():
        raise InputError(f"{path}: column '{names['weight']}' has type {table.schema['weight']}; expected numbers")
    table = table.with_columns(pl.col("weight").cast(pl.Float64))
    weights = table["weight"]
    bad = weights.is_null() | ~weights.is_finite() | (weights < 0) | (weights > FLOAT32_MAX)  # pos_edge is float32
    if bad.any():
        row = int(bad.arg_true()[0])
        raise InputError(f"{path}: {locate(row)}: column '{names['weight']}' has invalid weight {weights[row]}")
    rows_read = table.height
    if _may_repeat(table):
        table = table.group_by("user_id", "item_id", maintain_order=True).agg(pl.col("weight").max())
    return Positives(table=table, source=str(path), rows_read=rows_read, duplicates=rows_read - table.height)


def _align_ids(column: pl.Series, ids: np.ndarray, what: str, source: str) -> pl.Series:
    """Cast the positives' id column to the embedding ids' type, or fail naming both."""
    want_str = ids.dtype == object
    if want_str and column.dtype != pl.String:
        return column.cast(pl.String)
    if not want_str and column.dtype == pl.String:
        cast = column.cast(pl.Int64, strict=False)
        if cast.null_count():
            bad = column.filter(cast.is_null())[0]
            raise InputError(f"{source}: {what} id '{bad}' is a string but the {what} embeddings have int64 ids")
        return cast
    return column.cast(pl.Int64) if not want_str else column


@dataclass
class PositiveIndex:
    """Positives keyed by embedding row: CSR over user rows with sorted item rows.

    ``pos_edge`` holds the resolvable pairs as ids (what the samplers read); ``item_counts`` is the
    number of distinct users per item row (popularity).
    """

    indptr: np.ndarray
    item_rows: np.ndarray
    pos_edge: pl.DataFrame
    item_counts: np.ndarray
    unknown_user_rows: int
    unknown_item_rows: int
    unknown_users: int
    unknown_items: int

    def counts(self, start: int, stop: int) -> np.ndarray:
        return np.diff(self.indptr[start : stop + 1])

    def slice(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """CSR (local indptr, item rows) for user rows ``start:stop``."""
        ptr = self.indptr[start : stop + 1]
        return ptr - ptr[0], self.item_rows[ptr[0] : ptr[-1]]


def index_positives(positives: Positives, user_ids: np.ndarray, item_ids: np.ndarray) -> PositiveIndex:
    """Map positives to embedding rows; count those whose user or item has no embedding."""
    table = positives.table.with_columns(
        _align_ids(positives.table["user_id"], user_ids, "user", positives.source),
        _align_ids(positives.table["item_id"], item_ids, "item", positives.source),
    )
    users = pl.DataFrame({"user_id": user_ids.tolist() if user_ids.dtype == object else user_ids,
                          "user_row": np.arange(len(user_ids), dtype=np.int64)})
    items = pl.DataFrame({"item_id": item_ids.tolist() if item_ids.dtype == object else item_ids,
                          "item_row": np.arange(len(item_ids), dtype=np.int64)})
    joined = table.join(users, on="user_id", how="left").join(items, on="item_id", how="left")
    missing_user = joined["user_row"].is_null()
    missing_item = joined["item_row"].is_null()
    known = joined.filter(~missing_user & ~missing_item).sort("user_row", "item_row")
    user_rows = known["user_row"].to_numpy()
    indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_rows, minlength=len(user_ids)), out=indptr[1:])
    item_counts = np.bincount(
        joined.filter(~missing_item)["item_row"].to_numpy(), minlength=len(item_ids)
    ).astype(np.int64)
    return PositiveIndex(
        indptr=indptr,
        item_rows=known["item_row"].to_numpy().astype(np.int32),
        pos_edge=known.select("user_id", "item_id", "weight"),
        item_counts=item_counts,
        unknown_user_rows=int(missing_user.sum()),
        unknown_item_rows=int(missing_item.sum()),
        unknown_users=int(joined.filter(missing_user)["user_id"].n_unique()),
        unknown_items=int(joined.filter(missing_item)["item_id"].n_unique()),
    )


def csr_rows(indptr: np.ndarray, items: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR of user ``rows`` only: (local indptr, int32 item rows sorted within each user), the form
    :func:`hnmine.mining.retrieval.retrieve_window` takes a chunk's positives in."""
    counts = np.diff(indptr)[rows]
    local = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=local[1:])
    owner = np.repeat(np.arange(len(rows)), counts)
    picked = items[np.repeat(indptr[rows] - local[:-1], counts) + np.arange(local[-1])].astype(np.int32)
    return local, picked[np.lexsort((picked, owner))]
