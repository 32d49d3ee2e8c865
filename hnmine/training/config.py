"""The trainer's options (:class:`TrainConfig`, validated before anything is read) and its report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hnmine.errors import InputError
from hnmine.io.checks import check_finite_options
from hnmine.options import MAX_COUNT, parse_rank_window

__all__ = ["HARD_CORRECTIONS", "REGIMES", "TrainConfig", "TrainReport"]

REGIMES = ("shared", "v2", "mixed")
HARD_CORRECTIONS = ("offset", "mis")


@dataclass
class TrainConfig:
    """Every option of ``hnmine train``."""

    positives: str
    out: str
    item_nodes: str | None = None
    hard_negatives: str | None = None
    init: str | None = None
    positives_format: str = "auto"
    dim: int = 64
    history: bool = True
    max_history: int | None = None
    history_dropout: float = 0.5  # docs/training.md: stops the history tower memorising (Gowalla)
    epochs: int = 20
    batch_size: int = 2048
    lr: float = 1e-2
    lr_min: float = 1e-3
    temperature: float = 0.1
    regime: str = "mixed"
    num_sample: int = 2048
    pop_exponent: float = 0.75
    logq: bool = True
    num_hard_sample: int = 50
    hard_offset: float | None = None
    hard_window: int = 800
    # "offset": hard logits + hard_offset; "mis": balance-heuristic weights over easy and hard samples
    hard_correction: str = "offset"
    window_embeddings: str | None = None  # mis: directory with the user/item.parquet the window was mined with
    rank_window: str | None = None  # mis: the mined window LO:HI (1-based ranks among non-positives)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    valid: str | None = None
    keep_best: bool = True
    patience: int | None = None

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
            parse_rank_window(self.rank_window)

    def window_size(self) -> int:
        """Items in the hard negatives' rank window: from rank_window when given, else hard_window."""
        if self.rank_window is not None:
            lo, hi = parse_rank_window(self.rank_window)
            return hi - lo + 1
        return self.hard_window

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
