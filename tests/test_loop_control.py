"""``hnmine run --control``: mining's gain stated over a --no-hard control trained alongside, never only
over round 0; the summaries rewritten after every round; progress lines during an epoch off a terminal."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from hnmine.cli.common import ConsoleProgress

from hnmine.errors import InputError
from hnmine.loop.runner import NO_CONTROL, RunConfig, metrics_table, run, summary_line
from hnmine.report import build_report, render_html
from hnmine.training.trainer import train
from tests.conftest import TEST, TRAIN, tiny_config


def test_control_is_the_no_hard_run_and_gains_are_stated_over_it(tmp_path):
    base = RunConfig.of(positives=str(TRAIN), out=str(tmp_path / "mined"), iterations=2, rank_window="11:60",
                     num_hard=4, train=tiny_config(tmp_path))  # validation only: what gains are stated on
    results = run(replace(base, control=True))
    out = tmp_path / "mined"
    assert (out / "control" / "round_01" / "model.pt").exists()
    assert (out / "control" / "round_01" / "embeddings" / "item.parquet").exists()
    assert results[0].control == results[0].metrics  # the same round 0
    # the control is what `run --no-hard` trains: same schedule, seeds and tables, round by round
    plain = run(replace(base, out=str(tmp_path / "plain"), hard=False))
    assert [r.control for r in results] == [r.metrics for r in plain]
    best = json.loads((out / "best_round.json").read_text())
    control_values = [r.control["valid"]["recall@20"] for r in results if r.control]
    assert best["control"]["value"] == max(control_values)
    assert best["gain_over_control"] == pytest.approx(best["value"] / max(control_values) - 1)
    assert best["control"]["same_round_value"] == results[best["round"]].control["valid"]["recall@20"]
    assert [m["control"] for m in json.loads((out / "metrics.json").read_text())] == [r.control for r in results]
    line = summary_line(best)
    assert "over the --no-hard control's best (round" in line and "over round 0" in line
    assert "gain vs control %" in " ".join(metrics_table(results).columns)
    assert "gain over the --no-hard control" in render_html(build_report(out))
    # a run without a control says so, wherever it states a gain
    alone = json.loads((tmp_path / "plain" / "best_round.json").read_text())
    assert alone["gain_over_control"] is None and alone["control"] is None and alone["control_note"] == NO_CONTROL
    assert "no --no-hard control was run" in summary_line(alone)
    assert "no control run" in render_html(build_report(tmp_path / "plain"))
    with pytest.raises(InputError, match="--control"):
        run(replace(base, out=str(tmp_path / "x"), hard=False, control=True))


def test_summaries_are_written_after_every_round(tmp_path, monkeypatch):
    """A run stopped inside round 1 has round 0's metrics.json, best_round.json and plot already."""
    import hnmine.loop.trainers as trainers

    out = tmp_path / "run"
    seen = []

    def stop_in_round_1(config, progress=None):
        if "round_01" in config.out:
            seen.append(json.loads((out / "metrics.json").read_text()))
            raise KeyboardInterrupt
        return train(config, progress)

    monkeypatch.setattr(trainers, "train", stop_in_round_1)
    config = RunConfig.of(positives=str(TRAIN), out=str(out), iterations=3, test=str(TEST), rank_window="11:60",
                       num_hard=4, train=tiny_config(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run(config)
    assert [m["round"] for m in seen[0]] == [0]
    assert json.loads((out / "best_round.json").read_text())["round"] == 0
    assert (out / "metrics.png").stat().st_size > 1000


def test_epoch_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    progress = ConsoleProgress(interval=0.0)
    assert not progress.tty  # pytest captures stderr
    try:
        train(tiny_config(tmp_path, batch_size=256), progress)
    finally:
        logging.getLogger("hnmine").handlers.clear()
    lines = [line for line in capsys.readouterr().err.splitlines() if ": step " in line]
    assert lines and all("epoch 1/1: step " in line and "steps/s" in line and "s left" in line for line in lines)
    quiet = ConsoleProgress(quiet=True, interval=0.0)
    quiet.start(10, "epoch 1/1")
    quiet.advance(5)
    assert ": step " not in capsys.readouterr().err
