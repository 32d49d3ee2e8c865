"""The GraphLearn text form of the four tables, exactly as the samplers' local loader reads it.

One plain-text file per table; first line a header of ``name:type`` fields joined by TAB; then
one row per line, fields joined by TAB. GraphLearn drops a row with the wrong number of fields
without a word, so every string value is checked before it is written (see
:func:`hnmine.io.tables.check_text_safe`) and nothing is ever quoted or escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import polars as pl

from hnmine.io.tables import check_text_safe

__all__ = ["TABLE_COLUMNS", "TextTableWriter", "header", "write_text_table"]

# Columns, in the order the loader expects, and the header names hnmine writes.
TABLE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "item": [("id", "id"), ("weight", "weight"), ("attrs", "attrs")],
    "user": [("id", "id"), ("weight", "weight")],
    "pos_edge": [("user_id", "userid"), ("item_id", "itemid"), ("weight", "weight")],
    "hard_neg_edge": [("user_id", "userid"), ("item_id", "itemid"), ("weight", "weight")],
}


def _type_name(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "int64"
    if dtype.is_float():
        return "float"
    if dtype == pl.String:
        return "string"
    raise TypeError(f"no GraphLearn type for {dtype}")


def header(table: str, schema: pl.Schema) -> str:
    """``name:type`` fields joined by TAB, e.g. ``userid:int64<TAB>itemid:int64<TAB>weight:float``."""
    return "\t".join(f"{name}:{_type_name(schema[column])}" for column, name in TABLE_COLUMNS[table])


class TextTableWriter:
    """Appends chunks of one table to its GraphLearn text file, header first."""

    def __init__(self, path: str | Path, table: str) -> None:
        self.path = Path(path)
        self.table = table
        self.columns = [column for column, _ in TABLE_COLUMNS[table]]
        self._file: IO[bytes] | None = None
        self.rows = 0

    def write(self, frame: pl.DataFrame) -> None:
        frame = frame.select(self.columns)
        for column, dtype in frame.schema.items():
            if dtype == pl.String:
                check_text_safe(frame[column], f"{self.table}.{column}")
        if self._file is None:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            self._file.write((header(self.table, frame.schema) + "\n").encode())
        if frame.height:
            frame.write_csv(self._file, include_header=False, separator="\t", quote_style="never")
        self.rows += frame.height

    def close(self, schema: pl.Schema | None = None) -> None:
        """Close the file; a table that never got a row still gets its header (``schema`` needed)."""
        if self._file is None:
            if schema is None:
                raise ValueError(f"{self.table}: no rows written and no schema to write a header")
            self.write(pl.DataFrame(schema=schema))
        assert self._file is not None
        self._file.close()


def write_text_table(frame: pl.DataFrame, path: str | Path, table: str) -> int:
    """Write a whole table in GraphLearn text form; returns the row count."""
    writer = TextTableWriter(path, table)
    writer.write(frame)
    writer.close()
    return writer.rows
