"""Whole-process benchmarks of ``hnmine mine``: shared cores, raw FAISS, cold and warm start.

Not a test (pytest does not collect ``benchmarks/``). Every figure is a whole process timed from
outside (``time.perf_counter`` around ``subprocess.run``), as cron would run it. On a shared machine
timings are noisy, so the variants of one figure are interleaved, repeated (``--repeat``) and
compared by their medians from the same run; ``uptime``'s load average is recorded before and after.
Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/bench_runtime.py contention --out bench-out/runtime
    .venv/bin/python benchmarks/bench_runtime.py process --out bench-out/runtime
    .venv/bin/python benchmarks/bench_runtime.py start --out bench-out/runtime

- ``contention``: ``hnmine mine`` on Gowalla SVD embeddings with default threads against every
  ``--threads`` value, on a quiet machine and with a CPU-bound process (started here) on one core;
  ``--env NAME=VALUE`` adds variants with that environment (e.g. ``OMP_WAIT_POLICY=ACTIVE``, the
  OpenMP default before hnmine set PASSIVE) to show the cause.
- ``process``: default ``hnmine mine`` against a whole-process raw FAISS ``IndexFlatIP`` search at
  k=500 of the same queries (read the parquet files + build + search), quiet and with a core busy.
- ``start``: ``hnmine --help``, ``hnmine mine --help``, and ``hnmine mine`` on sample_data with an
  empty kernel cache (first run) and then warm (later runs).

Results: ``OUT/<figure>.json`` and a markdown table on stdout (docs/performance.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOWALLA = Path(os.environ.get("HNMINE_GOWALLA", ROOT.parent / "shared" / "datasets" / "gowalla"))
VENV_BIN = Path(sys.executable).parent
HNMINE = str(VENV_BIN / "hnmine")
WINDOW, NUM_HARD, K = "101:500", 10, 500

RAW_FAISS = """
import sys, time
import faiss, numpy as np, pyarrow.parquet as pq

def read(path):
    column = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
    return np.ascontiguousarray(column.values.to_numpy().reshape(len(column), -1), dtype=np.float32)

users, items = read(sys.argv[1]), read(sys.argv[2])
index = faiss.IndexFlatIP(items.shape[1])
index.add(items)
scores, rows = index.search(users, int(sys.argv[3]))
print(rows.shape, float(scores[:, -1].mean()))
"""


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"6.72 6.15 3.69"``."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    return {"cpu": model, "cores": os.cpu_count(), "python": sys.version.split()[0]}


class Busy:
    """A CPU-bound process (one core's worth of work) for the duration of a ``with`` block."""

    def __enter__(self) -> Busy:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


CPU_SECONDS: dict[str, list[float]] = {}


def timed(cmd: list[str], env: dict[str, str] | None = None, name: str | None = None) -> tuple[float, str]:
    """Wall-clock seconds of a whole process, and its stdout (it must succeed).

    Its CPU seconds (user + system, all threads) go to ``CPU_SECONDS[name]``: on a loaded machine the
    wall clock mostly measures the queue for the cores, the CPU time what the process itself cost.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    if name is not None:
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        CPU_SECONDS.setdefault(name, []).append(cpu)
    return seconds, done.stdout


def gowalla_embeddings(out: Path) -> tuple[Path, Path, Path]:
    """SVD embeddings of Gowalla's train split (made once with ``hnmine svd``)."""
    emb = out / "gowalla-svd64"
    train = GOWALLA / "train.txt"
    if not (emb / "item.parquet").exists():
        subprocess.run([HNMINE, "svd", "--positives", str(train), "--dim", "64", "--out-dir", str(emb)], check=True)
    return emb / "user.parquet", emb / "item.parquet", train


def mine_cmd(users: Path, items: Path, positives: Path, out: Path, *extra: str) -> list[str]:
    return [HNMINE, "mine", "--users", str(users), "--items", str(items), "--positives", str(positives),
            "--rank-window", WINDOW, "--num-hard", str(NUM_HARD), "--out", str(out), "--overwrite", "--quiet",
            "--json", *extra]


def summarize(samples: dict[str, list[float]], prefix: str = "") -> dict[str, dict]:
    """Median, min and all runs of each variant, with its median CPU seconds (``CPU_SECONDS[prefix + name]``)."""
    return {name: {"median": statistics.median(v), "min": min(v), "runs": v,
                   "cpu_median": statistics.median(CPU_SECONDS.get(prefix + name, [float("nan")]))}
            for name, v in samples.items()}


def contention(args: argparse.Namespace) -> dict:
    users, items, positives = gowalla_embeddings(args.out)
    cores = os.cpu_count() or 1
    variants: dict[str, tuple[list[str], dict[str, str]]] = {"default": ([], {})}
    for t in range(1, cores + 1):
        variants[f"--threads {t}"] = (["--threads", str(t)], {})
    for assignment in args.env:
        name, value = assignment.split("=", 1)
        variants[f"default, {name}={value}"] = ([], {name: value})
    results: dict = {"machine": machine(), "load_before": load_average(), "conditions": {}}
    for condition in args.conditions.split(","):
        samples: dict[str, list[float]] = {v: [] for v in variants}
        retrieve: dict[str, list[float]] = {v: [] for v in variants}
        with Busy() if condition != "quiet" else _Nothing():
            for _ in range(args.repeat):
                for name, (extra, env) in variants.items():
                    seconds, stdout = timed(mine_cmd(users, items, positives, args.out / "mined", *extra), env,
                                            name=condition + name)
                    samples[name].append(seconds)
                    retrieve[name].append(json.loads(stdout)["timings"]["retrieve"])
        table = summarize(samples, condition)
        for name in variants:
            table[name]["retrieve_median"] = statistics.median(retrieve[name])
        best = min(table[v]["median"] for v in variants if v.startswith("--threads"))
        for name in variants:
            table[name]["vs_best_threads"] = table[name]["median"] / best
        results["conditions"][condition] = table
    results["load_after"] = load_average()
    return results


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def process(args: argparse.Namespace) -> dict:
    users, items, positives = gowalla_embeddings(args.out)
    script = args.out / "raw_faiss.py"
    script.write_text(RAW_FAISS)
    variants = {
        "hnmine mine (default)": mine_cmd(users, items, positives, args.out / "mined"),
        f"raw FAISS IndexFlatIP k={K}": [sys.executable, str(script), str(users), str(items), str(K)],
    }
    results: dict = {"machine": machine(), "load_before": load_average(), "conditions": {}}
    for condition in args.conditions.split(","):
        samples: dict[str, list[float]] = {v: [] for v in variants}
        with Busy() if condition != "quiet" else _Nothing():
            for _ in range(args.repeat):
                for name, cmd in variants.items():
                    samples[name].append(timed(cmd, name=condition + name)[0])
        table = summarize(samples, condition)
        raw = table[f"raw FAISS IndexFlatIP k={K}"]["median"]
        for name in variants:
            table[name]["vs_raw_faiss"] = table[name]["median"] / raw
        results["conditions"][condition] = table
    results["load_after"] = load_average()
    return results


def start(args: argparse.Namespace) -> dict:
    """Cold start: an empty kernel cache (``HNMINE_CACHE_DIR``), as in a fresh container or venv."""
    sample = ROOT / "sample_data"
    work = Path(tempfile.mkdtemp(prefix="hnmine-start-"))
    try:
        subprocess.run([HNMINE, "svd", "--positives", str(sample / "train.txt"), "--dim", "64",
                        "--out-dir", str(work / "emb")], check=True, capture_output=True)
        mine = mine_cmd(work / "emb" / "user.parquet", work / "emb" / "item.parquet", sample / "train.txt",
                        work / "mined", "--item-features", str(sample / "item_features.csv"))
        results: dict = {"machine": machine(), "load_before": load_average()}
        first: list[float] = []
        later: list[float] = []
        helps: dict[str, list[float]] = {"hnmine --help": [], "hnmine mine --help": []}
        for _ in range(args.repeat):
            cache = work / f"cache-{len(first)}"
            env = {"HNMINE_CACHE_DIR": str(cache)}
            first.append(timed(mine, env, name="first hnmine mine (empty cache)")[0])
            later.append(timed(mine, env, name="later hnmine mine")[0])
            later.append(timed(mine, env, name="later hnmine mine")[0])
            for name, argv in (("hnmine --help", ["--help"]), ("hnmine mine --help", ["mine", "--help"])):
                helps[name].append(timed([HNMINE, *argv], name=name)[0])
        results["figures"] = summarize({"first hnmine mine (empty cache)": first, "later hnmine mine": later,
                                        **helps})
        results["load_after"] = load_average()
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(figure: str, results: dict) -> str:
    lines = [f"{figure}: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
             f"load average {results['load_before']} before, {results['load_after']} after"]
    tables = results.get("conditions") or {"": results["figures"]}
    for condition, table in tables.items():
        ratio = next((key for key in ("vs_best_threads", "vs_raw_faiss") if key in next(iter(table.values()))), None)
        lines += ["", f"| {condition or 'figure'} | median s | CPU s | runs (s) |" + (f" {ratio} |" if ratio else ""),
                  "|---|---:|---:|---|" + ("---:|" if ratio else "")]
        for name, row in table.items():
            runs = " ".join(f"{x:.2f}" for x in row["runs"])
            extra = f"; retrieve {row['retrieve_median']:.2f}" if "retrieve_median" in row else ""
            lines.append(f"| {name} | {row['median']:.2f} | {row['cpu_median']:.2f} | {runs}{extra} |"
                         + (f" {row[ratio]:.2f} |" if ratio else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=["contention", "process", "start"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "runtime")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--conditions", default="quiet,one core busy",
                        help="contention, process: comma-separated, of 'quiet' and 'one core busy'")
    parser.add_argument("--env", action="append", default=[], help="contention: a variant with NAME=VALUE set")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"contention": contention, "process": process, "start": start}[args.figure](args)
    (args.out / f"{args.figure}.json").write_text(json.dumps(results, indent=2))
    print(markdown(args.figure, results))


if __name__ == "__main__":
    main()
