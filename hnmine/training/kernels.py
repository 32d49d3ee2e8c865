"""Compiled loops of the trainer (numba): the hard-negative logits and the history mean.

As torch ops these materialise a (batch, hard, dim) gather; as one compiled loop per row they cost
a fraction of it (docs/training.md, "Step cost"). The scatter-adds of the backward passes run on one
thread, in order, so two seeded runs add in the same order and give the same weights.
"""

from __future__ import annotations

from numba import njit, prange

from hnmine.mining.kernels import dot

__all__ = ["bag_sums", "bag_sums_grad_table", "gathered_dots", "gathered_dots_grad_table", "gathered_dots_grad_users"]


@njit(cache=True, parallel=True)
def gathered_dots(users, table, index, out):  # pragma: no cover - compiled
    """out[b, h] = users[b] . table[index[b, h]]: the hard-negative logits without a (B, H, d) gather."""
    for b in prange(index.shape[0]):
        for h in range(index.shape[1]):
            out[b, h] = dot(users[b], table[index[b, h]])


@njit(cache=True, parallel=True)
def gathered_dots_grad_users(grad, table, index, out):  # pragma: no cover - compiled
    """out[b] = sum_h grad[b, h] table[index[b, h]]."""
    d = table.shape[1]
    for b in prange(index.shape[0]):
        for k in range(d):
            out[b, k] = 0.0
        for h in range(index.shape[1]):
            g = grad[b, h]
            row = table[index[b, h]]
            for k in range(d):
                out[b, k] += g * row[k]


@njit(cache=True)
def gathered_dots_grad_table(grad, users, index, out):  # pragma: no cover - compiled
    """out[index[b, h]] += grad[b, h] users[b], in (b, h) order: one thread, so the sums are repeatable."""
    d = users.shape[1]
    for b in range(index.shape[0]):
        for h in range(index.shape[1]):
            g = grad[b, h]
            if g != 0.0:
                row = index[b, h]
                for k in range(d):
                    out[row, k] += g * users[b, k]


@njit(cache=True, parallel=True)
def bag_sums(table, items, offsets, weights, out):  # pragma: no cover - compiled
    """out[b] = sum over j in offsets[b]:offsets[b+1] of weights[j] table[items[j]] (the history mean)."""
    d = table.shape[1]
    for b in prange(offsets.shape[0] - 1):
        for k in range(d):
            out[b, k] = 0.0
        for j in range(offsets[b], offsets[b + 1]):
            w = weights[j]
            if w != 0.0:
                row = table[items[j]]
                for k in range(d):
                    out[b, k] += w * row[k]


@njit(cache=True)
def bag_sums_grad_table(grad, items, offsets, weights, out):  # pragma: no cover - compiled
    """out[items[j]] += weights[j] grad[b] for every j of bag b, in order: one thread, repeatable sums."""
    d = grad.shape[1]
    for b in range(offsets.shape[0] - 1):
        for j in range(offsets[b], offsets[b + 1]):
            w = weights[j]
            if w != 0.0:
                row = items[j]
                for k in range(d):
                    out[row, k] += w * grad[b, k]
