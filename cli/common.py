"""What every command shares: the typer app, the one-line error, TOML configs and progress on the
console. The options themselves are declared in the library's config classes (:mod:`hnmine.cli.options`)."""

from __future__ import annotations

import logging
import sys
import time
import types
import typing
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from hnmine.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same reader, before it joined the standard library
    import tomli as tomllib

app = typer.Typer(
    name="hnmine",
    help="Offline hard-negative mining for two-tower retrieval models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

def fail(message: str | InputError) -> NoReturn:
    """One line on stderr, exit code 2 (an error's own code: 75 for a held lock): the contract for bad input."""
    typer.echo(f"hnmine: error: {message}", err=True)
    raise typer.Exit(code=message.exit_code if isinstance(message, InputError) else 2)


def load_config(path: Path | None, section: str) -> dict[str, Any]:
    """Options from a TOML file: keys at top level or under ``[section]``; '-' and '_' both accepted."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"{path}: config file not found")
    except IsADirectoryError:
        fail(f"{path}: is a directory, not a TOML config file")
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text (byte {exc.start}); a TOML config file must be UTF-8")
    except OSError as exc:
        fail(f"{path}: cannot read the config file ({exc.strerror})")
    except tomllib.TOMLDecodeError as exc:
        fail(f"{path}: invalid TOML ({exc})")
    except RecursionError:
        fail(f"{path}: invalid TOML (nested too deeply)")
    table = data.get(section, data)
    if not isinstance(table, dict):
        fail(f"{path}: [{section}] must be a table")
    return {key.replace("-", "_"): value for key, value in table.items() if not isinstance(value, dict)}


def _config_value(path: Path | None, key: str, value: Any, hint: Any, is_list: bool) -> Any:
    """A config file's value for option ``key``, checked against the option's type (``hint``);
    ``is_list``: given as comma-separated text on the command line, so a file may give a list of strings."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and args else hint
    name = key.replace("_", "-")
    if is_list and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if is_list and isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value  # --k = [20, 50]
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if kind is Path and isinstance(value, str):
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                Path: "a path (a string)"}.get(kind, str(kind))
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:56] + " ..."
    fail(f"{path}: option {name} must be {expected}, not {type(value).__name__} {shown}")


def _config_defaults(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """``--config FILE``: the file's options become the command's defaults, so the command line wins.

    Eager, so it runs before the other options are resolved; it fills click's ``default_map``, which
    they are resolved against. Each value is checked against the option's type first, and a key that
    is not an option of the command is refused, naming the file.
    """
    if value is None or ctx.resilient_parsing:
        return value
    command = ctx.command
    config = load_config(value, command.name or "")
    names = {p.name for p in command.params if p.name and p.name != "config"} - COMMAND_LINE_ONLY
    unknown = sorted(set(config) - names)
    if unknown:
        fail(f"{value}: unknown option(s) {', '.join(unknown)} for hnmine {command.name}")
    hints = typing.get_type_hints(command.callback) if command.callback is not None else {}
    from .options import list_options

    lists = list_options(command.callback)
    defaults = {}
    for key, raw in config.items():
        checked = _config_value(value, key, raw, hints[key], key in lists) if key in hints else raw
        defaults[key] = ",".join(map(str, checked)) if key in lists and isinstance(checked, list) else checked
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


# What a run prints or whether it runs at all: given on the command line, never from a file.
COMMAND_LINE_ONLY = frozenset({"dry_run", "json_summary", "quiet"})

# declared once: every command takes it
# what a run prints: every command that shows progress takes it
Quiet = Annotated[bool, typer.Option(help="No progress output.")]

ConfigFile = Annotated[Optional[Path], typer.Option(
    "--config", is_eager=True, callback=_config_defaults,
    help="TOML file with any of this command's options (keys as the option names, under [<command>] or at the "
         "top level); the command line wins.")]


def log_line(message: str, quiet: bool = False) -> None:
    """A timestamped line on stderr (what cron logs and CI see instead of a bar)."""
    if not quiet:
        typer.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


class _EchoHandler(logging.Handler):
    """Prints the library's log records as :func:`log_line` does, to the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        log_line(self.format(record))


def show_library_log(quiet: bool) -> None:
    """Route the ``hnmine`` logger's INFO records to stderr (none with ``--quiet``); one handler only."""
    logger = logging.getLogger("hnmine")
    for handler in [h for h in logger.handlers if isinstance(h, _EchoHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.addHandler(_EchoHandler())
    logger.propagate = False


class ConsoleProgress:
    """The CLI's one progress display (:class:`hnmine.progress.Progress`): a rich bar on a terminal;
    otherwise (cron, CI, a log file) a line per chunk of users mined, and during an epoch a line every
    ``interval`` seconds with the steps done, the rate and the time left.

    Also routes the library's log records to stderr (:func:`show_library_log`).
    """

    def __init__(self, quiet: bool = False, interval: float = 30.0) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.interval = interval
        self.bar: Any = None
        self.label = ""
        self.total = self.done = 0
        self.started = self.last_line = time.perf_counter()
        show_library_log(quiet)

    def start(self, total: int, label: str) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = self.last_line = time.perf_counter()
        if self.quiet or not self.tty:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            transient=True)
        self.task = self.bar.add_task(label, total=total)
        self.bar.start()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
        elif self.quiet:
            return
        elif self.label == "mining users":  # a line per chunk of users
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            log_line(f"mined {self.done}/{self.total} users ({rate:,.0f} users/s)")
        elif (now := time.perf_counter()) - self.last_line >= self.interval and self.done < self.total:
            self.last_line = now
            rate = self.done / max(now - self.started, 1e-9)
            left = (self.total - self.done) / max(rate, 1e-9)
            log_line(f"{self.label}: step {self.done:,}/{self.total:,} ({rate:,.1f} steps/s, about {left:,.0f} s left)")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

