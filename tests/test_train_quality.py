"""History dropout, per-epoch validation, best-epoch selection and early stopping (sample_data slice)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from hnmine.embed.export import export_embeddings
from hnmine.errors import InputError
from hnmine.evaluate import evaluate, holdout_split
from hnmine.io.positives import read_positives
from hnmine.training.model import TwoTower, load_model
from hnmine.training.trainer import train
from tests.conftest import TEST, TRAIN, tiny_config


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The small training slice split 80/20 into train.parquet / valid.parquet."""
    out = tmp_path_factory.mktemp("split")
    train_pos, valid_pos = holdout_split(read_positives(TRAIN), 0.2, seed=0)
    train_pos.table.write_parquet(out / "train.parquet")
    valid_pos.table.write_parquet(out / "valid.parquet")
    return out / "train.parquet", out / "valid.parquet"


def _toy_model(dim: int = 4) -> tuple[TwoTower, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TwoTower(n_users=2, n_items=50, dim=dim)
    indptr = torch.tensor([0, 40, 50])
    hist = torch.cat([torch.arange(40), torch.arange(40, 50)])
    return model, indptr, hist


def test_history_dropout_leaves_out_a_random_share_of_the_history():
    model, indptr, hist = _toy_model()
    rows = torch.tensor([0, 1])
    full = model.user_vectors(rows, indptr, hist)
    same = model.user_vectors(rows, indptr, hist, dropout=0.0, gen=torch.Generator().manual_seed(1))
    assert torch.equal(full, same)  # no dropout: no draw, the same vectors
    dropped = model.user_vectors(rows, indptr, hist, dropout=0.5, gen=torch.Generator().manual_seed(1))
    assert not torch.allclose(full, dropped)
    # nearly everything dropped: the pooled mean is empty and the vector is the id embedding alone
    alone = model.user_vectors(rows, indptr, hist, dropout=0.999999, gen=torch.Generator().manual_seed(1))
    assert torch.allclose(alone, torch.nn.functional.normalize(model.user(rows), dim=-1), atol=1e-6)
    # seeded: the same generator state drops the same items
    again = model.user_vectors(rows, indptr, hist, dropout=0.5, gen=torch.Generator().manual_seed(1))
    assert torch.equal(dropped, again)


def test_history_dropout_mean_is_over_the_kept_items():
    model, indptr, hist = _toy_model()
    with torch.no_grad():
        model.user.weight.zero_()
    gen = torch.Generator().manual_seed(3)
    vec = model.user_vectors(torch.tensor([0]), indptr, hist, dropout=0.5, gen=gen)
    coins = torch.rand(50, generator=torch.Generator().manual_seed(3))[:40]
    kept = torch.arange(40)[coins >= 0.5]
    expected = torch.nn.functional.normalize(model.proj(model.item(kept).mean(0, keepdim=True)), dim=-1)
    assert torch.allclose(vec, expected, atol=1e-6)


def test_train_with_history_dropout_differs_and_is_reproducible(tmp_path):
    train(tiny_config(tmp_path, out=str(tmp_path / "a.pt"), history_dropout=0.5))
    train(tiny_config(tmp_path, out=str(tmp_path / "b.pt"), history_dropout=0.5))
    train(tiny_config(tmp_path, out=str(tmp_path / "c.pt"), history_dropout=0.0))
    a, b, c = (load_model(tmp_path / f"{n}.pt").model.item.weight for n in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs, message", [
    ({"history_dropout": 1.0}, "--history-dropout"),
    ({"history_dropout": -0.1}, "--history-dropout"),
    ({"patience": 0}, "--patience"),
])
def test_bad_quality_options_are_refused(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        train(tiny_config(tmp_path, **kwargs))


def test_validation_each_epoch_matches_evaluate_and_keep_best_keeps_the_best(tmp_path, split):
    train_path, valid_path = split
    base = tiny_config(tmp_path, positives=str(train_path), valid=str(valid_path), epochs=4, lr=0.05, lr_min=0.05)
    last = train(replace(base, out=str(tmp_path / "last.pt"), keep_best=False))
    scores = [e["valid_recall@20"] for e in last.epochs]
    assert len(scores) == 4 and len(set(scores)) > 1
    assert last.best_epoch == 1 + scores.index(max(scores))
    # the last epoch's in-training score is what hnmine evaluate says of the saved model
    emb = export_embeddings(tmp_path / "last.pt", tmp_path / "emb_last")
    measured = evaluate(emb.user_path, emb.item_path, train_path, valid_path, (20,)).metrics["recall@20"]
    assert measured == pytest.approx(scores[-1], abs=1e-6)
    best = train(replace(base, out=str(tmp_path / "best.pt")))
    assert [e["valid_recall@20"] for e in best.epochs] == scores
    emb = export_embeddings(tmp_path / "best.pt", tmp_path / "emb_best")
    measured = evaluate(emb.user_path, emb.item_path, train_path, valid_path, (20,)).metrics["recall@20"]
    assert measured == pytest.approx(max(scores), abs=1e-6)


def test_patience_stops_after_n_epochs_without_improvement(tmp_path, split, monkeypatch):
    import hnmine.training.trainer as train_module

    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])

    class Scripted:
        def __init__(self, path, data):
            pass

        def __call__(self, model, indptr, hist):
            return {"valid_recall@20": next(scripted)}

    monkeypatch.setattr(train_module, "Validator", Scripted)
    train_path, valid_path = split
    report = train(tiny_config(tmp_path, positives=str(train_path), valid=str(valid_path), epochs=6, patience=2))
    # best at epoch 2; epochs 3 and 4 are not better: stop there, never seeing epoch 5's 0.9
    assert [e["valid_recall@20"] for e in report.epochs] == [0.1, 0.3, 0.2, 0.25]
    assert report.best_epoch == 2


def test_run_validates_each_epoch_on_its_split(tmp_path):
    from hnmine.loop.runner import RunConfig, run

    config = RunConfig.of(positives=str(TRAIN), out=str(tmp_path / "run"), iterations=1, test=str(TEST),
                          valid_fraction=0.2, train=tiny_config(tmp_path, epochs=2, history_dropout=0.3))
    (result,) = run(config)
    manifest = json.loads((tmp_path / "run" / "round_00" / "manifest.json").read_text())
    assert manifest["train"]["valid"].endswith("valid.parquet")
    epochs = manifest["train_report"]["epochs"]
    assert result.metrics["valid"]["recall@20"] == pytest.approx(max(e["valid_recall@20"] for e in epochs), abs=1e-6)


def test_a_run_saved_before_history_dropout_resumes_only_without_it(tmp_path):
    from hnmine.loop.runner import RunConfig, run

    out = tmp_path / "run"
    config = RunConfig.of(positives=str(TRAIN), out=str(out), iterations=1, test=str(TEST),
                          train=tiny_config(tmp_path, history_dropout=0.0))
    run(config)
    saved = json.loads((out / "run.json").read_text())
    del saved["train"]["history_dropout"]  # as written before the option existed (no dropout)
    (out / "run.json").write_text(json.dumps(saved))
    assert [r.round for r in run(config)] == [0]
    with pytest.raises(InputError, match="other options"):
        run(replace(config, train=replace(config.train, history_dropout=0.5)))
