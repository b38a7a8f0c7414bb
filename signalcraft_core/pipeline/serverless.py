"""The serverless front doors, once: an upload event, a Distributed Map batch, the nightly sweep.

Each handler in handlers/ is one call into here. What the platform needs lives here too:
partial batch failures for SQS (the shape of Powertools' `process_partial_response`: a failed
message is retried alone, the others are done), raising for a direct invocation whose recording
could not be graded for a transient reason (Lambda retries, then the on-failure queue), and the
deadline-bounded sweep loop.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict
from typing import Any

from signalcraft_core.errors import ErrorCode, ModelError, StorageError
from signalcraft_core.io.events import (
    ObjectRef,
    parse_event,
    parse_map_batch,
    parse_sweep_event,
)
from signalcraft_core.io.objects import list_keys
from signalcraft_core.logs import request_id
from signalcraft_core.pipeline.grade import (
    TRANSIENT_CODES,
    grade_objects,
    merge_summaries,
    refusal,
    summarise,
)
from signalcraft_core.pipeline.runtime import get_runtime

log = logging.getLogger(__name__)

#: Stop taking new sweep batches when less than this is left of the invocation.
DEADLINE_MARGIN_MS = 60_000


def _start(context: Any):
    request_id.set(getattr(context, "aws_request_id", None))
    runtime = get_runtime()
    return runtime, runtime.sink()  # no OUTPUT_BUCKET: fail before grading anything


def grade_upload_event(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Grade every recording an object-store event names (S3, MinIO, EventBridge, SQS of any of those).

    Exactly one final record per recording. A transient failure (storage, model set) raises for a
    direct invocation, or marks that SQS message in `batchItemFailures`: never a silent drop.
    """
    runtime, sink = _start(context)
    items = parse_event(event)
    summary: dict[str, Any] = summarise(())
    failures: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    written: list[str] = []
    for item in items:
        if item.error:
            log.warning("unreadable message", extra={"message_id": item.message_id, "reason": item.error})
            failures.append({"itemIdentifier": item.message_id or ""})
            continue
        if item.skipped:
            skipped.append({"reason": item.skipped})
            continue
        refs = []
        for ref in item.refs:
            reason = refusal(ref, runtime.config)
            if reason:
                log.info("not graded", extra={"bucket": ref.bucket, "key": ref.key, "reason": reason})
                skipped.append({"key": ref.key, "reason": reason})
            else:
                refs.append(ref)
        records = grade_objects(refs, runtime.client, runtime.store, runtime.config)
        final = [r for r in records if r.error_code not in TRANSIENT_CODES]
        written += sink.write(final) if final else []
        summary = merge_summaries(summary, summarise(final))
        transient = [r for r in records if r.error_code in TRANSIENT_CODES]
        for r in records:
            log.info("graded", extra={"key": r.key, "status": r.status, "grade": r.grade, "score": r.score,
                                      "error_code": r.error_code})
        if transient:
            if item.message_id is None:
                first = transient[0]
                if first.error_code == ErrorCode.MODEL_ERROR.value:
                    raise ModelError(f"{len(transient)} object(s) could not be graded: {first.error_message}")
                raise StorageError(ErrorCode.STORAGE_ERROR,
                                   f"{len(transient)} object(s) could not be read: {first.error_message}")
            failures.append({"itemIdentifier": item.message_id})
    response: dict[str, Any] = {**summary, "skipped": skipped, "written": written}
    if any(item.message_id is not None for item in items):
        response["batchItemFailures"] = failures
    return response


def grade_map_batch(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """One ItemBatcher batch of listed objects; storage failures become error records (a re-run fills them in)."""
    runtime, sink = _start(context)
    batch = parse_map_batch(event)
    refs = [ref for ref in batch.refs if refusal(ref, runtime.config) is None]
    records = grade_objects(refs, runtime.client, runtime.store, runtime.config)
    written = sink.write(records) if records else []
    return {**summarise(records), "skipped": len(batch.refs) - len(refs), "written": written}


def run_sweep(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """List a prefix and grade it in batches until done or near the deadline; then compact.

    `{"action": "compact", "date"}` only compacts (the state machine's last step). A sweep that
    stops before its deadline says where to resume (`resume_after`).
    """
    runtime, sink = _start(context)
    if event.get("action") == "compact":
        day = event.get("date") or dt.datetime.now(dt.timezone.utc).date().isoformat()
        return {"action": "compact", "date": day, **asdict(sink.compact(day))}
    request = parse_sweep_event(event, runtime.config.sweep_bucket, runtime.config.sweep_prefix)
    day = request.date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    summary = summarise(())
    batch: list[ObjectRef] = []
    files = 0
    resume_after = None
    on_progress = getattr(context, "on_progress", None)  # set by `signalcraft sweep`; Lambda has none

    def flush() -> None:
        nonlocal files, summary
        records = grade_objects(batch, runtime.client, runtime.store, runtime.config)
        files += len(sink.write(records))  # one file per partition the batch touches
        summary = merge_summaries(summary, summarise(records))
        batch.clear()
        if on_progress is not None:
            on_progress(summary["records"])

    listing = list_keys(runtime.client, request.bucket, request.prefix, runtime.config.suffixes,
                        start_after=event.get("start_after") or None)
    for info in listing:
        ref = ObjectRef(bucket=request.bucket, key=info.key, etag=info.etag, size=info.size,
                        event_time=info.last_modified.isoformat() if info.last_modified else None, source="sweep")
        if refusal(ref, runtime.config):
            continue
        batch.append(ref)
        if len(batch) >= runtime.config.batch_size:
            last_key = batch[-1].key
            flush()
            if context is not None and context.get_remaining_time_in_millis() < DEADLINE_MARGIN_MS:
                resume_after = last_key
                break
    if batch:
        flush()
    result = {"bucket": request.bucket, "prefix": request.prefix, "date": day, **summary, "parquet_files": files,
              "complete": resume_after is None, "resume_after": resume_after}
    if resume_after is None:
        result["compaction"] = asdict(sink.compact(day))
    return result
