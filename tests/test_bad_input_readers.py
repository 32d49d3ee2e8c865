"""Undecodable input and impossible options, for every command: one line on stderr (``hnmine: error:``)
naming the file and where in it (CSV/LightGCN ``line N``, parquet ``row N``), exit code 2, no
traceback, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hnmine.io.embeddings import write_embeddings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Users 0..19, items 100..159 (4-d) and LightGCN positives (user u: items 100+u, 101+u)."""
    rng = np.random.default_rng(0)
    write_embeddings(tmp_path / "users.parquet", np.arange(20), rng.standard_normal((20, 4)))
    write_embeddings(tmp_path / "items.parquet", np.arange(100, 160), rng.standard_normal((60, 4)))
    (tmp_path / "pos.txt").write_text("\n".join(f"{u} {100 + u} {101 + u}" for u in range(20)) + "\n")
    return {"users": tmp_path / "users.parquet", "items": tmp_path / "items.parquet", "positives": tmp_path / "pos.txt"}


def refused(result, *fragments: str) -> str:
    """The one-line refusal, checked: exit 2, exactly one stderr line, each fragment in it."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hnmine: error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def mine(cli, tmp_path: Path, inputs: dict[str, Path], *extra: str | Path):
    return cli("mine", "--users", inputs["users"], "--items", inputs["items"], "--positives", inputs["positives"],
               "--rank-window", "3:20", "--out", tmp_path / "out", "--quiet", *extra)


def mine_refused(cli, tmp_path: Path, inputs: dict[str, Path], *extra: str | Path, expect: tuple[str, ...]) -> str:
    message = refused(mine(cli, tmp_path, inputs, *extra), *expect)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    return message


def corrupt_pages(table: pa.Table, path: Path) -> Path:
    """``table`` as parquet whose data pages are garbage behind an intact footer (metadata reads fine)."""
    pq.write_table(table, path, compression="snappy")
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    for k in range(8, len(data) - 8 - footer, 7):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    pq.ParquetFile(path)  # the footer still parses: only reading the pages fails
    return path


def embedding_table(ids, n: int = 60, dim: int = 4) -> pa.Table:
    flat = pa.array(np.linspace(-1, 1, n * dim, dtype=np.float32))
    return pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})


# ------------------------------------------------------------------------------- corrupt parquet pages


@pytest.mark.parametrize("which", ["users", "items", "positives"])
def test_corrupt_parquet_pages_in_mine(which, cli, tmp_path, inputs):
    if which == "positives":
        table = pa.table({"user_id": np.arange(20).repeat(2), "item_id": np.arange(100, 140)})
    else:
        table = embedding_table(np.arange(20) if which == "users" else np.arange(100, 160), 20 if which == "users" else 60)
    bad = corrupt_pages(table, tmp_path / f"bad_{which}.parquet")
    mine_refused(cli, tmp_path, {**inputs, which: bad}, expect=(f"bad_{which}.parquet: cannot read",))


def test_corrupt_item_features_in_mine(cli, tmp_path, inputs):
    bad = corrupt_pages(pa.table({"id": np.arange(100, 160), "name": [f"n{i}" for i in range(60)]}),
                        tmp_path / "features.parquet")
    mine_refused(cli, tmp_path, inputs, "--item-features", bad, expect=("features.parquet: cannot read",))


@pytest.mark.parametrize("which", ["--users", "--train", "--hard-negatives"])
def test_corrupt_parquet_in_evaluate(which, cli, tmp_path, inputs):
    if which == "--users":
        bad = corrupt_pages(embedding_table(np.arange(20), 20), tmp_path / "bad.parquet")
    else:
        bad = corrupt_pages(pa.table({"user_id": np.arange(20).repeat(2), "item_id": np.arange(100, 140)}),
                            tmp_path / "bad.parquet")
    args = {"--users": inputs["users"], "--items": inputs["items"], "--train": inputs["positives"],
            "--test": inputs["positives"], which: bad}
    refused(cli("evaluate", *[x for pair in args.items() for x in pair]), "bad.parquet: cannot read")


# ------------------------------------------------------------------------------------ ids beyond int64


def test_csv_id_beyond_int64_names_the_line(cli, tmp_path, inputs):
    (tmp_path / "p.csv").write_text("user_id,item_id\n1,100\n99999999999999999999,101\n")
    mine_refused(cli, tmp_path, {**inputs, "positives": tmp_path / "p.csv"},
                 expect=("p.csv: line 3: column 'user_id' has id 99999999999999999999, beyond the int64 range",))


def test_uint64_ids_that_fit_int64_are_accepted(cli, tmp_path, inputs):
    """uint64 id columns are read as int64 when every value fits: the same output as int64 ids."""
    pq.write_table(embedding_table(pa.array(np.arange(100, 160), pa.uint64())), tmp_path / "items64.parquet")
    pq.write_table(embedding_table(np.arange(100, 160)), tmp_path / "items.parquet")
    pq.write_table(pa.table({"user_id": pa.array(np.arange(20).repeat(2), pa.uint64()),
                             "item_id": pa.array(np.arange(100, 140), pa.uint64())}), tmp_path / "pos64.parquet")
    assert mine(cli, tmp_path / "a", {**inputs, "items": tmp_path / "items64.parquet",
                                      "positives": tmp_path / "pos64.parquet"}).exit_code == 0
    pq.write_table(pa.table({"user_id": np.arange(20).repeat(2), "item_id": np.arange(100, 140)}),
                   tmp_path / "pos.parquet")
    assert mine(cli, tmp_path / "b", {**inputs, "items": tmp_path / "items.parquet",
                                      "positives": tmp_path / "pos.parquet"}).exit_code == 0
    for name in ("hard_neg_edge", "pos_edge", "item"):
        a = pl.read_parquet(tmp_path / "a" / "out" / f"{name}.parquet")
        b = pl.read_parquet(tmp_path / "b" / "out" / f"{name}.parquet")
        assert a.equals(b) and a.schema.get("user_id", pl.Int64) == pl.Int64


def test_uint64_ids_beyond_int64_name_column_and_row(cli, tmp_path, inputs):
    big = np.array([2**63 + 5], dtype=np.uint64)
    pq.write_table(embedding_table(pa.array(np.r_[np.arange(100, 159).astype(np.uint64), big], pa.uint64())),
                   tmp_path / "items64.parquet")
    mine_refused(cli, tmp_path, {**inputs, "items": tmp_path / "items64.parquet"},
                 expect=("items64.parquet: column 'id' has id 9223372036854775813 at row 59",))
    pq.write_table(pa.table({"user_id": pa.array(np.r_[np.arange(39).astype(np.uint64), big], pa.uint64()),
                             "item_id": np.arange(100, 140)}), tmp_path / "pos64.parquet")
    mine_refused(cli, tmp_path, {**inputs, "positives": tmp_path / "pos64.parquet"},
                 expect=("pos64.parquet: row 39: column 'user_id' has id 9223372036854775813",))


def test_text_ids_file_beyond_int64_names_the_line(cli, tmp_path, inputs):
    np.save(tmp_path / "u.npy", np.ones((3, 4), np.float32))
    (tmp_path / "u.txt").write_text("1\n2\n99999999999999999999\n")
    mine_refused(cli, tmp_path, {**inputs, "users": tmp_path / "u.npy"}, "--user-ids", tmp_path / "u.txt",
                 expect=("u.txt: line 3: id 99999999999999999999 is beyond the int64 range",))


# ---------------------------------------------------------------------------------- where errors point


def string_users(tmp_path: Path, bad_id: str | None = None) -> Path:
    ids = np.array([f"u{i}" for i in range(20)], dtype=object)
    if bad_id is not None:
        ids[7] = bad_id
    write_embeddings(tmp_path / "susers.parquet", ids, np.random.default_rng(0).standard_normal((20, 4)))
    return tmp_path / "susers.parquet"


def test_tab_in_user_id_is_reported_against_the_embedding_file(cli, tmp_path, inputs):
    users = string_users(tmp_path, "u\t7")
    (tmp_path / "p.csv").write_text("user_id,item_id\n" + "".join(f"u{u},{100 + u}\n" for u in range(20)))
    message = mine_refused(cli, tmp_path, {**inputs, "users": users, "positives": tmp_path / "p.csv"},
                           expect=("susers.parquet: column 'id'", "row 7", "TAB"))
    assert "hard_neg_edge" not in message


def test_tab_in_user_id_is_reported_against_the_csv_line(cli, tmp_path, inputs):
    # a quoted field spanning two lines comes first: the reported line is the file's, not the row's
    (tmp_path / "p.csv").write_text('user_id,item_id,note\nu0,100,"two\nlines"\nu1,101,x\n"u\t2",102,x\n')
    mine_refused(cli, tmp_path, {**inputs, "users": string_users(tmp_path), "positives": tmp_path / "p.csv"},
                 expect=("p.csv: line 5: column 'user_id'", "TAB"))


@pytest.mark.parametrize(
    ("text", "extra", "expected"),
    [
        ("user_id,item_id\n1,100\n,101\n", (), "p.csv: line 3: column 'user_id' is null"),
        ("user_id,item_id,w\n1,100,1\n2,101,lots\n", ("--weight-column", "w"), "p.csv: line 3: column 'w' has 'lots'"),
        ("user_id,item_id,w\n1,100,1\n2,101,-1\n", ("--weight-column", "w"), "p.csv: line 3: column 'w' has invalid"),
    ],
)
def test_csv_errors_carry_the_line(text, extra, expected, cli, tmp_path, inputs):
    (tmp_path / "p.csv").write_text(text)
    mine_refused(cli, tmp_path, {**inputs, "positives": tmp_path / "p.csv"}, *extra, expect=(expected,))


def test_lightgcn_fields_separated_by_tabs_are_read(cli, tmp_path, inputs):
    """Any whitespace separates LightGCN fields: a TAB-separated file mines exactly as the spaced one."""
    lines = inputs["positives"].read_text().splitlines()
    (tmp_path / "tabs.txt").write_text("\n".join(line.replace(" ", "\t") if k % 2 else line.replace(" ", " \t ")
                                                 for k, line in enumerate(lines)) + "\n")
    assert mine(cli, tmp_path / "a", inputs).exit_code == 0
    assert mine(cli, tmp_path / "b", {**inputs, "positives": tmp_path / "tabs.txt"}).exit_code == 0
    for name in ("hard_neg_edge", "pos_edge"):
        a = pl.read_parquet(tmp_path / "a" / "out" / f"{name}.parquet")
        assert a.height and a.equals(pl.read_parquet(tmp_path / "b" / "out" / f"{name}.parquet"))


def test_tiny_run_reports_the_users_positives_file(cli, tmp_path, inputs):
    result = cli("run", "--positives", inputs["positives"], "--out", tmp_path / "run", "--iterations", "1",
                 "--epochs", "1", "--quiet")
    message = refused(result, f"{inputs['positives']}: too few positives to hold out a validation split")
    assert "valid.parquet" not in message and "a user needs 10" in message
    assert not (tmp_path / "run" / "round_00").exists()


# ------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--threads", "-1"), "--threads must be at least 1"),
        (("--threads", "0"), "--threads must be at least 1"),
        (("--index", "ivf", "--nlist", "0"), "--nlist must be at least 1"),
        (("--index", "ivf", "--nlist", "61"), "--nlist 61 is above the 60 items"),
        (("--index", "hnsw", "--ef-construction", "0"), "--ef-construction must be at least 1"),
        (("--chunk-size", "99999999999999999999"), "--chunk-size must be between 1 and"),
    ],
)
def test_bad_mine_options(args, expected, cli, tmp_path, inputs):
    mine_refused(cli, tmp_path, inputs, *args, expect=(expected,))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'[mine]\nnum_hard = "ten"\n', "c.toml: option num-hard must be an integer, not str 'ten'"),
        (b"[mine]\nchunk_size = [1]\n", "option chunk-size must be an integer, not list"),
        (b"[mine]\nnum_hard = 2.5\n", "option num-hard must be an integer, not float"),
        (b"[mine]\nnum_hard = true\n", "option num-hard must be an integer, not bool"),
        (b"[mine]\noverwrite = 1\n", "option overwrite must be true or false"),
        (b"[mine]\ntemperature = \"hot\"\n", "option temperature must be a number"),
        (b'[mine]\nstrategy = "top\xff"\n', "c.toml: not UTF-8 text"),
    ],
)
def test_bad_toml_config(content, expected, cli, tmp_path, inputs):
    (tmp_path / "c.toml").write_bytes(content)
    mine_refused(cli, tmp_path, inputs, "--config", tmp_path / "c.toml", expect=(expected,))


def test_toml_config_that_is_a_directory(cli, tmp_path, inputs):
    (tmp_path / "c.toml").mkdir()
    mine_refused(cli, tmp_path, inputs, "--config", tmp_path / "c.toml", expect=("c.toml: is a directory",))


def test_toml_config_values_of_the_right_type_are_used(cli, tmp_path, inputs):
    (tmp_path / "c.toml").write_text('[mine]\nnum_hard = 3\nrank_window = "3:20"\nformats = ["parquet"]\n'
                                     "temperature = 2\nthreads = 1\n")
    assert mine(cli, tmp_path, inputs, "--config", tmp_path / "c.toml").exit_code == 0
    edges = pl.read_parquet(tmp_path / "out" / "hard_neg_edge.parquet")
    assert edges.group_by("user_id").len()["len"].max() == 3
    assert not (tmp_path / "out" / "hard_neg_edge.txt").exists()


def test_svd_dim(cli, tmp_path, inputs):
    for dim in ("0", "-3"):
        refused(cli("svd", "--positives", inputs["positives"], "--dim", dim, "--out-dir", tmp_path / "emb"),
                "--dim must be at least 1")
    refused(cli("svd", "--positives", inputs["positives"], "--dim", "20", "--out-dir", tmp_path / "emb"),
            "--dim 20 must be below min(users, items) = 20")
    assert not (tmp_path / "emb").exists()


TRAIN = ["--epochs", "1", "--dim", "4", "--batch-size", "64", "--num-sample", "16", "--threads", "1", "--quiet"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--epochs", "0"), "--epochs must be at least 1"),
        (("--threads", "0"), "--threads must be at least 1"),
        (("--threads", "-1"), "--threads must be at least 1"),
        (("--seed", "-1"), "--seed must be between 0 and"),
    ],
)
def test_bad_train_options(args, expected, cli, tmp_path, inputs):
    out = tmp_path / "model.pt"
    refused(cli("train", "--positives", inputs["positives"], *TRAIN, *args, "--out", out), expected)
    assert not out.exists()


def test_unwritable_train_out(cli, tmp_path, inputs):
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "missing.pt")
    cases = [
        (tmp_path / "a_dir", "is a directory"),
        (inputs["positives"] / "model.pt", "pos.txt is not a directory"),
        (tmp_path / "dangling", "is a symlink to a missing file"),
        (Path("/proc/hnmine-model.pt"), "cannot write the model file"),
    ]
    for out, expected in cases:
        refused(cli("train", "--positives", inputs["positives"], *TRAIN, "--out", out), str(out), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "dangling", "items.parquet", "pos.txt",
                                                          "users.parquet"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--refine-epochs", "0"), "--refine-epochs must be at least 1"),
        (("--threads", "-1"), "--threads must be at least 1"),
        (("--epochs", "0"), "--epochs must be at least 1"),
    ],
)
def test_bad_run_options(args, expected, cli, tmp_path, inputs):
    refused(cli("run", "--positives", inputs["positives"], "--test", inputs["positives"], "--valid-fraction", "0",
                "--rank-window", "3:20", "--out", tmp_path / "run", *TRAIN, *args), expected)
    assert not (tmp_path / "run").exists()


def test_bad_evaluate_and_blend_options(cli, tmp_path, inputs):
    refused(cli("evaluate", "--users", inputs["users"], "--items", inputs["items"], "--train", inputs["positives"],
                "--test", inputs["positives"], "--window-width", "5", "--max-false-negative-rate", "1.5"),
            "--max-false-negative-rate must be between 0 and 1")
    emb = tmp_path / "emb"
    emb.mkdir()
    (emb / "user.parquet").write_bytes(inputs["users"].read_bytes())
    (emb / "item.parquet").write_bytes(inputs["items"].read_bytes())
    refused(cli("blend", emb, emb, "--seed", "-1", "--out-dir", tmp_path / "blended"), "--seed must be >= 0")
    assert not (tmp_path / "blended").exists()
