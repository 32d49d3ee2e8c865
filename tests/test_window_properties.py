"""Property tests: retrieval windows and selection against a brute-force reference."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hnmine.mining.hashing import id_keys, user_streams
from hnmine.mining.retrieval import IndexSpec, ItemIndex, retrieve_window
from hnmine.mining.selection import (
    ADAPTIVE_SHIFTS,
    SelectionConfig,
    adaptive_buckets,
    median_positive_scores,
    pair_scores,
    reference_scores,
    select_hard_negatives,
    shifted_windows,
)
from tests.conftest import csr, integer_vectors


def reference_window(users: np.ndarray, items: np.ndarray, positives: list[np.ndarray], lo: int, hi: int):
    """Rank every non-positive item by (score desc, item asc); keep ranks lo..hi."""
    out = []
    for u, pos in zip(users, positives):
        scores = items @ u
        candidates = [i for i in range(len(items)) if i not in set(pos.tolist())]
        candidates.sort(key=lambda i: (-scores[i], i))
        out.append([(i, scores[i]) for i in candidates[lo - 1 : hi]])
    return out


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_items = draw(st.integers(1, 120))
    n_users = draw(st.integers(1, 12))
    dim = draw(st.integers(1, 6))
    lo = draw(st.integers(1, max(1, n_items)))
    hi = draw(st.integers(lo, lo + draw(st.integers(0, 60))))
    positives = []
    for _ in range(n_users):
        heavy = draw(st.booleans())
        count = draw(st.integers(0, n_items if heavy else min(n_items, 5)))
        positives.append(rng.choice(n_items, size=count, replace=False))
    return integer_vectors(rng, n_users, dim), integer_vectors(rng, n_items, dim), positives, lo, hi


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_window_matches_brute_force(problem):
    users, items, positives, lo, hi = problem
    index = ItemIndex(items, IndexSpec())
    indptr, rows = csr(positives)
    window = retrieve_window(index, users, indptr, rows, lo, hi)
    expected = reference_window(users, items, positives, lo, hi)
    assert window.items.shape == (len(users), hi - lo + 1)
    for u, want in enumerate(expected):
        got_items = window.items[u][window.items[u] >= 0].tolist()
        assert got_items == [i for i, _ in want]
        np.testing.assert_array_equal(window.scores[u][: len(want)], np.array([s for _, s in want], dtype=np.float32))
        assert not set(got_items) & set(positives[u].tolist())
        assert window.available[u] == len(items) - len(positives[u])
        # a window is short only when the catalog lacks enough non-positive items
        assert len(got_items) == max(0, min(hi, len(items) - len(positives[u])) - lo + 1)


@settings(max_examples=60, deadline=None)
@given(problems(), st.integers(1, 5), st.sampled_from(["uniform", "top", "softmax", "softmax-v", "all"]),
       st.integers(1, 15), st.integers(0, 10))
def test_selection_is_a_valid_subset_and_chunk_invariant(problem, chunk, strategy, num_hard, seed):
    users, items, positives, lo, hi = problem
    index = ItemIndex(items, IndexSpec())
    indptr, rows = csr(positives)
    cfg = SelectionConfig(num_hard=num_hard, strategy=strategy, temperature=0.5, rho=0.5)
    ids = np.arange(100, 100 + len(users))
    streams = user_streams(seed, id_keys(ids))
    window = retrieve_window(index, users, indptr, rows, lo, hi)
    whole = select_hard_negatives(window, streams, cfg)
    filled = window.filled()
    for u in range(len(users)):
        picked = whole.item[whole.user == u]
        columns = whole.column[whole.user == u]
        assert len(set(picked.tolist())) == len(picked)
        assert set(picked.tolist()) <= set(window.items[u][window.items[u] >= 0].tolist())
        want = filled[u] if strategy == "all" else min(num_hard, filled[u])
        assert len(picked) == want
        if strategy in ("top", "all"):
            assert columns.tolist() == list(range(want))
    # The same users mined in smaller chunks give exactly the same picks.
    parts = []
    for start in range(0, len(users), chunk):
        stop = min(start + chunk, len(users))
        sub_ptr = indptr[start : stop + 1] - indptr[start]
        sub_rows = rows[indptr[start] : indptr[stop]]
        w = retrieve_window(index, users[start:stop], sub_ptr, sub_rows, lo, hi)
        s = select_hard_negatives(w, streams[start:stop], cfg)
        parts.append(np.stack([s.user + start, s.item, s.column]))
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), np.stack([whole.user, whole.item, whole.column]))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.floats(-2, 2), st.floats(0, 1))
def test_margins_and_caps_filter_exactly(seed, max_score, relative):
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((6, 4)).astype(np.float32)
    items = rng.standard_normal((80, 4)).astype(np.float32)
    positives = [rng.choice(80, size=5, replace=False) for _ in range(6)]
    indptr, rows = csr(positives)
    window = retrieve_window(ItemIndex(items), users, indptr, rows, 3, 40)
    references = np.array([np.median(items[p] @ u) for u, p in zip(users, positives)])
    cfg = SelectionConfig(num_hard=50, strategy="all", max_score=max_score, relative_margin=relative)
    sel = select_hard_negatives(window, user_streams(0, id_keys(np.arange(6))), cfg, references)
    for u in range(6):
        scores = window.scores[u][window.items[u] >= 0]
        ref = references[u]
        keep = (scores <= max_score) & (scores <= ref - abs(ref) * relative)
        assert sorted(sel.score[sel.user == u].tolist()) == sorted(scores[keep].tolist())


def test_uniform_strategy_is_uniform_over_the_window():
    """Over many users, every window column is picked about equally often."""
    rng = np.random.default_rng(1)
    users = rng.standard_normal((4000, 8)).astype(np.float32)
    items = rng.standard_normal((300, 8)).astype(np.float32)
    indptr, rows = csr([np.zeros(0, dtype=np.int64)] * len(users))
    window = retrieve_window(ItemIndex(items), users, indptr, rows, 11, 60)
    sel = select_hard_negatives(window, user_streams(3, id_keys(np.arange(4000))), SelectionConfig(num_hard=5))
    counts = np.bincount(sel.column, minlength=50)
    expected = 4000 * 5 / 50
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 86.7  # 99.9th percentile of chi-square with 49 degrees of freedom


def test_top_and_softmax_v_are_harder_than_uniform():
    rng = np.random.default_rng(2)
    users = rng.standard_normal((500, 8)).astype(np.float32)
    items = rng.standard_normal((400, 8)).astype(np.float32)
    indptr, rows = csr([np.zeros(0, dtype=np.int64)] * len(users))
    window = retrieve_window(ItemIndex(items), users, indptr, rows, 1, 200)
    streams = user_streams(0, id_keys(np.arange(500)))
    mean_rank = {
        name: select_hard_negatives(window, streams, SelectionConfig(num_hard=10, strategy=name, rho=rho)).column.mean()
        for name, rho in (("uniform", 0.1), ("top", 0.1), ("softmax-v", 0.01))
    }
    assert mean_rank["top"] == 4.5
    assert mean_rank["top"] < mean_rank["softmax-v"] < mean_rank["uniform"]


def test_exact_ties_across_the_search_cut_off_are_resolved_canonically():
    """Hundreds of identical (and zero) item vectors: the window is still (score desc, item asc)."""
    rng = np.random.default_rng(5)
    items = np.concatenate([np.zeros((700, 4)), np.tile(rng.standard_normal((1, 4)), (300, 1)),
                            rng.standard_normal((500, 4))]).astype(np.float32)
    order = rng.permutation(len(items))
    items = items[order]
    users = rng.standard_normal((9, 4)).astype(np.float32)
    positives = [rng.choice(len(items), size=k, replace=False) for k in (0, 3, 30, 300, 0, 1, 2, 900, 5)]
    indptr, rows = csr(positives)
    expected = reference_window(users, items, positives, 50, 400)
    for chunk in (1, 4, 9):
        for start in range(0, 9, chunk):
            stop = min(start + chunk, 9)
            window = retrieve_window(ItemIndex(items), users[start:stop], indptr[start : stop + 1] - indptr[start],
                                     rows[indptr[start] : indptr[stop]], 50, 400)
            for u in range(start, stop):
                got = window.items[u - start]
                assert got[got >= 0].tolist() == [i for i, _ in expected[u]]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    width=st.integers(1, 90),
    take=st.integers(1, 64),
    levels=st.integers(1, 6),
)
def test_top_columns_is_key_desc_then_column_asc(seed, width, take, levels):
    """The compiled chooser equals a full sort by (key desc, column asc), -inf and ties included."""
    from hnmine.mining.selection import top_columns

    rng = np.random.default_rng(seed)
    take = min(take, width)
    keys = rng.integers(0, levels, (7, width)).astype(np.float64)  # few levels: many ties
    keys[rng.random((7, width)) < 0.3] = -np.inf
    cols = np.empty((7, take), dtype=np.int64)
    got = np.empty((7, take), dtype=np.float64)
    top_columns(keys, cols, got)
    for i in range(7):
        want = sorted(range(width), key=lambda c: (-keys[i, c], c))[:take]
        finite = [c for c in want if np.isfinite(keys[i, c])]
        assert cols[i][np.isfinite(got[i])].tolist() == finite
        assert np.array_equal(got[i][np.isfinite(got[i])], keys[i, finite])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.floats(-20, 20), st.floats(0, 1), st.sampled_from(["top", "all", "softmax-v"]))
def test_teacher_scores_filter_and_the_model_ranks(seed, max_score, relative, strategy):
    """With a teacher, the caps and margins compare the teacher's scores (its positives' median the
    reference); the window and the strategy's order stay the mined model's."""
    rng = np.random.default_rng(seed)
    users, items = integer_vectors(rng, 6, 4), integer_vectors(rng, 80, 4)
    t_users, t_items = integer_vectors(rng, 6, 3), integer_vectors(rng, 80, 3)
    positives = [rng.choice(80, size=5, replace=False) for _ in range(6)]
    indptr, rows = csr(positives)
    window = retrieve_window(ItemIndex(items), users, indptr, rows, 3, 40)
    teacher = pair_scores(window.items, t_users, t_items)
    references = reference_scores(t_users, t_items, indptr, rows, "median")
    cfg = SelectionConfig(num_hard=8, strategy=strategy, max_score=max_score, relative_margin=relative)
    streams = user_streams(0, id_keys(np.arange(6)))
    sel = select_hard_negatives(window, streams, cfg, references, filter_scores=teacher)
    for u in range(6):
        filled = window.items[u] >= 0
        t = (t_items[window.items[u][filled]] @ t_users[u]).astype(np.float32)
        assert np.array_equal(teacher[u][filled], t) and np.all(teacher[u][~filled] == -np.inf)
        ref = float(np.median(t_items[positives[u]] @ t_users[u]))
        # the margins compare in float64 (against a float64 reference); --max-score, a Python float, in float32
        keep = (t <= max_score) & (t.astype(np.float64) <= ref - abs(ref) * relative)
        columns = np.flatnonzero(filled)[keep]
        got = sel.column[sel.user == u]
        if strategy == "all":
            assert sorted(got.tolist()) == columns.tolist()
        elif strategy == "top":  # the model's ranks, best first, among what the teacher lets through
            assert got.tolist() == columns[:8].tolist()
        else:
            assert set(got.tolist()) <= set(columns.tolist()) and len(got) == min(8, len(columns))
    assert np.array_equal(sel.score, window.scores[sel.user, sel.column])  # published scores: the model's


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(1, 30), st.integers(1, 20))
def test_adaptive_windows_match_brute_force(problem, shift, chunk):
    """Each user's bucket from where its median positive ranks among its non-positives (brute force),
    its window LO:HI moved by its bucket's shift, the same width, within the retrieved ranks; and the
    same for any chunking of the users."""
    users, items, positives, lo, hi = problem
    cfg = SelectionConfig(rank_window=f"{lo}:{hi}", adaptive_window=shift)
    a, b = cfg.retrieved_window(len(items))
    if b > len(items):
        return
    indptr, rows = csr(positives)
    window = retrieve_window(ItemIndex(items), users, indptr, rows, a, b)
    medians = median_positive_scores(users, items, indptr, rows)
    buckets = adaptive_buckets(window, medians, lo, hi)
    moved, start = shifted_windows(window, buckets, lo, hi, shift)
    for u, (vector, pos) in enumerate(zip(users, positives)):
        scores = items @ vector
        others = np.setdiff1d(np.arange(len(items)), pos)
        if len(pos):
            median = np.median(scores[pos])
            above = int((scores[others] > median).sum())  # the median positive's rank among non-positives - 1
            want = 0 if above < (lo + 1) // 2 else 1 if above < lo else 2 if above < hi else 3
        else:
            want = 1
        assert buckets[u] == want
        first = min(max(lo + ADAPTIVE_SHIFTS[want] * shift, a), b - (hi - lo))
        assert start[u] == first
        ranks = np.flatnonzero(moved.items[u] >= 0) + a
        assert ranks.tolist() == list(range(first, first + len(ranks)))  # contiguous from its first rank
        assert len(ranks) == min(hi - lo + 1, max(0, min(len(others), first + hi - lo) - first + 1))
    for begin in range(0, len(users), chunk):  # a pure function of each user
        sl = slice(begin, begin + chunk)
        ptr = indptr[sl.start : min(sl.start + chunk, len(users)) + 1]
        part_rows, part_ptr = rows[ptr[0] : ptr[-1]], ptr - ptr[0]
        part = retrieve_window(ItemIndex(items), users[sl], part_ptr, part_rows, a, b)
        assert np.array_equal(adaptive_buckets(part, median_positive_scores(users[sl], items, part_ptr, part_rows),
                                               lo, hi), buckets[sl])
