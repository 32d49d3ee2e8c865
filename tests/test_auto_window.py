"""--rank-window auto: held-out ranks, the window choice (properties), and the loop choosing it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from hnmine.cli.main import app
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hnmine.errors import InputError
from hnmine.evaluate import choose_rank_window, heldout_rank_rates
from hnmine.loop.runner import RunConfig, run
from tests.conftest import SAMPLE, TEST, TINY, TRAIN, tiny_config


def _csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    return indptr, np.array([i for x in lists for i in x], dtype=np.int64)


def test_heldout_ranks_are_counted_among_non_positive_items():
    rng = np.random.default_rng(3)
    users, items = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(90, 6)).astype(np.float32)
    train = [sorted(rng.choice(90, rng.integers(0, 30), replace=False).tolist()) for _ in range(40)]
    held = [sorted(rng.choice(sorted(set(range(90)) - set(t)), rng.integers(0, 4), replace=False).tolist())
            for t in train]
    rates = heldout_rank_rates(users, items, *_csr(train), *_csr(held), max_rank=50, chunk=7)
    expected = np.zeros(50)
    for u in range(40):
        scores = items @ users[u]
        free = np.setdiff1d(np.arange(90), train[u])
        order = free[np.argsort(-scores[free], kind="stable")]
        for item in held[u]:
            rank = int(np.flatnonzero(order == item)[0]) + 1
            if rank <= 50:
                expected[rank - 1] += 1
    evaluated = sum(1 for h in held if h)
    np.testing.assert_allclose(rates, expected / evaluated)
    assert rates.sum() <= sum(len(h) for h in held) / evaluated  # ranks past max_rank are not counted


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 0.05, allow_nan=False), min_size=1, max_size=60),
       st.integers(1, 70), st.floats(0, 0.05, allow_nan=False))
def test_the_chosen_window_is_the_hardest_that_meets_the_rate(values, width, max_rate):
    rates = np.array(values)
    lo, hi, mean, met = choose_rank_window(rates, width, max_rate)
    width = min(width, len(rates))
    assert hi - lo + 1 == width and lo >= 1 and hi <= len(rates)
    means = [rates[s : s + width].mean() for s in range(len(rates) - width + 1)]
    assert mean == pytest.approx(means[lo - 1])
    if met:
        assert mean <= max_rate + 1e-9
        assert all(m > max_rate - 1e-9 for m in means[: lo - 1])  # no harder window meets it
    else:
        assert all(m > max_rate - 1e-9 for m in means)
        assert mean == pytest.approx(min(means))


def test_run_with_auto_window_mines_the_window_it_chose(tmp_path, sample_teacher):
    """... and a run mines every round with a teacher's margin and adaptive windows: each round's metrics
    carry the false-negative rate per bucket around the window it chose."""
    out = tmp_path / "run"
    config = RunConfig.of(positives=str(TRAIN), out=str(out), iterations=2, test=str(TEST), valid_fraction=0.2,
                          rank_window="auto", window_width=30, max_false_negative_rate=0.01, num_hard=5,
                          teacher_users=str(sample_teacher[0]), teacher_items=str(sample_teacher[1]),
                          absolute_margin=0.0, adaptive_window=5, train=tiny_config(tmp_path, regime="shared"))
    results = run(config)
    chosen = results[1].hard_negatives
    lo = int(chosen["rank_window"].split(":")[0])
    for split in ("valid", "test"):
        buckets = chosen[f"bucket_false_negative_rates_{split}"]
        assert sum(b["rows"] for b in buckets.values()) == chosen["rows"]
        assert buckets.get("sure", {"rank_window": chosen["rank_window"]})["rank_window"] == chosen["rank_window"]
        for name, shift in (("confident", -5), ("unsure", 5)):
            if name in buckets:
                assert int(buckets[name]["rank_window"].split(":")[0]) == max(1, lo + shift)
    mined_options = json.loads((out / "round_01" / "mined" / "manifest.json").read_text())["options"]
    assert mined_options["teacher_users"] == str(sample_teacher[0]) and mined_options["adaptive_window"] == 5
    lo, hi = map(int, chosen["rank_window"].split(":"))
    assert hi - lo + 1 == 30
    assert chosen["window_rate_met"] == (chosen["window_false_negative_rate_valid"] <= 0.01)
    mined = json.loads((out / "round_01" / "mined" / "manifest.json").read_text())
    assert mined["options"]["rank_window"] == chosen["rank_window"]
    trained = json.loads((out / "round_01" / "manifest.json").read_text())["train"]
    assert trained["hard_window"] == 30


def test_auto_window_needs_a_validation_split(tmp_path):
    assert RunConfig.of(positives="", out="").selection.rank_window == "auto"  # the default
    with pytest.raises(InputError, match="--valid-fraction"):
        RunConfig.of(positives=str(TRAIN), out=str(tmp_path / "r"), test=str(TEST), valid_fraction=0).validate()
    result = CliRunner().invoke(app, ["run", "--positives", str(TRAIN), "--test", str(TEST), "--valid-fraction", "0",
                                      "--out", str(tmp_path / "r"), *TINY])
    assert result.exit_code == 2
    assert "--valid-fraction" in result.output and "\n" not in result.output.strip()
    assert not (tmp_path / "r").exists()


def test_evaluate_suggests_the_window_the_heldout_positives_allow(tmp_path):
    from hnmine.embed.svd import write_svd_embeddings
    from hnmine.evaluate import evaluate, window_false_negative_rates
    from hnmine.io.positives import read_positives

    users, items = write_svd_embeddings(read_positives(TRAIN), tmp_path / "emb", dim=16)
    strict = evaluate(users, items, TRAIN, TEST, window_width=40, max_false_negative_rate=0.002).window
    loose = evaluate(users, items, TRAIN, TEST, window_width=40, max_false_negative_rate=1.0).window
    assert loose["rank_window"] == "1:40" and loose["met"]  # any rate allowed: the hardest window
    rates = window_false_negative_rates(users, items, read_positives(TRAIN), read_positives(TEST))
    lo, hi = map(int, strict["rank_window"].split(":"))
    assert strict["false_negative_rate"] == pytest.approx(rates[lo - 1 : hi].mean())
    assert lo > 1  # the SVD's top ranks hold more than 0.2% of the test positives
    result = CliRunner().invoke(app, ["evaluate", "--users", str(users), "--items", str(items), "--train", str(TRAIN),
                                      "--test", str(TEST), "--window-width", "40",
                                      "--max-false-negative-rate", "0.002"])
    assert result.exit_code == 0, result.output
    assert f"--rank-window {strict['rank_window']}" in result.output


def test_run_applies_the_margin_filter_in_every_round(tmp_path):
    """--relative-margin reaches the miner: every mined negative scores below 70% of the user's best positive."""
    out = tmp_path / "run"
    config = RunConfig.of(positives=str(TRAIN), out=str(out), iterations=2, test=str(TEST), valid_fraction=0,
                          rank_window="1:500", num_hard=5, relative_margin=0.3, margin_reference="max",
                          train=tiny_config(tmp_path, regime="shared"))
    run(config)
    mined = out / "round_01" / "mined"
    assert json.loads((mined / "manifest.json").read_text())["options"]["relative_margin"] == 0.3
    emb = out / "round_00" / "embeddings"
    users = pl.read_parquet(emb / "user.parquet")
    items = pl.read_parquet(emb / "item.parquet")
    user_row = {u: i for i, u in enumerate(users["id"].to_list())}
    item_row = {t: i for i, t in enumerate(items["id"].to_list())}
    u_vec, i_vec = np.stack(users["embedding"].to_numpy()), np.stack(items["embedding"].to_numpy())
    train = pl.read_parquet(out / "data" / "train.parquet")
    scores = (u_vec[[user_row[u] for u in train["user_id"]]] * i_vec[[item_row[t] for t in train["item_id"]]]).sum(1)
    reference = train.with_columns(score=pl.Series(scores)).group_by("user_id").agg(ref=pl.col("score").max())
    hard = pl.read_parquet(mined / "hard_neg_edge.parquet").join(reference, on="user_id")
    assert hard.height > 0
    assert (hard["score"] <= hard["ref"] - hard["ref"].abs() * 0.3 + 1e-5).all()
    # without the filter the same round mines negatives above that line
    unfiltered = replace(config, out=str(tmp_path / "plain"), selection=replace(config.selection, relative_margin=None))
    run(unfiltered)
    plain = pl.read_parquet(tmp_path / "plain" / "round_01" / "mined" / "hard_neg_edge.parquet").join(reference, on="user_id")
    assert (plain["score"] > plain["ref"] - plain["ref"].abs() * 0.3).any()


def test_mis_correction_refuses_a_filtered_window(tmp_path):
    result = CliRunner().invoke(app, ["run", "--positives", str(TRAIN), "--test", str(TEST), "--relative-margin",
                                      "0.3", "--hard-correction", "mis", "--out", str(tmp_path / "r"), *TINY])
    assert result.exit_code == 2
    assert "--hard-correction mis" in result.output and "\n" not in result.output.strip()
    assert not (tmp_path / "r").exists()


def test_run_writes_the_item_features_into_every_rounds_item_table(tmp_path):
    """--item-features reaches each round's mining: item.txt carries the attrs the samplers read."""
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--positives", str(TRAIN), "--test", str(TEST), "--iterations", "2",
                                      "--rank-window", "1:50", "--item-features", str(SAMPLE / "item_features.csv"),
                                      "--attr-columns", "location_id", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    features = pl.read_csv(SAMPLE / "item_features.csv")
    location = dict(zip(features["id"].to_list(), features["location_id"].cast(pl.String).to_list()))
    mined = out / "round_01" / "mined"
    rows = (mined / "item.txt").read_text().splitlines()[1:]
    assert rows and all(attrs == location.get(int(item), item) for item, _, attrs in (r.split("\t") for r in rows))
    options = json.loads((mined / "manifest.json").read_text())["options"]
    assert options["attr_columns"] == ["location_id"] and options["item_features"].endswith("item_features.csv")
    assert json.loads((out / "run.json").read_text())["attr_columns"] == ["location_id"]


@pytest.mark.parametrize("options", [["--item-features", "missing.csv"], ["--attr-columns", "nosuch"]])
def test_run_refuses_bad_item_features_before_training(tmp_path, options):
    extra = options if options[0] == "--item-features" else ["--item-features", str(SAMPLE / "item_features.csv"), *options]
    result = CliRunner().invoke(app, ["run", "--positives", str(TRAIN), "--iterations", "2", "--out",
                                      str(tmp_path / "r"), *extra, *TINY])
    assert result.exit_code == 2
    assert "\n" not in result.output.strip() and ("missing.csv" in result.output or "nosuch" in result.output)
    assert not (tmp_path / "r").exists()
