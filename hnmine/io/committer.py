"""Publishing to an object store, which cannot rename: the output is committed file by file.

docs/storage.md ("Publishing") gives every step and what a consumer sees at each.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from hnmine import faults
from hnmine.errors import InputError, OutputLockedError
from hnmine.io import storage
from hnmine.io.manifest import DERIVED_FILES, MANIFEST, SUCCESS_MARKER, holder, manifest_format, refusal, stamped

__all__ = ["ObjectStoreLock", "ObjectStorePublication", "atomic_upload", "remote_format"]

_COPY_BLOCK = 8 << 20


def _upload(store: Any, local: Path, path: str) -> None:
    with open(local, "rb") as source, store.open_output_stream(path) as sink:
        shutil.copyfileobj(source, sink, _COPY_BLOCK)


def _write_object(store: Any, path: str, data: bytes) -> None:
    with store.open_output_stream(path) as sink:
        sink.write(data)


def _read_object(store: Any, path: str) -> bytes:
    with store.open_input_stream(path) as source:
        return bytes(source.read())


def _delete_prefix(store: Any, path: str) -> None:
    """Every object under the prefix ``path``. GCS has no directories: pyarrow deletes the objects, then a
    directory marker object that hnmine never writes, and reports that one missing (NOT_FOUND)."""
    try:
        store.delete_dir(path)
    except FileNotFoundError:
        if _remote_files(store, path):
            raise


def _remote_files(store: Any, path: str) -> dict[str, int]:
    """Every object under the prefix ``path`` (relative name -> size); empty when there is none."""
    from pyarrow import fs

    infos = store.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True))
    base = len(path.strip("/")) + 1  # fsspec stores may answer with a leading "/"
    return {info.path.lstrip("/")[base:]: int(info.size) for info in infos if info.type == fs.FileType.File}


def remote_format(store: Any, path: str, files: dict[str, int] | None = None) -> str | None:
    """:func:`hnmine.io.publish.output_format` of the output under the prefix ``path`` of an object store."""
    files = _remote_files(store, path) if files is None else files
    if MANIFEST not in files or SUCCESS_MARKER not in files:
        return None
    try:
        data = json.loads(_read_object(store, f"{path}/{MANIFEST}"))
    except ValueError:
        return None
    return manifest_format(data, files)



@contextlib.contextmanager
def atomic_upload(url: str) -> Iterator[Path]:
    """:func:`hnmine.io.publish.atomic_file` for a URL: written locally, uploaded as ``<name>.tmp``, then moved into place.

    An object store makes an object visible only once its upload completes, so a reader sees the previous
    object or the new one; the move is a server-side copy on S3.
    """
    store, path = storage.filesystem(url)
    with tempfile.TemporaryDirectory(prefix="hnmine-file-") as directory:
        tmp = Path(directory) / (path.rsplit("/", 1)[-1] or "file")
        yield tmp
        with storage.store_errors(url, "write"):
            _upload(store, tmp, path + ".tmp")
            store.move(path + ".tmp", path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ObjectStoreLock:
    """A lock object ``.<name>.lock`` beside the output on an object store, holding the holder's pid,
    host, start time and a random token.

    Weaker than :class:`OutputLock` (docs/storage.md says exactly how): it is written only when absent and
    read back after :data:`SETTLE` seconds, so of two writers that start within that time both may go on
    (pyarrow's S3 client cannot send the conditional ``If-None-Match`` write that would close the gap). A
    lock left by a killed process is taken over when it was held on this host by a pid that is gone;
    one left on another host is reported, with the lock's URL to remove once its holder is known dead.
    """

    SETTLE = 0.5

    def __init__(self, store: Any, path: str, url: str, wait: float = 0.0) -> None:
        if not (isinstance(wait, int | float) and wait >= 0):
            raise InputError(f"--wait-lock must be a number of seconds >= 0, not {wait}")
        self.store, self.path, self.url, self.wait = store, path, url, float(wait)
        self.token = ""
        self.previous = ""

    def _holder(self) -> dict[str, Any] | None:
        from pyarrow import fs

        if self.store.get_file_info(self.path).type == fs.FileType.NotFound:
            return None
        try:
            data = json.loads(_read_object(self.store, self.path))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> ObjectStoreLock:
        deadline = time.monotonic() + self.wait
        with storage.store_errors(self.url, "take the output's lock"):
            while True:
                held = self._holder()
                stale = (held is not None and held.get("host") == socket.gethostname()
                         and isinstance(held.get("pid"), int) and not _alive(held["pid"]))
                if held is None or stale:
                    self.previous = json.dumps(held) if stale else ""
                    token = uuid.uuid4().hex
                    info = {"pid": os.getpid(), "host": socket.gethostname(), "token": token,
                            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": sys.argv}
                    _write_object(self.store, self.path, (json.dumps(info) + "\n").encode())
                    time.sleep(self.SETTLE)
                    held = self._holder()
                    if held is not None and held.get("token") == token:
                        self.token = token
                        return self
                if time.monotonic() >= deadline:
                    shown = holder(json.dumps(held)) if held else "holder unknown"
                    lock_url = self.url.rsplit("/", 1)[0] + "/" + self.path.rsplit("/", 1)[-1]
                    raise OutputLockedError(
                        f"{self.url}: locked by another hnmine process ({shown}; lock object {lock_url}); wait for it "
                        "to finish, pass --wait-lock SECONDS, or remove the lock object if its holder is dead")
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.01)))

    def release(self) -> None:
        if not self.token:
            return
        with contextlib.suppress(OSError):
            held = self._holder()
            if held and held.get("token") == self.token:
                self.store.delete_file(self.path)
        self.token = ""


class ObjectStorePublication:
    """:class:`hnmine.io.publish.Publication` to a prefix of an object store (``s3://bucket/path/out``), where nothing can be
    renamed atomically. ``Publication(url, ...)`` returns one.

    Parts are written to a local staging directory, uploaded under a unique staging prefix beside the
    target (``.<name>.tmp-<12 hex>/``) and their sizes checked; then, holding the lock, the commit writes a
    commit record (``.<name>.commit``), deletes the previous output's ``_SUCCESS`` first, then its files,
    copies the staged parts into place (server side), writes ``manifest.json`` and ``_SUCCESS`` last, and
    removes the record and the staging prefix. A consumer that reads only under ``_SUCCESS`` thus never
    reads a partial or mixed output; docs/storage.md gives every step and what a consumer sees.
    """

    def __init__(self, target: str | Path, *, overwrite: bool = False, fmt: str = "mine",
                 wait_lock: float = 0.0) -> None:
        url = storage.url(target).rstrip("/")
        self.given = Path(url)  # only shown; self.url is the URL itself
        self.url = url
        self.store, self.path = storage.filesystem(url)
        parent, _, name = self.path.rpartition("/")
        if not parent or not name:
            raise InputError(f"{url}: publish under a prefix inside the bucket, not at its root")
        self.parent, self.name = parent, name
        self.target = url
        self.overwrite = overwrite
        self.format = fmt
        self.store_lock = ObjectStoreLock(self.store, f"{parent}/.{name}.lock", url, wait_lock)
        self.record = f"{parent}/.{name}.commit"
        with storage.store_errors(url, "read the output"):
            missing = storage.bucket_missing(self.store, self.path)
        if missing:
            raise InputError(f"{url}: cannot publish{missing}; create it first")
        self._check(url)
        self.staging: Path | None = None
        self.remote_staging: str | None = None
        self.committed = False
        self.stale_removed: list[Any] = []

    def _refusal(self) -> str | None:
        files = _remote_files(self.store, self.path)
        if not files:
            return None
        found = remote_format(self.store, self.path, files)
        if found is None:
            found = self._interrupted(files)
        return refusal(self.url, found, self.format, self.overwrite)

    def _interrupted(self, files: dict[str, int]) -> str | None:
        """The format of a commit that was killed half-way (its record is still there and the target holds
        only files it names); None when there is no such record."""
        from pyarrow import fs

        if self.store.get_file_info(self.record).type == fs.FileType.NotFound:
            return None
        try:
            record = json.loads(_read_object(self.store, self.record))
        except ValueError:
            return None
        allowed = set(record.get("files", [])) | {MANIFEST, SUCCESS_MARKER, *DERIVED_FILES}
        return str(record.get("format")) if set(files) <= allowed else None

    def _check(self, path: Any) -> None:
        with storage.store_errors(self.url, "read the output"):
            reason = self._refusal()
        if reason:
            raise InputError(reason)

    def __enter__(self) -> ObjectStorePublication:
        self.store_lock.acquire()
        try:
            self._check(self.url)
            with storage.store_errors(self.url, "remove stale staging"):
                self.stale_removed = self._remove_stale_staging()
        except BaseException:
            self.store_lock.release()
            raise
        return self

    def _remove_stale_staging(self) -> list[Any]:
        """Staging prefixes of killed runs (only a lock holder makes them, so with the lock none is live)."""
        from pyarrow import fs

        pattern = re.compile(rf"\.{re.escape(self.name)}\.tmp-[0-9a-f]{{12}}")
        removed = []
        for info in self.store.get_file_info(fs.FileSelector(self.parent, recursive=False, allow_not_found=True)):
            if info.type == fs.FileType.Directory and pattern.fullmatch(info.base_name):
                _delete_prefix(self.store, info.path)
                removed.append(f"{self.url.rsplit('/', 1)[0]}/{info.base_name}")
        return removed

    @contextlib.contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A private local directory the parts are written into; uploaded by :meth:`commit`."""
        if not self.store_lock.token:
            raise RuntimeError("Publication.staging_dir() outside `with Publication(...)`")
        self.staging = Path(tempfile.mkdtemp(prefix="hnmine-staging-"))
        try:
            yield self.staging
        finally:
            self._remove_staging()

    def commit(self, manifest: dict[str, Any]) -> Any:
        staging = self.staging
        if staging is None or not self.store_lock.token:
            raise RuntimeError("Publication.commit() outside staging_dir()")
        files, manifest = stamped(staging, manifest, self.format)
        body = (json.dumps(manifest, indent=2, default=str) + "\n").encode()
        faults.point("publish.manifest")
        with storage.store_errors(self.url, "publish"):
            self._commit(staging, files, body)
        self.committed = True
        return self.target

    def _commit(self, staging: Path, files: dict[str, int], manifest: bytes) -> None:
        store, target = self.store, self.path
        prefix = f"{self.parent}/.{self.name}.tmp-{uuid.uuid4().hex[:12]}"
        self.remote_staging = prefix
        for name in sorted(files):  # 1. upload every part under the staging prefix
            _upload(store, staging / name, f"{prefix}/{name}")
            faults.point("publish.upload")
        uploaded = _remote_files(store, prefix)
        if uploaded != files:  # 2. every part whole
            raise OSError(f"staged upload incomplete: {sorted(set(files) ^ set(uploaded)) or 'sizes differ'}")
        reason = self._refusal()  # 3. the target is still ours to replace
        if reason:
            raise InputError(reason)
        previous = _remote_files(store, target)
        # 4. the record keeps a half-replaced target recognisable as hnmine's until step 8
        _write_object(store, self.record, json.dumps(
            {"format": self.format, "files": sorted(set(files) | set(previous)), "staging": prefix}).encode())
        if SUCCESS_MARKER in previous:  # 5. consumers stop reading the previous output
            store.delete_file(f"{target}/{SUCCESS_MARKER}")
        faults.point("publish.unmarked")
        for name in sorted(set(previous) - set(files) - {SUCCESS_MARKER}):  # 6. its files that do not come back
            store.delete_file(f"{target}/{name}")
        for name in sorted(files):  # 7. the new parts into place, then manifest.json, then _SUCCESS
            store.copy_file(f"{prefix}/{name}", f"{target}/{name}")
            faults.point("publish.copy")
        placed = _remote_files(store, target)
        if any(placed.get(name) != size for name, size in files.items()):
            raise OSError("copied parts do not match the staged ones")
        _write_object(store, f"{target}/{MANIFEST}", manifest)
        _write_object(store, f"{target}/{SUCCESS_MARKER}", b"")
        faults.point("publish.success")
        store.delete_file(self.record)  # 8. done: the record and the staging prefix go
        _delete_prefix(store, prefix)
        self.remote_staging = None

    def _remove_staging(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None
        if self.remote_staging is not None:
            with contextlib.suppress(OSError):
                _delete_prefix(self.store, self.remote_staging)
            self.remote_staging = None

    def _release(self) -> None:
        self.store_lock.release()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._remove_staging()
        self._release()
