"""Cleaner negatives in the loop: today's defaults, teacher scores, adaptive hardness and the
``--no-hard`` control, measured with ``hnmine run`` on one data set (ml-1m by default).

Not a test (pytest does not collect ``benchmarks/``). Usage, from the repository root after ``make setup``::

    .venv/bin/python benchmarks/bench_negatives.py --out bench-negatives --seeds 0 1 \\
        --json docs/bench/negatives-ml1m.json

Each variant is one ``hnmine run`` per seed with the same schedule (``--regime shared --num-sample 256``,
round 0 + ``--iterations - 1`` mined rounds, ``--threads 1``); the defaults' run also trains the
``--control`` (the control depends only on the seed and the schedule, so it serves every variant).
The teacher is ``hnmine svd``'s low-pass model of the training positives. Variants:

- ``defaults``: ``hnmine run``'s mining as it ships;
- ``margin``: ``--absolute-margin 0`` on the mined model's own scores (what the teacher's variant
  changes the scores of);
- ``teacher``: the same margin on the teacher's scores (``--teacher-users/--teacher-items``);
- ``adaptive``: ``--adaptive-window S`` (S = ``--shift``).

Writes, per variant and seed, every round's validation and test Recall@20 / NDCG@20, the mined set's
false-negative rate on the validation split (per bucket for ``adaptive``), the best round by
validation and its gain over the control's best, and the load average before and after each run.
Schedules shorter than the defaults (``--epochs``, ``--refine-epochs``) are recorded with the result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HNMINE_DATASETS", ROOT.parent / "shared" / "datasets"))


def variants(teacher: tuple[Path, Path], shift: int) -> dict[str, list[str]]:
    user, item = teacher
    return {
        "defaults": ["--control"],
        "margin": ["--absolute-margin", "0"],
        "teacher": ["--absolute-margin", "0", "--teacher-users", str(user), "--teacher-items", str(item)],
        "adaptive": ["--adaptive-window", str(shift)],
    }


def read_run(out: Path) -> dict[str, Any]:
    """Per round: validation/test metrics, the control's, the mined set's false-negative rates."""
    rounds = []
    for path in sorted(out.glob("round_*/metrics.json")):
        result = json.loads(path.read_text())
        hard = result.get("hard_negatives", {})
        rounds.append({
            "round": result["round"],
            "valid": {k: result["metrics"].get("valid", {}).get(k) for k in ("recall@20", "ndcg@20")},
            "test": {k: result["metrics"].get("test", {}).get(k) for k in ("recall@20", "ndcg@20")},
            "control_valid_recall@20": (result.get("control") or {}).get("valid", {}).get("recall@20"),
            "control_test_recall@20": (result.get("control") or {}).get("test", {}).get("recall@20"),
            "rank_window": hard.get("rank_window"),
            "false_negative_rate_valid": hard.get("false_negative_rate_valid"),
            "bucket_false_negative_rates_valid": hard.get("bucket_false_negative_rates_valid"),
        })
    best_path = out / "best_round.json"
    best = json.loads(best_path.read_text()) if best_path.exists() else {}
    return {"rounds": rounds, "best_round": best.get("round"), "best_valid_recall@20": best.get("value")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA / "ml-1m", help="directory with train.txt and test.txt")
    parser.add_argument("--out", type=Path, default=Path("bench-negatives"))
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=["defaults", "margin", "teacher", "adaptive"])
    parser.add_argument("--iterations", type=int, default=3, help="rounds, round 0 included")
    parser.add_argument("--epochs", type=int, default=20, help="round 0's epochs (the trainer's default: 20)")
    parser.add_argument("--refine-epochs", type=int, default=3, help="epochs of each mined round")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--teacher-dim", type=int, default=64, help="hnmine svd --dim of the teacher")
    parser.add_argument("--shift", type=int, default=100, help="--adaptive-window S")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    hnmine = [sys.executable, "-m", "hnmine"]
    train, test = args.data / "train.txt", args.data / "test.txt"
    teacher_dir = out / "teacher"
    subprocess.run([*hnmine, "svd", "--positives", str(train), "--dim", str(args.teacher_dim), "--out-dir",
                    str(teacher_dir)], check=True, stdout=subprocess.DEVNULL)
    teacher = (teacher_dir / "user.parquet", teacher_dir / "item.parquet")
    schedule = ["--regime", "shared", "--num-sample", "256", "--iterations", str(args.iterations),
                "--epochs", str(args.epochs), "--refine-epochs", str(args.refine_epochs), "--dim", str(args.dim),
                "--threads", str(args.threads)]
    result: dict[str, Any] = {"data": str(args.data), "schedule": " ".join(schedule), "teacher": f"hnmine svd --dim "
                              f"{args.teacher_dim}", "shift": args.shift, "cpus": os.cpu_count(), "runs": {}}
    table = variants(teacher, args.shift)
    for seed in args.seeds:
        for name in args.variants:
            run_dir = out / f"{name}-seed{seed}"
            command = [*hnmine, "run", "--positives", str(train), "--test", str(test), *schedule, "--seed", str(seed),
                       *table[name], "--out", str(run_dir), "--quiet"]
            load_before = os.getloadavg()
            start = time.perf_counter()
            subprocess.run(command, check=True)
            entry = {"options": " ".join(table[name]), "seconds": round(time.perf_counter() - start, 1),
                     "load_before": [round(x, 2) for x in load_before],
                     "load_after": [round(x, 2) for x in os.getloadavg()], **read_run(run_dir)}
            result["runs"][f"{name}/seed{seed}"] = entry
            print(json.dumps({f"{name}/seed{seed}": entry}), flush=True)
            if args.json is not None:  # after every run, so a stopped benchmark keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
