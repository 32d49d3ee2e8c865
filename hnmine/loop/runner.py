"""``hnmine run``: train → export → mine → retrain, N rounds, each measured.

Layout of ``out/``::

    run.json                 the options (a resumed run must match them)
    data/train.parquet       the training positives (after the validation split)
    data/valid.parquet       the validation positives (with --valid-fraction)
    round_00/                trained without hard negatives
        model.pt  embeddings/{user,item}.parquet  metrics.json  manifest.json
    round_01/                mined with round_00's embeddings, then retrained
        mined/  (hnmine mine's output: hard_neg_edge, pos_edge, user, item, manifest.json)
        model.pt  embeddings/  metrics.json  manifest.json
    control/round_01/        with control=True: round 1 trained without hard negatives (the --no-hard control)
    metrics.json  metrics.png    (rewritten after every round, like best_round.json)
    best_round.json          the round with the best validation Recall@20 (the model to use)
    run.log                  the run's events and the external commands' output, appended

With an external trainer (``--train-command``, :class:`hnmine.loop.trainers.ExternalTrainer`) a
round holds ``model/`` and ``export/`` (what its commands left) instead of ``model.pt``; its
``embeddings/`` are what the export left, checked and rewritten in hnmine's form.

``run.json`` carries ``"tool": "hnmine run"`` and a ``format_version``: only a directory holding
hnmine's run.json (or nothing) is used as a run directory, and a run holds the directory's lock
(``.<name>.lock`` beside it) throughout, so two runs never write one directory.

A round is complete when its ``manifest.json`` exists (written last). A rerun skips complete
rounds, deletes an incomplete one and goes on from there, so an interrupted run resumes.
Round r >= 1 trains from round r-1's model (``init="warm"``) or from scratch (``"scratch"``);
``hard=False`` keeps the same schedule without hard negatives: the control that separates the
effect of mining from the effect of training longer. ``round_patience`` ends the run early once that
many rounds in a row have not beaten the best validation Recall@20.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch

from hnmine import faults
from hnmine.errors import InputError
from hnmine.evaluate import (
    choose_rank_window,
    evaluate,
    false_negative_rate,
    holdout_split,
    window_false_negative_rates,
)
from hnmine.io.positives import Positives, read_positives
from hnmine.io.publish import OutputLock, atomic_file, resolve_output
from hnmine.io.storage import is_url, reworded, url
from hnmine.io.tables import item_attrs, read_item_features
from hnmine.loop.commands import CommandFailedError
from hnmine.loop.config import RunConfig
from hnmine.loop.trainers import BuiltinTrainer, ExternalTrainer, RoundPaths, Trainer
from hnmine.mining import kernels
from hnmine.mining.pipeline import mine
from hnmine.options import RankWindow, plain
from hnmine.progress import NoProgress, Progress, logger
from hnmine.training.config import TrainConfig

if TYPE_CHECKING:
    from hnmine.loop.remote import RemoteRun

__all__ = ["RoundResult", "RunConfig", "best_control", "best_round", "is_run_json", "metrics_table", "plot_metrics", "run",
           "run_directory", "summary_line"]

# rounds are chosen on the validation split only: choosing on test would tune on test data
BEST_SPLIT, BEST_METRIC = "valid", "recall@20"
# What a run saved before an option existed did, where that differs from today's default: such a
# run resumes only with the option set to this value (--history-dropout 0 --no-keep-best).
LEGACY_TRAIN = {"history_dropout": 0.0, "keep_best": False}
# run.json's marker: a directory whose run.json lacks it (or names another tool) is not a run
RUN_TOOL, RUN_FORMAT_VERSION = "hnmine run", 1


@dataclass
class RoundResult:
    round: int
    metrics: dict[str, dict[str, float]]
    hard_negatives: dict[str, Any]
    train_seconds: float
    mine_seconds: float
    epochs: int | None  # None: an external trainer's (hnmine does not know them)
    loss: float | None
    # the --no-hard control's metrics at this round (round 0's own for round 0); None: no control run
    control: dict[str, dict[str, float]] | None = None
    control_train_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_json(path: Path, value: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str))


def _prepare(config: RunConfig, out: Path) -> tuple[Path, Positives | None, Positives | None]:
    """Write run.json, then data/, on a fresh run; check run.json and finish data/ on a resumed one.

    run.json is written first (atomically), so a directory killed at any later point is recognised
    as this run and resumes; data/ is complete once train.parquet exists (renamed into place last).
    """
    run_json = out / "run.json"
    identity = config.identity()
    if run_json.exists():
        saved = _saved_identity(out, run_json)
        saved.pop("out", None)
        saved.get("train", {}).pop("hard_window", None)  # runs saved before it left the identity
        # options added since the run started are compatible while left at their defaults
        defaults = plain(TrainConfig(positives="", out=""))
        defaults.update(LEGACY_TRAIN)
        for key, value in identity["train"].items():
            if key not in saved.get("train", {}) and value == defaults.get(key):
                saved.setdefault("train", {})[key] = value
        run_defaults = RunConfig.of(positives="", out="").identity()
        for key, value in identity.items():
            if key not in saved and value == run_defaults.get(key):
                saved[key] = value
        if saved != json.loads(json.dumps(identity, default=str)):
            changed = sorted(k for k in identity if saved.get(k) != json.loads(json.dumps(identity[k], default=str)))
            raise InputError(f"{out}: holds a run with other options ({', '.join(changed)}); use another --out")
    elif out.exists() and (not out.is_dir() or not _only_run_leftovers(out)):
        raise InputError(f"{out}: exists and is not an hnmine run (no run.json); use another --out")
    fresh = not run_json.exists()
    if fresh:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(run_json, {"tool": RUN_TOOL, "format_version": RUN_FORMAT_VERSION, **identity})
        faults.point("run.prepare.run_json")
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    train_path = data / "train.parquet"
    valid_path = data / "valid.parquet"
    if fresh or not train_path.exists():
        # without run.json, data/ (if any) is a leftover of a run killed before it wrote run.json
        # (written in that order by earlier versions): its options are unknown, so it is rewritten
        valid_path.unlink(missing_ok=True)
        positives = read_positives(config.positives, fmt=config.train.positives_format)
        split: Positives | None = None
        if config.valid is not None:  # given: the positives are the training set as they are
            split = read_positives(config.valid)
        elif config.valid_fraction > 0:
            positives, split = holdout_split(positives, config.valid_fraction, config.train.seed)
        if split is not None:
            with atomic_file(valid_path) as tmp:
                split.table.write_parquet(tmp)
            faults.point("run.prepare.valid")
        with atomic_file(train_path) as tmp:
            positives.table.write_parquet(tmp)
        faults.point("run.prepare.data")
    valid = read_positives(valid_path) if valid_path.exists() else None
    test = read_positives(config.test) if config.test else None
    return train_path, valid, test


def is_run_json(saved: Any) -> bool:
    """Whether ``saved`` (run.json's content) was written by hnmine run: its marker, or the options a run
    before the marker saved."""
    if not isinstance(saved, dict):
        return False
    tool, version = saved.get("tool"), saved.get("format_version")
    marked = tool == RUN_TOOL and type(version) is int and 1 <= version <= RUN_FORMAT_VERSION
    legacy = tool is None and version is None and isinstance(saved.get("train"), dict)
    return marked or legacy


def _saved_identity(out: Path, run_json: Path) -> dict[str, Any]:
    """run.json's options, if hnmine wrote it (:func:`is_run_json`)."""
    try:
        saved = json.loads(run_json.read_bytes())
    except (OSError, ValueError):
        saved = None
    if is_run_json(saved):
        saved.pop("tool", None)
        saved.pop("format_version", None)
        return dict(saved)
    raise InputError(f"{out}: exists and is not an hnmine run (its run.json was not written by hnmine run); "
                     "use another --out")


def _only_run_leftovers(out: Path) -> bool:
    """True if ``out`` holds nothing but what a run killed before writing run.json leaves behind."""
    for entry in out.iterdir():
        if entry.name == "run.json.tmp" and entry.is_file():
            continue
        if entry.name == "data" and entry.is_dir() and all(
                part.is_file() and part.name in _DATA_FILES for part in entry.iterdir()):
            continue
        return False
    return True


# the temporary names: atomic_file's, and train.tmp / valid.tmp of earlier versions
_DATA_FILES = ("train.parquet", "valid.parquet", "train.parquet.tmp", "valid.parquet.tmp", "train.tmp", "valid.tmp")


def _complete_rounds(out: Path) -> int:
    """How many rounds (from 0, contiguous) have a manifest; later partial ones are removed."""
    done = 0
    while (out / f"round_{done:02d}" / "manifest.json").exists():
        done += 1
    for stale in out.glob("round_*"):
        if re.fullmatch(r"round_\d{2,}", stale.name) and stale.is_dir() and not (stale / "manifest.json").exists():
            shutil.rmtree(stale)
    return done


def _auto_window(config: RunConfig, prev: Path, train_positives: Positives,
                 valid: Positives) -> tuple[str, dict[str, Any]]:
    """--rank-window auto: the window chosen with round ``prev``'s embeddings on the validation split."""
    rates = window_false_negative_rates(prev / "embeddings" / "user.parquet", prev / "embeddings" / "item.parquet",
                                        train_positives, valid, seed=config.train.seed)
    lo, hi, rate, met = choose_rank_window(rates, config.window_width, config.max_false_negative_rate)
    return f"{lo}:{hi}", {"rank_window": f"{lo}:{hi}", "window_false_negative_rate_valid": rate,
                          "window_rate_met": met}


def best_round(results: list[RoundResult]) -> RoundResult | None:
    """The round with the highest validation Recall@20 (the earliest of equals); None without validation."""
    scored = [res for res in results if BEST_METRIC in res.metrics.get(BEST_SPLIT, {})]
    if not scored:
        return None
    return max(scored, key=lambda res: (res.metrics[BEST_SPLIT][BEST_METRIC], -res.round))


NO_CONTROL = ("no --no-hard control was run (hnmine run --control): the gain over round 0 includes what the "
              "extra epochs alone do, not only mining")


def best_control(results: list[RoundResult]) -> tuple[int, float] | None:
    """(round, value) of the control's best validation Recall@20 (the earliest of equals); None without."""
    scored = [(res.round, res.control[BEST_SPLIT][BEST_METRIC]) for res in results
              if res.control and BEST_METRIC in res.control.get(BEST_SPLIT, {})]
    return max(scored, key=lambda rv: (rv[1], -rv[0])) if scored else None


def _gain(value: float, base: float | None) -> float | None:
    return value / base - 1 if base else None


def _best_round_record(out: Path, results: list[RoundResult], stopped_early: bool,
                       trainer: Trainer) -> dict[str, Any] | None:
    best = best_round(results)
    if best is None:
        return None
    first = results[0].metrics[BEST_SPLIT][BEST_METRIC]
    value = best.metrics[BEST_SPLIT][BEST_METRIC]
    round_dir = out / f"round_{best.round:02d}"
    record: dict[str, Any] = {
        "round": best.round, "split": BEST_SPLIT, "metric": BEST_METRIC, "value": value,
        "gain_over_round_0": _gain(value, first),
        "metrics": best.metrics, "rounds_run": len(results), "stopped_early": stopped_early,
        "model": str(trainer.model_path(round_dir)), "embeddings": str(round_dir / "embeddings"),
    }
    control = best_control(results)
    if control is None:
        record.update({"gain_over_control": None, "control": None, "control_note": NO_CONTROL})
        return record
    same = best.control[BEST_SPLIT][BEST_METRIC] if best.control else None
    control_dir = out / "control" / f"round_{control[0]:02d}" if control[0] else out / "round_00"
    # what mining adds: the best mined round over the best the same schedule reaches without it
    record["gain_over_control"] = _gain(value, control[1])
    record["control"] = {"round": control[0], "value": control[1], "same_round_value": same,
                         "gain_over_same_round": _gain(value, same) if same is not None else None,
                         "model": str(trainer.model_path(control_dir))}
    return record


def summary_line(record: dict[str, Any]) -> str:
    """The run's one-line verdict: the best round, its gain over the control (or why there is none)."""
    line = f"best round by validation {record['metric']}: {record['round']} ({record['value']:.4f}"
    control = record.get("control")
    if control is not None and record.get("gain_over_control") is not None:
        line += (f", {100 * record['gain_over_control']:+.2f}% over the --no-hard control's best "
                 f"(round {control['round']}: {control['value']:.4f})")
    if record.get("gain_over_round_0") is not None:
        line += f", {100 * record['gain_over_round_0']:+.2f}% over round 0"
    line += ")"
    if control is None and "control_note" in record:
        line += f"; {record['control_note']}"
    return line


def _write_summaries(out: Path, results: list[RoundResult], stopped_early: bool, trainer: Trainer) -> None:
    """metrics.json, best_round.json and metrics.png as of the rounds done (after every round)."""
    _write_json(out / "metrics.json", [res.to_dict() for res in results])
    faults.point("run.metrics")
    record = _best_round_record(out, results, stopped_early, trainer)
    if record is not None:
        _write_json(out / "best_round.json", record)
    plot_metrics(results, out / "metrics.png")


def _load_results(out: Path, rounds: int) -> list[RoundResult]:
    return [RoundResult(**json.loads((out / f"round_{r:02d}" / "metrics.json").read_text())) for r in range(rounds)]


def run(config: RunConfig, progress: Progress | None = None) -> list[RoundResult]:
    """Run (or resume) the loop; returns every round's result and writes metrics.json/.png.

    ``config.out`` is followed if it is a symbolic link; its lock is held for the whole run. The inputs
    may be URLs (:mod:`hnmine.io.storage`); ``out`` is a local directory: a run resumes from the state
    it keeps there, round by round (docs/storage.md).
    """
    config.validate()
    _check_item_features(config)
    config = replace(config, positives=url(config.positives), test=url(config.test) if config.test else None,
                     valid=url(config.valid) if config.valid else None)
    if is_url(config.out):
        return _run_remote(config, progress)
    if config.work_dir is not None:
        raise InputError("--work-dir is the local directory of a run whose --out is an object-store URL; a local "
                         "--out is the run directory itself")
    out = resolve_output(config.out)
    with reworded(), OutputLock(out, config.wait_lock):
        return _run(replace(config, out=str(out)), progress)


def _check_item_features(config: RunConfig) -> None:
    """Read --item-features and check its columns before round 0 trains (every round's mining reads it):
    a bad table is refused in one line up front, not after the first round's training."""
    features = config.features
    if features.item_features is None:
        return
    table = read_item_features(features.item_features, features.item_features_id_column)
    item_attrs(np.zeros(0, dtype=np.int64), table, id_column=features.item_features_id_column,
               attr_columns=features.attr_columns, delimiter=features.attr_delimiter,
               source=str(features.item_features), missing=features.missing_item_features)


def run_directory(config: RunConfig) -> Path:
    """The local directory the run's rounds are in: ``--out``, or with a URL ``--out`` its working directory."""
    if not is_url(config.out):
        return Path(config.out)
    from hnmine.loop.remote import default_work_dir

    return Path(config.work_dir) if config.work_dir else default_work_dir(url(config.out).rstrip("/"))


def _run_remote(config: RunConfig, progress: Progress | None) -> list[RoundResult]:
    """The run in a local working directory, each completed round published to the URL (:mod:`hnmine.loop.remote`);
    resumed from the URL when the working directory lacks the rounds there."""
    from hnmine.loop.remote import RemoteRun

    with reworded(), RemoteRun(url(config.out), config.work_dir, config.wait_lock, is_run_json) as remote:
        work = resolve_output(remote.work)
        remote.work = work
        with OutputLock(work, config.wait_lock):
            remote.pull()
            try:
                return _run(replace(config, out=str(work)), progress, remote)
            except InputError as exc:
                if str(exc).startswith(f"{work}: holds a run"):  # the options are the URL's run's
                    raise type(exc)(remote.url + str(exc)[len(str(work)):]) from None
                raise


class RunLog:
    """The run's events and its commands' output: ``hnmine`` logger records, and lines appended to
    ``run.log`` in the run directory (whatever the logger's level, so a cron job's failure is on disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def __call__(self, message: str) -> None:
        logger.info(message)
        with self._lock:
            self._file.write(f"[{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}] {message}\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def _run(config: RunConfig, progress: Progress | None, remote: RemoteRun | None = None) -> list[RoundResult]:
    out = Path(config.out)
    train_path, valid, test = _prepare(config, out)
    if remote is not None:
        remote.push_start()
        remote.push_missing_rounds()
    log = RunLog(out / "run.log")
    try:
        return _rounds(config, progress or NoProgress(), out, train_path, valid, test, log, remote)
    except InputError as exc:
        log(f"error: {exc}")
        if remote is not None:
            with contextlib.suppress(InputError):
                remote.push_summaries(("run.log",))
        if isinstance(exc, CommandFailedError):
            raise CommandFailedError(f"{exc} (all its output: {out / 'run.log'}; a rerun resumes at this "
                                     "round)") from None
        raise
    finally:
        log.close()


def _rounds(config: RunConfig, progress: Progress, out: Path, train_path: Path, valid: Positives | None,
            test: Positives | None, log: RunLog, remote: RemoteRun | None) -> list[RoundResult]:
    if config.train.threads:
        # every step, not only training: a resumed process must run each step as the first one did
        torch.set_num_threads(config.train.threads)
        kernels.set_threads(config.train.threads)
    heldout = {name: table for name, table in (("valid", valid), ("test", test)) if table is not None}
    trainer: Trainer = ExternalTrainer(config, log) if config.train_command else BuiltinTrainer(config, log)
    done = _complete_rounds(out)
    if done:
        log(f"resuming: rounds 0-{done - 1} complete")
    results = _load_results(out, min(done, config.iterations))
    train_positives = read_positives(train_path)
    # Test ranking masks every known positive (train and validation), as in the published protocol.
    full_positives = train_positives if valid is None else Positives(
        pl.concat([train_positives.table, valid.table]), "train+valid", 0, 0)
    valid_path = out / "data" / "valid.parquet"
    stopped_early = False
    trained = False
    # the --no-hard control: rounds >= 1 under control/, from the shared round 0
    control_trainer = BuiltinTrainer(replace(config, hard=False, control=False), log) if config.control else None
    for r in range(done, config.iterations):
        best = best_round(results)
        if config.round_patience and best is not None and results[-1].round - best.round >= config.round_patience:
            log(f"stopping before round {r}: no better validation {BEST_METRIC} than round {best.round}'s "
                f"for {config.round_patience} round(s) (--round-patience)")
            stopped_early = True
            break
        round_dir = out / f"round_{r:02d}"
        round_dir.mkdir(parents=True)
        started = time.time()
        mine_seconds = 0.0
        hard_stats: dict[str, Any] = {}
        window: str | None = None
        prev = out / f"round_{r - 1:02d}" if r > 0 else None
        if prev is not None:
            mark = time.perf_counter()
            window = config.default_window()
            if config.auto_window:
                assert valid is not None  # validate() checked
                window, window_stats = _auto_window(config, prev, train_positives, valid)
                hard_stats.update(window_stats)
                log(f"round {r}: --rank-window auto: {window} (expected false-negative rate "
                    f"{window_stats['window_false_negative_rate_valid']:.2%} on the validation split)")
            log(f"round {r}: mining with round {r - 1}'s embeddings")
            report = mine(config.round_mine_config(
                str(prev / "embeddings" / "user.parquet"), str(prev / "embeddings" / "item.parquet"),
                str(train_path), str(round_dir / "mined"), RankWindow.parse(window), seed=config.train.seed + r,
            ), progress, command=["hnmine", "run", *sys.argv[1:]])
            faults.point("run.round.mined")
            mine_seconds = time.perf_counter() - mark
            mined = round_dir / "mined"
            hard_stats.update({"rows": report.rows.get("hard_neg_edge", 0), "used": config.hard})
            for name, table in heldout.items():
                rates = false_negative_rate(mined / "hard_neg_edge.parquet", table)
                hard_stats[f"false_negative_rate_{name}"] = rates["rate"]
                if "buckets" in rates:  # --adaptive-window: each bucket's users, window and rate
                    hard_stats[f"bucket_false_negative_rates_{name}"] = rates["buckets"]
        paths = RoundPaths(round=r, seed=config.train.seed + r, run_dir=out, train=train_path,
                           valid=valid_path if valid is not None else None,
                           test=config.test,
                           mined=round_dir / "mined" if prev is not None else None, prev_round_dir=prev,
                           rank_window=window)
        step = trainer.train(paths, progress)
        faults.point("run.round.trained")
        exported = trainer.export(paths, train_positives)
        faults.point("run.round.exported")
        metrics = {}
        for name, table in heldout.items():
            masked = train_positives if name == "valid" or valid is None else full_positives
            metrics[name] = evaluate(paths.embeddings / "user.parquet", paths.embeddings / "item.parquet", masked,
                                     table, config.ks).metrics
        control_metrics: dict[str, dict[str, float]] | None = metrics if control_trainer is not None else None
        control_seconds = 0.0
        if control_trainer is not None and prev is not None:
            # a hard=False round: the same schedule, seed and tables, from the control's previous model
            cpaths = replace(paths, run_dir=out / "control",
                             prev_round_dir=prev if r == 1 else out / "control" / f"round_{r - 1:02d}")
            shutil.rmtree(cpaths.round_dir, ignore_errors=True)  # a killed round's control is redone
            cpaths.round_dir.mkdir(parents=True)
            log(f"round {r}: the --no-hard control")
            cstep = control_trainer.train(cpaths, progress)
            control_trainer.export(cpaths, train_positives)
            faults.point("run.round.control")
            control_seconds = cstep.seconds
            control_metrics = {}
            for name, table in heldout.items():
                masked = train_positives if name == "valid" or valid is None else full_positives
                control_metrics[name] = evaluate(cpaths.embeddings / "user.parquet", cpaths.embeddings / "item.parquet",
                                                 masked, table, config.ks).metrics
        result = RoundResult(round=r, metrics=metrics, hard_negatives=hard_stats, train_seconds=step.seconds,
                             mine_seconds=mine_seconds, epochs=step.epochs, loss=step.loss,
                             control=control_metrics, control_train_seconds=control_seconds)
        _write_json(round_dir / "metrics.json", result.to_dict())
        faults.point("run.round.metrics")
        _write_json(round_dir / "manifest.json", {
            "tool": "hnmine run", "round": r, "command": ["hnmine", "run", *sys.argv[1:]],
            **step.record, "export": exported, "result": result.to_dict(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        faults.point("run.round.done")
        results.append(result)
        trained = True
        log("round {}: {}".format(r, "; ".join(
            f"{name} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()) for name, m in metrics.items())))
        if control_trainer is not None and prev is not None and control_metrics is not None:
            log("round {}: control {}".format(r, "; ".join(
                f"{name} " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()) for name, m in control_metrics.items())))
        _write_summaries(out, results, False, trainer)
        if remote is not None:
            remote.push_round(r)
    if stopped_early or not trained:  # otherwise the last round's summaries are already the run's
        _write_summaries(out, results, stopped_early, trainer)
        if remote is not None:
            remote.push_summaries()
    return results


def metrics_table(results: list[RoundResult]) -> pl.DataFrame:
    """One row per round: every split's metrics, the gain of Recall@20 over round 0, FN rate, seconds."""
    rows = []
    base = results[0].metrics if results else {}
    for res in results:
        row: dict[str, Any] = {"round": res.round}
        for name, values in res.metrics.items():
            row.update({f"{name} {k}": v for k, v in values.items()})
            if "recall@20" in values and base.get(name, {}).get("recall@20"):
                row[f"{name} R@20 gain %"] = 100 * (values["recall@20"] / base[name]["recall@20"] - 1)
            control = (res.control or {}).get(name, {}).get("recall@20")
            if control:
                row[f"{name} control R@20"] = control
                row[f"{name} gain vs control %"] = 100 * (values["recall@20"] / control - 1)
        if "rank_window" in res.hard_negatives:
            row["window"] = res.hard_negatives["rank_window"]
        row["FN rate"] = next((v for k, v in res.hard_negatives.items() if k.startswith("false_negative_rate")), None)
        row["train s"] = res.train_seconds
        rows.append(row)
    return pl.DataFrame(rows)


def plot_metrics(results: list[RoundResult], path: Path) -> Path | None:
    """Recall@K and NDCG@K per round, one line per split and K (needs matplotlib; skipped without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    rounds = [res.round for res in results]
    best = best_round(results)
    for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
        keys = sorted({(split, k) for res in results for split, m in res.metrics.items() for k in m
                       if k.startswith(metric)})
        for split, key in keys:
            line, = ax.plot(rounds, [res.metrics[split][key] for res in results], marker="o", label=f"{split} {key}")
            control = [(res.round, res.control[split][key]) for res in results
                       if res.control and key in res.control.get(split, {})]
            if len(control) > 1:
                ax.plot(*zip(*control, strict=True), marker=".", linestyle=":", color=line.get_color(),
                        label=f"{split} {key}, --no-hard control")
        ax.set_xlabel("round")
        ax.set_title(metric.upper() if metric == "ndcg" else "Recall")
        if best is not None:
            ax.axvline(best.round, color="grey", linestyle=":", linewidth=1, label=f"best (valid {BEST_METRIC})")
        ax.set_xticks(rounds)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:  # a reader of a running loop's plot never sees half of it
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
