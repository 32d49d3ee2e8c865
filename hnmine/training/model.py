"""The two-tower model and its file: save, load, and every user's and item's vector (what export writes)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pyarrow.fs import FileType
from torch import nn

from hnmine.errors import InputError
from hnmine.io.publish import atomic_file
from hnmine.io.storage import bucket_missing, filesystem, is_url, local_copy, store_errors, url
from hnmine.training.config import TrainConfig
from hnmine.training.data import TrainData
from hnmine.training.ops import bag_sums, gather_csr

__all__ = ["LoadedModel", "TwoTower", "check_model_path", "load_model", "model_vectors", "save_model"]


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


def check_model_path(path: str | Path) -> None:
    """Refuse a model path that cannot be written, before any training time is spent on it."""
    if is_url(path):  # an object store: the bucket must exist and the key must not be a prefix
        store, inner = filesystem(path)
        with store_errors(url(path), "write the model file"):
            if store.get_file_info(inner).type == FileType.Directory:
                raise InputError(f"{url(path)}: is a directory; --out is the model file to write")
            missing = bucket_missing(store, inner)
        if missing:
            raise InputError(f"{url(path)}: cannot write the model file{missing}")
        return
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
    check_model_path(path)
    payload = {
        "format": "hnmine-two-tower-1",
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": model.history,
        "user_ids": _pack_ids(data.user_ids),
        "item_ids": _pack_ids(data.item_ids),
        "indptr": torch.from_numpy(data.hist_indptr if data.hist_indptr is not None else data.indptr),
        "hist": torch.from_numpy(data.hist),
        "config": config.to_dict(),
    }
    try:
        if not is_url(path):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as exc:  # torch reports a failed open as RuntimeError
        lines = str(exc).strip().splitlines()
        raise InputError(f"{path}: cannot write the model file ({lines[0][:200] if lines else type(exc).__name__})") \
            from None


def load_model(path: str | Path) -> LoadedModel:
    """Read a model file written by :func:`train` (``path`` may be a URL: :mod:`hnmine.io.storage`)."""
    with local_copy(path, "model file") as local:
        return _load_model(local)


def _load_model(path: Path) -> LoadedModel:
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
