"""`hnmine blend`: two two-towers into one whose scores are the weighted sum of both models' scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hnmine.embed.blend import blend_embeddings, write_blend
from hnmine.errors import InputError
from hnmine.io.embeddings import Embeddings, read_embeddings, write_embedding_dir, write_embeddings
from tests.conftest import SAMPLE


def _model(rng, users, items, dim, scale):
    return (Embeddings(np.asarray(users), scale * rng.normal(size=(len(users), dim)).astype(np.float32), "u"),
            Embeddings(np.asarray(items), rng.normal(size=(len(items), dim)).astype(np.float32), "i"))


def test_blended_score_is_the_weighted_sum_of_scaled_scores():
    rng = np.random.default_rng(0)
    au, ai = _model(rng, range(50), range(80), 8, 30.0)
    bu, bi = _model(rng, range(10, 60), range(5, 90), 4, 0.1)  # other ids, other scale, other dim
    users, items, report = blend_embeddings(au, ai, bu, bi, weight=0.3)
    assert list(users.ids) == list(range(10, 50)) and list(items.ids) == list(range(5, 80))
    assert (report.users_dropped, report.items_dropped, report.dim) == (20, 15, 12)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    expected = (0.3 / report.scale_a * unit(au.vectors[10:50]) @ ai.vectors[5:80].T
                + 0.7 / report.scale_b * unit(bu.vectors[0:40]) @ bi.vectors[0:75].T)
    np.testing.assert_allclose(users.vectors @ items.vectors.T, expected, rtol=1e-4, atol=1e-5)
    # The spreads are measured on unit users: the model with 300x larger user vectors does not dominate.
    assert 0.1 < report.scale_a / report.scale_b < 10


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_weight_zero_or_one_ranks_as_one_model(weight):
    rng = np.random.default_rng(1)
    au, ai = _model(rng, range(30), range(40), 6, 1.0)
    bu, bi = _model(rng, range(30), range(40), 6, 1.0)
    users, items, _ = blend_embeddings(au, ai, bu, bi, weight=weight)
    alone_u, alone_i = (au, ai) if weight == 1.0 else (bu, bi)
    np.testing.assert_array_equal(np.argsort(-(users.vectors @ items.vectors.T), axis=1)[:, :10],
                                  np.argsort(-(alone_u.vectors @ alone_i.vectors.T), axis=1)[:, :10])


def test_cli_blend_of_lowpass_and_factors_ranks_between_or_above_them(cli, tmp_path):
    """On the Gowalla slice: both forms of `hnmine svd`, blended, evaluated by `hnmine evaluate`."""
    recall = {}
    for form in ("lowpass", "factors"):
        assert cli("svd", "--positives", SAMPLE / "train.txt", "--dim", "32", "--form", form,
                   "--out-dir", tmp_path / form).exit_code == 0
    result = cli("blend", tmp_path / "lowpass", tmp_path / "factors", "--weight", "0.7", "--out-dir", tmp_path / "b")
    assert result.exit_code == 0 and "dim 64" in result.output
    for name in ("lowpass", "factors", "b"):
        out = cli("evaluate", "--users", tmp_path / name / "user.parquet", "--items", tmp_path / name / "item.parquet",
                  "--train", SAMPLE / "train.txt", "--test", SAMPLE / "test.txt", "--json").output
        recall[name] = json.loads(out)["metrics"]["recall@20"]
    assert recall["b"] > min(recall["lowpass"], recall["factors"]), recall
    assert len(read_embeddings(tmp_path / "b" / "user.parquet")) == len(read_embeddings(tmp_path / "lowpass" / "user.parquet"))


def test_bad_weight_and_disjoint_ids_fail_in_one_line(cli, tmp_path):
    rng = np.random.default_rng(2)
    for name, offset in (("a", 0), ("b", 1000)):
        (tmp_path / name).mkdir()
        write_embeddings(tmp_path / name / "user.parquet", np.arange(5) + offset, rng.normal(size=(5, 4)))
        write_embeddings(tmp_path / name / "item.parquet", np.arange(7), rng.normal(size=(7, 4)))
    result = cli("blend", tmp_path / "a", tmp_path / "b", "--out-dir", tmp_path / "o")
    assert result.exit_code == 2 and "no user id in common" in result.output
    assert result.output.strip().count("\n") == 0 and not (tmp_path / "o").exists()
    result = cli("blend", tmp_path / "a", tmp_path / "a", "--weight", "1.5", "--out-dir", tmp_path / "o")
    assert result.exit_code == 2 and "--weight must be between 0 and 1" in result.output
    with pytest.raises(InputError, match=r"missing/user\.parquet: file not found"):
        write_blend(tmp_path / "missing", tmp_path / "a", tmp_path / "o", 0.5)


def test_embedding_dir_is_replaced_whole_or_not_at_all(tmp_path):
    """A failed write leaves the previous tables readable and no temporary file behind."""
    ids = np.arange(3)
    write_embedding_dir(tmp_path, ids, np.ones((3, 4)), ids, np.zeros((3, 4)))
    with pytest.raises((IndexError, ValueError)):
        write_embedding_dir(tmp_path, ids, np.ones(3), ids, np.zeros((3, 4)))  # 1-D: not a vector table
    assert read_embeddings(tmp_path / "user.parquet").vectors.shape == (3, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_SUCCESS", "item.parquet", "manifest.json", "user.parquet"]
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.*"))  # no staging or lock file left
