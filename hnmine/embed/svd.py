"""Stage 1 without a trained model: embeddings from a truncated SVD of the interaction matrix.

Real, training-free models (GF-CF, Shen et al., CIKM 2021). The user x item matrix is scaled to
``R~ = D_u^-1/2 R D_i^-1/2`` and factorised with a randomized SVD (torch.svd_lowrank on a sparse
matrix, so it scales to millions of interactions), ``R~ ~ U S V^T``. Two forms of two-tower vectors:

- ``lowpass`` (default): GF-CF's ideal low-pass filter, ``score = r_u D_i^-b V V^T D_i^b``. The user
  vector pools the user's history, ``sum over j in history of d_j^-b v_j``, and the item vector is
  ``d_i^b v_i``: a history-pooling user tower. On Gowalla it is far stronger than the factors
  (docs/mine.md, "hnmine svd").
- ``factors``: ``U sqrt(S)`` and ``V sqrt(S)``, whose inner product approximates ``R~`` itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from hnmine.embed.config import FORMS, Form, SvdConfig
from hnmine.errors import InputError
from hnmine.io.embeddings import write_embedding_dir
from hnmine.io.positives import Positives, read_positives

__all__ = ["FORMS", "run_svd", "svd_embeddings", "write_svd_embeddings"]


def _sparse(user_rows: np.ndarray, item_rows: np.ndarray, values: np.ndarray, shape: tuple[int, int]):
    import torch

    return torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([user_rows, item_rows]).astype(np.int64)),
        torch.from_numpy(values.astype(np.float32)),
        shape,
        check_invariants=False,  # indices come from bincount-checked rows
    ).coalesce()


def svd_embeddings(
    user_rows: np.ndarray, item_rows: np.ndarray, n_users: int, n_items: int, dim: int = 64, seed: int = 0,
    iterations: int = 4, form: Form = "lowpass", item_degree_power: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors, item vectors), float32, from a rank-``dim`` randomized SVD.

    ``(user_rows[k], item_rows[k])`` are the interactions, each pair once. ``item_degree_power`` is
    the ``b`` of the ``lowpass`` form: 0.5 is GF-CF's filter; a larger value favours popular items.
    """
    import torch

    if form not in FORMS:
        raise InputError(f"--form must be one of {', '.join(FORMS)}, not {form!r}")
    if dim < 1:
        raise InputError(f"--dim must be at least 1, not {dim}")
    if not 0 <= seed < 2**63:
        raise InputError(f"--seed must be between 0 and 2**63 - 1, not {seed}")
    if dim >= min(n_users, n_items):
        raise InputError(f"--dim {dim} must be below min(users, items) = {min(n_users, n_items)}")
    if not 0 <= item_degree_power <= 1:
        raise InputError(f"--item-degree-power must be between 0 and 1, not {item_degree_power}")
    user_deg = np.maximum(np.bincount(user_rows, minlength=n_users).astype(np.float64), 1)
    item_deg = np.maximum(np.bincount(item_rows, minlength=n_items).astype(np.float64), 1)
    normalised = _sparse(user_rows, item_rows, 1.0 / np.sqrt(user_deg[user_rows] * item_deg[item_rows]),
                         (n_users, n_items))
    torch.manual_seed(seed)
    u, s, v = torch.svd_lowrank(normalised, q=dim, niter=iterations)
    if form == "factors":
        root = s.sqrt()
        return (u * root).numpy().astype(np.float32), (v * root).numpy().astype(np.float32)
    # lowpass: r_u D^-b V is a sparse product over each user's history; D^b V scales item rows.
    scale = torch.from_numpy(item_deg ** item_degree_power).to(v.dtype)
    history = _sparse(user_rows, item_rows, item_deg[item_rows] ** -item_degree_power, (n_users, n_items))
    users = torch.sparse.mm(history, v)
    return users.numpy().astype(np.float32), (v * scale[:, None]).numpy().astype(np.float32)


def write_svd_embeddings(
    positives: Positives, out_dir: str | Path, dim: int = 64, seed: int = 0, form: Form = "lowpass",
    item_degree_power: float = 0.5, threads: int | None = None,
) -> tuple[str | Path, str | Path]:
    """Embed every user and item of ``positives``; write ``user.parquet`` and ``item.parquet``.

    ``threads``: torch's CPU threads for the SVD (default: torch's choice), restored afterwards.
    """
    import torch

    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, not {threads}")
    table = positives.table
    users = table["user_id"].unique(maintain_order=False).sort()
    items = table["item_id"].unique(maintain_order=False).sort()
    coded = table.join(pl.DataFrame({"user_id": users, "u": np.arange(len(users))}), on="user_id").join(
        pl.DataFrame({"item_id": items, "i": np.arange(len(items))}), on="item_id"
    )
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        user_vecs, item_vecs = svd_embeddings(coded["u"].to_numpy(), coded["i"].to_numpy(), len(users), len(items),
                                              dim, seed, form=form, item_degree_power=item_degree_power)
    finally:
        torch.set_num_threads(before)
    return write_embedding_dir(out_dir, users.to_numpy(), user_vecs, items.to_numpy(), item_vecs, tool="hnmine svd")


def run_svd(config: SvdConfig) -> tuple[str | Path, str | Path]:
    """``hnmine svd``: read ``config.positives`` and write the embeddings into ``config.out_dir``."""
    table = read_positives(config.positives, fmt=config.positives_format, user_column=config.user_column,
                           item_column=config.item_column)
    return write_svd_embeddings(table, config.out_dir, dim=config.dim, seed=config.seed, form=config.checked_form(),
                                item_degree_power=config.item_degree_power, threads=config.threads)
