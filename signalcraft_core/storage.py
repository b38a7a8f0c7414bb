"""All object store and file I/O in one place: boto3 (AWS or MinIO via AWS_ENDPOINT_URL) and local folders.

Failures leave here as `StorageError` with a stable code (NOT_FOUND, TOO_LARGE, STORAGE_ERROR) and a
one-line message, so callers turn them into error records instead of tracebacks. Grade sinks write
deterministic Parquet names (redelivery overwrites, never duplicates) and readers dedupe by record_id.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date as _date
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Protocol, Sequence

import pyarrow as pa

from .errors import ErrorCode, StorageError
from .records import (
    GRADE_SCHEMA,
    GradeRecord,
    batch_object_name,
    compacted_object_name,
    conform_table,
    dedupe_table,
    parquet_bytes,
    partition_path,
    read_parquet_bytes,
    records_to_table,
    safe_partition_value,
)

if TYPE_CHECKING:  # boto3 types only for readers; the client is duck-typed at run time
    from botocore.client import BaseClient

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
_DELETE_BATCH = 1000  # the S3 DeleteObjects limit
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion", "NoSuchBucket"})

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


# --------------------------------------------------------------------------- clients


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_client(
    endpoint_url: str | None = None,
    max_attempts: int = 5,
    connect_timeout: float = 5,
    read_timeout: float = 30,
) -> "BaseClient":
    """A boto3 S3 client with bounded retries and timeouts, cached so warm invocations reuse it.

    `endpoint_url=None` keeps boto3's usual chain (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 honoured by
    boto3 itself). With any custom endpoint (MinIO, the embedded server) path-style addressing is used.
    """
    effective = endpoint_url or _env_endpoint()
    key = (endpoint_url, effective, max_attempts, connect_timeout, read_timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            return client
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "retries": {"mode": "standard", "max_attempts": max_attempts},
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "max_pool_connections": 16,
        }
        if effective:
            # S3-compatible stores: path-style buckets, checksums only where the API requires them.
            options["s3"] = {"addressing_style": "path"}
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        session = boto3.session.Session()  # own session: the default one is not thread-safe to create
        client = session.client("s3", endpoint_url=endpoint_url, config=Config(**options))
        _clients[key] = client
        return client


def clear_client_cache() -> None:
    """Forget cached clients (tests, or after credentials changed)."""
    with _clients_lock:
        _clients.clear()


# --------------------------------------------------------------------------- errors


_URL_QUERY = re.compile(r"(https?://[^\s?\"']*)\?[^\s\"']*")
_SECRETS = re.compile(r"(AKIA|ASIA)[A-Z0-9]{12,}|(?i:(signature|credential|token|secret)[=:]\s*)\S+")


def _one_line(text: str, limit: int = 300) -> str:
    """First line, URL query strings and credential-looking tokens removed, bounded length."""
    text = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    text = _URL_QUERY.sub(r"\1", text)
    text = _SECRETS.sub("[redacted]", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(bucket: str, key: str) -> str:
    return "s3://" + _one_line(f"{bucket}/{key}".replace("\n", "\\n"), limit=200)


def _to_storage_error(exc: Exception, operation: str, bucket: str, key: str) -> StorageError:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code", "") or "")
        status = (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode")
        if code in _NOT_FOUND_CODES or status == 404:
            what = "bucket" if code == "NoSuchBucket" else "object"
            return StorageError(ErrorCode.NOT_FOUND, f"{what} not found: {_where(bucket, key)}")
        detail = _one_line(str(error.get("Message", "") or ""), limit=120)
        return StorageError(
            ErrorCode.STORAGE_ERROR,
            f"{operation} {_where(bucket, key)} failed: {code or 'error'} (HTTP {status})"
            + (f": {detail}" if detail else ""),
        )
    return StorageError(
        ErrorCode.STORAGE_ERROR,
        f"{operation} {_where(bucket, key)} failed: {type(exc).__name__}: {_one_line(str(exc), 160)}",
    )


def _boto_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD tells us before we decide to download."""

    size: int
    etag: str | None
    version_id: str | None
    last_modified: datetime | None


@dataclass(frozen=True)
class ObjectInfoWithKey(ObjectInfo):
    """A listed object: where it is plus its metadata (listings carry no version id)."""

    bucket: str
    key: str


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


def head(client: "BaseClient", bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
    """Size, ETag, version id and last-modified of one object; NOT_FOUND when it is gone."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        response = client.head_object(**kwargs)
    except _boto_errors() as exc:
        raise _to_storage_error(exc, "HEAD", bucket, key) from None
    version = response.get("VersionId")
    return ObjectInfo(
        size=int(response.get("ContentLength", 0)),
        etag=_etag(response.get("ETag")),
        version_id=None if version in (None, "null") else version,
        last_modified=response.get("LastModified"),
    )


def _too_large(bucket: str, key: str, size: int, max_bytes: int) -> StorageError:
    return StorageError(
        ErrorCode.TOO_LARGE, f"{_where(bucket, key)} is {size} bytes, over the {max_bytes}-byte limit"
    )


def _get(client: "BaseClient", bucket: str, key: str, version_id: str | None, max_bytes: int | None) -> bytes:
    return _get_object(client, bucket, key, version_id, max_bytes)[0]


def _get_object(
    client: "BaseClient", bucket: str, key: str, version_id: str | None, max_bytes: int | None
) -> tuple[bytes, ObjectInfo]:
    """GET with the size limit enforced on the response too (the object may have grown since HEAD).

    Returns the bytes and what the response says about them (size, ETag, version), which is the
    truth about the graded bytes even when an event carried stale or made-up values.
    """
    from botocore.exceptions import (
        ConnectionClosedError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    streaming = (ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError)
    attempts = 2  # botocore retries the request; a stream cut mid-body gets one more try here
    for attempt in range(attempts):
        try:
            response = client.get_object(**kwargs)
            body = response["Body"]
            length = response.get("ContentLength")
            if max_bytes is not None and length is not None and length > max_bytes:
                body.close()
                raise _too_large(bucket, key, int(length), max_bytes)
            if max_bytes is None or length is not None:
                data = body.read()  # verifies the content length
            else:
                data = body.read(max_bytes + 1)
                body.close()
                if len(data) > max_bytes:
                    raise _too_large(bucket, key, len(data), max_bytes)
            version = response.get("VersionId")
            info = ObjectInfo(
                size=len(data),
                etag=_etag(response.get("ETag")),
                version_id=None if version in (None, "null") else version,
                last_modified=response.get("LastModified"),
            )
            return data, info
        except streaming as exc:
            if attempt + 1 < attempts:
                continue
            raise _to_storage_error(exc, "GET", bucket, key) from None
        except _boto_errors() as exc:
            raise _to_storage_error(exc, "GET", bucket, key) from None
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_bytes(
    client: "BaseClient",
    ref_bucket: str,
    key: str,
    *,
    max_bytes: int,
    known_size: int | None = None,
    version_id: str | None = None,
) -> bytes:
    """Download one recording, refusing anything over `max_bytes` BEFORE downloading it.

    The size comes from `known_size` (e.g. the upload event) or a HEAD. Errors: TOO_LARGE, NOT_FOUND,
    or STORAGE_ERROR once botocore's own retries are spent.
    """
    return fetch_object(client, ref_bucket, key, max_bytes=max_bytes, known_size=known_size,
                        version_id=version_id)[0]


def fetch_object(
    client: "BaseClient",
    ref_bucket: str,
    key: str,
    *,
    max_bytes: int,
    known_size: int | None = None,
    version_id: str | None = None,
) -> tuple[bytes, ObjectInfo]:
    """Like `fetch_bytes`, plus the size / ETag / version id of the bytes actually downloaded."""
    size = known_size if known_size is not None else head(client, ref_bucket, key, version_id).size
    if size > max_bytes:
        raise _too_large(ref_bucket, key, size, max_bytes)
    return _get_object(client, ref_bucket, key, version_id, max_bytes)


def get_bytes(client: "BaseClient", bucket: str, key: str, version_id: str | None = None) -> bytes:
    """Download an object we wrote ourselves (grades, manifests): no size limit."""
    return _get(client, bucket, key, version_id, None)


def list_keys(
    client: "BaseClient",
    bucket: str,
    prefix: str,
    suffixes: Sequence[str] | None = (".wav",),
    *,
    page_size: int | None = None,
    start_after: str | None = None,
) -> Iterator[ObjectInfoWithKey]:
    """Every object under `prefix` whose key ends with one of `suffixes` (case-insensitive; None = all).

    Paginated, so any number of keys, in key order; `start_after` resumes a listing after that key
    (server-side, e.g. a sweep continuing where the last invocation stopped). Folder markers are skipped.
    """
    wanted = tuple(s.lower() for s in suffixes) if suffixes else None
    config: dict[str, Any] = {"PageSize": page_size} if page_size else {}
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix or "", "PaginationConfig": config}
    if start_after:
        kwargs["StartAfter"] = start_after
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(**kwargs):
            for item in page.get("Contents", ()) or ():
                key = item["Key"]
                if key.endswith("/") or (wanted and not key.lower().endswith(wanted)):
                    continue
                yield ObjectInfoWithKey(
                    size=int(item.get("Size", 0)),
                    etag=_etag(item.get("ETag")),
                    version_id=None,
                    last_modified=item.get("LastModified"),
                    bucket=bucket,
                    key=key,
                )
    except _boto_errors() as exc:
        raise _to_storage_error(exc, "LIST", bucket, prefix or "") from None


def put_bytes(
    client: "BaseClient",
    bucket: str,
    key: str,
    data: bytes,
    content_type: str = "application/octet-stream",
) -> str | None:
    """Upload one object; returns its ETag (without quotes)."""
    try:
        response = client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    except _boto_errors() as exc:
        raise _to_storage_error(exc, "PUT", bucket, key) from None
    return _etag(response.get("ETag"))


def delete_keys(client: "BaseClient", bucket: str, keys: Iterable[str]) -> int:
    """Delete objects in batches of 1000; returns how many were deleted. Missing keys are not an error."""
    keys = list(dict.fromkeys(keys))
    for start in range(0, len(keys), _DELETE_BATCH):
        batch = keys[start : start + _DELETE_BATCH]
        try:
            response = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        except _boto_errors() as exc:
            raise _to_storage_error(exc, "DELETE", bucket, batch[0]) from None
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise StorageError(
                ErrorCode.STORAGE_ERROR,
                f"DELETE {_where(bucket, first.get('Key', ''))} failed: {first.get('Code', 'error')}"
                f" ({len(errors)} of {len(batch)} keys not deleted)",
            )
    return len(keys)


def parse_uri(uri: str | os.PathLike[str]) -> tuple[str | None, str]:
    """"s3://b/p/" -> ("b", "p/"); "file:///x" or a plain path -> (None, path)."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        bucket, _, path = text[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {text!r}")
        return bucket, path
    if text.startswith("file://"):
        return None, text[len("file://") :]
    return None, text


# --------------------------------------------------------------------------- grade sinks


@dataclass(frozen=True)
class CompactionResult:
    """What a compaction did; `written` lists the compacted objects (keys or paths)."""

    partitions: int = 0
    files_in: int = 0
    files_deleted: int = 0
    rows_in: int = 0
    rows_out: int = 0
    written: tuple[str, ...] = ()


class GradeSink(Protocol):
    """Where grade records go: Parquet under dt=/machine_type= partitions, deterministic names."""

    def write(self, records: Sequence[GradeRecord]) -> list[str]: ...

    def compact(self, date: str, machine_type: str | None = None) -> CompactionResult: ...


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INPUT_NAME = re.compile(r"^(part|compacted)-[0-9a-f]+\.parquet$")


def _latest_per_id(records: Sequence[GradeRecord]) -> list[GradeRecord]:
    latest: dict[str, GradeRecord] = {}
    for r in records:
        kept = latest.get(r.record_id)
        if kept is None or r.scored_at >= kept.scored_at:
            latest[r.record_id] = r
    return [latest[k] for k in sorted(latest)]


class _PartitionedSink:
    """Shared write/compact logic over a tiny file API (list, get, put, delete) relative to the sink root."""

    def _list(self, rel_prefix: str) -> list[str]:
        raise NotImplementedError

    def _get(self, rel: str) -> bytes:
        raise NotImplementedError

    def _put(self, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def _delete(self, rels: Sequence[str]) -> int:
        raise NotImplementedError

    def _location(self, rel: str) -> str:
        raise NotImplementedError

    def write(self, records: Sequence[GradeRecord]) -> list[str]:
        """One Parquet object per partition touched, named from its record ids; returns what was written."""
        groups: dict[str, list[GradeRecord]] = {}
        for r in records:
            groups.setdefault(partition_path(r), []).append(r)
        written = []
        for partition in sorted(groups):
            rows = _latest_per_id(groups[partition])
            rel = partition + batch_object_name(rows)
            self._put(rel, parquet_bytes(records_to_table(rows)))
            written.append(self._location(rel))
        return written

    def compact(self, date: str, machine_type: str | None = None) -> CompactionResult:
        """Merge each partition of day `date` into one file: write the merged file first, delete inputs after.

        A crash between the two leaves duplicate rows that readers dedupe by record_id; nothing is lost.
        Files written while compaction runs are not listed, so they are not deleted.
        """
        if not _DATE.match(date or ""):
            raise ValueError(f"date must be YYYY-MM-DD, got {date!r}")
        _date.fromisoformat(date)
        base = f"dt={date}/" + (f"machine_type={safe_partition_value(machine_type)}/" if machine_type else "")
        partitions: dict[str, list[str]] = {}
        for rel in self._list(base):
            folder, _, name = rel.rpartition("/")
            if folder.startswith(f"dt={date}/machine_type=") and "/" not in folder[len(f"dt={date}/"):] \
                    and _INPUT_NAME.match(name):
                partitions.setdefault(folder + "/", []).append(rel)
        totals = {"partitions": 0, "files_in": 0, "files_deleted": 0, "rows_in": 0, "rows_out": 0}
        written: list[str] = []
        for folder in sorted(partitions):
            inputs = sorted(partitions[folder])
            if len(inputs) < 2:
                continue  # nothing to merge
            table = pa.concat_tables([conform_table(read_parquet_bytes(self._get(rel))) for rel in inputs])
            merged = dedupe_table(table)
            out = folder + compacted_object_name(merged.column("record_id").to_pylist())
            self._put(out, parquet_bytes(merged))
            deleted = self._delete([rel for rel in inputs if rel != out])
            written.append(self._location(out))
            totals["partitions"] += 1
            totals["files_in"] += len(inputs)
            totals["files_deleted"] += deleted
            totals["rows_in"] += table.num_rows
            totals["rows_out"] += merged.num_rows
        return CompactionResult(written=tuple(written), **totals)


class S3GradeSink(_PartitionedSink):
    """Grade records as Parquet objects under s3://bucket/prefix/dt=…/machine_type=…/."""

    def __init__(self, client: "BaseClient", bucket: str, prefix: str = "grades/") -> None:
        self.client = client
        self.bucket = bucket
        prefix = (prefix or "").lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _list(self, rel_prefix: str) -> list[str]:
        keys = list_keys(self.client, self.bucket, self.prefix + rel_prefix, suffixes=(".parquet",))
        return [info.key[len(self.prefix) :] for info in keys]

    def _get(self, rel: str) -> bytes:
        return get_bytes(self.client, self.bucket, self.prefix + rel)

    def _put(self, rel: str, data: bytes) -> None:
        put_bytes(self.client, self.bucket, self.prefix + rel, data, content_type=PARQUET_CONTENT_TYPE)

    def _delete(self, rels: Sequence[str]) -> int:
        return delete_keys(self.client, self.bucket, [self.prefix + rel for rel in rels])

    def _location(self, rel: str) -> str:
        return self.prefix + rel


def _visible_parquet(root: Path) -> list[Path]:
    """Parquet files under `root`, skipping hidden / underscore names (temp files, _SUCCESS ...)."""
    found = []
    for path in root.rglob("*.parquet"):
        parts = path.relative_to(root).parts
        if path.is_file() and not any(p.startswith((".", "_")) for p in parts):
            found.append(path)
    return sorted(found)


class LocalGradeSink(_PartitionedSink):
    """Grade records as Parquet files in a local folder with the same Hive layout (CLI `--out DIR`, tests)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def uri(self) -> str:
        return str(self.root)

    def _list(self, rel_prefix: str) -> list[str]:
        start = self.root / rel_prefix
        if not start.is_dir():
            return []
        return [p.relative_to(self.root).as_posix() for p in _visible_parquet(start)]

    def _get(self, rel: str) -> bytes:
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            raise StorageError(ErrorCode.NOT_FOUND, f"file not found: {self.root / rel}") from None
        except OSError as exc:
            raise StorageError(ErrorCode.STORAGE_ERROR, f"cannot read {self.root / rel}: {exc.strerror}") from None

    def _put(self, rel: str, data: bytes) -> None:
        target = self.root / rel
        tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: readers never see half a file
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(ErrorCode.STORAGE_ERROR, f"cannot write {target}: {exc.strerror}") from None

    def _delete(self, rels: Sequence[str]) -> int:
        for rel in rels:
            (self.root / rel).unlink(missing_ok=True)
        return len(rels)

    def _location(self, rel: str) -> str:
        return str(self.root / rel)


# --------------------------------------------------------------------------- reading grades


def _finish(tables: list[pa.Table], dedupe: bool) -> pa.Table:
    if not tables:
        return GRADE_SCHEMA.empty_table()
    table = pa.concat_tables([conform_table(t) for t in tables])
    return dedupe_table(table) if dedupe else table


def read_grades(uri: str | os.PathLike[str], client: "BaseClient | None" = None, dedupe: bool = True) -> pa.Table:
    """All grade rows under a local folder or s3:// prefix (or one Parquet file), as a GRADE_SCHEMA table.

    Partition folders are not turned into columns (rows already carry machine_type). With `dedupe`,
    one row per record_id (latest scored_at), ordered by (scored_at, record_id).
    """
    bucket, path = parse_uri(uri)
    if bucket is not None:
        client = client or s3_client()
        if path.endswith(".parquet"):
            keys = [path]
        else:
            prefix = path if not path or path.endswith("/") else path + "/"
            keys = [info.key for info in list_keys(client, bucket, prefix, suffixes=(".parquet",))
                    if not any(p.startswith((".", "_")) for p in info.key[len(prefix) :].split("/"))]
        if not keys:
            return _finish([], dedupe)
        with ThreadPoolExecutor(max_workers=min(8, len(keys))) as pool:
            tables = list(pool.map(lambda k: read_parquet_bytes(get_bytes(client, bucket, k)), keys))
        return _finish(tables, dedupe)

    import pyarrow.dataset as ds

    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = _visible_parquet(root)
    else:
        raise StorageError(ErrorCode.NOT_FOUND, f"no such grades folder: {root}")
    if not files:
        return _finish([], dedupe)
    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet", schema=GRADE_SCHEMA)
        table = dataset.to_table()
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(ErrorCode.STORAGE_ERROR, f"cannot read grades under {root}: {_one_line(str(exc))}") \
            from None
    return _finish([table], dedupe)
