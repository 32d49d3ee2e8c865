"""Object stores (hnmine.io.storage, the object-store committer, hnmine.io.committer) against a real S3 server:
SeaweedFS started by the ``s3_server`` fixture (tests/conftest.py), buckets made by each test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyarrow import fs

from hnmine.io.embeddings import read_embeddings, write_embedding_dir
from hnmine.io.publish import output_format
from tests.conftest import ROOT, SAMPLE, TEST, TINY, TRAIN, S3Server, _free_port_pair

MINE = ["--rank-window", "11:60", "--num-hard", "5", "--seed", "3", "--quiet"]


def hnmine(args: list[str | Path], env: dict[str, str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """A real ``hnmine`` process with the store's environment (credentials only there)."""
    if fault:
        env = {**env, "HNMINE_FAULT": fault}
    return subprocess.run([sys.executable, "-m", "hnmine", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=300)


def options(urls: dict[str, str]) -> list[str]:
    """``--users URL --items URL ...``"""
    return [word for name, value in urls.items() for word in (f"--{name}", value)]


def objects(server: S3Server, prefix: str) -> dict[str, bytes]:
    """Every object under ``bucket/prefix`` (relative name -> bytes)."""
    store = server.filesystem()
    infos = store.get_file_info(fs.FileSelector(prefix, recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == fs.FileType.File:
            with store.open_input_stream(info.path) as stream:
                out[info.path[len(prefix) + 1:]] = stream.read()
    return out


@pytest.fixture()
def s3_inputs(s3_server: S3Server, sample_embeddings) -> tuple[str, dict[str, str]]:
    """A fresh bucket holding the sample embeddings and positives; (bucket, the URL of each input)."""
    bucket = s3_server.bucket()
    user, item = sample_embeddings
    return bucket, {"users": s3_server.upload(Path(user), f"{bucket}/in/emb/user.parquet"),
                    "items": s3_server.upload(Path(item), f"{bucket}/in/emb/item.parquet"),
                    "positives": s3_server.upload(SAMPLE / "train.txt", f"{bucket}/in/train.txt")}


def test_mine_reads_from_and_publishes_to_s3_the_bytes_of_a_local_run(cli, s3_env, s3_inputs, sample_embeddings,
                                                                         tmp_path):
    bucket, url = s3_inputs
    user, item = sample_embeddings
    remote = cli("mine", "--users", url["users"], "--items", url["items"], "--positives", url["positives"],
                 "--out", f"s3://{bucket}/mined", *MINE[:-1])
    assert remote.exit_code == 0, remote.output
    local = cli("mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt",
                "--out", tmp_path / "mined", *MINE)
    assert local.exit_code == 0, local.output
    published = objects(s3_env, f"{bucket}/mined")
    expected = {p.name: p.read_bytes() for p in (tmp_path / "mined").iterdir()}
    assert published.keys() == expected.keys()
    for name in expected.keys() - {"manifest.json"}:
        assert published[name] == expected[name], name
    manifest = json.loads(published["manifest.json"])
    assert manifest["options"]["users"] == url["users"] and manifest["summary"]["out"] == f"s3://{bucket}/mined"
    assert manifest["inputs"]["users"]["sha256"] == json.loads(expected["manifest.json"])["inputs"]["users"]["sha256"]
    assert output_format(f"s3://{bucket}/mined") == "mine"
    for secret in (s3_env.secret_key, s3_env.access_key):
        assert secret not in published["manifest.json"].decode()
        assert secret not in remote.output
    # the publisher's own objects are gone: no staging prefix, commit record or lock beside the output
    assert set(objects(s3_env, bucket)) == {f"in/{n}" for n in ("emb/user.parquet", "emb/item.parquet",
                                                               "train.txt")} | {f"mined/{n}" for n in published}
    again = cli("mine", *options(url), "--out", f"s3://{bucket}/mined", *MINE)
    assert again.exit_code == 2 and "pass --overwrite" in again.output


def test_fault_mid_upload_keeps_the_previous_output_and_no_success_is_ever_over_a_partial_one(cli, s3_env, s3_inputs):
    bucket, url = s3_inputs
    s3_server, env = s3_env, s3_env.env()
    args = ["mine", *options(url), "--out", f"s3://{bucket}/mined", *MINE,
            "--overwrite"]
    assert cli(*args).exit_code == 0
    before = objects(s3_server, f"{bucket}/mined")
    # killed after the second part reached the staging prefix: the previous output is untouched and readable
    killed = hnmine([*args, "--seed", "4"], env, fault="publish.upload@2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert objects(s3_server, f"{bucket}/mined") == before
    leftovers = objects(s3_server, bucket)
    assert any(name.startswith(".mined.tmp-") for name in leftovers) and ".mined.lock" in leftovers
    # killed after the previous _SUCCESS went: no _SUCCESS over what is left
    killed = hnmine([*args, "--seed", "4"], env, fault="publish.copy@3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "_SUCCESS" not in objects(s3_server, f"{bucket}/mined")
    # the next run takes over the dead run's lock, recognises its half-done commit, and publishes
    done = cli(*args, "--seed", "4")
    assert done.exit_code == 0, done.output
    after = objects(s3_server, f"{bucket}/mined")
    assert "_SUCCESS" in after and after["hard_neg_edge.parquet"] != before["hard_neg_edge.parquet"]
    assert {name.split("/")[0] for name in objects(s3_server, bucket)} == {"in", "mined"}


def test_other_commands_read_and_write_s3(cli, s3_env, tmp_path):
    bucket = s3_env.bucket()
    train = s3_env.upload(TRAIN, f"{bucket}/train.txt")
    test = s3_env.upload(TEST, f"{bucket}/test.txt")
    steps = [
        ["svd", "--positives", train, "--dim", "8", "--out-dir", f"s3://{bucket}/svd"],
        ["train", "--positives", train, "--out", f"s3://{bucket}/model.pt", *TINY],
        ["export", "--model", f"s3://{bucket}/model.pt", "--out-dir", f"s3://{bucket}/emb"],
        ["evaluate", "--users", f"s3://{bucket}/emb/user.parquet", "--items", f"s3://{bucket}/emb/item.parquet",
         "--train", train, "--test", test],
        ["run", "--positives", train, "--test", test, "--out", tmp_path / "run", "--iterations", "1", *TINY],
    ]
    for step in steps:
        result = cli(*step)
        assert result.exit_code == 0, (step[0], result.output[-2000:])
    names = objects(s3_env, bucket)
    assert {"svd/_SUCCESS", "svd/user.parquet", "model.pt", "emb/_SUCCESS", "emb/item.parquet"} <= names.keys()
    assert output_format(f"s3://{bucket}/svd") == "embeddings"
    assert len(read_embeddings(f"s3://{bucket}/emb/user.parquet")) == 600


def _failure_cases(server: S3Server, bucket: str) -> dict[str, tuple[list[str], dict[str, str], str]]:
    mine_from = ["mine", "--items", f"s3://{bucket}/item.parquet", "--positives", f"s3://{bucket}/train.txt",
                 "--out", f"s3://{bucket}/out", "--users"]
    closed = f"http://127.0.0.1:{_free_port_pair()}"
    return {
        "missing bucket": ([*mine_from, "s3://hnmine-no-such-bucket/user.parquet"], server.env(), "no bucket"),
        "missing object": ([*mine_from, f"s3://{bucket}/no-such.parquet"], server.env(), "not found"),
        "wrong credentials": ([*mine_from, f"s3://{bucket}/user.parquet"],
                              server.env(AWS_SECRET_ACCESS_KEY="not-the-secret"), "access denied"),
        "unreachable endpoint": ([*mine_from, f"s3://{bucket}/user.parquet"], server.env(AWS_ENDPOINT_URL=closed),
                                 "cannot connect"),
        "missing output bucket": (["svd", "--positives", str(TRAIN), "--out-dir", "s3://hnmine-no-such-bucket/emb"],
                                  server.env(), "no bucket"),
    }


@pytest.mark.parametrize("case", ["missing bucket", "missing object", "wrong credentials", "unreachable endpoint",
                                  "missing output bucket"])
def test_store_failures_are_one_line_exit_2_in_bounded_time(cli, s3_env, monkeypatch, case):
    bucket = s3_env.bucket()
    args, env, expected = _failure_cases(s3_env, bucket)[case]
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(name, env[name])
    start = time.monotonic()
    result = cli(*args)
    elapsed = time.monotonic() - start
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output[-2000:]
    assert len(lines) == 1 and lines[0].startswith("hnmine: error: ") and expected in lines[0], lines
    assert s3_env.secret_key not in result.output and "not-the-secret" not in result.output
    assert elapsed < 20, f"{case}: {elapsed:.1f} s"


def test_credentials_in_a_url_are_refused_and_never_shown(cli):
    result = cli("mine", "--users", "s3://KEYID:SECRETKEY@bucket/u.parquet", "--items", "s3://bucket/i.parquet",
                 "--positives", "s3://bucket/p.txt", "--out", "s3://bucket/out")
    assert result.exit_code == 2 and "credentials in the URL" in result.output
    assert "SECRETKEY" not in result.output and "KEYID" not in result.output


def test_other_fsspec_schemes_go_through_fsspec(sample_embeddings):
    """memory:// (fsspec's in-process store) stands for ossfs & co: published, recognised, read back."""
    users = read_embeddings(sample_embeddings[0])
    items = read_embeddings(sample_embeddings[1])
    user_url, _ = write_embedding_dir("memory://hnmine-test/emb", users.ids, users.vectors, items.ids, items.vectors)
    assert output_format("memory://hnmine-test/emb") == "embeddings"
    back = read_embeddings(user_url)
    assert (back.ids == users.ids).all() and (back.vectors == users.vectors).all() and back.source == user_url


def test_a_live_writer_s_lock_is_respected(cli, s3_env, s3_inputs):
    bucket, url = s3_inputs
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-01-05T02:00:01Z", "token": "x"}
    with s3_env.filesystem().open_output_stream(f"{bucket}/.mined.lock") as lock:
        lock.write(json.dumps(holder).encode())
    inputs = options(url)
    result = cli("mine", *inputs, "--out", f"s3://{bucket}/mined", *MINE)
    assert result.exit_code == 75 and f"pid {os.getpid()}" in result.output, result.output
    assert set(objects(s3_env, bucket)) == {".mined.lock", "in/emb/user.parquet", "in/emb/item.parquet",
                                            "in/train.txt"}


def test_mine_reads_from_and_publishes_to_gs(cli, gcs_env, sample_embeddings, tmp_path):
    """gs:// through pyarrow's GcsFileSystem against a GCS emulator: the local run's bytes, published under
    _SUCCESS, and a second publication replaces the first."""
    user, item = sample_embeddings
    bucket = gcs_env.bucket()
    inputs = {"users": gcs_env.upload(user, f"{bucket}/in/user.parquet"),
              "items": gcs_env.upload(item, f"{bucket}/in/item.parquet"),
              "positives": gcs_env.upload(SAMPLE / "train.txt", f"{bucket}/in/train.txt")}
    for _ in range(2):
        remote = cli("mine", *options(inputs), "--out", f"gs://{bucket}/mined", "--overwrite", *MINE)
        assert remote.exit_code == 0, remote.output
    local = cli("mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt",
                "--out", tmp_path / "mined", *MINE)
    assert local.exit_code == 0, local.output
    store = gcs_env.filesystem()
    infos = store.get_file_info(fs.FileSelector(bucket, recursive=True))
    names = {info.path[len(bucket) + 1:] for info in infos if info.type == fs.FileType.File}
    assert names == {f"in/{n}" for n in ("user.parquet", "item.parquet", "train.txt")} | {
        f"mined/{p.name}" for p in (tmp_path / "mined").iterdir()}
    for path in (tmp_path / "mined").iterdir():
        if path.name != "manifest.json":
            with store.open_input_stream(f"{bucket}/mined/{path.name}") as stream:
                assert stream.read() == path.read_bytes(), path.name
    assert output_format(f"gs://{bucket}/mined") == "mine"
