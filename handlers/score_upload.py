"""Upload handler: grade each recording an object-store event names (S3, MinIO, EventBridge, SQS).

Exactly one grade record per recording. A storage failure or an unusable model set raises (direct invocation)
so Lambda retries and finally sends the event to the on-failure queue, or becomes a
`batchItemFailures` entry (SQS), never a silent drop.
"""

from __future__ import annotations

import logging
from typing import Any

from signalcraft_core.errors import ErrorCode, ModelError, StorageError
from signalcraft_core.io.events import parse_event
from signalcraft_core.logs import request_id
from signalcraft_core.pipeline.grade import (
    TRANSIENT_CODES,
    grade_objects,
    merge_summaries,
    refusal,
    summarise,
)
from signalcraft_core.pipeline.runtime import get_runtime

log = logging.getLogger("handlers.score_upload")


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    request_id.set(getattr(context, "aws_request_id", None))
    runtime = get_runtime()
    sink = runtime.sink()  # no OUTPUT_BUCKET: fail before grading anything
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
            log.info("graded", extra={"key": r.key, "status": r.status, "grade": r.grade, "score": r.score, "error_code": r.error_code})
        if transient:
            if item.message_id is None:
                first = transient[0]
                if first.error_code == ErrorCode.MODEL_ERROR.value:
                    raise ModelError(f"{len(transient)} object(s) could not be graded: {first.error_message}")
                raise StorageError(ErrorCode.STORAGE_ERROR, f"{len(transient)} object(s) could not be read: {first.error_message}")
            failures.append({"itemIdentifier": item.message_id})
    response: dict[str, Any] = {**summary, "skipped": skipped, "written": written}
    if any(item.message_id is not None for item in items):
        response["batchItemFailures"] = failures
    return response
