"""Stage 0 and 6 of the loop: train a two-tower model on hnmine's own tables.

The trainer reads what the TorchEasyRec samplers read, the way they read it:

- ``pos_edge`` (or any positives file :func:`~hnmine.io.positives.read_positives` accepts): the
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
from pathlib import Path

import numpy as np
import torch

from hnmine import faults
from hnmine.errors import InputError
from hnmine.evaluate import ranking_metrics, user_heldout_counts
from hnmine.io.positives import index_positives, read_positives
from hnmine.io.storage import is_url, reworded, unfolded, url
from hnmine.io.tables import ids_frame
from hnmine.mining.kernels import set_threads
from hnmine.progress import NoProgress, Progress, logger
from hnmine.training.config import TrainConfig, TrainReport
from hnmine.training.data import TrainData, load_train_data
from hnmine.training.loss import WindowMembership, mis_biases, positive_mask, sampled_softmax_loss
from hnmine.training.model import TwoTower, check_model_path, load_model, save_model
from hnmine.training.ops import gather_csr, gathered_dots

__all__ = ["TrainStep", "Validator", "deterministic_kernels", "make_optimizer", "pick_device", "train"]

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device available")
    return torch.device(name)


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
            new_frame = ids_frame("id", new_ids, "new")
            old_frame = ids_frame("id", old_ids, "old")
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


def train(config: TrainConfig, progress: Progress | None = None) -> TrainReport:
    """Train and save ``config.out`` (a model file :func:`load_model` reads); returns the report."""
    config.validate()
    config = unfolded(config)
    check_model_path(config.out)
    device = pick_device(config.device)
    with reworded(), deterministic_kernels(device):
        return _train(config, device, progress or NoProgress())


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


def _train(config: TrainConfig, device: torch.device, progress: Progress) -> TrainReport:
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
        set_threads(config.threads)
    data = load_train_data(config)
    model = _build_model(config, data, device)
    step_loss = TrainStep(config, data, model, device, torch.Generator().manual_seed(config.seed))
    rng = np.random.default_rng(config.seed)
    optimizer = make_optimizer(model, config.lr)
    n = len(data.users)
    steps = max(1, math.ceil(n / config.batch_size))
    total_steps = steps * config.epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps, 1), eta_min=config.lr_min)
    report = TrainReport(out=url(config.out) if is_url(config.out) else str(Path(config.out).absolute()), users=data.n_users, items=data.n_items,
                         interactions=n, hard_users=data.hard_users, hard_rows=data.hard_rows, device=str(device))
    validator = Validator(config.valid, data) if config.valid else None
    best_score, best_state, since_best = -math.inf, None, 0
    for epoch in range(config.epochs):
        progress.start(steps, f"epoch {epoch + 1}/{config.epochs}")
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
            progress.advance()
        stats = {"epoch": epoch + 1, "loss": loss_sum / steps, "seconds": time.perf_counter() - epoch_start,
                 "lr": float(scheduler.get_last_lr()[0])}
        if validator is not None:
            stats.update(validator(model, step_loss.tensors["hist_indptr"], step_loss.tensors["hist"]))
            if stats["valid_recall@20"] > best_score:
                best_score, since_best, report.best_epoch = stats["valid_recall@20"], 0, epoch + 1
                if config.keep_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
        report.epochs.append(stats)
        progress.stop()
        valid = "".join(f", {k.replace('_', ' ')} {v:.4f}" for k, v in stats.items() if k.startswith("valid_"))
        logger.info(f"epoch {epoch + 1}/{config.epochs}: loss {stats['loss']:.4f}, {stats['seconds']:.1f} s, "
                    f"lr {stats['lr']:.2e}{valid}")
        faults.point("train.epoch")
        if config.patience is not None and validator is not None and since_best >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    report.hard_masked_positives = step_loss.masked_hard
    save_model(config.out, model, data, config)
    report.seconds = time.perf_counter() - started
    return report
