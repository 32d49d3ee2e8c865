"""`hnmine mine` through the CLI on real data slices: outputs, formats, config, publication."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from hnmine import MineConfig, mine, read_embeddings
from hnmine.io.tables import ParquetTableWriter
from tests.conftest import SAMPLE, SHARED, lightgcn_positives


@pytest.fixture(scope="module")
def sample_run(sample_embeddings, tmp_path_factory):
    user, item = sample_embeddings
    out = tmp_path_factory.mktemp("run") / "mined"
    result = subprocess.run(
        [sys.executable, "-m", "hnmine", "mine", "--users", user, "--items", item,
         "--positives", SAMPLE / "train.txt", "--item-features", SAMPLE / "item_features.csv",
         "--rank-window", "101:500", "--num-hard", "10", "--out", out],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    return out, result


def test_sample_run_writes_all_tables(sample_run):
    out, result = sample_run
    names = {p.name for p in out.iterdir()}
    assert names == {f"{t}.{ext}" for t in ("hard_neg_edge", "pos_edge", "user", "item") for ext in ("parquet", "txt")} | {
        "manifest.json", "_SUCCESS"}
    assert "published" in result.stdout
    assert not list(out.parent.glob(".mined.tmp-*"))


def test_hard_negatives_are_in_window_and_never_positive(sample_run):
    out, _ = sample_run
    hard = pl.read_parquet(out / "hard_neg_edge.parquet")
    assert hard.columns == ["user_id", "item_id", "weight", "rank", "score"]
    positives = lightgcn_positives(SAMPLE / "train.txt")
    assert hard["rank"].min() >= 101 and hard["rank"].max() <= 500
    assert hard.group_by("user_id").len()["len"].to_list() == [10] * hard["user_id"].n_unique()
    assert hard["user_id"].n_unique() == len(positives)
    pairs = set(zip(hard["user_id"].to_list(), hard["item_id"].to_list()))
    assert not any(item in positives[user] for user, item in pairs)
    assert len(pairs) == hard.height  # no duplicate negatives
    np.testing.assert_array_equal(hard["weight"].to_numpy(), hard["score"].to_numpy())


def test_graphlearn_text_matches_parquet_byte_for_byte_in_form(sample_run):
    out, _ = sample_run
    headers = {
        "hard_neg_edge": "userid:int64\titemid:int64\tweight:float",
        "pos_edge": "userid:int64\titemid:int64\tweight:float",
        "user": "id:int64\tweight:float",
        "item": "id:int64\tweight:float\tattrs:string",
    }
    for table, header in headers.items():
        raw = (out / f"{table}.txt").read_bytes()
        lines = raw.decode().split("\n")
        assert lines[0] == header
        assert lines[-1] == "" and all(lines[1:-1])  # newline-terminated, no blank rows
        fields = len(header.split("\t"))
        assert all(line.count("\t") == fields - 1 for line in lines[1:-1])
        assert b'"' not in raw and b"\r" not in raw
        parquet = pl.read_parquet(out / f"{table}.parquet")
        assert len(lines) - 2 == parquet.height
        text = pl.read_csv(out / f"{table}.txt", separator="\t", quote_char=None,
                           schema_overrides={"attrs:string": pl.String} if table == "item" else None)
        first = parquet.columns[:fields]
        for column, text_column in zip(first, text.columns):
            if parquet[column].dtype.is_float():
                np.testing.assert_allclose(text[text_column].to_numpy(), parquet[column].to_numpy(), rtol=1e-6)
            else:
                assert text[text_column].to_list() == parquet[column].to_list()


def test_item_table_weights_and_attrs(sample_run):
    out, _ = sample_run
    items = pl.read_parquet(out / "item.parquet")
    features = pl.read_csv(SAMPLE / "item_features.csv")
    joined = items.join(features, on="id")
    assert joined.height == items.height
    expected = joined["location_id"].cast(pl.String) + "\x02" + joined["popularity_bucket"].cast(pl.String)
    assert joined["attrs"].to_list() == expected.to_list()
    pos = pl.read_parquet(out / "pos_edge.parquet")
    popularity = pos.group_by("item_id").len().rename({"item_id": "id"})
    check = items.join(popularity, on="id", how="left").with_columns(pl.col("len").fill_null(0))
    np.testing.assert_allclose(check["weight"].to_numpy(), check["len"].to_numpy() ** 0.75, rtol=1e-6)


def test_manifest_records_what_produced_the_output(sample_run):
    out, _ = sample_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"][:2] == ["hnmine", "mine"]
    assert manifest["options"]["rank_window"] == "101:500"
    assert len(manifest["inputs"]["positives"]["sha256"]) == 64
    summary = manifest["summary"]
    assert summary["rows"]["hard_neg_edge"] == 10 * summary["users"]
    assert summary["users_complete"] == summary["users"]
    assert set(summary["timings"]) >= {"read", "index", "retrieve", "select", "write", "total"}
    assert {"numpy", "faiss-cpu", "polars", "pyarrow", "python"} <= set(manifest["versions"])


def test_same_output_for_any_chunk_size_and_threads(sample_embeddings, sample_teacher, tmp_path):
    user, item = sample_embeddings
    # the last two: a teacher's scores for the margin and the cosine, and adaptive windows
    taught = {"teacher_users": str(sample_teacher[0]), "teacher_items": str(sample_teacher[1]),
              "relative_margin": 0.1, "max_positive_similarity": 0.9, "adaptive_window": 60}
    outputs = []
    for chunk, threads, cap, more in ((100000, 2, None, {}), (97, 1, None, {}), (1000, 2, None, {}),
                                      (100000, 2, 5, {}), (97, 1, 5, {}), (100000, 2, 5, taught), (97, 1, 5, taught)):
        out = tmp_path / f"o{chunk}-{cap}-{bool(more)}"
        config = MineConfig.of(users=str(user), items=str(item), positives=str(SAMPLE / "train.txt"),
                               out=str(out), chunk_size=chunk, threads=threads, strategy="softmax-v",
                               seed=7, max_item_negatives=cap, **more)
        mine(config)
        # every table file byte for byte (the manifest records the options and timings themselves)
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "manifest.json"})
    assert set(outputs[0]) == {"_SUCCESS", "hard_neg_edge.parquet", "hard_neg_edge.txt", "item.parquet", "item.txt",
                               "pos_edge.parquet", "pos_edge.txt", "user.parquet", "user.txt"}
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[3] == outputs[4]
    assert outputs[5] == outputs[6] and set(outputs[5]) == {*outputs[0], "user_bucket.parquet"}
    assert outputs[5]["hard_neg_edge.parquet"] != outputs[3]["hard_neg_edge.parquet"]


def test_parquet_row_groups_do_not_follow_the_writes(tmp_path):
    frame = pl.DataFrame({"user_id": np.arange(1000) % 37, "score": np.linspace(0, 1, 1000, dtype=np.float32)})
    files = []
    for i, sizes in enumerate(([1000], [1] * 7 + [993], [300, 0, 450, 250])):
        writer = ParquetTableWriter(tmp_path / f"t{i}.parquet", row_group_rows=128)
        start = 0
        for size in sizes:
            writer.write(frame.slice(start, size))
            start += size
        writer.close()
        files.append((tmp_path / f"t{i}.parquet").read_bytes())
    assert files[0] == files[1] == files[2]
    meta = pq.ParquetFile(tmp_path / "t0.parquet").metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [128] * 7 + [104]
    assert pl.read_parquet(tmp_path / "t1.parquet").equals(frame)


def test_config_file_fills_options_and_command_line_wins(cli, sample_embeddings, tmp_path):
    user, item = sample_embeddings
    config = tmp_path / "hnmine.toml"
    config.write_text(
        f'[mine]\nusers = "{user}"\nitems = "{item}"\npositives = "{SAMPLE / "train.txt"}"\n'
        'rank-window = "11:60"\nnum_hard = 3\nstrategy = "top"\nformats = ["parquet"]\n'
    )
    result = cli("mine", "--config", config, "--num-hard", "4", "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 0, result.output
    hard = pl.read_parquet(tmp_path / "o" / "hard_neg_edge.parquet")
    assert hard.group_by("user_id").len()["len"].max() == 4
    assert hard["rank"].max() == 14 and hard["rank"].min() == 11
    assert not (tmp_path / "o" / "hard_neg_edge.txt").exists()


def test_dry_run_prints_plan_and_writes_nothing(cli, sample_embeddings, tmp_path):
    user, item = sample_embeddings
    result = cli("mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt",
                 "--out", tmp_path / "o", "--dry-run")
    assert result.exit_code == 0, result.output
    for key in ("users: 2986", "search depth max", "estimated peak memory", "estimated seconds"):
        assert key in result.output
    assert not (tmp_path / "o").exists()


def test_overwrite_and_failed_rerun_keep_previous_output(cli, sample_embeddings, tmp_path):
    user, item = sample_embeddings
    base = ["mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt", "--out", tmp_path / "o",
            "--quiet", "--rank-window", "1:20", "--num-hard", "2"]
    assert cli(*base).exit_code == 0
    first = (tmp_path / "o" / "hard_neg_edge.txt").read_bytes()
    again = cli(*base)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    failed = cli(*base, "--overwrite", "--rank-window", "1:999999")
    assert failed.exit_code == 2
    assert (tmp_path / "o" / "hard_neg_edge.txt").read_bytes() == first
    assert cli(*base, "--overwrite", "--seed", "5").exit_code == 0
    assert (tmp_path / "o" / "_SUCCESS").exists()
    assert (tmp_path / "o" / "hard_neg_edge.txt").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_refuses_to_replace_a_directory_that_is_not_hnmine_output(cli, sample_embeddings, tmp_path):
    user, item = sample_embeddings
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = cli("mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt", "--out", precious,
                 "--overwrite")
    assert result.exit_code == 2 and "not an hnmine output" in result.stderr
    assert (precious / "notes.txt").read_text() == "keep me"


def test_ml1m_heavy_users_get_complete_windows(ml1m_embeddings, tmp_path):
    """ml-1m users have up to ~1,800 positives of 3,706 items: every window must still be full."""
    user, item = ml1m_embeddings
    positives = lightgcn_positives(SHARED / "ml-1m" / "train.txt")
    users = read_embeddings(user)
    heavy = sorted(positives, key=lambda u: -len(positives[u]))[:150]
    light = sorted(positives)[:150]
    keep = np.isin(users.ids, heavy + light)
    from hnmine.io.embeddings import write_embeddings

    write_embeddings(tmp_path / "users.parquet", users.ids[keep], users.vectors[keep])
    report = mine(MineConfig.of(users=str(tmp_path / "users.parquet"), items=str(item),
                                positives=str(SHARED / "ml-1m" / "train.txt"), out=str(tmp_path / "o"),
                                strategy="all", chunk_size=64))
    assert max(len(positives[u]) for u in heavy) > 1500
    assert report.users_complete == report.users == 300
    assert report.unknown_user_positives > 0  # the other users' positives are counted, not silently dropped
    hard = pl.read_parquet(tmp_path / "o" / "hard_neg_edge.parquet")
    assert hard.group_by("user_id").len()["len"].to_list() == [400] * 300
    assert not any(i in positives[u] for u, i in zip(hard["user_id"].to_list(), hard["item_id"].to_list()))
    # ranks are counted among non-positives: rank r is the r-th best non-positive item
    by_user = hard.sort("user_id", "rank").group_by("user_id", maintain_order=True).agg("score")
    assert all(all(a >= b for a, b in itertools.pairwise(s)) for s in by_user["score"].to_list())


def test_other_input_forms_npy_csv_string_ids(tmp_path):
    rng = np.random.default_rng(0)
    users, items = rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal((300, 8)).astype(np.float32)
    np.save(tmp_path / "users.npy", users)
    np.save(tmp_path / "items.npy", items)
    (tmp_path / "user_ids.txt").write_text("\n".join(f"u{i}" for i in range(40)))
    (tmp_path / "item_ids.txt").write_text("\n".join(f"i-{i}" for i in range(300)))
    rows = ["uid,iid,w"] + [f"u{u},i-{i},{1 + (u + i) % 3}" for u in range(40) for i in rng.choice(300, 7, replace=False)]
    rows.append("u999,i-1,1")  # a user without an embedding: counted and reported
    (tmp_path / "pos.csv").write_text("\n".join(rows) + "\n")
    report = mine(MineConfig.of(users=str(tmp_path / "users.npy"), user_ids=str(tmp_path / "user_ids.txt"),
                                items=str(tmp_path / "items.npy"), item_ids=str(tmp_path / "item_ids.txt"),
                                positives=str(tmp_path / "pos.csv"), user_column="uid", item_column="iid",
                                weight_column="w", rank_window="5:50", num_hard=4, out=str(tmp_path / "o")))
    assert report.unknown_user_positives == 1 and report.unknown_users == 1
    lines = (tmp_path / "o" / "hard_neg_edge.txt").read_text().splitlines()
    assert lines[0] == "userid:string\titemid:string\tweight:float"
    assert len(lines) == 1 + 40 * 4 and lines[1].startswith("u0\ti-")
    assert (tmp_path / "o" / "item.txt").read_text().splitlines()[0] == "id:string\tweight:float\tattrs:string"
    pos = pl.read_parquet(tmp_path / "o" / "pos_edge.parquet")
    assert pos.height == 280 and set(pos["weight"].unique().to_list()) == {1.0, 2.0, 3.0}


def test_item_cap_limits_reuse_of_an_item(sample_embeddings, tmp_path):
    user, item = sample_embeddings
    report = mine(MineConfig.of(users=str(user), items=str(item), positives=str(SAMPLE / "train.txt"),
                                out=str(tmp_path / "o"), max_item_negatives=3, num_hard=10, rank_window="1:50",
                                strategy="top"))
    hard = pl.read_parquet(tmp_path / "o" / "hard_neg_edge.parquet")
    assert hard.group_by("item_id").len()["len"].max() <= 3
    assert hard.group_by("user_id").len()["len"].max() <= 10
    assert sum(report.users_short.values()) + sum(report.users_empty.values()) > 0
    text = (tmp_path / "o" / "hard_neg_edge.txt").read_text().splitlines()
    assert len(text) - 1 == hard.height == report.rows["hard_neg_edge"]


def test_help_shows_examples(cli):
    for command in ("mine", "svd", "blend"):
        result = cli(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output and f"hnmine {command}" in result.output


def test_approximate_index_audit_is_recorded(sample_embeddings, tmp_path):
    user, item = sample_embeddings
    mine(MineConfig.of(users=str(user), items=str(item), positives=str(SAMPLE / "train.txt"), out=str(tmp_path / "o"),
                       index="ivf", nprobe=8, audit_sample=200))
    audit = json.loads((tmp_path / "o" / "manifest.json").read_text())["summary"]["audit"]
    assert audit["users"] == 200 and 0.0 < audit["window_recall"] <= 1.0


def test_exit_code_and_paths(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "hnmine", "mine", "--users", tmp_path / "nope.parquet",
                             "--items", tmp_path / "x.parquet", "--positives", tmp_path / "p.txt",
                             "--out", tmp_path / "o"], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nope.parquet: file not found" in result.stderr


def test_parquet_directories_and_hnsw(sample_embeddings, tmp_path):
    """Embeddings split over a directory of parquet files, positives as parquet, an HNSW index."""
    user, item = sample_embeddings
    users = read_embeddings(user)
    from hnmine.io.embeddings import write_embeddings

    (tmp_path / "users").mkdir()
    for part, rows in enumerate(np.array_split(np.arange(len(users)), 3)):
        write_embeddings(tmp_path / "users" / f"part-{part}.parquet", users.ids[rows], users.vectors[rows])
    pairs = [(u, i) for u, items in lightgcn_positives(SAMPLE / "train.txt").items() for i in items]
    pl.DataFrame(pairs, schema=["user_id", "item_id"], orient="row").write_parquet(tmp_path / "pos.parquet")
    config = dict(items=str(item), rank_window="11:60", num_hard=5)
    exact = mine(MineConfig.of(users=str(user), positives=str(SAMPLE / "train.txt"), out=str(tmp_path / "a"), **config))
    split = mine(MineConfig.of(users=str(tmp_path / "users"), positives=str(tmp_path / "pos.parquet"),
                               out=str(tmp_path / "b"), **config))
    assert (tmp_path / "a" / "hard_neg_edge.txt").read_bytes() == (tmp_path / "b" / "hard_neg_edge.txt").read_bytes()
    assert exact.rows == split.rows
    approx = mine(MineConfig.of(users=str(user), positives=str(SAMPLE / "train.txt"), out=str(tmp_path / "c"),
                                index="hnsw", audit_sample=300, **config))
    assert approx.audit["window_recall"] > 0.5
    hard = pl.read_parquet(tmp_path / "c" / "hard_neg_edge.parquet")
    assert hard["rank"].min() >= 11 and hard["rank"].max() <= 60


def test_small_row_groups_are_gathered_into_full_chunks(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hnmine.io.embeddings import EmbeddingSource

    rng = np.random.default_rng(0)
    for part in range(3):
        vectors = rng.standard_normal((250, 4)).astype(np.float32)
        table = pa.table({"id": np.arange(part * 250, (part + 1) * 250),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 4)})
        pq.write_table(table, tmp_path / f"p{part}.parquet", row_group_size=30)
    chunks = list(EmbeddingSource(tmp_path).iter_chunks(100))
    assert [len(c) for _, c in chunks] == [100] * 7 + [50]
    assert [first for first, _ in chunks] == list(range(0, 750, 100))
    assert np.concatenate([c.ids for _, c in chunks]).tolist() == list(range(750))


def test_order_edge_weight_follows_the_strategy_order(sample_embeddings, tmp_path):
    user, item = sample_embeddings
    common = dict(users=str(user), items=str(item), positives=str(SAMPLE / "train.txt"), num_hard=6, seed=1)
    mine(MineConfig.of(out=str(tmp_path / "a"), edge_weight="order", **common))
    mine(MineConfig.of(out=str(tmp_path / "b"), edge_weight="score", **common))
    ordered = pl.read_parquet(tmp_path / "a" / "hard_neg_edge.parquet")
    scored = pl.read_parquet(tmp_path / "b" / "hard_neg_edge.parquet")
    assert ordered.drop("weight").equals(scored.drop("weight"))  # same picks, only the weight differs
    weights = ordered.group_by("user_id", maintain_order=True).agg("weight")["weight"].to_list()
    assert all(w == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6]) for w in weights)
    # with the uniform strategy the order is random: the first pick is not systematically the hardest
    first = ordered.group_by("user_id", maintain_order=True).first()
    assert 0.3 < (first["rank"] > 300).mean() < 0.7


def test_text_only_output(sample_embeddings, tmp_path):
    user, item = sample_embeddings
    report = mine(MineConfig.of(users=str(user), items=str(item), positives=str(SAMPLE / "train.txt"),
                                out=str(tmp_path / "o"), formats=["graphlearn"], num_hard=3))
    assert sorted(p.suffix for p in (tmp_path / "o").glob("*.*")) == [".json"] + [".txt"] * 4
    assert report.rows["hard_neg_edge"] == 3 * 2986 and report.score == {}


@pytest.mark.parametrize("ids", ["int", "str", "negative"])
def test_repeated_positive_pairs_keep_the_largest_weight(tmp_path, ids):
    """A (user, item) pair listed twice is one positive with its largest weight, whatever the id type
    (the packed-key check for integer ids and the group_by agree)."""
    from hnmine.io.positives import read_positives

    users = {"int": [1, 1, 2, 1], "str": ["a", "a", "b", "a"], "negative": [-1, -1, 2, -1]}[ids]
    path = tmp_path / "pos.csv"
    pl.DataFrame({"user_id": users, "item_id": [7, 8, 7, 7], "w": [1.0, 2.0, 3.0, 5.0]}).write_csv(path)
    pos = read_positives(path, weight_column="w")
    assert pos.duplicates == 1
    assert pos.table.height == 3
    assert pos.table.filter(pl.col("item_id") == 7)["weight"].to_list() == [5.0, 3.0]
    unique = tmp_path / "unique.csv"
    pl.DataFrame({"user_id": users[:3], "item_id": [7, 8, 7]}).write_csv(unique)
    assert read_positives(unique).duplicates == 0
