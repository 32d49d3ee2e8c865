"""Stage 4: the tables the samplers read, as polars DataFrames.

- ``hard_neg_edge`` (user_id, item_id, weight, rank, score): the mined negatives;
- ``pos_edge`` (user_id, item_id, weight): the positives (V2 samplers draw easy negatives from its items);
- ``user`` (id, weight): user nodes, weight 1 (unused by the samplers, but the column must exist);
- ``item`` (id, weight, attrs): item nodes; weight = popularity^b is the easy-negative sampling
  weight of NegativeSampler/HardNegativeSampler; ``attrs`` holds the item's attribute values joined
  by the sampler's ``attr_delimiter``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from hnmine.errors import InputError, reading
from hnmine.io.checks import FLOAT32_MAX, check_ids
from hnmine.io.storage import local_copy
from hnmine.options import EDGE_WEIGHTS, EdgeWeight

__all__ = [
    "EDGE_WEIGHTS",
    "ROW_GROUP_ROWS",
    "ParquetTableWriter",
    "check_text_safe",
    "hard_neg_edge_table",
    "ids_frame",
    "item_attrs",
    "item_node_table",
    "read_hard_negatives",
    "read_item_features",
    "user_bucket_table",
    "user_node_table",
    "write_parquet_table",
]

FORBIDDEN = ("\t", "\n", "\r")


# Every published parquet table is cut into row groups of this many rows, whatever the chunk size
# the rows were produced in: the bytes of a table depend only on its rows.
ROW_GROUP_ROWS = 1 << 17


class ParquetTableWriter:
    """Appends frames to one parquet file in fixed-size row groups (zstd), independent of how rows arrive.

    Rows are buffered until a full row group is available; each row group is written from one
    contiguous arrow chunk, so neither row-group nor page boundaries follow the caller's chunking.
    """

    def __init__(self, path: str | Path, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.path = Path(path)
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        assert self._writer is not None
        if not self._pending:
            return
        table = pa.concat_tables(self._pending).combine_chunks()
        full = table.num_rows if final else table.num_rows - table.num_rows % self.row_group_rows
        for start in range(0, full, self.row_group_rows):
            piece = table.slice(start, min(self.row_group_rows, full - start)).combine_chunks()
            self._writer.write_table(piece, row_group_size=self.row_group_rows)
        rest = table.slice(full)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self, schema: pl.Schema | None = None) -> None:
        """Write the last (partial) row group; a table that never got a row is written empty (``schema`` needed)."""
        if self._writer is None:
            if schema is None:
                raise ValueError(f"{self.path}: no rows written and no schema to write an empty table")
            self.write(pl.DataFrame(schema=schema))
        self._flush(final=True)
        assert self._writer is not None
        self._writer.close()


def write_parquet_table(frame: pl.DataFrame, path: str | Path) -> int:
    """Write a whole table through :class:`ParquetTableWriter`; returns the row count."""
    writer = ParquetTableWriter(path)
    writer.write(frame)
    writer.close()
    return writer.rows


def _ids_series(name: str, ids: np.ndarray) -> pl.Series:
    if ids.dtype == object:
        return pl.Series(name, ids.tolist(), dtype=pl.String)
    return pl.Series(name, ids, dtype=pl.Int64)


def user_bucket_table(user_ids: np.ndarray, buckets: list[str], rank_lo: np.ndarray, rank_hi: np.ndarray) -> pl.DataFrame:
    """user_bucket.parquet's rows (``hnmine mine --adaptive-window``): each user's bucket and the window
    its negatives were drawn from. A side table: the samplers read hard_neg_edge's columns as they are."""
    return pl.DataFrame([_ids_series("user_id", user_ids), pl.Series("bucket", buckets, dtype=pl.String),
                         pl.Series("rank_lo", rank_lo, dtype=pl.Int32), pl.Series("rank_hi", rank_hi, dtype=pl.Int32)])


class ChosenNegatives(Protocol):
    """What :func:`hard_neg_edge_table` reads of a selection (:class:`hnmine.mining.selection.Selection`):
    parallel arrays, one entry per chosen negative. A protocol, so the tables do not import the miner."""

    user: np.ndarray  # user row
    item: np.ndarray  # item row
    column: np.ndarray  # position in the rank window (rank = column + lo)
    score: np.ndarray
    order: np.ndarray  # position in the strategy's preference order


def hard_neg_edge_table(
    selection: ChosenNegatives, user_ids: np.ndarray, item_ids: np.ndarray, lo: int, edge_weight: EdgeWeight = "score"
) -> pl.DataFrame:
    """One row per chosen negative, users in input order, each user's rows in preference order.

    ``weight`` is what GraphLearn sorts by when the consumer takes a user's first
    ``num_hard_sample`` edges: ``score`` (hardest first), ``rank`` (1/rank, hardest first),
    ``order`` (1/(1 + position in the strategy's preference order): the consumer takes the strategy's
    first picks, so taking fewer than were mined keeps the strategy's hardness) or ``uniform`` (1.0 for all; the consumer then mostly keeps file order, i.e. hnmine's preference
    order, but GraphLearn's parallel loading rotates the rows of a few users: docs/torcheasyrec.md).
    """
    rank = (selection.column + lo).astype(np.int32)
    score = selection.score.astype(np.float32)
    if edge_weight == "score":
        weight = score
    elif edge_weight == "rank":
        weight = (1.0 / rank).astype(np.float32)
    elif edge_weight == "order":
        weight = (1.0 / (1.0 + selection.order)).astype(np.float32)
    elif edge_weight == "uniform":
        weight = np.ones(len(rank), dtype=np.float32)
    else:
        raise ValueError(f"edge weight must be one of {EDGE_WEIGHTS}")
    return pl.DataFrame(
        [
            _ids_series("user_id", user_ids[selection.user]),
            _ids_series("item_id", item_ids[selection.item]),
            pl.Series("weight", weight, dtype=pl.Float32),
            pl.Series("rank", rank, dtype=pl.Int32),
            pl.Series("score", score, dtype=pl.Float32),
        ]
    )


def user_node_table(user_ids: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame([_ids_series("id", user_ids), pl.Series("weight", np.ones(len(user_ids)), dtype=pl.Float32)])


def item_node_table(item_ids: np.ndarray, popularity: np.ndarray, pop_exponent: float, attrs: pl.Series,
                    source: str = "items") -> pl.DataFrame:
    """Item nodes with weight = popularity ** pop_exponent (0 ** 0 = 1: b=0 gives uniform weights).

    A weight beyond float32 (a large exponent on a popular item) is refused, naming the item of ``source``.
    """
    with np.errstate(over="ignore"):
        weight = np.power(popularity.astype(np.float64), pop_exponent)
    over = np.flatnonzero(~(weight <= FLOAT32_MAX))
    if over.size:
        row = int(over[np.argmax(popularity[over])])
        raise InputError(
            f"--pop-exponent {pop_exponent}: item {item_ids[row]} ({source} row {row}) has {int(popularity[row])} positives "
            f"and would get weight {weight[row]:.3g}, beyond float32 ({int(over.size)} items); use a smaller exponent")
    return pl.DataFrame(
        [_ids_series("id", item_ids), pl.Series("weight", weight, dtype=pl.Float32), attrs.alias("attrs")]
    )


def check_text_safe(values: pl.Series, where: str, delimiter: str | None = None, ids: pl.Series | None = None) -> None:
    """Reject values the GraphLearn text form cannot carry: TAB, newline, CR (and the attr delimiter)."""
    forbidden = FORBIDDEN + ((delimiter,) if delimiter else ())
    for char in forbidden:
        hit = values.str.contains(char, literal=True).fill_null(False)
        if hit.any():
            row = int(hit.arg_true()[0])
            label = f"id {ids[row]}" if ids is not None else f"row {row}"
            what = "the attr delimiter" if char == delimiter else repr(char)
            raise InputError(f"{where}: value {values[row]!r} ({label}) contains {what}, which the GraphLearn text form cannot hold")


def read_item_features(path: str | Path, id_column: str) -> pl.DataFrame:
    """Item feature table (parquet or CSV) with an id column and one column per attribute."""
    with local_copy(path, "item features") as local:
        return _read_item_features(local, id_column)


def _read_item_features(path: Path, id_column: str) -> pl.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    with reading(path, "item features"):
        if path.suffix in (".csv", ".tsv"):
            table = pl.read_csv(path, separator="\t" if path.suffix == ".tsv" else ",", infer_schema=False)
        else:
            table = pl.read_parquet(path)
    if id_column not in table.columns:
        raise InputError(f"{path}: no column '{id_column}' (columns: {', '.join(table.columns)})")
    check_ids(table[id_column], str(path), id_column)
    duplicated = table[id_column].is_duplicated()
    if duplicated.any():
        raise InputError(f"{path}: column '{id_column}' has duplicate id {table[id_column][int(duplicated.arg_true()[0])]}")
    return table


def item_attrs(
    item_ids: np.ndarray,
    features: pl.DataFrame | None,
    *,
    id_column: str = "id",
    attr_columns: list[str] | None = None,
    delimiter: str = "\x02",
    source: str = "item features",
    missing: str = "fill",
    items_source: str = "items",
) -> tuple[pl.Series, list[str], int]:
    """The ``attrs`` string per item, in item order; returns (attrs, attr fields, items without features).

    Without a feature table each item's attrs is its id (pair it with ``attr_fields: "item_id"``).
    Missing values and items absent from the table get empty values, never a missing field: the
    consumer rejects a row whose attr count differs from its ``attr_fields``. The id column itself
    is different: TorchEasyRec takes a negative's item id from the attrs, and an empty value there
    becomes a null item id. So with ``missing="fill"`` an item absent from the table gets its node id
    as the id attr; with ``missing="error"`` an absent item is refused.
    """
    ids = _ids_series("id", item_ids)
    if features is None:
        attrs = ids.cast(pl.String)
        check_text_safe(attrs, f"{source}: item id", delimiter)
        return attrs.alias("attrs"), ["item_id"], 0
    columns = attr_columns or [c for c in features.columns if c != id_column]
    for column in columns:
        if column not in features.columns:
            raise InputError(f"{source}: no column '{column}' (columns: {', '.join(features.columns)})")
    if not columns:
        raise InputError(f"{source}: no attribute columns besides '{id_column}'")
    # The join key gets a private name: the id column may itself be an attr (TorchEasyRec configs list
    # the item id in attr_fields), and an attr column may be called "id".
    key, present = "__hnmine_item_key__", "__hnmine_present__"
    keyed = features.select(pl.col(id_column).cast(ids.dtype, strict=False).alias(key), *columns)
    for column in columns:
        as_text = keyed[column].cast(pl.String)
        check_text_safe(as_text, f"{source}: column '{column}'", delimiter, keyed[key])
    joined = pl.DataFrame([ids.alias(key)]).join(keyed.with_columns(pl.lit(True).alias(present)), on=key,
                                                 how="left", maintain_order="left")
    absent = joined[present].is_null()
    without = int(absent.sum())
    if without and missing == "error":
        row = int(absent.arg_true()[0])
        raise InputError(
            f"{source}: no feature row for item {ids[row]} ({items_source} row {row}), nor for {without - 1} more of the "
            f"{len(ids)} items; add them, or pass --missing-item-features fill")

    def value(column: str) -> pl.Expr:
        text = pl.col(column).cast(pl.String)
        # the node id stands in for an absent item's id attr: the consumer reads it as the item id
        return pl.coalesce(text, pl.col(key).cast(pl.String)) if column == id_column else text.fill_null("")

    attrs = joined.select(pl.concat_str([value(c) for c in columns], separator=delimiter)).to_series()
    if len(columns) == 1:
        # One attr field: an empty value leaves the attrs column empty, which GraphLearn parses as zero
        # attributes and drops the whole item row (only a log line says so). Refuse it instead.
        empty = attrs == ""
        if empty.any():
            row = int(empty.arg_true()[0])
            raise InputError(
                f"{source}: column '{columns[0]}' is the only attr column and item {ids[row]} has an empty value "
                f"({int(empty.sum())} items empty or without a feature row); GraphLearn drops an item whose only "
                "attr is empty, so fill these values or add another attr column")
    return attrs.alias("attrs"), columns, without


def ids_frame(name: str, ids: np.ndarray, row: str) -> pl.DataFrame:
    """Ids (int64 or str) with their row numbers, to join a table's id column onto rows."""
    values = ids.tolist() if ids.dtype == object else ids
    return pl.DataFrame({name: values, row: np.arange(len(ids), dtype=np.int64)})


def read_hard_negatives(
    path: str | Path, user_ids: np.ndarray, item_ids: np.ndarray, num_hard_sample: int
) -> tuple[np.ndarray, int, int]:
    """Per user row, the first ``num_hard_sample`` hard_neg_edge items by weight (descending, file order on ties).

    This is what HardNegativeSampler(V2) gets from GraphLearn's "full" neighbour sampler. Returns
    ((users, num_hard_sample) item rows padded with -1, rows kept, users with any).
    """
    with local_copy(path, "hard negatives") as local:
        return _read_hard_negatives(local, user_ids, item_ids, num_hard_sample)


def _read_hard_negatives(path: Path, user_ids: np.ndarray, item_ids: np.ndarray,
                         num_hard_sample: int) -> tuple[np.ndarray, int, int]:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    with reading(path, "hard negatives"):
        edges = pl.read_parquet(path, columns=["user_id", "item_id", "weight"])
    user_type = pl.String if user_ids.dtype == object else pl.Int64
    item_type = pl.String if item_ids.dtype == object else pl.Int64
    ranked = (
        edges.with_row_index("order")
        .with_columns(pl.col("user_id").cast(user_type, strict=False), pl.col("item_id").cast(item_type, strict=False))
        .sort(["user_id", "weight", "order"], descending=[False, True, False], nulls_last=True)
        .with_columns(pl.int_range(pl.len()).over("user_id").alias("slot"))
        .filter(pl.col("slot") < num_hard_sample)
        .join(ids_frame("user_id", user_ids, "u"), on="user_id")
        .join(ids_frame("item_id", item_ids, "i"), on="item_id")
    )
    hard = np.full((len(user_ids), num_hard_sample), -1, dtype=np.int64)
    hard[ranked["u"].to_numpy(), ranked["slot"].to_numpy()] = ranked["i"].to_numpy()
    return hard, ranked.height, int(ranked["u"].n_unique())
