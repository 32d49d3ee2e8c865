"""No bad value reaches a published table: every number finite, every id non-empty and text-safe.

Each case runs ``hnmine mine`` through the CLI on a slice of sample_data (its first 200 users, all
30,336 items, SVD embeddings) and expects exit 2, one ``hnmine: error:`` line naming the input
file, row and column (or the option), and nothing published.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import SAMPLE

USERS = 200


@pytest.fixture(scope="module")
def inputs(sample_embeddings, tmp_path_factory) -> dict[str, Path]:
    user_path, item_path = sample_embeddings
    root = tmp_path_factory.mktemp("values")
    users = pq.read_table(user_path).slice(0, USERS)
    pq.write_table(users, root / "users.parquet")
    keep = set(users["id"].to_pylist())
    lines = [line for line in (SAMPLE / "train.txt").read_text().splitlines() if int(line.split()[0]) in keep]
    (root / "pos.txt").write_text("\n".join(lines) + "\n")
    return {"users": root / "users.parquet", "items": Path(item_path), "positives": root / "pos.txt"}


def mine(cli, out: Path, inputs: dict[str, Path], *extra: str | Path):
    return cli("mine", "--users", inputs["users"], "--items", inputs["items"], "--positives", inputs["positives"],
               "--rank-window", "3:20", "--num-hard", "4", "--out", out, "--quiet", *extra)


def refused(cli, tmp_path: Path, inputs: dict[str, Path], *extra: str | Path) -> str:
    out = tmp_path / "out"
    result = mine(cli, out, inputs, *extra)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("hnmine: error: ") and "\n" not in message, message
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    return message


def published(cli, tmp_path: Path, inputs: dict[str, Path], *extra: str | Path) -> Path:
    out = tmp_path / "out"
    result = mine(cli, out, inputs, *extra)
    assert result.exit_code == 0, result.output
    assert (out / "_SUCCESS").exists()
    return out


def rewrite_vectors(source: Path, target: Path, scale_row: int, factor: float) -> Path:
    table = pq.read_table(source)
    vectors = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    vectors[scale_row] *= np.float32(factor)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    pq.write_table(pa.table({"id": table["id"], "embedding": column}), target)
    return target


# --------------------------------------------------------------------------- numbers


def test_scores_that_would_overflow_float32_are_refused(cli, tmp_path, inputs):
    """Finite vectors, norms ~1e20 each: their inner product (~1e40) is beyond float32 and came out as
    NaN and -inf weights in hard_neg_edge."""
    users = rewrite_vectors(inputs["users"], tmp_path / "big_users.parquet", 7, 1e20)
    items = rewrite_vectors(inputs["items"], tmp_path / "big_items.parquet", 3, 1e20)
    user_id = pq.read_table(users)["id"][7].as_py()
    item_id = pq.read_table(items)["id"][3].as_py()
    message = refused(cli, tmp_path, {**inputs, "users": users, "items": items})
    assert f"big_users.parquet: column 'embedding' at row 7 (id {user_id})" in message
    assert f"item {item_id} ({items} row 3)" in message and "overflow float32" in message


def test_large_but_safe_norms_still_publish(cli, tmp_path, inputs):
    """The bound refuses only what could overflow: norms of 1e15 and 1e15 (scores ~1e30) publish, finite."""
    users = rewrite_vectors(inputs["users"], tmp_path / "u.parquet", 7, 1e15)
    items = rewrite_vectors(inputs["items"], tmp_path / "i.parquet", 3, 1e15)
    out = published(cli, tmp_path, {**inputs, "users": users, "items": items})
    hard = pl.read_parquet(out / "hard_neg_edge.parquet")
    assert hard["score"].is_finite().all() and hard["weight"].is_finite().all()


@pytest.mark.parametrize(("option", "value"), [
    ("--max-score", "nan"), ("--min-score", "-inf"), ("--absolute-margin", "nan"), ("--relative-margin", "inf"),
    ("--temperature", "nan"), ("--rho", "inf"), ("--pop-exponent", "inf"), ("--pop-exponent", "nan"),
])
def test_non_finite_options_are_refused(cli, tmp_path, inputs, option, value):
    message = refused(cli, tmp_path, inputs, option, value)
    assert f"{option} {float(value)} is not a finite number" in message


@pytest.mark.parametrize(("option", "value"), [("--lr", "nan"), ("--pop-exponent", "inf"), ("--relative-margin", "nan"),
                                               ("--refine-lr", "inf"), ("--hard-offset", "nan")])
def test_non_finite_run_options_are_refused(cli, tmp_path, option, value):
    out = tmp_path / "run"
    result = cli("run", "--positives", SAMPLE / "train.txt", "--iterations", "1", "--out", out, option, value)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"hnmine: error: {option} {float(value)} is not a finite number"
    assert not out.exists()


def test_item_weight_beyond_float32_is_refused(cli, tmp_path, inputs):
    """A finite exponent can still overflow: popularity 20 ** 40 = 1e52 was written as an inf item weight."""
    message = refused(cli, tmp_path, inputs, "--pop-exponent", "40")
    assert message.startswith("hnmine: error: --pop-exponent 40.0: item ")
    assert f"({inputs['items']} row " in message and "beyond float32" in message


def test_positive_weight_beyond_float32_is_refused(cli, tmp_path, inputs):
    rows = [(int(u), int(i)) for line in inputs["positives"].read_text().splitlines()
            for u, *items in [line.split()] for i in items]
    weights = [1.0] * len(rows)
    weights[4] = 1e39  # finite as float64, inf as the float32 of pos_edge.weight
    pl.DataFrame({"user_id": [u for u, _ in rows], "item_id": [i for _, i in rows], "w": weights}).write_csv(
        tmp_path / "pos.csv")
    message = refused(cli, tmp_path, {**inputs, "positives": tmp_path / "pos.csv"}, "--weight-column", "w")
    assert "pos.csv: line 6: column 'w' has invalid weight 1e+39" in message


# --------------------------------------------------------------------------- empty outputs


def test_no_hard_negatives_is_an_error_unless_allowed(cli, tmp_path, inputs):
    message = refused(cli, tmp_path, inputs, "--min-score", "1e30")
    assert "no hard negatives for any of the 200 users" in message and "filters 200" in message
    assert "--allow-empty" in message
    out = published(cli, tmp_path, inputs, "--min-score", "1e30", "--allow-empty")
    assert pl.read_parquet(out / "hard_neg_edge.parquet").height == 0
    assert (out / "hard_neg_edge.txt").read_text().count("\n") == 1  # the header only
    assert json.loads((out / "manifest.json").read_text())["options"]["allow_empty"] is True


def test_no_positive_edges_is_an_error_unless_allowed(cli, tmp_path, inputs):
    """Positives whose users have no embedding (ids shifted by 10**9): pos_edge would be empty."""
    shifted = tmp_path / "shifted.txt"
    shifted.write_text("".join(f"{int(u) + 10**9} {' '.join(items)}\n" for u, *items in
                               (line.split() for line in inputs["positives"].read_text().splitlines())))
    message = refused(cli, tmp_path, {**inputs, "positives": shifted})
    assert f"{shifted}: none of its" in message and "pos_edge would be empty" in message and "unknown user" in message
    out = published(cli, tmp_path, {**inputs, "positives": shifted}, "--allow-empty")
    assert pl.read_parquet(out / "pos_edge.parquet").height == 0


# --------------------------------------------------------------------------- ids

UNSAFE = {"NUL": "\x00", "TAB": "\t", "LF": "\n", "CR": "\r", "VT": "\x0b", "FF": "\x0c", "FS": "\x1c", "GS": "\x1d",
          "RS": "\x1e", "NEL": "\x85", "LS": "\u2028", "PS": "\u2029"}


def string_id_users(inputs: dict[str, Path], target: Path, row: int, bad: str) -> Path:
    table = pq.read_table(inputs["users"])
    ids = [str(i) for i in table["id"].to_pylist()]
    ids[row] = bad
    pq.write_table(table.set_column(0, "id", pa.array(ids, type=pa.string())), target)
    return target


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_unsafe_character_in_an_embedding_id_is_refused(cli, tmp_path, inputs, name):
    users = string_id_users(inputs, tmp_path / "users.parquet", 5, f"u{UNSAFE[name]}5")
    message = refused(cli, tmp_path, {**inputs, "users": users})
    assert "users.parquet: column 'id' at row 5: has id 'u" in message and "line-based readers" in message


def test_empty_embedding_id_is_refused(cli, tmp_path, inputs):
    users = string_id_users(inputs, tmp_path / "users.parquet", 9, "")
    assert "users.parquet: column 'id' at row 9: has an empty id" in refused(cli, tmp_path, {**inputs, "users": users})


def test_string_ids_that_are_safe_publish(cli, tmp_path, inputs):
    """The check refuses only what it must: non-ASCII and spaces are fine."""
    users = string_id_users(inputs, tmp_path / "users.parquet", 5, "Zoë ü 東京")
    out = published(cli, tmp_path, {**inputs, "users": users})
    assert "Zoë ü 東京" in pl.read_parquet(out / "user.parquet")["id"].to_list()


@pytest.mark.parametrize("name", ["NUL", "RS", "LS"])
def test_unsafe_item_id_from_an_npy_ids_file_is_refused(cli, tmp_path, inputs, name):
    table = pq.read_table(inputs["items"])
    np.save(tmp_path / "items.npy", np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32))
    ids = np.array([str(i) for i in table["id"].to_pylist()])
    ids[3] = f"i{UNSAFE[name]}3"
    np.save(tmp_path / "item_ids.npy", ids)
    message = refused(cli, tmp_path, {**inputs, "items": tmp_path / "items.npy"}, "--item-ids", tmp_path / "item_ids.npy")
    assert "item_ids.npy: column 'id' at row 3: has id 'i" in message


def test_unsafe_item_id_from_a_text_ids_file_is_refused(cli, tmp_path, inputs):
    table = pq.read_table(inputs["items"])
    np.save(tmp_path / "items.npy", np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32))
    ids = [str(i) for i in table["id"].to_pylist()]
    ids[6] = "i\x006"
    (tmp_path / "item_ids.txt").write_text("\n".join(ids) + "\n")
    message = refused(cli, tmp_path, {**inputs, "items": tmp_path / "items.npy"}, "--item-ids", tmp_path / "item_ids.txt")
    assert "item_ids.txt: column 'id' at row 6: has id 'i\\x006', which contains NUL" in message


@pytest.mark.parametrize("name", ["NEL", "PS", "TAB"])
def test_unsafe_id_in_csv_positives_is_refused(cli, tmp_path, inputs, name):
    """String ids in the positives: refused where they are read, naming the CSV and its column."""
    users = string_id_users(inputs, tmp_path / "users.parquet", 0, "0")
    rows = ["uid,item_id"] + [f"{u},{i}" for line in inputs["positives"].read_text().splitlines()
                              for u, *items in [line.split()] for i in items]
    rows[3] = f'"x{UNSAFE[name]}y",{rows[3].split(",")[1]}'
    (tmp_path / "pos.csv").write_text("\n".join(rows) + "\n")
    message = refused(cli, tmp_path, {**inputs, "users": users, "positives": tmp_path / "pos.csv"},
                      "--user-column", "uid")
    assert "pos.csv: line 4: column 'uid' has id 'x" in message


@pytest.mark.parametrize(("field", "expected"), [('"\x0c"', "contains FF (U+000C)"), ('""', "at row 4: has an empty id"),
                                               ("", "at row 4: has a null id")])
def test_unsafe_or_missing_id_in_item_features_is_refused(cli, tmp_path, inputs, field, expected):
    lines = (SAMPLE / "item_features.csv").read_text().splitlines()
    lines[5] = f"{field}," + lines[5].split(",", 1)[1]  # data row 4
    (tmp_path / "f.csv").write_text("\n".join(lines) + "\n")
    message = refused(cli, tmp_path, inputs, "--item-features", tmp_path / "f.csv")
    assert "f.csv: column 'id'" in message and expected in message


# --------------------------------------------------------------------------- items without features


@pytest.fixture()
def partial_features(tmp_path, inputs) -> tuple[Path, list[int]]:
    """sample_data's item features without the rows of 12 items that have embeddings."""
    item_ids = pq.read_table(inputs["items"])["id"].to_pylist()
    dropped = item_ids[100:112]
    features = pl.read_csv(SAMPLE / "item_features.csv").filter(~pl.col("id").is_in(dropped))
    features.write_csv(tmp_path / "features.csv")
    return tmp_path / "features.csv", dropped


def test_items_without_features_get_their_node_id_as_id_attr(cli, tmp_path, inputs, partial_features):
    features, dropped = partial_features
    out = tmp_path / "out"
    result = mine(cli, out, inputs, "--item-features", features, "--attr-columns", "id,location_id,popularity_bucket")
    assert result.exit_code == 0, result.output
    assert "item features: 12 items without a feature row" in result.stdout
    items = pl.read_parquet(out / "item.parquet")
    fields = items["attrs"].str.split("\x02")
    assert fields.list.get(0).to_list() == [str(i) for i in items["id"].to_list()]  # never an empty id
    lacking = items.filter(pl.col("id").is_in(dropped))
    assert lacking["attrs"].to_list() == [f"{i}\x02\x02" for i in lacking["id"].to_list()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["items_without_features"] == 12
    assert manifest["options"]["missing_item_features"] == "fill"
    text = (out / "item.txt").read_text().splitlines()[1:]
    assert all(line.split("\t")[2].split("\x02")[0] == line.split("\t")[0] for line in text)


def test_items_without_features_can_be_refused(cli, tmp_path, inputs, partial_features):
    features, dropped = partial_features
    message = refused(cli, tmp_path, inputs, "--item-features", features, "--missing-item-features", "error")
    assert f"features.csv: no feature row for item {dropped[0]} ({inputs['items']} row 100), nor for 11 more" in message


def test_missing_item_features_option_is_checked(cli, tmp_path, inputs):
    message = refused(cli, tmp_path, inputs, "--missing-item-features", "skip")
    assert "--missing-item-features must be one of fill, error" in message
