"""``hnmine run --out URL``: the loop's state on an object store (docs/storage.md, "A run on a store").

The rounds run in a local working directory, exactly as a local run (:mod:`hnmine.loop.runner`); after each
completed round :meth:`RemoteRun.push_round` publishes what it wrote to the URL: the round's mined tables
through the object-store committer (``manifest.json`` and ``_SUCCESS``), every other file of the round as
one object each, the round's ``manifest.json`` last (as locally, a round is complete once it is there),
then the run's ``metrics.json``, ``best_round.json``, ``metrics.png`` and ``run.log``. A rerun on a machine
without the working directory (:meth:`RemoteRun.pull`) downloads ``run.json``, ``data/``, each complete
round's metrics, manifest and mined tables and the last complete round whole, and goes on from there.

The URL's prefix is used only when it is empty or holds an hnmine run (its ``run.json``); a run holds
the prefix's lock (``.<name>.lock`` beside it, :class:`hnmine.io.publish.ObjectStoreLock`) throughout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hnmine import faults
from hnmine.errors import InputError, OutputLockedError
from hnmine.io import storage
from hnmine.io.committer import ObjectStoreLock
from hnmine.io.manifest import MANIFEST
from hnmine.io.publish import Publication

__all__ = ["RemoteRun", "default_work_dir"]

_ROUND = re.compile(r"round_\d{2,}")
# A run renews its lock every RENEW seconds; a lock not renewed for STALE seconds is a dead run's, wherever it
# ran (a container that is gone), and the next run takes it over. Seconds.
RENEW = 60.0
STALE = 600.0
# The run-level files (re)written after every round; run.json and data/ are written once, first.
SUMMARIES = ("metrics.json", "best_round.json", "metrics.png", "run.log")
_BLOCK = 8 << 20


def default_work_dir(address: str) -> Path:
    """A directory per URL under the user's cache directory: a rerun on this machine finds its rounds there."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    parts = address.split("://", 1)[-1].strip("/")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", parts)[-60:].strip("-.") or "run"
    return cache / "hnmine" / "runs" / f"{readable}-{hashlib.sha256(address.encode()).hexdigest()[:12]}"


class RemoteRun:
    """``with RemoteRun(url, work_dir) as remote:`` a run's prefix on an object store, locked, and the local
    working directory its rounds run in (``remote.work``)."""

    def __init__(self, address: str, work_dir: str | None, wait_lock: float = 0.0,
                 is_run_json: Callable[[Any], bool] = lambda data: True) -> None:
        self.url = storage.checked(address).rstrip("/")
        self.store, self.path = storage.filesystem(self.url)
        parent, _, name = self.path.rpartition("/")
        if not parent or not name:
            raise InputError(f"{self.url}: a run needs a prefix inside the bucket, not the bucket's root")
        with storage.store_errors(self.url, "read the run"):
            missing = storage.bucket_missing(self.store, self.path)
        if missing:
            raise InputError(f"{self.url}: cannot publish{missing}; create it first")
        self.work = Path(work_dir) if work_dir else default_work_dir(self.url)
        if not (isinstance(wait_lock, int | float) and wait_lock >= 0):
            raise InputError(f"--wait-lock must be a number of seconds >= 0, not {wait_lock}")
        self.wait = float(wait_lock)
        self.lock = ObjectStoreLock(self.store, f"{parent}/.{name}.lock", self.url)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._is_run_json = is_run_json
        self._check()

    # -- the prefix --------------------------------------------------------------------------------------

    def _files(self, under: str = "") -> dict[str, int]:
        """Every object under the run's prefix (or ``under`` inside it): relative name -> size."""
        from pyarrow import fs

        base = f"{self.path}/{under}".rstrip("/")
        infos = self.store.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
        cut = len(base.strip("/")) + 1
        return {info.path.lstrip("/")[cut:]: int(info.size) for info in infos if info.type == fs.FileType.File}

    def _check(self) -> None:
        """Refuse a prefix that holds anything but an hnmine run: it is never written into."""
        with storage.store_errors(self.url, "read the run"):
            files = self._files()
            if not files:
                return
            data: Any = None
            if "run.json" in files:
                with contextlib.suppress(ValueError):
                    data = json.loads(self._read("run.json"))
        if data is None or not self._is_run_json(data):
            raise InputError(f"{self.url}: exists and is not an hnmine run (no run.json written by hnmine run); "
                             "use another --out")

    def _read(self, name: str) -> bytes:
        with self.store.open_input_stream(f"{self.path}/{name}") as source:
            return bytes(source.read())

    def __enter__(self) -> RemoteRun:
        deadline = time.monotonic() + self.wait
        while True:
            with storage.store_errors(self.url, "take the run's lock"):
                self._take_over_stale()
            try:
                self.lock.acquire()
                break
            except OutputLockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(5.0, max(deadline - time.monotonic(), 0.01)))
        try:
            self._check()  # again, holding the lock
            self._renew()
        except BaseException:
            self.lock.release()
            raise
        self._renewer = threading.Thread(target=self._keep_renewing, name="hnmine-run-lock", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        self.lock.release()

    def _holder(self) -> dict[str, Any] | None:
        from pyarrow import fs

        if self.store.get_file_info(self.lock.path).type == fs.FileType.NotFound:
            return None
        with self.store.open_input_stream(self.lock.path) as source:
            try:
                data = json.loads(bytes(source.read()))
            except ValueError:
                return {}
        return data if isinstance(data, dict) else {}

    def _take_over_stale(self) -> None:
        """Delete the lock of a run that stopped renewing it :data:`STALE` seconds ago, on whatever host it
        ran (a container that is gone cannot release it); read again just before, so a renewed one stays."""
        holder = self._holder()
        if not holder or not isinstance(holder.get("renewed"), (int, float)) or time.time() - holder["renewed"] < STALE:
            return
        again = self._holder()
        if again is not None and again.get("token") == holder.get("token") and again.get("renewed") == holder["renewed"]:
            self.store.delete_file(self.lock.path)

    def _renew(self) -> None:
        """Rewrite the lock with the time now, while it is still this run's."""
        holder = self._holder()
        if holder is None or holder.get("token") != self.lock.token:
            return
        holder["renewed"] = time.time()
        with self.store.open_output_stream(self.lock.path) as sink:
            sink.write((json.dumps(holder) + "\n").encode())

    def _keep_renewing(self) -> None:
        while not self._stop.wait(RENEW):
            with contextlib.suppress(Exception):  # a failed renewal is retried; the run goes on
                self._renew()

    # -- down: resuming ------------------------------------------------------------------------------------

    def complete_rounds(self) -> int:
        """Rounds (from 0, contiguous) whose manifest.json is on the store."""
        with storage.store_errors(self.url, "read the run"):
            names = set(self._files())
        done = 0
        while f"round_{done:02d}/{MANIFEST}" in names:
            done += 1
        return done

    def pull(self) -> None:
        """Bring what a resumed run reads into the working directory, when it lacks it: ``run.json`` (a
        working directory holding another run's is refused), ``data/``, ``run.log``, and the complete
        rounds (metrics, manifests and mined tables of each; everything of the last, which the next round
        starts from, and of its --no-hard control)."""
        from pyarrow import fs

        with storage.store_errors(self.url, "read the run"):
            files = self._files()
            if "run.json" not in files:
                return
            local_json = self.work / "run.json"
            if self.work.is_dir() and any(self.work.iterdir()) and not local_json.exists():
                raise InputError(f"{self.work}: exists and is not a run's working directory (no run.json); "
                                 "pass another --work-dir")
            self.work.mkdir(parents=True, exist_ok=True)
            if local_json.exists() and json.loads(local_json.read_bytes()) != json.loads(self._read("run.json")):
                raise InputError(f"{self.work}: the working directory holds another run than {self.url}; "
                                 "pass another --work-dir")
            done = 0
            while f"round_{done:02d}/{MANIFEST}" in files:
                done += 1
            last = f"round_{done - 1:02d}/" if done else None
            control = f"control/round_{done - 1:02d}/" if done > 1 else None
            wanted = []
            for name in sorted(files):
                head = name.split("/", 1)[0]
                if any(part.startswith(".") for part in name.split("/")):
                    continue  # a committer's lock, staging or record: not the run's state
                if name in ("run.json", "run.log") or head == "data":
                    wanted.append(name)
                elif _ROUND.fullmatch(head) and int(head[6:]) < done:
                    inner = name.split("/", 1)[1]
                    if (last is not None and name.startswith(last)) or inner in ("metrics.json", MANIFEST) \
                            or inner.startswith("mined/"):
                        wanted.append(name)
                elif control is not None and name.startswith(control):
                    wanted.append(name)
            local = fs.LocalFileSystem()
            for name in wanted:
                target = self.work / name
                if target.exists() and (target.stat().st_size == files[name] or name == "run.log"):
                    continue  # a local run.log holds at least what was published of it
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.copy_files(f"{self.path}/{name}", str(target), source_filesystem=self.store,
                              destination_filesystem=local, use_threads=False)

    # -- up: publishing ------------------------------------------------------------------------------------

    def _put(self, local: Path, name: str, rewrite: bool = False) -> None:
        """One object: a single PUT, visible only once complete. ``rewrite``: a JSON record whose local
        paths are given as the URLs they are published at."""
        target = f"{self.path}/{name}"
        if rewrite:
            text = local.read_text().replace(json.dumps(str(self.work))[1:-1], self.url)
            with self.store.open_output_stream(target) as sink:
                sink.write(text.encode())
            return
        with open(local, "rb") as source, self.store.open_output_stream(target) as sink:
            shutil.copyfileobj(source, sink, _BLOCK)

    def push_start(self) -> None:
        """``run.json`` and ``data/``, once: what every round is trained from."""
        with storage.store_errors(self.url, "publish the run"):
            remote = self._files()
            for path in [self.work / "run.json", *sorted((self.work / "data").glob("*.parquet"))]:
                name = path.relative_to(self.work).as_posix()
                if remote.get(name) != path.stat().st_size:
                    self._put(path, name)

    def push_round(self, r: int) -> None:
        """Round ``r``'s files: its mined tables (the committer), its --no-hard control's files, its other
        files, its ``manifest.json`` last; then the run's summaries."""
        round_dir = self.work / f"round_{r:02d}"
        name = round_dir.name
        mined = round_dir / "mined"
        if (mined / MANIFEST).exists():
            self._publish_mined(mined, name)
        with storage.store_errors(self.url, "publish the run"):
            control = self.work / "control" / name
            for path in _files_under(control):
                self._put(path, path.relative_to(self.work).as_posix())
            for path in _files_under(round_dir):
                relative = path.relative_to(round_dir)
                if relative.parts[0] == "mined" or relative.as_posix() == MANIFEST:
                    continue
                self._put(path, f"{name}/{relative.as_posix()}")
            self._put(round_dir / MANIFEST, f"{name}/{MANIFEST}", rewrite=True)
            faults.point("run.round.published")
        self.push_summaries()

    def push_summaries(self, names: tuple[str, ...] = SUMMARIES) -> None:
        with storage.store_errors(self.url, "publish the run"):
            for file_name in names:
                path = self.work / file_name
                if path.exists():
                    self._put(path, file_name, rewrite=file_name.endswith(".json"))

    def push_missing_rounds(self) -> None:
        """Rounds complete in the working directory but not on the store (a run killed between the two)."""
        local = 0
        while (self.work / f"round_{local:02d}" / MANIFEST).exists():
            local += 1
        for r in range(self.complete_rounds(), local):
            self.push_round(r)

    def _publish_mined(self, local: Path, round_name: str) -> None:
        """A round's mined tables through the object-store committer: a consumer reads them under _SUCCESS."""
        from pyarrow import fs

        # the run's lock covers its prefix: a round's own lock there is a killed writer's of this run
        lock = f"{self.path}/{round_name}/.mined.lock"
        with storage.store_errors(self.url, "publish the run"):
            if self.store.get_file_info(lock).type != fs.FileType.NotFound:
                self.store.delete_file(lock)
        manifest = json.loads((local / MANIFEST).read_bytes())
        for key in ("format", "format_version", "files"):
            manifest.pop(key, None)
        with Publication(f"{self.url}/{round_name}/mined", overwrite=True, fmt="mine") as publication, \
                publication.staging_dir() as staging:
            for path in _files_under(local):
                relative = path.relative_to(local)
                if relative.as_posix() in (MANIFEST, "_SUCCESS"):
                    continue
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staging / relative)
            publication.commit(manifest)


def _files_under(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
