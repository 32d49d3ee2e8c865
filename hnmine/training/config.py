"""The trainer's options (:class:`TrainConfig`, validated before anything is read) and its report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hnmine.errors import InputError
from hnmine.options import MAX_COUNT, RankWindow, check_finite_options, option, parse_window, plain, show_text

__all__ = ["HARD_CORRECTIONS", "REGIMES", "ROUND_INPUTS", "TrainConfig", "TrainReport"]

REGIMES = ("shared", "v2", "mixed")
HARD_CORRECTIONS = ("offset", "mis")
# what ``hnmine run`` sets in each round's TrainConfig itself (its own --init is warm or scratch)
ROUND_INPUTS = ("positives", "out", "item_nodes", "hard_negatives", "init", "hard_window", "window_embeddings",
                "rank_window", "valid")


def _hard_offset(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--hard-offset '{text}' must be a number or auto") from None


def _show_hard_offset(value: float | None) -> str:
    return "auto" if value is None else str(value)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``hnmine train``; ``hnmine run`` nests it, without the inputs it sets each round
    (:data:`ROUND_INPUTS`)."""

    positives: str = option(help="Training positives: pos_edge.parquet, or any positives file (parquet, CSV, "
                                 "LightGCN txt).", path=True)
    out: str = option(help="Model file to write (.pt).", path=True)
    item_nodes: str | None = option(None, help="Item node table (item.parquet: id, weight) for the shared "
                                               "regime's weights.", path=True)
    hard_negatives: str | None = option(None, help="hard_neg_edge.parquet from hnmine mine.", path=True)
    init: str | None = option(None, help="Warm start from this model file.", path=True)
    positives_format: str = "auto"
    dim: int = option(64, help="Embedding dimension.")
    history: bool = option(True, help="User tower adds the mean of the user's history item embeddings.")
    max_history: int | None = option(None, help="Pool a fixed random subset of at most N history items per user "
                                                "(bounds the cost of heavy users; default: all).")
    # docs/training.md: stops the history tower memorising (Gowalla)
    history_dropout: float = option(0.5, help=(
        "Training only: leave each history item out of the user's pooled mean with this probability (besides the "
        "target), so the tower cannot memorise the training positives."))
    epochs: int = option(20, help="Epochs (passes over the positives).")
    batch_size: int = option(2048, help="Positives per step.")
    lr: float = option(1e-2, help="Adam learning rate, cosine-decayed to --lr-min.")
    lr_min: float = option(1e-3, help="Final learning rate.")
    temperature: float = option(0.1, help="Softmax temperature on cosine scores.")
    regime: str = option("mixed", help=(
        "Easy negatives: shared (num_sample by item node weight, NegativeSampler), v2 (uniform over pos_edge items, "
        "NegativeSamplerV2), mixed (in-batch + num_sample uniform)."))
    num_sample: int = option(2048, help="Easy negatives per batch (shared/v2), or the uniform ones added to the "
                                        "in-batch negatives (mixed).")
    pop_exponent: float = option(0.75, help="Item weight = popularity ** b when no item node table is given.")
    logq: bool = option(True, help="Subtract log(expected count) from each easy negative's logit.")
    num_hard_sample: int = option(50, help="Hard negatives per user: the first N of hard_neg_edge by weight "
                                           "(HardNegativeSampler's num_hard_sample).")
    hard_offset: float | None = option(None, help="Added to each hard negative's logit; auto = "
                                                  "log(window / num_hard_sample).",
                                       parse=_hard_offset, show=_show_hard_offset, cli_type=str)
    hard_window: int = option(800, help="Size of the rank window the hard negatives were mined from (for "
                                        "--hard-offset auto).")
    # "offset": hard logits + hard_offset; "mis": balance-heuristic weights over easy and hard samples
    hard_correction: str = option("offset", help=(
        "How hard logits are corrected: offset (+ --hard-offset) or mis (multiple importance sampling: every easy "
        "and hard candidate weighted by 1 / (M q + H/window if in the user's window); needs the mining embeddings "
        "and window)."))
    window_embeddings: str | None = option(None, help="--hard-correction mis: directory with the user.parquet / "
                                                      "item.parquet the hard negatives were mined with.", path=True)
    rank_window: RankWindow | None = option(None, help="--hard-correction mis: the window LO:HI they were mined "
                                                       "from (sets the window size).",
                                            parse=parse_window, show=show_text, cli_type=str)
    seed: int = option(0, help="Random seed (init, order, negatives).")
    device: str = option("auto", help="auto (GPU when present)|cpu|cuda.")
    threads: int | None = option(None, help="CPU threads for torch, at least 1 (default: torch's choice).")
    valid: str | None = option(None, help="Validation positives: Recall/NDCG@20 after each epoch (train positives "
                                          "masked); see --keep-best and --patience.", path=True)
    keep_best: bool = option(True, help="With a validation set: keep the weights of the epoch with the best "
                                        "validation Recall@20 (--no-keep-best: the last epoch's).")
    patience: int | None = option(None, help="With a validation set: stop after N epochs without a better "
                                             "validation Recall@20 (default: run every epoch).")

    def validate(self) -> None:
        check_finite_options(self)
        checks = [
            (self.dim >= 1, "--dim must be at least 1"),
            # 0 epochs would save an untrained (or merely copied) model and report success
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.threads is None or self.threads >= 1, "--threads must be at least 1 (leave it out for torch's choice)"),
            (0 <= self.seed < 2**63, "--seed must be between 0 and 2**63 - 1"),
            (max(self.dim, self.epochs, self.batch_size, self.num_sample, self.num_hard_sample, self.hard_window,
                 self.max_history or 0, self.patience or 0, self.threads or 0) <= MAX_COUNT,
             f"counts and sizes must be at most {MAX_COUNT}"),
            (self.batch_size >= 2, "--batch-size must be at least 2"),
            (self.lr > 0 and self.lr_min >= 0, "--lr must be positive and --lr-min >= 0"),
            (self.temperature > 0, "--temperature must be positive"),
            (self.regime in REGIMES, f"--regime must be one of {', '.join(REGIMES)}"),
            (self.num_sample >= 0, "--num-sample must be >= 0"),
            (self.regime == "mixed" or self.num_sample >= 1, "--num-sample must be >= 1 in the shared and v2 regimes"),
            (self.pop_exponent >= 0, "--pop-exponent must be >= 0"),
            (self.num_hard_sample >= 0, "--num-hard-sample must be >= 0"),
            (self.max_history is None or self.max_history >= 1, "--max-history must be at least 1"),
            (0 <= self.history_dropout < 1, "--history-dropout must be in [0, 1)"),
            (self.patience is None or self.patience >= 1, "--patience must be at least 1"),
            (self.hard_window >= 1, "--hard-window must be >= 1"),
            (self.hard_correction in HARD_CORRECTIONS, "--hard-correction must be offset or mis"),
            (self.hard_correction != "mis" or not self.hard_negatives or (self.window_embeddings and self.rank_window),
             "--hard-correction mis needs --window-embeddings and --rank-window (the mining model and window)"),
            (self.hard_correction != "mis" or self.logq, "--hard-correction mis needs log-q (--logq)"),
            (self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.rank_window is not None:
            RankWindow.parse(self.rank_window)

    def window_size(self) -> int:
        """Items in the hard negatives' rank window: from rank_window when given, else hard_window."""
        if self.rank_window is not None:
            return RankWindow.parse(self.rank_window).width
        return self.hard_window

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON writes them (the window as ``LO:HI``): model files and round manifests."""
        result: dict[str, Any] = plain(self)
        return result

    def resolved_hard_offset(self) -> float:
        """log(window / num_hard_sample) unless given: one mined negative stands for that many items."""
        if self.hard_offset is not None:
            return float(self.hard_offset)
        return math.log(self.hard_window / max(self.num_hard_sample, 1)) if self.num_hard_sample else 0.0


@dataclass
class TrainReport:
    out: str = ""
    users: int = 0
    items: int = 0
    interactions: int = 0
    hard_users: int = 0
    hard_rows: int = 0
    hard_masked_positives: int = 0
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None  # with a validation set: the epoch whose weights were kept
    seconds: float = 0.0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
