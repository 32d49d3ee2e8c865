"""Time one training step of `hnmine train` (ms/step) and show where it goes.

    python scripts/profile_train_step.py runs/g/round_01/mined --num-hard-sample 50 [--profile]
    python scripts/profile_train_step.py runs/g/round_01/mined --num-hard-sample 0 --regime mixed --num-sample 2048 --dim 128

MINED is a round's mined/ directory (pos_edge, item and hard_neg_edge parquet). The step is the one
`hnmine.train.train` runs (same functions, same order) without the epoch loop, so its cost can be
compared across options; 3 warm-up steps, then the mean of 10.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hnmine import train as T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mined")
    parser.add_argument("--num-hard-sample", type=int, default=50, help="0: no hard negatives")
    parser.add_argument("--regime", default="shared")
    parser.add_argument("--num-sample", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's top ops")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from hnmine import kernels

    kernels.set_threads(args.threads)
    hard_h = args.num_hard_sample
    config = T.TrainConfig(
        positives=f"{args.mined}/pos_edge.parquet", out="/dev/null", item_nodes=f"{args.mined}/item.parquet",
        hard_negatives=f"{args.mined}/hard_neg_edge.parquet" if hard_h else None, num_hard_sample=hard_h or 1,
        regime=args.regime, num_sample=args.num_sample, dim=args.dim,
    )
    data = T.load_train_data(config)
    model = T._build_model(config, data, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "indptr": torch.from_numpy(data.indptr), "hist": torch.from_numpy(data.hist),
        "hist_indptr": torch.from_numpy(data.hist_indptr if data.hist_indptr is not None else data.indptr),
        "weight_p": torch.from_numpy(data.item_weight / data.item_weight.sum()).double(),
        "pool": torch.from_numpy(data.pool), "popularity": torch.from_numpy(data.popularity),
    }
    hard = torch.from_numpy(data.hard) if data.hard is not None else None
    pos_keys = torch.from_numpy(data.users * data.n_items + data.items)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    users_all, items_all = torch.from_numpy(data.users), torch.from_numpy(data.items)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(data.users)))

    def step(i: int) -> None:
        batch = order[i * config.batch_size : (i + 1) * config.batch_size]
        u, p = users_all[batch], items_all[batch]
        user_vec = model.user_vectors(u, tensors["hist_indptr"], tensors["hist"], drop=p,
                                      dropout=config.history_dropout, gen=gen)
        cands, bias = T._sample_easy(config, data, tensors, p, gen)
        pos_items, pos_bag, _ = T.gather_csr(u, tensors["indptr"], items_all)
        mask_rows, mask_cols = T.positive_mask(cands, pos_bag, pos_items)
        hard_dots = hard_valid = None
        if hard is not None:
            rows_hard = hard[u]
            keys = u[:, None] * data.n_items + rows_hard.clamp(min=0)
            idx = torch.searchsorted(pos_keys, keys).clamp(max=len(pos_keys) - 1)
            hard_valid = (rows_hard >= 0) & (pos_keys[idx] != keys)
            table, (pos_local, cand_local, hard_local) = model.distinct_item_table(p, cands, rows_hard.clamp(min=0))
            hard_dots = T.gathered_dots(user_vec, table, hard_local)
        else:
            table, (pos_local, cand_local) = model.distinct_item_table(p, cands)
        pos_vec, cand_vec = table[pos_local], table[cand_local]
        loss = T.sampled_softmax_loss(user_vec, pos_vec, cand_vec, bias, mask_rows, mask_cols, config.temperature,
                                      hard_dots, hard_valid, config.resolved_hard_offset())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(3):
        step(i)
    start = time.perf_counter()
    for i in range(3, 13):
        step(i)
    print(f"H={hard_h} dim={args.dim} {args.regime}/{args.num_sample}: "
          f"{(time.perf_counter() - start) / 10 * 1000:.1f} ms/step")
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            for i in range(13, 18):
                step(i)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
