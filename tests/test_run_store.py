"""``hnmine run --out s3://...`` and reports on a store, against the real S3 server (SeaweedFS, tests/conftest.py):
a run killed after a round's upload resumes on a machine without its working directory to the metrics of a
run never interrupted; a report never replaces a file hnmine did not write without --overwrite."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hnmine.io.publish import output_format
from tests.conftest import ROOT, SAMPLE, TEST, TRAIN, S3Server

RUN = ["--positives", TRAIN, "--test", TEST, "--iterations", "2", "--epochs", "1", "--refine-epochs", "1",
       "--dim", "8", "--batch-size", "2048", "--num-sample", "128", "--window-width", "40", "--num-hard", "5",
       "--threads", "1", "--quiet"]


def hnmine(args: list[str | Path], env: dict[str, str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    if fault:
        env = {**env, "HNMINE_FAULT": fault}
    return subprocess.run([sys.executable, "-m", "hnmine", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=600)


def names(server: S3Server, prefix: str) -> set[str]:
    from pyarrow import fs

    infos = server.filesystem().get_file_info(fs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return {info.path[len(prefix) + 1:] for info in infos if info.type == fs.FileType.File}


def read(server: S3Server, key: str) -> bytes:
    with server.filesystem().open_input_stream(key) as stream:
        return bytes(stream.read())


def without_times(value: object) -> object:
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if not k.endswith("_seconds")}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def test_run_on_s3_killed_after_a_round_resumes_from_the_store_to_the_same_metrics(cli, s3_env, tmp_path):
    s3_server = s3_env
    bucket, env = s3_server.bucket(), s3_server.env()
    url = f"s3://{bucket}/runs/r1"
    clean = cli("run", *RUN, "--out", tmp_path / "local")
    assert clean.exit_code == 0, clean.output[-2000:]
    # killed once round 0 is complete in the working directory, before it is published
    killed = hnmine(["run", *RUN, "--out", url, "--work-dir", tmp_path / "first"], env, fault="run.round.done")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert {"run.json", "data/train.parquet"} <= names(s3_server, f"{bucket}/runs/r1")
    assert "round_00/manifest.json" not in names(s3_server, f"{bucket}/runs/r1")
    # the rerun there publishes round 0 first; killed right after that, and the machine is gone
    killed = hnmine(["run", *RUN, "--out", url, "--work-dir", tmp_path / "first"], env, fault="run.round.published")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    stored = names(s3_server, f"{bucket}/runs/r1")
    assert {"run.json", "data/train.parquet", "round_00/model.pt", "round_00/embeddings/user.parquet",
            "round_00/manifest.json"} <= stored and not any(n.startswith("round_01") for n in stored)
    # a changed option is refused, naming the URL, before anything is written
    changed = cli("run", *RUN, "--out", url, "--work-dir", tmp_path / "other", "--seed", "7")
    assert changed.exit_code == 2 and f"{url}: holds a run with other options (train)" in changed.output, \
        changed.output[-2000:]
    assert names(s3_server, f"{bucket}/runs/r1") == stored
    # another machine: a fresh working directory; round 0 comes from the store, round 1 runs. The dead run's
    # lock is another host's, not renewed for an hour: taken over
    lock = {"pid": 1, "host": "gone-container", "token": "dead", "since": "2026-01-05T02:00:01Z",
            "renewed": time.time() - 3600}
    with s3_server.filesystem().open_output_stream(f"{bucket}/runs/.r1.lock") as sink:
        sink.write(json.dumps(lock).encode())
    resumed = cli("run", *RUN, "--out", url, "--work-dir", tmp_path / "second")
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert "resuming: rounds 0-0 complete" in (tmp_path / "second" / "run.log").read_text()
    stored = names(s3_server, f"{bucket}/runs/r1")
    assert {"round_01/manifest.json", "round_01/mined/_SUCCESS", "metrics.json", "best_round.json", "metrics.png",
            "run.log", "report.html"} <= stored
    assert not any(name.startswith(".") or "/." in name for name in stored), stored  # no lock, staging, record
    assert names(s3_server, f"{bucket}/runs") == {f"r1/{name}" for name in stored}  # the run's lock is gone
    assert output_format(f"{url}/round_01/mined") == "mine"
    metrics = json.loads(read(s3_server, f"{bucket}/runs/r1/metrics.json"))
    assert without_times(metrics) == without_times(json.loads((tmp_path / "local" / "metrics.json").read_text()))
    assert read(s3_server, f"{bucket}/runs/r1/round_01/mined/hard_neg_edge.parquet") == \
        (tmp_path / "local" / "round_01" / "mined" / "hard_neg_edge.parquet").read_bytes()
    best = json.loads(read(s3_server, f"{bucket}/runs/r1/best_round.json"))
    assert best["model"].startswith(f"{url}/round_0") and best["model"].endswith("/model.pt")
    assert f"wrote {url}/report.html" in resumed.output


def test_run_refuses_a_prefix_that_is_not_a_run(cli, s3_env, tmp_path):
    bucket = s3_env.bucket()
    s3_env.upload(SAMPLE / "train.txt", f"{bucket}/runs/r1/notes.txt")
    result = cli("run", *RUN, "--out", f"s3://{bucket}/runs/r1", "--work-dir", tmp_path / "work")
    assert result.exit_code == 2 and "is not an hnmine run" in result.output, result.output[-2000:]
    assert names(s3_env, f"{bucket}/runs/r1") == {"notes.txt"} and not (tmp_path / "work").exists()
    local = cli("run", *RUN, "--out", tmp_path / "run", "--work-dir", tmp_path / "work")
    assert local.exit_code == 2 and "--work-dir" in local.output, local.output[-2000:]
    # a run elsewhere that renewed its lock a minute ago is live: exit 75, naming it
    lock = {"pid": 1, "host": "other-container", "token": "live", "since": "2026-01-05T02:00:01Z",
            "renewed": time.time() - 60}
    with s3_env.filesystem().open_output_stream(f"{bucket}/runs/.r2.lock") as sink:
        sink.write(json.dumps(lock).encode())
    locked = cli("run", *RUN, "--out", f"s3://{bucket}/runs/r2", "--work-dir", tmp_path / "work")
    assert locked.exit_code == 75 and "pid 1 on other-container" in locked.output, locked.output[-2000:]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_report_replaces_only_hnmine_s_own_file_unless_overwrite(cli, s3_env, sample_embeddings, tmp_path, where):
    user, item = sample_embeddings
    bucket = s3_env.bucket()
    base = tmp_path if where == "local" else f"s3://{bucket}"
    mined = f"{base}/mined"
    result = cli("mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt", "--out", mined,
                 "--rank-window", "11:60", "--num-hard", "5", "--report")
    assert result.exit_code == 0 and f"wrote {mined}/report.html" in result.output, result.output
    assert cli("report", mined).exit_code == 0  # its own report: replaced
    if where == "s3":
        assert output_format(mined) == "mine" and "report.html" in names(s3_env, f"{bucket}/mined")
        s3_env.upload(SAMPLE / "test.txt", f"{bucket}/notes.html")
    else:
        (tmp_path / "notes.html").write_text("mine, not hnmine's")
    refused = cli("report", mined, "--out", f"{base}/notes.html")
    assert refused.exit_code == 2 and "is not a report hnmine wrote; pass --overwrite" in refused.output
    notes = read(s3_env, f"{bucket}/notes.html") if where == "s3" else (tmp_path / "notes.html").read_bytes()
    assert notes in ((SAMPLE / "test.txt").read_bytes(), b"mine, not hnmine's")
    assert cli("report", mined, "--out", f"{base}/notes.html", "--overwrite").exit_code == 0
    page = read(s3_env, f"{bucket}/notes.html") if where == "s3" else (tmp_path / "notes.html").read_bytes()
    assert page.startswith(b"<!DOCTYPE html>")
