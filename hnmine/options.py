"""Option value types every command shares (the rank window, sizes, the bound on counts) and the
declaration of an option (:func:`option`, :func:`group`).

They live below every stage (the miner, the trainer, the loop and the report all read a rank
window) so that no stage imports another for them, and they import nothing heavy: the command line
builds each command's options from the config dataclasses at ``hnmine --help`` time.

An option is declared once, as a field of a frozen config dataclass: its help text, its name on the
command line (``--name-with-dashes``) and in a TOML config (either spelling), and how its command-line
text becomes the field's value. Configs nest (:func:`group`); :func:`flat_options` and
:func:`build_config` convert between a nested config and the flat option names the command line,
TOML files and manifest.json use.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from hnmine.errors import InputError

__all__ = ["EDGE_WEIGHTS", "MAX_COUNT", "EdgeWeight", "EmbeddingColumns", "Group", "Option", "RankWindow",
           "build_config", "check_finite_options", "column_pair", "cutoffs_option", "flat_options", "group", "one_of",
           "option", "option_fields", "parse_ks", "parse_rank_window", "parse_size", "plain", "show_ks"]

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


# hard_neg_edge's weight column: how the consumer orders a user's mined rows (it keeps the first ones)
EdgeWeight = Literal["score", "rank", "order", "uniform"]
EDGE_WEIGHTS: tuple[EdgeWeight, ...] = ("score", "rank", "order", "uniform")

_OPTION, _GROUP = "hnmine.option", "hnmine.group"
T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    """How a config field appears as an option (see :func:`option`)."""

    help: str
    name: str | None = None
    parse: Callable[[Any], Any] | None = None
    show: Callable[[Any], Any] | None = None
    cli_type: Any = None
    path: bool = False
    switch: bool = False
    argument: bool = False


@dataclass(frozen=True)
class Group:
    """How a nested config appears in its parent's options (see :func:`group`)."""

    exclude: tuple[str, ...] = ()
    why: Mapping[str, str] = dataclasses.field(default_factory=dict)
    context: str = ""


def option(default: Any = dataclasses.MISSING, *, help: str, name: str | None = None,
           parse: Callable[[Any], Any] | None = None, show: Callable[[Any], Any] | None = None,
           cli_type: Any = None, path: bool = False, switch: bool = False, argument: bool = False,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field that is an option of its command(s), declared once.

    ``help`` is the option's help text; ``name`` its option name when not the field's (``--index``
    for ``IndexSpec.kind``); ``parse`` turns its command-line text (or TOML value) into the field's
    value, raising :class:`InputError` with the option's message; ``show`` gives the command-line text
    of a value (the default shown); ``cli_type`` the type it has on the command line when not the
    field's (text for a rank window); ``path`` marks a file or directory given as text; ``switch`` a
    flag that has no ``--no-`` form; ``argument`` a positional argument (``hnmine report PATH``).
    """
    metadata = {_OPTION: Option(help, name, parse, show, cli_type, path, switch, argument)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def group(default_factory: Callable[[], Any] | None = None, *, exclude: tuple[str, ...] = (),
          why: Mapping[str, str] | None = None, context: str = "") -> Any:
    """A nested config whose options are its parent's options.

    ``exclude`` names the options the parent's command does not take (the parent sets them itself);
    ``why`` explains each option whose default here differs from the nested class's own default,
    and the help shows it (``hnmine run``'s ``--num-hard`` is 50, mine's 10, because ...);
    ``context`` starts the help of each of its options (what they are for in this command).
    """
    metadata = {_GROUP: Group(tuple(exclude), dict(why or {}), context)}
    if default_factory is None:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default_factory=default_factory, metadata=metadata)


@dataclass(frozen=True)
class OptionField:
    """One option of a command: where it sits in the nested config and its declaration."""

    path: tuple[str, ...]  # field names from the top config down to this field
    name: str  # option name (identifier form): the CLI flag and the TOML key, with '-' for '_'
    field: dataclasses.Field[Any]
    option: Option
    hint: Any  # the field's resolved type
    default: Any  # this command's default; dataclasses.MISSING when required
    own_default: Any  # the field's own default (differs from ``default`` only where ``why`` says why)
    why: str | None  # why this command's default differs from the field's own
    context: str = ""  # what the option is for in this command (its group's context), before its help


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def option_fields(cls: Any, exclude: tuple[str, ...] = ()) -> Iterator[OptionField]:
    """Every option of config class ``cls``, nested groups in place, in declaration order."""
    yield from _option_fields(cls, (), exclude, None, {}, "")


def _option_fields(cls: Any, path: tuple[str, ...], exclude: tuple[str, ...], defaults: Any,
                   why: Mapping[str, str], context: str) -> Iterator[OptionField]:
    hints = _hints(cls)
    for spec in dataclasses.fields(cls):
        if _GROUP in spec.metadata:
            info: Group = spec.metadata[_GROUP]
            nested = typing.get_args(hints[spec.name]) or (hints[spec.name],)
            inner = next(t for t in nested if dataclasses.is_dataclass(t))
            instance = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None
            yield from _option_fields(inner, (*path, spec.name), (*exclude, *info.exclude), instance, info.why,
                                      context + info.context)
            continue
        declared: Option | None = spec.metadata.get(_OPTION)
        if declared is None:
            continue
        name = declared.name or spec.name
        if name in exclude:
            continue
        if spec.default is not dataclasses.MISSING:
            own = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            own = spec.default_factory()
        else:
            own = dataclasses.MISSING
        default = getattr(defaults, spec.name) if defaults is not None else own
        yield OptionField((*path, spec.name), name, spec, declared, hints[spec.name], default, own, why.get(name),
                          context)


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        config = getattr(config, part)
    return config


def flat_options(config: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``config``'s options by option name, nested groups flattened (manifest.json's ``options``)."""
    return {f.name: plain(_get(config, f.path)) for f in option_fields(type(config), exclude)}


def build_config(cls: type[T], values: Mapping[str, Any], base: T | None = None) -> T:
    """A ``cls`` from option values by option name; nested groups get theirs, the rest their defaults.

    Each value goes through its option's ``parse`` when it is text (the command line's or a TOML
    file's), so ``rank_window="101:500"`` gives ``RankWindow(101, 500)``. A top-level group may be
    given whole by its field name (``train=TrainConfig(...)``); options of it given too replace its values. With
    ``base``, the options not given keep its values.
    """
    known = {f.name: f for f in option_fields(cls)}
    groups = {spec.name for spec in dataclasses.fields(cls) if _GROUP in spec.metadata}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known) - groups)
    if unknown:
        raise TypeError(f"{cls.__name__} has no option(s) {', '.join(unknown)}")
    whole = {k for k, v in values.items() if k in groups and dataclasses.is_dataclass(v)}  # ``index`` is both
    paths = {(k,) if k in whole else known[k].path: v if k in whole else _parsed(known[k], v)
             for k, v in values.items()}
    built: T = _build(cls, (), paths, base)
    return built


def _parsed(spec: OptionField, value: Any) -> Any:
    if spec.option.parse is not None and isinstance(value, str):
        return spec.option.parse(value)
    return value


def _build(cls: Any, path: tuple[str, ...], values: dict[tuple[str, ...], Any], base: Any) -> Any:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        here = (*path, spec.name)
        if _GROUP in spec.metadata:
            if not any(p[: len(here)] == here for p in values):
                continue
            nested = typing.get_args(hints[spec.name]) or (hints[spec.name],)
            inner = next(t for t in nested if dataclasses.is_dataclass(t))
            if here in values:
                start = values[here]
            elif base is not None:
                start = getattr(base, spec.name)
            elif spec.default_factory is not dataclasses.MISSING:
                start = spec.default_factory()
            else:
                start = None
            kwargs[spec.name] = _build(inner, here, values, start)
        elif here in values:
            kwargs[spec.name] = values[here]
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def plain(value: Any) -> Any:
    """A config value as JSON writes it: a rank window as its ``LO:HI`` text, nested configs as dicts."""
    if isinstance(value, RankWindow):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def check_finite_options(config: Any) -> None:
    """Refuse NaN or infinite values in a config dataclass's float options (``--max-score nan``), nested ones too.

    ``wait_lock`` is a duration, not a value that reaches a table: ``inf`` means wait as long as it
    takes, and the lock itself refuses NaN or a negative wait.
    """
    assert dataclasses.is_dataclass(config)
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, RankWindow):
            check_finite_options(value)
        elif spec.name != "wait_lock" and isinstance(value, float) and not math.isfinite(value):
            declared = spec.metadata.get(_OPTION)
            name = (declared.name if declared is not None else None) or spec.name
            raise InputError(f"--{name.replace('_', '-')} {value} is not a finite number")


def optional_type(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); ``X`` -> (X, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return hint, False


# Command-line text of the values that are not plain text or numbers.

def parse_window(text: str) -> RankWindow:
    return RankWindow.parse(text)


def parse_window_or_auto(text: str) -> RankWindow | Literal["auto"]:
    return "auto" if text == "auto" else RankWindow.parse(text)


def parse_number(option_name: str) -> Callable[[Any], float | None]:
    """Text -> float, refusing non-numbers with ``--NAME 'x' is not a number``."""
    def parse(text: Any) -> float | None:
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            raise InputError(f"--{option_name} '{text}' is not a number") from None
    return parse


def parse_list(text: Any) -> list[str]:
    """``"a, b"`` -> ["a", "b"]; a list (from a TOML file) as it is."""
    if isinstance(text, list):
        return [str(part) for part in text]
    return [part.strip() for part in str(text).split(",") if part.strip()]


def show_list(value: list[str] | None) -> str | None:
    return None if value is None else ",".join(value)


def show_text(value: Any) -> str | None:
    """A value's text (``RankWindow(101, 500)`` -> ``101:500``); None stays None."""
    return None if value is None else str(value)


def parse_ks(text: Any) -> tuple[int, ...]:
    """``"20,50"`` -> (20, 50); a TOML list of integers as it is."""
    if isinstance(text, (list, tuple)):
        return tuple(text)
    try:
        ks = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise InputError(f"--k '{text}' must be comma-separated integers, e.g. 20,50") from None
    if not ks or min(ks) < 1:
        raise InputError(f"--k '{text}' must be positive integers")
    return ks


def show_ks(ks: tuple[int, ...]) -> str:
    return ",".join(str(k) for k in ks)


def cutoffs_option() -> Any:
    """The ``--k`` cut-offs of the ranking metrics (``hnmine evaluate``'s and ``hnmine run``'s), declared once."""
    return option((20, 50), name="k", help="Cut-offs, comma-separated.", parse=parse_ks, show=show_ks, cli_type=str)


@dataclass(frozen=True)
class EmbeddingColumns:
    """The columns of a pair of embedding tables (``hnmine evaluate``'s, an external trainer's in
    ``hnmine run``): one name for both tables, or ``USER,ITEM`` (:func:`column_pair`)."""

    id_column: str = option("id", help="Id column of the embedding tables; USER,ITEM when they differ (TorchEasyRec "
                                       "predict output: user_id,adgroup_id).")
    vector_column: str = option("embedding", help="Vector column (list of floats, or comma-separated numbers); "
                                                  "USER,ITEM when they differ (user_tower_emb,item_tower_emb).")

    def validate(self) -> None:
        column_pair(self.id_column, "--id-column")
        column_pair(self.vector_column, "--vector-column")


def column_pair(text: str, option: str) -> tuple[str, str]:
    """An embedding column option: ``"id"`` names the column of both tables, ``"user_id,adgroup_id"`` the
    user table's and the item table's (TorchEasyRec's predict output keeps each tower's own id column)."""
    names = [part.strip() for part in str(text).split(",")]
    if len(names) == 1:
        names *= 2
    if len(names) != 2 or not all(names):
        raise InputError(f"{option} '{text}' must be one column name, or USER,ITEM (e.g. user_id,adgroup_id)")
    return names[0], names[1]
