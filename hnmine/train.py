"""Stage 0 and 6 of the loop: train a two-tower model on hnmine's own tables.

The trainer reads what the TorchEasyRec samplers read, the way they read it:

- ``pos_edge`` (or any positives file :func:`~hnmine.positives.read_positives` accepts): the
  training examples, and the items each user must never see as a negative;
- item nodes (``item.parquet``: id, weight, attrs): the weight is the easy-negative sampling
  weight of NegativeSampler (popularity^b);
- ``hard_neg_edge``: per user, the first ``num_hard_sample`` edges by weight, descending (what
  GraphLearn's "full" neighbour sampler returns every batch).

Model: id embeddings for users and items; the user tower adds a projection of the mean of the
user's history item embeddings (the target item left out during training), which is what lifts
a two-tower model past the plain-MF ceiling on Gowalla. Scores are cosine / temperature.

Loss: softmax cross-entropy over ``[positive | easy negatives | the user's hard negatives]``:

- easy negatives, regime (a) ``shared``: ``num_sample`` items drawn by item node weight and shared
  by the batch (NegativeSampler); ``v2``: uniform over pos_edge items (NegativeSamplerV2);
  regime (b) ``mixed``: the batch's other positives plus ``num_sample`` uniform items (mixed
  negative sampling);
- log-q correction: each easy negative's logit minus log(expected count in the candidate set),
  so the sampled denominator estimates the full softmax's;
- every negative that is a train positive of that row's user is masked out;
- hard negatives get ``hard_offset`` added to their logit (default log(window / num_hard_sample)):
  each stands for that many items of its rank window (``hard_correction="offset"``);
- or ``hard_correction="mis"``: multiple importance sampling (balance heuristic) over the two
  samplers. Easy and hard candidates are two samples of the same negatives; every candidate j of
  row u gets ``-log(M q_j + (H_u / W) * [j in u's window])``, hard ones included, so the sampled
  denominator estimates the full softmax's once (the offset form counts the window twice: once
  through the easy sample's log-q sum and once through the up-weighted hard items). Window
  membership comes from the embeddings the hard negatives were mined with (``window_embeddings``,
  ``rank_window``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from hnmine import faults, kernels
from hnmine.checks import check_finite_options
from hnmine.errors import InputError, reading
from hnmine.evaluate import ranking_metrics, user_heldout_counts
from hnmine.mine import MAX_COUNT, parse_rank_window
from hnmine.positives import index_positives, read_positives

__all__ = [
    "HARD_CORRECTIONS",
    "REGIMES",
    "TrainConfig",
    "TrainData",
    "TrainReport",
    "TwoTower",
    "WindowMembership",
    "load_model",
    "load_train_data",
    "mis_biases",
    "pick_device",
    "positive_mask",
    "read_hard_negatives",
    "sampled_softmax_loss",
    "train",
]

REGIMES = ("shared", "v2", "mixed")
HARD_CORRECTIONS = ("offset", "mis")


@dataclass
class TrainConfig:
    """Every option of ``hnmine train``."""

    positives: str
    out: str
    item_nodes: str | None = None
    hard_negatives: str | None = None
    init: str | None = None
    positives_format: str = "auto"
    dim: int = 64
    history: bool = True
    max_history: int | None = None
    history_dropout: float = 0.5  # docs/training.md: stops the history tower memorising (Gowalla)
    epochs: int = 20
    batch_size: int = 2048
    lr: float = 1e-2
    lr_min: float = 1e-3
    temperature: float = 0.1
    regime: str = "mixed"
    num_sample: int = 2048
    pop_exponent: float = 0.75
    logq: bool = True
    num_hard_sample: int = 50
    hard_offset: float | None = None
    hard_window: int = 800
    # "offset": hard logits + hard_offset; "mis": balance-heuristic weights over easy and hard samples
    hard_correction: str = "offset"
    window_embeddings: str | None = None  # mis: directory with the user/item.parquet the window was mined with
    rank_window: str | None = None  # mis: the mined window LO:HI (1-based ranks among non-positives)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    valid: str | None = None
    keep_best: bool = True
    patience: int | None = None

    def validate(self) -> None:
        check_finite_options(self)
        checks = [
            (self.dim >= 1, "--dim must be at least 1"),
            # 0 epochs would save an untrained (or merely copied) model and report success
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.threads is None or self.threads >= 1, "--threads must be at least 1 (leave it out for torch's choice)"),
            (0 <= self.seed < 2**63, "--seed must be between 0 and 2**63 - 1"),
            (max(self.dim, self.epochs, self.batch_size, self.num_sample, self.num_hard_sample, self.hard_window,
                 self.max_history or 0, self.patience or 0, self.threads or 0) <= MAX_COUNT,
             f"counts and sizes must be at most {MAX_COUNT}"),
            (self.batch_size >= 2, "--batch-size must be at least 2"),
            (self.lr > 0 and self.lr_min >= 0, "--lr must be positive and --lr-min >= 0"),
            (self.temperature > 0, "--temperature must be positive"),
            (self.regime in REGIMES, f"--regime must be one of {', '.join(REGIMES)}"),
            (self.num_sample >= 0, "--num-sample must be >= 0"),
            (self.regime == "mixed" or self.num_sample >= 1, "--num-sample must be >= 1 in the shared and v2 regimes"),
            (self.pop_exponent >= 0, "--pop-exponent must be >= 0"),
            (self.num_hard_sample >= 0, "--num-hard-sample must be >= 0"),
            (self.max_history is None or self.max_history >= 1, "--max-history must be at least 1"),
            (0 <= self.history_dropout < 1, "--history-dropout must be in [0, 1)"),
            (self.patience is None or self.patience >= 1, "--patience must be at least 1"),
            (self.hard_window >= 1, "--hard-window must be >= 1"),
            (self.hard_correction in HARD_CORRECTIONS, "--hard-correction must be offset or mis"),
            (self.hard_correction != "mis" or not self.hard_negatives or (self.window_embeddings and self.rank_window),
             "--hard-correction mis needs --window-embeddings and --rank-window (the mining model and window)"),
            (self.hard_correction != "mis" or self.logq, "--hard-correction mis needs log-q (--logq)"),
            (self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.rank_window is not None:
            parse_rank_window(self.rank_window)

    def window_size(self) -> int:
        """Items in the hard negatives' rank window: from rank_window when given, else hard_window."""
        if self.rank_window is not None:
            lo, hi = parse_rank_window(self.rank_window)
            return hi - lo + 1
        return self.hard_window

    def resolved_hard_offset(self) -> float:
        """log(window / num_hard_sample) unless given: one mined negative stands for that many items."""
        if self.hard_offset is not None:
            return float(self.hard_offset)
        return math.log(self.hard_window / max(self.num_hard_sample, 1)) if self.num_hard_sample else 0.0


@dataclass
class TrainReport:
    out: str = ""
    users: int = 0
    items: int = 0
    interactions: int = 0
    hard_users: int = 0
    hard_rows: int = 0
    hard_masked_positives: int = 0
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None  # with a validation set: the epoch whose weights were kept
    seconds: float = 0.0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- data


def _ids_frame(name: str, ids: np.ndarray, row: str) -> pl.DataFrame:
    values = ids.tolist() if ids.dtype == object else ids
    return pl.DataFrame({name: values, row: np.arange(len(ids), dtype=np.int64)})


@dataclass
class TrainData:
    """Positives as rows, the user CSR (sorted item rows) and the easy-negative distributions."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray  # one row per interaction: user row
    items: np.ndarray  # item row
    indptr: np.ndarray  # CSR over user rows
    hist: np.ndarray  # item rows the user tower pools (at most max_history per user), sorted within each user
    item_weight: np.ndarray  # item node weight (NegativeSampler)
    pool: np.ndarray  # item rows of pos_edge (NegativeSamplerV2 pool)
    popularity: np.ndarray  # share of interactions per item (in-batch sampling probability)
    hist_indptr: np.ndarray | None = None  # CSR of ``hist`` (None: same as indptr)
    hard: np.ndarray | None = None  # (users, num_hard_sample) item rows, -1 padded
    hard_rows: int = 0
    hard_users: int = 0

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _sorted_ids(series: pl.Series) -> np.ndarray:
    values = series.unique().sort()
    if values.dtype == pl.String:
        return np.asarray(values.to_list(), dtype=object)
    return values.to_numpy().astype(np.int64)


def load_train_data(config: TrainConfig) -> TrainData:
    """Read positives, item nodes and hard negatives into row-indexed arrays."""
    positives = read_positives(config.positives, fmt=config.positives_format).table
    nodes = None
    if config.item_nodes:
        path = Path(config.item_nodes)
        if not path.exists():
            raise InputError(f"{path}: file not found")
        with reading(path, "item nodes"):
            nodes = pl.read_parquet(path, columns=["id", "weight"])
        if nodes.schema["id"] != positives.schema["item_id"]:
            nodes = nodes.with_columns(pl.col("id").cast(positives.schema["item_id"], strict=False))
    user_ids = _sorted_ids(positives["user_id"])
    item_series = positives["item_id"]
    if nodes is not None:
        item_series = pl.concat([item_series, nodes["id"].rename("item_id")])
    item_ids = _sorted_ids(item_series.drop_nulls())
    rows = (
        positives.join(_ids_frame("user_id", user_ids, "u"), on="user_id")
        .join(_ids_frame("item_id", item_ids, "i"), on="item_id")
        .sort("u", "i")
    )
    users = rows["u"].to_numpy().astype(np.int64)
    items = rows["i"].to_numpy().astype(np.int64)
    indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=len(user_ids)), out=indptr[1:])
    counts = np.bincount(items, minlength=len(item_ids)).astype(np.float64)
    if nodes is not None:
        weight = np.zeros(len(item_ids))
        joined = _ids_frame("id", item_ids, "i").join(nodes, on="id", how="left")
        weight[joined["i"].to_numpy()] = joined["weight"].fill_null(0.0).to_numpy()
    else:
        weight = np.power(counts, config.pop_exponent)
    if not (np.isfinite(weight).all() and (weight >= 0).all() and weight.sum() > 0):
        raise InputError(f"{config.item_nodes or config.positives}: item weights must be finite, >= 0, not all 0")
    data = TrainData(
        user_ids=user_ids, item_ids=item_ids, users=users, items=items, indptr=indptr, hist=items.copy(),
        item_weight=weight, pool=np.flatnonzero(counts > 0), popularity=counts / counts.sum(), hist_indptr=indptr,
    )
    if config.max_history is not None:
        data.hist_indptr, data.hist = cap_history(indptr, items, config.max_history, config.seed)
    if config.hard_negatives and config.num_hard_sample > 0:
        data.hard, data.hard_rows, data.hard_users = read_hard_negatives(
            config.hard_negatives, user_ids, item_ids, config.num_hard_sample
        )
    return data


def cap_history(indptr: np.ndarray, items: np.ndarray, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random subset of at most ``cap`` items per user (seeded), as a sorted CSR.

    Examples are drawn per interaction, so a heavy user is drawn in proportion to its history and
    pooling all of it dominates the step (ml-1m); a fixed subset bounds that cost.
    """
    counts = np.diff(indptr)
    user = np.repeat(np.arange(len(counts)), counts)
    keys = np.random.default_rng(seed).random(len(items))
    order = np.lexsort((keys, user))
    slot = np.arange(len(items)) - indptr[user[order]]
    kept = np.sort(order[slot < cap])  # original order: user, then item row
    new_counts = np.minimum(counts, cap)
    new_indptr = np.zeros_like(indptr)
    np.cumsum(new_counts, out=new_indptr[1:])
    return new_indptr, items[kept]


def read_hard_negatives(
    path: str | Path, user_ids: np.ndarray, item_ids: np.ndarray, num_hard_sample: int
) -> tuple[np.ndarray, int, int]:
    """Per user row, the first ``num_hard_sample`` hard_neg_edge items by weight (descending, file order on ties).

    This is what HardNegativeSampler(V2) gets from GraphLearn's "full" neighbour sampler. Returns
    ((users, num_hard_sample) item rows padded with -1, rows kept, users with any).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    with reading(path, "hard negatives"):
        edges = pl.read_parquet(path, columns=["user_id", "item_id", "weight"])
    user_type = pl.String if user_ids.dtype == object else pl.Int64
    item_type = pl.String if item_ids.dtype == object else pl.Int64
    ranked = (
        edges.with_row_index("order")
        .with_columns(pl.col("user_id").cast(user_type, strict=False), pl.col("item_id").cast(item_type, strict=False))
        .sort(["user_id", "weight", "order"], descending=[False, True, False], nulls_last=True)
        .with_columns(pl.int_range(pl.len()).over("user_id").alias("slot"))
        .filter(pl.col("slot") < num_hard_sample)
        .join(_ids_frame("user_id", user_ids, "u"), on="user_id")
        .join(_ids_frame("item_id", item_ids, "i"), on="item_id")
    )
    hard = np.full((len(user_ids), num_hard_sample), -1, dtype=np.int64)
    hard[ranked["u"].to_numpy(), ranked["slot"].to_numpy()] = ranked["i"].to_numpy()
    return hard, ranked.height, int(ranked["u"].n_unique())


# ---------------------------------------------------------------------------------------------- model


class TwoTower(nn.Module):
    """Id towers; the user tower adds W · mean(history item embeddings) when ``history`` is on."""

    def __init__(self, n_users: int, n_items: int, dim: int, history: bool = True) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        self.history = history
        self.proj = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(dim))

    def item_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item(rows), dim=-1)

    def distinct_item_table(self, *row_sets: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Unit vectors of the distinct items of ``row_sets`` and, per set, its rows into that table.

        A step's hard negatives are (B, H) rows over a few thousand distinct items: normalising
        the (B, H, d) gather directly cost ~30 element-wise passes over it in forward and
        backward (4x the step time at H=50); normalising each distinct item once costs one pass
        over the table.
        """
        flat = torch.cat([rows.reshape(-1) for rows in row_sets])
        distinct, where = torch.unique(flat, return_inverse=True)
        parts = where.split([rows.numel() for rows in row_sets])
        return self.item_vectors(distinct), [part.view(rows.shape) for part, rows in zip(parts, row_sets, strict=True)]

    def user_vectors(
        self,
        rows: torch.Tensor,
        indptr: torch.Tensor,
        hist: torch.Tensor,
        drop: torch.Tensor | None = None,
        dropout: float = 0.0,
        gen: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Unit user vectors; ``drop`` (item row per user, or None) is left out of the history mean.

        ``dropout`` > 0 (training) also leaves out each other history item with that probability
        (drawn from ``gen``): the mean is then over a random subset, so the user's id embedding cannot
        learn to cancel a fixed history sum and read the target off the one item left out.
        """
        vectors = self.user(rows)
        if self.history:
            hist_items, bag, counts = gather_csr(rows, indptr, hist)
            keep = torch.ones_like(hist_items, dtype=torch.bool)
            if drop is not None:
                keep = hist_items != drop[bag]
            if dropout > 0:
                coins = torch.rand(len(hist_items), generator=gen).to(hist_items.device)
                keep = keep & (coins >= dropout)
            keep = keep.to(vectors.dtype)
            denom = torch.zeros(len(rows), dtype=vectors.dtype, device=vectors.device).index_add_(0, bag, keep)
            weights = keep / denom.clamp(min=1)[bag]
            pooled = bag_sums(self.item.weight, hist_items, bag, counts, weights)
            vectors = vectors + self.proj(pooled)
        return F.normalize(vectors, dim=-1)


class _BagSums(torch.autograd.Function):
    """Weighted sums of table rows per bag (the history mean), as compiled loops on the CPU.

    As gather, multiply and ``index_add_`` (and their backward) the history mean was the largest
    part of a step; ``embedding_bag`` is no better (its CPU backward sorts every index).
    """

    @staticmethod
    def forward(ctx, table, items, offsets, weights):  # type: ignore[override]
        table_c = table.detach().contiguous()
        out = torch.empty((len(offsets) - 1, table.shape[1]), dtype=table.dtype)
        kernels.bag_sums(table_c.numpy(), items.numpy(), offsets.numpy(), weights.numpy(), out.numpy())
        ctx.save_for_backward(items, offsets, weights)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        items, offsets, weights = ctx.saved_tensors
        grad_table = torch.zeros(ctx.table_shape, dtype=grad.dtype)
        kernels.bag_sums_grad_table(grad.contiguous().numpy(), items.numpy(), offsets.numpy(), weights.numpy(),
                                    grad_table.numpy())
        return grad_table, None, None, None


def bag_sums(table: torch.Tensor, items: torch.Tensor, bag: torch.Tensor, counts: torch.Tensor,
             weights: torch.Tensor) -> torch.Tensor:
    """Per bag b, ``sum(weights[j] * table[items[j]])`` over the j with ``bag[j] == b`` (bags contiguous, ``counts`` long)."""
    if table.device.type == "cpu" and table.dtype == torch.float32:
        offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=offsets[1:])
        return _BagSums.apply(table, items.contiguous(), offsets, weights.to(table.dtype).contiguous())
    # gather + index_add rather than embedding_bag: its backward sorts every index
    return torch.zeros((len(counts), table.shape[1]), dtype=table.dtype, device=table.device).index_add_(
        0, bag, table[items] * weights[:, None])


def gather_csr(rows: torch.Tensor, indptr: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenated CSR slices of ``rows``: (values, batch position of each, count per row)."""
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    bag = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    index = torch.arange(int(counts.sum()), device=rows.device) - offsets[bag] + starts[bag]
    return values[index], bag, counts


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


class _SharedSoftmax(torch.autograd.Function):
    """Fused softmax cross-entropy over [extra columns | shared candidate columns], label = column 0.

    Forward and backward touch the (batch x candidates) matrix a few times in place instead of
    autograd's dozen temporaries: the difference between ~0.5 s and ~0.1 s a step on 2 cores.
    """

    @staticmethod
    def forward(ctx, users, cands, col_bias, mask_rows, mask_cols, extra, inv_tau):  # type: ignore[override]
        scores = users @ cands.T
        scores.mul_(inv_tau).add_(col_bias)
        if mask_rows.numel():
            scores[mask_rows, mask_cols] = -math.inf
        top = torch.maximum(scores.max(dim=1).values, extra.max(dim=1).values).detach()
        scores.sub_(top[:, None]).exp_()
        extra_exp = (extra - top[:, None]).exp()
        total = scores.sum(dim=1) + extra_exp.sum(dim=1)
        loss = (total.log() + top - extra[:, 0]).mean()
        scores.div_(total[:, None])
        ctx.save_for_backward(users, cands, scores, extra_exp / total[:, None])
        ctx.inv_tau = inv_tau
        return loss

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        users, cands, probs, extra_probs = ctx.saved_tensors
        scale = grad / users.shape[0]
        probs = probs.mul_(scale * ctx.inv_tau)
        grad_users = probs @ cands
        grad_cands = probs.T @ users
        grad_extra = extra_probs * scale
        grad_extra[:, 0] -= scale
        return grad_users, grad_cands, None, None, None, grad_extra, None


class _GatheredDots(torch.autograd.Function):
    """(B, H) dot products of each user with rows of a table, without materialising the (B, H, d) gather.

    Gathering 50-200 hard negatives per row as a (B, H, d) tensor, then its backward and the
    scatter back, was most of a step's time on the CPU; the compiled loops read each row once.
    """

    @staticmethod
    def forward(ctx, users, table, index):  # type: ignore[override]
        users_c, table_c, index_c = users.detach().contiguous(), table.detach().contiguous(), index.contiguous()
        out = torch.empty(index.shape, dtype=users.dtype)
        kernels.gathered_dots(users_c.numpy(), table_c.numpy(), index_c.numpy(), out.numpy())
        ctx.save_for_backward(users_c, table_c, index_c)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        users, table, index = ctx.saved_tensors
        grad = grad.contiguous()
        grad_users = torch.empty_like(users)
        grad_table = torch.zeros_like(table)
        kernels.gathered_dots_grad_users(grad.numpy(), table.numpy(), index.numpy(), grad_users.numpy())
        kernels.gathered_dots_grad_table(grad.numpy(), users.numpy(), index.numpy(), grad_table.numpy())
        return grad_users, grad_table, None


def gathered_dots(users: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(users[:, None, :] * table[index]).sum(-1)``: compiled loops on the CPU, a batched GEMV on CUDA."""
    if users.device.type == "cpu" and users.dtype == table.dtype == torch.float32:
        return _GatheredDots.apply(users, table, index)
    return torch.bmm(table[index], users[:, :, None]).squeeze(2)


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


# ------------------------------------------------------------------------------------------- training


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device available")
    return torch.device(name)


class TrainProgress:
    """Hooks the CLI implements: a bar over each epoch's steps, a line per epoch."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self) -> None: ...

    def end_epoch(self, stats: dict[str, float]) -> None: ...


def _sample_easy(config: TrainConfig, data: TrainData, tensors: dict[str, torch.Tensor], pos_items: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate item rows shared by the batch and their -log(expected count) biases."""
    device = pos_items.device
    m = config.num_sample
    if config.regime == "shared":
        cands = torch.multinomial(tensors["weight_p"], m, replacement=True, generator=gen).to(device)
        logq = torch.log(m * tensors["weight_p"].to(device)[cands])
    elif config.regime == "v2":
        pool = tensors["pool"]
        cands = pool[torch.randint(len(pool), (m,), generator=gen).to(device)]
        logq = torch.full((m,), math.log(m / len(pool)), device=device)
    else:
        rand = torch.randint(data.n_items, (m,), generator=gen).to(device)
        cands = torch.cat([pos_items, rand])
        logq = torch.log(len(pos_items) * tensors["popularity"][cands] + m / data.n_items)
    bias = -logq if config.logq else torch.zeros_like(logq)
    return cands, bias.float()


def _easy_count(config: TrainConfig, data: TrainData, tensors: dict[str, torch.Tensor], items: torch.Tensor,
                batch: int) -> torch.Tensor:
    """Expected count of each item row of ``items`` among one step's easy candidates (M q_i)."""
    m = config.num_sample
    if config.regime == "shared":
        return (m * tensors["weight_p"].to(items.device)[items]).float()
    if config.regime == "v2":
        return m * tensors["in_pool"][items].float() / len(tensors["pool"])
    return (batch * tensors["popularity"][items] + m / data.n_items).float()


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
    frame = _ids_frame("id", ids, "row").join(_ids_frame("id", np.asarray(emb.ids), "src"), on="id", how="left")
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

    def __init__(self, directory: str, rank_window: str, data: TrainData, device: torch.device,
                 chunk: int = 1024) -> None:
        from hnmine.embeddings import read_embeddings

        lo, hi = parse_rank_window(rank_window)
        base = Path(directory)
        users, known = _aligned_vectors(read_embeddings(base / "user.parquet"), data.user_ids)
        items_vecs, _ = _aligned_vectors(read_embeddings(base / "item.parquet"), data.item_ids)
        self.users = torch.from_numpy(users).to(device)
        self.items = torch.from_numpy(items_vecs).to(device)
        n_users, n_items = len(data.user_ids), len(data.item_ids)
        upper = torch.full((n_users,), -math.inf)
        lower = torch.full((n_users,), -math.inf)
        indptr = torch.from_numpy(data.indptr)
        items = torch.from_numpy(data.items.astype(np.int64))
        k = min(hi, n_items)
        with torch.no_grad():
            for start in range(0, n_users, chunk):
                stop = min(start + chunk, n_users)
                scores = self.users[start:stop].cpu() @ self.items.cpu().T
                pos, bag, _ = gather_csr(torch.arange(start, stop), indptr, items)
                scores[bag, pos] = -math.inf
                top = torch.topk(scores, k, dim=1).values
                if lo <= k:
                    upper[start:stop] = top[:, lo - 1]
                    lower[start:stop] = top[:, hi - 1] if hi <= k else -math.inf
        known_users = torch.from_numpy(known).to(device)
        # a user the window embeddings do not know has no window: nothing is in it
        self.upper = torch.where(known_users, upper.to(device), torch.tensor(-math.inf, device=device))
        self.lower = torch.where(known_users, lower.to(device), torch.tensor(math.inf, device=device))

    def __call__(self, users: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """(B, M) bool: candidate item row ``cands[j]`` is in the window of user row ``users[b]``."""
        scores = self.users[users] @ self.items[cands].T
        return (scores >= self.lower[users, None]) & (scores <= self.upper[users, None])


def _build_model(config: TrainConfig, data: TrainData, device: torch.device) -> TwoTower:
    torch.manual_seed(config.seed)
    model = TwoTower(data.n_users, data.n_items, config.dim, config.history)
    if config.init:
        _warm_start(model, config.init, data)
    return model.to(device)


def _warm_start(model: TwoTower, path: str, data: TrainData) -> None:
    """Copy the rows of ids both models share (and the projection) from a saved model."""
    old = load_model(path)
    if old.dim != model.user.weight.shape[1]:
        raise InputError(f"{path}: model has dim {old.dim}, not {model.user.weight.shape[1]}")
    with torch.no_grad():
        for name, new_ids, old_ids in (("user", data.user_ids, old.user_ids), ("item", data.item_ids, old.item_ids)):
            new_frame = _ids_frame("id", new_ids, "new")
            old_frame = _ids_frame("id", old_ids, "old")
            pairs = new_frame.join(old_frame, on="id")
            table = getattr(model, name).weight
            source = getattr(old.model, name).weight
            new_rows = torch.from_numpy(pairs["new"].to_numpy().copy())
            table[new_rows] = source[torch.from_numpy(pairs["old"].to_numpy().copy())]
        model.proj.weight.copy_(old.model.proj.weight)


def _all_vectors(model: TwoTower, indptr: torch.Tensor, hist: torch.Tensor, n_users: int,
                 chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Every user's and item's unit vector with the full history (what export writes)."""
    device = indptr.device
    with torch.no_grad():
        items = model.item_vectors(torch.arange(model.item.weight.shape[0], device=device)).cpu().numpy()
        users = [model.user_vectors(torch.arange(s, min(s + chunk, n_users), device=device), indptr, hist).cpu().numpy()
                 for s in range(0, n_users, chunk)]
    return np.concatenate(users).astype(np.float32), items.astype(np.float32)


class Validator:
    """Recall@20 / NDCG@20 of the current weights on held-out positives, training positives masked.

    The protocol of :func:`hnmine.evaluate.evaluate` (held-out users or items the model does not
    know count as misses), computed in memory after each epoch.
    """

    def __init__(self, path: str, data: TrainData) -> None:
        valid = read_positives(path)
        index = index_positives(valid, data.user_ids, data.item_ids)
        self.indptr, self.items = index.indptr, index.item_rows
        self.counts = user_heldout_counts(valid.table, data.user_ids)
        self.users = valid.table["user_id"].n_unique()
        self.train_indptr, self.train_items = data.indptr, data.items

    def __call__(self, model: TwoTower, indptr: torch.Tensor, hist: torch.Tensor) -> dict[str, float]:
        model.eval()
        users, items = _all_vectors(model, indptr, hist, len(self.train_indptr) - 1)
        model.train()
        metrics = ranking_metrics(users, items, self.train_indptr, self.train_items, self.indptr, self.items,
                                  self.counts, (20,))
        scale = int((self.counts > 0).sum()) / max(self.users, 1)
        return {f"valid_{k}": v * scale for k, v in metrics.items()}


@contextlib.contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training; the previous global setting is restored after.

    Without them a seeded run is not the same run twice, so a resumed run could not match an
    uninterrupted one. On the CPU, with more than one thread, ``index_put_(accumulate=True)`` (the
    backward of every gather from the item table) adds with atomics in any order: two runs in one
    process differed in the item gradients of the first step (~2e-9) and by ~1e-6 in the weights
    after two epochs; the deterministic path adds in index order. CUDA's ``index_add_`` and
    embedding backward do the same (~1e-5, H100).
    """
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable GEMMs
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def check_model_path(path: str | Path) -> None:
    """Refuse a model path that cannot be written, before any training time is spent on it."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{out}: is a directory; --out is the model file to write")
    if out.is_symlink() and not out.exists():
        raise InputError(f"{out}: is a symlink to a missing file ({os.readlink(out)}); give a plain file path")
    ancestor = out.absolute().parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise InputError(f"{out}: {ancestor} is a symlink to a missing directory")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{out}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{out}: cannot create files in {ancestor} (permission denied)")
    if ancestor == out.absolute().parent:  # try the temporary file the model is written to (exclusive: ours only)
        probe = out.with_name(out.name + ".tmp")
        try:
            with probe.open("xb"):
                pass
        except FileExistsError:
            return
        except OSError as exc:
            raise InputError(f"{out}: cannot write the model file ({exc.strerror})") from None
        probe.unlink()


def train(config: TrainConfig, progress: TrainProgress | None = None) -> TrainReport:
    """Train and save ``config.out`` (a model file :func:`load_model` reads); returns the report."""
    config.validate()
    check_model_path(config.out)
    device = pick_device(config.device)
    with deterministic_kernels(device):
        return _train(config, device, progress or TrainProgress())


class TrainStep:
    """The loss of one batch: what :func:`train` minimises step after step.

    Holds the tensors every step reads (positives, history, the easy samplers' tables, the hard
    negatives, the positive keys that mask them) so the step itself is one call; the profiling
    script times this same call. ``gen`` draws the history dropout and the easy negatives, in the
    order the steps run, so a seeded run is the same run.
    """

    def __init__(self, config: TrainConfig, data: TrainData, model: TwoTower, device: torch.device,
                 gen: torch.Generator) -> None:
        self.config, self.data, self.model, self.device, self.gen = config, data, model, device, gen
        self.tensors = {
            "indptr": torch.from_numpy(data.indptr).to(device),
            "hist": torch.from_numpy(data.hist).to(device),
            "hist_indptr": torch.from_numpy(
                data.hist_indptr if data.hist_indptr is not None else data.indptr).to(device),
            "weight_p": torch.from_numpy(data.item_weight / data.item_weight.sum()).double(),
            "pool": torch.from_numpy(data.pool).to(device),
            "popularity": torch.from_numpy(data.popularity).to(device),
        }
        self.hard = torch.from_numpy(data.hard).to(device) if data.hard is not None else None
        self.window = None
        if self.hard is not None and config.hard_correction == "mis":
            assert config.window_embeddings and config.rank_window  # validate() checked
            self.window = WindowMembership(config.window_embeddings, config.rank_window, data, device)
            if config.regime == "v2":
                self.tensors["in_pool"] = torch.zeros(data.n_items, dtype=torch.bool, device=device)
                self.tensors["in_pool"][self.tensors["pool"]] = True
        # sorted, since the rows are sorted by (user, item): one searchsorted finds a pair
        self.pos_keys = torch.from_numpy(data.users * data.n_items + data.items).to(device)
        self.hard_offset = config.resolved_hard_offset()
        self.users_all = torch.from_numpy(data.users).to(device)
        self.items_all = torch.from_numpy(data.items).to(device)
        self.masked_hard = 0  # hard negatives that are the user's positives, counted while counting is on

    def loss(self, batch: torch.Tensor, count_masked: bool = False) -> torch.Tensor:
        """Sampled-softmax loss of the interaction rows ``batch``."""
        config, data, model, tensors = self.config, self.data, self.model, self.tensors
        u, p = self.users_all[batch], self.items_all[batch]
        user_vec = model.user_vectors(u, tensors["hist_indptr"], tensors["hist"], drop=p,
                                      dropout=config.history_dropout, gen=self.gen)
        cands, bias = _sample_easy(config, data, tensors, p, self.gen)
        pos_items, pos_bag, _ = gather_csr(u, tensors["indptr"], self.items_all)
        mask_rows, mask_cols = positive_mask(cands, pos_bag, pos_items)
        hard_dots = hard_valid = None
        if self.hard is not None:
            rows_hard = self.hard[u]
            hard_valid = rows_hard >= 0
            rows_hard = rows_hard.clamp(min=0)  # empty slots (-1) read item 0; hard_valid masks them
            keys = u[:, None] * data.n_items + rows_hard
            idx = torch.searchsorted(self.pos_keys, keys).clamp(max=len(self.pos_keys) - 1)
            is_pos = (self.pos_keys[idx] == keys) & hard_valid
            if count_masked:
                self.masked_hard += int(is_pos.sum())
            hard_valid = hard_valid & ~is_pos
            table, (pos_local, cand_local, hard_local) = model.distinct_item_table(p, cands, rows_hard)
            hard_dots = gathered_dots(user_vec, table, hard_local)
        else:
            table, (pos_local, cand_local) = model.distinct_item_table(p, cands)
        pos_vec, cand_vec = table[pos_local], table[cand_local]
        bias = bias.to(self.device)
        row_offset: float | torch.Tensor = self.hard_offset
        if self.window is not None and hard_valid is not None:
            bias, row_offset = mis_biases(torch.exp(-bias), self.window(u, cands),
                                          _easy_count(config, data, tensors, rows_hard, len(batch)),
                                          hard_valid, config.window_size())
        return sampled_softmax_loss(
            user_vec, pos_vec, cand_vec, bias, mask_rows, mask_cols,
            config.temperature, hard_dots, hard_valid, row_offset,
        )


def make_optimizer(model: TwoTower, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel halves the optimizer step on CPU (torch >= 2.4), older torch falls back."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def _train(config: TrainConfig, device: torch.device, progress: TrainProgress) -> TrainReport:
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
        kernels.set_threads(config.threads)
    data = load_train_data(config)
    model = _build_model(config, data, device)
    step_loss = TrainStep(config, data, model, device, torch.Generator().manual_seed(config.seed))
    rng = np.random.default_rng(config.seed)
    optimizer = make_optimizer(model, config.lr)
    n = len(data.users)
    steps = max(1, math.ceil(n / config.batch_size))
    total_steps = steps * config.epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps, 1), eta_min=config.lr_min)
    report = TrainReport(out=str(Path(config.out).absolute()), users=data.n_users, items=data.n_items,
                         interactions=n, hard_users=data.hard_users, hard_rows=data.hard_rows, device=str(device))
    validator = Validator(config.valid, data) if config.valid else None
    best_score, best_state, since_best = -math.inf, None, 0
    for epoch in range(config.epochs):
        progress.start_epoch(epoch + 1, config.epochs, steps)
        epoch_start = time.perf_counter()
        order = torch.from_numpy(rng.permutation(n)).to(device)
        loss_sum = 0.0
        model.train()
        for step in range(steps):
            loss = step_loss.loss(order[step * config.batch_size : (step + 1) * config.batch_size],
                                  count_masked=epoch == 0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach())
            progress.step()
        stats = {"epoch": epoch + 1, "loss": loss_sum / steps, "seconds": time.perf_counter() - epoch_start,
                 "lr": scheduler.get_last_lr()[0]}
        if validator is not None:
            stats.update(validator(model, step_loss.tensors["hist_indptr"], step_loss.tensors["hist"]))
            if stats["valid_recall@20"] > best_score:
                best_score, since_best, report.best_epoch = stats["valid_recall@20"], 0, epoch + 1
                if config.keep_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
        report.epochs.append(stats)
        progress.end_epoch(stats)
        faults.point("train.epoch")
        if config.patience is not None and validator is not None and since_best >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    report.hard_masked_positives = step_loss.masked_hard
    save_model(config.out, model, data, config)
    report.seconds = time.perf_counter() - started
    return report


# ----------------------------------------------------------------------------------------- model file


@dataclass
class LoadedModel:
    model: TwoTower
    user_ids: np.ndarray
    item_ids: np.ndarray
    indptr: np.ndarray
    hist: np.ndarray
    config: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.model.user.weight.shape[1])


def _pack_ids(ids: np.ndarray) -> Any:
    return list(ids.tolist()) if ids.dtype == object else torch.from_numpy(ids)


def _unpack_ids(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=object) if isinstance(value, list) else value.numpy().astype(np.int64)


def save_model(path: str | Path, model: TwoTower, data: TrainData, config: TrainConfig) -> None:
    """One file: weights, ids, the users' histories (the user tower needs them) and the options."""
    path = Path(path)
    check_model_path(path)
    payload = {
        "format": "hnmine-two-tower-1",
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": model.history,
        "user_ids": _pack_ids(data.user_ids),
        "item_ids": _pack_ids(data.item_ids),
        "indptr": torch.from_numpy(data.hist_indptr if data.hist_indptr is not None else data.indptr),
        "hist": torch.from_numpy(data.hist),
        "config": {k: v for k, v in asdict(config).items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed open as RuntimeError
        tmp.unlink(missing_ok=True)
        lines = str(exc).strip().splitlines()
        raise InputError(f"{path}: cannot write the model file ({lines[0][:200] if lines else type(exc).__name__})") \
            from None


def load_model(path: str | Path) -> LoadedModel:
    """Read a model file written by :func:`train`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign file
        raise InputError(f"{path}: not an hnmine model file ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != "hnmine-two-tower-1":
        raise InputError(f"{path}: not an hnmine model file")
    state = payload["state"]
    n_users, dim = state["user.weight"].shape
    model = TwoTower(n_users, state["item.weight"].shape[0], dim, payload["history"])
    model.load_state_dict(state)
    return LoadedModel(model, _unpack_ids(payload["user_ids"]), _unpack_ids(payload["item_ids"]),
                       payload["indptr"].numpy(), payload["hist"].numpy(), payload["config"])


def model_vectors(loaded: LoadedModel, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors, item vectors), unit length, float32: cosine scores become inner products."""
    model = loaded.model.eval()
    indptr = torch.from_numpy(loaded.indptr)
    hist = torch.from_numpy(loaded.hist)
    with torch.no_grad():
        items = model.item_vectors(torch.arange(len(loaded.item_ids))).numpy()
        users = [
            model.user_vectors(torch.arange(s, min(s + chunk, len(loaded.user_ids))), indptr, hist).numpy()
            for s in range(0, len(loaded.user_ids), chunk)
        ]
    return np.concatenate(users).astype(np.float32), items.astype(np.float32)

