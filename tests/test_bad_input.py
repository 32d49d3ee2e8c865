"""Bad input: one line on stderr naming the file/row/column, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hnmine.io.embeddings import write_embeddings


def write_table(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture()
def good(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    write_embeddings(tmp_path / "users.parquet", np.arange(20), rng.standard_normal((20, 4)))
    write_embeddings(tmp_path / "items.parquet", np.arange(100, 160), rng.standard_normal((60, 4)))
    (tmp_path / "pos.txt").write_text("\n".join(f"{u} {100 + u} {101 + u}" for u in range(20)) + "\n")
    return {"users": tmp_path / "users.parquet", "items": tmp_path / "items.parquet", "positives": tmp_path / "pos.txt"}


def run_bad(cli, tmp_path: Path, inputs: dict[str, Path], *extra: str) -> str:
    out = tmp_path / "out"
    result = cli("mine", "--users", inputs["users"], "--items", inputs["items"], "--positives", inputs["positives"],
                 "--rank-window", "3:20", "--out", out, "--quiet", *extra)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("hnmine: error: ") and "\n" not in message
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    return message


def vectors_column(rows: list) -> pa.Array:
    return pa.array(rows, type=pa.list_(pa.float32()))


CASES = {
    "missing file": (lambda t, g: {**g, "users": t / "absent.parquet"}, "absent.parquet: file not found"),
    "missing positives file": (lambda t, g: {**g, "positives": t / "absent.txt"}, "absent.txt: file not found"),
    "missing id column": (
        lambda t, g: {**g, "items": write_table(t / "i.parquet", {"key": [1, 2], "embedding": vectors_column([[1.0] * 4] * 2)})},
        "i.parquet: no column 'id'",
    ),
    "missing vector column": (
        lambda t, g: {**g, "users": write_table(t / "u.parquet", {"id": [1, 2], "vec": vectors_column([[1.0] * 4] * 2)})},
        "u.parquet: no column 'embedding'",
    ),
    "wrong vector dtype": (
        lambda t, g: {**g, "items": write_table(t / "i.parquet", {"id": [1, 2], "embedding": [True, False]})},
        "column 'embedding' has type bool",
    ),
    "wrong id dtype": (
        lambda t, g: {**g, "items": write_table(t / "i.parquet", {"id": [1.5, 2.5], "embedding": vectors_column([[1.0] * 4] * 2)})},
        "column 'id' has type double",
    ),
    "nan in a vector": (
        lambda t, g: {**g, "items": write_table(t / "i.parquet", {"id": list(range(30)), "embedding": vectors_column(
            [[1.0] * 4] * 7 + [[1.0, float("nan"), 1.0, 1.0]] + [[1.0] * 4] * 22)})},
        "i.parquet: column 'embedding' has nan at row 7 (id 7)",
    ),
    "inf in a user vector": (
        lambda t, g: {**g, "users": write_table(t / "u.parquet", {"id": [0, 1], "embedding": vectors_column(
            [[1.0] * 4, [float("inf"), 0, 0, 0]])})},
        "u.parquet: column 'embedding' has inf at row 1 (id 1)",
    ),
    "ragged vectors": (
        lambda t, g: {**g, "items": write_table(t / "i.parquet", {"id": list(range(30)), "embedding": vectors_column(
            [[1.0] * 4] * 3 + [[1.0] * 3] + [[1.0] * 4] * 26)})},
        "has length 3 at row 3 (id 3) but 4 at row 0",
    ),
    "dimension mismatch": (
        lambda t, g: {**g, "users": _emb(t / "u.parquet", 20, 5)},
        "user vectors have length 5 but",
    ),
    "duplicate ids": (
        lambda t, g: {**g, "items": _emb(t / "i.parquet", 30, 4, ids=np.r_[np.arange(29), 5])},
        "duplicate id 5",
    ),
    "empty embeddings": (
        lambda t, g: {**g, "items": _emb(t / "i.parquet", 0, 4)},
        "i.parquet: embedding table is empty",
    ),
    "empty positives": (
        lambda t, g: {**g, "positives": _text(t / "p.txt", "")},
        "p.txt: positives table is empty",
    ),
    "non-integer id in lightgcn text": (
        lambda t, g: {**g, "positives": _text(t / "p.txt", "1 2 3\n2 x 4\n")},
        "p.txt: line 2: 'x' is not an integer id",
    ),
    "missing positives column": (
        lambda t, g: {**g, "positives": _text(t / "p.csv", "user,item\n1,100\n")},
        "p.csv: no column 'user_id'",
    ),
    "string positives for int ids": (
        lambda t, g: {**g, "positives": _text(t / "p.csv", "user_id,item_id\nalice,100\n")},
        "user id 'alice' is a string but the user embeddings have int64 ids",
    ),
}


def _emb(path: Path, n: int, dim: int, ids: np.ndarray | None = None) -> Path:
    write_embeddings(path, np.arange(n) if ids is None else ids, np.ones((n, dim), dtype=np.float32))
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_cleanly(case, cli, tmp_path, good):
    make, expected = CASES[case]
    message = run_bad(cli, tmp_path, make(tmp_path, good))
    assert expected in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--rank-window", "500:101"), "must satisfy 1 <= LO <= HI"),
        (("--rank-window", "0:10"), "must satisfy 1 <= LO <= HI"),
        (("--rank-window", "abc"), "must be LO:HI"),
        (("--rank-window", "3:61"), "goes beyond the catalog of 60 items"),
        (("--num-hard", "0"), "--num-hard must be at least 1"),
        (("--strategy", "hardest"), "--strategy must be one of"),
        (("--max-score", "high"), "--max-score 'high' is not a number"),
        (("--attr-delimiter", "\\t"), "cannot be TAB"),
        (("--config", "/nonexistent.toml"), "config file not found"),
        (("--adaptive-window", "0"), "--adaptive-window must be at least 1"),
        (("--teacher-items", "t.parquet"), "--teacher-users and --teacher-items go together"),
        (("--teacher-users", "t.parquet", "--teacher-items", "t.parquet", "--teacher-id-column", "a,b,c"),
         "--teacher-id-column"),
    ],
)
def test_bad_options_fail_cleanly(args, expected, cli, tmp_path, good):
    assert expected in run_bad(cli, tmp_path, good, *args)


def test_unknown_config_key(cli, tmp_path, good):
    (tmp_path / "c.toml").write_text('[mine]\nrank_windw = "1:5"\n')
    assert "unknown option(s) rank_windw" in run_bad(cli, tmp_path, good, "--config", str(tmp_path / "c.toml"))


def test_attr_value_with_tab_is_rejected(cli, tmp_path, good):
    (tmp_path / "f.csv").write_text('id,name\n100,"a\tb"\n')
    message = run_bad(cli, tmp_path, good, "--item-features", str(tmp_path / "f.csv"))
    assert "f.csv: column 'name'" in message and "id 100" in message


def test_attr_value_with_delimiter_is_rejected(cli, tmp_path, good):
    (tmp_path / "f.csv").write_text("id,name\n101,a|b\n")
    message = run_bad(cli, tmp_path, good, "--item-features", str(tmp_path / "f.csv"), "--attr-delimiter", "|")
    assert "the attr delimiter" in message


def test_a_teacher_that_misses_ids_fails_cleanly(cli, tmp_path, good):
    """Ids of --users (or --items) the teacher has no vector for: one line naming the teacher's file, an id."""
    rng = np.random.default_rng(1)
    write_embeddings(tmp_path / "t_users.parquet", np.arange(1, 25), rng.standard_normal((24, 3)))  # no user 0
    write_embeddings(tmp_path / "t_items.parquet", np.arange(100, 160), rng.standard_normal((60, 3)))
    teacher = ("--teacher-users", tmp_path / "t_users.parquet", "--teacher-items", tmp_path / "t_items.parquet",
               "--absolute-margin", "0")
    message = run_bad(cli, tmp_path, good, *teacher)
    assert "t_users.parquet: no vector for id '0' of " in message and "(1 of its 20 ids have none)" in message
    write_embeddings(tmp_path / "t_items.parquet", np.arange(101, 160), rng.standard_normal((59, 3)))
    write_embeddings(tmp_path / "t_users.parquet", np.arange(20), rng.standard_normal((20, 3)))
    assert "t_items.parquet: no vector for id '100' of " in run_bad(cli, tmp_path, good, *teacher)
