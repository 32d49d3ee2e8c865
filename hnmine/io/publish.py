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
mix, and ``_SUCCESS`` is always present in a published directory. An object store has no rename: there
``Publication(url)`` is the committer of :mod:`hnmine.io.committer`.
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
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from hnmine import faults
from hnmine.errors import InputError, OutputLockedError
from hnmine.io import storage
from hnmine.io.committer import ObjectStorePublication, atomic_upload, remote_format
from hnmine.io.manifest import MANIFEST, SUCCESS_MARKER, holder, listed_files, manifest_format, refusal, stamped

__all__ = ["OutputLock", "Publication", "atomic_file", "output_format", "remove_stale_staging", "resolve_output"]

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
        with atomic_upload(storage.url(path)) as tmp:
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


def output_format(path: str | Path) -> str | None:
    """The ``format`` of the hnmine output at ``path``, or None when it is not one.

    An hnmine output has ``_SUCCESS`` and a ``manifest.json`` whose ``tool`` is an hnmine command,
    with a ``format``, a known ``format_version``, and ``files`` listing every other file in the
    directory at its size: a file hnmine did not write (or one rewritten since) makes it foreign.
    The one exception is the report hnmine writes into an output it published
    (:data:`hnmine.io.manifest.DERIVED_FILES`).
    """
    if storage.is_url(path):
        store, inner = storage.filesystem(path)
        with storage.store_errors(storage.url(path), "read the output"):
            return remote_format(store, inner)
    path = Path(path)
    manifest, marker = path / MANIFEST, path / SUCCESS_MARKER
    if path.is_symlink() or not path.is_dir() or manifest.is_symlink() or marker.is_symlink():
        return None
    if not manifest.is_file() or not marker.is_file():
        return None
    try:
        data = json.loads(manifest.read_bytes())
        found = listed_files(path)
    except (OSError, ValueError):
        return None
    if found is None:
        return None
    return manifest_format(data, found)


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
    return refusal(shown, output_format(path), fmt, overwrite)


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
                held = holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise OutputLockedError(
                        f"{self.target}: locked by another hnmine process ({held}; lock file {self.path}); "
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
        if cls is Publication and storage.is_url(target):  # an object store: same methods, committed file by file
            return cast(Publication, ObjectStorePublication(target, **options))
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
        _, manifest = stamped(staging, manifest, self.format)
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

