"""``--engine ray``: the users mapped over a Ray actor pool publish the local engine's bytes."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq

from tests.conftest import SAMPLE, published_bytes


def _summary(out):
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    summary.pop("timings")
    summary.pop("out")
    return summary


def _users_in_parts(user, folder, parts=3):
    """The user table as a directory of ``parts`` parquet files: several Ray read tasks and blocks."""
    table = pq.read_table(user)
    folder.mkdir()
    step = -(-table.num_rows // parts)
    for k in range(parts):
        pq.write_table(table.slice(k * step, step), folder / f"part-{k}.parquet", row_group_size=500)
    return folder


def test_ray_publishes_the_local_bytes(ray_cluster, cli, sample_embeddings, sample_teacher, tmp_path):
    user, item = sample_embeddings
    users = _users_in_parts(user, tmp_path / "users")
    # an approximate index (so the audit runs), the per-item cap, margins (on a teacher's scores), adaptive
    # windows (their side table) and the window sketch: every global step
    common = ["mine", "--users", users, "--items", item, "--positives", SAMPLE / "train.txt", "--seed", 3,
              "--strategy", "softmax-v", "--max-item-negatives", 4, "--relative-margin", 0.05,
              "--teacher-users", sample_teacher[0], "--teacher-items", sample_teacher[1], "--adaptive-window", 50,
              "--index", "ivf", "--nlist", 16, "--nprobe", 4, "--audit-sample", 300, "--threads", 1, "--quiet"]
    runs = {"local": ["--engine", "local", "--chunk-size", 1000],
            "ray2": ["--engine", "ray", "--workers", 2, "--chunk-size", 450]}
    for name, extra in runs.items():
        result = cli(*common, *extra, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
    local = published_bytes(tmp_path / "local")
    assert set(local) >= {"hard_neg_edge.parquet", "hard_neg_edge.txt", "item.txt", "pos_edge.txt", "_SUCCESS",
                          "user_bucket.parquet"}
    assert published_bytes(tmp_path / "ray2") == local
    summary = _summary(tmp_path / "local")
    assert summary["audit"]["users"] == 300 and summary["window"]["sample_users"] > 0 and summary["adaptive"]
    got = _summary(tmp_path / "ray2")
    assert got.pop("chunk_size") == 450 and summary.pop("chunk_size") == 1000
    assert got == summary


def test_ray_with_item_shards_equals_one_local_index(ray_cluster, cli, sample_embeddings, tmp_path):
    """One worker (the test above has two), three item blocks, against one local index."""
    user, item = sample_embeddings
    common = ["mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt", "--rank-window", "21:120",
              "--num-hard", 5, "--quiet"]
    assert cli(*common, "--out", tmp_path / "local").exit_code == 0
    result = cli(*common, "--engine", "ray", "--workers", 1, "--item-shards", 3, "--chunk-size", 800,
                 "--out", tmp_path / "ray")
    assert result.exit_code == 0, result.output
    assert published_bytes(tmp_path / "ray") == published_bytes(tmp_path / "local")


def test_bad_vectors_fail_in_one_line_on_ray(ray_cluster, cli, sample_embeddings, tmp_path):
    user, item = sample_embeddings
    table = pq.read_table(user)
    vectors = table.column("embedding").to_pylist()
    vectors[1234][0] = float("nan")
    import pyarrow as pa

    bad = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(1, "embedding", pa.array(vectors, table.schema.field("embedding").type)), bad)
    result = cli("mine", "--users", bad, "--items", item, "--positives", SAMPLE / "train.txt", "--engine", "ray",
                 "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 2
    assert "nan at row 1234" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_missing_ray_is_one_line_exit_2(sample_embeddings, tmp_path):
    user, item = sample_embeddings
    code = ("import sys; sys.modules['ray'] = None\n"  # what an install without the extra sees: ImportError
            "from hnmine.cli.main import main; sys.argv = ['hnmine', *sys.argv[1:]]; main()")
    args = ["mine", "--users", user, "--items", item, "--positives", SAMPLE / "train.txt", "--out", tmp_path / "o",
            "--engine", "ray"]
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hnmine: error: --engine ray needs Ray, which is not installed: pip install 'hnmine[ray]'"]
    assert not (tmp_path / "o").exists()


def test_ray_workers_read_s3_users_themselves_to_the_local_bytes(ray_cluster, s3_env, cli, sample_embeddings,
                                                                 tmp_path):
    """Users as a directory of parquet objects on S3: the read tasks get the objects' paths and the store's
    filesystem (not the driver's local copy) and read them with the workers' own credentials."""
    from hnmine.io.embeddings import EmbeddingSource
    from hnmine.mining.ray_engine import user_paths

    user, item = sample_embeddings
    bucket = s3_env.bucket()
    users = s3_env.upload(_users_in_parts(user, tmp_path / "users"), f"{bucket}/users")
    paths, store = user_paths(users, EmbeddingSource(users))
    assert paths == [f"{bucket}/users/part-{k}.parquet" for k in range(3)] and store.type_name == "s3"
    common = ["mine", "--items", item, "--positives", SAMPLE / "train.txt", "--rank-window", "21:120",
              "--num-hard", 5, "--threads", 1, "--quiet"]
    assert cli(*common, "--users", tmp_path / "users", "--out", tmp_path / "local").exit_code == 0
    result = cli(*common, "--users", users, "--engine", "ray", "--workers", 2, "--chunk-size", 700,
                 "--out", tmp_path / "ray")
    assert result.exit_code == 0, result.output
    assert published_bytes(tmp_path / "ray") == published_bytes(tmp_path / "local")
