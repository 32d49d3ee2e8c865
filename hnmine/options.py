"""Option value types every command shares: the rank window, sizes, the bound on counts.

They live below every stage (the miner, the trainer, the loop and the report all read a rank
window) so that no stage imports another for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from hnmine.errors import InputError

__all__ = ["MAX_COUNT", "RankWindow", "column_pair", "one_of", "parse_rank_window", "parse_size"]

# The largest count or size option (threads, chunk size, ...): the compiled loops and pyarrow take C ints.
MAX_COUNT = 2**31 - 1


@dataclass(frozen=True, order=True)
class RankWindow:
    """Ranks ``lo``..``hi`` (1-based, inclusive) among a user's non-positive items."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        if not (1 <= self.lo <= self.hi):
            raise InputError(f"--rank-window '{self}' must satisfy 1 <= LO <= HI")

    @classmethod
    def parse(cls, text: str | RankWindow) -> RankWindow:
        """``"101:500"`` -> RankWindow(101, 500)."""
        if isinstance(text, RankWindow):
            return text
        try:
            lo_text, hi_text = str(text).split(":")
            lo, hi = int(lo_text), int(hi_text)
        except ValueError:
            raise InputError(f"--rank-window '{text}' must be LO:HI, e.g. 101:500") from None
        return cls(lo, hi)

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1

    def __str__(self) -> str:
        return f"{self.lo}:{self.hi}"


def parse_rank_window(text: str | RankWindow) -> tuple[int, int]:
    """``"101:500"`` -> (101, 500); 1-based, inclusive, LO <= HI."""
    window = RankWindow.parse(text)
    return window.lo, window.hi


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, option: str = "--max-memory") -> int:
    """``"2G"`` -> 2 GiB in bytes; K, M, G, T are powers of 1024 (``2GiB``, ``2gb`` and ``500M`` also read)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    value = int(float(match[1]) * _SIZE_UNITS[match[2].upper()]) if match else 0
    if value <= 0:
        raise InputError(f"{option} '{text}' must be a positive size such as 2G or 500M")
    return value


Choice = TypeVar("Choice", bound=str)


def one_of(value: str, choices: tuple[Choice, ...], option: str) -> Choice:
    """``value`` as the member of ``choices`` it equals (typed as their Literal); InputError if none."""
    for choice in choices:
        if value == choice:
            return choice
    raise InputError(f"{option} must be one of {', '.join(choices)}, not {value!r}")


def column_pair(text: str, option: str) -> tuple[str, str]:
    """An embedding column option: ``"id"`` names the column of both tables, ``"user_id,adgroup_id"`` the
    user table's and the item table's (TorchEasyRec's predict output keeps each tower's own id column)."""
    names = [part.strip() for part in str(text).split(",")]
    if len(names) == 1:
        names *= 2
    if len(names) != 2 or not all(names):
        raise InputError(f"{option} '{text}' must be one column name, or USER,ITEM (e.g. user_id,adgroup_id)")
    return names[0], names[1]
