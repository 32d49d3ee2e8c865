"""Every reader on random, mutated and structurally odd input: a correct result or InputError, never
another exception and never a hang (each example runs under a hard time bound and a deadline).

Readers: embeddings (parquet, .npy matrix and ids files), positives (parquet, CSV, LightGCN text),
item features (parquet, CSV), hard negatives (parquet) and the TOML config of ``hnmine mine``.
"""

from __future__ import annotations

import io
import math
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hnmine.cli.main import app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hnmine.errors import InputError
from hnmine.io.embeddings import EmbeddingSource
from hnmine.io.positives import read_positives
from hnmine.io.tables import read_hard_negatives, read_item_features

INT64_MAX = 2**63 - 1
FUZZ = settings(max_examples=40, deadline=5000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
WORK = Path(tempfile.mkdtemp(prefix="hnmine-fuzz-"))


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Fail an example that runs longer than ``seconds`` (a hang), wherever it is stuck in Python."""

    def expire(signum, frame):
        raise TimeoutError(f"reader ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(read, *args, **kwargs):
    """The reader's result, or None when it refused the input with InputError (one line)."""
    with time_bound(20):
        try:
            return read(*args, **kwargs)
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc)
            return None


def write_bytes(name: str, data: bytes) -> Path:
    path = WORK / name
    path.write_bytes(data)
    return path


def parquet_bytes(table: pa.Table, compression: str = "none") -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=compression)
    return sink.getvalue()


mutations = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=12)


def mutate(data: bytes, edits: list[tuple[float, int]], keep_footer: bool) -> bytes:
    """Overwrite bytes at the given relative positions; with ``keep_footer`` only the data pages."""
    out = bytearray(data)
    end = len(out) - 8 - int.from_bytes(out[-8:-4], "little") if keep_footer else len(out)
    start = 4 if keep_footer else 0
    for where, value in edits:
        out[start + int(where * max(end - start - 1, 0))] = value
    return bytes(out)


def check_embeddings(source: EmbeddingSource | None) -> None:
    if source is None:
        return
    result = outcome(source.read_all)
    if result is not None:
        assert result.vectors.dtype == np.float32 and result.vectors.ndim == 2 and result.vectors.shape[1] >= 1
        assert len(result.ids) == len(result.vectors) > 0
        assert np.isfinite(result.vectors).all()
        assert len(set(result.ids.tolist())) == len(result.ids)


def check_positives(result) -> None:
    if result is None:
        return
    table = result.table
    assert table.height > 0
    for column in ("user_id", "item_id"):
        assert table.schema[column] in (pl.Int64, pl.String)
        assert table[column].null_count() == 0
    weights = table["weight"]
    assert weights.dtype == pl.Float64 and weights.is_finite().all() and (weights >= 0).all()


# ------------------------------------------------------------------------------------------------ parquet

GOOD_EMB = parquet_bytes(pa.table({
    "id": np.arange(30, dtype=np.int64),
    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.linspace(-1, 1, 120, dtype=np.float32)), 4),
}))
GOOD_POS = parquet_bytes(pa.table({"user_id": np.repeat(np.arange(10), 3), "item_id": np.arange(30) % 7}))


@FUZZ
@given(edits=mutations, keep_footer=st.booleans(), truncate=st.integers(0, 64))
def test_embedding_parquet_mutated(edits, keep_footer, truncate):
    data = mutate(GOOD_EMB, edits, keep_footer)
    if not keep_footer and truncate:
        data = data[:-truncate]
    path = write_bytes("emb.parquet", data)
    check_embeddings(outcome(EmbeddingSource, path))


@FUZZ
@given(edits=mutations, keep_footer=st.booleans())
def test_positives_and_features_parquet_mutated(edits, keep_footer):
    path = write_bytes("pos.parquet", mutate(GOOD_POS, edits, keep_footer))
    check_positives(outcome(read_positives, path))
    features = outcome(read_item_features, path, "user_id")
    assert features is None or "user_id" in features.columns
    ids = np.arange(10, dtype=np.int64)
    hard = outcome(read_hard_negatives, path, ids, ids, 3)
    assert hard is None or hard[0].shape == (10, 3)


id_arrays = st.one_of(
    st.lists(st.integers(-(2**63), 2**64 - 1), min_size=0, max_size=8).map(
        lambda v: pa.array(v, pa.uint64()) if v and min(v) >= 0 and max(v) > INT64_MAX
        else pa.array([x if x <= INT64_MAX else x - 2**64 for x in v], pa.int64())),
    st.lists(st.integers(0, 255), max_size=8).map(lambda v: pa.array(v, pa.uint8())),
    st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=8).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.floats(allow_nan=True), max_size=8).map(lambda v: pa.array(v, pa.float64())),
    st.lists(st.booleans(), max_size=8).map(lambda v: pa.array(v, pa.bool_())),
)
vector_rows = st.lists(st.one_of(st.none(), st.lists(st.one_of(st.none(), st.floats(width=32)), max_size=3)),
                       max_size=8)


@FUZZ
@given(ids=id_arrays, rows=vector_rows, vector_kind=st.sampled_from(["list", "fixed", "string", "int"]))
def test_embedding_tables_of_odd_structure(ids, rows, vector_kind):
    n = min(len(ids), len(rows))
    ids, rows = ids[:n], rows[:n]
    if vector_kind == "fixed":
        width = len(rows[0]) if rows and rows[0] else 1
        flat = [((r or []) + [0.0] * width)[:width] for r in rows]
        vectors = pa.FixedSizeListArray.from_arrays(pa.array([x for r in flat for x in r], pa.float32()), width)
    elif vector_kind == "string":
        vectors = pa.array([str(r) for r in rows], pa.string())
    elif vector_kind == "int":
        vectors = pa.array([[int(x) if x is not None and math.isfinite(x) and abs(x) < 1e6 else 0 for x in r]
                            if r is not None else None for r in rows], pa.list_(pa.int32()))
    else:
        vectors = pa.array(rows, pa.list_(pa.float32()))
    path = WORK / "odd.parquet"
    pq.write_table(pa.table({"id": ids, "embedding": vectors}), path)
    check_embeddings(outcome(EmbeddingSource, path))


@FUZZ
@given(users=id_arrays, items=id_arrays)
def test_positives_parquet_of_odd_structure(users, items):
    n = min(len(users), len(items))
    path = WORK / "odd_pos.parquet"
    pq.write_table(pa.table({"user_id": users[:n], "item_id": items[:n]}), path)
    check_positives(outcome(read_positives, path))


# ----------------------------------------------------------------------------------------------- CSV/text

CSV_FIELDS = st.sampled_from(["1", "2", "-3", "+4", " 5", "1.5", "", "abc", "99999999999999999999",
                               "-9223372036854775809", "9223372036854775807", '"a,b"', '"x\ny"', "a\tb", "nan",
                               "inf", "-1", "1e3", "\x00", '"'])
csv_rows = st.lists(st.lists(CSV_FIELDS, min_size=1, max_size=4).map(",".join), max_size=8).map("\n".join)


@FUZZ
@given(body=csv_rows, header=st.sampled_from(["user_id,item_id\n", "user_id,item_id,w\n", "item_id,user_id\n", ""]),
       weighted=st.booleans())
def test_positives_csv(body, header, weighted):
    path = write_bytes("pos.csv", (header + body).encode())
    result = outcome(read_positives, path, weight_column="w" if weighted else None)
    check_positives(result)
    features = outcome(read_item_features, path, "item_id")
    assert features is None or "item_id" in features.columns


@FUZZ
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".tsv", ".txt"]))
def test_positives_text_random_bytes(data, suffix):
    check_positives(outcome(read_positives, write_bytes("pos" + suffix, data)))


def lightgcn_reference(text: str) -> set[tuple[int, int]] | None:
    """What a LightGCN file means: each line ``user item item ...``, any whitespace; None if invalid."""
    pairs = set()
    for line in text.split("\n"):
        tokens = line.split()
        for token in tokens:
            if not token.lstrip("-").isdigit() or token.count("-") > 1 or not -(2**63) <= int(token) <= INT64_MAX:
                return None
        pairs.update((int(tokens[0]), int(item)) for item in tokens[1:])
    return pairs


lightgcn_tokens = st.one_of(st.integers(-(2**63), INT64_MAX).map(str), st.integers(0, 30).map(str),
                            st.sampled_from(["x", "99999999999999999999", "1.5", "--2"]))
lightgcn_lines = st.lists(st.tuples(st.sampled_from(["", " ", "\t"]), st.lists(
    st.tuples(lightgcn_tokens, st.sampled_from([" ", "\t", "  ", " \t "])), max_size=5)), max_size=6)


@FUZZ
@given(lines=lightgcn_lines)
def test_lightgcn_text_matches_a_reference_parser(lines):
    text = "\n".join(lead + "".join(token + sep for token, sep in fields) for lead, fields in lines)
    path = write_bytes("pos.txt", text.encode())
    result = outcome(read_positives, path)
    expected = lightgcn_reference(text)
    if result is None:
        assert expected is None or not expected
    else:
        check_positives(result)
        assert set(result.table.select("user_id", "item_id").iter_rows()) == expected


# -------------------------------------------------------------------------------------------------- npy

def npy_bytes(array: np.ndarray) -> bytes:
    sink = io.BytesIO()
    np.save(sink, array, allow_pickle=False)
    return sink.getvalue()


GOOD_NPY = npy_bytes(np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 4))
GOOD_IDS = npy_bytes(np.arange(10, dtype=np.int64))

arrays = st.sampled_from([
    np.zeros((3, 2), np.float16), np.ones((3, 2), np.complex64), np.zeros((3,), np.float32),
    np.zeros((3, 2, 2), np.float32), np.array([[np.nan, 1.0]] * 3), np.zeros((0, 4), np.float32),
    np.zeros((3, 0), np.float32), np.zeros((3, 2), [("a", np.int8)]), np.array([["a", "b"]] * 3),
    np.ones((3, 2), bool), np.full((3, 2), 2**62, np.int64), np.ones((10, 4), np.float64),
])


@FUZZ
@given(edits=mutations, truncate=st.integers(0, 40), mutate_ids=st.booleans())
def test_npy_mutated(edits, truncate, mutate_ids):
    matrix, ids = GOOD_NPY, GOOD_IDS
    if mutate_ids:
        ids = mutate(ids, edits, keep_footer=False)[: len(ids) - truncate]
    else:
        matrix = mutate(matrix, edits, keep_footer=False)[: len(matrix) - truncate]
    check_embeddings(outcome(EmbeddingSource, write_bytes("m.npy", matrix), ids_path=write_bytes("ids.npy", ids)))


@FUZZ
@given(matrix=arrays, ids=arrays, ids_text=st.lists(st.sampled_from(["1", "2", "-7", "a", " ", "\n", "٣",
                                                                     "99999999999999999999"]), max_size=12))
def test_npy_of_odd_shape_and_type(matrix, ids, ids_text):
    path = write_bytes("m.npy", npy_bytes(matrix))
    check_embeddings(outcome(EmbeddingSource, path, ids_path=write_bytes("ids.npy", npy_bytes(ids))))
    text_ids = write_bytes("ids.txt", "".join(ids_text).encode())
    check_embeddings(outcome(EmbeddingSource, write_bytes("m10.npy", GOOD_NPY), ids_path=text_ids))


# ------------------------------------------------------------------------------------------------- TOML

TOML_PIECES = st.sampled_from([
    "[mine]\n", "num_hard = ", "10", '"ten"', "[1, 2]", "true", "1.5", "\n", "rank-window = ", '"3:20"',
    "formats = ", '["parquet"]', "threads = ", "-1", "{a = 1}", "users = ", '"absent.parquet"', "=", "[",
    "]", '"', "\x00", "\xff", "1979-05-27", "[mine.x]\n", "chunk_size = ", "0", "seed = ", "inf",
])


@FUZZ
@given(pieces=st.lists(TOML_PIECES, max_size=20), raw=st.binary(max_size=40), use_raw=st.booleans())
def test_toml_config(pieces, raw, use_raw):
    data = raw if use_raw else "".join(pieces).encode("utf-8", "surrogateescape")
    path = write_bytes("c.toml", data)
    with time_bound(20):
        result = CliRunner().invoke(app, ["mine", "--config", str(path), "--dry-run"], catch_exceptions=False)
    # the named inputs never exist, so the only outcome is a one-line refusal
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hnmine: error: ")


def test_time_bound_interrupts_a_hang():
    with pytest.raises(TimeoutError), time_bound(0.2):
        while True:
            pass
