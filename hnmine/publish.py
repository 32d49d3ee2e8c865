"""Atomic publication of an output directory.

Everything is written into a hidden staging directory beside the target; on success a
``manifest.json`` and a ``_SUCCESS`` marker are added and the staging directory replaces the target
in one rename (an atomic exchange where the kernel supports it). On failure the staging directory is
removed. A reader therefore sees either the previous complete output or the new complete output,
never a mix, and ``_SUCCESS`` is always present in a published directory.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from hnmine import faults
from hnmine.errors import InputError

__all__ = ["MANIFEST", "SUCCESS_MARKER", "Publication"]

SUCCESS_MARKER = "_SUCCESS"
MANIFEST = "manifest.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Publication:
    """``with Publication(out, overwrite=...) as staging: ...; publication.commit(manifest)``.

    Refuses a target that exists unless ``overwrite`` is set, and even then only if the target is
    empty or a previous hnmine output (it has a manifest), so a typo cannot replace a home directory.
    """

    def __init__(self, target: str | Path, *, overwrite: bool = False) -> None:
        self.target = Path(target).absolute()
        if self.target.exists():
            if not self.target.is_dir():
                raise InputError(f"{self.target}: output path exists and is not a directory")
            contents = list(self.target.iterdir())
            if contents and not overwrite:
                raise InputError(f"{self.target}: output directory exists; pass --overwrite to replace it")
            if contents and not (self.target / MANIFEST).exists():
                raise InputError(f"{self.target}: exists and is not an hnmine output (no {MANIFEST}); refusing to replace it")
        self.staging = self.target.parent / f".{self.target.name}.tmp-{uuid.uuid4().hex[:12]}"
        self.committed = False

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir()
        return self.staging

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Write the manifest and marker, then move the staging directory into place."""
        (self.staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        faults.point("publish.manifest")
        for path in self.staging.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        (self.staging / SUCCESS_MARKER).write_text("")
        _fsync_dir(self.staging)
        faults.point("publish.success")
        if self.target.exists():
            if _exchange(self.staging, self.target):
                faults.point("publish.exchanged")
                shutil.rmtree(self.staging)  # now holds the previous output
            else:
                old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:12]}"
                os.rename(self.target, old)
                os.rename(self.staging, self.target)
                shutil.rmtree(old)
        else:
            os.rename(self.staging, self.target)
        _fsync_dir(self.target.parent)
        self.committed = True
        return self.target

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
