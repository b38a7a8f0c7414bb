"""Grade objects from a bucket: the one pipe behind every handler (upload, sweep, map batch, CLI).

ObjectRefs in, one GradeRecord per ref out, in order. Downloads run on a small thread pool so
object-store latency overlaps with scoring; clips are scored in batches per model set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from signalcraft_core.config import Settings
from signalcraft_core.errors import (
    AudioError,
    ErrorCode,
    SignalcraftError,
    StorageError,
)
from signalcraft_core.io.audio import (
    Audio,
    AudioConfig,
    decode_stream,
    max_decoded_bytes,
)
from signalcraft_core.io.events import ObjectRef, is_own_output, wanted
from signalcraft_core.io.keys import parse_key
from signalcraft_core.models.model_store import DEFAULT_SET, ModelStore
from signalcraft_core.pipeline.records import GradeRecord, record_id
from signalcraft_core.pipeline.score import (
    ClipScore,
    score_decoded,
    tune_malloc,
)

log = logging.getLogger(__name__)
#: Failures the platform should retry (raise) rather than record as final: the store failed, or the
#: model set could not be used (missing, or refused by its integrity check) - not the recording's fault.
TRANSIENT_CODES = frozenset({ErrorCode.STORAGE_ERROR.value, ErrorCode.MODEL_ERROR.value})
#: Decoded float32 audio one grade_objects call holds at once (see `_DecodeBudget`): with the runtime
#: (~150 MiB), featurisation's 64 MiB working set and the download blocks this keeps one handler
#: process under 300 MiB. One 10-minute recording (36.6 MiB at 16 kHz) fits; two do not.
MAX_DECODED_BYTES = 40 * 1024 * 1024


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


def _fetch(client: Any, ref: ObjectRef, config: Settings,
           budget: "_DecodeBudget") -> tuple[ObjectRef, Audio | SignalcraftError, "_Reservation | None"]:
    """Identify, then download and decode as one stream: the object itself says who it is before anything can fail.

    The HEAD gives the identity (version id, else ETag), the size (the limit is checked before any
    GET) and LastModified (the partition day) of the object, whatever the event claimed; the GET
    then confirms them for the bytes actually graded. So an upload event, the sweep, a Map batch
    and a retry of the same object version all make the same record id, error or grade alike.

    A ref that already says the size and ETag - from the store's own listing (the sweep, a Map
    batch) or from its upload event (S3, EventBridge, SQS and the webhook, which HEADs for its own
    event) - goes straight to the GET, whose response carries the identity (ETag, version id,
    LastModified) of the bytes graded: one request per recording instead of two, the largest cost
    after the grading itself, in Lambda time and S3 request charges alike. The sender's values are
    only the expectation: should that GET find another size (overwritten since, or a sender that
    got it wrong), or the sender's size be over the limit, the recording takes the HEAD path. A GET
    that fails (not_found, or a storage_error after botocore's retries) is recorded as it is, with
    the sender's ETag / version id, as a failed HEAD would be. A GET that finds another size than
    its HEAD said (replaced in between) is identified afresh once, then left to a retry (a
    transient storage_error).

    The body is decoded while it arrives (never held whole): before the GET, the decoded output's
    upper bound for the expected size is reserved from `budget`, cut to the exact size once the
    header is read; a body of another size is not decoded on that reservation. Returns the ref, the
    Audio (or the error) and the reservation still held for it.
    """
    from signalcraft_core.io.objects import head

    if ref.source == "file":
        return _read_file(ref, config, budget)
    ref = _unidentified(ref)  # until the HEAD (or a listed ref's GET) answers
    if ref.size is not None and ref.etag:
        try:
            return _download(client, ref, ref.size, config, budget)
        except _SizeChanged:
            pass  # other bytes than the sender said: the HEAD path identifies them
        except SignalcraftError as exc:
            if exc.code is not ErrorCode.TOO_LARGE:   # gone, or the store failing after its retries:
                return ref, exc, None                 # a HEAD would say the same (and retry it all again)
            # refused on the sender's size, with no request made: the HEAD says what the object is
        except Exception:  # noqa: BLE001 - unexpected: logged, then the HEAD path gives the record
            log.exception("download without HEAD failed", extra={"bucket": ref.bucket, "key": ref.key})
    try:
        for _ in range(2):   # a replacement between HEAD and GET is identified afresh once
            info = head(client, ref.bucket, ref.key, ref.version_id)
            ref = _identified(ref, info)
            try:
                return _download(client, ref, info.size, config, budget)
            except _SizeChanged:
                continue
        return ref, StorageError(ErrorCode.STORAGE_ERROR, "the object changed while it was read; graded on a retry"), None
    except SignalcraftError as exc:
        return ref, exc, None
    except Exception as exc:  # noqa: BLE001 - an unexpected client failure is still one record
        log.exception("download failed", extra={"bucket": ref.bucket, "key": ref.key})
        return ref, StorageError(ErrorCode.STORAGE_ERROR, f"download failed: {type(exc).__name__}"), None


class _SizeChanged(Exception):
    """The GET found another size than the listing or the HEAD gave: the object was replaced since."""


def _download(client: Any, ref: ObjectRef, size: int, config: Settings,
              budget: "_DecodeBudget") -> tuple[ObjectRef, Audio | SignalcraftError, "_Reservation | None"]:
    """GET and decode the `size` bytes expected, their decoded bound reserved first; raises on storage failure.

    The GET must find that size: the reservation was made for it (a bigger body would be decoded
    past the budget), and other bytes need their own identity (_SizeChanged sends them to a HEAD).
    """
    from signalcraft_core.io.objects import fetch_stream

    audio_cfg = audio_config(config)
    ticket = budget.acquire(max_decoded_bytes(min(size, config.max_bytes), audio_cfg))

    def decode(read: Any, length: int) -> Audio | SignalcraftError:
        if length != size:
            raise _SizeChanged
        try:
            return decode_stream(read, length, audio_cfg, ticket.exact)
        except AudioError as exc:  # the recording's fault: a final record, the stream is closed
            return exc

    try:
        audio, got = fetch_stream(client, ref.bucket, ref.key, decode, max_bytes=config.max_bytes,
                                  known_size=size, version_id=ref.version_id)
    except BaseException:
        ticket.release()
        raise
    if not isinstance(audio, Audio):
        ticket.release()
    return _identified(ref, got), audio, ticket


def _read_file(ref: ObjectRef, config: Settings,
               budget: "_DecodeBudget") -> tuple[ObjectRef, Audio | SignalcraftError, "_Reservation | None"]:
    """A local recording through the same limits and streaming decoder as an object (`signalcraft score`).

    Opened non-blocking and checked with fstat before any read: a FIFO named x.wav would block the
    whole batch forever, and a directory or device is the input's fault (not_found "not a regular
    file", final), not a storage failure to retry. Symlinks are followed, as any CLI tool does.
    """
    path = Path(ref.key)
    ticket: _Reservation | None = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # before wrapping: a file object refuses a directory itself
            os.close(fd)
            return ref, StorageError(ErrorCode.NOT_FOUND, f"cannot read {path}: not a regular file"), None
        with open(fd, "rb") as f:
            ref = replace(ref, size=st.st_size,
                          event_time=dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc).isoformat())
            if st.st_size > config.max_bytes:
                return ref, StorageError(ErrorCode.TOO_LARGE, f"{path} is {st.st_size} bytes, over the "
                                         f"{config.max_bytes}-byte limit"), None
            audio_cfg = audio_config(config)
            ticket = budget.acquire(max_decoded_bytes(st.st_size, audio_cfg))
            audio = decode_stream(f.read, st.st_size, audio_cfg, ticket.exact)
        return ref, audio, ticket
    except AudioError as exc:
        return ref, exc, ticket and ticket.release()
    except OSError as exc:
        code = ErrorCode.NOT_FOUND if isinstance(exc, FileNotFoundError) else ErrorCode.STORAGE_ERROR
        return ref, StorageError(code, f"cannot read {path}: {exc.strerror}"), ticket and ticket.release()


class _DecodeBudget:
    """Bytes of decoded float32 audio one grade_objects call may hold at once (downloading + waiting + scoring).

    A download reserves its upper bound before the GET (`acquire` blocks while the budget is spent;
    a recording bigger than the whole budget runs alone) and cuts it to the exact size once the
    header is read. The scoring loop releases a batch's bytes when it is graded, and grades early
    when a download is waiting and no other reservation is still an estimate about to shrink.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.waiting = 0
        self.estimates = 0  # reservations not yet cut to their exact size
        self.cond = threading.Condition()

    def acquire(self, nbytes: int) -> "_Reservation":
        with self.cond:
            self.waiting += 1
            self.cond.notify_all()
            try:
                while self.used and self.used + nbytes > self.limit:
                    self.cond.wait()
            finally:
                self.waiting -= 1
            self.used += nbytes
            self.estimates += 1
            return _Reservation(self, nbytes)

    def starved(self) -> bool:
        """A download waits for room that only grading the held batch can free (call with `cond` held)."""
        return self.waiting > 0 and self.estimates == 0


class _Reservation:
    """One download's share of a _DecodeBudget: an estimate, then the exact decoded size, then released."""

    def __init__(self, budget: _DecodeBudget, nbytes: int) -> None:
        self.budget, self.nbytes, self.estimate = budget, nbytes, True

    def _set(self, nbytes: int) -> None:
        with self.budget.cond:
            self.budget.used += nbytes - self.nbytes
            self.nbytes = nbytes
            if self.estimate:
                self.estimate = False
                self.budget.estimates -= 1
            self.budget.cond.notify_all()

    def exact(self, nbytes: int) -> None:
        """The decoder read the header: the output takes `nbytes` (never more than the estimate)."""
        self._set(min(nbytes, self.nbytes))

    def release(self) -> None:
        self._set(0)


#: Refs whose time is the object's LastModified from the store's own listing, not an event sender's.
LISTED_SOURCES = ("sweep", "map")


def _unidentified(ref: ObjectRef) -> ObjectRef:
    """The ref of an object not HEAD-ed (yet): an event's time is no LastModified, so none is kept.

    Its record then has no event_time and is filed under the day it was scored (`partition_date`),
    never under a day an event sender chose (an EventBridge `time`, the SAM sample's 1970). A sweep or
    Map ref keeps its time: ListObjectsV2 gave it, so its error record lands in the partition its
    later grade will (one id, one partition). The id still uses the ref's ETag / version id, so a
    later grade of the same bytes shares it and wins (`records.precedence`).
    """
    return ref if ref.source in LISTED_SOURCES else replace(ref, event_time=None)


def _identified(ref: ObjectRef, info: Any) -> ObjectRef:
    """The ref with the object's own ETag, version id, size and LastModified (where the response has them)."""
    modified = getattr(info, "last_modified", None)
    return replace(ref, etag=info.etag or ref.etag, version_id=info.version_id or ref.version_id,
                   size=info.size if info.size is not None else ref.size,
                   event_time=modified.isoformat() if modified is not None else ref.event_time)


def filed_type(key_info: Any, machine_type: str | None = None) -> str:
    """The record's machine_type (its partition): the key's type, else the type asked for, else `default`.

    Never the loaded model set's manifest: a recording must land in the same partition whether its
    set loaded (a grade) or not (a model_error retried later), or the error row and the grade of
    one id live in two partitions forever. `default` is the set a key without a type is graded by.
    """
    return getattr(key_info, "machine_type", None) or machine_type or DEFAULT_SET


def to_record(ref: ObjectRef, result: ClipScore, model_set: Any, key_info: Any, scored_at: dt.datetime,
              machine_type: str | None = None) -> GradeRecord:
    """The Parquet row for one graded (or failed) object (`machine_type`: the type the caller asked for)."""
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
        machine_type=filed_type(key_info, machine_type),
        machine_id=getattr(key_info, "machine_id", None),
        model_name=model_set.name if model_set else None,
        model_version=model_set.version if model_set else None,
        model_scope=model_set.scope if model_set else None,
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


class _Inline(contextlib.AbstractContextManager):
    """The one `submit` of ThreadPoolExecutor grade_with_scores uses, run at once on the calling thread."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed on, as a pool thread's failure would be
            future.set_exception(exc)
        return future

    def __exit__(self, *exc: object) -> None:
        return None


def grade_objects(refs: Sequence[ObjectRef], client: Any, store: ModelStore, config: Settings) -> list[GradeRecord]:
    """One record per ref, in order (see `grade_with_scores`)."""
    return [record for record, _score in grade_with_scores(refs, client, store, config)]


def grade_with_scores(refs: Sequence[ObjectRef], client: Any, store: ModelStore, config: Settings, *,
                      machine_type: str | None = None) -> list[tuple[GradeRecord, ClipScore]]:
    """One (record, score) per ref, in order: downloads stream into the decoder on a thread pool, scoring is batched.

    `machine_type` picks that type's set for every ref instead of reading it off the key.

    A batch is sized by decoded audio, not by clip count alone: at most `config.batch_size` clips and
    MAX_DECODED_BYTES of decoded samples (downloads in flight included) are held at once, so sixteen
    10-minute recordings are graded one at a time while sixteen 10 s clips still share one batch.
    """
    scored_at = dt.datetime.now(dt.timezone.utc)
    records: list[tuple[GradeRecord, ClipScore] | None] = [None] * len(refs)
    if not refs:
        return []
    tune_malloc()  # before the download threads exist: their freed blocks would stay per thread
    budget = _DecodeBudget(MAX_DECODED_BYTES)
    done: list[tuple[int, tuple[ObjectRef, Any, Any]]] = []

    def finished(i: int, future: Any) -> None:
        try:
            result = future.result()
        except BaseException as exc:  # noqa: BLE001 - _fetch catches everything; never lose a ref
            result = (_unidentified(refs[i]), SignalcraftError(ErrorCode.INTERNAL_ERROR, f"download failed: {exc!r}"),
                      None)
        with budget.cond:
            done.append((i, result))
            budget.cond.notify_all()

    def key_info(key: str) -> Any:
        """The key read as the grade path reads it (the store knows its own types), so both file alike."""
        try:
            return store.key_info(key)
        except SignalcraftError:  # the set listing failed: the configured pattern and known types
            return parse_key(key, config.key_pattern)

    def record(i: int, ref: ObjectRef, result: ClipScore, model_set: Any, info: Any) -> None:
        """records[i]; a row that cannot be built becomes an internal_error record of that input alone."""
        try:
            records[i] = (to_record(ref, result, model_set, info, scored_at, machine_type), result)
        except Exception as exc:  # noqa: BLE001 - one odd input must not lose the batch's other records
            log.exception("record failed", extra={"bucket": ref.bucket, "key": ref.key})
            failure = ClipScore.failure(ErrorCode.INTERNAL_ERROR, f"cannot record this input: {type(exc).__name__}")
            records[i] = (to_record(ref, failure, None, info, scored_at, machine_type), failure)

    def score(batch: list[tuple[int, tuple[ObjectRef, Any, Any]]]) -> None:
        groups: dict[int, tuple[Any, list[tuple[int, ObjectRef, Any, Any]]]] = {}
        for i, (ref, payload, _ticket) in batch:
            try:
                if machine_type:
                    model_set, info = store.get(machine_type), store.key_info(ref.key)
                else:
                    model_set, info = store.for_key(ref.key)
            except SignalcraftError as exc:
                record(i, ref, ClipScore.failure(exc.code, exc.message), None, key_info(ref.key))
                continue
            groups.setdefault(id(model_set), (model_set, []))[1].append((i, ref, payload, info))
        for model_set, members in groups.values():
            results = score_decoded(model_set, [m[2] for m in members], config.preference)
            for (i, ref, _payload, info), result in zip(members, results):
                record(i, ref, result, model_set, info)

    outstanding = len(refs)
    batch: list[tuple[int, tuple[ObjectRef, Any, Any]]] = []
    # One ref (an upload event): fetched on this thread; starting a pool thread per event cost ~1 ms.
    pool = ThreadPoolExecutor(max_workers=min(config.io_threads, len(refs))) if len(refs) > 1 else _Inline()
    with pool:
        for i, ref in enumerate(refs):
            pool.submit(_fetch, client, ref, config, budget).add_done_callback(lambda f, i=i: finished(i, f))
        while outstanding or batch:
            with budget.cond:
                while not done and outstanding and not (batch and budget.starved()):
                    budget.cond.wait()
                arrived, done[:] = list(done), []
                starved = budget.starved()
            outstanding -= len(arrived)
            batch.extend(arrived)
            if batch and (len(batch) >= config.batch_size or starved or not outstanding):
                ready, batch = batch[:config.batch_size], batch[config.batch_size:]
                try:
                    score(ready)
                finally:
                    for _i, (_ref, _payload, ticket) in ready:
                        if ticket is not None:
                            ticket.release()
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
