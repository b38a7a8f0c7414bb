"""What an operator sees of an invocation: Powertools Logger context, EMF metrics, X-Ray behind its switch.

The handlers wear one decorator, `lambda_handler`. Per invocation it
- injects the Lambda context into every log line (Powertools `Logger.inject_lambda_context`: service,
  cold_start, function_name, function_request_id) plus a correlation id taken from the event (the S3
  request id, the SQS messageId, the EventBridge event id);
- collects the invocation's metrics (`graded()` is called around each grading call of the pipe) and
  flushes them as CloudWatch EMF at the end (Powertools `EphemeralMetrics`): in Lambda to stdout, where
  CloudWatch extracts them; locally (no AWS_LAMBDA_RUNTIME_API) as one `metrics` log line instead, so
  stdout stays the function's result. POWERTOOLS_METRICS_DISABLED=true drops them (Powertools' rule);
- traces with Powertools `Tracer` only when POWERTOOLS_TRACE_DISABLED is false; with it disabled
  (the template's default) aws_xray_sdk is never imported.

Metrics (namespace POWERTOOLS_METRICS_NAMESPACE, dimension `service` = POWERTOOLS_SERVICE_NAME):
RecordingsGraded, Records (dimension `grade`), RecordErrors (dimension `error_code`), ScoreLatency
(ms per clip of each grading batch), BytesRead, ModelCacheHit, ModelCacheMiss, and from alerts.py
AlertsPublished / AlertsSuppressed.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import time
from collections import Counter
from typing import Any, Callable, Iterator, Mapping, Sequence

from signalcraft_core.config import Settings
from signalcraft_core.errors import ErrorCode
from signalcraft_core.logs import configure, request_id

log = logging.getLogger(__name__)

#: Error codes of recordings whose bytes were never read (size refused before the GET, or no object).
_NOT_READ = {ErrorCode.TOO_LARGE.value, ErrorCode.NOT_FOUND.value, ErrorCode.STORAGE_ERROR.value}
_loggers: dict[str, Any] = {}
_tracers: dict[str, Any] = {}


class Invocation:
    """The metrics of one handler invocation, flushed once at its end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.counts: Counter[str] = Counter()
        self.grades: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency_ms: list[float] = []

    def add_records(self, records: Sequence[Any], seconds: float) -> None:
        for r in records:
            if r.status == "ok":
                self.counts["RecordingsGraded"] += 1
                self.grades[r.grade] += 1
            else:
                self.errors[r.error_code] += 1
            if r.size_bytes and r.error_code not in _NOT_READ:
                self.counts["BytesRead"] += int(r.size_bytes)
        if records:
            self.latency_ms.append(1000.0 * seconds / len(records))

    def count(self, name: str, value: int = 1) -> None:
        self.counts[name] += value

    def documents(self) -> list[dict[str, Any]]:
        """The EMF documents of this invocation: the totals, then one per grade and per error code."""
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

        def new() -> Any:
            return EphemeralMetrics(namespace=self.settings.metrics_namespace, service=self.settings.service_name)

        units = {"BytesRead": MetricUnit.Bytes}
        totals = new()
        for name in ("RecordingsGraded", "BytesRead", "ModelCacheHit", "ModelCacheMiss",
                     "AlertsPublished", "AlertsSuppressed"):
            if name in self.counts or name in ("RecordingsGraded", "ModelCacheHit", "ModelCacheMiss"):
                totals.add_metric(name=name, unit=units.get(name, MetricUnit.Count), value=self.counts[name])
        for value in self.latency_ms:
            totals.add_metric(name="ScoreLatency", unit=MetricUnit.Milliseconds, value=round(value, 3))
        docs = [totals]
        for dimension, metric, counter in (("grade", "Records", self.grades),
                                           ("error_code", "RecordErrors", self.errors)):
            for value, n in sorted(counter.items()):
                doc = new()
                doc.add_dimension(name=dimension, value=str(value))
                doc.add_metric(name=metric, unit=MetricUnit.Count, value=n)
                docs.append(doc)
        return [doc.serialize_metric_set() for doc in docs]

    def flush(self) -> None:
        from aws_lambda_powertools.metrics.functions import is_metrics_disabled

        if is_metrics_disabled() or not (any(self.counts.values()) or self.errors or self.latency_ms):
            return  # metrics off, or an invocation that graded nothing (refused event, empty batch)
        documents = self.documents()
        if self.settings.in_lambda:
            for doc in documents:  # what Powertools' flush_metrics does: one EMF line each on stdout
                print(json.dumps(doc, separators=(",", ":")), flush=True)
        else:
            log.info("metrics", extra={"metrics": [_readable(doc) for doc in documents]})


def _readable(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An EMF document without its `_aws` envelope: {"service": ..., "grade": ..., "Records": 3}."""
    return {k: v for k, v in doc.items() if k != "_aws"}


_current: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("invocation", default=None)


def current() -> Invocation | None:
    """The running handler invocation (None outside `lambda_handler`, e.g. the CLI's `score`)."""
    return _current.get()


def count(name: str, value: int = 1) -> None:
    invocation = _current.get()
    if invocation is not None:
        invocation.count(name, value)


def graded(store: Any, grade: Callable[[], list]) -> list:
    """Run one grading call of the pipe and count what it did: records, latency, bytes, model cache use.

    Model cache hits/misses are read from the store's cache around the call: a model set loaded (or
    reloaded after its manifest changed) during the call is a miss; every other model version the
    records were graded with was served from the cache, a hit.
    """
    before = _cache_state(store)
    started = time.perf_counter()
    records = grade()
    seconds = time.perf_counter() - started
    invocation = _current.get()
    if invocation is not None:
        after = _cache_state(store)
        misses = sum(1 for name, ident in after.items() if before.get(name) != ident)
        used = {r.model_version for r in records if r.model_version}
        invocation.count("ModelCacheMiss", misses)
        invocation.count("ModelCacheHit", max(0, len(used) - misses))
        invocation.add_records(records, seconds)
    return records


def _cache_state(store: Any) -> dict[str, int]:
    cache = getattr(store, "_cache", None) or {}
    return {name: id(entry.model_set) for name, entry in list(cache.items())}


def correlation_id(event: Any) -> str | None:
    """The id that follows this event through AWS: EventBridge `id`, SQS `messageId` (the first), S3 request id."""
    if not isinstance(event, Mapping):
        return None
    if "detail-type" in event and isinstance(event.get("id"), str):
        return event["id"]
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        first = records[0]
        if isinstance(first.get("messageId"), str):
            return first["messageId"]
        elements = first.get("responseElements")
        if isinstance(elements, Mapping):
            for name in ("x-amz-request-id", "x-amz-id-2"):
                if isinstance(elements.get(name), str):
                    return elements[name]
    for name in ("correlation_id", "execution_id"):
        batch = event.get("BatchInput")
        if isinstance(batch, Mapping) and isinstance(batch.get(name), str):
            return batch[name]
    return None


class _LambdaContext:
    """The Lambda context Powertools reads, with defaults for local contexts (and none at all)."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self.function_name = getattr(context, "function_name", None) or "local"
        self.memory_limit_in_mb = getattr(context, "memory_limit_in_mb", None) or 0
        self.invoked_function_arn = getattr(context, "invoked_function_arn", None) or "local"
        self.aws_request_id = getattr(context, "aws_request_id", None) or "local"


def powertools_logger(settings: Settings) -> Any:
    """The Powertools Logger of this service, sharing logs.py's handler and formatter (one per service name)."""
    from aws_lambda_powertools import Logger

    handler = configure(settings.log_level)
    logger = _loggers.get(settings.service_name)
    if logger is None:
        logger = Logger(service=settings.service_name, level=settings.log_level, logger_handler=handler,
                        logger_formatter=handler.formatter)
        _loggers[settings.service_name] = logger
    logger.setLevel(settings.log_level)
    return logger


def tracer(settings: Settings) -> Any | None:
    """Powertools Tracer when tracing is on, else None (and aws_xray_sdk stays unimported)."""
    if not settings.trace_enabled:
        return None
    found = _tracers.get(settings.service_name)
    if found is None:
        from aws_lambda_powertools import Tracer

        found = _tracers[settings.service_name] = Tracer(service=settings.service_name)
    return found


@contextlib.contextmanager
def span(name: str) -> Iterator[None]:
    """An X-Ray subsegment around a stage of the pipe when tracing is on; nothing otherwise."""
    invocation = _current.get()
    active = tracer(invocation.settings) if invocation is not None else None
    if active is None:
        yield
        return
    with active.provider.in_subsegment(name):
        yield


def lambda_handler(handler: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """The decorator every function in handlers/ wears: Powertools logs, metrics and (switched) tracing."""

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any = None) -> Any:
        settings = Settings.from_env()
        logger = powertools_logger(settings)
        request_id.set(getattr(context, "aws_request_id", None))
        invocation = Invocation(settings)
        token = _current.set(invocation)

        def call(event_: Any, _context: Any) -> Any:
            logger.set_correlation_id(correlation_id(event_))
            return handler(event_, context)  # the handler gets the context it was given

        run: Callable[[Any, Any], Any] = logger.inject_lambda_context(call, clear_state=True)
        active = tracer(settings)
        if active is not None:
            run = active.capture_lambda_handler(run)
        try:
            return run(event, _LambdaContext(context))
        finally:
            _current.reset(token)
            try:
                invocation.flush()
            except Exception:  # noqa: BLE001 - metrics must never turn a graded batch into a failure
                log.exception("metrics not flushed")

    return wrapper
