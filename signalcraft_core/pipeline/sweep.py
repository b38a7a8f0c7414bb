"""What a nightly sweep grades: work proportional to what is new, not to the bucket's history.

Mechanism: a watermark on the recordings' LastModified, kept in a small state object beside the
grades, plus the grades themselves as the index of what is done.

- A sweep lists the prefix (ListObjectsV2, no GET) and keeps as candidates the objects modified at
  or after `watermark - overlap`, plus the keys of its retry list; older objects are skipped.
- A candidate is graded unless the grade partition of its LastModified day already holds a final
  record (a grade, or an error that is not transient) for the same key and ETag from the current
  model version of its model set. Only those partitions are read (a night reads one or two days).
- When the sweep is complete it stores `watermark = its start time` and the retry list: keys whose
  latest record is a transient error (storage, model). A crashed or cut-short sweep stores nothing,
  so the next one starts from the old watermark again (re-runs write the same record ids).

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

#: A retry list longer than this keeps the newest entries (a store failing for weeks is an alarm, not a list).
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
    try:
        return SweepState.from_json(get_bytes(client, output_bucket, state_key(bucket, prefix)))
    except StorageError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            return SweepState()  # the first sweep: everything is a candidate (the index still skips graded ones)
        raise


def save_state(client: Any, output_bucket: str, bucket: str, prefix: str, state: SweepState) -> None:
    put_bytes(client, output_bucket, state_key(bucket, prefix), state.to_json(), content_type="application/json")


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


def final_records(index_rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(key, etag) -> model_version of the latest record, for records that need no retry."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in index_rows:
        k = (row["key"], row["etag"])
        if k not in latest or row["scored_at"] >= latest[k]["scored_at"]:
            latest[k] = row
    return {k: r["model_version"] for k, r in latest.items()
            if r["status"] == "ok" or r["error_code"] not in TRANSIENT_CODES}


def transient_keys(index_rows: Iterable[dict[str, Any]]) -> set[str]:
    """Keys whose latest record is a transient error (what the next sweep retries)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in index_rows:
        if row["key"] not in latest or row["scored_at"] >= latest[row["key"]]["scored_at"]:
            latest[row["key"]] = row
    return {k for k, r in latest.items() if r["status"] == "error" and r["error_code"] in TRANSIENT_CODES}
