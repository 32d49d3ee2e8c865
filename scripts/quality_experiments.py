"""The converged-round-0 experiments of docs/training.md ("Measured: converged round 0").

One round 0 per (data set, regime), trained once; every variant of rounds >= 1 (the --no-hard
control included) starts from a copy of that round 0, so they differ only in what they vary.
Run serially with one thread (the machine is shared):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/quality_experiments.py ml1m-a  [--runs runs]

Groups: ml1m-a, gowalla-a, gowalla-b (see GROUPS). Choices were read on the validation split
(--valid-fraction 0.1); test is reported alongside.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

from hnmine.loop import RunConfig, _write_json, metrics_table, run
from hnmine.train import TrainConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# rounds >= 1: 3 epochs continuing round 0 at lr 1e-3 -> 1e-4 (the shipped defaults)
REFINE = dict(refine_epochs=3, refine_lr=1e-3, refine_lr_min=1e-4)
BASES = {
    "ml1m-a": ("ml-1m", dict(regime="shared", num_sample=256, epochs=10, max_history=64)),
    "gowalla-a": ("gowalla", dict(regime="shared", num_sample=256, epochs=10)),
    "gowalla-b": ("gowalla", dict(regime="mixed", num_sample=1024, epochs=5)),
}


def hard(window: str, per_user: int, offset: float | None = None) -> dict:
    """Mine `per_user` from `window`, use all of them; offset None = auto = log(window size / per_user)."""
    return dict(rank_window=window, num_hard=per_user, train=dict(num_hard_sample=per_user, hard_offset=offset))


CONTROL = dict(hard=False)
GROUPS = {  # name -> [(variant, rounds incl. round 0, options)]
    "ml1m-a": [
        ("control", 4, CONTROL),
        ("w101-h10o0", 2, hard("101:500", 10, 0.0)),
        ("w101-h10auto", 2, hard("101:500", 10)),
        ("w101-h10o5", 2, hard("101:500", 10, 5.0)),
        ("w101-h20auto", 2, hard("101:500", 20)),
        ("w21-200-h10o0", 2, hard("21:200", 10, 0.0)),
        ("w21-200-h10auto", 2, hard("21:200", 10)),
        ("w201-1000-h10auto", 2, hard("201:1000", 10)),
        ("w201-1000-h20auto", 4, hard("201:1000", 20)),
    ],
    "gowalla-a": [
        ("control", 4, CONTROL),
        ("w201-1000-h20auto", 4, hard("201:1000", 20)),
        ("w101-h20auto", 2, hard("101:500", 20)),
    ],
    "gowalla-b": [
        ("control", 2, CONTROL),
        ("w201-1000-h20auto", 2, hard("201:1000", 20)),
    ],
}


def base_config(dataset: str, out: Path, **train_kw) -> RunConfig:
    d = DATA / dataset
    return RunConfig(positives=str(d / "train.txt"), test=str(d / "test.txt"), out=str(out), valid_fraction=0.1,
                     iterations=1, train=TrainConfig(positives="", out="", threads=1, **train_kw), **REFINE)


def variant(base: RunConfig, name: str, iterations: int, options: dict) -> RunConfig:
    """A run directory holding a copy of the base's round 0 and its own options (run.json)."""
    options = dict(options)
    train_kw = options.pop("train", {})
    out = Path(f"{base.out}-{name}")
    config = replace(base, out=str(out), iterations=iterations, train=replace(base.train, **train_kw), **options)
    if not (out / "run.json").exists():
        shutil.copytree(Path(base.out) / "data", out / "data", dirs_exist_ok=True)
        shutil.copytree(Path(base.out) / "round_00", out / "round_00", dirs_exist_ok=True)
        _write_json(out / "run.json", config.identity())
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("group", choices=sorted(GROUPS))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    args = parser.parse_args()
    dataset, train_kw = BASES[args.group]
    prefix = {"ml1m-a": "m-a256", "gowalla-a": "g-a256", "gowalla-b": "g-b1024"}[args.group]
    base = base_config(dataset, args.runs / prefix, **train_kw)
    run(base)
    for name, iterations, options in GROUPS[args.group]:
        print(name)
        print(metrics_table(run(variant(base, name, iterations, options))))


if __name__ == "__main__":
    main()
