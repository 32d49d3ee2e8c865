"""What makes a directory an hnmine output, and when one may be replaced.

An hnmine output holds ``_SUCCESS`` and a ``manifest.json`` (tool, ``format``, ``format_version`` and every
file with its size). Both publishers read and write it through this module: the local one
(:mod:`hnmine.io.publish`) and the object-store committer (:mod:`hnmine.io.committer`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DERIVED_FILES", "FORMAT_VERSION", "MANIFEST", "SUCCESS_MARKER", "holder", "listed_files",
           "manifest_format", "refusal", "stamped"]

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


def listed_files(path: Path) -> dict[str, int] | None:
    """Every file under ``path`` (relative name -> size); None if it holds a link or special file."""
    files: dict[str, int] = {}
    for entry in sorted(path.rglob("*")):
        if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            return None
        if entry.is_file():
            files[entry.relative_to(path).as_posix()] = entry.stat().st_size
    return files


def manifest_format(data: Any, found: dict[str, int]) -> str | None:
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


def refusal(shown: object, found: str | None, fmt: str, overwrite: bool) -> str | None:
    """Why a non-empty output ``shown`` whose format is ``found`` (None: not hnmine's) may not be replaced
    by a ``fmt`` output; None when it may."""
    if found is None:
        return (f"{shown}: exists and is not an hnmine output (no {MANIFEST} with hnmine's format and "
                f"{SUCCESS_MARKER}, or files hnmine did not write); refusing to replace it")
    if found != fmt:
        return f"{shown}: holds hnmine's {found} output, not {fmt}; refusing to replace it"
    if not overwrite:
        return f"{shown}: output directory exists; pass --overwrite to replace it"
    return None


def stamped(staging: Path, manifest: dict[str, Any], fmt: str) -> tuple[dict[str, int], dict[str, Any]]:
    """The staged files (name -> size) and ``manifest`` with the marker fields that list them."""
    files = listed_files(staging)
    if files is None:
        raise RuntimeError(f"{staging}: an output holds only regular files and directories")
    return files, {**manifest, "format": fmt, "format_version": FORMAT_VERSION, "files": files}


def holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, TypeError, KeyError):
        return "holder unknown"
