"""--hard-correction mis: the balance-heuristic weights, the window membership, and the loop's use."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from hnmine.embed.export import export_embeddings
from hnmine.errors import InputError
from hnmine.mining.config import MineConfig
from hnmine.mining.pipeline import mine
from hnmine.training.data import load_train_data
from hnmine.training.loss import WindowMembership, mis_biases
from hnmine.training.trainer import train
from tests.conftest import TEST, TRAIN, tiny_config


def _denominator_estimates(trials: int, correction: str) -> tuple[float, float, float]:
    """Mean over ``trials`` of the sampled estimate of sum_j exp(s_j) for one row; true total; window part."""
    gen = torch.Generator().manual_seed(0)
    n, window, m, h = 300, 60, 40, 6
    scores = torch.randn(n, generator=gen, dtype=torch.float64)
    scores[:window] += 2.0  # the window holds the high-scoring items, as a mined window does
    q = torch.rand(n, generator=gen, dtype=torch.float64) + 0.05
    q /= q.sum()
    in_window_item = torch.zeros(n, dtype=torch.bool)
    in_window_item[:window] = True
    total = float(scores.exp().sum())
    part = float(scores[:window].exp().sum())
    estimates = []
    for _ in range(trials):
        easy = torch.multinomial(q, m, replacement=True, generator=gen)
        hard = torch.randperm(window, generator=gen)[:h]
        easy_count = m * q[easy]
        if correction == "mis":
            easy_bias, hard_bias = mis_biases(easy_count, in_window_item[easy][None, :], (m * q[hard])[None, :],
                                              torch.ones(1, h, dtype=torch.bool), window)
            easy_bias, hard_bias = easy_bias[0], hard_bias[0]
        else:  # the fixed offset: log-q on the easy sample, log(window / H) on the hard one
            easy_bias, hard_bias = -torch.log(easy_count), torch.full((h,), math.log(window / h), dtype=torch.float64)
        estimates.append(float((scores[easy] + easy_bias).exp().sum() + (scores[hard] + hard_bias).exp().sum()))
    return float(np.mean(estimates)), total, part


def test_mis_weights_estimate_the_full_denominator_once():
    mean, total, window_part = _denominator_estimates(4000, "mis")
    assert mean == pytest.approx(total, rel=0.03)
    # the fixed offset counts the window twice: once in the easy sample's log-q sum, once in the hard items
    offset_mean, _, _ = _denominator_estimates(4000, "offset")
    assert window_part > 0.3 * total
    assert offset_mean == pytest.approx(total + window_part, rel=0.03)


def test_mis_biases_shapes_and_values():
    easy_bias, hard_bias = mis_biases(torch.tensor([0.5, 2.0]), torch.tensor([[True, False], [False, False]]),
                                      torch.tensor([[0.25, 0.0], [1.0, 1.0]]),
                                      torch.tensor([[True, False], [True, True]]), 4)
    # row 0: one valid hard slot of a 4-item window -> rate 1/4; row 1: two -> 1/2
    assert torch.allclose(easy_bias, -torch.log(torch.tensor([[0.75, 2.0], [0.5, 2.0]])))
    assert torch.allclose(hard_bias, -torch.log(torch.tensor([[0.5, 0.25], [1.5, 1.5]])))


@pytest.fixture(scope="module")
def mined_full_window(tmp_path_factory):
    """A tiny model, its embeddings, and hnmine mine's output keeping the whole 11:40 window per user."""
    base = tmp_path_factory.mktemp("mis")
    train(tiny_config(base, out=str(base / "m0.pt")))
    export_embeddings(base / "m0.pt", base / "emb")
    mine(MineConfig.of(users=str(base / "emb" / "user.parquet"), items=str(base / "emb" / "item.parquet"),
                       positives=str(TRAIN), out=str(base / "mined"), rank_window="11:40", num_hard=30, index="flat"))
    return base


def test_window_membership_is_the_mined_window(mined_full_window):
    base = mined_full_window
    config = tiny_config(base, positives=str(base / "mined" / "pos_edge.parquet"),
                         hard_negatives=str(base / "mined" / "hard_neg_edge.parquet"), num_hard_sample=30,
                         hard_correction="mis", window_embeddings=str(base / "emb"), rank_window="11:40")
    data = load_train_data(config)
    window = WindowMembership(str(base / "emb"), "11:40", data, torch.device("cpu"))
    users = torch.arange(data.n_users)
    inside = window(users, torch.arange(data.n_items))
    hard = torch.from_numpy(data.hard)
    assert (hard >= 0).sum() > 0
    for u in range(data.n_users):
        mined = set(hard[u][hard[u] >= 0].tolist())
        positives = set(data.items[data.indptr[u] : data.indptr[u + 1]].tolist())  # masked in training anyway
        flagged = set(torch.nonzero(inside[u]).flatten().tolist()) - positives
        assert flagged == mined, u  # the whole window was mined: exactly its 30 items


def test_train_with_mis_needs_the_window_and_changes_the_model(mined_full_window):
    base = mined_full_window
    common = dict(positives=str(base / "mined" / "pos_edge.parquet"), item_nodes=str(base / "mined" / "item.parquet"),
                  hard_negatives=str(base / "mined" / "hard_neg_edge.parquet"), regime="shared",
                  init=str(base / "m0.pt"), rank_window="11:40")
    with pytest.raises(InputError, match="window-embeddings"):
        train(tiny_config(base, hard_correction="mis", **{**common, "rank_window": None}))
    train(tiny_config(base, out=str(base / "offset.pt"), **common))
    train(tiny_config(base, out=str(base / "mis.pt"), hard_correction="mis", window_embeddings=str(base / "emb"),
                      **common))
    a = torch.load(base / "offset.pt", weights_only=False)["state"]
    b = torch.load(base / "mis.pt", weights_only=False)["state"]
    assert not torch.equal(a["item.weight"], b["item.weight"])


def test_run_passes_the_previous_round_as_the_window(tmp_path):
    from hnmine.loop.runner import RunConfig, run

    config = RunConfig.of(positives=str(TRAIN), out=str(tmp_path / "run"), iterations=2, test=str(TEST),
                          rank_window="11:60", num_hard=10,
                          train=tiny_config(tmp_path, regime="shared", hard_correction="mis", num_hard_sample=10))
    results = run(config)
    assert len(results) == 2
    manifest = json.loads((tmp_path / "run" / "round_01" / "manifest.json").read_text())
    assert manifest["train"]["window_embeddings"].endswith("round_00/embeddings")
    assert manifest["train"]["rank_window"] == "11:60"
    with pytest.raises(InputError, match="other options"):
        run(replace(config, iterations=3, train=replace(config.train, hard_correction="offset")))


def test_a_run_saved_before_keep_best_resumes_only_with_the_last_epoch(tmp_path):
    from hnmine.loop.runner import RunConfig, run

    out = tmp_path / "run"
    config = RunConfig.of(positives=str(TRAIN), out=str(out), iterations=1, test=str(TEST),
                          train=tiny_config(tmp_path, history_dropout=0.0, keep_best=False))
    run(config)
    saved = json.loads((out / "run.json").read_text())
    for key in ("history_dropout", "keep_best", "valid", "patience", "hard_correction", "window_embeddings",
                "rank_window"):
        del saved["train"][key]  # as written before these options existed
    saved["train"]["hard_window"] = 400  # the trainer's default then; the loop derives it from --rank-window
    (out / "run.json").write_text(json.dumps(saved))
    assert [r.round for r in run(config)] == [0]
    with pytest.raises(InputError, match="other options"):
        run(replace(config, train=replace(config.train, keep_best=True)))


def test_hard_correction_is_validated(tmp_path):
    with pytest.raises(InputError, match="hard-correction"):
        train(tiny_config(tmp_path, hard_correction="twice"))
    with pytest.raises(InputError, match="rank-window"):
        train(tiny_config(tmp_path, rank_window="40:11"))
    assert pl is not None
