"""Grade objects from a bucket: the one pipe behind every handler (upload, sweep, map batch, CLI).

ObjectRefs in, one GradeRecord per ref out, in order. Downloads run on a small thread pool so
object-store latency overlaps with scoring; clips are scored in batches per model set.
"""

from __future__ import annotations

import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Iterable, Sequence

from signalcraft_core.config import Settings
from signalcraft_core.errors import ErrorCode, SignalcraftError, StorageError
from signalcraft_core.io.audio import AudioConfig
from signalcraft_core.io.events import ObjectRef, is_own_output, wanted
from signalcraft_core.io.keys import parse_key
from signalcraft_core.models.model_store import ModelStore
from signalcraft_core.pipeline.records import GradeRecord, record_id
from signalcraft_core.pipeline.score import ClipScore, score_payloads

log = logging.getLogger(__name__)
#: Failures the platform should retry (raise) rather than record as final: the store failed, or the
#: model set could not be used (missing, or refused by its integrity check) - not the recording's fault.
TRANSIENT_CODES = frozenset({ErrorCode.STORAGE_ERROR.value, ErrorCode.MODEL_ERROR.value})


def audio_config(settings: Settings) -> AudioConfig:
    """The decoder limits the settings give (MAX_OBJECT_BYTES, MAX_SECONDS)."""
    return AudioConfig(max_bytes=settings.max_bytes, max_seconds=settings.max_seconds)


def _utc(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def refusal(ref: ObjectRef, config: Settings) -> str | None:
    """Why a ref is not graded at all (wrong suffix, our own output), or None."""
    if is_own_output(ref, config.output_bucket, config.output_prefix):
        return "own output prefix"
    if not wanted(ref, config.suffixes):
        return "suffix not configured"
    return None


def _fetch(client: Any, ref: ObjectRef, config: Settings) -> tuple[ObjectRef, bytes | SignalcraftError]:
    """HEAD, then download: the object itself says who it is before anything can fail.

    The HEAD gives the identity (version id, else ETag), the size (the limit is checked before any
    GET) and LastModified (the partition day) of the object, whatever the event claimed; the GET
    then confirms them for the bytes actually graded. So an upload event, the sweep, a Map batch
    and a retry of the same object version all make the same record id, error or grade alike.
    """
    from signalcraft_core.io.objects import fetch_object, head

    try:
        info = head(client, ref.bucket, ref.key, ref.version_id)
        ref = _identified(ref, info)
        data, got = fetch_object(client, ref.bucket, ref.key, max_bytes=config.max_bytes, known_size=info.size,
                                 version_id=ref.version_id)
        return _identified(ref, got), data
    except SignalcraftError as exc:
        return ref, exc
    except Exception as exc:  # noqa: BLE001 - an unexpected client failure is still one record
        log.exception("download failed", extra={"bucket": ref.bucket, "key": ref.key})
        return ref, StorageError(ErrorCode.STORAGE_ERROR, f"download failed: {type(exc).__name__}")


def _identified(ref: ObjectRef, info: Any) -> ObjectRef:
    """The ref with the object's own ETag, version id, size and LastModified (where the response has them)."""
    modified = getattr(info, "last_modified", None)
    return replace(ref, etag=info.etag or ref.etag, version_id=info.version_id or ref.version_id,
                   size=info.size if info.size is not None else ref.size,
                   event_time=modified.isoformat() if modified is not None else ref.event_time)


def to_record(ref: ObjectRef, result: ClipScore, model_set: Any, key_info: Any, scored_at: dt.datetime) -> GradeRecord:
    """The Parquet row for one graded (or failed) object."""
    return GradeRecord(
        record_id=record_id(ref.bucket, ref.key, ref.version_id or ref.etag),
        bucket=ref.bucket,
        key=ref.key,
        etag=ref.etag,
        version_id=ref.version_id,
        size_bytes=ref.size,
        event_time=_utc(ref.event_time),
        scored_at=scored_at,
        site=getattr(key_info, "site", None),
        machine_type=getattr(key_info, "machine_type", None) or (model_set.machine_type if model_set else None),
        machine_id=getattr(key_info, "machine_id", None),
        model_name=model_set.name if model_set else None,
        model_version=model_set.version if model_set else None,
        profile=model_set.profile.name if model_set else None,
        level1_score=result.level1_score,
        level1_rules=result.level1_rules if result.status == "ok" else None,
        iforest_score=result.iforest_raw,
        level2_mse=result.level2_mse,
        level2_score=result.level2_score,
        level2_band_errors=result.band_errors or None,
        score=result.score,
        grade=result.grade,
        status=result.status,
        error_code=result.error_code,
        error_message=result.error_message,
        duration_s=result.duration_s,
        sample_rate_in=result.sample_rate_in,
        channels_in=result.channels_in,
    )


def grade_objects(refs: Sequence[ObjectRef], client: Any, store: ModelStore, config: Settings) -> list[GradeRecord]:
    """One record per ref, in order: downloads overlap on a thread pool, scoring is batched per model set."""
    scored_at = dt.datetime.now(dt.timezone.utc)
    records: list[GradeRecord | None] = [None] * len(refs)
    for start in range(0, len(refs), config.batch_size):
        chunk = refs[start:start + config.batch_size]
        with ThreadPoolExecutor(max_workers=max(1, min(config.io_threads, len(chunk)))) as pool:
            fetched = list(pool.map(lambda ref: _fetch(client, ref, config), chunk))
        groups: dict[int, tuple[Any, list[tuple[int, ObjectRef, Any, Any]]]] = {}
        for i, (ref, payload) in enumerate(fetched, start):
            try:
                model_set, info = store.for_key(ref.key)
            except SignalcraftError as exc:
                records[i] = to_record(ref, ClipScore.failure(exc.code, exc.message), None, parse_key(ref.key, config.key_pattern), scored_at)
                continue
            groups.setdefault(id(model_set), (model_set, []))[1].append((i, ref, payload, info))
        for model_set, members in groups.values():
            results = score_payloads(model_set, [m[2] for m in members], audio_config(config), config.preference)
            for (i, ref, _payload, info), result in zip(members, results):
                records[i] = to_record(ref, result, model_set, info, scored_at)
    return [r for r in records if r is not None]


def summarise(records: Iterable[GradeRecord]) -> dict[str, Any]:
    """Counts per grade and per error code: what the handlers return and log."""
    grades: dict[str, int] = {}
    errors: dict[str, int] = {}
    total = 0
    for r in records:
        total += 1
        if r.status == "ok":
            grades[r.grade] = grades.get(r.grade, 0) + 1
        else:
            errors[r.error_code] = errors.get(r.error_code, 0) + 1
    return {"records": total, "grades": grades, "errors": errors}


def merge_summaries(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {"records": a.get("records", 0) + b.get("records", 0), "grades": dict(a.get("grades", {})), "errors": dict(a.get("errors", {}))}
    for part in ("grades", "errors"):
        for k, v in b.get(part, {}).items():
            out[part][k] = out[part].get(k, 0) + v
    return out
