"""Fault injection: real ``hnmine`` processes SIGKILLed at named points (hnmine.faults).

After each kill the previous output is intact, nothing partial carries ``_SUCCESS``, and a rerun
writes the same bytes as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hnmine import MineConfig, mine
from hnmine.embed.svd import write_svd_embeddings
from hnmine.io.positives import read_positives
from tests.conftest import ROOT, SAMPLE, SHARED

TABLES = ("hard_neg_edge", "item", "pos_edge", "user")


def files_of(root: Path) -> dict[str, bytes]:
    """Every non-hidden file under ``root`` by relative path (hidden staging of a killed run is left
    to the publisher's own cleanup)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def tables_of(root: Path) -> dict[str, bytes]:
    """A mine output's files but its manifest (which records paths, options and timings)."""
    return {name: data for name, data in files_of(root).items() if Path(name).name != "manifest.json"}


def assert_success_only_on_complete(root: Path) -> None:
    for marker in root.rglob("_SUCCESS"):
        out = marker.parent
        assert (out / "manifest.json").exists(), out
        if json.loads((out / "manifest.json").read_text())["format"] != "mine":
            continue  # a round's embeddings: published by the same writer, checked by the resume below
        names = {p.name for p in out.iterdir()}
        assert {f"{t}.parquet" for t in TABLES} <= names, (out, names)
        assert json.loads((out / "manifest.json").read_text())["summary"]["rows"]["hard_neg_edge"] > 0


def killed(args: list[str | Path], fault: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``hnmine`` with HNMINE_FAULT set; it must die by SIGKILL (so the point was reached)."""
    env = {**os.environ, "HNMINE_FAULT": fault}
    result = subprocess.run([sys.executable, "-m", "hnmine", *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == -signal.SIGKILL, f"{fault}: rc {result.returncode}\n{result.stderr[-2000:]}"
    return result


# ------------------------------------------------------------------------------------------------ mine

# (fault, whether the new output is already in place when the process dies)
MINE_POINTS = [
    ("mine.read", False), ("mine.index", False),
    ("mine.retrieve", False), ("mine.retrieve@3", False),
    ("mine.select", False), ("mine.select@2", False),
    ("mine.write", False), ("mine.write@3", False), ("mine.write.edges", False), ("mine.write.nodes", False),
    ("publish.manifest", False), ("publish.success", False), ("publish.exchanged", True),
]


def mine_config(user: Path, item: Path, positives: Path, out: Path, seed: int, chunk: int) -> MineConfig:
    return MineConfig.of(users=str(user), items=str(item), positives=str(positives), out=str(out),
                         rank_window="21:120", num_hard=5, strategy="softmax-v", seed=seed, chunk_size=chunk,
                         overwrite=True)


def mine_args(config: MineConfig) -> list[str]:
    """The same job on the command line (options by the names manifest.json records)."""
    options = config.options()
    given = ("users", "items", "positives", "out", "rank_window", "num_hard", "strategy", "seed", "chunk_size")
    return ["mine", *(arg for name in given for arg in (f"--{name.replace('_', '-')}", str(options[name]))),
            "--overwrite", "--quiet"]


class MineCase:
    """A clean output (seed 7) and a previous output (seed 3) of the same inputs."""

    def __init__(self, user: Path, item: Path, positives: Path, root: Path, chunk: int) -> None:
        self.inputs = (user, item, positives)
        self.chunk = chunk
        self.root = root
        mine(mine_config(*self.inputs, root / "clean", seed=7, chunk=chunk))
        mine(mine_config(*self.inputs, root / "previous", seed=3, chunk=chunk))
        self.clean = tables_of(root / "clean")
        self.previous = files_of(root / "previous")
        assert self.clean != tables_of(root / "previous")

    def check(self, fault: str, new_in_place: bool, name: str) -> None:
        out = self.root / name
        shutil.copytree(self.root / "previous", out)
        config = mine_config(*self.inputs, out, seed=7, chunk=self.chunk)
        killed(mine_args(config), fault)
        if new_in_place:
            assert tables_of(out) == self.clean, f"{fault}: the published output is not the new complete one"
        else:
            assert files_of(out) == self.previous, f"{fault}: the previous output changed"
        assert_success_only_on_complete(self.root)
        assert {p.name for p in self.root.iterdir() if not p.name.startswith(".")} == {"clean", "previous", name}
        mine(config)  # the rerun
        assert tables_of(out) == self.clean, f"{fault}: the rerun's bytes differ from a clean run's"
        shutil.rmtree(out)


@pytest.fixture(scope="module")
def sample_mine_case(sample_embeddings, tmp_path_factory) -> MineCase:
    user, item = sample_embeddings
    # 1,000 users a chunk: three chunks, so kills land between chunks too
    return MineCase(user, item, SAMPLE / "train.txt", tmp_path_factory.mktemp("faults_mine"), chunk=1000)


@pytest.mark.parametrize(("fault", "new_in_place"), MINE_POINTS, ids=[p for p, _ in MINE_POINTS])
def test_mine_killed_keeps_previous_output_and_rerun_is_identical(sample_mine_case, fault, new_in_place):
    sample_mine_case.check(fault, new_in_place, "out-" + fault.replace("@", "-"))


@pytest.mark.slow
def test_mine_killed_at_gowalla_size(tmp_path):
    path = SHARED / "gowalla" / "train.txt"
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared/datasets beside the repository")
    user, item = write_svd_embeddings(read_positives(path), tmp_path / "emb", dim=32, seed=0)
    case = MineCase(user, item, path, tmp_path / "mine", chunk=8192)
    for fault, new_in_place in MINE_POINTS:
        case.check(fault, new_in_place, "out-" + fault.replace("@", "-"))


# ------------------------------------------------------------------------------------------------- run

# One run directory killed at every step in turn, each rerun resuming it and dying at the next
# point: (fault, what must exist after the kill). Two rounds, so both a round without mining and one
# with it are covered.
RUN_POINTS = [
    ("run.prepare.run_json", "run.json"),
    ("run.prepare.valid", "data/valid.parquet"),
    ("run.prepare.data", "data/train.parquet"),
    ("train.epoch", "data/train.parquet"),
    ("run.round.trained", "round_00/model.pt"),
    ("run.round.exported", "round_00/embeddings/item.parquet"),
    ("run.round.metrics", "round_00/metrics.json"),
    ("run.round.done", "round_00/manifest.json"),
    ("mine.read", "round_00/manifest.json"),
    ("mine.select", "round_00/manifest.json"),
    ("publish.success", "round_00/manifest.json"),
    ("run.round.mined", "round_01/mined/_SUCCESS"),
    ("train.epoch", "round_01/mined/_SUCCESS"),
    ("run.round.done", "round_01/manifest.json"),
    ("run.metrics", "metrics.json"),
]
RUN_ARGS = ["--positives", SAMPLE / "train.txt", "--test", SAMPLE / "test.txt", "--iterations", "2", "--epochs", "2",
            "--refine-epochs", "1", "--dim", "8", "--batch-size", "512", "--window-width", "40", "--num-hard", "5",
            "--threads", "1", "--quiet"]


def run_files(out: Path) -> dict[str, bytes]:
    """A run directory's files that must not depend on interruptions: everything but the records of
    time and place (manifests, the plot, the report, the log); metrics without seconds; model weights, not the pickle."""
    files: dict[str, bytes] = {}
    for name, data in files_of(out).items():
        path = Path(name)
        if path.name in ("manifest.json", "metrics.png", "report.html", "run.log") or path.name.endswith(".tmp"):
            continue
        if path.name == "model.pt":
            state = torch.load(out / path, map_location="cpu", weights_only=True)["state"]
            data = b"".join(state[key].numpy().tobytes() for key in sorted(state))
        elif path.name in ("metrics.json", "best_round.json"):
            data = json.dumps(_without_times(json.loads(data)), sort_keys=True).encode()
        files[name] = data
    return files


def _without_times(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items()
                if not k.endswith("_seconds") and k not in ("model", "embeddings")}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def complete_rounds(out: Path) -> dict[str, bytes]:
    return {name: data for name, data in files_of(out).items()
            if name.startswith("round_") and (out / name.split("/")[0] / "manifest.json").exists()}


def test_run_killed_at_every_step_resumes_to_the_same_bytes(tmp_path):
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "hnmine", "run", *map(str, RUN_ARGS), "--out", clean], cwd=ROOT,
                   check=True, capture_output=True)
    out = tmp_path / "resumed"
    for fault, expected in RUN_POINTS:
        before = complete_rounds(out) if out.exists() else {}
        killed(["run", *RUN_ARGS, "--out", out], fault)
        assert (out / expected).exists(), f"{fault}: {expected} missing"
        after = complete_rounds(out)
        assert {k: after.get(k) for k in before} == before, f"{fault}: a complete round changed"
        assert_success_only_on_complete(out)
        for mined in out.glob("round_*/mined"):
            assert (mined / "_SUCCESS").exists(), f"{fault}: {mined} published without _SUCCESS"
    result = subprocess.run([sys.executable, "-m", "hnmine", "run", *map(str, RUN_ARGS), "--out", out], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert run_files(out) == run_files(clean)


def test_run_directory_left_before_run_json_is_resumed_and_foreign_ones_refused(tmp_path):
    """A kill between data/ and run.json (the order of earlier versions) left a directory every rerun
    refused; it is an unfinished start, written anew. Anything else without run.json stays refused."""
    from hnmine.errors import InputError
    from hnmine.loop.runner import RunConfig, _prepare

    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    (out / "data" / "train.parquet").write_bytes(b"partial")
    (out / "run.json.tmp").write_text("{")
    config = RunConfig.of(positives=str(SAMPLE / "train.txt"), out=str(out), test=str(SAMPLE / "test.txt"))
    train_path, valid, _ = _prepare(config, out)
    saved = json.loads((out / "run.json").read_text())
    assert (saved.pop("tool"), saved.pop("format_version")) == ("hnmine run", 1)
    assert saved == json.loads(json.dumps(config.identity(), default=str))
    assert read_positives(train_path).table.height + valid.table.height == read_positives(SAMPLE / "train.txt").table.height
    foreign = tmp_path / "foreign"
    (foreign / "data").mkdir(parents=True)
    (foreign / "data" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an hnmine run"):
        _prepare(RunConfig.of(positives=str(SAMPLE / "train.txt"), out=str(foreign)), foreign)
    assert (foreign / "data" / "notes.txt").read_text() == "mine"
