"""``--item-shards``: the catalog in K blocks, each searched on its own and merged, gives the single
index's windows bit for bit (ties included) and the same published bytes."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hnmine.mining.config import MineConfig
from hnmine.mining.pipeline import mine
from hnmine.mining.retrieval import IndexSpec, ItemIndex, retrieve_window
from hnmine.mining.sharded import ShardedIndex, item_shards
from tests.conftest import SAMPLE, csr, integer_vectors, published_bytes


@st.composite
def catalogs(draw):
    """Users, items (small integers: many exact ties; or floats with duplicated rows), positives, window."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_items = draw(st.integers(2, 90))
    n_users = draw(st.integers(1, 10))
    dim = draw(st.integers(1, 9))
    if draw(st.booleans()):
        users, items = integer_vectors(rng, n_users, dim), integer_vectors(rng, n_items, dim)
    else:
        users = rng.standard_normal((n_users, dim)).astype(np.float32)
        items = rng.standard_normal((n_items, dim)).astype(np.float32)
        copies = rng.integers(0, n_items, size=n_items // 3)
        items[rng.integers(0, n_items, size=len(copies))] = items[copies]  # equal scores across blocks
    lo = draw(st.integers(1, n_items))
    hi = draw(st.integers(lo, lo + 40))
    positives = [rng.choice(n_items, size=draw(st.integers(0, n_items if draw(st.booleans()) else min(4, n_items))), replace=False)
                 for _ in range(n_users)]
    return users, items, positives, lo, hi


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs(), st.sampled_from(["flat", "exact"]))
def test_sharded_windows_equal_the_single_index(problem, kind):
    users, items, positives, lo, hi = problem
    indptr, rows = csr(positives)
    spec = IndexSpec(kind=kind, precision="fp32")
    single = retrieve_window(ItemIndex(items, spec), users, indptr, rows, lo, hi)
    for shards in (2, 3):
        index = ShardedIndex(items, spec, shards)
        assert [b - a for a, b in index.blocks] == [b - a for a, b in item_shards(len(items), shards)]
        window = retrieve_window(index, users, indptr, rows, lo, hi)
        np.testing.assert_array_equal(window.items, single.items)
        np.testing.assert_array_equal(window.scores.view(np.int32), single.scores.view(np.int32))
        np.testing.assert_array_equal(window.available, single.available)


def test_blocks_cover_the_catalog_once():
    for n, k in ((10, 3), (7, 7), (3, 5), (1_000_003, 4)):
        blocks = item_shards(n, k)
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a < b for a, b in blocks) and all(b == c for (_, b), (c, _) in itertools.pairwise(blocks))
        assert max(b - a for a, b in blocks) - min(b - a for a, b in blocks) <= 1


def test_item_shards_publish_the_same_bytes(cli, sample_embeddings, tmp_path):
    user, item = sample_embeddings
    outputs = []
    for shards in (1, 2, 3):
        out = tmp_path / f"k{shards}"
        result = cli("mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt", "--out", out,
                     "--item-shards", shards, "--max-item-negatives", 4, "--strategy", "softmax-v", "--rank-window", "11:120",
                     "--chunk-size", 1000, "--quiet")
        assert result.exit_code == 0, result.output
        outputs.append(published_bytes(out))
    assert outputs[0] == outputs[1] == outputs[2]
    # and through the Python API with the exact engine and the cap off
    config = dict(users=str(user), items=str(item), positives=str(SAMPLE / "train.txt"), index="exact",
                  precision="fp32", rank_window="5:80")
    mine(MineConfig.of(**config, out=str(tmp_path / "e1")))
    mine(MineConfig.of(**config, out=str(tmp_path / "e3"), item_shards=3))
    assert published_bytes(tmp_path / "e1") == published_bytes(tmp_path / "e3")


def test_item_shards_must_be_positive(cli, sample_embeddings, tmp_path):
    user, item = sample_embeddings
    result = cli("mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt",
                 "--out", tmp_path / "o", "--item-shards", 0)
    assert result.exit_code == 2
    assert "--item-shards must be at least 1" in result.output
