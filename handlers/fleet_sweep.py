"""Nightly fleet sweep: list a prefix, grade it in batches, compact the day's per-upload files.

Input: an EventBridge Scheduled Event (bucket/prefix from SWEEP_BUCKET/SWEEP_PREFIX), a
Scheduler (ScheduleV2) input `{"bucket", "prefix", "date"}`, or `{"action": "compact", "date"}`
from the state machine's last step. For fleets past one function's 15 minutes the state
machine's Distributed Map fans out over handlers.sweep_batch instead; this handler stops
cleanly before its deadline and says where to resume (`resume_after`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict
from typing import Any

from signalcraft_core.io.events import ObjectRef, parse_sweep_event
from signalcraft_core.io.objects import list_keys
from signalcraft_core.logs import request_id
from signalcraft_core.pipeline.grade import (
    grade_objects,
    merge_summaries,
    refusal,
    summarise,
)
from signalcraft_core.pipeline.runtime import get_runtime

#: Stop taking new batches when less than this is left of the invocation.
DEADLINE_MARGIN_MS = 60_000


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    request_id.set(getattr(context, "aws_request_id", None))
    runtime = get_runtime()
    sink = runtime.sink()  # no OUTPUT_BUCKET: fail before grading anything
    if event.get("action") == "compact":
        day = event.get("date") or dt.datetime.now(dt.timezone.utc).date().isoformat()
        return {"action": "compact", "date": day, **asdict(sink.compact(day))}
    request = parse_sweep_event(event, os.environ.get("SWEEP_BUCKET"), os.environ.get("SWEEP_PREFIX", ""))
    day = request.date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    summary = summarise(())
    batch: list[ObjectRef] = []
    files = 0
    resume_after = None
    start_after = event.get("start_after")
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
                        start_after=start_after or None)
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
