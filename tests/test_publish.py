"""Publication contract (docs/reliability.md): only hnmine's own outputs are replaced, one writer per
output, unwritable and symlinked ``--out``, stale staging of killed runs; real processes where it matters."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hnmine.errors import InputError
from hnmine.io.embeddings import write_embedding_dir, write_embeddings
from hnmine.io.publish import Publication, output_format
from tests.conftest import SAMPLE

MINE_FAST = ["--rank-window", "1:20", "--num-hard", "2", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """2,000 users x 300 items: cheap enough per chunk that a run of 8-user chunks lasts a few seconds."""
    out = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    write_embeddings(out / "user.parquet", np.arange(2000), rng.standard_normal((2000, 8)))
    write_embeddings(out / "item.parquet", np.arange(300), rng.standard_normal((300, 8)))
    pl.DataFrame({"user_id": np.repeat(np.arange(2000), 2), "item_id": rng.integers(0, 300, 4000)}).write_parquet(
        out / "positives.parquet")
    return out / "user.parquet", out / "item.parquet", out / "positives.parquet"


def mine_args(inputs: tuple[Path, Path, Path], out: Path, *extra: str | Path) -> list[str | Path]:
    user, item, positives = inputs
    return ["mine", "--users", user, "--items", item, "--positives", positives, "--out", out, *extra]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (a snapshot to compare before and after)."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def outputs(path: Path) -> dict[str, bytes]:
    """The published tables, without the manifest (its times differ from run to run)."""
    return {name: data for name, data in tree(path).items() if name != "manifest.json"}


def leftovers(parent: Path, name: str) -> list[str]:
    """Hidden staging, swap or lock entries of output ``name`` in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("hnmine: error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


# ----------------------------------------------------------------- only what hnmine wrote is replaced


@pytest.mark.parametrize("foreign", [
    {"manifest.json": '{"name": "my dataset", "version": 3}', "data.csv": "a,b\n1,2\n"},
    {"manifest.json": "not json", "_SUCCESS": ""},
])
def test_overwrite_refuses_a_foreign_manifest(cli, small_inputs, tmp_path, foreign):
    precious = tmp_path / "data"
    precious.mkdir()
    for name, text in foreign.items():
        (precious / name).write_text(text)
    before = tree(precious)
    message = one_line_error(cli(*mine_args(small_inputs, precious, *MINE_FAST, "--overwrite")))
    assert "not an hnmine output" in message
    assert tree(precious) == before and leftovers(tmp_path, "data") == []


def test_overwrite_refuses_an_output_holding_files_hnmine_did_not_write(cli, small_inputs, tmp_path):
    out = tmp_path / "o"
    assert cli(*mine_args(small_inputs, out, *MINE_FAST)).exit_code == 0
    (out / "notes.txt").write_text("mine, not hnmine's")
    before = tree(out)
    assert "not an hnmine output" in one_line_error(cli(*mine_args(small_inputs, out, *MINE_FAST, "--overwrite")))
    assert tree(out) == before
    (out / "notes.txt").unlink()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tool"] == "hnmine mine" and manifest["format"] == "mine" and manifest["format_version"] == 1
    assert set(manifest["files"]) == {p.name for p in out.iterdir()} - {"manifest.json", "_SUCCESS"}
    assert output_format(out) == "mine"
    original = (out / "user.txt").read_bytes()
    (out / "user.txt").write_text("rewritten by someone else")  # another size than the manifest lists
    assert output_format(out) is None
    (out / "user.txt").write_bytes(original)
    assert output_format(out) == "mine"
    (out / "_SUCCESS").unlink()  # an hnmine manifest without _SUCCESS: not a complete output
    assert output_format(out) is None
    assert "not an hnmine output" in one_line_error(cli(*mine_args(small_inputs, out, *MINE_FAST, "--overwrite")))


def test_an_output_written_before_manifests_had_a_format_is_still_replaced(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "hard_neg_edge.parquet").write_bytes(b"x")
    (out / "manifest.json").write_text(json.dumps({"tool": "hnmine mine", "options": {}, "summary": {}}))
    (out / "_SUCCESS").write_text("")
    assert output_format(out) == "mine"
    with Publication(out, overwrite=True) as publication, publication.staging_dir() as staging:
        (staging / "user.txt").write_text("new")
        publication.commit({"tool": "hnmine mine"})
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "manifest.json", "user.txt"]


def test_target_is_checked_again_at_commit(tmp_path):
    """Foreign data put at --out while hnmine writes is never replaced: the swap is checked and undone."""
    out = tmp_path / "o"
    with Publication(out) as publication, publication.staging_dir() as staging:
        (staging / "t.txt").write_text("new")
        out.mkdir()
        (out / "theirs.txt").write_text("keep me")
        with pytest.raises(InputError, match="not an hnmine output"):
            publication.commit({"tool": "hnmine mine"})
    assert tree(out) == {"theirs.txt": b"keep me"}

    (out / "theirs.txt").unlink()
    with Publication(out) as publication, publication.staging_dir() as staging:
        (staging / "t.txt").write_text("first")
        publication.commit({"tool": "hnmine mine"})
    with Publication(out, overwrite=True) as publication, publication.staging_dir() as staging:
        (staging / "t.txt").write_text("second")
        (out / "t.txt").write_text("edited by hand")  # the previous output changed meanwhile
        with pytest.raises(InputError, match="not an hnmine output"):
            publication.commit({"tool": "hnmine mine"})
    assert (out / "t.txt").read_text() == "edited by hand"
    assert leftovers(tmp_path, "o") == []


def test_embedding_dirs_replace_only_embeddings_hnmine_wrote(cli, tmp_path):
    emb = tmp_path / "emb"
    emb.mkdir()
    (emb / "user.parquet").write_bytes(b"somebody's table")
    result = cli("svd", "--positives", SAMPLE / "train.txt", "--dim", "4", "--out-dir", emb)
    assert "not an hnmine output" in one_line_error(result)
    assert tree(emb) == {"user.parquet": b"somebody's table"}

    (emb / "user.parquet").unlink()  # an empty directory is fine, and so is hnmine's own, again
    assert cli("svd", "--positives", SAMPLE / "train.txt", "--dim", "4", "--out-dir", emb).exit_code == 0
    assert json.loads((emb / "manifest.json").read_text())["tool"] == "hnmine svd"
    assert cli("svd", "--positives", SAMPLE / "train.txt", "--dim", "4", "--seed", "1", "--out-dir", emb).exit_code == 0
    assert cli("blend", emb, emb, "--out-dir", emb).exit_code == 0  # blend over an embeddings dir hnmine wrote
    assert output_format(emb) == "embeddings" and leftovers(tmp_path, "emb") == []

    mined = tmp_path / "mined"  # another kind of hnmine output is not replaced by embeddings
    ids = np.arange(3)
    write_embedding_dir(mined, ids, np.ones((3, 2)), ids, np.ones((3, 2)))
    manifest = json.loads((mined / "manifest.json").read_text())
    (mined / "manifest.json").write_text(json.dumps({**manifest, "format": "mine"}))
    assert "holds hnmine's mine output, not embeddings" in one_line_error(cli("blend", emb, emb, "--out-dir", mined))


def test_run_refuses_a_directory_whose_run_json_hnmine_did_not_write(cli, tmp_path):
    for text in ("not json", '["a list"]', json.dumps({"tool": "other", "train": {}})):
        out = tmp_path / "run"
        out.mkdir(exist_ok=True)
        (out / "run.json").write_text(text)
        (out / "round_00").mkdir(exist_ok=True)  # an incomplete round would be deleted by a resume
        (out / "round_00" / "theirs.txt").write_text("keep me")
        result = cli("run", "--positives", SAMPLE / "train.txt", "--out", out, "--iterations", "1", "--quiet")
        assert "not an hnmine run" in one_line_error(result)
        assert (out / "round_00" / "theirs.txt").read_text() == "keep me" and (out / "run.json").read_text() == text
        assert leftovers(tmp_path, "run") == []


# ------------------------------------------------------------------------------- output path cases


def test_unwritable_out_is_one_line_and_writes_nothing(cli, small_inputs, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    before = sorted(p.name for p in tmp_path.iterdir())
    for out in (Path("/proc/hnmine-out"), Path("/sys/hnmine-out"), tmp_path / "dangling", tmp_path / "file" / "out",
                tmp_path / "file"):
        one_line_error(cli(*mine_args(small_inputs, out, *MINE_FAST)))
        assert not os.path.lexists(out) or out.name in ("dangling", "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "missing").exists() and (tmp_path / "file").read_text() == "x"
    assert "symbolic link to a missing path" in cli(*mine_args(small_inputs, tmp_path / "dangling")).stderr
    assert f"{tmp_path / 'file'} is not a directory" in cli(*mine_args(small_inputs, tmp_path / "file" / "o")).stderr


def test_symlinked_out_publishes_at_the_real_location(cli, small_inputs, tmp_path):
    real, link = tmp_path / "real" / "o", tmp_path / "o-link"
    assert cli(*mine_args(small_inputs, real, *MINE_FAST)).exit_code == 0
    link.symlink_to(real)
    first = outputs(real)
    assert "--overwrite" in one_line_error(cli(*mine_args(small_inputs, link, *MINE_FAST)))
    result = cli(*mine_args(small_inputs, link, *MINE_FAST, "--seed", "3", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert (real / "_SUCCESS").exists() and outputs(real) != first
    assert json.loads((link / "manifest.json").read_text())["options"]["seed"] == 3
    assert leftovers(tmp_path, "o-link") == [] and leftovers(real.parent, "o") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o-link", "real"]


# --------------------------------------------------------------------- real processes: lock, kill -9


def start_mine(inputs: tuple[Path, Path, Path], out: Path, log: Path, *extra: str) -> subprocess.Popen:
    """``hnmine mine`` in its own process, one progress line per 8 users (so it can be caught mid-run)."""
    args = mine_args(inputs, out, "--rank-window", "1:20", "--num-hard", "2", "--chunk-size", "8", "--threads", "1",
                     *extra)
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-m", "hnmine", *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=handle)


def wait_for_line(proc: subprocess.Popen, log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"exited {proc.returncode} before '{text}': {log.read_text()}"
        assert time.monotonic() < deadline, f"no '{text}' in {timeout} s"
        time.sleep(0.005)


def hnmine(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hnmine", *map(str, args)], capture_output=True, text=True,
                          check=False)


def test_second_writer_fails_fast_naming_the_holder_or_waits(small_inputs, tmp_path):
    out, log = tmp_path / "o", tmp_path / "a.log"
    holder = start_mine(small_inputs, out, log)
    try:
        wait_for_line(holder, log, "mined 8/")
        holder.send_signal(signal.SIGSTOP)  # held mid-run: staging written, lock held
        second = hnmine(*mine_args(small_inputs, out, *MINE_FAST))
        assert second.returncode == 75, second.stderr
        assert second.stderr.count("\n") == 1 and f"locked by another hnmine process (pid {holder.pid} on " in second.stderr
        info = json.loads((tmp_path / ".o.lock").read_text())
        assert info["pid"] == holder.pid and info["host"] == socket.gethostname() and "mine" in info["command"]
        started = time.monotonic()
        assert hnmine(*mine_args(small_inputs, out, *MINE_FAST, "--wait-lock", "1")).returncode == 75
        assert time.monotonic() - started >= 1
        assert not out.exists()

        holder.send_signal(signal.SIGCONT)  # the waiter gets the lock once the holder has published
        waiter = hnmine(*mine_args(small_inputs, out, *MINE_FAST, "--seed", "7", "--overwrite",
                                   "--wait-lock", "300"))
        assert holder.wait(timeout=300) == 0, log.read_text()
        assert waiter.returncode == 0, waiter.stderr
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((out / "manifest.json").read_text())["options"]["seed"] == 7
    assert leftovers(tmp_path, "o") == []


def test_kill_9_mid_run_keeps_the_previous_output_and_the_rerun_cleans_up(small_inputs, tmp_path):
    out, log = tmp_path / "o", tmp_path / "a.log"
    assert hnmine(*mine_args(small_inputs, out, *MINE_FAST)).returncode == 0
    previous = tree(out)
    interrupted = start_mine(small_inputs, out, tmp_path / "int.log", "--seed", "1", "--overwrite")
    wait_for_line(interrupted, tmp_path / "int.log", "mined 8/")
    interrupted.send_signal(signal.SIGINT)  # Ctrl-C: exit 130, and it cleans up after itself
    assert interrupted.wait(timeout=120) == 130
    assert leftovers(tmp_path, "o") == [] and tree(out) == previous

    (tmp_path / ".o.tmp-notmine").mkdir()  # not a name hnmine gives its staging: left alone
    victim = start_mine(small_inputs, out, log, "--seed", "1", "--overwrite")
    wait_for_line(victim, log, "mined 8/")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    stale = [name for name in leftovers(tmp_path, "o") if name.startswith(".o.tmp-") and name != ".o.tmp-notmine"]
    assert len(stale) == 1 and any((tmp_path / stale[0]).iterdir())  # what the kill left behind
    assert json.loads((tmp_path / ".o.lock").read_text())["pid"] == victim.pid  # a dead holder's lock
    assert tree(out) == previous

    args = ["--chunk-size", "8", "--seed", "1", *MINE_FAST]
    rerun = hnmine(*mine_args(small_inputs, out, *args, "--overwrite"))
    assert rerun.returncode == 0, rerun.stderr
    assert leftovers(tmp_path, "o") == [".o.tmp-notmine"]
    clean = tmp_path / "clean"
    assert hnmine(*mine_args(small_inputs, clean, *args)).returncode == 0
    assert outputs(out) == outputs(clean)


def test_run_directory_is_locked(tmp_path):
    out, log = tmp_path / "run", tmp_path / "a.log"
    args = ["run", "--positives", SAMPLE / "train.txt", "--iterations", "1", "--dim", "8", "--epochs", "1",
            "--num-sample", "128", "--threads", "1"]
    with open(log, "w") as handle:
        holder = subprocess.Popen([sys.executable, "-m", "hnmine", *map(str, args), "--out", str(out)],
                                  stdout=subprocess.DEVNULL, stderr=handle)
    try:
        wait_for_line(holder, log, "round 0: training")
        holder.send_signal(signal.SIGSTOP)
        second = hnmine(*args, "--out", out, "--quiet")
        assert second.returncode == 75 and f"(pid {holder.pid} on " in second.stderr, second.stderr
        assert json.loads((out / "run.json").read_text())["tool"] == "hnmine run"
    finally:
        holder.kill()
        holder.wait()
    resumed = hnmine(*args, "--out", out, "--quiet")  # the dead holder's lock is taken over
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "round_00" / "manifest.json").exists() and leftovers(tmp_path, "run") == []


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_wait_lock_must_be_seconds(cli, small_inputs, tmp_path, value):
    assert "--wait-lock must be" in one_line_error(cli(*mine_args(small_inputs, tmp_path / "o", "--wait-lock", value)))
    assert sorted(tmp_path.iterdir()) == []
