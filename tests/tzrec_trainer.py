"""A stand-in external trainer for tests/test_external.py, run by ``hnmine run --train-command``.

It leaves what TorchEasyRec leaves (numpy and pyarrow only, so each step starts in well under a second):

- ``train``: item vectors drawn from a seeded generator, each user the mean of its training items'
  vectors; from round 1 on, the user is also pushed away from the mean of its hard negatives, read
  from the GraphLearn text ``hard_neg_edge.txt`` that ``hnmine run`` mined for the round (the file
  a TorchEasyRec sampler config points at). Writes ``model.npz`` and ``seen.json`` (what it read).
- ``export``: TorchEasyRec's predict-output layout: ``user_emb/part-0.parquet`` with ``user_id`` and a
  list<float> ``user_tower_emb``; ``item_emb/part-{0,1}.parquet`` (two ranks) with ``adgroup_id``
  and ``item_tower_emb`` as comma-separated text, as predict writes them to tables.

``--die-once FILE``: the first call that finds no FILE creates it and SIGKILLs itself (the OOM
killer). ``--hang FILE``: if there is no FILE, write the process id to it, then sleep (to be killed
from outside).
``--at-round N``: either only in round N.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DIM = 16


def _interrupts(args: argparse.Namespace) -> None:
    if args.at_round is not None and args.round != args.at_round:
        return
    if args.die_once and not Path(args.die_once).exists():
        Path(args.die_once).write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    if args.hang and not Path(args.hang).exists():
        Path(args.hang).write_text(str(os.getpid()))
        time.sleep(120)


def train(args: argparse.Namespace) -> None:
    print(f"training round {args.round}")
    table = pq.read_table(args.train)
    users = np.asarray(table["user_id"].to_pylist(), dtype=object)
    items = np.asarray(table["item_id"].to_pylist(), dtype=object)
    user_ids, user_rows = np.unique(users, return_inverse=True)
    item_ids, item_rows = np.unique(items, return_inverse=True)
    # random item vectors, the same in every round (the training positives, so the sorted ids, do not change)
    item_vecs = np.random.default_rng(0).standard_normal((len(item_ids), DIM))
    sums = np.zeros((len(user_ids), DIM))
    np.add.at(sums, user_rows, item_vecs[item_rows])
    user_vecs = sums / np.bincount(user_rows, minlength=len(user_ids))[:, None]
    seen: dict[str, object] = {"round": args.round}
    if args.mined:
        lines = (Path(args.mined) / "hard_neg_edge.txt").read_text(encoding="utf-8").splitlines()
        seen.update(header=lines[0], rows=len(lines) - 1)
        position = {item: row for row, item in enumerate(item_ids)}
        user_position = {user: row for row, user in enumerate(user_ids)}
        push = np.zeros_like(user_vecs)
        counts = np.zeros(len(user_ids))
        for line in lines[1:]:
            user, item, _weight = line.split("\t")
            push[user_position[user]] += item_vecs[position[item]]
            counts[user_position[user]] += 1
        user_vecs -= 0.2 * push / np.maximum(counts, 1)[:, None]
    _interrupts(args)
    model = Path(args.model_dir)
    np.savez(model / "model.npz", user_ids=user_ids.astype(str), user_vecs=user_vecs.astype(np.float32),
             item_ids=item_ids.astype(str), item_vecs=item_vecs.astype(np.float32))
    (model / "seen.json").write_text(json.dumps(seen))
    print(f"wrote {model / 'model.npz'}")


def export(args: argparse.Namespace) -> None:
    model = np.load(Path(args.model_dir) / "model.npz")
    _interrupts(args)
    out = Path(args.export_dir)
    (out / "user_emb").mkdir(parents=True)
    (out / "item_emb").mkdir(parents=True)
    vectors = pa.array(list(model["user_vecs"]), type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"user_id": model["user_ids"].tolist(), "user_tower_emb": vectors}),
                   out / "user_emb" / "part-0.parquet")
    texts = [",".join(repr(float(v)) for v in row) for row in model["item_vecs"]]
    half = len(texts) // 2
    for part, rows in enumerate((slice(0, half), slice(half, None))):
        pq.write_table(pa.table({"adgroup_id": model["item_ids"][rows].tolist(), "item_tower_emb": texts[rows]}),
                       out / "item_emb" / f"part-{part}.parquet")
    print(f"exported {len(model['user_ids'])} users and {len(texts)} items")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=("train", "export"))
    parser.add_argument("--round", type=int, default=0)
    parser.add_argument("--train")
    parser.add_argument("--mined", default="")
    parser.add_argument("--model-dir")
    parser.add_argument("--export-dir")
    parser.add_argument("--die-once")
    parser.add_argument("--hang")
    parser.add_argument("--at-round", type=int, help="--die-once / --hang only in this round")
    args = parser.parse_args()
    train(args) if args.step == "train" else export(args)


if __name__ == "__main__":
    main()
