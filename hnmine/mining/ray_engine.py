"""``hnmine mine --engine ray``: the users as a Ray dataset, each batch mined by an actor pool.

The per-chunk work is :func:`hnmine.mining.chunk.mine_chunk`, the function the local engine calls:
each actor builds its :class:`~hnmine.mining.chunk.ChunkContext` (the item index) once from the
shared inputs (:class:`~hnmine.mining.chunk.ChunkInputs`, put in Ray's object store once), and
every batch of users comes back as :class:`~hnmine.mining.chunk.ChunkResult` objects: the batch's
hard_neg_edge rows and its share of the summary. The driver takes them in user-row order and writes
and publishes exactly as the local engine does, so the global steps (the per-item cap, the audit,
the statistics, the window sketch) and the published bytes are the same (docs/scale.md).

Ray is an optional dependency (``hnmine[ray]``), imported only here.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from hnmine.errors import InputError
from hnmine.io import storage
from hnmine.io.embeddings import Embeddings, EmbeddingSource, _ids_to_numpy, _vectors_to_numpy
from hnmine.mining.chunk import ChunkContext, ChunkInputs, ChunkResult, mine_chunk

__all__ = ["mine_chunks_on_ray", "require_ray", "user_paths"]

MISSING = "--engine ray needs Ray, which is not installed: pip install 'hnmine[ray]'"


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(MISSING) from None
    return ray


def _connect(ray: Any, address: str, cpus: int) -> bool:
    """Join the cluster ``address`` names (``local``: start one for this run); True if this run started
    the connection (and so ends it). A process already connected (``ray.init`` called) keeps its own."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    try:
        if address == "local":
            ray.init(address="local", num_cpus=cpus, **options)  # a new cluster, even beside a running one
        else:
            ray.init(address=address, **options)
    except ConnectionError as exc:
        raise InputError(f"--ray-address {address}: no Ray cluster there ({str(exc).splitlines()[0]}); start one "
                         "with 'ray start --head', or pass --ray-address local to start one for this run") from None
    return True


class _ChunkMiner:
    """One actor of the pool: the item index built once; each batch of users mined by ``mine_chunk``."""

    def __init__(self, shared: list[Any], user_ids: list[Any]) -> None:
        import ray

        inputs: ChunkInputs = ray.get(shared[0])
        ids: np.ndarray = ray.get(user_ids[0])
        self.config = inputs.config
        self.inputs = inputs
        self.context = ChunkContext(inputs)
        self.order = np.argsort(ids, kind="stable")
        self.sorted_ids = ids[self.order]

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Each id's row in the users table (its place in the local engine's order)."""
        at = np.searchsorted(self.sorted_ids, ids)
        found = (at < len(self.sorted_ids)) & (self.sorted_ids[np.minimum(at, len(self.sorted_ids) - 1)] == ids)
        if not found.all():
            raise InputError(f"{self.config.inputs.users}: user id {ids[np.flatnonzero(~found)[0]]} was not in the table "
                             "when the run started (the input changed while mining)")
        return self.order[at]

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        results: list[ChunkResult | InputError]
        try:
            results = list(self._mine(batch))
        except InputError as exc:  # named by the driver as the local engine names it: one line, exit 2
            results = [exc]
        return pa.table({"result": pa.array([pickle.dumps(r) for r in results], pa.large_binary())})

    def _mine(self, batch: Any) -> list[ChunkResult]:
        config = self.config
        where = str(config.inputs.users)
        ids = _ids_to_numpy(batch.column(0), where, self.inputs.id_column)
        rows = self._rows(ids)
        order = np.argsort(rows, kind="stable")
        rows, ids = rows[order], ids[order]
        vectors = batch.column(1).take(order)
        # a batch is one run of consecutive rows unless it spans files read out of order: one chunk per run
        runs = np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows) != 1) + 1)
        results = []
        for run in runs:
            if not len(run):
                continue
            first = int(rows[run[0]])
            matrix = _vectors_to_numpy(vectors.slice(int(run[0]), len(run)), where, self.inputs.vector_column, first,
                                       ids[run])
            results.append(mine_chunk(self.context, first, Embeddings(ids[run], matrix, where)))
        return results


def user_paths(given: str, users: EmbeddingSource) -> tuple[list[str], Any]:
    """The users' parquet files as Ray Data's read tasks open them, and the filesystem (None: local files).

    Users given as a URL are read from the store by the tasks themselves, wherever they run (the driver's
    local copy exists on the driver's machine only), through the filesystem this process built for the URL;
    pickled to the workers, it carries the endpoint and options, and each worker takes the store's
    credentials from its own environment (docs/scale.md). Same files, same order, same bytes.
    """
    files = [str(f) for f in users.files]
    if not storage.is_url(given):
        return files, None
    urls = [storage.reword(f) for f in files]
    if not all(storage.is_url(u) for u in urls):  # not a copy this process made: read it where it is
        return files, None
    store, _ = storage.filesystem(given)
    return [storage.filesystem(u)[1] for u in urls], store


def require_ray() -> None:
    """Fail with one line (exit 2) before anything is read when Ray is not installed."""
    _ray()


def mine_chunks_on_ray(shared: ChunkInputs, users: EmbeddingSource, user_ids: np.ndarray,
                       chunk_size: int) -> Iterator[ChunkResult]:
    """Every user's :class:`ChunkResult`, mined on Ray, yielded in user-row order (as the local engine's).

    Connects (or starts a cluster) now; the batches are mined as the results are taken.
    """
    ray = _ray()
    config = shared.config
    if users.is_npy:
        raise InputError(f"{config.inputs.users}: --engine ray reads the users from parquet (a file, a directory or URLs), "
                         "not .npy")
    threads = config.execution.threads_per_worker
    started = _connect(ray, config.execution.ray_address, config.execution.workers * threads + 1)
    try:
        # Ray Data's own lines (the plan, start and finish, a warning that its bars are off) are not the
        # run's: hnmine reports progress; errors still show
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        shared_ref = ray.put(replace(shared, config=replace(config, execution=replace(config.execution, threads=threads))))
        ids_ref = ray.put(user_ids)
        # reading takes no CPU of its own: the pool's actors hold the CPUs, and reads waiting for one
        # would starve them (a cluster with exactly workers x threads CPUs never started a read)
        paths, store = user_paths(str(config.inputs.users), users)
        dataset = ray.data.read_parquet(paths, filesystem=store, num_cpus=0).select_columns(
            [shared.id_column, shared.vector_column])
        # The pool grows from one actor to --workers: Ray Data lists the files in a task that needs a
        # CPU, and a pool started at full size on a cluster of exactly workers x threads CPUs waited for
        # it forever.
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=config.execution.workers)
        mined = dataset.map_batches(
            _ChunkMiner, fn_constructor_args=([shared_ref], [ids_ref]), batch_size=chunk_size,
            batch_format="pyarrow", compute=pool, num_cpus=threads,
        )
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return _results(ray, mined, len(user_ids), started)


def _results(ray: Any, mined: Any, n_users: int, started: bool) -> Iterator[ChunkResult]:
    try:
        yield from _in_row_order(mined.iter_batches(batch_size=None, batch_format="pyarrow"), n_users)
    finally:
        if started:
            ray.shutdown()


def _in_row_order(batches: Iterator[Any], n_users: int) -> Iterator[ChunkResult]:
    """Results in user-row order, whatever order the batches arrive in (a small reorder buffer)."""
    pending: dict[int, ChunkResult] = {}
    expected = 0
    for batch in batches:
        for blob in batch.column("result").to_pylist():
            result = pickle.loads(blob)
            if isinstance(result, InputError):
                raise result
            pending[result.first_row] = result
        while expected in pending:
            result = pending.pop(expected)
            expected += result.users
            yield result
    if expected != n_users:
        raise InputError(f"the users table changed while mining: {expected:,} of {n_users:,} users were read")
