"""``--config FILE`` on every command: the file's options are defaults, the command line wins, and a
wrong key or value is refused in one line naming the file."""

from __future__ import annotations

import pytest
from hnmine.cli.main import app

from hnmine.io.embeddings import read_embeddings
from tests.conftest import SAMPLE

COMMANDS = sorted(app.registered_commands, key=lambda c: c.callback.__name__)


@pytest.mark.parametrize("name", [c.callback.__name__ for c in COMMANDS])
def test_every_command_takes_a_config_file(cli, name):
    assert "--config" in cli(name, "--help").output


def test_config_fills_options_and_the_command_line_wins(cli, tmp_path):
    config = tmp_path / "svd.toml"
    config.write_text(f'[svd]\npositives = "{SAMPLE / "train.txt"}"\ndim = 8\nout-dir = "{tmp_path / "a"}"\n')
    assert cli("svd", "--config", config).exit_code == 0
    assert read_embeddings(tmp_path / "a" / "item.parquet").dim == 8
    assert cli("svd", "--config", config, "--dim", "4", "--out-dir", tmp_path / "b").exit_code == 0
    assert read_embeddings(tmp_path / "b" / "item.parquet").dim == 4


@pytest.mark.parametrize(("command", "content", "expected"), [
    ("train", "[train]\nepochs = \"two\"\n", "c.toml: option epochs must be an integer, not str 'two'"),
    ("run", "[run]\nnum_hard = 5\nrank_windw = \"1:9\"\n", "c.toml: unknown option(s) rank_windw for hnmine run"),
    ("evaluate", "[evaluate]\nk = 20\nusers = 3\n", "c.toml: option users must be a path (a string), not int 3"),
    ("report", "[report]\nformat = true\n", "c.toml: option format must be a string, not bool True"),
])
def test_bad_config_is_refused_in_one_line(cli, tmp_path, command, content, expected):
    (tmp_path / "c.toml").write_text(content)
    result = cli(command, *(["x"] if command == "report" else []), "--config", tmp_path / "c.toml")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hnmine: error: ") and expected in lines[0], result.output


def test_what_a_run_prints_is_command_line_only(cli, tmp_path):
    (tmp_path / "c.toml").write_text("[mine]\nquiet = true\n")
    result = cli("mine", "--config", tmp_path / "c.toml")
    assert result.exit_code == 2 and "c.toml: unknown option(s) quiet for hnmine mine" in result.output
