"""How much of the softmax a mined rank window holds, per user, averaged (for docs/training.md).

    python scripts/window_share.py RUN_DIR --round 1 --rank-window 201:1000 --temperature 0.1

From the embeddings the round's window was mined with (round r-1's) and the round's item weights
(``mined/item.parquet``, the shared regime's sampling weights): the share of the full softmax
denominator over a user's non-positive items that falls in the window (exp(score / temperature)),
and the share of the easy sampler's probability mass that falls in it (sum of q over the window).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
import torch

from hnmine.embeddings import read_embeddings
from hnmine.positives import index_positives, read_positives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--rank-window", default="201:1000")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--chunk", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lo, hi = (int(x) for x in args.rank_window.split(":"))
    emb = args.run / f"round_{args.round - 1:02d}" / "embeddings"
    users, items = read_embeddings(emb / "user.parquet"), read_embeddings(emb / "item.parquet")
    nodes = pl.read_parquet(args.run / f"round_{args.round:02d}" / "mined" / "item.parquet", columns=["id", "weight"])
    weight = dict(zip(nodes["id"].to_list(), nodes["weight"].to_list(), strict=True))
    q = np.array([weight.get(i, 0.0) for i in items.ids.tolist()], dtype=np.float64)
    q /= q.sum()
    index = index_positives(read_positives(args.run / "data" / "train.parquet"), users.ids, items.ids)
    u_all, i_all = torch.from_numpy(users.vectors), torch.from_numpy(items.vectors)
    q_t = torch.from_numpy(q)
    soft, mass = [], []
    for start in range(0, len(users), args.chunk):
        stop = min(start + args.chunk, len(users))
        scores = (u_all[start:stop] @ i_all.T).double() / args.temperature
        ptr = index.indptr[start : stop + 1]
        rows = np.repeat(np.arange(stop - start), np.diff(ptr))
        scores[torch.from_numpy(rows), torch.from_numpy(index.item_rows[ptr[0] : ptr[-1]].astype(np.int64))] = -np.inf
        order = torch.argsort(scores, dim=1, descending=True)
        window = order[:, lo - 1 : hi]
        exp = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        soft.append((torch.gather(exp, 1, window).sum(1) / exp.sum(1)).numpy())
        mass.append(q_t[window].sum(1).numpy())
    soft_all, mass_all = np.concatenate(soft), np.concatenate(mass)
    print(f"{args.run.name} round {args.round} window {args.rank_window}: users {len(soft_all):,}, "
          f"items {len(items):,}; window share of the softmax denominator mean {soft_all.mean():.3f} "
          f"(median {np.median(soft_all):.3f}); of the easy sampler's mass mean {mass_all.mean():.3f} "
          f"(median {np.median(mass_all):.3f})")


if __name__ == "__main__":
    main()
