"""``mine --max-memory``: chunks sized so the process's peak resident memory stays under the budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hnmine import MineConfig
from hnmine.errors import InputError
from hnmine.options import parse_size
from tests.conftest import ROOT, SAMPLE

# Runs a command as the only child of a fresh interpreter and prints the child's peak RSS in KiB.
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(r.stderr); print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss(args: list[str | Path]) -> int:
    """Peak resident bytes of ``hnmine ARGS`` run in its own process (it must succeed)."""
    result = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "hnmine", *map(str, args)],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    code, kib = result.stdout.split()
    assert code == "0", result.stderr[-2000:]
    return int(kib) * 1024


@pytest.fixture(scope="module")
def wide_window_input(tmp_path_factory) -> list[str | Path]:
    """8,000 users x 5,000 items with a 1,500-rank window: one 8,000-user chunk needs ~300 MiB more than
    a small one (search results, candidates and windows grow with chunk x depth)."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(0)
    for name, n in (("user", 8000), ("item", 5000)):
        vectors = rng.standard_normal((n, 16)).astype(np.float32)
        pl.DataFrame({"id": np.arange(n), "embedding": vectors}).write_parquet(root / f"{name}.parquet")
    users = np.repeat(np.arange(8000), 5)
    pl.DataFrame({"user_id": users, "item_id": rng.integers(0, 5000, len(users))}).write_parquet(root / "pos.parquet")
    return ["mine", "--users", root / "user.parquet", "--items", root / "item.parquet", "--positives",
            root / "pos.parquet", "--rank-window", "1:1500", "--num-hard", "10", "--formats", "parquet", "--quiet"]


def test_max_memory_keeps_peak_rss_under_the_budget(wide_window_input, tmp_path):
    unchunked = peak_rss([*wide_window_input, "--out", tmp_path / "all"])
    # a budget the default chunking (all 8,000 users at once) exceeds by 120 MiB
    budget = unchunked - (120 << 20)
    budgeted = peak_rss([*wide_window_input, "--out", tmp_path / "budget", "--max-memory", f"{budget >> 20}M"])
    assert budgeted <= budget, f"peak {budgeted >> 20} MiB over --max-memory {budget >> 20}M"
    manifest = json.loads((tmp_path / "budget" / "manifest.json").read_text())
    assert 64 <= manifest["summary"]["chunk_size"] < 8000
    assert ((tmp_path / "budget" / "hard_neg_edge.parquet").read_bytes()
            == (tmp_path / "all" / "hard_neg_edge.parquet").read_bytes())
    # --dry-run shows the same plan: its chunk size and an estimated peak within the budget
    result = subprocess.run([sys.executable, "-m", "hnmine", *map(str, wide_window_input), "--out", tmp_path / "plan",
                             "--max-memory", f"{budget >> 20}M", "--dry-run", "--json"],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    planned = json.loads(result.stdout)
    assert abs(planned["chunk_size"] - manifest["summary"]["chunk_size"]) <= 0.1 * manifest["summary"]["chunk_size"]
    assert planned["chunks"] >= 2 and planned["estimated_peak_memory_bytes"] <= budget
    assert not (tmp_path / "plan").exists()


def test_budget_below_the_inputs_is_refused_in_one_line(cli, sample_embeddings, tmp_path):
    user, item = sample_embeddings
    result = cli("mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt", "--out", tmp_path / "o",
                 "--max-memory", "20M")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hnmine: error: --max-memory 20M: the inputs and the item index")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("text", "size"), [("2G", 2 << 30), ("500M", 500 << 20), ("1.5g", 3 << 29),
                                           ("64KiB", 64 << 10), ("123456", 123456)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1G", "2X", "G", "1e9", "nan"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(InputError, match="--max-memory"):
        MineConfig.of(users="", items="", positives="", out="", max_memory=text).validate()
