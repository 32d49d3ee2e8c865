"""The sampled softmax loss, its masks and corrections: log-q, the hard offset, multiple importance
sampling (MIS) and the rank-window membership it needs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hnmine.io.positives import csr_rows
from hnmine.io.tables import ids_frame
from hnmine.mining.retrieval import IndexSpec, ItemIndex, retrieve_window
from hnmine.options import RankWindow, parse_rank_window
from hnmine.training.data import TrainData
from hnmine.training.ops import _SharedSoftmax

__all__ = ["WindowMembership", "mis_biases", "positive_mask", "sampled_softmax_loss"]


def positive_mask(
    candidates: torch.Tensor, pos_bag: torch.Tensor, pos_items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of every candidate column that is a positive of that row's user.

    ``pos_bag``/``pos_items``: the batch row and item of each of the batch users' positives.
    Duplicated candidates are all found (sort + searchsorted ranges).
    """
    sorted_c, perm = torch.sort(candidates)
    lo = torch.searchsorted(sorted_c, pos_items)
    hi = torch.searchsorted(sorted_c, pos_items, right=True)
    n = hi - lo
    rows = torch.repeat_interleave(pos_bag, n)
    first = torch.repeat_interleave(lo, n)
    within = torch.arange(int(n.sum()), device=candidates.device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    return rows, perm[first + within]


def sampled_softmax_loss(
    users: torch.Tensor,
    positives: torch.Tensor,
    cands: torch.Tensor,
    col_bias: torch.Tensor,
    mask_rows: torch.Tensor,
    mask_cols: torch.Tensor,
    temperature: float,
    hard_dots: torch.Tensor | None = None,
    hard_valid: torch.Tensor | None = None,
    hard_offset: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy of the positive against shared candidates and per-row hard negatives.

    ``users`` (B, d), ``positives`` (B, d) and ``cands`` (M, d) are unit vectors; ``hard_dots``
    (B, H) the users' cosines with their hard negatives (:func:`gathered_dots`); ``col_bias`` (M,)
    or (B, M) is added to candidate logits (-log q); ``hard_offset`` (a number or (B, H)) to hard
    logits; masked (row, column) pairs and invalid hard slots are excluded from the denominator.
    """
    inv_tau = 1.0 / temperature
    extra = (users * positives).sum(-1, keepdim=True) * inv_tau
    if hard_dots is not None and hard_dots.shape[1]:
        hard_logits = hard_dots * inv_tau + hard_offset
        if hard_valid is not None:
            hard_logits = hard_logits.masked_fill(~hard_valid, -math.inf)
        extra = torch.cat([extra, hard_logits], dim=1)
    return _SharedSoftmax.apply(users, cands, col_bias, mask_rows, mask_cols, extra, inv_tau)


def mis_biases(
    easy_count: torch.Tensor,
    in_window: torch.Tensor,
    hard_count: torch.Tensor,
    hard_valid: torch.Tensor,
    window: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Balance-heuristic logit corrections for one sample of easy and one of hard negatives.

    The easy sampler puts ``easy_count`` (M q_j) expected copies of item j among the candidates
    (``easy_count`` (M,) for the candidates, ``hard_count`` (B, H) for the hard items); the hard
    sampler draws each of the W items of row u's window with probability H_u / W (H_u = the row's
    valid hard slots). Weighting every sampled item by 1 / (M q_j + H_u / W [j in window]) makes
    the sum over both samples an unbiased estimate of the full denominator (multiple importance
    sampling, balance heuristic). Returns the (B, M) easy and (B, H) hard logit biases.
    """
    rate = hard_valid.sum(dim=1, keepdim=True).to(easy_count.dtype) / window
    easy = -torch.log((easy_count[None, :] + rate * in_window.to(easy_count.dtype)).clamp(min=1e-30))
    hard = -torch.log((hard_count + rate).clamp(min=1e-30))
    return easy, hard


def _aligned_vectors(emb: Any, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``emb`` in the order of ``ids``, zero where unknown, and which ids are known."""
    frame = ids_frame("id", ids, "row").join(ids_frame("id", np.asarray(emb.ids), "src"), on="id", how="left")
    frame = frame.sort("row")
    known = (~frame["src"].is_null()).to_numpy()
    src = frame["src"].fill_null(0).to_numpy().astype(np.int64)
    out = np.zeros((len(ids), emb.vectors.shape[1]), dtype=np.float32)
    out[known] = emb.vectors[src[known]]
    return out, known


class WindowMembership:
    """Which candidates lie in a user's mined rank window, by the embeddings it was mined with.

    The window LO:HI holds the items at ranks LO..HI of the user's ranking over non-positives, so
    it is the score interval [score at rank HI, score at rank LO] of that ranking: two thresholds
    per user, computed once; membership of any (user, item) pair is then one dot product.
    """

    def __init__(self, directory: str, rank_window: str | RankWindow, data: TrainData, device: torch.device,
                 chunk: int = 1024) -> None:
        from hnmine.io.embeddings import read_embeddings
        from hnmine.io.storage import join

        lo, hi = parse_rank_window(rank_window)
        users, known = _aligned_vectors(read_embeddings(join(directory, "user.parquet")), data.user_ids)
        items_vecs, _ = _aligned_vectors(read_embeddings(join(directory, "item.parquet")), data.item_ids)
        self.users = torch.from_numpy(users).to(device)
        self.items = torch.from_numpy(items_vecs).to(device)
        n_users = len(data.user_ids)
        upper = torch.full((n_users,), -math.inf)
        lower = torch.full((n_users,), -math.inf)
        index = ItemIndex(items_vecs, IndexSpec(kind="auto"), queries=n_users)
        for start in range(0, n_users, chunk):
            stop = min(start + chunk, n_users)
            # the miner's ranking core: the same ranks, ties and scores as the window was mined with
            local, rows = csr_rows(data.indptr, data.items, np.arange(start, stop))
            window = retrieve_window(index, users[start:stop], local, rows, lo, hi)
            # thresholds: the boundary items' scores as __call__ computes them (a matmul), so that
            # the items at ranks LO and HI themselves are inside whatever the last bit of rounding
            chunk_users = self.users[start:stop].cpu()
            for bound, column in ((upper, 0), (lower, -1)):
                item_rows = torch.from_numpy(window.items[:, column])
                found = item_rows >= 0
                scores = (chunk_users @ self.items.cpu()[item_rows.clamp(min=0)].T).diagonal()
                bound[start:stop] = torch.where(found, scores, torch.tensor(-math.inf))
        known_users = torch.from_numpy(known).to(device)
        # a user the window embeddings do not know has no window: nothing is in it
        self.upper = torch.where(known_users, upper.to(device), torch.tensor(-math.inf, device=device))
        self.lower = torch.where(known_users, lower.to(device), torch.tensor(math.inf, device=device))

    def __call__(self, users: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """(B, M) bool: candidate item row ``cands[j]`` is in the window of user row ``users[b]``."""
        scores = self.users[users] @ self.items[cands].T
        return (scores >= self.lower[users, None]) & (scores <= self.upper[users, None])


