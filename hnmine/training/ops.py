"""Autograd ops with compiled forward and backward passes (:mod:`hnmine.training.kernels`): the history
mean, the hard-negative logits and the shared-negative softmax, without (batch, hard, dim) gathers."""

from __future__ import annotations

import math

import torch

from hnmine.training import kernels

__all__ = ["bag_sums", "gather_csr", "gathered_dots"]


class _BagSums(torch.autograd.Function):
    """Weighted sums of table rows per bag (the history mean), as compiled loops on the CPU.

    As gather, multiply and ``index_add_`` (and their backward) the history mean was the largest
    part of a step; ``embedding_bag`` is no better (its CPU backward sorts every index).
    """

    @staticmethod
    def forward(ctx, table, items, offsets, weights):
        table_c = table.detach().contiguous()
        out = torch.empty((len(offsets) - 1, table.shape[1]), dtype=table.dtype)
        kernels.bag_sums(table_c.numpy(), items.numpy(), offsets.numpy(), weights.numpy(), out.numpy())
        ctx.save_for_backward(items, offsets, weights)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad):
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


class _SharedSoftmax(torch.autograd.Function):
    """Fused softmax cross-entropy over [extra columns | shared candidate columns], label = column 0.

    Forward and backward touch the (batch x candidates) matrix a few times in place instead of
    autograd's dozen temporaries: the difference between ~0.5 s and ~0.1 s a step on 2 cores.
    """

    @staticmethod
    def forward(ctx, users, cands, col_bias, mask_rows, mask_cols, extra, inv_tau):
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
    def backward(ctx, grad):
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
    def forward(ctx, users, table, index):
        users_c, table_c, index_c = users.detach().contiguous(), table.detach().contiguous(), index.contiguous()
        out = torch.empty(index.shape, dtype=users.dtype)
        kernels.gathered_dots(users_c.numpy(), table_c.numpy(), index_c.numpy(), out.numpy())
        ctx.save_for_backward(users_c, table_c, index_c)
        return out

    @staticmethod
    def backward(ctx, grad):
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
