"""Turn every event that can trigger scoring into typed object references, so handlers never touch raw JSON.

Accepted shapes (parsed, never fetched: this module does no I/O):

* S3 notifications as Lambda receives them (``eventSource`` ``aws:s3``), including the form
  ``sam local generate-event s3 put`` prints.
* MinIO notifications (``eventSource`` ``minio:s3``, ``eventName`` ``s3:ObjectCreated:Put``), bare or in the
  webhook wrapper ``{"EventName", "Key", "Records"}``.
* EventBridge ``Object Created`` events from ``aws.s3``.
* SQS batches whose message bodies hold any of the above, or an SNS envelope around them; each SQS message
  is one :class:`EventItem` so the handler can report partial batch failures by ``messageId``.
* SNS invoking Lambda directly (``EventSource`` ``aws:sns``).

Key decoding: S3 and MinIO notifications deliver the object key URL-encoded (S3: space as ``+``, ``:`` as
``%3A``; MinIO: ``url.QueryEscape``, so ``/`` is ``%2F``; SAM samples: ``%20``). We decode them with
:func:`urllib.parse.unquote_plus`; a literal ``+`` in a key arrives as ``%2B`` and so decodes back to ``+``.
EventBridge ``Object Created`` events carry the key as stored (public samples show a ``:`` unencoded), so it
is taken raw, and decoded only when it *looks* encoded: it holds a ``%XX`` escape and nothing an encoder would
have escaped (see :func:`eventbridge_key`). A ``+`` there is a literal plus. Keys from a ListObjectsV2 listing
(Step Functions Distributed Map) are *not* encoded and are used as given.

JSON text inside events (SQS bodies, SNS messages) is parsed with a bounded nesting depth
(:data:`MAX_JSON_DEPTH`): a hostile body fails its own message, never the batch.

An event sent to the wrong function is refused with a message naming the function it is for
(:data:`FUNCTION_FOR`, the logical ids of template.yaml), e.g. "this is a scheduled event: invoke
FleetSweepFunction".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote_plus

from signalcraft_core.io.objects import clean_etag

__all__ = [
    "FUNCTION_FOR",
    "MAX_JSON_DEPTH",
    "MAX_SIZE",
    "SOURCES",
    "EventItem",
    "MapBatch",
    "ObjectRef",
    "SweepRequest",
    "is_own_output",
    "parse_event",
    "parse_map_batch",
    "parse_sweep_event",
    "eventbridge_key",
    "json_depth",
    "wanted",
]

SOURCES: tuple[str, ...] = ("s3", "minio", "eventbridge", "sqs", "sweep", "map", "cli", "file")
"""Where an :class:`ObjectRef` came from; recorded with each grade for tracing."""

_MAX_NESTING = 4  # SQS -> SNS -> notification is 3 levels; anything deeper is not a real shape

MAX_JSON_DEPTH = 64
"""Deepest array/object nesting accepted in one JSON text (a real notification is under 10 levels deep)."""

FUNCTION_FOR: dict[str, str] = {
    "object": "ScoreUploadFunction",
    "sweep": "FleetSweepFunction",
    "map": "SweepBatchFunction",
}
"""Which function of template.yaml each kind of event is for (named in wrong-function refusals)."""

_WRONG_FUNCTION = {
    "object": "this is an S3/MinIO/EventBridge/SQS object event: invoke " + FUNCTION_FOR["object"],
    "scheduled": "this is a scheduled event: invoke " + FUNCTION_FOR["sweep"],
    "sweep": "this is a sweep request: invoke " + FUNCTION_FOR["sweep"],
    "map": "this is a Distributed Map batch: invoke " + FUNCTION_FOR["map"],
}
_SWEEP_FIELDS = frozenset({"bucket", "prefix", "date", "Input", "action", "start_after"})
# What an URL encoder leaves as is (unreserved characters, '/' kept, '+' for space, '*' by Java's encoder).
_ENCODED_ALPHABET = re.compile(r"[A-Za-z0-9\-_.~*/+%]*")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# A string literal (an unterminated one runs to the end: every match succeeds, so scanning is linear) or a bracket.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)
_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:$|[T ])")


@dataclass(frozen=True)
class ObjectRef:
    """One object to grade: the bucket and the decoded key, plus what the event told us about it."""

    bucket: str | None  # None only for a local file (source "file")
    key: str  # decoded: the key to pass to GetObject, or a local file's path
    etag: str | None = None  # without quotes
    version_id: str | None = None
    size: int | None = None
    event_time: str | None = None  # ISO 8601 as given by the event
    source: str = "s3"  # one of SOURCES

    def __post_init__(self) -> None:
        if self.source == "file":  # a local recording (`signalcraft score`): the key is its path, no bucket
            if self.bucket is not None:
                raise ValueError("a local file has no bucket")
        elif not isinstance(self.bucket, str) or not self.bucket:
            raise ValueError("object reference without a bucket name")
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"object reference in bucket {self.bucket!r} without a key")


@dataclass(frozen=True)
class EventItem:
    """One unit of partial-failure accounting: an SQS message, or one record of a direct invocation."""

    message_id: str | None  # SQS messageId, else None
    refs: tuple[ObjectRef, ...]
    error: str | None = None  # the message could not be understood: report it as a batch item failure
    skipped: str | None = None  # understood but nothing to grade (e.g. "s3:TestEvent", ObjectRemoved)


@dataclass(frozen=True)
class SweepRequest:
    """What a scheduled sweep should list: a bucket, a key prefix and optionally one day."""

    bucket: str
    prefix: str
    date: str | None  # "YYYY-MM-DD"


@dataclass(frozen=True)
class MapBatch:
    """One Distributed Map child batch: the listed objects and the map's shared BatchInput."""

    refs: tuple[ObjectRef, ...]
    batch_input: dict


class _ShapeError(ValueError):
    """A payload we do not recognise (top level: raised; inside an SQS message: that message fails)."""


@dataclass(frozen=True)
class _Part:
    """The outcome of one notification record before it is grouped into EventItems."""

    refs: tuple[ObjectRef, ...] = ()
    error: str | None = None
    skipped: str | None = None


# --------------------------------------------------------------------------------------------- helpers


MAX_SIZE = 2**63 - 1
"""The largest size an event may state: the records store sizes as int64 (a larger one could not be written)."""


def _as_size(value: Any) -> int | None:
    """Sizes are ints in events; tolerate digit strings, refuse anything else quietly (None: HEAD it).

    Out of range (negative, past int64) is refused too: such a size would fail the record's write
    later, i.e. the whole batch, instead of being looked up.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= MAX_SIZE else None


def _opt_str(value: Any) -> str | None:
    """Optional string fields: empty and non-string values become None."""
    return value if isinstance(value, str) and value else None


def _describe(obj: Any) -> str:
    """A short, log-safe description of an unrecognised payload."""
    if isinstance(obj, Mapping):
        keys = sorted(str(k) for k in obj)[:8]
        return f"object with keys {keys}"
    return type(obj).__name__


def _event_name(name: Any) -> str:
    """MinIO prefixes event names with 's3:'; S3 does not. Compare without it."""
    name = name if isinstance(name, str) else ""
    return name[3:] if name.startswith("s3:") else name


# ------------------------------------------------------------------------------------- notifications


def _notification_record(record: Any, source: str | None) -> _Part:
    """One S3/MinIO notification record: a ref for ObjectCreated:*, a skip reason otherwise."""
    if not isinstance(record, Mapping):
        return _Part(error=f"notification record is {type(record).__name__}, not an object")
    name = record.get("eventName")
    if not _event_name(name).startswith("ObjectCreated:"):
        return _Part(skipped=f"{name or 'unnamed event'}: not an object-created event")
    origin = source or ("minio" if record.get("eventSource") == "minio:s3" else "s3")
    try:
        s3 = record["s3"]
        obj = s3["object"]
        raw_key = obj["key"]
        bucket = s3["bucket"]["name"]
        if not isinstance(raw_key, str):
            raise TypeError("key is not a string")
        ref = ObjectRef(
            bucket=bucket,
            key=unquote_plus(raw_key),
            etag=clean_etag(obj.get("eTag")),
            version_id=_opt_str(obj.get("versionId")),
            size=_as_size(obj.get("size")),
            event_time=_opt_str(record.get("eventTime")),
            source=origin,
        )
    except (KeyError, TypeError, ValueError) as exc:
        return _Part(error=f"malformed {name} record: {exc.__class__.__name__}: {exc}")
    return _Part(refs=(ref,))


def _eventbridge_event(event: Mapping[str, Any], source: str | None) -> _Part:
    """An EventBridge event from aws.s3: a ref for 'Object Created', a skip reason otherwise."""
    detail_type = event.get("detail-type")
    if detail_type != "Object Created":
        return _Part(skipped=f"{detail_type}: not an object-created event")
    try:
        detail = event["detail"]
        obj = detail["object"]
        raw_key = obj["key"]
        if not isinstance(raw_key, str):
            raise TypeError("key is not a string")
        ref = ObjectRef(
            bucket=detail["bucket"]["name"],
            key=eventbridge_key(raw_key),
            etag=clean_etag(obj.get("etag")),
            version_id=_opt_str(obj.get("version-id")),
            size=_as_size(obj.get("size")),
            event_time=_opt_str(event.get("time")),
            source=source or "eventbridge",
        )
    except (KeyError, TypeError, ValueError) as exc:
        return _Part(error=f"malformed Object Created event: {exc.__class__.__name__}: {exc}")
    return _Part(refs=(ref,))


def eventbridge_key(raw: str) -> str:
    """The object key of an EventBridge ``Object Created`` event: raw first, decoded only if it looks encoded.

    EventBridge shows keys as stored (``t=05:00.wav``, ``a+b.wav``, ``Lüfter/ü 1.wav``), so the raw key
    wins whenever it holds a character an encoder would have escaped (space, ``:``, ``=``, non-ASCII ...),
    a lone ``%`` or no ``%XX`` escape at all. Only a key made of encoder output *and* holding an escape
    (``rec%200001.wav``) is decoded, with :func:`urllib.parse.unquote_plus`. The one key this misreads is
    a stored name that itself looks encoded (``a%20b.wav`` meant literally).
    """
    looks_encoded = (
        _ENCODED_ALPHABET.fullmatch(raw) is not None
        and _ESCAPE.search(raw) is not None
        and _BAD_PERCENT.search(raw) is None
    )
    return unquote_plus(raw) if looks_encoded else raw


def _is_test_event(payload: Mapping[str, Any]) -> bool:
    return payload.get("Event") == "s3:TestEvent"


def _payload_parts(payload: Any, source: str | None, depth: int = 0) -> list[_Part]:
    """Parse any non-SQS payload (notification, EventBridge, SNS envelope, TestEvent) into parts.

    ``source`` overrides the refs' source (``"sqs"`` for anything delivered through SQS).
    Raises _ShapeError for payloads that match no known shape.
    """
    if depth > _MAX_NESTING:
        raise _ShapeError("payload nested too deeply")
    if not isinstance(payload, Mapping):
        raise _ShapeError(f"unrecognised event: {_describe(payload)}")
    if _is_test_event(payload):
        return [_Part(skipped="s3:TestEvent")]
    if payload.get("Type") == "Notification" and "Message" in payload:  # SNS envelope (SQS body, raw off)
        return _payload_parts(_json_or_shape_error(payload["Message"], "SNS Message"), source, depth + 1)
    if "detail-type" in payload and "detail" in payload:
        if payload.get("source") != "aws.s3":
            raise _ShapeError(
                f"EventBridge event from {payload.get('source')!r} ({payload.get('detail-type')!r}) "
                "is not an S3 event"
            )
        return [_eventbridge_event(payload, source)]
    records = payload.get("Records")
    if isinstance(records, list):
        if not records:
            return [_Part(skipped="notification without records")]
        parts: list[_Part] = []
        for record in records:
            if isinstance(record, Mapping) and record.get("EventSource") == "aws:sns":
                sns = record.get("Sns")
                message = sns.get("Message") if isinstance(sns, Mapping) else None
                inner = _json_or_shape_error(message, "SNS Message")
                parts.extend(_payload_parts(inner, source, depth + 1))
            elif isinstance(record, Mapping) and record.get("eventSource") in ("aws:s3", "minio:s3"):
                parts.append(_notification_record(record, source))
            elif isinstance(record, Mapping) and "s3" in record and "eventName" in record:
                # S3-compatible stores that omit eventSource
                parts.append(_notification_record(record, source))
            else:
                src = None
                if isinstance(record, Mapping):
                    src = record.get("eventSource") or record.get("EventSource")
                raise _ShapeError(f"unsupported record (eventSource {src!r}) in Records")
        return parts
    raise _ShapeError(f"unrecognised event: {_describe(payload)}")


def _json_or_shape_error(value: Any, what: str) -> Any:
    """Bodies and SNS messages are JSON strings; a dict is accepted as already parsed."""
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, (str, bytes)):
        raise _ShapeError(f"{what} is {type(value).__name__}, not JSON text")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _ShapeError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise _ShapeError(f"{what} is nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    try:
        return json.loads(value)
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        pos = getattr(exc, "pos", "?")
        raise _ShapeError(f"{what} is not JSON ({msg} at char {pos})") from None
    except RecursionError:  # belt and braces: the depth check above should make this unreachable
        raise _ShapeError(f"{what} is nested too deeply") from None


def json_depth(text: str) -> int:
    """The deepest array/object nesting in JSON text, found without parsing it (no recursion, linear time).

    Brackets inside string literals do not count. Malformed text gets some number; json.loads then says
    what is wrong with it.
    """
    depth = deepest = 0
    for token in _JSON_TOKEN.findall(text):
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth -= 1
    return deepest


# ------------------------------------------------------------------------------------------------ SQS


def _is_sqs_record(record: Any) -> bool:
    return isinstance(record, Mapping) and (
        record.get("eventSource") == "aws:sqs" or ("messageId" in record and "body" in record)
    )


def _sqs_item(record: Mapping[str, Any]) -> EventItem:
    """One SQS message -> one EventItem; anything wrong with it fails that message only."""
    message_id = _opt_str(record.get("messageId"))
    try:
        parts = _payload_parts(_json_or_shape_error(record.get("body"), "SQS body"), "sqs", 1)
    except _ShapeError as exc:
        return EventItem(message_id=message_id, refs=(), error=str(exc))
    errors = [p.error for p in parts if p.error]
    if errors:
        # Fail the whole message (it is retried / dead-lettered as a unit); grading half of it would
        # grade the good half twice on the retry.
        return EventItem(message_id=message_id, refs=(), error="; ".join(errors))
    refs = tuple(ref for p in parts for ref in p.refs)
    if refs:
        return EventItem(message_id=message_id, refs=refs)
    reasons = list(dict.fromkeys(p.skipped for p in parts if p.skipped))
    return EventItem(message_id=message_id, refs=(), skipped="; ".join(reasons) or "no objects")


# ----------------------------------------------------------------------------------------- public API


def parse_event(event: Mapping[str, Any]) -> list[EventItem]:
    """Parse an upload-triggered event into EventItems (one per SQS message, else one per record).

    Raises ValueError with one clear line when the top-level shape is not one we handle; problems
    inside a single SQS message become that item's ``error`` instead.
    """
    if not isinstance(event, Mapping):
        raise ValueError(f"unrecognised event: {_describe(event)}")
    kind = _event_kind(event)
    if kind in ("scheduled", "sweep", "map"):
        raise ValueError(_WRONG_FUNCTION[kind])
    records = event.get("Records")
    if isinstance(records, list) and records and any(_is_sqs_record(r) for r in records):
        if not all(_is_sqs_record(r) for r in records):
            raise ValueError("Records mix SQS messages with other records")
        return [_sqs_item(r) for r in records]
    try:
        parts = _payload_parts(event, None)
    except _ShapeError as exc:
        raise ValueError(str(exc)) from None
    return [EventItem(message_id=None, refs=p.refs, error=p.error, skipped=p.skipped) for p in parts]


def _event_kind(event: Mapping[str, Any]) -> str | None:
    """Which function an event is for, by its shape: "object", "scheduled", "sweep", "map" or None (unknown).

    Only the top-level shape is looked at; whether the details are right is for the parser of that kind.
    """
    if event.get("detail-type") == "Scheduled Event":
        return "scheduled"
    if "Items" in event or ("Key" in event and "BatchInput" in event):
        return "map"
    if "detail-type" in event or isinstance(event.get("Records"), list) or _is_test_event(event):
        return "object"
    if event and set(event) <= _SWEEP_FIELDS:
        return "sweep"
    return None


def _sweep_date(value: Any) -> str | None:
    """'YYYY-MM-DD', or the date part of an ISO timestamp (e.g. <aws.scheduler.scheduled-time>)."""
    if value is None or value == "":
        return None
    match = _DATE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"sweep date {value!r} is not YYYY-MM-DD")
    day = match.group(1)
    try:
        datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        raise ValueError(f"sweep date {value!r} is not a calendar date") from None
    return day


def parse_sweep_event(
    event: Mapping[str, Any], default_bucket: str | None = None, default_prefix: str = ""
) -> SweepRequest:
    """Parse a nightly-sweep trigger into a SweepRequest.

    Accepts an EventBridge ``Scheduled Event`` (carries no bucket: defaults apply; the date is the day of
    its ``time``), an EventBridge Scheduler input ``{"bucket", "prefix", "date"}`` (each optional, defaults
    fill in), or that input wrapped as ``{"Input": <JSON string or object>}``.
    """
    if not isinstance(event, Mapping):
        raise ValueError(f"unrecognised sweep event: {_describe(event)}")
    if event.get("detail-type") == "Scheduled Event":
        if not default_bucket:
            raise ValueError("scheduled event names no bucket and no default bucket is configured")
        return SweepRequest(bucket=default_bucket, prefix=default_prefix, date=_sweep_date(event.get("time")))
    kind = _event_kind(event)
    if kind in ("object", "map"):
        raise ValueError(_WRONG_FUNCTION[kind])
    payload: Any = event
    if "Input" in event:
        try:
            payload = _json_or_shape_error(event["Input"], "schedule Input")
        except _ShapeError as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(payload, Mapping):
            raise ValueError(f"schedule Input is {_describe(payload)}, not an object")
    bucket = payload.get("bucket") or default_bucket
    if not isinstance(bucket, str) or not bucket:
        raise ValueError("sweep event names no bucket and no default bucket is configured")
    prefix = payload.get("prefix")
    if prefix is None:
        prefix = default_prefix
    if not isinstance(prefix, str):
        raise ValueError(f"sweep prefix must be a string, got {type(prefix).__name__}")
    return SweepRequest(bucket=bucket, prefix=prefix, date=_sweep_date(payload.get("date")))


def _last_modified(value: Any) -> str | None:
    """ListObjectsV2 items carry LastModified as epoch seconds (Step Functions) or an ISO string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _opt_str(value)


def _map_item(item: Any, bucket: str) -> ObjectRef:
    """One ListObjectsV2 item (or a bare key string) -> ObjectRef; the key is used as listed."""
    if isinstance(item, str):
        return ObjectRef(bucket=bucket, key=item, source="map")
    if not isinstance(item, Mapping):
        raise ValueError(f"map item is {type(item).__name__}, not an object")
    key = item.get("Key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"map item without a Key: {_describe(item)}")
    return ObjectRef(
        bucket=bucket,
        key=key,
        etag=clean_etag(item.get("ETag", item.get("Etag"))),
        version_id=_opt_str(item.get("VersionId")),
        size=_as_size(item.get("Size")),
        event_time=_last_modified(item.get("LastModified")),
        source="map",
    )


def parse_map_batch(event: Mapping[str, Any], default_bucket: str | None = None) -> MapBatch:
    """Parse a Distributed Map child input ``{"Items": [...], "BatchInput": {...}}`` into a MapBatch.

    The bucket comes from ``BatchInput.bucket`` (or ``Bucket``), else ``default_bucket``. A single item
    (a map without ItemBatcher) is accepted as a batch of one.
    """
    if not isinstance(event, Mapping):
        raise ValueError(f"unrecognised map event: {_describe(event)}")
    kind = _event_kind(event)
    if kind in ("object", "scheduled", "sweep"):
        raise ValueError(_WRONG_FUNCTION[kind])
    if "Items" in event:
        items = event["Items"]
        if not isinstance(items, list):
            raise ValueError(f"map batch Items is {type(items).__name__}, not a list")
    elif "Key" in event:
        items = [event]
    else:
        raise ValueError(f"not a Distributed Map batch: {_describe(event)}")
    batch_input = event.get("BatchInput") or {}
    if not isinstance(batch_input, Mapping):
        raise ValueError(f"map BatchInput is {type(batch_input).__name__}, not an object")
    bucket = batch_input.get("bucket") or batch_input.get("Bucket") or default_bucket
    if not isinstance(bucket, str) or not bucket:
        raise ValueError("map batch names no bucket (BatchInput.bucket) and no default bucket is configured")
    return MapBatch(refs=tuple(_map_item(item, bucket) for item in items), batch_input=dict(batch_input))


def wanted(ref: ObjectRef, suffixes: Sequence[str] | str = (".wav",)) -> bool:
    """True when the key ends with one of ``suffixes`` (any case): only recordings are graded."""
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    key = ref.key.lower()
    return any(key.endswith(s.lower()) for s in suffixes if s)


def is_own_output(ref: ObjectRef, output_bucket: str | None, output_prefix: str) -> bool:
    """True when ``ref`` lies under our own output location: never grade what we wrote (no recursion).

    The prefix is matched literally (``"grades"`` also covers ``"grades-old/..."``): refusing too much
    is safe, grading our own output in a loop is not. An empty prefix means the whole output bucket.
    """
    if not output_bucket or ref.bucket != output_bucket:
        return False
    return ref.key.startswith((output_prefix or "").lstrip("/"))
