"""Where a path may be a URL: ``s3://``, ``gs://``, ``hdfs://`` through pyarrow.fs, any other fsspec scheme
(``oss://`` with ossfs installed, ``memory://``, ...) through fsspec. docs/storage.md describes the URL forms.

Readers take a local path; :class:`LocalCopy` gives them one: a local path is returned as it is (so local
runs keep their exact behaviour and bytes), an object or a prefix behind a URL is downloaded into a private
temporary directory first, and an :class:`InputError` naming the copy is reworded to name the URL.
Writers stage locally and upload (:class:`hnmine.io.publish.Publication` for output directories,
:func:`hnmine.io.publish.atomic_file` for single files).

Credentials come only from each store's own environment and configuration (for S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``~/.aws/credentials`` and ``~/.aws/config``);
a URL carrying a user name or password is refused, so no secret reaches an error message or a manifest.
Every store request is bounded (:data:`CONNECT_TIMEOUT`, :data:`REQUEST_TIMEOUT`, :data:`RETRIES`): an
unreachable endpoint is an error after seconds, never a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from hnmine.errors import InputError

__all__ = ["LocalCopy", "filesystem", "is_url", "join", "local_copy", "reworded", "store_errors", "url"]

_Config = TypeVar("_Config")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Served by pyarrow's own filesystems; any other scheme goes through fsspec.
_ARROW_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs")
# Seconds (override with HNMINE_STORE_CONNECT_TIMEOUT / HNMINE_STORE_REQUEST_TIMEOUT / HNMINE_STORE_RETRIES).
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 60.0
RETRIES = 3
# Copies made by this process: local root -> URL, so any later message naming a copy names the URL instead.
_COPIES: dict[str, str] = {}


# What pathlib makes of a URL (``Path("s3://b/k")`` is ``s3:/b/k``): the CLI's path options pass through
# Path, so the store schemes are recognised in that form too.
_FOLDED = re.compile(r"^(s3|gs|gcs|hdfs|viewfs|oss|abfs|abfss|az|adl|memory|ftp|sftp|webhdfs|http|https):/(?!/)",
                     re.IGNORECASE)


def url(path: str | Path) -> str:
    """``path`` as text, with a URL that went through ``pathlib.Path`` given back its ``//``."""
    text = str(path)
    folded = _FOLDED.match(text)
    return f"{folded.group(1)}://{text[folded.end():]}" if folded else text


def is_url(path: str | Path | None) -> bool:
    """Whether ``path`` names an object store (``scheme://...``); ``file://`` and plain paths are local."""
    if path is None:
        return False
    match = _URL.match(url(path))
    return match is not None and match.group(1).lower() != "file"


def _local_path(path: str | Path) -> Path:
    if isinstance(path, Path):
        return path
    text = str(path)
    return Path(text[len("file://"):]) if text.lower().startswith("file://") else Path(text)


def unfolded(config: _Config) -> _Config:
    """A dataclass (a command's config) with each string option that is a URL folded by ``pathlib.Path``
    given back its ``//``, so messages and manifests show the URL as it was given."""
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        if isinstance(value, str) and is_url(value):
            changes[field.name] = checked(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type) and unfolded(value) is not value:
            changes[field.name] = unfolded(value)  # a nested config's (MineConfig.inputs)
    return dataclasses.replace(config, **changes) if changes else config  # type: ignore[type-var]


def join(base: str | Path, *names: str) -> str | Path:
    """``base / name``, for a URL too (``Path`` would fold its ``//``)."""
    if not is_url(base):
        return _local_path(base).joinpath(*names)
    return "/".join([url(base).rstrip("/"), *names])


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{name}={value!r} must be a number of seconds") from None


def _s3_filesystem() -> Any:
    """An S3FileSystem from the usual AWS environment, with bounded connect/request times and retries.

    pyarrow ignores ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (apache/arrow#49643), which S3-compatible
    servers are configured with; they are read here.
    """
    from pyarrow import fs

    options: dict[str, Any] = {
        "connect_timeout": _env_float("HNMINE_STORE_CONNECT_TIMEOUT", CONNECT_TIMEOUT),
        "request_timeout": _env_float("HNMINE_STORE_REQUEST_TIMEOUT", REQUEST_TIMEOUT),
        "retry_strategy": fs.AwsStandardS3RetryStrategy(
            max_attempts=int(_env_float("HNMINE_STORE_RETRIES", RETRIES))),
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        if parts.username or parts.password:
            raise InputError("AWS_ENDPOINT_URL: credentials in the endpoint URL are not accepted; use AWS_ACCESS_KEY_ID "
                             "and AWS_SECRET_ACCESS_KEY")
        options.update(endpoint_override=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme or "https")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region or endpoint:  # an S3-compatible server has no region to look up
        options["region"] = region or "us-east-1"
    return fs.S3FileSystem(**options)


def _gcs_filesystem() -> Any:
    """A GcsFileSystem from the machine's Google credentials, with bounded retries; ``STORAGE_EMULATOR_HOST``
    (``http://127.0.0.1:9023``, the variable Google's own clients read) points it at an emulator, which takes
    no credentials."""
    import datetime

    from pyarrow import fs

    options: dict[str, Any] = {"retry_time_limit": datetime.timedelta(
        seconds=_env_float("HNMINE_STORE_REQUEST_TIMEOUT", REQUEST_TIMEOUT))}
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        parts = urlsplit(emulator if "://" in emulator else "http://" + emulator)
        options.update(anonymous=True, endpoint_override=parts.netloc, scheme=parts.scheme or "http")
    return fs.GcsFileSystem(**options)


def _store_environment() -> str:
    """A digest of what a filesystem is built from besides the URL (a new value means a new filesystem);
    a digest, so the cache's keys hold no secret."""
    text = "\n".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(("AWS_", "HNMINE_STORE_", "STORAGE_EMULATOR_")))
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=16)
def _filesystem(scheme: str, authority: str, environment: str) -> Any:
    from pyarrow import fs

    if scheme == "s3":
        return _s3_filesystem()
    if scheme in ("gs", "gcs"):
        return _gcs_filesystem()
    if scheme in _ARROW_SCHEMES:
        return fs.FileSystem.from_uri(f"{scheme}://{authority}/")[0]
    try:
        import fsspec
    except ImportError:
        raise InputError(f"{scheme}://: this scheme needs fsspec (pip install 'hnmine[fsspec]') and its "
                         f"implementation package") from None
    try:
        store = fsspec.filesystem(scheme)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{scheme}://: no filesystem for this scheme ({str(exc).splitlines()[0][:160]})") from None
    return fs.PyFileSystem(fs.FSSpecHandler(store))


def checked(location: str | Path) -> str:
    """The URL ``location``, refused before any request when it carries credentials (never shown) or a query."""
    address = url(location)
    parts = urlsplit(address)
    if parts.username or parts.password:
        raise InputError(f"{parts.scheme}://{parts.hostname}{parts.path}: credentials in the URL are not accepted; "
                         "use the store's environment variables or configuration (docs/storage.md)")
    if parts.query or parts.fragment:
        raise InputError(f"{address}: a URL with a query or fragment is not accepted; configure the store through "
                         "its environment (docs/storage.md)")
    if not parts.netloc:
        raise InputError(f"{address}: no bucket or host after {parts.scheme}://")
    return address


def filesystem(location: str | Path) -> tuple[Any, str]:
    """``(pyarrow.fs.FileSystem, path inside it)`` for a URL."""
    address = checked(location)
    parts = urlsplit(address)
    scheme = parts.scheme.lower()
    with store_errors(address, "open the store"):
        store = _filesystem(scheme, parts.netloc, _store_environment())
    if scheme in ("hdfs", "viewfs"):  # the authority names the cluster, not part of the path
        return store, parts.path.rstrip("/") or "/"
    return store, (parts.netloc + parts.path).rstrip("/")


def _reason(exc: BaseException) -> str:
    """The first line of a store library's error, without its request ids."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"\s*\(Request ID: [^)]*\)", "", text)
    if "curlCode" in text or "NETWORK_CONNECTION" in text:
        curl = re.search(r"curlCode: \d+, [^;]*", text)
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        where = f" at {endpoint}" if endpoint and ("AWS" in text or "s3" in text.lower()) else ""
        return f"cannot connect to the store{where} ({curl.group(0) if curl else text[:160]})"
    if re.search(r"ACCESS_DENIED|InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|Forbidden|403", text):
        return f"access denied: check the credentials ({text[:160]})"
    if re.search(r"NoSuchBucket|Bucket does not exist|bucket.*not exist", text, re.IGNORECASE):
        return f"no such bucket ({text[:160]})"
    return text[:200]


@contextlib.contextmanager
def store_errors(address: str, what: str) -> Iterator[None]:
    """A store library's failure on ``url`` as an :class:`InputError`: ``<url>: cannot <what> (<reason>)``."""
    import pyarrow as pa

    try:
        yield
    except InputError:
        raise
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise InputError(f"{address}: cannot {what} ({_reason(exc)})") from None


def reword(message: str) -> str:
    """``message`` with every local copy this process made named by its URL."""
    for local, address in _COPIES.items():
        message = message.replace(local, address)
    return message


@contextlib.contextmanager
def reworded() -> Iterator[None]:
    """Re-raise an :class:`InputError` that names a local copy of a URL so that it names the URL."""
    try:
        yield
    except InputError as exc:
        text = reword(str(exc))
        if text == str(exc):
            raise
        raise type(exc)(text) from None


def bucket_missing(store: Any, inner: str) -> str:
    """``" (no bucket 'b')"`` when the bucket of an S3/GCS ``inner`` path does not exist, else ``""``."""
    from pyarrow import fs

    if store.type_name not in ("s3", "gcs"):
        return ""
    bucket = inner.split("/", 1)[0]
    return f" (no bucket '{bucket}')" if store.get_file_info(bucket).type == fs.FileType.NotFound else ""


def _remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class LocalCopy:
    """``LocalCopy(path).path``: a local path holding what ``path`` names.

    A local path (or ``file://`` URL) is used in place. A URL's object, or every object under a URL's prefix
    (a parquet directory), is downloaded into a private temporary directory under the same base name, so
    suffix-based format detection sees the same name; :meth:`close` (or garbage collection) removes it.
    """

    def __init__(self, path: str | Path, what: str = "file") -> None:
        self.url = url(path)
        self._tmp: str | None = None
        if not is_url(path):
            self.path = _local_path(path)
            return
        store, inner = filesystem(self.url)
        from pyarrow import fs

        with store_errors(self.url, f"read the {what}"):
            info = store.get_file_info(inner)
            if info.type == fs.FileType.NotFound:
                raise InputError(f"{self.url}: {what} not found{bucket_missing(store, inner)}")
            self._tmp = tempfile.mkdtemp(prefix="hnmine-input-")
            self._finalizer = weakref.finalize(self, _remove, self._tmp)
            name = inner.rstrip("/").rsplit("/", 1)[-1] or "input"
            self.path = Path(self._tmp) / name
            _COPIES[str(self.path)] = self.url
            if info.type == fs.FileType.Directory:
                self.path.mkdir()
                fs.copy_files(inner, str(self.path), source_filesystem=store,
                              destination_filesystem=fs.LocalFileSystem(), use_threads=True)
            else:
                fs.copy_files(inner, str(self.path), source_filesystem=store,
                              destination_filesystem=fs.LocalFileSystem(), use_threads=False)

    @property
    def remote(self) -> bool:
        return self._tmp is not None

    def close(self) -> None:
        if self._tmp is not None:
            self._finalizer()

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def local_copy(path: str | Path, what: str = "file") -> Iterator[Path]:
    """``with local_copy(path) as local:`` read ``local``; an error naming it is reworded to name ``path``."""
    copy = LocalCopy(path, what)
    try:
        with reworded():
            yield copy.path
    finally:
        copy.close()
