"""The tiled-GEMM ``exact`` engine: identical windows to the FAISS flat path, invariant to chunks/tiles/threads.

Every test runs with both GEMM precisions: bf16 tiles (with per-item error bounds) must give the same
windows bit for bit as fp32 tiles and FAISS.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from hnmine.mining import exact as E
from hnmine.mining import kernels
from hnmine.mining import retrieval as R
from hnmine.mining.retrieval import IndexSpec, ItemIndex, retrieve_window


def _data(n_users: int, n_items: int, dim: int = 16, seed: int = 0, heavy: bool = False):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, dim)).astype(np.float32)
    items = (centers[rng.integers(0, 8, n_items)] + 0.5 * rng.standard_normal((n_items, dim))).astype(np.float32)
    users = (centers[rng.integers(0, 8, n_users)] + 0.5 * rng.standard_normal((n_users, dim))).astype(np.float32)
    counts = rng.integers(0, 12, n_users)
    if heavy:
        counts[::7] = rng.integers(n_items // 4, n_items // 2, len(counts[::7]))
    rows = [np.sort(rng.choice(n_items, size=c, replace=False)) for c in counts]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    pos = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    return users, items, indptr, pos


@pytest.fixture(params=["fp32", "bf16"])
def precision(request) -> str:
    return request.param


def _chunked(index, users, indptr, pos, lo, hi, chunk):
    items, scores = [], []
    for a in range(0, len(users), chunk):
        b = min(a + chunk, len(users))
        w = retrieve_window(index, users[a:b], indptr[a : b + 1] - indptr[a], pos[indptr[a] : indptr[b]], lo, hi)
        items.append(w.items)
        scores.append(w.scores)
    return np.concatenate(items), np.concatenate(scores)


@pytest.mark.parametrize(
    ("n_items", "lo", "hi", "heavy"), [(700, 11, 60, False), (3000, 101, 500, True), (130, 5, 120, True)]
)
def test_exact_equals_flat(n_items, lo, hi, heavy, precision):
    users, items, indptr, pos = _data(200, n_items, heavy=heavy, seed=n_items)
    flat = retrieve_window(ItemIndex(items), users, indptr, pos, lo, hi)
    exact = retrieve_window(ItemIndex(items, IndexSpec(kind="exact", precision=precision)), users, indptr, pos, lo, hi)
    np.testing.assert_array_equal(exact.items, flat.items)
    np.testing.assert_array_equal(exact.scores, flat.scores)
    np.testing.assert_array_equal(exact.available, flat.available)


def test_exact_matches_brute_force_ranks_among_non_positives(precision):
    users, items, indptr, pos = _data(50, 400, heavy=True, seed=3)
    lo, hi = 21, 80
    w = retrieve_window(ItemIndex(items, IndexSpec(kind="exact", precision=precision)), users, indptr, pos, lo, hi)
    for u in range(len(users)):
        s = R._rescore(users[u : u + 1], items, np.arange(len(items))[None, :])[0]
        mine = set(pos[indptr[u] : indptr[u + 1]].tolist())
        order = sorted((i for i in range(len(items)) if i not in mine), key=lambda i: (-s[i], i))
        want = order[lo - 1 : hi]
        got = w.items[u][w.items[u] >= 0].tolist()
        assert got == want


def test_exact_deterministic_across_chunks_tiles_and_threads(monkeypatch, precision):
    users, items, indptr, pos = _data(300, 2500, heavy=True, seed=7)
    index = ItemIndex(items, IndexSpec(kind="exact", precision=precision))
    ref_items, ref_scores = _chunked(index, users, indptr, pos, 31, 200, 300)
    threads = torch.get_num_threads()
    try:
        configs = [(1, 256, 16384, 1), (7, 5, 128, 2), (64, 33, 96, 1), (300, 1024, 512, 2)]
        for chunk, tile_users, tile_items, n_threads in configs:
            monkeypatch.setattr(E, "_TILE_USERS", tile_users)
            monkeypatch.setattr(E, "_TILE_ITEMS", tile_items)
            torch.set_num_threads(n_threads)
            kernels.set_threads(n_threads)
            got_items, got_scores = _chunked(index, users, indptr, pos, 31, 200, chunk)
            np.testing.assert_array_equal(got_items, ref_items)
            np.testing.assert_array_equal(got_scores, ref_scores)
    finally:
        torch.set_num_threads(threads)
        kernels.set_threads(numba.config.NUMBA_NUM_THREADS)


def test_exact_short_catalog_pads_window(precision):
    users, items, indptr, pos = _data(20, 60, heavy=True, seed=1)
    w = retrieve_window(ItemIndex(items, IndexSpec(kind="exact", precision=precision)), users, indptr, pos, 1, 80)
    flat = retrieve_window(ItemIndex(items), users, indptr, pos, 1, 80)
    np.testing.assert_array_equal(w.items, flat.items)
    assert ((w.items >= 0).sum(axis=1) == np.minimum(w.available, 80)).all()


def test_canonical_pairs_independent_of_batch():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((40, 64)).astype(np.float32)
    v = rng.standard_normal((500, 64)).astype(np.float32)
    users = rng.integers(0, 40, 5000)
    its = rng.integers(0, 500, 5000)
    whole = R._canonical_pairs(q, v, users, its)
    parts = np.concatenate([R._canonical_pairs(q, v, users[a : a + 37], its[a : a + 37]) for a in range(0, 5000, 37)])
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.parametrize("kind", ["flat", "exact"])
def test_exact_ties_beyond_search_depth(kind, precision):
    """Many identical items tie at the window's edge: both exact paths still return the canonical ranks."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((40, 8)).astype(np.float32)
    items = np.repeat(base, 10, axis=0)  # 400 items, every vector 10 times
    users = rng.standard_normal((30, 8)).astype(np.float32)
    indptr = np.zeros(31, dtype=np.int64)
    pos = np.zeros(0, dtype=np.int64)
    lo, hi = 3, 17
    w = retrieve_window(ItemIndex(items, IndexSpec(kind=kind, precision=precision)), users, indptr, pos, lo, hi)
    for u in range(len(users)):
        s = R._rescore(users[u : u + 1], items, np.arange(len(items))[None, :])[0]
        want = sorted(range(len(items)), key=lambda i: (-s[i], i))[lo - 1 : hi]
        assert w.items[u].tolist() == want


def test_flat_deterministic_across_chunks():
    users, items, indptr, pos = _data(300, 2500, heavy=True, seed=11)
    index = ItemIndex(items)
    ref = _chunked(index, users, indptr, pos, 31, 200, 300)
    for chunk in (1, 13, 128):
        got = _chunked(index, users, indptr, pos, 31, 200, chunk)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def test_exact_reservoir_overflow_retries_with_more_room(precision):
    """More tied candidates than a reservoir holds (2,000 copies of one vector at the window's edge):
    the engine retries with more room and still returns the canonical ranks, as the flat path does."""
    rng = np.random.default_rng(9)
    items = rng.standard_normal((3000, 8)).astype(np.float32)
    items[500:2500] = items[0]  # 2,001 identical vectors
    users = np.repeat(items[:1] * 2.0, 4, axis=0) + rng.standard_normal((4, 8)).astype(np.float32) * 1e-3
    indptr = np.zeros(5, dtype=np.int64)
    pos = np.zeros(0, dtype=np.int64)
    lo, hi = 101, 600  # depth 600: reservoir room 2 * 600 + 64 < 2,001 ties
    exact = retrieve_window(ItemIndex(items, IndexSpec(kind="exact", precision=precision)), users, indptr, pos, lo, hi)
    flat = retrieve_window(ItemIndex(items), users, indptr, pos, lo, hi)
    for u in range(len(users)):
        s = R._rescore(users[u : u + 1], items, np.arange(len(items))[None, :])[0]
        want = sorted(range(len(items)), key=lambda i: (-s[i], i))[lo - 1 : hi]
        assert exact.items[u].tolist() == want
    np.testing.assert_array_equal(exact.items, flat.items)
    np.testing.assert_array_equal(exact.scores, flat.scores)


def test_guessed_bounds_and_redo(monkeypatch, precision):
    """A large catalog takes the sampled-guess path and skips the items past each user's
    Cauchy-Schwarz reach of its guess; guesses that are too high are detected and the users
    scanned again in full, so the windows are still the canonical ones."""
    users, items, indptr, pos = _data(150, 20000, dim=32, heavy=False, seed=21)
    items *= np.exp(np.random.default_rng(3).uniform(-7, 0, (len(items), 1))).astype(np.float32)  # norms spread 1000x
    index = ItemIndex(items, IndexSpec(kind="exact", precision=precision))
    assert index.precision == precision
    flat = retrieve_window(ItemIndex(items), users, indptr, pos, 101, 300)
    reaches = []
    real_reach = E._reach
    monkeypatch.setattr(E, "_reach", lambda *args: reaches.append(real_reach(*args)) or reaches[-1])
    guessed = retrieve_window(index, users, indptr, pos, 101, 300)
    assert reaches[0].max() < len(items)  # every user's scan stopped early
    np.testing.assert_array_equal(guessed.items, flat.items)
    np.testing.assert_array_equal(guessed.scores, flat.scores)
    real = E._guess_bounds

    def too_high(*args):
        guesses = real(*args)
        assert np.isfinite(guesses).all()
        return guesses + np.float32(1e3)  # above every score: every user must be redone

    monkeypatch.setattr(E, "_guess_bounds", too_high)
    redone = retrieve_window(index, users, indptr, pos, 101, 300)
    np.testing.assert_array_equal(redone.items, flat.items)
    np.testing.assert_array_equal(redone.scores, flat.scores)
    assert (redone.retrieved > 0).all()


def test_auto_takes_the_exact_engine_and_bf16_only_for_big_jobs():
    """``auto`` takes the exact engine for big jobs, and loads torch for bf16 tiles only where the job's
    GEMM pays for it (and the CPU has them): a Gowalla-size job runs float32 tiles, without torch."""
    rng = np.random.default_rng(4)
    items = rng.standard_normal((2000, 8)).astype(np.float32)
    assert ItemIndex(items, IndexSpec(kind="auto"), queries=10).spec.kind == "flat"
    big = ItemIndex(items, IndexSpec(kind="auto"), queries=R._AUTO_EXACT_PAIRS // 2000)
    assert (big.spec.kind, big.precision) == ("exact", "fp32")
    assert not E._wants_bf16("auto", 29_858, (40_981, 64))  # Gowalla: float32 tiles
    assert E._wants_bf16("auto", 100_000, (1_000_000, 64)) == E.cpu_has_bf16()
    assert E._wants_bf16("bf16", 10, (10, 4)) and not E._wants_bf16("fp32", 10**6, (10**6, 64))


def test_bf16_bound_covers_torch_bf16_gemm():
    """The per-pair bound holds for torch's bf16 GEMM on spread-out norms, and is not vacuous."""
    rng = np.random.default_rng(2)
    vecs = (rng.standard_normal((600, 64)) * rng.lognormal(0, 1.5, (600, 1))).astype(np.float32)
    assert E._bf16_gemm_within_bound(vecs)
    assert E._bf16_slack(64) < 0.02


@pytest.mark.parametrize("dim", [64, 37, 5])
def test_dot_rows_is_the_canonical_dot(dim):
    """The matrix-indexed kernel of the rescoring sums in the canonical order: the same bits."""
    rng = np.random.default_rng(dim)
    q = rng.standard_normal((30, dim)).astype(np.float32)
    v = rng.standard_normal((50, dim)).astype(np.float32)
    users = np.repeat(np.arange(30), 50).astype(np.int64)
    its = np.tile(np.arange(50), 30).astype(np.int64)
    canonical = R._canonical_pairs(q, v, users, its).reshape(30, 50)
    counts = np.full(30, 50, dtype=np.int64)
    out = np.empty((30, 50), dtype=np.float32)
    kernels.rescore_reservoirs(q, v, np.tile(np.arange(50), (30, 1)).astype(np.int64), counts,
                               np.zeros(30, dtype=np.bool_), 3, out)
    np.testing.assert_array_equal(out, canonical)


def test_sort_keys_matches_numpy_sort():
    """The radix sort of the window keys (score high, item row low): random keys, and many ties in
    the score half with distinct rows (duplicate vectors), small and large row ranges."""
    rng = np.random.default_rng(4)
    for n in (0, 1, 2, 17, 600, 5000):
        for row_bits in (8, 20, 32):
            high = rng.integers(0, 40, n).astype(np.uint64) << np.uint64(32)  # 40 distinct scores: ties
            keys = high | rng.integers(0, 2**row_bits, n).astype(np.uint64)
            keys[: n // 3] |= rng.integers(0, 2**32, n // 3).astype(np.uint64) << np.uint64(32)
        got = keys.copy()
        kernels._sort_keys(got, np.empty_like(got))
        np.testing.assert_array_equal(got, np.sort(keys))
