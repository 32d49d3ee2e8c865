"""``--config FILE`` on every command: the file's options are defaults, the command line wins, and a
wrong key or value is refused in one line naming the file."""

from __future__ import annotations

import json

import pytest
from hnmine.cli.main import app

from hnmine.io.embeddings import read_embeddings
from tests.conftest import SAMPLE, tiny_config

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


def test_nested_options_come_from_the_file_by_their_option_names(cli, tmp_path, sample_embeddings):
    """The selection's and the index's options sit in nested configs; the file names them flat."""
    user, item = sample_embeddings
    (tmp_path / "c.toml").write_text(
        f'[mine]\nusers = "{user}"\nitems = "{item}"\npositives = "{SAMPLE / "train.txt"}"\n'
        f'out = "{tmp_path / "o"}"\nrank-window = "11:60"\nnum_hard = 7\nindex = "flat"\nformats = ["parquet"]\n')
    result = cli("mine", "--config", tmp_path / "c.toml", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert (plan["rank_window"], plan["num_hard"], plan["index"]) == ("11:60", 7, "flat")


def test_run_help_says_why_its_defaults_differ_from_mine(cli):
    mine_help = " ".join(cli("mine", "--help").output.split())
    run_help = " ".join(cli("run", "--help").output.split())
    for run_default, mine_default in (("auto", "101:500"), ("50", "10"), ("uniform", "score")):
        assert f"Default {run_default}, not {mine_default}: " in run_help
    assert "Default 10, not" not in mine_help


# run.json as runs wrote it before the selection options were nested (and before mine's temperature,
# rho, max_score and min_score were part of a run's options): such a run resumes.
FLAT_RUN_JSON = {
    "tool": "hnmine run", "format_version": 1, "test": None, "valid_fraction": 0.1, "init": "warm",
    "hard": True, "refine_epochs": 3, "refine_lr": 0.001, "refine_lr_min": 0.0001, "ks": [20, 50],
    "rank_window": "auto", "num_hard": 50, "window_width": 800, "max_false_negative_rate": 0.007,
    "strategy": "uniform", "edge_weight": "uniform", "absolute_margin": None, "relative_margin": None,
    "margin_reference": "median", "max_item_negatives": None,
    "train": {"positives": "", "out": "", "item_nodes": None, "hard_negatives": None, "init": None,
              "positives_format": "auto", "dim": 64, "history": True, "max_history": None, "history_dropout": 0.5,
              "epochs": 20, "batch_size": 2048, "lr": 0.01, "lr_min": 0.001, "temperature": 0.1, "regime": "mixed",
              "num_sample": 2048, "pop_exponent": 0.75, "logq": True, "num_hard_sample": 50, "hard_offset": None,
              "hard_correction": "offset", "window_embeddings": None, "rank_window": None, "seed": 0,
              "valid": None, "keep_best": True, "patience": None},
}


def test_a_run_saved_in_the_flat_layout_resumes_and_other_options_are_refused(tmp_path):
    from hnmine.errors import InputError
    from hnmine.loop.runner import RunConfig, _prepare

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({**FLAT_RUN_JSON, "positives": str(SAMPLE / "train.txt")}))
    _prepare(RunConfig.of(positives=str(SAMPLE / "train.txt"), out=str(out)), out)
    assert (out / "data" / "train.parquet").exists()
    for changed, option in ((dict(num_hard=20), "num_hard"), (dict(rank_window="11:60"), "rank_window"),
                            (dict(k="10"), "ks")):
        with pytest.raises(InputError, match=rf"holds a run with other options \({option}\)"):
            _prepare(RunConfig.of(positives=str(SAMPLE / "train.txt"), out=str(out), **changed), out)


def test_engine_cache_and_filter_options_sit_in_their_groups():
    from hnmine.loop.config import RunConfig
    from hnmine.mining.config import MineConfig

    config = MineConfig.of(users="u", items="i", positives="p", out="o", engine="ray", workers=3, item_shards=2,
                           save_candidates="c", max_positive_similarity=0.9, rank_window="11:60")
    assert (config.execution.engine, config.execution.workers, config.execution.item_shards) == ("ray", 3, 2)
    assert (config.output.save_candidates, config.selection.max_positive_similarity) == ("c", 0.9)
    changed = config.with_options(out="o2", workers=4)
    assert (changed.output.out, changed.execution.workers, changed.execution.engine) == ("o2", 4, "ray")
    assert str(changed.selection.rank_window) == "11:60" and changed.output.save_candidates == "c"
    run = RunConfig.of(positives="p", out="o", engine="ray", item_shards=3, control=True)
    mined = run.round_mine_config("u", "i", "p", "m", run.first_window(), 7)
    assert (mined.execution.engine, mined.execution.item_shards, mined.execution.threads) == ("ray", 3, None)
    # where mining runs is not what a round does: a resumed run may change it
    assert run.identity() == RunConfig.of(positives="p", out="o", control=True).identity()


def test_select_takes_mines_options_but_the_index_and_engine(cli):
    help_text = cli("select", "--help").output
    assert "--candidates" in help_text and "--max-positive-similarity" in help_text and "--metric" in help_text
    for option in ("--index", "--nprobe", "--engine", "--item-shards", "--workers", "--audit-sample"):
        assert f"{option} " not in help_text
    assert "No such option" in cli("select", "--engine", "ray").output


def _toml(file, section: str, **values) -> str:
    """A ``[section]`` TOML file of ``values`` (paths as strings); returns its path."""
    lines = [f"[{section}]"] + [f"{key} = {json.dumps(str(v) if not isinstance(v, (int, float)) else v)}"
                                for key, v in values.items()]
    file.write_text("\n".join(lines) + "\n")
    return str(file)


def test_blend_takes_its_directories_and_weight_from_the_file(cli, tmp_path, sample_embeddings):
    """The positional A and B too. A model blended with itself: A's half of every user vector is
    w/(1-w) times B's (times the same ratio of the two measured score spreads, the seed being the same)."""
    import numpy as np

    emb = sample_embeddings[0].parent
    config = _toml(tmp_path / "b.toml", "blend", a=emb, b=emb, weight=0.2, out_dir=tmp_path / "x")
    ratios = []
    for extra, out in (([], "x"), (["--weight", "0.75", "--out-dir", tmp_path / "y"], "y")):
        result = cli("blend", "--config", config, *extra)
        assert result.exit_code == 0, result.output
        users = read_embeddings(tmp_path / out / "user.parquet").vectors
        half = users.shape[1] // 2
        ratios.append(np.linalg.norm(users[:, :half], axis=1) / np.linalg.norm(users[:, half:], axis=1))
    assert np.allclose(ratios[1] / ratios[0], (0.75 / 0.25) / (0.2 / 0.8), rtol=1e-4)


def test_evaluate_takes_its_inputs_and_cutoffs_from_the_file(cli, tmp_path, sample_embeddings):
    user, item = sample_embeddings
    config = _toml(tmp_path / "e.toml", "evaluate", users=user, items=item, train=SAMPLE / "train.txt",
                   test=SAMPLE / "test.txt", k="5")
    for extra, key in (([], "recall@5"), (["--k", "7"], "recall@7")):
        result = cli("evaluate", "--config", config, "--json", *extra)
        assert result.exit_code == 0, result.output
        assert list(json.loads(result.output)["metrics"]) == [key, key.replace("recall", "ndcg")]


def test_cutoffs_may_be_a_toml_list(cli, tmp_path, sample_embeddings):
    user, item = sample_embeddings
    (tmp_path / "e.toml").write_text(f"[evaluate]\nusers = {json.dumps(str(user))}\nitems = {json.dumps(str(item))}\n"
                                     f"train = {json.dumps(str(SAMPLE / 'train.txt'))}\n"
                                     f"test = {json.dumps(str(SAMPLE / 'test.txt'))}\nk = [10, 20]\n")
    result = cli("evaluate", "--config", tmp_path / "e.toml", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.output)["metrics"]) == ["ndcg@10", "ndcg@20", "recall@10", "recall@20"]


def test_export_takes_its_options_from_the_file(cli, tmp_path):
    from hnmine.training.trainer import train

    train(tiny_config(tmp_path))
    config = _toml(tmp_path / "x.toml", "export", model=tmp_path / "model.pt", out_dir=tmp_path / "e1")
    assert cli("export", "--config", config).exit_code == 0
    assert cli("export", "--config", config, "--out-dir", tmp_path / "e2").exit_code == 0
    assert read_embeddings(tmp_path / "e1" / "item.parquet").dim == read_embeddings(tmp_path / "e2" / "item.parquet").dim == 8


def test_report_takes_its_directory_and_options_from_the_file(cli, tmp_path, sample_embeddings):
    user, item = sample_embeddings
    mined = tmp_path / "mined"
    assert cli("mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt", "--rank-window", "1:20",
               "--num-hard", "2", "--formats", "parquet", "--out", mined, "--quiet").exit_code == 0
    config = _toml(tmp_path / "r.toml", "report", path=mined, format="json", out=tmp_path / "r1.json")
    assert cli("report", "--config", config).exit_code == 0
    assert cli("report", "--config", config, "--out", tmp_path / "r2.json").exit_code == 0
    first, second = (json.loads((tmp_path / name).read_text()) for name in ("r1.json", "r2.json"))
    assert first == second and first["users"]["complete"] > 0
