"""Trainer, export, evaluation and the round loop, through the library and the CLI on sample_data."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch
from hnmine.cli.main import app
from typer.testing import CliRunner

from hnmine.embed.export import export_embeddings
from hnmine.errors import InputError
from hnmine.evaluate import evaluate, false_negative_rate, holdout_split, ranking_metrics
from hnmine.io.embeddings import read_embeddings
from hnmine.io.positives import read_positives
from hnmine.io.tables import read_hard_negatives
from hnmine.training.config import TrainConfig
from hnmine.training.data import TrainData, load_train_data
from hnmine.training.loss import positive_mask, sampled_softmax_loss
from hnmine.training.model import TwoTower, load_model
from hnmine.training.ops import bag_sums, gathered_dots
from hnmine.training.trainer import _build_model, _sample_easy, deterministic_kernels, train
from tests.conftest import SMALL_USERS, TEST, TINY, TRAIN, tiny_config

# ------------------------------------------------------------------------------------------------ loss


def reference_loss(users, positives, cands, bias, mask, temperature, hard=None, hard_valid=None, offset=0.0):
    """Plain autograd: log-softmax over [pos | masked candidates + bias | hard + offset], label 0."""
    pos = (users * positives).sum(-1, keepdim=True) / temperature
    shared = users @ cands.T / temperature + bias
    shared = shared.masked_fill(mask, -math.inf)
    parts = [pos, shared]
    if hard is not None:
        h = torch.einsum("bd,bhd->bh", users, hard) / temperature + offset
        parts.append(h.masked_fill(~hard_valid, -math.inf))
    logits = torch.cat(parts, dim=1)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def test_fused_loss_and_gradients_match_autograd_reference():
    torch.manual_seed(0)
    b, m, h, d = 6, 9, 3, 5
    leaves = [torch.randn(n, d, requires_grad=True) for n in (b, b, m)]
    hard_raw = torch.randn(b, h, d, requires_grad=True)
    bias = torch.randn(m)
    mask = torch.rand(b, m) < 0.3
    hard_valid = torch.rand(b, h) < 0.7
    rows, cols = mask.nonzero(as_tuple=True)

    def unit(t):
        return torch.nn.functional.normalize(t, dim=-1)

    hard_dots = (unit(leaves[0])[:, None, :] * unit(hard_raw)).sum(-1)
    fused = sampled_softmax_loss(unit(leaves[0]), unit(leaves[1]), unit(leaves[2]), bias, rows, cols, 0.1,
                                 hard_dots, hard_valid, 1.5)
    grads_fused = torch.autograd.grad(fused, [*leaves, hard_raw])
    ref = reference_loss(unit(leaves[0]), unit(leaves[1]), unit(leaves[2]), bias, mask, 0.1, unit(hard_raw),
                         hard_valid, 1.5)
    grads_ref = torch.autograd.grad(ref, [*leaves, hard_raw])
    assert torch.allclose(fused, ref, atol=1e-5)
    for a, r in zip(grads_fused, grads_ref, strict=True):
        assert torch.allclose(a, r, atol=1e-5)


def test_masked_positive_is_removed_from_the_denominator():
    """A candidate that is a positive of the row's user must not count as a negative."""
    torch.manual_seed(1)
    users = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    pos = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    cands = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    bias = torch.zeros(3)
    masked = sampled_softmax_loss(users, pos, cands, bias, torch.tensor([0]), torch.tensor([1]), 0.1)
    # Same as dropping candidate 1 for row 0 only: compute per row by hand.
    row0 = sampled_softmax_loss(users[:1], pos[:1], cands[[0, 2]], bias[:2], torch.empty(0, dtype=torch.long),
                                torch.empty(0, dtype=torch.long), 0.1)
    row1 = sampled_softmax_loss(users[1:], pos[1:], cands, bias, torch.empty(0, dtype=torch.long),
                                torch.empty(0, dtype=torch.long), 0.1)
    assert torch.allclose(masked, (row0 + row1) / 2, atol=1e-6)


def test_positive_mask_finds_every_duplicate():
    cands = torch.tensor([5, 3, 5, 9, 1, 3])
    pos_bag = torch.tensor([0, 0, 1, 1, 2])
    pos_items = torch.tensor([3, 7, 5, 1, 2])
    rows, cols = positive_mask(cands, pos_bag, pos_items)
    got = sorted(zip(rows.tolist(), cols.tolist(), strict=True))
    want = sorted((int(b), j) for b, item in zip(pos_bag, pos_items, strict=True)
                  for j, c in enumerate(cands.tolist()) if c == int(item))
    assert got == want == [(0, 1), (0, 5), (1, 0), (1, 2), (1, 4)]


def _data(n_items: int = 10) -> TrainData:
    counts = np.arange(1, n_items + 1, dtype=np.float64)
    return TrainData(
        user_ids=np.arange(3), item_ids=np.arange(n_items), users=np.zeros(1, dtype=np.int64),
        items=np.zeros(1, dtype=np.int64), indptr=np.zeros(4, dtype=np.int64), hist=np.zeros(0, dtype=np.int64),
        item_weight=counts**0.75, pool=np.arange(0, n_items, 2), popularity=counts / counts.sum(),
    )


@pytest.mark.parametrize("regime", ["shared", "v2", "mixed"])
def test_logq_is_minus_log_expected_count(regime):
    data = _data()
    tensors = {"weight_p": torch.from_numpy(data.item_weight / data.item_weight.sum()).double(),
               "pool": torch.from_numpy(data.pool), "popularity": torch.from_numpy(data.popularity)}
    config = TrainConfig(positives="", out="", regime=regime, num_sample=4)
    pos = torch.tensor([1, 2, 2])
    cands, bias = _sample_easy(config, data, tensors, pos, torch.Generator().manual_seed(0))
    q = data.item_weight / data.item_weight.sum()
    if regime == "shared":
        expected = -np.log(4 * q[cands.numpy()])
    elif regime == "v2":
        assert set(cands.tolist()) <= set(data.pool.tolist())
        expected = np.full(4, -np.log(4 / len(data.pool)))
    else:
        assert cands[:3].tolist() == [1, 2, 2]
        expected = -np.log(3 * data.popularity[cands.numpy()] + 4 / 10)
    assert np.allclose(bias.numpy(), expected, atol=1e-6)
    off = TrainConfig(positives="", out="", regime=regime, num_sample=4, logq=False)
    _, zero = _sample_easy(off, data, tensors, pos, torch.Generator().manual_seed(0))
    assert torch.count_nonzero(zero) == 0


# ------------------------------------------------------------------------------------------ hard negatives


def test_hard_negatives_are_the_first_num_hard_sample_by_weight(tmp_path):
    edges = pl.DataFrame({
        "user_id": [1, 1, 1, 1, 2, 2, 9],
        "item_id": [10, 11, 12, 13, 10, 11, 10],
        "weight": [0.1, 0.9, 0.5, 0.9, 1.0, 1.0, 1.0],
    })
    path = tmp_path / "hard_neg_edge.parquet"
    edges.write_parquet(path)
    hard, rows, users = read_hard_negatives(path, np.array([1, 2, 3]), np.array([10, 11, 12, 13]), 2)
    # user 1: weights 0.9 (item 11, first in file), 0.9 (item 13), 0.5, 0.1 -> items 11, 13
    # user 2: tie -> file order; user 3: none; user 9 is unknown
    assert hard.tolist() == [[1, 3], [0, 1], [-1, -1]]
    assert (rows, users) == (4, 2)


# ------------------------------------------------------------------------------------------------ metrics


def test_ranking_metrics_match_a_hand_computed_reference():
    items = np.eye(5, dtype=np.float32)
    # user 0 ranks items 0 > 1 > 2 > 3 > 4; user 1 ranks 4 > 3 > 2 > 1 > 0
    users = np.array([[5, 4, 3, 2, 1], [1, 2, 3, 4, 5]], dtype=np.float32)
    train_indptr, train_items = np.array([0, 1, 1]), np.array([0])  # user 0's item 0 is a train item: masked
    test_indptr, test_items = np.array([0, 2, 3]), np.array([2, 4, 0])
    got = ranking_metrics(users, items, train_indptr, train_items, test_indptr, test_items, ks=(2, 3))
    # user 0 ranking after masking: 1, 2, 3, 4; test {2, 4}: hit at rank 2 (@2), ranks 2 (@3)
    # user 1 ranking: 4, 3, 2, 1, 0; test {0}: no hit @2 or @3
    d = [1 / math.log2(r + 2) for r in range(3)]
    assert got["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["recall@3"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["ndcg@2"] == pytest.approx((d[1] / (d[0] + d[1]) + 0) / 2)
    assert got["ndcg@3"] == pytest.approx((d[1] / (d[0] + d[1]) + 0) / 2)
    # recall denominator can include held-out items without a vector
    got = ranking_metrics(users, items, train_indptr, train_items, test_indptr, test_items, np.array([4, 1]), ks=(2,))
    assert got["recall@2"] == pytest.approx((1 / 4) / 2)


def test_false_negative_rate_counts_heldout_positives(tmp_path):
    path = tmp_path / "hard_neg_edge.parquet"
    pl.DataFrame({"user_id": [0, 0, 1, 1], "item_id": [5, 6, 5, 7], "weight": [1.0] * 4}).write_parquet(path)
    heldout = pl.DataFrame({"user_id": [0, 1], "item_id": [6, 6], "weight": [1.0, 1.0]})
    assert false_negative_rate(path, heldout) == {"rows": 4, "heldout_positives": 1, "rate": 0.25}


def test_holdout_split_is_disjoint_seeded_and_keeps_single_item_users():
    positives = read_positives(TRAIN)
    train_a, valid_a = holdout_split(positives, 0.2, seed=3)
    train_b, valid_b = holdout_split(positives, 0.2, seed=3)
    assert train_a.table.equals(train_b.table) and valid_a.table.equals(valid_b.table)
    assert train_a.table.height + valid_a.table.height == positives.table.height
    assert train_a.table.join(valid_a.table, on=["user_id", "item_id"]).height == 0
    assert train_a.table["user_id"].n_unique() == positives.table["user_id"].n_unique()


# --------------------------------------------------------------------------------------- train and export


def test_train_is_reproducible_and_export_is_mine_input(tmp_path):
    a = train(tiny_config(tmp_path, out=str(tmp_path / "a.pt")))
    train(tiny_config(tmp_path, out=str(tmp_path / "b.pt")))
    ma, mb = load_model(tmp_path / "a.pt"), load_model(tmp_path / "b.pt")
    for key, value in ma.model.state_dict().items():
        assert torch.equal(value, mb.model.state_dict()[key])
    assert a.users == SMALL_USERS and a.epochs and math.isfinite(a.epochs[0]["loss"])
    report = export_embeddings(tmp_path / "a.pt", tmp_path / "emb")
    users = read_embeddings(report.user_path)
    items = read_embeddings(report.item_path)
    assert users.dim == items.dim == 8 and len(users) == SMALL_USERS
    assert np.allclose(np.linalg.norm(items.vectors, axis=1), 1, atol=1e-5)
    result = evaluate(report.user_path, report.item_path, TRAIN, TEST)
    assert set(result.metrics) == {"recall@20", "ndcg@20", "recall@50", "ndcg@50"}


def test_distinct_item_table_matches_normalising_each_gather():
    torch.manual_seed(0)
    model = TwoTower(5, 30, 8)
    rows = (torch.randint(30, (6,)), torch.randint(30, (4,)), torch.randint(30, (6, 3)))
    table, local = model.distinct_item_table(*rows)
    fast = [table[r] for r in local]
    weights = torch.randn(sum(r.numel() for r in rows) * 8)
    torch.dot(torch.cat([v.reshape(-1) for v in fast]), weights).backward()
    grad_fast = model.item.weight.grad.clone()
    model.item.weight.grad = None
    slow = [model.item_vectors(r) for r in rows]
    torch.dot(torch.cat([v.reshape(-1) for v in slow]), weights).backward()
    for a, b in zip(fast, slow, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(grad_fast, model.item.weight.grad, atol=1e-5)


def test_gathered_dots_match_the_gather_and_its_gradients():
    torch.manual_seed(0)
    users = torch.randn(7, 12, requires_grad=True)
    table = torch.randn(9, 12, requires_grad=True)
    index = torch.randint(9, (7, 5))
    weights = torch.randn(7, 5)
    weights[0, :2] = 0  # masked slots: no gradient
    fast = gathered_dots(users, table, index)
    grads_fast = torch.autograd.grad((fast * weights).sum(), [users, table])
    slow = torch.bmm(table[index], users[:, :, None]).squeeze(2)
    grads_slow = torch.autograd.grad((slow * weights).sum(), [users, table])
    assert torch.allclose(fast, slow, atol=1e-5)
    for a, b in zip(grads_fast, grads_slow, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_bag_sums_match_index_add_and_its_gradients():
    torch.manual_seed(0)
    table = torch.randn(11, 6, requires_grad=True)
    counts = torch.tensor([3, 0, 5, 1])
    bag = torch.repeat_interleave(torch.arange(4), counts)
    items = torch.randint(11, (int(counts.sum()),))
    weights = torch.rand(len(items))
    weights[1] = 0  # a dropped history item
    fast = bag_sums(table, items, bag, counts, weights)
    slow = torch.zeros(4, 6).index_add_(0, bag, table[items] * weights[:, None])
    out_grad = torch.randn(4, 6)
    (grad_fast,) = torch.autograd.grad(fast, table, out_grad)
    (grad_slow,) = torch.autograd.grad(slow, table, out_grad)
    assert torch.allclose(fast, slow, atol=1e-6) and torch.allclose(grad_fast, grad_slow, atol=1e-6)


def test_deterministic_kernels_on_every_device_and_restored():
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before
    with pytest.raises(RuntimeError, match="boom"), deterministic_kernels(torch.device("cuda")):
        assert torch.are_deterministic_algorithms_enabled()
        raise RuntimeError("boom")
    assert torch.are_deterministic_algorithms_enabled() == before


def test_multithreaded_cpu_training_is_repeatable_to_the_bit(tmp_path):
    # two threads: the item table's gradient was summed with atomics in any order (~1e-6 apart after an epoch)
    weights = []
    for name in ("a", "b"):
        train(tiny_config(tmp_path, out=str(tmp_path / f"{name}.pt"), threads=2, dim=16, num_sample=512))
        weights.append(load_model(tmp_path / f"{name}.pt").model.state_dict())
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_warm_start_copies_the_previous_weights(tmp_path):
    train(tiny_config(tmp_path, out=str(tmp_path / "a.pt")))
    config = tiny_config(tmp_path, out=str(tmp_path / "b.pt"), init=str(tmp_path / "a.pt"), seed=1)
    model = _build_model(config, load_train_data(config), torch.device("cpu"))
    a = load_model(tmp_path / "a.pt")
    assert torch.equal(a.model.item.weight, model.item.weight)
    assert torch.equal(a.model.user.weight, model.user.weight)


def test_positives_of_the_user_in_hard_negatives_are_masked(tmp_path):
    positives = read_positives(TRAIN).table
    first = positives.group_by("user_id").agg(pl.col("item_id").first()).sort("user_id")
    path = tmp_path / "hard.parquet"
    first.with_columns(pl.lit(1.0).alias("weight")).write_parquet(path)
    report = train(tiny_config(tmp_path, hard_negatives=str(path), num_hard_sample=1))
    assert report.hard_rows == first.height
    assert report.hard_masked_positives > 0  # every hard negative here is a positive: all masked in epoch 1


# ------------------------------------------------------------------------------------------------- CLI


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_run_two_rounds_then_resume(tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "--positives", TRAIN, "--test", TEST, "--iterations", 2, "--out", out,
                    "--rank-window", "11:60", "--num-hard", 4, *TINY)
    assert result.exit_code == 0, result.output
    for r in (0, 1):
        for name in ("model.pt", "embeddings/user.parquet", "embeddings/item.parquet", "metrics.json",
                     "manifest.json"):
            assert (out / f"round_{r:02d}" / name).exists()
    assert (out / "round_01" / "mined" / "hard_neg_edge.parquet").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["round"] for m in metrics] == [0, 1]
    assert metrics[1]["hard_negatives"]["rows"] == SMALL_USERS * 4
    assert 0 <= metrics[1]["hard_negatives"]["false_negative_rate_test"] < 0.05
    assert (out / "metrics.png").stat().st_size > 1000
    assert "test recall@20" in result.output
    best = json.loads((out / "best_round.json").read_text())
    chosen = max(metrics, key=lambda m: (m["metrics"]["valid"]["recall@20"], -m["round"]))
    assert best["round"] == chosen["round"] and best["split"] == "valid" and not best["stopped_early"]
    assert best["model"].endswith(f"round_{chosen['round']:02d}/model.pt")
    assert f"best round by validation recall@20: {chosen['round']}" in result.output

    # an interrupted round (no manifest) is redone; complete ones are kept
    round0 = (out / "round_00" / "manifest.json").stat().st_mtime_ns
    (out / "round_01" / "manifest.json").unlink()
    result = invoke("run", "--positives", TRAIN, "--test", TEST, "--iterations", 3, "--out", out,
                    "--rank-window", "11:60", "--num-hard", 4, *TINY)
    assert result.exit_code == 0, result.output
    assert (out / "round_00" / "manifest.json").stat().st_mtime_ns == round0
    assert [m["round"] for m in json.loads((out / "metrics.json").read_text())] == [0, 1, 2]

    # other options at the same --out: refused
    result = invoke("run", "--positives", TRAIN, "--test", TEST, "--iterations", 3, "--out", out, "--regime", "v2",
                    *TINY)
    assert result.exit_code == 2 and "other options" in result.output


def test_cli_train_export_evaluate(tmp_path):
    assert invoke("train", "--positives", TRAIN, "--out", tmp_path / "m.pt", "--regime", "shared", *TINY).exit_code == 0
    assert invoke("export", "--model", tmp_path / "m.pt", "--out-dir", tmp_path / "emb").exit_code == 0
    result = invoke("evaluate", "--users", tmp_path / "emb/user.parquet", "--items", tmp_path / "emb/item.parquet",
                    "--train", TRAIN, "--test", TEST, "--k", "10,20", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)["metrics"]) == {"recall@10", "ndcg@10", "recall@20", "ndcg@20"}


@pytest.mark.parametrize("args, message", [
    (["train", "--positives", TRAIN, "--out", "x.pt", "--regime", "bogus"], "--regime"),
    (["train", "--positives", "nope.txt", "--out", "x.pt"], "not found"),
    (["export", "--model", "nope.pt", "--out-dir", "e"], "not found"),
    (["run", "--positives", TRAIN, "--out", "r", "--iterations", "0", "--test", TEST], "--iterations"),
    (["run", "--positives", TRAIN, "--out", "r", "--valid-fraction", "0"], "nothing to evaluate"),
    (["evaluate", "--users", "u.parquet", "--items", "i.parquet", "--train", TRAIN, "--test", TEST, "--k", "x"], "--k"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output and result.output.strip().count("\n") == 0


def test_every_command_help_shows_an_example():
    for command in ("train", "export", "evaluate", "run"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output and f"hnmine {command}" in result.output


def test_run_with_a_validation_split_reports_valid_and_test(tmp_path):
    from hnmine.loop.runner import RunConfig, run

    config = RunConfig.of(positives=str(TRAIN), out=str(tmp_path / "run"), iterations=1, test=str(TEST),
                          valid_fraction=0.2, train=tiny_config(tmp_path))
    (result,) = run(config)
    assert set(result.metrics) == {"valid", "test"}
    valid = pl.read_parquet(tmp_path / "run" / "data" / "valid.parquet")
    train_rows = pl.read_parquet(tmp_path / "run" / "data" / "train.parquet")
    assert valid.height > 0 and train_rows.join(valid, on=["user_id", "item_id"]).height == 0


def _round(r: int, valid: float | None):
    from hnmine.loop.runner import RoundResult

    metrics = {"test": {"recall@20": 0.5}} | ({"valid": {"recall@20": valid}} if valid is not None else {})
    return RoundResult(round=r, metrics=metrics, hard_negatives={}, train_seconds=0, mine_seconds=0, epochs=1, loss=None)


def test_best_round_is_chosen_on_validation_only():
    from hnmine.loop.runner import best_round

    assert best_round([_round(0, 0.20), _round(1, 0.22), _round(2, 0.22), _round(3, 0.21)]).round == 1
    assert best_round([_round(0, None), _round(1, None)]) is None  # never chosen on test


def test_round_patience_stops_a_resumed_run_and_records_the_best_round(tmp_path):
    from hnmine.loop.runner import RunConfig, run

    out = tmp_path / "run"
    config = RunConfig.of(positives=str(TRAIN), out=str(out), iterations=2, test=str(TEST), rank_window="11:60",
                          num_hard=4, train=tiny_config(tmp_path))
    run(config)
    # make round 1 worse than round 0 on validation: with --round-patience 1 no round 2 is trained
    path = out / "round_01" / "metrics.json"
    saved = json.loads(path.read_text())
    first = json.loads((out / "round_00" / "metrics.json").read_text())["metrics"]["valid"]["recall@20"]
    saved["metrics"]["valid"]["recall@20"] = first / 2
    path.write_text(json.dumps(saved))
    results = run(replace(config, iterations=5, round_patience=1))
    assert [r.round for r in results] == [0, 1] and not (out / "round_02").exists()
    best = json.loads((out / "best_round.json").read_text())
    assert best["round"] == 0 and best["stopped_early"] and best["rounds_run"] == 2
    assert best["gain_over_round_0"] == 0.0
    with pytest.raises(InputError, match="--round-patience"):
        run(replace(config, round_patience=-1))
    # 0 turns it off: the same directory goes on to round 2
    assert [r.round for r in run(replace(config, iterations=3, round_patience=0))] == [0, 1, 2]
    assert json.loads((out / "best_round.json").read_text())["stopped_early"] is False


def test_cap_history_keeps_a_seeded_subset_of_each_users_items():
    from hnmine.training.data import cap_history

    indptr = np.array([0, 5, 6, 9])
    items = np.array([1, 2, 3, 4, 5, 7, 0, 8, 9])
    new_indptr, kept = cap_history(indptr, items, 2, seed=0)
    assert new_indptr.tolist() == [0, 2, 3, 5]
    for u in range(3):
        part = kept[new_indptr[u] : new_indptr[u + 1]]
        assert set(part) <= set(items[indptr[u] : indptr[u + 1]]) and list(part) == sorted(part)
    assert np.array_equal(cap_history(indptr, items, 2, seed=0)[1], kept)


def test_train_with_max_history(tmp_path):
    report = train(tiny_config(tmp_path, max_history=3))
    loaded = load_model(report.out)
    assert np.diff(loaded.indptr).max() <= 3


def test_refine_lr_applies_to_later_rounds_only_and_old_runs_resume(tmp_path):
    from hnmine.loop.runner import RunConfig, run

    out = tmp_path / "run"
    config = RunConfig.of(positives=str(TRAIN), out=str(out), iterations=2, test=str(TEST), rank_window="11:60",
                          num_hard=4, refine_lr=2e-3, refine_lr_min=2e-4, train=tiny_config(tmp_path))
    run(config)
    lrs = [json.loads((out / f"round_{r:02d}" / "manifest.json").read_text())["train"] for r in (0, 1)]
    assert (lrs[0]["lr"], lrs[0]["lr_min"]) == (config.train.lr, config.train.lr_min)
    assert (lrs[1]["lr"], lrs[1]["lr_min"]) == (2e-3, 2e-4)

    # a run.json written before the options existed resumes while they are at their defaults
    old = tmp_path / "old"
    defaults = RunConfig.of(positives="", out="")
    legacy = replace(config, out=str(old), iterations=1, refine_lr=defaults.refine_lr,
                     refine_lr_min=defaults.refine_lr_min)
    saved = {k: v for k, v in legacy.identity().items() if k not in ("refine_lr", "refine_lr_min")}
    shutil.copytree(out / "data", old / "data")
    shutil.copytree(out / "round_00", old / "round_00")
    (old / "run.json").write_text(json.dumps(saved, default=str))
    assert [r.round for r in run(legacy)] == [0]
    with pytest.raises(InputError, match="other options"):
        run(replace(legacy, refine_lr=2e-3))
