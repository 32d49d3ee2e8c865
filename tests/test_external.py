"""``hnmine run`` with an external trainer, and embeddings straight from TorchEasyRec's predict output.

The external trainer is a separate process: ``tests/tzrec_trainer.py`` (TorchEasyRec's predict layout,
string ids, reads the GraphLearn tables mined for it), ``python -c`` one-liners that fail or hang, and
(slow) hnmine's own trainer through the command templates, which must give the built-in path's metrics.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hnmine.evaluate import evaluate
from hnmine.io.embeddings import read_embeddings, write_embeddings
from hnmine.io.positives import Positives, read_positives
from tests.conftest import ROOT, TEST, TRAIN, Cli

TRAINER = shlex.quote(str(ROOT / "tests" / "tzrec_trainer.py"))
LOOP = ["--iterations", "2", "--rank-window", "11:60", "--num-hard", "4", "--threads", "1", "--quiet"]


def tzrec(train_extra: str = "", export_extra: str = "") -> list[str]:
    """The options that run tests/tzrec_trainer.py and read its TorchEasyRec predict layout."""
    return ["--train-command", f"{{python}} {TRAINER} train --round {{round}} --train {{train}} --mined {{mined}} "
                               f"--model-dir {{model_dir}}{train_extra}",
            "--export-command", f"{{python}} {TRAINER} export --round {{round}} --model-dir {{model_dir}} "
                                f"--export-dir {{export_dir}}{export_extra}",
            "--user-embeddings", "{export_dir}/user_emb", "--item-embeddings", "{export_dir}/item_emb",
            "--id-column", "user_id,adgroup_id", "--vector-column", "user_tower_emb,item_tower_emb"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 600-user sample_data slice with string ids (u<n>, i<n>) and the same with int64 ids; each
    user with 3+ training items keeps its last one as validation."""
    root = tmp_path_factory.mktemp("external-data")
    rows = {"train": [], "valid": [], "test": []}
    for name, path in (("train", TRAIN), ("test", TEST)):
        for line in path.read_text().splitlines():
            user, *items = [int(t) for t in line.split()]
            held = name == "train" and len(items) >= 3
            rows[name] += [(user, item) for item in (items[:-1] if held else items)]
            if held:
                rows["valid"].append((user, items[-1]))
    paths = {}
    for name, pairs in rows.items():
        frame = pl.DataFrame(pairs, schema=["user_id", "item_id"], orient="row")
        paths[f"int_{name}"] = root / f"int_{name}.parquet"
        frame.write_parquet(paths[f"int_{name}"])
        paths[name] = root / f"{name}.parquet"
        frame.select(pl.format("u{}", "user_id").alias("user_id"),
                     pl.format("i{}", "item_id").alias("item_id")).write_parquet(paths[name])
    return paths


def inputs(data: dict[str, Path]) -> list[str]:
    return ["--positives", str(data["train"]), "--valid", str(data["valid"]), "--test", str(data["test"])]


def error_line(result, code: int) -> str:
    """The one line a failed run prints (exit ``code``, no traceback)."""
    assert result.exit_code == code, (result.exit_code, result.output[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hnmine: error: "), result.stderr[-3000:]
    return lines[0]


def round_metrics(out: Path) -> list[dict]:
    return [entry["metrics"] for entry in json.loads((out / "metrics.json").read_text())]


# ------------------------------------------------------------------------------------------- readers


def test_predict_output_layouts_read_as_hnmine_parquet(tmp_path):
    """A list<float> column, comma-separated text (spaces allowed) and part files of a directory all give
    the vectors and ids written; a row that is not numbers, several vectors (MIND) or a ragged row: one line."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((7, 5)).astype(np.float32)
    ids = [f"user-{i}" for i in range(7)]
    folder = tmp_path / "user_emb"
    folder.mkdir()
    texts = [", ".join(repr(float(v)) for v in row) for row in vectors]
    pq.write_table(pa.table({"user_id": ids[:4], "user_tower_emb": texts[:4]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"user_id": ids[4:], "user_tower_emb": texts[4:]}), folder / "part-1.parquet")
    as_text = read_embeddings(folder, id_column="user_id", vector_column="user_tower_emb")
    assert as_text.ids.tolist() == ids and np.array_equal(as_text.vectors, vectors)
    listed = tmp_path / "listed.parquet"
    pq.write_table(pa.table({"user_id": ids, "user_tower_emb": pa.array(list(vectors), pa.list_(pa.float32()))}),
                   listed)
    assert np.array_equal(read_embeddings(listed, id_column="user_id", vector_column="user_tower_emb").vectors,
                          vectors)

    def refused(values: list, message: str) -> None:
        path = tmp_path / "bad.parquet"
        pq.write_table(pa.table({"id": list(range(len(values))), "embedding": values}), path)
        with pytest.raises(Exception, match=message) as info:
            read_embeddings(path)
        assert type(info.value).__name__ == "InputError" and "\n" not in str(info.value)

    refused(["1,2", "3,abc"], r"bad.parquet: column 'embedding' has 'abc' at row 1 \(id 1\), not a number")
    refused(["1,2", ""], r"has '' at row 1")
    refused(["1,2", "3,4;5,6"], "several vectors at row 1 .*MIND")
    refused(["1,2", "3,4,5"], "has length 3 at row 1")
    refused(["1,2", "nan,1"], "has nan at row 1")
    refused([[[1.0, 2.0]], [[3.0, 4.0]]], "lists of vectors")


def test_mine_and_evaluate_read_torcheasyrec_output_with_string_ids(cli, tmp_path, sample_embeddings):
    """TorchEasyRec's layout (own id and vector columns per tower, text vectors, string ids) mines the
    same negatives and evaluates to the same metrics as the hnmine parquet it was made from."""
    users, items = (read_embeddings(path) for path in sample_embeddings)
    train = read_positives(ROOT / "sample_data" / "train.txt").table
    test = read_positives(ROOT / "sample_data" / "test.txt").table
    (tmp_path / "user_emb").mkdir()
    pq.write_table(pa.table({"user_id": [f"u{u}" for u in users.ids],
                             "user_tower_emb": pa.array(list(users.vectors), pa.list_(pa.float32()))}),
                   tmp_path / "user_emb" / "part-0.parquet")
    (tmp_path / "item_emb").mkdir()
    pq.write_table(pa.table({"adgroup_id": [f"i{i}" for i in items.ids],
                             "item_tower_emb": [",".join(repr(float(v)) for v in row) for row in items.vectors]}),
                   tmp_path / "item_emb" / "part-0.parquet")
    as_strings = (pl.format("u{}", "user_id").alias("user_id"), pl.format("i{}", "item_id").alias("item_id"))
    train.select(*as_strings).write_parquet(tmp_path / "train.parquet")
    test.select(*as_strings).write_parquet(tmp_path / "test.parquet")
    columns = ["--id-column", "user_id,adgroup_id", "--vector-column", "user_tower_emb,item_tower_emb"]
    common = ["--rank-window", "101:500", "--num-hard", "10", "--strategy", "top", "--quiet"]
    assert cli("mine", "--users", sample_embeddings[0], "--items", sample_embeddings[1], "--positives",
               ROOT / "sample_data" / "train.txt", "--out", tmp_path / "plain", *common).exit_code == 0
    result = cli("mine", "--users", tmp_path / "user_emb", "--items", tmp_path / "item_emb", "--positives",
                 tmp_path / "train.parquet", "--out", tmp_path / "tzrec", *columns, *common)
    assert result.exit_code == 0, result.output
    plain = pl.read_parquet(tmp_path / "plain" / "hard_neg_edge.parquet")
    mined = pl.read_parquet(tmp_path / "tzrec" / "hard_neg_edge.parquet")
    assert mined["user_id"].to_list() == [f"u{u}" for u in plain["user_id"]]
    assert mined["item_id"].to_list() == [f"i{i}" for i in plain["item_id"]]
    assert mined["score"].equals(plain["score"]) and mined.height == 29860
    header = (tmp_path / "tzrec" / "hard_neg_edge.txt").read_text().splitlines()[0]
    assert header == "userid:string\titemid:string\tweight:float"
    reference = evaluate(*sample_embeddings, ROOT / "sample_data" / "train.txt", ROOT / "sample_data" / "test.txt")
    result = cli("evaluate", "--users", tmp_path / "user_emb", "--items", tmp_path / "item_emb", "--train",
                 tmp_path / "train.parquet", "--test", tmp_path / "test.parquet", *columns, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"] == reference.metrics


# ------------------------------------------------------------------------------ run: external trainer


def test_torcheasyrec_layout_string_ids_two_rounds_killed_trainer_resumes(cli, tmp_path, data):
    """Two rounds with tests/tzrec_trainer.py: round 1 trains on the GraphLearn tables mined for it; its
    embeddings (string ids, predict layout) give exactly the metrics of the same vectors under int ids;
    a trainer SIGKILLed in round 1's train step, then in its export step, fails the run in one line
    (exit 3) each time, and the rerun resumes at round 1 to the metrics of a run never interrupted."""
    clean = tmp_path / "clean"
    result = cli("run", *inputs(data), *LOOP, *tzrec(), "--out", clean)
    assert result.exit_code == 0, result.output
    seen = json.loads((clean / "round_01" / "model" / "seen.json").read_text())
    assert seen == {"round": 1, "header": "userid:string\titemid:string\tweight:float", "rows": 600 * 4}
    manifest = json.loads((clean / "round_01" / "manifest.json").read_text())
    assert "--mined" in manifest["train"]["command"] and manifest["export"]["users"] == 600
    assert json.loads((clean / "best_round.json").read_text())["model"].endswith("/model")
    log = (clean / "run.log").read_text()
    assert "round 1 train: training round 1" in log and "round 1 export: exported 600 users" in log

    # the same vectors under int64 ids, evaluated as the run does: the same numbers
    emb = clean / "round_00" / "embeddings"
    users, items = read_embeddings(emb / "user.parquet"), read_embeddings(emb / "item.parquet")
    write_embeddings(tmp_path / "u.parquet", np.array([int(u[1:]) for u in users.ids]), users.vectors)
    write_embeddings(tmp_path / "i.parquet", np.array([int(i[1:]) for i in items.ids]), items.vectors)
    train, valid = read_positives(data["int_train"]), read_positives(data["int_valid"])
    both = Positives(pl.concat([train.table, valid.table]), "train+valid", 0, 0)
    expected = {"valid": evaluate(tmp_path / "u.parquet", tmp_path / "i.parquet", train, valid).metrics,
                "test": evaluate(tmp_path / "u.parquet", tmp_path / "i.parquet", both, data["int_test"]).metrics}
    assert round_metrics(clean)[0] == expected

    # round 1's trainer dies in its train step, then (rerun) in its export step, then (rerun) completes
    out = tmp_path / "resumed"
    killed = tzrec(train_extra=f" --at-round 1 --die-once {shlex.quote(str(tmp_path / 'train-died'))}",
                   export_extra=f" --at-round 1 --die-once {shlex.quote(str(tmp_path / 'export-died'))}")
    for step in ("train", "export"):
        line = error_line(cli("run", *inputs(data), *LOOP, *killed, "--out", out), 3)
        assert f"round 1 {step}:" in line and "was killed by SIGKILL" in line and "a rerun resumes" in line
        assert (out / "round_00" / "manifest.json").exists() and not (out / "round_01" / "manifest.json").exists()
        assert f"error: round 1 {step}" in (out / "run.log").read_text()
    round0 = (out / "round_00" / "manifest.json").stat().st_mtime_ns
    result = cli("run", *inputs(data), *LOOP, *killed, "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "round_00" / "manifest.json").stat().st_mtime_ns == round0
    assert (out / "run.log").read_text().count("resuming: rounds 0-0 complete") == 2
    assert round_metrics(out) == round_metrics(clean)


def test_failing_command_is_one_line_with_exit_code_and_stderr_then_rerun_retries(cli, tmp_path, data):
    out = tmp_path / "run"
    command = ("{python} -c \"import sys; print('loading data'); print('CUDA out of memory', file=sys.stderr); "
               "sys.exit(7)\"")
    for _attempt in range(2):  # the rerun resumes at round 0: the command runs again
        line = error_line(cli("run", *inputs(data), *LOOP, "--train-command", command, "--out", out), 3)
        assert "round 0 train:" in line and "exited with code 7" in line and "CUDA out of memory" in line
        assert not (out / "round_00" / "manifest.json").exists()
    log = (out / "run.log").read_text()
    assert log.count("round 0 train: loading data") == 2 and log.count("round 0 train: CUDA out of memory") == 2


def test_timeout_stops_the_command(cli, tmp_path, data):
    started = time.perf_counter()
    command = "{python} -c \"import time; print('started', flush=True); time.sleep(120)\""
    line = error_line(cli("run", *inputs(data), *LOOP, "--train-command", command, "--train-timeout", "1",
                          "--out", tmp_path / "run"), 3)
    assert "round 0 train: timed out after 1 s (--train-timeout)" in line
    assert time.perf_counter() - started < 60


def test_output_left_unusable_fails_the_step(cli, tmp_path, data):
    """A command that exits 0 but leaves no embeddings, or embeddings missing users: exit 3, nothing adopted."""
    out = tmp_path / "run"
    line = error_line(cli("run", *inputs(data), *LOOP, "--train-command", "{python} -c pass", "--out", out), 3)
    assert "round 0 train: its embeddings are not usable:" in line and "user.parquet: file not found" in line
    assert not (out / "round_00" / "embeddings").exists()
    few = ("{python} -c \"import pyarrow as pa, pyarrow.parquet as pq, sys; "
           "[pq.write_table(pa.table({{'id': ['u0', 'i0'], 'embedding': ['1,0', '0,1']}}), sys.argv[1] + n) "
           "for n in ('/user.parquet', '/item.parquet')]\" {export_dir}")
    line = error_line(cli("run", *inputs(data), *LOOP, "--train-command", few, "--out", tmp_path / "few"), 3)
    assert "users of the training positives have no embedding" in line


@pytest.mark.parametrize(("args", "message"), [
    (["--train-command", "{python} train.py --out {model}"], "--train-command: unknown placeholder {model}"),
    (["--train-command", "train.py '{round}"], "--train-command: cannot split"),
    (["--export-command", "x"], "--export-command needs --train-command"),
    (["--train-command", "x", "--no-hard"], "--no-hard is the built-in trainer's control"),
    (["--train-command", "x", "--user-embeddings", "{export}/u"], "--user-embeddings: unknown placeholder"),
    (["--train-command", "x", "--id-column", "a,b,c"], "--id-column 'a,b,c' must be one column name"),
    (["--train-command", "x", "--train-timeout", "0"], "--train-timeout must be a positive"),
])
def test_bad_external_options_refused_before_anything_runs(cli, tmp_path, data, args, message):
    line = error_line(cli("run", *inputs(data), *LOOP, *args, "--out", tmp_path / "run"), 2)
    assert message in line
    assert not (tmp_path / "run").exists()


HANG = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
DRIVER = f"""
import os, sys
from hnmine.loop.commands import run_command
run_command([sys.executable, "-c", {HANG!r}, sys.argv[1]], label="round 0 train", env=os.environ, timeout=None,
            timeout_option="--train-timeout", log=print)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_command_does_not_outlive_the_process_that_runs_it(tmp_path, sig):
    """SIGTERM or Ctrl-C to the process running a command: the command's process group is stopped first
    (then exit 143, or KeyboardInterrupt); SIGKILL: the command dies with it (PR_SET_PDEATHSIG)."""
    pid_file = tmp_path / "pid"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(pid_file)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    child = _wait_for_pid(pid_file, proc)
    proc.send_signal(sig)
    returncode = proc.wait(timeout=60)
    assert returncode == {signal.SIGTERM: 143, signal.SIGINT: -signal.SIGINT,
                          signal.SIGKILL: -signal.SIGKILL}[sig]
    _assert_gone(child, sig)


def _wait_for_pid(pid_file: Path, proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 240
    while not pid_file.exists() or not pid_file.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
        time.sleep(0.05)
    return int(pid_file.read_text())


def _assert_gone(pid: int, sig: signal.Signals) -> None:
    deadline = time.monotonic() + 15
    while _alive(pid):
        assert time.monotonic() < deadline, f"the command outlived its runner's {sig.name}"
        time.sleep(0.05)


@pytest.mark.slow
def test_hnmine_stopped_or_killed_mid_step_takes_the_command_with_it(tmp_path, data):
    """The same through ``hnmine run`` (slow: three processes that import torch): SIGTERM while the export
    command runs exits 143, SIGKILL leaves no command behind, and the rerun completes."""
    out = tmp_path / "run"
    pid_file = tmp_path / "pid"
    options = [*inputs(data), *LOOP, "--iterations", "1", *tzrec(export_extra=f" --hang {shlex.quote(str(pid_file))}"),
               "--out", str(out)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pid_file.unlink(missing_ok=True)  # the export hangs while there is none
        args = [sys.executable, "-m", "hnmine", "run", *options]
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        child = _wait_for_pid(pid_file, proc)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
        _assert_gone(child, sig)
        assert not (out / "round_00" / "manifest.json").exists()
    result = Cli()("run", *options)
    assert result.exit_code == 0, result.output
    assert len(round_metrics(out)) == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")  # a zombie (dead, not yet reaped) counts as gone
    return not (state.exists() and state.read_text().split(")")[-1].split()[0] == "Z")


# -------------------------------------------------------------------- the built-in trainer as commands

TINY = "--dim 8 --batch-size 2048 --num-sample 128 --threads 1 --quiet"
BUILTIN = {
    "--first-train-command": "{python} -m hnmine train --positives {train} --valid {valid} --out {model_dir}/model.pt "
                             f"--seed {{seed}} --hard-window 50 --epochs 1 {TINY}",
    "--train-command": "{python} -m hnmine train --positives {mined}/pos_edge.parquet --item-nodes "
                       "{mined}/item.parquet --hard-negatives {mined}/hard_neg_edge.parquet --init "
                       "{prev_model_dir}/model.pt --valid {valid} --out {model_dir}/model.pt --seed {seed} "
                       f"--hard-window {{window_size}} --epochs 1 --lr 1e-3 --lr-min 1e-4 {TINY}",
    "--export-command": "{python} -m hnmine export --model {model_dir}/model.pt --out-dir {export_dir}",
}


@pytest.mark.slow
def test_builtin_trainer_through_commands_gives_the_builtin_metrics_and_resumes(cli, tmp_path):
    """hnmine's trainer run as external commands (six processes) gives the metrics of the built-in path
    to the last digit; its train command killed in round 1 (exit 3) resumes there. Slow: each process
    imports torch (a minute on the 2-core machine)."""
    common = ["--positives", TRAIN, "--test", TEST, "--iterations", "2", "--rank-window", "11:60", "--num-hard", "4",
              "--refine-epochs", "1", "--dim", "8", "--epochs", "1", "--batch-size", "2048", "--num-sample", "128",
              "--threads", "1", "--quiet"]
    result = cli("run", *common, "--out", tmp_path / "builtin")
    assert result.exit_code == 0, result.output
    marker = shlex.quote(str(tmp_path / "died"))
    die_once = (f"{{python}} -c \"import os, pathlib, signal, sys; m = pathlib.Path(sys.argv[1]); "
                f"m.exists() or (m.write_text('x'), os.kill(os.getpid(), signal.SIGKILL)); os.execv(sys.argv[2], "
                f"sys.argv[2:])\" {marker} ")
    options = [*[item for option, value in BUILTIN.items() for item in (option, value)]]
    options[options.index("--train-command") + 1] = die_once + BUILTIN["--train-command"]
    out = tmp_path / "external"
    line = error_line(cli("run", *common, *options, "--out", out), 3)
    assert "round 1 train:" in line and "SIGKILL" in line
    result = cli("run", *common, *options, "--out", out)
    assert result.exit_code == 0, result.output
    assert round_metrics(out) == round_metrics(tmp_path / "builtin")
