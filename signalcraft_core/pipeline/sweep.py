"""What a nightly sweep grades: work proportional to what is new, not to the bucket's history.

Mechanism: a watermark on the recordings' LastModified, kept in a small state object beside the
grades, plus the grades themselves as the index of what is done.

- A sweep lists the prefix (ListObjectsV2, no GET) and keeps as candidates the objects modified at
  or after `watermark - overlap`, plus the keys of its retry list; older objects are skipped.
- A candidate is graded unless the grade partition of its LastModified day already holds a final
  record (a grade, or an error that is not transient) for the same bucket, key and ETag from the current
  model version of its model set. Only those partitions are read (a night reads one or two days).
- When the sweep is complete it stores `watermark = its start time` and the retry list: keys whose
  latest record is a transient error (storage, model), oldest failure first. A crashed or cut-short
  sweep, or a state machine run with a failed batch, stores nothing, so the next one starts from
  the old watermark again (re-runs write the same record ids). The retry list is rebuilt from the
  grade records the sweep's partitions hold, so a sweep resumed over several invocations (or a Map
  of many batches) keeps every invocation's failures, not only the last one's.

Guarantees: an upload landing while a sweep runs, or an event that arrives late, has a LastModified
after the previous watermark, so the next night sees it; the overlap (SWEEP_OVERLAP_HOURS, 24 h)
absorbs clock skew between S3 and the function and a sweep that runs for hours. A model change
grades new recordings with the new model and re-grades candidates whose record is from an older
version; re-grading all history is the explicit `backfill` mode, which ignores watermark and index.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from signalcraft_core.config import SWEEP_MODES
from signalcraft_core.errors import ErrorCode, StorageError
from signalcraft_core.io.objects import get_bytes, put_bytes
from signalcraft_core.pipeline.grade import TRANSIENT_CODES
from signalcraft_core.pipeline.records import precedence

#: A retry list longer than this keeps the newest entries (a store failing for weeks is an alarm, not a list):
#: the list is kept in the order the failures were first seen (next_retry), so its tail is the newest.
MAX_RETRY_KEYS = 10_000
STATE_PREFIX = "_signalcraft/sweep-state/"


@dataclass
class SweepState:
    """The state object of one (bucket, prefix) sweep."""

    watermark: dt.datetime | None = None
    retry: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps({"watermark": self.watermark.isoformat() if self.watermark else None,
                           "retry": self.retry[-MAX_RETRY_KEYS:]}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "SweepState":
        raw = json.loads(data)
        mark = raw.get("watermark")
        return cls(watermark=dt.datetime.fromisoformat(mark) if mark else None, retry=list(raw.get("retry") or []))


def check_mode(mode: Any) -> str:
    mode = mode or SWEEP_MODES[0]
    if mode not in SWEEP_MODES:
        raise ValueError(f"sweep mode must be one of {', '.join(SWEEP_MODES)}, not {mode!r}")
    return mode


def state_key(bucket: str, prefix: str) -> str:
    digest = hashlib.sha256(f"{bucket}\x1f{prefix}".encode()).hexdigest()[:16]
    return f"{STATE_PREFIX}{digest}.json"


def load_state(client: Any, output_bucket: str, bucket: str, prefix: str) -> SweepState:
    """The stored state, or an empty one before the first complete sweep.

    Only NOT_FOUND means "no state yet". On AWS a GET of a missing key answers 403 AccessDenied
    unless the role may also ListBucket that key (the s3:prefix condition is evaluated against the
    key): template.yaml grants ListBucket on STATE_PREFIX for that reason. Any other error is raised,
    never read as a first sweep: that would drop the retry list and re-list the whole history.
    """
    try:
        return SweepState.from_json(get_bytes(client, output_bucket, state_key(bucket, prefix)))
    except StorageError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            return SweepState()  # the first sweep: everything is a candidate (the index still skips graded ones)
        raise


def save_state(client: Any, output_bucket: str, bucket: str, prefix: str, state: SweepState) -> None:
    put_bytes(client, output_bucket, state_key(bucket, prefix), state.to_json(), content_type="application/json")


def next_retry(old: Iterable[str], index_rows: Iterable[dict[str, Any]], bucket: str, prefix: str,
               done: Iterable[str] = ()) -> list[str]:
    """The retry list after a complete sweep, oldest failure first (to_json keeps the tail: the newest).

    Rebuilt from the grade records of the partitions the sweep wrote (its own invocations, resumed or
    not, and its Map batches): the old keys that still have no final record, then the keys whose
    latest record is newly a transient error. `done` adds keys the sweep found graded elsewhere.
    Rows of another bucket or prefix belong to another sweep's state.
    """
    rows = [r for r in index_rows if r["bucket"] == bucket and r["key"].startswith(prefix)]
    failed = transient_keys(rows)
    settled = ({k for _, k, _ in final_records(rows)} | set(done)) - failed
    kept = [k for k in dict.fromkeys(old) if k not in settled]
    return kept + sorted(failed - set(kept))


def completed_sweep_start(event: dict[str, Any]) -> dt.datetime | None:
    """The start of the sweep a compaction step closes, when every one of its batches succeeded; else None.

    The state machine passes `complete` (no Map error, no failed, timed-out or aborted item) and
    `started` (the execution's start time: uploads during the sweep must stay in the next window).
    Without `complete: true` the state stays as it was, so a failed batch's recordings stay candidates.
    """
    if event.get("complete") is not True:
        return None
    started = event.get("started")
    try:
        when = dt.datetime.fromisoformat(started.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        raise ValueError(f"a complete sweep's compaction step needs its start time, got started={started!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def is_candidate(last_modified: dt.datetime | None, key: str, state: SweepState, overlap_hours: float,
                 retry: set[str]) -> bool:
    """Modified inside the window (or unknown), or on the retry list."""
    if state.watermark is None or last_modified is None or key in retry:
        return True
    # LastModified has whole-second precision: an object written in the sweep's first second must count
    cutoff = state.watermark.replace(microsecond=0) - dt.timedelta(hours=overlap_hours, seconds=1)
    return last_modified >= cutoff


def day_of(last_modified: dt.datetime | None) -> str | None:
    return last_modified.astimezone(dt.timezone.utc).date().isoformat() if last_modified else None


def _standing(index_rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(bucket, key, etag) -> the row that stands for those bytes: a grade beats an error, then the latest.

    By `records.precedence`, the order every dedupe applies: a later error of bytes already
    graded (a throttled HEAD during a backfill) neither hides the grade nor puts the key on the retry list.
    """
    standing: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in index_rows:
        k = (row["bucket"], row["key"], row["etag"])
        kept = standing.get(k)
        if kept is None or precedence(row["status"], row["scored_at"]) >= precedence(kept["status"], kept["scored_at"]):
            standing[k] = row
    return standing


def final_records(index_rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    """(bucket, key, etag) -> model_version of the standing record, for records that need no retry.

    The bucket belongs to the identity: recordings buckets may share one grades bucket, and the same
    key with the same bytes in two of them is two recordings.
    """
    return {k: r["model_version"] for k, r in _standing(index_rows).items()
            if r["status"] == "ok" or r["error_code"] not in TRANSIENT_CODES}


def transient_keys(index_rows: Iterable[dict[str, Any]]) -> set[str]:
    """Keys whose newest bytes' standing record is a transient error (what the next sweep retries)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in _standing(index_rows).values():
        if row["key"] not in latest or row["scored_at"] >= latest[row["key"]]["scored_at"]:
            latest[row["key"]] = row
    return {k for k, r in latest.items() if r["status"] == "error" and r["error_code"] in TRANSIENT_CODES}
