"""The one option layer: a command's typer options built from its config dataclass.

Each option is declared once, as a field of a config class (:func:`hnmine.options.option`: help,
name, how its text is parsed); :func:`config_command` turns every option of the class (nested groups
included) into a typer parameter of the command and hands the command the built config. A TOML
``--config`` file fills the same parameters (:mod:`hnmine.cli.common`), so the file's keys are the
options' names too. Where a command nests another's options with other defaults
(``hnmine run``'s selection), the declaration says why and the help shows it.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from hnmine.errors import InputError
from hnmine.options import OptionField, build_config, option_fields, optional_type

from .common import fail

__all__ = ["config_command", "list_options"]

OPTIONS_ATTR = "__hnmine_options__"
_MISSING: Any = dataclasses.MISSING


def _shown(spec: OptionField, value: Any) -> Any:
    """A value as the command line shows and takes it."""
    if spec.option.show is not None:
        return spec.option.show(value)
    return value


def _cli_type(spec: OptionField) -> Any:
    if spec.option.cli_type is not None:
        return spec.option.cli_type
    if spec.option.path:
        return Path
    base, _ = optional_type(spec.hint)
    if typing.get_origin(base) is Literal:
        return str
    return base


def _parameter(spec: OptionField) -> inspect.Parameter:
    required = spec.default is _MISSING
    kind = _cli_type(spec)
    help_text = spec.option.help
    if spec.context:  # "External trainer: id column of ..."
        help_text = spec.context + help_text[:1].lower() + help_text[1:]
    if spec.why is not None:
        help_text += f" Default {_shown(spec, spec.default)}, not {_shown(spec, spec.own_default)}: {spec.why}"
    if spec.option.argument:  # positional; click refuses it missing (a --config file may give it)
        default = inspect.Parameter.empty if required else _shown(spec, spec.default)
        positional = Annotated[kind, typer.Argument(help=help_text)]  # type: ignore[valid-type]
        return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=positional)
    default = None if required else _shown(spec, spec.default)
    if default is None and kind is not bool:
        kind = Optional[kind]
    if required:
        help_text += " Required (here or in --config)."
    decls = (f"--{spec.name.replace('_', '-')}",) if spec.option.switch else ()
    annotation = Annotated[kind, typer.Option(*decls, help=help_text)]  # type: ignore[valid-type]
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def config_command(cls: type, *, exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator: the command takes every option of config class ``cls`` and gets the built config.

    The decorated function's first parameter receives the config; its other parameters (what a run
    prints, ``--config``) stay its own options. A required option left out is refused in one line,
    as is a value its declaration cannot parse or any :class:`InputError` the command raises.
    """
    specs = {spec.name: spec for spec in option_fields(cls, exclude)}

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(func, eval_str=True).parameters.values())[1:]
        params = [_parameter(spec) for spec in specs.values()]
        clash = {p.name for p in own} & set(specs)
        assert not clash, f"{func.__name__}: options declared twice: {clash}"

        def command(**kwargs: Any) -> None:
            values = {name: kwargs.pop(name) for name in specs}
            for name, spec in specs.items():
                if spec.default is _MISSING and not spec.option.argument and values[name] in (None, ""):
                    fail(f"missing option --{name.replace('_', '-')}")
            values = {name: str(value) if isinstance(value, Path) else value for name, value in values.items()}
            # an option left at its default keeps the config's own value (not its command-line text)
            given = {name: value for name, value in values.items()
                     if specs[name].default is _MISSING or value != _shown(specs[name], specs[name].default)}
            try:
                func(build_config(cls, given), **kwargs)
            except InputError as exc:  # bad input, from the options or the library: one line
                fail(exc)

        command.__name__ = func.__name__
        command.__qualname__ = func.__qualname__
        command.__doc__ = func.__doc__
        command.__module__ = func.__module__
        signature = inspect.Signature([*params, *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own)])
        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        setattr(command, OPTIONS_ATTR, specs)
        return command

    return decorate


def list_options(callback: Callable[..., Any] | None) -> frozenset[str]:
    """The options of a command built by :func:`config_command` that a TOML file may give as a list."""
    from hnmine.options import parse_ks, parse_list

    specs: dict[str, OptionField] = getattr(callback, OPTIONS_ATTR, {})
    return frozenset(name for name, spec in specs.items() if spec.option.parse in (parse_list, parse_ks))

