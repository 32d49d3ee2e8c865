"""Cleaner negatives in the loop: today's defaults, teacher scores, adaptive hardness and the
``--no-hard`` control, measured with ``hnmine run`` on one data set (ml-1m by default).

Not a test (pytest does not collect ``benchmarks/``). Usage, from the repository root after ``make setup``::

    .venv/bin/python benchmarks/bench_negatives.py --out bench-negatives --seeds 0 1 \\
        --json docs/bench/negatives-ml1m.json

Each variant is one ``hnmine run`` per seed with the same schedule (``--regime shared --num-sample 256``,
round 0 + ``--iterations - 1`` mined rounds, ``--threads 1``); the defaults' run also trains the
``--control`` (the control depends only on the seed and the schedule, so it serves every variant).
Round 0 never uses hard negatives, so the other variants of a seed resume from the defaults' round 0
instead of training it again. The teacher is ``hnmine svd``'s low-pass model of the training positives.
Variants:

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
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HNMINE_DATASETS", ROOT.parent / "shared" / "datasets"))


def variants(teacher: tuple[Path, Path], shift: int) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """Per variant: its options, and how its run.json differs from the defaults' (``--control`` aside)."""
    user, item = teacher
    return {
        "defaults": (["--control"], {}),
        "margin": (["--absolute-margin", "0"], {"absolute_margin": 0.0}),
        "teacher": (["--absolute-margin", "0", "--teacher-users", str(user), "--teacher-items", str(item)],
                    {"absolute_margin": 0.0, "teacher_users": str(user), "teacher_items": str(item)}),
        "adaptive": (["--adaptive-window", str(shift)], {"adaptive_window": shift}),
    }


def complete(run_dir: Path, iterations: int) -> bool:
    return (run_dir / f"round_{iterations - 1:02d}" / "manifest.json").exists() and (run_dir / "metrics.json").exists()


def share_round_0(base: Path, run_dir: Path, changes: dict[str, Any]) -> bool:
    """Start ``run_dir`` as a resumed run holding ``base``'s round 0: round 0 never uses hard negatives,
    so with the same seed and schedule it is the same model in every variant (the run resumes at
    round 1; a run.json that does not match what ``hnmine run`` derives from the options is refused
    by it, and the variant then runs from scratch)."""
    if run_dir.exists() or not (base / "round_00" / "manifest.json").exists():
        return False
    run_dir.mkdir(parents=True)
    for name in ("data", "round_00"):
        shutil.copytree(base / name, run_dir / name)
    saved = json.loads((base / "run.json").read_text())
    saved.update({"control": False, **changes})
    (run_dir / "run.json").write_text(json.dumps(saved, indent=2))
    return True


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


def markdown(result: dict[str, Any]) -> str:
    """The result as results.md's table: per variant and seed, the best round by validation Recall@20,
    its validation and test Recall@20 and their gain over the control's best round, each mined round's
    false-negative rate on validation (per bucket for ``adaptive``)."""
    control: dict[str, tuple[float, float]] = {}  # per seed: the control's best (validation, test) Recall@20
    for key, run in result["runs"].items():
        if key.startswith("defaults/"):
            rounds = [r for r in run["rounds"] if r["control_valid_recall@20"] is not None]
            best = max(rounds, key=lambda r: (r["control_valid_recall@20"], -r["round"]))
            control[key.split("/")[1]] = (best["control_valid_recall@20"], best["control_test_recall@20"])
    lines = ["| variant | seed | best round | valid R@20 | test R@20 | vs control's best (valid / test) | "
             "FN rate valid, rounds 1.. |", "|---|---|---|---|---|---|---|"]
    for key, run in result["runs"].items():
        name, seed = key.split("/")
        rounds = run["rounds"]
        best = max(rounds, key=lambda r: (r["valid"]["recall@20"], -r["round"]))
        valid, test = best["valid"]["recall@20"], best["test"]["recall@20"]
        c_valid, c_test = control.get(seed, (None, None))
        gain = (f"{valid / c_valid - 1:+.2%} / {test / c_test - 1:+.2%}" if c_valid and c_test else "n/a")
        rates = []
        for r in rounds[1:]:
            text = f"{r['false_negative_rate_valid']:.2%}" if r["false_negative_rate_valid"] is not None else "n/a"
            if r.get("bucket_false_negative_rates_valid"):
                text += " (" + ", ".join(f"{b}: {v['rate']:.2%} of {v['users']}" if v["rate"] is not None else
                                         f"{b}: n/a" for b, v in r["bucket_false_negative_rates_valid"].items()) + ")"
            rates.append(f"{r['rank_window']}: {text}")
        lines.append(f"| {name} | {seed.removeprefix('seed')} | {best['round']} | {valid:.4f} | {test:.4f} | {gain} | "
                     f"{'; '.join(rates)} |")
    return "\n".join(lines)


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
    parser.add_argument("--table", type=Path, default=None, help="print the markdown table of this JSON and stop")
    args = parser.parse_args()
    if args.table is not None:
        print(markdown(json.loads(args.table.read_text())))
        return
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
            options, changes = table[name]
            command = [*hnmine, "run", "--positives", str(train), "--test", str(test), *schedule, "--seed", str(seed),
                       *options, "--out", str(run_dir), "--quiet"]
            load_before = os.getloadavg()
            start = time.perf_counter()
            shared = False
            if not complete(run_dir, args.iterations):  # a complete run (an earlier invocation's) is read as it is
                shared = name != "defaults" and share_round_0(out / f"defaults-seed{seed}", run_dir, changes)
                done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if done.returncode != 0 and shared:
                    print(f"{name}/seed{seed}: round 0 not shared ({done.stderr.strip()}); from scratch", flush=True)
                    shutil.rmtree(run_dir)
                    shared = False
                    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{' '.join(command)}: exit {done.returncode}: {done.stderr}")
            entry = {"options": " ".join(options), "seconds": round(time.perf_counter() - start, 1),
                     "round_0_shared_with_defaults": shared,
                     "load_before": [round(x, 2) for x in load_before],
                     "load_after": [round(x, 2) for x in os.getloadavg()], **read_run(run_dir)}
            result["runs"][f"{name}/seed{seed}"] = entry
            print(json.dumps({f"{name}/seed{seed}": entry}), flush=True)
            if args.json is not None:  # after every run, so a stopped benchmark keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
