"""Stage 1, two models into one: a blended two-tower whose inner product mixes both models' scores.

Concatenating vectors adds scores: with user ``[a_u, b_u]`` and item ``[a_i, b_i]`` the inner product
is ``a_u . a_i + b_u . b_i``. Before that, each model's user vectors are made unit length (which does
not change that model's ranking of items for a user, but gives every user the same say), and each
model's scores are divided by their standard deviation over random (user, item) pairs, so that
``weight`` (model A's share) means the same whatever the two models' scales. The result is an
ordinary two-tower: FAISS searches it, ``hnmine mine`` mines with it, ``hnmine evaluate`` scores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from hnmine.errors import InputError
from hnmine.io.embeddings import Embeddings, normalize_rows, read_embeddings, write_embedding_dir
from hnmine.io.storage import join

__all__ = ["BlendReport", "blend_embeddings", "write_blend"]

_SCALE_PAIRS = 100_000  # random (user, item) pairs that estimate each model's score spread


@dataclass
class BlendReport:
    users: int
    items: int
    users_dropped: int  # in one model only
    items_dropped: int
    scale_a: float
    scale_b: float
    dim: int


def _common(a: Embeddings, b: Embeddings, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids in both (in ``a``'s order) and their rows in ``a`` and ``b``."""
    left = pl.DataFrame({"id": a.ids, "row_a": np.arange(len(a))})
    right = pl.DataFrame({"id": b.ids, "row_b": np.arange(len(b))})
    if left.schema["id"] != right.schema["id"]:
        raise InputError(f"{b.source}: {what} ids are {right.schema['id']} but {a.source} has {left.schema['id']}")
    both = left.join(right, on="id", how="inner").sort("row_a")
    if both.height == 0:
        raise InputError(f"{a.source} and {b.source} have no {what} id in common")
    return both["id"].to_numpy(), both["row_a"].to_numpy(), both["row_b"].to_numpy()


def _score_scale(users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> float:
    u = rng.integers(len(users), size=_SCALE_PAIRS)
    i = rng.integers(len(items), size=_SCALE_PAIRS)
    step = 8192  # bounds the gathered rows' memory at wide vectors
    scores = np.concatenate([np.einsum("nd,nd->n", users[u[k:k + step]].astype(np.float64),
                                       items[i[k:k + step]].astype(np.float64)) for k in range(0, _SCALE_PAIRS, step)])
    scale = float(np.std(scores))
    return scale if scale > 0 else 1.0


def blend_embeddings(
    a_users: Embeddings, a_items: Embeddings, b_users: Embeddings, b_items: Embeddings, weight: float,
    seed: int = 0,
) -> tuple[Embeddings, Embeddings, BlendReport]:
    """Blended (users, items): ``score = weight * a / scale_a + (1 - weight) * b / scale_b`` (unit users).

    Users and items present in only one model are dropped (counted in the report).
    """
    if not 0 <= weight <= 1:
        raise InputError(f"--weight must be between 0 and 1, not {weight}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, not {seed}")
    user_ids, ua, ub = _common(a_users, b_users, "user")
    item_ids, ia, ib = _common(a_items, b_items, "item")
    rng = np.random.default_rng(seed)
    au, bu = normalize_rows(a_users.vectors[ua]), normalize_rows(b_users.vectors[ub])
    ai, bi = a_items.vectors[ia], b_items.vectors[ib]
    scale_a, scale_b = _score_scale(au, ai, rng), _score_scale(bu, bi, rng)
    users = np.hstack([au * (weight / scale_a), bu * ((1 - weight) / scale_b)]).astype(np.float32)
    items = np.hstack([ai, bi]).astype(np.float32)
    report = BlendReport(users=len(user_ids), items=len(item_ids), users_dropped=len(a_users) + len(b_users)
                         - 2 * len(user_ids), items_dropped=len(a_items) + len(b_items) - 2 * len(item_ids),
                         scale_a=scale_a, scale_b=scale_b, dim=users.shape[1])
    return (Embeddings(user_ids, users, "blend"), Embeddings(item_ids, items, "blend"), report)


def write_blend(a_dir: str | Path, b_dir: str | Path, out_dir: str | Path, weight: float,
                seed: int = 0) -> BlendReport:
    """Blend two embedding directories (``user.parquet`` and ``item.parquet`` each) into ``out_dir``."""
    users, items, report = blend_embeddings(read_embeddings(join(a_dir, "user.parquet")),
                                            read_embeddings(join(a_dir, "item.parquet")),
                                            read_embeddings(join(b_dir, "user.parquet")),
                                            read_embeddings(join(b_dir, "item.parquet")),
                                            weight, seed)
    write_embedding_dir(out_dir, users.ids, users.vectors, items.ids, items.vectors, tool="hnmine blend")
    return report
