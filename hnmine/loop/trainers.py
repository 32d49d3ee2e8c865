"""The train and export steps of a round of ``hnmine run``, behind one contract.

A trainer gets a round's paths (:class:`RoundPaths`: the training positives, the tables mined for the
round, the previous round's model) and leaves, in ``round_NN/embeddings/``, the round's user and item
embeddings in hnmine's input form; the loop then evaluates, chooses the best round and mines the next
round's tables from them. Two implementations:

- :class:`BuiltinTrainer`: hnmine's own two-tower (``hnmine train`` and ``hnmine export``), the default;
- :class:`ExternalTrainer`: any trainer run as commands (``--train-command``, ``--export-command``):
  TorchEasyRec's train_eval / export / predict, or a team's own launcher. What its commands leave
  (hnmine parquet, or TorchEasyRec predict output: list or comma-separated vectors, named id columns,
  int64 or string ids) is read, validated against the training positives and only then written to
  ``round_NN/embeddings/``; a round is complete only after that (see :mod:`hnmine.loop.runner`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl

from hnmine.embed.export import export_embeddings
from hnmine.errors import InputError
from hnmine.io.embeddings import read_embedding_pair, write_embedding_dir
from hnmine.io.positives import Positives, index_positives
from hnmine.io.storage import is_url, url
from hnmine.loop.commands import CommandFailedError, command_env, fill_placeholders, format_command, run_command
from hnmine.options import RankWindow, parse_rank_window
from hnmine.progress import Progress
from hnmine.training.trainer import train

if TYPE_CHECKING:
    from hnmine.loop.config import RunConfig

__all__ = ["BuiltinTrainer", "ExternalTrainer", "RoundPaths", "TrainStep", "Trainer"]


@dataclass(frozen=True)
class RoundPaths:
    """Where one round reads and writes; ``mined`` and ``prev_round_dir`` are None in round 0."""

    round: int
    seed: int
    run_dir: Path
    train: Path
    valid: Path | None
    test: str | None  # a path or a URL (hnmine.io.storage)
    mined: Path | None
    prev_round_dir: Path | None
    rank_window: str | None  # the window ``mined`` was cut from

    @property
    def round_dir(self) -> Path:
        return self.run_dir / f"round_{self.round:02d}"

    @property
    def embeddings(self) -> Path:
        """round_NN/embeddings/: user.parquet and item.parquet, what the loop evaluates and mines with."""
        return self.round_dir / "embeddings"

    def placeholders(self) -> dict[str, str]:
        """The values of the command templates' placeholders but ``{user_embeddings}`` and ``{item_embeddings}``."""
        def text(path: Path | None) -> str:
            return "" if path is None else str(path.absolute())

        size = ""
        if self.rank_window:
            lo, hi = parse_rank_window(self.rank_window)
            size = str(hi - lo + 1)
        return {
            "round": str(self.round), "seed": str(self.seed), "python": sys.executable,
            "run_dir": text(self.run_dir), "round_dir": text(self.round_dir),
            "model_dir": text(self.round_dir / "model"),
            "prev_model_dir": text(self.prev_round_dir / "model" if self.prev_round_dir else None),
            "mined": text(self.mined), "rank_window": self.rank_window or "", "window_size": size,
            "export_dir": text(self.round_dir / "export"),
            "train": text(self.train), "valid": text(self.valid), "test": _path_or_url(self.test),
        }


@dataclass
class TrainStep:
    """What a train step reports: its seconds, epochs and last loss where known, and its manifest record."""

    seconds: float
    epochs: int | None
    loss: float | None
    record: dict[str, Any]


class Trainer(Protocol):
    """The train and export steps of a round (see the module docstring for the contract)."""

    def model_path(self, round_dir: Path) -> Path:
        """The round's model, as best_round.json names it."""
        ...

    def train(self, paths: RoundPaths, progress: Progress) -> TrainStep: ...

    def export(self, paths: RoundPaths, train_positives: Positives) -> dict[str, Any]:
        """Leave ``paths.embeddings``/{user,item}.parquet; returns the step's manifest record."""
        ...


class BuiltinTrainer:
    """hnmine's two-tower: round 0 from scratch on the training positives; round r >= 1 on the mined
    ``pos_edge`` with its ``hard_neg_edge`` (``--hard``), warm from round r-1 (``--init warm``)."""

    def __init__(self, config: RunConfig, log: Callable[[str], None]) -> None:
        self.config = config
        self.log = log

    def model_path(self, round_dir: Path) -> Path:
        return round_dir / "model.pt"

    def train(self, paths: RoundPaths, progress: Progress) -> TrainStep:
        config, r = self.config, paths.round
        tcfg = replace(config.train, positives=str(paths.train), out=str(self.model_path(paths.round_dir)),
                       item_nodes=None, hard_negatives=None, init=None,
                       valid=str(paths.valid) if paths.valid is not None else None, seed=paths.seed)
        window = paths.rank_window or config.default_window()
        if paths.mined is not None and paths.prev_round_dir is not None:
            mined = paths.mined
            tcfg = replace(tcfg, positives=str(mined / "pos_edge.parquet"), item_nodes=str(mined / "item.parquet"),
                           hard_negatives=str(mined / "hard_neg_edge.parquet") if config.hard else None,
                           init=str(self.model_path(paths.prev_round_dir)) if config.init == "warm" else None)
            if config.hard and config.train.hard_correction == "mis":
                tcfg = replace(tcfg, window_embeddings=str(paths.prev_round_dir / "embeddings"), rank_window=RankWindow.parse(window))
            if config.refine_epochs is not None:
                tcfg = replace(tcfg, epochs=config.refine_epochs)
            if config.refine_lr is not None:
                tcfg = replace(tcfg, lr=config.refine_lr)
            if config.refine_lr_min is not None:
                tcfg = replace(tcfg, lr_min=config.refine_lr_min)
        lo, hi = parse_rank_window(window)
        tcfg = replace(tcfg, hard_window=hi - lo + 1)
        self.log(f"round {r}: training {tcfg.epochs} epoch{'s' if tcfg.epochs != 1 else ''} "
                 f"({'with' if tcfg.hard_negatives else 'without'} hard negatives, "
                 f"{'warm start' if tcfg.init else 'from scratch'})")
        report = train(tcfg, progress)
        return TrainStep(seconds=report.seconds, epochs=tcfg.epochs,
                         loss=report.epochs[-1]["loss"] if report.epochs else None,
                         record={"train": tcfg.to_dict(), "train_report": report.to_dict()})

    def export(self, paths: RoundPaths, train_positives: Positives) -> dict[str, Any]:
        exported = export_embeddings(self.model_path(paths.round_dir), paths.embeddings)
        return {"users": exported.users, "items": exported.items, "dim": exported.dim}


class ExternalTrainer:
    """A trainer run as commands: ``--train-command`` (``--first-train-command`` in round 0), then
    ``--export-command`` if given; their output is adopted by :meth:`export` once it checks out."""

    def __init__(self, config: RunConfig, log: Callable[[str], None]) -> None:
        self.config = config
        self.log = log

    def model_path(self, round_dir: Path) -> Path:
        return round_dir / "model"

    def values(self, paths: RoundPaths) -> dict[str, str]:
        """Every placeholder's value for this round."""
        values = paths.placeholders()
        for name, template, option in (("user_embeddings", self.config.user_embeddings, "--user-embeddings"),
                                       ("item_embeddings", self.config.item_embeddings, "--item-embeddings")):
            values[name] = _path_or_url(fill_placeholders(template, values, option))
        return values

    def _run(self, paths: RoundPaths, step: str, template: str, option: str, timeout: float | None) -> dict[str, Any]:
        values = self.values(paths)
        argv = format_command(template, values, option)
        seconds = run_command(argv, label=f"round {paths.round} {step}", env=command_env(values), timeout=timeout,
                              timeout_option=f"--{step}-timeout", log=self.log)
        return {"command": argv, "seconds": seconds}

    def train(self, paths: RoundPaths, progress: Progress) -> TrainStep:
        config = self.config
        assert config.train_command is not None  # an ExternalTrainer is made for a train command only
        for folder in (self.model_path(paths.round_dir), paths.round_dir / "export"):
            folder.mkdir(parents=True, exist_ok=True)
        first = paths.round == 0 and config.first_train_command is not None
        template = config.first_train_command if first and config.first_train_command else config.train_command
        self.log(f"round {paths.round}: training with {'--first-train-command' if first else '--train-command'}"
                 f" ({'without' if paths.mined is None else 'with'} mined tables)")
        record = self._run(paths, "train", template, "--first-train-command" if first else "--train-command",
                           config.train_timeout)
        return TrainStep(seconds=record["seconds"], epochs=None, loss=None, record={"train": record})

    def export(self, paths: RoundPaths, train_positives: Positives) -> dict[str, Any]:
        config = self.config
        record: dict[str, Any] = {}
        if config.export_command:
            record = self._run(paths, "export", config.export_command, "--export-command", config.export_timeout)
        values = self.values(paths)
        step = "export" if config.export_command else "train"
        record.update(adopt_embeddings(values["user_embeddings"], values["item_embeddings"], config.columns.id_column,
                                       config.columns.vector_column, train_positives, paths.embeddings,
                                       f"round {paths.round} {step}"))
        return record


def adopt_embeddings(users_path: str, items_path: str, id_column: str, vector_column: str,
                     train_positives: Positives, out_dir: Path, label: str) -> dict[str, Any]:
    """Read what an external command left, check it, and publish it as ``out_dir``/{user,item}.parquet.

    Checked: both tables readable (every reader check: ids, nulls, NaN, ragged rows), one dimension,
    ids of the positives' type, and every user and item of the training positives present. Anything
    else is a :class:`CommandFailedError` naming the step, and nothing is published.
    """
    try:
        users, items = read_embedding_pair(users_path, items_path, id_column, vector_column)
        index = index_positives(train_positives, users.ids, items.ids)
        for what, count, column, ids, path in (
                ("users", index.unknown_users, "user_id", users.ids, users_path),
                ("items", index.unknown_items, "item_id", items.ids, items_path)):
            if count:
                example = _missing(train_positives.table[column], ids)
                raise InputError(f"{path}: {count:,} {what} of the training positives have no embedding "
                                 f"(e.g. {example!r}); every one needs a vector")
    except InputError as exc:
        raise CommandFailedError(f"{label}: its embeddings are not usable: {exc}") from None
    write_embedding_dir(out_dir, users.ids, users.vectors, items.ids, items.vectors, tool="hnmine run")
    return {"user_embeddings": users_path, "item_embeddings": items_path, "users": len(users),
            "items": len(items), "dim": users.dim}


def _path_or_url(path: str | None) -> str:
    """An absolute path, a URL as it is, or "" for none."""
    if path is None:
        return ""
    return url(path) if is_url(path) else str(Path(path).absolute())


def _missing(column: pl.Series, ids: np.ndarray) -> Any:
    """One id of ``column`` that ``ids`` lacks (compared as the embeddings' type)."""
    known = pl.Series(ids.tolist() if ids.dtype == object else ids)
    wanted = column.cast(known.dtype, strict=False)
    return column.filter(~wanted.is_in(known.implode()) | wanted.is_null())[0]
