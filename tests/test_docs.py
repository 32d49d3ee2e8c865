"""The docs cover the command line and their examples work.

Every command and option is named in docs/*.md, and every ``hnmine ...`` line of a code block in
README.md or docs/*.md (and of a command's help epilog) parses against today's commands, so a
renamed or removed option fails here. ``make_context`` checks option names, values, types and
arguments without calling the command. An example that elides the options it is not about
(``hnmine mine ... --num-hard 4``) is checked for the options it does name: each must exist and take
its value, and no more arguments than the command has; a shell variable (``--weight $w``) is elided
with its option. Shell redirections and pipes end a command.

Examples are also executed, each in a fresh copy of a scratch directory (``docs_workspace``) that
holds what they name: sample_data's ``train.txt`` and ``test.txt`` (``valid.txt``: a copy of
``test.txt``), ``hnmine svd`` embeddings of ``train.txt`` in ``emb/``, ``sample_data/``, ``data/``
(train.txt, item_features.csv), ``clicks.parquet`` (train.txt with ``uid``/``iid`` columns) and a
``prod.toml`` mining ``train.txt`` into ``mined/``:

- every ``python`` block runs (``exec``, in-process); what it prints must match its ``#>`` lines
  (``...`` matches any text), and each block shows some. A block that cannot run there is marked
  ``<!-- not run: REASON -->`` on the line above its fence (none is today).
- a shell block marked ``<!-- run -->`` runs command by command through the CLI in-process (a
  subprocess per command would add seconds of start-up each): every command must exit 0 and leave
  its ``--out``/``--out-dir``/``> file``, or, when the docs follow it with ``# hnmine: error: MSG``,
  exit non-zero with that message. ``<!-- run: slow -->`` blocks (a 1024-dimension SVD, training
  20 epochs: minutes on sample_data) run only with ``-m slow``.
- a block marked ``<!-- file: NAME -->`` (mine.md's TOML config) is written to NAME in the scratch
  directory of every example of its page.

The other shell blocks are parse-checked only, which is the bound chosen for them: they run the
loop (``hnmine run``: minutes to hours), train on or read the full data sets in
``../shared/datasets`` (docs/results.md: hours), call ``make``, the benchmarks or scripts, or are
shell programs (loops over ``$w``, ``case $?``), elided commands (``hnmine mine ...``) and
transcripts of a machine's paths (``/data/mined``); ``tests/test_mine_cli.py``,
``tests/test_train.py`` and the others run those commands' behaviour on sample_data.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from hnmine.cli.main import app
from typer.testing import CliRunner

from hnmine.io.positives import read_positives
from tests.conftest import SAMPLE

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


# ------------------------------------------------------------------------------------ running examples

BLOCK = re.compile(r"^(?:<!-- (?P<mark>[^\n]*?) -->\n)?```(?P<lang>[^\n]*)\n(?P<body>.*?)^```", re.S | re.M)
SHELL_LANGS = {"bash", "sh", ""}
PROD_TOML = """[mine]
users = "emb/user.parquet"
items = "emb/item.parquet"
positives = "train.txt"
out = "mined/"
overwrite = true
"""


@dataclass(frozen=True)
class Block:
    source: str  # README.md, docs/mine.md, ...
    line: int  # of the opening fence
    lang: str
    body: str
    mark: str  # the <!-- ... --> comment on the line above the fence, "" if none

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def blocks(text: str, source: str) -> list[Block]:
    found = []
    for match in BLOCK.finditer(text):
        fence = match.start("lang") - 3
        found.append(Block(source, text.count("\n", 0, fence) + 1, match["lang"].strip(), match["body"],
                           (match["mark"] or "").strip()))
    return found


def doc_blocks() -> list[Block]:
    found = []
    for path in [ROOT / "README.md", *DOC_FILES]:
        found += blocks(path.read_text(), path.relative_to(ROOT).as_posix())
    return found


def python_blocks() -> list[Block]:
    return [b for b in doc_blocks() if b.lang == "python" and not b.mark.startswith("not run:")]


def shell_blocks(slow: bool) -> list[Block]:
    return [b for b in doc_blocks() if b.mark == ("run: slow" if slow else "run")]


def shown_output(body: str) -> list[str]:
    """The ``#>`` lines of a Python example: what it prints."""
    return [line.strip()[3:] for line in body.splitlines() if line.strip().startswith("#>")]


def printed_as_shown(printed: str, shown: list[str]) -> bool:
    lines = printed.splitlines()
    return len(lines) == len(shown) and all(
        re.fullmatch(re.escape(want).replace(r"\.\.\.", ".*"), got.rstrip()) for want, got in zip(shown, lines))


@dataclass
class Command:
    args: list[str]  # after `hnmine`
    stdout_to: str | None = None
    error: str | None = None  # the `# hnmine: error: ...` line that follows it in the docs

    def __str__(self) -> str:
        return shlex.join(["hnmine", *self.args])


def shell_commands(body: str) -> list[Command]:
    """The commands of a shell block; anything but ``hnmine`` commands (with ``> file``) is refused."""
    commands: list[Command] = []
    for line in body.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        if line.startswith("#"):
            error = re.fullmatch(r"#\s*hnmine: error: (.+)", line)
            if error and commands:
                commands[-1].error = error[1].strip()
            continue
        words = shlex.split(line, comments=True)
        if not words:
            continue
        command = Command(words[1:])
        if ">" in words and words.index(">") == len(words) - 2:
            command.args, command.stdout_to = words[1:-2], words[-1]
        odd = [w for w in command.args if w in SHELL_OPERATORS or w == "..." or "$" in w or ">" in w]
        if words[0] != "hnmine" or odd:
            raise ValueError(f"{line!r}: a block marked to run may hold only complete hnmine commands")
        commands.append(command)
    return commands


def written(command: Command) -> list[str]:
    """The paths a successful command must leave behind."""
    args = command.args
    paths = [args[i + 1] for i, word in enumerate(args[:-1]) if word in ("--out", "--out-dir")]
    if "--dry-run" in args:
        return []
    if args[0] == "report" and "--out" not in args and "json" not in args:
        paths.append(f"{args[1]}/report.html")
    return paths + ([command.stdout_to] if command.stdout_to else [])


def run_shell(block: Block) -> None:
    runner = CliRunner()
    for command in shell_commands(block.body):
        result = runner.invoke(app, command.args, catch_exceptions=False)
        if command.error is None:
            assert result.exit_code == 0, f"{block.id}: `{command}` exited {result.exit_code}: {result.output}"
        else:
            pattern = re.escape(f"hnmine: error: {command.error}").replace(r"\.\.\.", ".*")
            assert result.exit_code != 0 and re.search(pattern, result.stderr), (
                f"{block.id}: `{command}` should fail with {command.error!r}; exit {result.exit_code}: {result.output}")
            continue
        if command.stdout_to:
            Path(command.stdout_to).write_text(result.stdout)
            if command.stdout_to.endswith(".json"):
                json.loads(result.stdout)
        for path in written(command):
            assert Path(path).exists(), f"{block.id}: `{command}` left no {path}"


def run_python(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(block.body, block.id, "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    shown = shown_output(block.body)
    assert printed_as_shown(printed, shown), f"{block.id} printed:\n{printed}but shows:\n" + "\n".join(shown)


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory: pytest.TempPathFactory, sample_embeddings: tuple[Path, Path]) -> Path:
    """What the examples name, made from sample_data (see the module's docstring)."""
    base = tmp_path_factory.mktemp("docs_workspace")
    for name in ("train.txt", "test.txt"):
        shutil.copy(SAMPLE / name, base / name)
    shutil.copy(SAMPLE / "test.txt", base / "valid.txt")
    shutil.copytree(sample_embeddings[0].parent, base / "emb")
    (base / "sample_data").mkdir()
    for name in ("train.txt", "test.txt", "item_features.csv"):
        shutil.copy(SAMPLE / name, base / "sample_data" / name)
    (base / "data").mkdir()
    for name in ("train.txt", "item_features.csv"):
        shutil.copy(SAMPLE / name, base / "data" / name)
    read_positives(SAMPLE / "train.txt").table.rename({"user_id": "uid", "item_id": "iid"}).write_parquet(
        base / "clicks.parquet")
    (base / "prod.toml").write_text(PROD_TOML)
    return base


@pytest.fixture()
def workdir(docs_workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh copy of the workspace as the working directory; returns a function that adds a page's files."""
    work = tmp_path / "work"
    shutil.copytree(docs_workspace, work)
    monkeypatch.chdir(work)

    def add_files(source: str) -> None:
        for block in doc_blocks():
            if block.source == source and block.mark.startswith("file:"):
                (work / block.mark.removeprefix("file:").strip()).write_text(block.body)

    return add_files


def block_ids(found: list[Block]) -> list[str]:
    return [block.id for block in found]


@pytest.mark.parametrize("block", python_blocks(), ids=block_ids(python_blocks()))
def test_python_example_runs(block: Block, workdir, capsys: pytest.CaptureFixture[str]) -> None:
    workdir(block.source)
    run_python(block, capsys)


@pytest.mark.parametrize("block", shell_blocks(slow=False), ids=block_ids(shell_blocks(slow=False)))
def test_shell_example_runs(block: Block, workdir) -> None:
    workdir(block.source)
    run_shell(block)


@pytest.mark.slow
@pytest.mark.parametrize("block", shell_blocks(slow=True), ids=block_ids(shell_blocks(slow=True)))
def test_slow_shell_example_runs(block: Block, workdir) -> None:
    workdir(block.source)
    run_shell(block)


def test_examples_are_marked_to_run_or_say_why_not() -> None:
    for block in doc_blocks():
        kind, _, detail = block.mark.partition(":")
        assert block.mark in ("", "run", "run: slow") or (kind in ("not run", "file") and detail.strip()), (
            f"{block.id}: unknown mark <!-- {block.mark} -->")
        if block.mark.startswith("run"):
            assert block.lang in SHELL_LANGS, f"{block.id}: <!-- run --> marks shell blocks (python ones always run)"
            shell_commands(block.body)  # only what run_shell can run
        if block.mark.startswith("not run"):
            assert block.lang == "python", f"{block.id}: only python blocks run unmarked"
    for block in python_blocks():
        assert shown_output(block.body), f"{block.id}: show what the example prints with #> lines"
    # a mark not directly above a fence, or spelt otherwise (<!--run-->), would be ignored
    comments = sum(len(re.findall(r"^\s*<!--", path.read_text(), re.M)) for path in [ROOT / "README.md", *DOC_FILES])
    assert comments == sum(1 for block in doc_blocks() if block.mark), "an <!-- ... --> that marks no code block"
    # guards the parametrisations above against silently finding less
    assert len(python_blocks()) >= 3
    assert len(shell_blocks(slow=False)) >= 7 and len(shell_blocks(slow=True)) >= 2
    assert {b.source for b in shell_blocks(slow=False)} >= {"README.md", "docs/mine.md", "docs/report.md"}


def test_a_wrong_example_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    # the runners above can fail: on a wrong output, a failing command, an error that does not come
    monkeypatch.chdir(tmp_path)
    assert printed_as_shown("2986 29860 0.51\n", ["2986 29860 ..."])
    assert not printed_as_shown("2986 29860\n", ["2986 29861"])
    assert not printed_as_shown("2986\nextra\n", ["2986"])
    with pytest.raises(AssertionError, match="printed"):
        run_python(Block("x.md", 1, "python", "print(1 + 1)\n#> 3\n", ""), capsys)
    with pytest.raises(ZeroDivisionError):
        run_python(Block("x.md", 1, "python", "1 / 0\n", ""), capsys)
    missing = "hnmine mine --users nope.parquet --items nope.parquet --positives p.txt --out o/\n"
    with pytest.raises(AssertionError, match="exited 2"):
        run_shell(Block("x.md", 1, "bash", missing, "run"))
    run_shell(Block("x.md", 1, "bash", missing + "# hnmine: error: nope.parquet: file not found\n", "run"))
    with pytest.raises(AssertionError, match="should fail"):
        run_shell(Block("x.md", 1, "bash", missing + "# hnmine: error: something else\n", "run"))
    with pytest.raises(ValueError, match="only complete hnmine commands"):
        shell_commands("hnmine mine ... --num-hard 4\n")
    with pytest.raises(ValueError, match="only complete hnmine commands"):
        shell_commands("make demo\n")
    assert [(str(c), c.stdout_to, c.error) for c in shell_commands(
        "hnmine report mined/ --format json > r.json  # note\nhnmine mine --config m.toml \\\n  --no-overwrite\n"
        "# hnmine: error: mined: exists\n")] == [("hnmine report mined/ --format json", "r.json", None),
                                                  ("hnmine mine --config m.toml --no-overwrite", None, "mined: exists")]
    assert [b.mark for b in blocks("<!-- run -->\n```bash\nx\n```\n\n```python\ny\n```\n", "x.md")] == ["run", ""]
