"""Scale-out benchmarks of ``hnmine mine``: the Ray engine against the local one, item shards against one index.

Not a test (pytest does not collect ``benchmarks/``). Every variant is a whole ``hnmine mine`` process
(imports, inputs read, index built, mined, published), as a job runs it; the Ray variants join one
local cluster started here first with ``--ray-address auto`` (its start-up is reported apart: a real
job submits to a running cluster). On a shared machine timings are noisy, so the variants are interleaved, repeated
(``--repeat``) and compared by their medians as ratios from the same run; the load average is
recorded before and after. Every variant's published tables are checked equal to the local engine's.
Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/bench_scale.py --out bench-out/scale --users 4096 --in-process
    .venv/bin/python benchmarks/bench_scale.py --data synthetic --users 16384 --variants local,ray-1 --repeat 1

- ``gowalla``: SVD d=64 embeddings of the Gowalla train split (29,858 users x 40,981 items; made
  here with ``hnmine svd`` from ../shared/datasets/gowalla).
- ``synthetic``: a 1,000,000-item catalog (d=64, Gaussian vectors), ``--users`` users with 20
  random positives each.

Variants: ``local`` (``--threads 1``), ``ray-1`` (one actor, one thread), ``ray-2`` (two actors of one
thread each), ``local-2threads`` (the local engine on the same two cores), ``shards-2``
(``--item-shards 2``, local, one thread). Results: ``OUT/scale.json`` and a markdown table on stdout
(docs/scale.md quotes them).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HNMINE = Path(sys.executable).parent / "hnmine"

ROOT = Path(__file__).resolve().parents[1]
GOWALLA = Path(os.environ.get("HNMINE_GOWALLA", ROOT.parent / "shared" / "datasets" / "gowalla"))

VARIANTS = {
    "local": {"engine": "local", "threads": 1},
    "ray-1": {"engine": "ray", "workers": 1, "threads_per_worker": 1},
    "ray-2": {"engine": "ray", "workers": 2, "threads_per_worker": 1},
    "local-2threads": {"engine": "local", "threads": 2},
    "shards-2": {"engine": "local", "threads": 1, "item_shards": 2},
}


def _load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _gowalla(work: Path) -> tuple[Path, Path, Path]:
    from hnmine.embed.svd import write_svd_embeddings
    from hnmine.io.positives import read_positives

    train = GOWALLA / "train.txt"
    user, item = write_svd_embeddings(read_positives(train), work / "gowalla-emb", dim=64, seed=0)
    return Path(user), Path(item), train


def _synthetic(work: Path, n_users: int, n_items: int = 1_000_000, dim: int = 64) -> tuple[Path, Path, Path]:
    from hnmine.io.embeddings import write_embeddings

    rng = np.random.default_rng(0)
    folder = work / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    items = rng.standard_normal((n_items, dim), dtype=np.float32)
    users = rng.standard_normal((n_users, dim), dtype=np.float32)
    write_embeddings(folder / "item.parquet", np.arange(n_items, dtype=np.int64), items)
    write_embeddings(folder / "user.parquet", np.arange(n_users, dtype=np.int64), users)
    positives = rng.integers(0, n_items, size=(n_users, 20))
    with open(folder / "train.txt", "w") as handle:
        for u, row in enumerate(positives):
            handle.write(f"{u} " + " ".join(map(str, sorted(set(row.tolist())))) + "\n")
    return folder / "user.parquet", folder / "item.parquet", folder / "train.txt"


def _tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "manifest.json"}


def _run(data: tuple[Path, Path, Path], out: Path, options: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole ``hnmine mine`` process, as a job would run it: the CPU
    seconds are all of the local engine's work, and only the driver's share of the Ray engine's."""
    user, item, train = data
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    command = [str(HNMINE), "mine", "--users", str(user), "--items", str(item), "--positives", str(train),
               "--out", str(out), "--overwrite", "--quiet", "--chunk-size", "4096", *flags]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _run_in_process(data: tuple[Path, Path, Path], out: Path, options: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one :func:`hnmine.mine` call in this (warm) process."""
    from hnmine import MineConfig, mine

    user, item, train = data
    start, cpu = time.perf_counter(), time.process_time()
    mine(MineConfig.of(users=str(user), items=str(item), positives=str(train), out=str(out), overwrite=True,
                    chunk_size=4096, **options))
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "scale")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--users", type=int, default=8192, help="users of the synthetic catalog")
    parser.add_argument("--data", default="gowalla,synthetic")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--in-process", action="store_true",
                        help="call hnmine.mine() here instead of whole processes (imports and kernels warm)")
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID: where a run is (a shared machine can stall one)
    args.out.mkdir(parents=True, exist_ok=True)
    import ray

    load_before = _load()
    datasets = {name: _gowalla(args.out) if name == "gowalla" else _synthetic(args.out, args.users)
                for name in args.data.split(",")}
    start = time.perf_counter()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_start = time.perf_counter() - start
    results: dict = {"load_before": load_before, "cpus": os.cpu_count(), "ray_start_seconds": round(ray_start, 2),
                     "repeat": args.repeat, "data": {}}
    for name, data in datasets.items():
        variants = {v: VARIANTS[v] for v in args.variants.split(",")}
        times: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        reference = None
        for _ in range(args.repeat):
            for variant, options in variants.items():  # interleaved: the load drifts alike for all
                out = args.out / f"{name}-{variant}"
                wall, seconds = (_run_in_process if args.in_process else _run)(data, out, options)
                times[variant].append(wall)
                cpu[variant].append(seconds)
                print(f"{name} {variant}: {times[variant][-1]:.1f} s", flush=True)
                tables = _tables(out)
                reference = reference or tables
                assert tables == reference, f"{name} {variant}: published tables differ from the local engine's"
        medians = {v: statistics.median(t) for v, t in times.items()}
        results["data"][name] = {
            "seconds": {v: [round(x, 2) for x in t] for v, t in times.items()},
            "median": {v: round(m, 2) for v, m in medians.items()},
            # the hnmine process's CPU seconds: all of the work for the local variants, the driver's for Ray
            "cpu_seconds": {v: [round(x, 2) for x in t] for v, t in cpu.items()},
            "ratio_to_local": {v: round(m / medians["local"], 3) for v, m in medians.items()},
        }
    ray.shutdown()
    results["load_after"] = _load()
    (args.out / "scale.json").write_text(json.dumps(results, indent=2))
    print(f"load before {load_before}, after {results['load_after']}; Ray start {ray_start:.1f} s (not counted)")
    for name, figures in results["data"].items():
        print(f"| {name} | " + " | ".join(figures["median"]) + " |")
        print("|---|" + "---|" * len(figures["median"]))
        cells = [f"{figures['median'][v]:.1f} s ({figures['ratio_to_local'][v]:.2f}x)" for v in figures["median"]]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
