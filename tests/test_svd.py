"""`hnmine svd`: the training-free two-towers (GF-CF's low-pass filter and the plain factors)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hnmine.embed.svd import svd_embeddings
from hnmine.io.embeddings import read_embeddings
from hnmine.io.positives import read_positives
from tests.conftest import SAMPLE, lightgcn_positives


@pytest.fixture(scope="module")
def sample_rows():
    table = read_positives(SAMPLE / "train.txt").table
    users, user_rows = np.unique(table["user_id"].to_numpy(), return_inverse=True)
    items, item_rows = np.unique(table["item_id"].to_numpy(), return_inverse=True)
    return user_rows, item_rows, len(users), len(items)


@pytest.mark.parametrize("power", [0.5, 0.3])
def test_lowpass_user_vector_pools_the_history(sample_rows, power):
    """Item vectors are degree-scaled orthonormal singular vectors; a user is the sum over its history."""
    user_rows, item_rows, n_users, n_items = sample_rows
    users, items = svd_embeddings(user_rows, item_rows, n_users, n_items, dim=32, item_degree_power=power)
    degree = np.bincount(item_rows, minlength=n_items).astype(np.float64)
    singular = items / degree[:, None] ** power
    np.testing.assert_allclose(singular.T @ singular, np.eye(32), atol=1e-4)
    pooled = np.zeros((n_users, 32))
    np.add.at(pooled, user_rows, singular[item_rows] / degree[item_rows, None] ** power)
    np.testing.assert_allclose(users, pooled, rtol=1e-4, atol=1e-5)


def test_factors_form_is_unchanged(sample_rows):
    """``factors``: U sqrt(S) and V sqrt(S), whose product approximates D_u^-1/2 R D_i^-1/2."""
    user_rows, item_rows, n_users, n_items = sample_rows
    users, items = svd_embeddings(user_rows, item_rows, n_users, n_items, dim=32, form="factors")
    root_s = np.linalg.norm(items, axis=0)
    np.testing.assert_allclose(np.linalg.norm(users, axis=0), root_s, rtol=1e-4)
    np.testing.assert_allclose((items / root_s).T @ (items / root_s), np.eye(32), atol=1e-4)


def test_lowpass_ranks_better_than_factors_on_sample_data(cli, tmp_path):
    """On the Gowalla slice, the low-pass filter beats the factors at the same dimension (hnmine evaluate)."""
    recall = {}
    for form in ("lowpass", "factors"):
        out = tmp_path / form
        assert cli("svd", "--positives", SAMPLE / "train.txt", "--dim", "64", "--form", form,
                   "--out-dir", out).exit_code == 0
        result = cli("evaluate", "--users", out / "user.parquet", "--items", out / "item.parquet",
                     "--train", SAMPLE / "train.txt", "--test", SAMPLE / "test.txt", "--json")
        recall[form] = json.loads(result.output)["metrics"]["recall@20"]
    assert recall["lowpass"] > 1.05 * recall["factors"], recall
    users = read_embeddings(tmp_path / "lowpass" / "user.parquet")
    assert len(users) == len(lightgcn_positives(SAMPLE / "train.txt"))
    assert users.vectors.shape[1] == 64


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--form", "spectral", "--form must be one of lowpass, factors"),
    ("--item-degree-power", "1.5", "--item-degree-power must be between 0 and 1"),
    ("--threads", "0", "--threads must be at least 1"),
])
def test_bad_options_fail_in_one_line_and_write_nothing(cli, tmp_path, option, value, message):
    result = cli("svd", "--positives", SAMPLE / "train.txt", option, value, "--out-dir", tmp_path / "emb")
    assert result.exit_code == 2 and message in result.output
    assert result.output.strip().count("\n") == 0
    assert not (tmp_path / "emb").exists()


def test_threads_option_runs_on_that_many_threads_and_restores_torch(cli, tmp_path, monkeypatch):
    import torch

    import hnmine.embed.svd as svd

    before = torch.get_num_threads()
    seen = []
    original = svd.svd_embeddings
    monkeypatch.setattr(svd, "svd_embeddings", lambda *a, **k: (seen.append(torch.get_num_threads()), original(*a, **k))[1])
    result = cli("svd", "--positives", SAMPLE / "train.txt", "--dim", "8", "--threads", "1", "--out-dir", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert seen == [1] and torch.get_num_threads() == before
    assert len(read_embeddings(tmp_path / "e" / "item.parquet")) > 0
