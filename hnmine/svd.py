"""Stage 1 without a trained model: embeddings from a truncated SVD of the interaction matrix.

A real, training-free baseline (the normalised-SVD part of GF-CF): the user x item matrix is
scaled by ``D_u^-1/2 R D_i^-1/2`` and factorised with a randomized SVD (torch.svd_lowrank on a sparse
matrix, so it scales to millions of interactions). User and item vectors are ``U sqrt(S)`` and
``V sqrt(S)``, so their inner product approximates the normalised interaction score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from hnmine.embeddings import write_embeddings
from hnmine.errors import InputError
from hnmine.positives import Positives

__all__ = ["svd_embeddings", "write_svd_embeddings"]


def svd_embeddings(
    user_rows: np.ndarray, item_rows: np.ndarray, n_users: int, n_items: int, dim: int = 64, seed: int = 0,
    iterations: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors, item vectors), float32, from a rank-``dim`` randomized SVD."""
    import torch

    if dim >= min(n_users, n_items):
        raise InputError(f"--dim {dim} must be below min(users, items) = {min(n_users, n_items)}")
    user_deg = np.bincount(user_rows, minlength=n_users).astype(np.float64)
    item_deg = np.bincount(item_rows, minlength=n_items).astype(np.float64)
    values = 1.0 / np.sqrt(np.maximum(user_deg[user_rows], 1) * np.maximum(item_deg[item_rows], 1))
    matrix = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([user_rows, item_rows]).astype(np.int64)),
        torch.from_numpy(values.astype(np.float32)),
        (n_users, n_items),
        check_invariants=False,  # indices come from bincount-checked rows
    ).coalesce()
    torch.manual_seed(seed)
    u, s, v = torch.svd_lowrank(matrix, q=dim, niter=iterations)
    root = s.sqrt()
    return (u * root).numpy().astype(np.float32), (v * root).numpy().astype(np.float32)


def write_svd_embeddings(positives: Positives, out_dir: str | Path, dim: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Embed every user and item of ``positives``; write ``user.parquet`` and ``item.parquet``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = positives.table
    users = table["user_id"].unique(maintain_order=False).sort()
    items = table["item_id"].unique(maintain_order=False).sort()
    coded = table.join(pl.DataFrame({"user_id": users, "u": np.arange(len(users))}), on="user_id").join(
        pl.DataFrame({"item_id": items, "i": np.arange(len(items))}), on="item_id"
    )
    user_vecs, item_vecs = svd_embeddings(coded["u"].to_numpy(), coded["i"].to_numpy(), len(users), len(items), dim, seed)
    user_path, item_path = out / "user.parquet", out / "item.parquet"
    write_embeddings(user_path, users.to_numpy(), user_vecs)
    write_embeddings(item_path, items.to_numpy(), item_vecs)
    return user_path, item_path
