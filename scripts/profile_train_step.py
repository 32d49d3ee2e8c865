"""Time one training step of `hnmine train` (ms/step) and show where it goes.

    python scripts/profile_train_step.py runs/g/round_01/mined --num-hard-sample 50 [--profile]
    python scripts/profile_train_step.py runs/g/round_01/mined --num-hard-sample 0 --regime mixed --num-sample 2048 --dim 128

MINED is a round's mined/ directory (pos_edge, item and hard_neg_edge parquet). The step is
`hnmine.train.TrainStep`, the one `hnmine.train.train` runs, without the epoch loop, so its cost can be
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
    step_loss = T.TrainStep(config, data, model, torch.device("cpu"), torch.Generator().manual_seed(0))
    optimizer = T.make_optimizer(model, 1e-3)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(data.users)))

    def step(i: int) -> None:
        loss = step_loss.loss(order[i * config.batch_size : (i + 1) * config.batch_size])
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
