"""The candidate cache (``mine --save-candidates``) and ``hnmine select``: the same bytes as ``mine``, stale
or mismatched caches refused in one line, on sample_data's real Gowalla slice."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hnmine.embed.svd import write_svd_embeddings
from hnmine.errors import InputError
from hnmine.evaluate import evaluate
from hnmine.io.positives import read_positives
from hnmine.mining.config import MineConfig
from hnmine.mining.pipeline import mine, select
from tests.conftest import SAMPLE, lightgcn_positives

TRAIN = SAMPLE / "train.txt"


def digests(out: Path) -> dict[str, str]:
    """sha256 of every published file but the manifest (which records the command and timings)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir()) if p.name != "manifest.json"}


@pytest.fixture(scope="module")
def cached(sample_embeddings, tmp_path_factory) -> tuple[MineConfig, Path]:
    """A mine of ranks 1:400 that also wrote its candidate cache; (its config, the cache)."""
    user, item = sample_embeddings
    root = tmp_path_factory.mktemp("cache")
    config = MineConfig.of(users=str(user), items=str(item), positives=str(TRAIN), out=str(root / "mined"),
                        rank_window="1:400", save_candidates=str(root / "cand"), threads=2)
    mine(config)
    return config.with_options(save_candidates=None), root / "cand"


@pytest.mark.parametrize("options", [
    {"rank_window": "101:400", "item_features": str(SAMPLE / "item_features.csv")},
    {"rank_window": "1:400", "strategy": "softmax-v", "rho": 0.05, "seed": 3, "chunk_size": 700},
    {"rank_window": "51:250", "strategy": "top", "num_hard": 5, "edge_weight": "rank"},
    {"rank_window": "201:400", "strategy": "softmax", "temperature": 0.1, "max_item_negatives": 4, "seed": 9},
    {"rank_window": "101:300", "strategy": "all", "absolute_margin": 0.0, "max_score": 0.5},
    {"rank_window": "101:400", "max_positive_similarity": 0.5, "exclude_same": "popularity_bucket",
     "item_features": str(SAMPLE / "item_features.csv")},
    # select reads the teacher itself (the cache holds the mined model's ranks only)
    {"rank_window": "101:300", "teacher": True, "relative_margin": 0.0, "max_positive_similarity": 0.6,
     "adaptive_window": 40, "strategy": "softmax-v", "chunk_size": 900},
])
def test_select_publishes_the_bytes_mine_would(cached, sample_teacher, tmp_path, options):
    config, cache = cached
    if options.pop("teacher", False):
        options.update(teacher_users=str(sample_teacher[0]), teacher_items=str(sample_teacher[1]))
    mined = config.with_options(out=str(tmp_path / "mine"), **options)
    mine(mined)
    selected = mined.with_options(out=str(tmp_path / "select"), threads=1)
    report = select(selected, cache)
    assert digests(tmp_path / "select") == digests(tmp_path / "mine")
    assert len(digests(tmp_path / "mine")) == 9 + ("adaptive_window" in options)  # + user_bucket.parquet
    assert report.rows["hard_neg_edge"] > 0
    manifest = json.loads((tmp_path / "select" / "manifest.json").read_text())
    assert manifest["tool"] == "hnmine select" and manifest["format"] == "mine"
    assert "retrieve" not in manifest["summary"]["timings"]


def test_the_cache_holds_ranks_1_to_hi_in_canonical_order(cached):
    config, cache = cached
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["format"] == "candidates" and manifest["candidates"]["depth"] == 400
    assert manifest["candidates"]["users"] == 2986
    items, scores = np.load(cache / "item_rows.npy"), np.load(cache / "scores.npy")
    assert items.shape == scores.shape == (2986, 400) and items.dtype == np.int32
    # score descending, ties by item row; never one of the user's positives
    assert (np.diff(scores, axis=1) <= 0).all()
    ties = np.diff(scores, axis=1) == 0
    assert (np.diff(items, axis=1)[ties] > 0).all()
    item_ids = pl.read_parquet(config.inputs.items)["id"].to_numpy()
    user_ids = pl.read_parquet(config.inputs.users)["id"].to_numpy()
    positives = lightgcn_positives(TRAIN)
    for row in range(0, 2986, 97):
        assert not positives[user_ids[row]] & set(item_ids[items[row]].tolist())
    mined = pl.read_parquet(Path(config.output.out) / "hard_neg_edge.parquet")
    assert (mined["rank"] >= 1).all() and (mined["rank"] <= 400).all()


def test_window_beyond_the_cached_depth_is_refused(cached, tmp_path, cli):
    config, cache = cached
    with pytest.raises(InputError, match="beyond the cached depth 400"):
        select(config.with_options(out=str(tmp_path / "o"), rank_window="101:401"), cache)
    # an adaptive window reads every rank a user may move to: 101:300 moved by up to 2 x 60 ends at 420
    with pytest.raises(InputError, match="rank window 41:420 goes beyond the cached depth 400"):
        select(config.with_options(out=str(tmp_path / "o"), rank_window="101:300", adaptive_window=60), cache)
    assert not (tmp_path / "o").exists()
    user, item = config.inputs.users, config.inputs.items
    result = cli("select", "--candidates", cache, "--users", user, "--items", item, "--positives", TRAIN,
                 "--rank-window", "300:500", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "beyond the cached depth" in result.output
    assert not (tmp_path / "o").exists()


def test_stale_or_mismatched_cache_is_refused_in_one_line(cached, tmp_path, cli):
    config, cache = cached
    # other embeddings (retrained: another seed), other positives, another metric, not a cache at all
    other = write_svd_embeddings(read_positives(TRAIN), tmp_path / "emb2", dim=32, seed=1)
    fewer = tmp_path / "train_fewer.txt"
    lines = TRAIN.read_text().splitlines()
    fewer.write_text("\n".join([" ".join(lines[0].split()[:-1]), *lines[1:]]) + "\n")
    cases = [
        (["--users", other[0], "--items", other[1], "--positives", TRAIN], "stale or mismatched"),
        (["--users", config.inputs.users, "--items", config.inputs.items, "--positives", fewer], "stale or mismatched"),
        (["--users", config.inputs.users, "--items", config.inputs.items, "--positives", TRAIN, "--metric", "cosine"],
         "ranked with --metric ip"),
    ]
    for args, message in cases:
        result = cli("select", "--candidates", cache, *args, "--rank-window", "101:400", "--out", tmp_path / "o")
        assert result.exit_code == 2, result.output
        assert result.output.strip().count("\n") == 0 and message in result.output
        assert not (tmp_path / "o").exists()
    result = cli("select", "--candidates", config.output.out, "--users", config.inputs.users, "--items", config.inputs.items,
                 "--positives", TRAIN, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "not a candidate cache" in result.output


def test_stale_user_vectors_alone_are_refused_before_publishing(cached, tmp_path):
    config, cache = cached
    users = pl.read_parquet(config.inputs.users)
    vectors = np.stack(users["embedding"].to_numpy())
    vectors[-1, 0] += 1.0  # the last user only: found after every chunk is selected, before publishing
    changed = tmp_path / "user.parquet"
    users.with_columns(pl.Series("embedding", vectors.astype(np.float32).tolist(),
                                 dtype=users.schema["embedding"])).write_parquet(changed)
    with pytest.raises(InputError, match="other user vectors"):
        select(config.with_options(users=str(changed), out=str(tmp_path / "o")), cache)
    assert not (tmp_path / "o").exists()


def test_save_candidates_keeps_mine_output_and_refuses_foreign_directories(sample_embeddings, tmp_path):
    user, item = sample_embeddings
    base = MineConfig.of(users=str(user), items=str(item), positives=str(TRAIN), out=str(tmp_path / "a"))
    mine(base)
    mine(base.with_options(out=str(tmp_path / "b"), save_candidates=str(tmp_path / "cand")))
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an hnmine output"):
        mine(base.with_options(out=str(tmp_path / "c"), save_candidates=str(foreign)))
    assert (foreign / "notes.txt").read_text() == "mine" and not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="a directory of its own"):
        mine(base.with_options(out=str(tmp_path / "c"), save_candidates=str(tmp_path / "c")))


def _published(out: Path) -> dict[str, set[str]]:
    frame = pl.read_parquet(out / "hard_neg_edge.parquet").group_by("user_id").agg(pl.col("item_id"))
    return {str(u): {str(i) for i in items} for u, items in frame.iter_rows()}


def test_near_duplicates_of_positives_are_never_negatives(cached, tmp_path):
    config, _ = cached
    positives = {str(u): {str(i) for i in items} for u, items in lightgcn_positives(TRAIN).items()}
    items = pl.read_parquet(config.inputs.items)
    row = {str(i): r for r, i in enumerate(items["id"].to_list())}
    unit = np.stack(items["embedding"].to_numpy()).astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    plain = config.with_options(rank_window="101:400", out=str(tmp_path / "plain"))
    mine(plain)
    mine(plain.with_options(out=str(tmp_path / "cos"), max_positive_similarity=0.8))
    before, after = _published(tmp_path / "plain"), _published(tmp_path / "cos")
    near = 0
    for user, negatives in before.items():
        own = unit[[row[i] for i in positives[user]]]
        for item in negatives:
            near += float((own @ unit[row[item]]).max()) > 0.8 + 1e-5
    assert near > 100  # the filter has something to remove on this data
    for user, negatives in after.items():
        own = unit[[row[i] for i in positives[user]]]
        assert all(float((own @ unit[row[i]]).max()) <= 0.8 + 1e-5 for i in negatives)
    # a key column: no negative shares its popularity bucket with one of the user's positives
    features = pl.read_csv(SAMPLE / "item_features.csv")
    bucket = dict(zip(map(str, features["id"]), features["popularity_bucket"], strict=True))
    mine(plain.with_options(out=str(tmp_path / "key"), item_features=str(SAMPLE / "item_features.csv"),
                 exclude_same="popularity_bucket", allow_empty=True))
    keyed = _published(tmp_path / "key")
    assert keyed and sum(map(len, keyed.values())) < sum(map(len, before.values()))
    for user, negatives in keyed.items():
        assert not {bucket[i] for i in negatives} & {bucket[i] for i in positives[user]}
    with pytest.raises(InputError, match="no column 'colour'"):
        mine(plain.with_options(out=str(tmp_path / "x"), item_features=str(SAMPLE / "item_features.csv"),
                     exclude_same="colour"))
    with pytest.raises(InputError, match="--exclude-same"):
        mine(plain.with_options(out=str(tmp_path / "x"), exclude_same="popularity_bucket"))


def test_teacher_scores_set_the_filters_and_the_model_the_window(cached, sample_teacher, tmp_path):
    """With a teacher, every published negative passes --max-score and the margin on the teacher's
    scores (its own, not the mined model's, which the published score and rank stay); ids the teacher
    lacks are refused in one line naming its file and one of them."""
    config, _ = cached
    t_user, t_item = sample_teacher
    vectors = {name: dict(zip(map(str, t["id"]), np.stack(t["embedding"].to_numpy()).astype(np.float32), strict=True))
               for name, t in (("user", pl.read_parquet(t_user)), ("item", pl.read_parquet(t_item)))}
    positives = {str(u): [str(i) for i in items] for u, items in lightgcn_positives(TRAIN).items()}
    base = config.with_options(rank_window="101:300", strategy="all")
    mine(base.with_options(out=str(tmp_path / "plain"), max_score=0.004, relative_margin=0.2))
    mine(base.with_options(out=str(tmp_path / "teacher"), max_score=0.004, relative_margin=0.2,
                           teacher_users=str(t_user), teacher_items=str(t_item)))
    plain, taught = (pl.read_parquet(tmp_path / name / "hard_neg_edge.parquet") for name in ("plain", "teacher"))
    unfiltered = mine(base.with_options(out=str(tmp_path / "all"))).rows["hard_neg_edge"]
    assert plain.height < unfiltered and taught.height < unfiltered and plain.height != taught.height
    for user, item, rank in taught.select("user_id", "item_id", "rank").iter_rows():
        t = float(vectors["user"][str(user)] @ vectors["item"][str(item)])
        ref = float(np.median([vectors["user"][str(user)] @ vectors["item"][p] for p in positives[str(user)]]))
        assert t <= 0.004 + 1e-6 and t <= ref - abs(ref) * 0.2 + 1e-6
        assert 101 <= rank <= 300
    # the same (user, item) pairs carry the same model score and rank with or without the teacher
    both = plain.join(taught, on=["user_id", "item_id"], suffix="_t")
    assert both.height > 0 and (both["rank"] == both["rank_t"]).all() and (both["score"] == both["score_t"]).all()
    short = tmp_path / "short_user.parquet"
    pl.read_parquet(t_user).filter(pl.col("id").cast(pl.String) != str(plain["user_id"][0])).write_parquet(short)
    with pytest.raises(InputError, match=f"short_user.parquet: no vector for id .*{plain['user_id'][0]}.*must cover"):
        mine(base.with_options(out=str(tmp_path / "x"), teacher_users=str(short), teacher_items=str(t_item)))
    with pytest.raises(InputError, match="--teacher-users and --teacher-items go together"):
        mine(base.with_options(out=str(tmp_path / "x"), teacher_users=str(t_user)))


def test_adaptive_windows_are_published_beside_the_table_and_rated_per_bucket(cached, tmp_path):
    """--adaptive-window: each user's negatives come from the window user_bucket.parquet gives it, the
    buckets' windows are LO:HI moved by -S, 0, S, 2S, and evaluate's false-negative rate per bucket adds
    up to the whole table's."""
    config, _ = cached
    adaptive = config.with_options(out=str(tmp_path / "m"), rank_window="101:300", adaptive_window=40, num_hard=8)
    report = mine(adaptive.with_options(save_candidates=str(tmp_path / "cand")))  # the cache holds ranks 1..380
    select(adaptive.with_options(out=str(tmp_path / "s")), tmp_path / "cand")
    assert digests(tmp_path / "s") == digests(tmp_path / "m")
    assert report.adaptive and sum(b["users"] for b in report.adaptive.values()) == report.users
    assert {name: b["shift"] for name, b in report.adaptive.items()} == {
        "confident": -40, "sure": 0, "unsure": 40, "lost": 80}  # every bucket holds users on this slice
    assert {name: b["rank_window"] for name, b in report.adaptive.items()} == {
        "confident": "61:260", "sure": "101:300", "unsure": "141:340", "lost": "181:380"}
    buckets = pl.read_parquet(tmp_path / "m" / "user_bucket.parquet")
    edges = pl.read_parquet(tmp_path / "m" / "hard_neg_edge.parquet").join(buckets, on="user_id")
    assert edges.height == report.rows["hard_neg_edge"]
    assert edges.filter((pl.col("rank") < pl.col("rank_lo")) | (pl.col("rank") > pl.col("rank_hi"))).height == 0
    rates = evaluate(config.inputs.users, config.inputs.items, TRAIN, SAMPLE / "test.txt",
                     hard_negatives=tmp_path / "m" / "hard_neg_edge.parquet").hard_negatives
    per = rates["buckets"]
    assert sum(b["rows"] for b in per.values()) == rates["rows"]
    assert sum(b["heldout_positives"] for b in per.values()) == rates["heldout_positives"] > 0
    assert {n: b["rank_window"] for n, b in per.items()} == {n: b["rank_window"] for n, b in report.adaptive.items()}
    plain = evaluate(config.inputs.users, config.inputs.items, TRAIN, SAMPLE / "test.txt",
                     hard_negatives=Path(config.output.out) / "hard_neg_edge.parquet").hard_negatives
    assert plain["rows"] > 0 and "buckets" not in plain  # no side table: no buckets
