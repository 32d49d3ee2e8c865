"""Atomic publication of an output directory, one writer at a time.

Protocol (docs/reliability.md shows it by example):

1. ``--out`` is resolved: a symbolic link is followed and the output is published at the real
   location (the link keeps pointing at it); a dangling link is refused.
2. The writer takes an exclusive ``flock`` on ``.<name>.lock`` beside the target, holding its pid,
   host and start time. A second writer fails fast naming the holder (or waits ``wait_lock``
   seconds). The kernel drops the lock when its process dies, so a dead holder's lock is taken over.
3. Holding the lock, it removes hidden staging left by dead runs (``.<name>.tmp-*``: only a lock
   holder creates them, so with the lock held none is live).
4. Everything is written into a staging directory beside the target; ``commit`` adds a
   ``manifest.json`` (tool, ``format``, ``format_version`` and every file with its size) and a
   ``_SUCCESS`` marker, then swaps staging and target in one ``renameat2(RENAME_EXCHANGE)``.
5. The directory swapped out is checked again after the swap: only an empty directory or an hnmine
   output of the same format, holding only the files its manifest lists, may be replaced; anything
   else is swapped back and refused. So foreign data put there while hnmine ran is never deleted.

A reader therefore sees either the previous complete output or the new complete output, never a
mix, and ``_SUCCESS`` is always present in a published directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
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

__all__ = ["FORMAT_VERSION", "MANIFEST", "SUCCESS_MARKER", "ObjectStoreLock", "ObjectStorePublication", "OutputLock",
           "Publication", "atomic_file", "output_format", "resolve_output"]

SUCCESS_MARKER = "_SUCCESS"
MANIFEST = "manifest.json"
# Version of the manifest's marker fields (format, format_version, files); a newer one is not replaced.
FORMAT_VERSION = 1
# What `hnmine mine` wrote before manifests carried a format: recognised by these file names.
_LEGACY_MINE_FILES = {f"{table}.{ext}" for table in ("hard_neg_edge", "pos_edge", "user", "item")
                      for ext in ("parquet", "txt")}
# Written into a published output afterwards, by `hnmine report` (default --out) or `mine --report`:
# hnmine's own, though not in the manifest's file list.
DERIVED_FILES = ("report.html",)
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2(a: Path, b: Path, flags: int) -> int:
    """renameat2(a, b, flags): 0, the errno, or ENOSYS where libc lacks it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return errno.ENOSYS
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) == 0:
        return 0
    return ctypes.get_errno()


def _unsupported(code: int) -> bool:
    return code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """``with atomic_file(path) as tmp:`` write ``tmp``; it is renamed over ``path`` when the block
    succeeds and removed when it fails, so ``path`` is never half-written.

    The one writer for single files (run state, models, reports); a whole output directory goes
    through :class:`Publication`. The temporary name is ``<name>.tmp`` beside ``path``.
    """
    if storage.is_url(path):
        with _atomic_upload(storage.url(path)) as tmp:
            yield tmp
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _atomic_upload(url: str) -> Iterator[Path]:
    """:func:`atomic_file` for a URL: written locally, uploaded as ``<name>.tmp``, then moved into place.

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


def resolve_output(path: str | Path) -> Path:
    """The absolute path an output at ``path`` is written to: symbolic links followed.

    A dangling link (or a link loop) is refused: following it would create a directory somewhere
    the user did not name, and replacing it would delete the link.
    """
    given = Path(path).absolute()
    if given.is_symlink() and not given.exists():
        raise InputError(f"{path}: is a symbolic link to a missing path ({os.readlink(given)}); "
                         "point --out at a directory or a new path")
    return Path(os.path.realpath(given))


def _listed_files(path: Path) -> dict[str, int] | None:
    """Every file under ``path`` (relative name -> size); None if it holds a link or special file."""
    files: dict[str, int] = {}
    for entry in sorted(path.rglob("*")):
        if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            return None
        if entry.is_file():
            files[entry.relative_to(path).as_posix()] = entry.stat().st_size
    return files


def output_format(path: str | Path) -> str | None:
    """The ``format`` of the hnmine output at ``path``, or None when it is not one.

    An hnmine output has ``_SUCCESS`` and a ``manifest.json`` whose ``tool`` is an hnmine command,
    with a ``format``, a known ``format_version``, and ``files`` listing every other file in the
    directory at its size: a file hnmine did not write (or one rewritten since) makes it foreign.
    The one exception is the report hnmine writes into an output it published (:data:`DERIVED_FILES`).
    """
    if storage.is_url(path):
        store, inner = storage.filesystem(path)
        with storage.store_errors(storage.url(path), "read the output"):
            return _remote_format(store, inner)
    path = Path(path)
    manifest, marker = path / MANIFEST, path / SUCCESS_MARKER
    if path.is_symlink() or not path.is_dir() or manifest.is_symlink() or marker.is_symlink():
        return None
    if not manifest.is_file() or not marker.is_file():
        return None
    try:
        data = json.loads(manifest.read_bytes())
        found = _listed_files(path)
    except (OSError, ValueError):
        return None
    if found is None:
        return None
    return _manifest_format(data, found)


def _manifest_format(data: Any, found: dict[str, int]) -> str | None:
    """The ``format`` a manifest ``data`` declares when ``found`` (every file of the output, name -> size,
    manifest and marker included) is exactly what it lists; None otherwise."""
    found = dict(found)
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        return None
    found.pop(MANIFEST, None)
    found.pop(SUCCESS_MARKER, None)
    for name in DERIVED_FILES:
        found.pop(name, None)
    version = data.get("format_version")
    if version is None and data["tool"] == "hnmine mine" and {"options", "summary"} <= data.keys():
        return "mine" if set(found) <= _LEGACY_MINE_FILES else None
    if not data["tool"].startswith("hnmine ") or type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        return None
    listed, fmt = data.get("files"), data.get("format")
    if not isinstance(fmt, str) or not isinstance(listed, dict) or found != listed:
        return None
    return fmt


def _refusal(path: Path, shown: Path, fmt: str, overwrite: bool) -> str | None:
    """Why the directory at ``path`` may not be replaced by a ``fmt`` output; None when it may."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink() or not path.is_dir():
        return f"{shown}: output path exists and is not a directory"
    try:
        if not any(path.iterdir()):
            return None
    except OSError as exc:
        return f"{shown}: cannot read the existing output directory ({exc.strerror})"
    found = output_format(path)
    if found is None:
        return (f"{shown}: exists and is not an hnmine output (no {MANIFEST} with hnmine's format and "
                f"{SUCCESS_MARKER}, or files hnmine did not write); refusing to replace it")
    if found != fmt:
        return f"{shown}: holds hnmine's {found} output, not {fmt}; refusing to replace it"
    if not overwrite:
        return f"{shown}: output directory exists; pass --overwrite to replace it"
    return None


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, TypeError, KeyError):
        return "holder unknown"


class OutputLock:
    """An exclusive ``flock`` on ``.<name>.lock`` beside ``target``: one hnmine writer at a time.

    The file holds the holder's pid, host, start time and command as JSON. ``wait`` seconds: how
    long to wait for another holder before raising :class:`OutputLockedError`. The file is removed
    on release; a locker re-checks after locking that the file it locked is still the one at the
    path, so removal never lets two writers in.
    """

    def __init__(self, target: str | Path, wait: float = 0.0) -> None:
        if not (isinstance(wait, int | float) and wait >= 0):  # inf: as long as it takes; NaN fails
            raise InputError(f"--wait-lock must be a number of seconds >= 0, not {wait}")
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.lock"
        self.wait = float(wait)
        self.fd: int | None = None
        self.previous = ""  # what a dead holder left in the file (empty if none)
        self.created: list[Path] = []  # parent directories acquire() made, innermost first

    def acquire(self) -> OutputLock:
        """Lock (creating the target's missing parent directories), or raise naming the holder."""
        parent = self.target.parent
        missing = [p for p in (parent, *parent.parents) if not os.path.lexists(p)]
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in reversed((parent, *parent.parents))
                            if os.path.lexists(p) and not p.is_dir()), None)
            if blocker is not None:
                raise InputError(f"{self.target}: {blocker} is not a directory") from None
            raise InputError(f"{self.target}: cannot create the directory {exc.filename or parent} "
                             f"({exc.strerror})") from None
        self.created = missing
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise InputError(f"{self.target}: cannot create the lock file {self.path} ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise OutputLockedError(
                        f"{self.target}: locked by another hnmine process ({holder}; lock file {self.path}); "
                        "wait for it to finish or pass --wait-lock SECONDS") from None
                time.sleep(min(0.2, max(deadline - time.monotonic(), 0.01)))
                continue
            except OSError as exc:
                os.close(fd)
                raise InputError(f"{self.target}: cannot lock {self.path} ({exc.strerror})") from None
            try:
                current = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)  # the holder removed it between our open and flock: lock the new one
                continue
            self.previous = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": sys.argv}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            self.fd = fd
            return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove staging directories of ``target`` left by killed runs; call only holding its lock.

    Only names hnmine creates (``.<name>.tmp-<12 hex>``, ``.<name>.old-<12 hex>``) are touched. An
    ``.old-`` directory is a previous output displaced mid-swap: put back if the target is missing.
    """
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-[0-9a-f]{{12}}")
    removed = []
    for entry in sorted(target.parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue
        if match.group(1) == "old" and not os.path.lexists(target):
            os.rename(entry, target)
            continue
        shutil.rmtree(entry)
        removed.append(entry)
    return removed


class Publication:
    """``with Publication(out, overwrite=...) as pub:`` then ``with pub.staging_dir() as staging:
    ...; pub.commit(manifest)``.

    The constructor refuses at once a target that exists unless ``overwrite`` is set, and even then
    anything but an empty directory or an hnmine output of the same ``fmt`` (:func:`output_format`),
    so a typo cannot replace a home directory. Entering takes the lock (waiting up to ``wait_lock``
    seconds), checks again and removes stale staging; ``commit`` checks a third time, atomically.
    """

    target: Any  # the resolved Path; the URL on an object store (ObjectStorePublication)

    def __new__(cls, target: str | Path, **options: Any) -> Publication:
        if cls is Publication and storage.is_url(target):  # an object store: the committer below
            return super().__new__(ObjectStorePublication)
        return super().__new__(cls)

    def __init__(self, target: str | Path, *, overwrite: bool = False, fmt: str = "mine",
                 wait_lock: float = 0.0) -> None:
        self.given = Path(target)
        self.target = resolve_output(target)
        self.overwrite = overwrite
        self.format = fmt
        self.lock = OutputLock(self.target, wait_lock)
        self._check(self.target)
        self.staging: Path | None = None
        self.committed = False
        self.stale_removed: list[Path] = []

    def _check(self, path: Path) -> None:
        reason = _refusal(path, self.given, self.format, self.overwrite)
        if reason:
            raise InputError(reason)

    def __enter__(self) -> Publication:
        self.lock.acquire()
        try:
            self._check(self.target)
            self.stale_removed = remove_stale_staging(self.target)
        except BaseException:
            self._release()
            raise
        return self

    @contextlib.contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A fresh hidden staging directory beside the target; removed unless committed."""
        if self.lock.fd is None:
            raise RuntimeError("Publication.staging_dir() outside `with Publication(...)`")
        self.staging = self.target.parent / f".{self.target.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            self.staging.mkdir()
        except OSError as exc:
            raise InputError(f"{self.given}: cannot write the staging directory {self.staging} "
                             f"({exc.strerror})") from None
        try:
            yield self.staging
        finally:
            self._remove_staging()

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Write the manifest and marker, then swap the staging directory into place."""
        staging = self.staging
        if staging is None or self.lock.fd is None:
            raise RuntimeError("Publication.commit() outside staging_dir()")
        files = _listed_files(staging)
        if files is None:
            raise RuntimeError(f"{staging}: an output holds only regular files and directories")
        manifest = {**manifest, "format": self.format, "format_version": FORMAT_VERSION, "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        faults.point("publish.manifest")
        for path in staging.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        (staging / SUCCESS_MARKER).write_text("")
        _fsync_dir(staging)
        faults.point("publish.success")
        self._swap_in(staging)
        _fsync_dir(self.target.parent)
        self.committed = True
        return self.target

    def _swap_in(self, staging: Path) -> None:
        """Move ``staging`` to the target; whatever is displaced is checked again before deletion."""
        target = self.target
        if not os.path.lexists(target):
            code = _renameat2(staging, target, _RENAME_NOREPLACE)
            if code == 0:
                return
            if _unsupported(code):
                try:
                    os.rename(staging, target)  # replaces at most an empty directory made meanwhile
                    return
                except OSError:
                    pass
            elif code != errno.EEXIST:
                raise OSError(code, os.strerror(code), str(target))
        self._check(target)  # it appeared, or was there: refuse early what the swap would refuse
        code = _renameat2(staging, target, _RENAME_EXCHANGE)
        if code == 0:
            displaced = staging  # staging now holds what was at the target
            reason = _refusal(displaced, self.given, self.format, self.overwrite)
            if reason:
                _renameat2(staging, target, _RENAME_EXCHANGE)
                raise InputError(reason)
            faults.point("publish.exchanged")
            shutil.rmtree(displaced)
            return
        if not _unsupported(code):
            raise OSError(code, os.strerror(code), str(target))
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(target, old)
        reason = _refusal(old, self.given, self.format, self.overwrite)
        if reason:
            os.rename(old, target)
            raise InputError(reason)
        os.rename(staging, target)
        shutil.rmtree(old)

    def _remove_staging(self) -> None:
        if self.staging is not None and os.path.lexists(self.staging):
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None

    def _release(self) -> None:
        self.lock.release()
        if not self.committed:
            for directory in self.lock.created:  # innermost first; a non-empty one is kept
                try:
                    directory.rmdir()
                except OSError:
                    break

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._remove_staging()
        self._release()


# ---------------------------------------------------------------------------------------------------------
# Object stores: no rename, so the output is committed file by file (docs/storage.md, "Publishing").

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


def _remote_files(store: Any, path: str) -> dict[str, int]:
    """Every object under the prefix ``path`` (relative name -> size); empty when there is none."""
    from pyarrow import fs

    infos = store.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True))
    base = len(path.strip("/")) + 1  # fsspec stores may answer with a leading "/"
    return {info.path.lstrip("/")[base:]: int(info.size) for info in infos if info.type == fs.FileType.File}


def _remote_format(store: Any, path: str, files: dict[str, int] | None = None) -> str | None:
    """:func:`output_format` of the output under the prefix ``path`` of an object store."""
    files = _remote_files(store, path) if files is None else files
    if MANIFEST not in files or SUCCESS_MARKER not in files:
        return None
    try:
        data = json.loads(_read_object(store, f"{path}/{MANIFEST}"))
    except ValueError:
        return None
    return _manifest_format(data, files)


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
                holder = self._holder()
                stale = (holder is not None and holder.get("host") == socket.gethostname()
                         and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]))
                if holder is None or stale:
                    self.previous = json.dumps(holder) if stale else ""
                    token = uuid.uuid4().hex
                    info = {"pid": os.getpid(), "host": socket.gethostname(), "token": token,
                            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": sys.argv}
                    _write_object(self.store, self.path, (json.dumps(info) + "\n").encode())
                    time.sleep(self.SETTLE)
                    holder = self._holder()
                    if holder is not None and holder.get("token") == token:
                        self.token = token
                        return self
                if time.monotonic() >= deadline:
                    shown = _holder(json.dumps(holder)) if holder else "holder unknown"
                    lock_url = self.url.rsplit("/", 1)[0] + "/" + self.path.rsplit("/", 1)[-1]
                    raise OutputLockedError(
                        f"{self.url}: locked by another hnmine process ({shown}; lock object {lock_url}); wait for it "
                        "to finish, pass --wait-lock SECONDS, or remove the lock object if its holder is dead")
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.01)))

    def release(self) -> None:
        if not self.token:
            return
        with contextlib.suppress(OSError):
            holder = self._holder()
            if holder and holder.get("token") == self.token:
                self.store.delete_file(self.path)
        self.token = ""


class ObjectStorePublication(Publication):
    """:class:`Publication` to a prefix of an object store (``s3://bucket/path/out``), where nothing can be
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
        self.staging = None
        self.remote_staging: str | None = None
        self.committed = False
        self.stale_removed = []

    def _refusal(self) -> str | None:
        files = _remote_files(self.store, self.path)
        if not files:
            return None
        found = _remote_format(self.store, self.path, files)
        if found is None:
            found = self._interrupted(files)
        if found is None:
            return (f"{self.url}: exists and is not an hnmine output (no {MANIFEST} with hnmine's format and "
                    f"{SUCCESS_MARKER}, or files hnmine did not write); refusing to replace it")
        if found != self.format:
            return f"{self.url}: holds hnmine's {found} output, not {self.format}; refusing to replace it"
        if not self.overwrite:
            return f"{self.url}: output directory exists; pass --overwrite to replace it"
        return None

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

    def __enter__(self) -> Publication:
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
                self.store.delete_dir(info.path)
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
        files = _listed_files(staging)
        if files is None:
            raise RuntimeError(f"{staging}: an output holds only regular files and directories")
        manifest = {**manifest, "format": self.format, "format_version": FORMAT_VERSION, "files": files}
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
        store.delete_dir(prefix)
        self.remote_staging = None

    def _remove_staging(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None
        if self.remote_staging is not None:
            with contextlib.suppress(OSError):
                self.store.delete_dir(self.remote_staging)
            self.remote_staging = None

    def _release(self) -> None:
        self.store_lock.release()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._remove_staging()
        self._release()
