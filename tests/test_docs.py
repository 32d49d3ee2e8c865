"""The docs cover the command line: every command and option is named in docs/*.md, and every
``hnmine ...`` line of a code block in README.md or docs/*.md (and of a command's help epilog)
parses against today's commands, so a renamed or removed option fails here.

Examples are parsed, not executed (running them all would take hours): ``make_context`` checks
option names, values, types and arguments without calling the command. An example that elides
the options it is not about (``hnmine mine ... --num-hard 4``) is checked for the options it does
name: each must exist and take its value, and no more arguments than the command has; a shell
variable (``--weight $w``) is elided with its option. Shell redirections and pipes end a command.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from hnmine.cli.main import app

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, NoSuchOption, UsageError
except ImportError:
    from click import ClickException, NoSuchOption, UsageError

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted((ROOT / "docs").glob("*.md"))
DOCS_TEXT = "\n".join(path.read_text() for path in DOC_FILES)
COMMANDS: dict[str, Any] = dict(sorted(typer.main.get_command(app).commands.items()))  # type: ignore[attr-defined]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", "<"}


def long_options() -> list[tuple[str, str]]:
    """(command, option) for every long option string of every command, negative forms included."""
    out = []
    for name, command in COMMANDS.items():
        for param in command.params:
            if param.param_type_name == "option":
                out += [(name, opt) for opt in [*param.opts, *param.secondary_opts] if opt.startswith("--")]
    return out


def mentioned(word: str) -> bool:
    """``word`` appears in docs/*.md as a whole token (``--out`` does not count for ``--out-dir``)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", DOCS_TEXT) is not None


def command_lines(text: str) -> list[str]:
    """Every ``hnmine ...`` command of the fenced code blocks in ``text``, continuation lines joined."""
    lines = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("hnmine "):
                lines.append(line)
    return lines


def examples() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *DOC_FILES]:
        found += [(path.relative_to(ROOT).as_posix(), line) for line in command_lines(path.read_text())]
    for name, command in COMMANDS.items():
        if command.epilog:
            found += [(f"hnmine {name} --help", line.strip()) for line in command.epilog.splitlines()
                      if line.strip().startswith("hnmine ")]
    return found


def test_every_command_has_examples_to_check() -> None:
    # guards the parametrisations below against silently finding nothing
    assert {"mine", "svd", "blend", "train", "export", "evaluate", "run"} <= set(COMMANDS)
    assert len(examples()) > 20


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_is_documented(name: str) -> None:
    assert f"hnmine {name}" in DOCS_TEXT, f"`hnmine {name}` is not described in docs/*.md"


@pytest.mark.parametrize(("name", "option"), long_options(), ids=lambda value: value)
def test_option_is_documented(name: str, option: str) -> None:
    assert mentioned(option), f"`hnmine {name} {option}` is not described in docs/*.md"


def shell_words(line: str) -> list[str]:
    """The words of the first command on ``line``: comments, redirections and what follows a pipe go."""
    words = []
    for word in shlex.split(line, comments=True):
        if word in SHELL_OPERATORS or word.lstrip("0123456789").startswith(">"):
            break
        words.append(word)
    return words


@pytest.mark.parametrize(("source", "line"), examples())
def test_example_parses(source: str, line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    words = shell_words(line)
    assert words[0] == "hnmine" and len(words) > 1, f"{source}: no command in {line!r}"
    monkeypatch.chdir(tmp_path)  # --config is read while parsing: an empty file stands for the example's
    for option, value in itertools.pairwise(words):
        if option == "--config" and not value.startswith("$"):
            Path(value).parent.mkdir(parents=True, exist_ok=True)
            Path(value).write_text("")
    command = COMMANDS.get(words[1])
    assert command is not None, f"{source}: no command `hnmine {words[1]}` in {line!r}"
    try:
        if any(word == "..." or word.startswith("$") for word in words):
            parse_given(command, words[1], elide(command, words[2:]))
        else:
            command.make_context(words[1], words[2:])
    except ClickException as exc:
        pytest.fail(f"{source}: {line!r} does not parse: {exc.format_message()}")


def elide(command: Any, words: list[str]) -> list[str]:
    """``words`` without ``...`` and shell variables (with the option a variable is the value of)."""
    takes_value = {opt for param in command.params if param.param_type_name == "option"
                   and not getattr(param, "is_flag", False) for opt in param.opts}
    kept: list[str] = []
    for word in words:
        if word == "..." or word.startswith("$"):
            if kept and kept[-1] in takes_value:
                kept.pop()
            continue
        kept.append(word)
    return kept


def parse_given(command: Any, name: str, args: list[str]) -> None:
    """Parse the options an elided example names (required ones it leaves out are not missing)."""
    ctx = typer.Context(command, info_name=name)
    values, extra, _ = command.make_parser(ctx).parse_args(args)
    for param in command.params:
        if param.param_type_name == "option" and values.get(param.name) is not None:
            param.process_value(ctx, values[param.name])  # converts the value: a bad one raises
    arguments = [param for param in command.params if param.param_type_name == "argument"]
    if len(extra) > len(arguments):
        raise UsageError(f"unexpected extra arguments {extra[len(arguments):]}")


def test_a_wrong_option_fails_to_parse() -> None:
    # the check above can fail: an option that does not exist is refused without running anything
    with pytest.raises(NoSuchOption):
        COMMANDS["mine"].make_context("mine", ["--users", "u.parquet", "--no-such-option", "1"])
    with pytest.raises(NoSuchOption):
        parse_given(COMMANDS["mine"], "mine", ["--num-hard", "4", "--no-such-option"])
    with pytest.raises(typer.BadParameter):
        parse_given(COMMANDS["mine"], "mine", ["--num-hard", "four"])
    assert shell_words("hnmine mine --config a.toml --json > run.json  # note") == [
        "hnmine", "mine", "--config", "a.toml", "--json"]
    assert elide(COMMANDS["blend"], ["a/", "b/", "--weight", "$w", "--out-dir", "b$w/"]) == [
        "a/", "b/", "--out-dir", "b$w/"]
    assert command_lines("```bash\nhnmine mine --users u \\\n  --items i   # note\n```\n") == [
        "hnmine mine --users u    --items i   # note"]


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = FENCE.sub("", path.read_text())
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, re.M)}


def links() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *DOC_FILES]:
        text = FENCE.sub("", path.read_text())
        found += [(path.relative_to(ROOT).as_posix(), target) for target in LINK.findall(text)
                  if "://" not in target]
    return found


@pytest.mark.parametrize(("source", "target"), links())
def test_link_resolves(source: str, target: str) -> None:
    file, _, anchor = target.partition("#")
    path = (ROOT / source).parent / file if file else ROOT / source
    assert path.exists(), f"{source}: {target} does not exist"
    if anchor and path.suffix == ".md":
        assert anchor in anchors(path), f"{source}: no heading #{anchor} in {file or source}"


@pytest.mark.parametrize("image", sorted(p.name for p in (ROOT / "docs" / "img").glob("*")))
def test_image_is_used(image: str) -> None:
    assert f"img/{image}" in DOCS_TEXT, f"docs/img/{image} is shown on no page: delete it"
