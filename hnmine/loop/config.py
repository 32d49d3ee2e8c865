"""``hnmine run``'s options (:class:`RunConfig`): the loop's own, the miner's selection and the
trainer's, each declared once where it belongs (the selection in :mod:`hnmine.mining.config`, the
trainer's in :mod:`hnmine.training.config`) and nested here. Light: no heavy import."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any, Literal

from hnmine.errors import InputError
from hnmine.mining.config import Execution, MineConfig, MineInputs, MineOutput, SelectionConfig
from hnmine.options import (
    EmbeddingColumns,
    RankWindow,
    build_config,
    check_finite_options,
    cutoffs_option,
    flat_options,
    group,
    option,
    plain,
)
from hnmine.training.config import ROUND_INPUTS, TrainConfig

__all__ = ["AUTO_WINDOW", "INITS", "RunConfig"]

INITS = ("warm", "scratch")
AUTO_WINDOW: Literal["auto"] = "auto"
# mine's near-duplicate filters: a run does not take them (they need --item-features or cost a pass per round)
NEAR_DUPLICATES = ("max_positive_similarity", "exclude_same")
# What a run sets in each round's selection itself: the seed (the trainer's + round); mine's options
# the run does not take (--temperature would clash with the trainer's)
ROUND_SELECTION = ("seed", "temperature", "rho", "max_score", "min_score", *NEAR_DUPLICATES)
# Where each round's mining runs: hnmine mine's --engine and --item-shards (the output is the same);
# its threads are the trainer's --threads
ROUND_EXECUTION = ("chunk_size", "max_memory", "threads")


# mine's inputs a run sets itself each round (the round's embeddings and the run's train split); the
# item feature table and how its attrs are written are the user's, passed to every round's mining
ROUND_MINE_INPUTS = ("users", "items", "positives", "user_ids", "item_ids", "id_column", "vector_column",
                     "positives_format", "user_column", "item_column", "weight_column")
# the groups run.json and to_dict() keep flat
FLAT_GROUPS = ("columns", "features")


def _run_mine_inputs() -> MineInputs:
    return MineInputs(users="", items="", positives="")


def _run_selection() -> SelectionConfig:
    return SelectionConfig(rank_window=AUTO_WINDOW, num_hard=50, edge_weight="uniform")


@dataclass(frozen=True)
class RunConfig:
    """Every option of ``hnmine run``: the loop's own, the miner's selection and the trainer's."""

    positives: str = option(help="Training positives (parquet, CSV, LightGCN txt).", path=True)
    out: str = option(help="Run directory (created; an existing run there is resumed), or an object-store URL "
                           "(s3://bucket/runs/r1) that each completed round is published to.", path=True)
    # with a URL --out the rounds run in a local directory; a machine without it resumes from the URL
    work_dir: str | None = option(None, help=(
        "With a URL --out: the local directory the rounds run in (default: a directory per URL under "
        "$XDG_CACHE_HOME/hnmine/runs, or ~/.cache/hnmine/runs)."), path=True)
    # the validation gain grows until round 10 on both Gowalla and ml-1m (docs/results.md)
    iterations: int = option(12, help="Rounds at most: round 0 without hard negatives, then mine + retrain (see "
                                      "--round-patience).")
    # ml-1m's validation dips for three rounds before its best: 0 runs every round
    round_patience: int = option(0, help="Stop before --iterations once this many rounds in a row have not beaten "
                                         "the best validation Recall@20 (0: run every round; off without a "
                                         "validation split).")
    test: str | None = option(None, help="Test positives to report metrics on.", path=True)
    # a validation split by default: --rank-window auto measures false negatives on it, and every
    # round's validation metrics are what windows and weights should be chosen on
    valid_fraction: float = option(0.1, help="Hold out this share of each user's positives as validation (0: "
                                             "none; --rank-window auto needs it).")
    init: str = option("warm", help="Rounds >= 1: warm (from the previous model) or scratch.")
    hard: bool = option(True, help="Use the mined negatives (--no-hard: same schedule without them, the control).")
    # also train the hard=False control each round (built-in trainer), from the same round 0 with the
    # same schedule and seeds, into control/round_rr/: mining's gain is stated over it, not only over
    # round 0 (which misses what the extra epochs alone do)
    control: bool = option(False, help=(
        "Also train the --no-hard control each round (same schedule and seeds, from the same round 0; about twice "
        "the training time) and state mining's gain over it in the summary, metrics.json, best_round.json and the "
        "plot."), switch=True)
    # rounds >= 1 continue a converged model: a few epochs at the end of round 0's learning rate
    refine_epochs: int | None = option(3, help="Epochs of rounds >= 1.")
    refine_lr: float | None = option(1e-3, help="Learning rate of rounds >= 1 (they continue round 0's converged "
                                                "model; restarting at --lr undoes it).")
    refine_lr_min: float | None = option(1e-4, help="Final learning rate of rounds >= 1.")
    ks: tuple[int, ...] = cutoffs_option()
    # A fixed window cannot serve both data sets measured: the same ranks hold 5x more held-out
    # positives on ml-1m than on Gowalla (docs/results.md, "False negatives by rank")
    window_width: int = option(800, help="--rank-window auto: ranks in the window.")
    max_false_negative_rate: float = option(0.007, help="--rank-window auto: the highest share of validation "
                                                        "positives the window may hold.")
    # hnmine mine's selection, applied in every round (its false-negative filters included)
    selection: SelectionConfig = group(_run_selection, exclude=ROUND_SELECTION, why={
        "rank_window": "the loop has a validation split to choose the window on, and the right depth moves as the "
                       "model improves: each round mines the hardest --window-width ranks whose false-negative "
                       "rate on the validation split is at most --max-false-negative-rate (needs "
                       "--valid-fraction).",
        "num_hard": "so that the trainer's --num-hard-sample (50) finds a full set for every user each step.",
        "edge_weight": "the trainer takes all --num-hard mined rows, so the weight orders nothing and uniform keeps "
                       "the strategy's draw as it is.",
    })
    train: TrainConfig = group(lambda: TrainConfig(positives="", out=""), exclude=ROUND_INPUTS)
    # --item-features and its options: each round's item.txt carries the attrs the samplers read
    features: MineInputs = group(_run_mine_inputs, exclude=ROUND_MINE_INPUTS)
    execution: Execution = group(Execution, exclude=ROUND_EXECUTION)
    wait_lock: float = option(0.0, help="Seconds to wait while another hnmine process writes the same output "
                                        "(holds its lock); then, or at once with 0, exit 75.")
    # the split the external trainer's data already left out
    valid: str | None = option(None, help="Validation positives from a file (e.g. the split an external trainer's "
                                          "data left out); replaces the --valid-fraction split.", path=True)
    # An external trainer (hnmine.loop.trainers.ExternalTrainer): command templates with the
    # placeholders of hnmine.loop.commands.PLACEHOLDERS; None: the built-in trainer
    train_command: str | None = option(None, help=(
        "Train with an external trainer: this command, run each round, with placeholders such as {round}, {mined}, "
        "{model_dir}, {prev_model_dir}, {seed} (docs/external.md). Default: the built-in trainer."))
    first_train_command: str | None = option(None, help="Round 0's train command (no mined tables yet; default: "
                                                        "--train-command).")
    export_command: str | None = option(None, help=(
        "Run after the train command; it leaves the user and item embeddings at --user-embeddings / "
        "--item-embeddings (default: the train command does)."))
    user_embeddings: str = option("{export_dir}/user.parquet", help=(
        "External trainer: where its user embeddings are left (parquet file or directory, e.g. TorchEasyRec "
        "predict output {export_dir}/user_emb)."))
    item_embeddings: str = option("{export_dir}/item.parquet", help="External trainer: where its item embeddings "
                                                                    "are left.")
    # the columns of its embedding tables: hnmine evaluate's --id-column and --vector-column
    columns: EmbeddingColumns = group(EmbeddingColumns, context="External trainer: ")
    train_timeout: float | None = option(None, help=(
        "Seconds a train command may run before it is stopped and the run fails (exit 3; a rerun resumes at that "
        "round). Default: no limit."))
    export_timeout: float | None = option(None, help="The same for the export command.")

    @classmethod
    def of(cls, **options: Any) -> RunConfig:
        """A config from option values by option name (``rank_window="11:60"``, ``train=TrainConfig(...)``)."""
        return build_config(cls, options)

    @property
    def auto_window(self) -> bool:
        return self.selection.rank_window == AUTO_WINDOW

    def first_window(self) -> RankWindow:
        """Round 0's window (it mines nothing; its size sets the hard offset): auto starts at the top."""
        if self.auto_window:
            return RankWindow(1, max(self.window_width, 1))
        return RankWindow.parse(self.selection.rank_window)

    def round_mine_config(self, users: str, items: str, positives: str, out: str, window: RankWindow,
                          seed: int) -> MineConfig:
        """What a round mines: this run's selection in ``window``, with the round's seed."""
        return MineConfig(
            inputs=replace(self.features, users=users, items=items, positives=positives),
            output=MineOutput(out=out, pop_exponent=self.train.pop_exponent),
            selection=replace(self.selection, rank_window=window, seed=seed),
            execution=replace(self.execution, threads=self.train.threads),
        )

    def validate(self) -> None:
        check_finite_options(self)
        if self.iterations < 1:
            raise InputError("--iterations must be at least 1")
        if self.round_patience < 0:
            raise InputError("--round-patience must be >= 0 (0: run every round)")
        if self.control and (not self.hard or self.train_command):
            raise InputError("--control trains the built-in trainer's --no-hard control beside the mined rounds: not "
                             "with --no-hard (the run is the control) nor --train-command")
        if self.init not in INITS:
            raise InputError("--init must be warm or scratch")
        if not 0 <= self.valid_fraction < 1:
            raise InputError("--valid-fraction must be in [0, 1)")
        if self.refine_epochs is not None and self.refine_epochs < 1:
            raise InputError("--refine-epochs must be at least 1")
        if (self.refine_lr is not None and self.refine_lr <= 0) or (self.refine_lr_min is not None and self.refine_lr_min < 0):
            raise InputError("--refine-lr must be positive and --refine-lr-min >= 0")
        if self.test is None and self.valid_fraction == 0 and self.valid is None:
            raise InputError("nothing to evaluate on: pass --test, --valid or --valid-fraction")
        self.train.validate()
        self._validate_external()
        if self.auto_window:
            if self.valid_fraction == 0 and self.valid is None:
                raise InputError("--rank-window auto measures false-negative rates on the validation split: "
                                 "pass --valid-fraction (e.g. 0.1) or --valid")
            if self.window_width < 1:
                raise InputError("--window-width must be at least 1")
            if not 0 <= self.max_false_negative_rate < 1:
                raise InputError("--max-false-negative-rate must be in [0, 1)")
        self.round_mine_config("", "", "", "", self.first_window(), self.train.seed).validate()
        filtered = (self.selection.absolute_margin is not None or self.selection.relative_margin is not None
                    or self.selection.max_item_negatives is not None)
        if self.train.hard_correction == "mis" and self.selection.adaptive_window is not None:
            raise InputError("--hard-correction mis reads one rank window for every user; --adaptive-window moves "
                             "each user's")
        if self.train.hard_correction == "mis" and filtered:
            # MIS reads window membership off score thresholds; a filtered window is not that interval
            raise InputError("--hard-correction mis counts every item of the rank window; it cannot be combined "
                             "with --absolute-margin, --relative-margin or --max-item-negatives")

    def _validate_external(self) -> None:
        """The external trainer's templates, filled with stand-in values: a bad one fails before anything runs."""
        from hnmine.loop.commands import PLACEHOLDERS, fill_placeholders, format_command

        for value, option_name in ((self.train_timeout, "--train-timeout"), (self.export_timeout, "--export-timeout")):
            if value is not None and value <= 0:
                raise InputError(f"{option_name} must be a positive number of seconds")
        external = {"--first-train-command": self.first_train_command, "--export-command": self.export_command}
        if self.train_command is None:
            given = [name for name, value in external.items() if value is not None]
            if given:
                raise InputError(f"{given[0]} needs --train-command (the built-in trainer runs no commands)")
            return
        if not self.hard:
            raise InputError("--no-hard is the built-in trainer's control; with --train-command, run the control "
                             "as a second run whose train command leaves out the hard-negative sampler")
        stand_in = {name: "x" for name in PLACEHOLDERS}
        for name, template in {"--train-command": self.train_command, **external}.items():
            if template is not None:
                format_command(template, stand_in, name)
        for name, template in (("--user-embeddings", self.user_embeddings),
                               ("--item-embeddings", self.item_embeddings)):
            fill_placeholders(template, {k: v for k, v in stand_in.items() if not k.endswith("_embeddings")}, name)
        self.columns.validate()

    def default_window(self) -> str:
        """The window a round trains for before anything was mined (round 0's --hard-window)."""
        return str(self.first_window())

    def identity(self) -> dict[str, Any]:
        """The options a resumed run must share with the original (all but the number of rounds), as
        run.json stores them: the loop's and the selection's at the top level, the trainer's under "train"."""
        loop: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            if spec.name in FLAT_GROUPS:
                loop.update(self._flat_group(spec.name))
            elif spec.name not in ("selection", "train", "execution"):  # where mining runs: not what it does
                loop[spec.name] = plain(getattr(self, spec.name))
        # how far to go, where, how long to wait: not what a round does
        for name in ("iterations", "round_patience", "out", "work_dir", "wait_lock", "train_timeout", "export_timeout"):
            loop.pop(name)
        selection = {f.name: plain(getattr(self.selection, f.name)) for f in dataclasses.fields(self.selection)
                     if f.name not in ("seed", "extra", *NEAR_DUPLICATES)}  # the seed is each round's
        train = plain(self.train)
        for name in ("device", "threads", "hard_window"):  # hard_window: each round derives it from the window
            train.pop(name)
        return {**loop, **selection, "train": train}

    def _flat_group(self, name: str) -> dict[str, Any]:
        """The options of a group JSON keeps flat: the embedding columns (as before the group) and the
        item features (as mine's manifest has them)."""
        return flat_options(getattr(self, name), exclude=ROUND_MINE_INPUTS if name == "features" else ())

    def to_dict(self) -> dict[str, Any]:
        """Every option as JSON writes it, nested groups as dicts but the embedding columns flat."""
        result: dict[str, Any] = {}
        for name, value in plain(self).items():
            if name in FLAT_GROUPS:
                result.update(self._flat_group(name))
            else:
                result[name] = value
        return result
