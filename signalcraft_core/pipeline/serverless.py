"""The serverless front doors, once: an upload event, a Distributed Map batch, the nightly sweep.

Each handler in handlers/ is one call into here. What the platform needs lives here too:
partial batch failures for SQS (Powertools' `BatchProcessor`: a failed message is retried alone, the
others are done), raising for a direct invocation whose recording
could not be graded for a transient reason (Lambda retries, then the on-failure queue), and the
deadline-bounded sweep loop. Every grading call is counted for the invocation's metrics
(observability.py), and written records feed the machine alerts (alerts.py): CRITICAL grades here,
rising trends when a sweep completes.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict
from typing import Any

from signalcraft_core.errors import (
    ErrorCode,
    ModelError,
    SignalcraftError,
    StorageError,
)
from signalcraft_core.io.events import (
    ObjectRef,
    parse_event,
    parse_map_batch,
    parse_sweep_event,
)
from signalcraft_core.io.objects import list_keys
from signalcraft_core.logs import request_id
from signalcraft_core.pipeline import alerts, observability
from signalcraft_core.pipeline.grade import (
    TRANSIENT_CODES,
    grade_objects,
    merge_summaries,
    refusal,
    summarise,
)
from signalcraft_core.pipeline.runtime import get_runtime
from signalcraft_core.pipeline.sweep import (
    SweepState,
    check_mode,
    completed_sweep_start,
    day_of,
    final_records,
    is_candidate,
    load_state,
    next_retry,
    save_state,
)

log = logging.getLogger(__name__)

#: Stop taking new sweep chunks when less than this is left of the invocation: one more chunk must
#: fit. Measured (bench/memory_peaks.py --worst-batch, loopback S3, 2 cores): the worst legal batch,
#: BATCH_SIZE 16 x 595 s 96 kHz 16-bit stereo (218 MiB each, 3.4 GiB), takes 72.5 s wall / 59.4 s CPU
#: in one sweep batch (16 x 10-minute 16 kHz files: 24.7 s). About 2x that covers compaction, the
#: state write and a Lambda share of under one vCPU at the batch memory size.
DEADLINE_MARGIN_MS = 150_000
#: A sweep hands the grader this many scoring batches of refs at once (fewer when their objects pass
#: SWEEP_CHUNK_BYTES): within one call the downloads of later batches run while earlier ones are scored
#: (grade.py; the decode budget bounds the memory), so one download stall per chunk remains, not one
#: per batch. The byte cap keeps chunks of long recordings short, within the deadline margin above: a
#: 10-minute 16 kHz file is 19 MB (four to a chunk), a 218 MiB worst-case file ends its chunk.
SWEEP_CHUNK_BATCHES = 4
SWEEP_CHUNK_BYTES = 64 * 1024 * 1024
#: Compaction merges every partition that got a file in this window (the day's upload writers and
#: sweeps), not only "yesterday": late uploads of old recordings land in old partitions.
COMPACT_LOOKBACK_HOURS = 48


def _start(context: Any):
    request_id.set(getattr(context, "aws_request_id", None))
    runtime = get_runtime()
    return runtime, runtime.sink()  # no OUTPUT_BUCKET: fail before grading anything


def _grade(refs: list[ObjectRef], runtime: Any) -> list:
    """grade_objects, counted for the invocation's metrics (records, latency, bytes, model cache)."""
    with observability.span("grade_objects"):
        return observability.graded(runtime.store,
                                    lambda: grade_objects(refs, runtime.client, runtime.store, runtime.config))


def _alert_critical(records: list, runtime: Any, sink: Any) -> None:
    """A CRITICAL grade among records just written: one alert per machine and day (alerts.py)."""
    if any(r.grade == "CRITICAL" for r in records):
        alerts.critical_alerts(records, runtime.config, runtime.client, sink.bucket)


def _alert_trends(runtime: Any, sink: Any) -> None:
    """After a complete sweep: machines whose daily median score climbs (alerts.py); never fails the sweep."""
    try:
        alerts.trend_alerts(runtime.client, sink.bucket, sink.prefix, runtime.config)
    except SignalcraftError as exc:
        log.warning("trend alerts not checked", extra={"error_code": exc.code.value, "reason": exc.message})


class _Retry(Exception):
    """This SQS message goes back to the queue (BatchProcessor lists it in batchItemFailures)."""


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

    def grade_item(item: Any) -> None:
        """Grade one item; raises _Retry (SQS message) or the transient error (direct invocation)."""
        nonlocal summary, written
        if item.error:
            log.warning("unreadable message", extra={"message_id": item.message_id, "reason": item.error})
            raise _Retry(item.error)
        if item.skipped:
            skipped.append({"reason": item.skipped})
            return
        refs = []
        for ref in item.refs:
            reason = refusal(ref, runtime.config)
            if reason:
                log.info("not graded", extra={"bucket": ref.bucket, "key": ref.key, "reason": reason})
                skipped.append({"key": ref.key, "reason": reason})
            else:
                refs.append(ref)
        records = _grade(refs, runtime)
        final = [r for r in records if r.error_code not in TRANSIENT_CODES]
        written += sink.write(final) if final else []
        summary = merge_summaries(summary, summarise(final))
        transient = [r for r in records if r.error_code in TRANSIENT_CODES]
        for r in records:
            log.info("graded", extra={"key": r.key, "status": r.status, "grade": r.grade, "score": r.score,
                                      "error_code": r.error_code})
        _alert_critical(final, runtime, sink)
        if transient:
            if item.message_id is None:
                first = transient[0]
                if first.error_code == ErrorCode.MODEL_ERROR.value:
                    raise ModelError(f"{len(transient)} object(s) could not be graded: {first.error_message}")
                raise StorageError(ErrorCode.STORAGE_ERROR,
                                   f"{len(transient)} object(s) could not be read: {first.error_message}")
            raise _Retry(transient[0].error_code)

    is_sqs = any(item.message_id is not None for item in items)
    if is_sqs:
        failures = _sqs_batch(event, items, grade_item)
    else:
        for item in items:
            grade_item(item)
    response: dict[str, Any] = {**summary, "skipped": skipped, "written": written}
    if is_sqs:
        response["batchItemFailures"] = failures
    return response


def _sqs_batch(event: dict[str, Any], items: list, grade_item: Any) -> list[dict[str, str]]:
    """batchItemFailures of an SQS batch, with Powertools' BatchProcessor (one item per SQS record, in order).

    _Retry marks a message failed. A SignalcraftError that escapes grading (the store or the models
    failing outside one recording, e.g. the grade write) fails the invocation once every message had
    its turn, as before: the whole batch is retried. Any other exception is about that message (data
    nothing caught, or a bug it triggers): it is logged with its traceback and fails that message
    only, so one poison message goes to the queue's dead-letter queue alone, not with the good ones.
    """
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

    records = event["Records"]
    by_record = {id(raw): item for raw, item in zip(records, items)}
    unexpected: list[BaseException] = []

    def handle(record: Any) -> None:
        try:
            grade_item(by_record[id(record.raw_event)])
        except _Retry:
            raise
        except SignalcraftError as exc:
            unexpected.append(exc)
            raise
        except Exception:
            log.exception("message failed", extra={"message_id": by_record[id(record.raw_event)].message_id})
            raise _Retry("unexpected error") from None

    if not all(isinstance(r.get("messageId"), str) for r in records):
        failures = []
        for raw, item in zip(records, items):  # no messageId to report: the same loop by hand
            try:
                handle(_RawRecord(raw))
            except _Retry:
                failures.append({"itemIdentifier": item.message_id or ""})
    else:
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        with processor(records=records, handler=handle):
            processor.process()
        failures = processor.response()["batchItemFailures"]
    if unexpected:
        raise unexpected[0]
    return failures


class _RawRecord:
    def __init__(self, raw: Any) -> None:
        self.raw_event = raw


class BatchDeadline(RuntimeError):
    """A Map batch stopped before the function's deadline; the state machine retries it (Retry on
    "BatchDeadline") and the incremental retry skips what this attempt already wrote."""


class _Index:
    """Per-run view of what is graded already: one read of each LastModified day's grade partitions."""

    def __init__(self, sink: Any, store: Any) -> None:
        self.sink, self.store = sink, store
        self.final: dict[tuple[str, str, str], str] = {}
        self.days: set[str] = set()

    def done(self, ref: ObjectRef) -> bool:
        """A final record of this object version from the model version that would grade it now."""
        day = day_of(_utc_or_none(ref.event_time))
        if day is None:
            return False
        if day not in self.days:
            self.days.add(day)
            self.final.update(final_records(self.sink.index_rows([day])))
        graded_by = self.final.get((ref.bucket, ref.key, ref.etag))
        if graded_by is None:
            return False
        try:
            return self.store.for_key(ref.key)[0].version == graded_by
        except SignalcraftError:
            return False  # no usable model now: grading it records the model error


def _utc_or_none(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def grade_map_batch(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """One ItemBatcher batch of listed objects; storage failures become error records (a re-run fills them in).

    In `incremental` mode (BatchInput.mode, the default) items outside the sweep window or already
    graded are skipped before any GET (see pipeline/sweep.py); `backfill` grades every item.
    """
    runtime, sink = _start(context)
    batch = parse_map_batch(event)
    mode = check_mode(batch.batch_input.get("mode"))
    refs = [ref for ref in batch.refs if refusal(ref, runtime.config) is None]
    if mode == "incremental":
        state = load_state(runtime.client, sink.bucket, batch.batch_input.get("bucket") or refs[0].bucket,
                           batch.batch_input.get("prefix") or "") if refs else SweepState()
        retry, index = set(state.retry), _Index(sink, runtime.store)
        refs = [ref for ref in refs if is_candidate(_utc_or_none(ref.event_time), ref.key, state,
                                                    runtime.config.sweep_overlap_hours, retry)
                and not index.done(ref)]
    records: list = []
    written: list[str] = []
    size = runtime.config.batch_size
    for start in range(0, len(refs), size):
        chunk = _grade(refs[start:start + size], runtime)
        written += sink.write(chunk) if chunk else []
        _alert_critical(chunk, runtime, sink)
        records += chunk
        left = len(refs) - start - size
        if left > 0 and context is not None and context.get_remaining_time_in_millis() < DEADLINE_MARGIN_MS:
            if mode == "incremental":  # what is written is skipped by the retry: it carries on from here
                raise BatchDeadline(f"{len(records)} of {len(refs)} items graded before the deadline; "
                                    f"the retry grades the other {left}")
            log.warning("deadline near; a backfill batch carries on", extra={"left": left})
    return {**summarise(records), "mode": mode, "skipped": len(batch.refs) - len(refs), "written": written}


def run_sweep(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Grade what the upload events missed under a prefix, in batches, until done or near the deadline.

    `mode`: `incremental` (default; new and retryable recordings only, see pipeline/sweep.py) or
    `backfill` (everything again, e.g. after a new model). A complete sweep compacts the partitions
    it and the day's writers touched and advances the sweep state (the retry list from those
    partitions' records, so a resumed sweep keeps its earlier invocations' failures); one that stops
    before its deadline says where to resume (`resume_after`) and leaves the state as it was.
    `{"action": "compact"}` only compacts (the state machine's last step).
    """
    runtime, sink = _start(context)
    if event.get("action") == "compact":
        return _compact_step(event, runtime, sink)
    mode = check_mode(event.get("mode"))
    request = parse_sweep_event(event, runtime.config.sweep_bucket, runtime.config.sweep_prefix)
    started = dt.datetime.now(dt.timezone.utc)
    state = load_state(runtime.client, sink.bucket, request.bucket, request.prefix) \
        if mode == "incremental" else SweepState()
    retry, index = set(state.retry), _Index(sink, runtime.store)
    summary = summarise(())
    batch: list[ObjectRef] = []
    batch_bytes = 0
    counts = {"listed": 0, "outside_window": 0, "already_graded": 0, "parquet_files": 0}
    graded: set[str] = set()  # found graded by the index: off the retry list
    resume_after = None
    on_progress = getattr(context, "on_progress", None)  # set by `signalcraft sweep`; Lambda has none

    def flush() -> None:
        nonlocal summary, batch_bytes
        records = _grade(batch, runtime)
        counts["parquet_files"] += len(sink.write(records))  # one file per partition the batch touches
        _alert_critical(records, runtime, sink)
        summary = merge_summaries(summary, summarise(records))
        batch.clear()
        batch_bytes = 0
        if on_progress is not None:
            on_progress(summary["records"])

    listing = list_keys(runtime.client, request.bucket, request.prefix, runtime.config.suffixes,
                        start_after=event.get("start_after") or None)
    for info in listing:
        ref = ObjectRef(bucket=request.bucket, key=info.key, etag=info.etag, size=info.size,
                        event_time=info.last_modified.isoformat() if info.last_modified else None, source="sweep")
        if refusal(ref, runtime.config):
            continue
        counts["listed"] += 1
        if mode == "incremental":
            if not is_candidate(info.last_modified, info.key, state, runtime.config.sweep_overlap_hours, retry):
                counts["outside_window"] += 1
                continue
            if index.done(ref):
                counts["already_graded"] += 1
                graded.add(ref.key)
                continue
        batch.append(ref)
        batch_bytes += info.size or 0
        if len(batch) >= SWEEP_CHUNK_BATCHES * runtime.config.batch_size or batch_bytes >= SWEEP_CHUNK_BYTES:
            last_key = batch[-1].key
            flush()
            if context is not None and context.get_remaining_time_in_millis() < DEADLINE_MARGIN_MS:
                resume_after = last_key
                break
    if batch:
        flush()
    result = {"bucket": request.bucket, "prefix": request.prefix, "mode": mode, **summary, **counts,
              "complete": resume_after is None, "resume_after": resume_after}
    if resume_after is None:
        since = started - dt.timedelta(hours=COMPACT_LOOKBACK_HOURS)
        partitions = sink.touched | sink.recent_partitions(since)
        result["compaction"] = asdict(sink.compact(partitions=partitions))
        if mode == "incremental":
            # a resumed sweep's earlier invocations wrote their failures into these partitions too
            result["watermark"] = _advance_state(runtime, sink, request.bucket, request.prefix, partitions,
                                                 started, state, done=graded)
        _alert_trends(runtime, sink)
    return result


def _advance_state(runtime: Any, sink: Any, bucket: str, prefix: str, partitions: set[str],
                   started: dt.datetime, old: SweepState, done: set[str] = frozenset()) -> str:
    """Store a complete sweep's state: watermark = its start, the retry list from the records of `partitions`."""
    rows = sink.index_rows({p.split("/")[0][len("dt="):] for p in partitions})
    state = SweepState(watermark=started, retry=next_retry(old.retry, rows, bucket, prefix, done))
    save_state(runtime.client, sink.bucket, bucket, prefix, state)
    return started.isoformat()


def _compact_step(event: dict[str, Any], runtime: Any, sink: Any) -> dict[str, Any]:
    """The state machine's last step: compact, then (incremental, every batch done) advance the sweep state.

    It runs after a failed Map too (the day's upload files still get merged); then, or when any batch
    failed within the Map's tolerance, `complete` is false and the state stays as it was.
    """
    started = completed_sweep_start(event)
    now = dt.datetime.now(dt.timezone.utc)
    since = now - dt.timedelta(hours=COMPACT_LOOKBACK_HOURS)
    # the partitions the Map batches and the day's writers touched, plus the named day's if any
    partitions = sink.recent_partitions(since) | (sink.day_partitions(event["date"]) if event.get("date") else set())
    result = {"action": "compact", "since": since.isoformat(), **asdict(sink.compact(partitions=partitions))}
    if event.get("date"):
        result["date"] = event["date"]
    bucket, prefix = event.get("bucket") or runtime.config.sweep_bucket, event.get("prefix", runtime.config.sweep_prefix)
    result["complete"] = started is not None
    if check_mode(event.get("mode")) == "incremental" and bucket and started is not None:
        # the Map batches wrote their transient errors into these partitions: they become the retry list
        result["watermark"] = _advance_state(runtime, sink, bucket, prefix, partitions, started,
                                             load_state(runtime.client, sink.bucket, bucket, prefix))
    _alert_trends(runtime, sink)
    return result
