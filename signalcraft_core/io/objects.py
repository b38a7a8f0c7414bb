"""The object store and local files: boto3 (AWS, or MinIO via AWS_ENDPOINT_URL) with stable error codes.

Failures leave here as `StorageError` with a stable code (NOT_FOUND, TOO_LARGE, STORAGE_ERROR) and a
one-line message, so callers turn them into error records instead of tracebacks.
"""

from __future__ import annotations

import email.utils
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar

from signalcraft_core.errors import ErrorCode, StorageError
from signalcraft_core.logs import one_line

if TYPE_CHECKING:  # boto3 types only for readers; the client is duck-typed at run time
    from botocore.client import BaseClient

_DELETE_BATCH = 1000  # the S3 DeleteObjects limit
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion", "NoSuchBucket"})

T = TypeVar("T")
_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


# --------------------------------------------------------------------------- clients


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _parse_timestamp(value: Any) -> Any:
    """botocore's timestamp parser, without dateutil for the two forms S3 sends.

    Every HEAD and GET answers a Last-Modified header (RFC 7231 date) and a listing holds an ISO
    8601 time per object; dateutil took a tenth of the sweep's S3 CPU on them. Anything else, or a
    time without a zone, goes to botocore's own parser, so results are the same UTC-aware datetimes.
    """
    if isinstance(value, str):
        try:
            parsed = email.utils.parsedate_to_datetime(value) if value.endswith("GMT") else datetime.fromisoformat(value)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


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
        import botocore.session

        core = botocore.session.get_session()  # own session: the default one is not thread-safe to create
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_timestamp)
        session = boto3.session.Session(botocore_session=core)
        client = session.client("s3", endpoint_url=endpoint_url, config=Config(**options))
        _clients[key] = client
        return client


def clear_client_cache() -> None:
    """Forget cached clients (tests, or after credentials changed)."""
    with _clients_lock:
        _clients.clear()


# --------------------------------------------------------------------------- errors


def _where(bucket: str, key: str) -> str:
    return "s3://" + one_line(f"{bucket}/{key}".replace("\n", "\\n"), limit=200)


def _to_storage_error(exc: Exception, operation: str, bucket: str, key: str) -> StorageError:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code", "") or "")
        status = (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode")
        if code in _NOT_FOUND_CODES or status == 404:
            what = "bucket" if code == "NoSuchBucket" else "object"
            return StorageError(ErrorCode.NOT_FOUND, f"{what} not found: {_where(bucket, key)}")
        detail = one_line(str(error.get("Message", "") or ""), limit=120)
        return StorageError(
            ErrorCode.STORAGE_ERROR,
            f"{operation} {_where(bucket, key)} failed: {code or 'error'} (HTTP {status})"
            + (f": {detail}" if detail else ""),
        )
    return StorageError(
        ErrorCode.STORAGE_ERROR,
        f"{operation} {_where(bucket, key)} failed: {type(exc).__name__}: {one_line(str(exc), 160)}",
    )


def _boto_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _stream_errors() -> tuple[type[Exception], ...]:
    """A GET body that broke off mid-way: worth one fresh GET (botocore does not retry a body read)."""
    from botocore.exceptions import (
        ConnectionClosedError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    return (ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError)


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


def _info(response: dict[str, Any], size: int) -> ObjectInfo:
    """What a HEAD or GET response says about the object ("null" is an unversioned bucket's version id)."""
    version = response.get("VersionId")
    return ObjectInfo(size=size, etag=clean_etag(response.get("ETag")),
                      version_id=None if version in (None, "null") else version,
                      last_modified=response.get("LastModified"))


def clean_etag(value: Any) -> str | None:
    """ETags arrive with or without surrounding quotes (and events may send anything); we keep them without."""
    if not isinstance(value, str):
        return None
    return value.strip().strip('"') or None


def head(client: "BaseClient", bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
    """Size, ETag, version id and last-modified of one object; NOT_FOUND when it is gone."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        response = client.head_object(**kwargs)
    except _boto_errors() as exc:
        raise _to_storage_error(exc, "HEAD", bucket, key) from None
    return _info(response, int(response.get("ContentLength", 0)))


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
    def take(body: Any, length: int | None) -> tuple[bytes, int]:
        if max_bytes is None or length is not None:
            data = body.read()  # verifies the content length
        else:
            data = _bounded_read(body, max_bytes, bucket, key)
        return data, len(data)

    return _get_retried(client, bucket, key, version_id, max_bytes, take)


def _bounded_read(body: Any, max_bytes: int, bucket: str, key: str) -> bytes:
    """A body without Content-Length (never from S3 or MinIO), read whole but refused past `max_bytes`."""
    data = body.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(bucket, key, len(data), max_bytes)
    return data


class _StreamCut(StorageError):
    """The body of a GET broke off mid-way (reset, timeout): the whole read is tried once more."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(ErrorCode.STORAGE_ERROR, f"{type(cause).__name__}")
        self.cause = cause


def _get_retried(client: "BaseClient", bucket: str, key: str, version_id: str | None, max_bytes: int | None,
                 take: Callable[[Any, int | None], tuple[T, int]]) -> tuple[T, ObjectInfo]:
    """One GET whose body `take(body, content_length)` reads (returning its result and the byte count).

    The size limit is checked on the response's Content-Length before `take` runs; botocore retries
    the request itself, and a body that breaks off mid-way (a stream error, or a `_StreamCut` from
    `take`) gets one fresh GET more. Storage failures become StorageErrors; anything else `take`
    raises passes through. The body is closed in every case.
    """
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    streaming = _stream_errors()
    attempts = 2
    for attempt in range(attempts):
        body = None
        try:
            response = client.get_object(**kwargs)
            body = response["Body"]
            length = response.get("ContentLength")
            if max_bytes is not None and length is not None and length > max_bytes:
                raise _too_large(bucket, key, int(length), max_bytes)
            result, size = take(body, None if length is None else int(length))
            return result, _info(response, size)
        except _StreamCut as cut:
            if attempt + 1 < attempts:
                continue
            raise _to_storage_error(cut.cause, "GET", bucket, key) from None
        except streaming as exc:
            if attempt + 1 < attempts:
                continue
            raise _to_storage_error(exc, "GET", bucket, key) from None
        except _boto_errors() as exc:
            raise _to_storage_error(exc, "GET", bucket, key) from None
        finally:
            if body is not None:
                body.close()
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
    """Download one object whole, refusing anything over `max_bytes` BEFORE downloading it.

    The size comes from `known_size` (e.g. a listing) or a HEAD. Errors: TOO_LARGE, NOT_FOUND, or
    STORAGE_ERROR once botocore's own retries are spent. Recordings are graded through
    `fetch_stream` instead (decoded while they arrive); this is for training's downloads.
    """
    size = known_size if known_size is not None else head(client, ref_bucket, key, version_id).size
    if size > max_bytes:
        raise _too_large(ref_bucket, key, size, max_bytes)
    return _get_object(client, ref_bucket, key, version_id, max_bytes)[0]


def fetch_stream(
    client: "BaseClient",
    bucket: str,
    key: str,
    consume: Callable[[Callable[[int], bytes], int], T],
    *,
    max_bytes: int,
    known_size: int | None = None,
    version_id: str | None = None,
    block_bytes: int = 1 << 20,
) -> tuple[T, ObjectInfo]:
    """Download one recording as a stream: `consume(read, size)` reads the body front to back.

    Nothing is held but what `consume` keeps and botocore's read buffer (`read(n)` hands out at most
    `block_bytes` per call), so a 256 MiB object never sits in memory. The size limit is checked before
    the GET (`known_size` or a HEAD) and on the response's Content-Length. A body that breaks off
    mid-way makes `consume` start again from a fresh GET once (botocore retries the request itself);
    errors `consume` raises (e.g. an AudioError) pass through. Returns its result and what the
    response says about the bytes (size, ETag, version id, LastModified).
    """
    size = known_size if known_size is not None else head(client, bucket, key, version_id).size
    if size > max_bytes:
        raise _too_large(bucket, key, size, max_bytes)
    streaming = _stream_errors()

    def take(body: Any, length: int | None) -> tuple[T, int]:
        if length is None:
            view = memoryview(_bounded_read(body, max_bytes, bucket, key))
            length, pos = len(view), 0

            def read(n: int) -> bytes:
                nonlocal pos
                out = view[pos : pos + n]
                pos += len(out)
                return out  # type: ignore[return-value]
        else:
            def read(n: int) -> bytes:
                try:
                    return body.read(min(n, block_bytes))  # verifies the length at the end
                except streaming as exc:
                    raise _StreamCut(exc) from None

        return consume(read, length), length

    return _get_retried(client, bucket, key, version_id, max_bytes, take)


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
                    etag=clean_etag(item.get("ETag")),
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
    return clean_etag(response.get("ETag"))


def get_bytes_and_etag(client: "BaseClient", bucket: str, key: str) -> tuple[bytes, str | None]:
    """An object we wrote ourselves and the ETag of exactly those bytes (for a later conditional delete)."""
    data, info = _get_object(client, bucket, key, None, None)
    return data, info.etag


def delete_keys(client: "BaseClient", bucket: str, keys: Iterable[str], etags: dict[str, str] | None = None) -> int:
    """Delete objects in batches of 1000; returns how many were asked. Missing keys are not an error.

    With `etags`, a key is deleted only while it still has that ETag: S3 checks the condition
    itself (DeleteObjects' per-object ETag), and a HEAD just before skips a key rewritten since,
    for stores that ignore the condition. On those stores a rewrite landing between that HEAD and
    the delete is still deleted, and nothing after the delete can tell (an unversioned delete
    answers no ETag; the bytes are gone). So a key's name must pin its content: the grade sinks name
    a part file from its rows (`records.batch_object_name`), and such a rewrite only repeats rows
    compaction already merged (compacted files are rewritten by compaction alone, which read them).
    """
    keys = list(dict.fromkeys(keys))
    if etags is not None:
        keys = [k for k in keys if _current_etag(client, bucket, k) == etags.get(k)]
    for start in range(0, len(keys), _DELETE_BATCH):
        batch = keys[start : start + _DELETE_BATCH]
        objects = [{"Key": k, **({"ETag": f'"{etags[k]}"'} if etags and etags.get(k) else {})} for k in batch]
        try:
            response = client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        except _boto_errors() as exc:
            raise _to_storage_error(exc, "DELETE", bucket, batch[0]) from None
        errors = [e for e in response.get("Errors") or [] if e.get("Code") != "PreconditionFailed"]
        if errors:
            first = errors[0]
            raise StorageError(
                ErrorCode.STORAGE_ERROR,
                f"DELETE {_where(bucket, first.get('Key', ''))} failed: {first.get('Code', 'error')}"
                f" ({len(errors)} of {len(batch)} keys not deleted)",
            )
    return len(keys)


def _current_etag(client: "BaseClient", bucket: str, key: str) -> str | None:
    try:
        return head(client, bucket, key).etag
    except StorageError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            return None
        raise


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
