"""Shared fixtures and helpers: real data slices (sample_data/, ../shared/datasets), a CLI runner.

Test modules import plain helpers and constants from here (``from tests.conftest import ...``),
never from one another: ``tests/test_layout.py`` checks that.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hnmine.cli.main import app
from typer.testing import CliRunner

from hnmine.embed.svd import write_svd_embeddings
from hnmine.io.positives import read_positives
from hnmine.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
SHARED = ROOT.parent / "shared" / "datasets"

# The training tests' data: the first 600 users of sample_data (a real Gowalla slice) keep every
# training test to seconds. TRAIN/TEST are those users' lines of train.txt/test.txt, TINY the
# matching `hnmine train`/`run` options and tiny_config the matching TrainConfig.
SMALL_USERS = 600
SMALL = Path(tempfile.mkdtemp(prefix="hnmine-train-test-"))
for _name in ("train.txt", "test.txt"):
    _lines = (SAMPLE / _name).read_text().splitlines()[:SMALL_USERS]
    (SMALL / _name).write_text("\n".join(_lines) + "\n")
TRAIN = SMALL / "train.txt"
TEST = SMALL / "test.txt"
TINY = ["--dim", "8", "--epochs", "1", "--batch-size", "2048", "--num-sample", "128", "--threads", "1", "--quiet"]


def tiny_config(tmp_path: Path, **kwargs) -> TrainConfig:
    base = {"positives": str(TRAIN), "out": str(tmp_path / "model.pt"), "dim": 8, "epochs": 1, "batch_size": 2048,
            "num_sample": 128, "threads": 1}
    base.update(kwargs)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def sample_embeddings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """SVD embeddings of sample_data/train.txt (a real Gowalla slice): (user.parquet, item.parquet)."""
    out = tmp_path_factory.mktemp("sample_emb")
    return write_svd_embeddings(read_positives(SAMPLE / "train.txt"), out, dim=32, seed=0)


@pytest.fixture(scope="session")
def ml1m_embeddings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """SVD embeddings of the full ml-1m train split (6,040 users x 3,706 items)."""
    path = SHARED / "ml-1m" / "train.txt"
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared/datasets beside the repository")
    out = tmp_path_factory.mktemp("ml1m_emb")
    return write_svd_embeddings(read_positives(path), out, dim=32, seed=0)


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str | Path):
        return self.runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def cli() -> Cli:
    return Cli()


def lightgcn_positives(path: Path) -> dict[int, set[int]]:
    result: dict[int, set[int]] = {}
    for line in path.read_text().splitlines():
        tokens = [int(t) for t in line.split()]
        if tokens:
            result[tokens[0]] = set(tokens[1:])
    return result


def integer_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Small-integer vectors: every dot product is exact in float32, so any kernel agrees bit for bit."""
    return rng.integers(-3, 4, size=(n, dim)).astype(np.float32)


def csr(positives: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user positive item rows as the CSR (indptr, sorted int32 rows) retrieve_window takes."""
    indptr = np.concatenate([[0], np.cumsum([len(p) for p in positives])]).astype(np.int64)
    rows = np.concatenate([np.sort(p) for p in positives] + [np.zeros(0, dtype=np.int64)]).astype(np.int32)
    return indptr, rows


def published_bytes(out: Path) -> dict[str, bytes]:
    """Every file of a published output byte for byte, but the manifest (it records options and timings)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "manifest.json"}


@pytest.fixture(scope="session")
def ray_cluster():
    """Ray for the ``--engine ray`` tests, started once per session: the cluster at ``RAY_ADDRESS``
    (.ci/run starts one with ``ray start --head``), else a local one with 2 CPUs."""
    import os

    import ray
    import ray.data  # imported here: its log handler then holds the real stderr, not a CliRunner's (closed after)

    address = os.environ.get("RAY_ADDRESS")
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    if not ray.is_initialized():
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=2, **options)
    yield ray
    ray.shutdown()
