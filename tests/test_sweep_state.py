"""The sweep state survives what a night can do to it: failed Map batches, resumed invocations, long retry lists.

Real HTTP to the loopback S3 server; faults come from tests/faultproxy.py, never from patching boto3.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from handlers import fleet_sweep, sweep_batch
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.sinks import read_grades
from signalcraft_core.pipeline.sweep import (
    MAX_RETRY_KEYS,
    STATE_PREFIX,
    SweepState,
    load_state,
    next_retry,
    save_state,
)
from tests.faultproxy import Fault, FaultProxy
from tests.handler_env import clip

PREFIX = "site-a/"


def _items(s3, recordings: str) -> list[dict]:
    """The Distributed Map's items: what ListObjectsV2 says about each object."""
    return [{"Key": o["Key"], "ETag": o["ETag"], "Size": o["Size"], "LastModified": o["LastModified"].isoformat()}
            for o in s3.list_objects_v2(Bucket=recordings, Prefix=PREFIX)["Contents"]]


def _compact(recordings: str, **outcome) -> dict:
    return fleet_sweep.handler({"action": "compact", "bucket": recordings, "prefix": PREFIX, "date": None,
                                "mode": "incremental", **outcome})


class _ShortOnTime:
    aws_request_id = "short-on-time"

    def get_remaining_time_in_millis(self) -> int:
        return 1_000


# --------------------------------------------------------------------------- #1 a failed Map keeps the state


def test_a_compaction_step_after_failed_batches_leaves_the_sweep_state_as_it_was(fleet):
    s3, recordings, grades = fleet
    before = SweepState(watermark=dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc), retry=["site-a/pump/id_00/old.wav"])
    save_state(s3, grades, recordings, PREFIX, before)
    s3.put_object(Bucket=recordings, Key="site-a/pump/id_00/00000001.wav", Body=clip(1))
    started = "2024-05-08T02:00:00.123Z"

    # the Map failed (Catch) or lost batches within its tolerance: the state machine says complete: false
    step = _compact(recordings, complete=False, started=started)
    assert step["complete"] is False and "watermark" not in step
    assert load_state(s3, grades, recordings, PREFIX) == before
    assert _compact(recordings)["complete"] is False   # no outcome at all (a hand-started step): the same
    assert load_state(s3, grades, recordings, PREFIX) == before

    # the recording the failed batch held is still a candidate the next night, and gets graded
    assert sweep_batch.handler({"Items": _items(s3, recordings),
                                "BatchInput": {"bucket": recordings, "prefix": PREFIX, "mode": "incremental"}})["records"] == 1
    step = _compact(recordings, complete=True, started=started)
    # the watermark is the execution's start, not the time the compaction step ran
    assert step["watermark"] == "2024-05-08T02:00:00.123000+00:00"
    assert load_state(s3, grades, recordings, PREFIX).watermark == dt.datetime(2024, 5, 8, 2, 0, 0, 123000,
                                                                               tzinfo=dt.timezone.utc)


def test_a_complete_compaction_step_needs_the_sweeps_start_time(fleet):
    _, recordings, _ = fleet
    with pytest.raises(ValueError, match="start time"):
        _compact(recordings, complete=True)


# --------------------------------------------------------------------------- #4 a resumed sweep keeps its failures


def test_a_resumed_sweep_keeps_the_first_invocations_failures_on_the_retry_list(fleet, s3_server, monkeypatch):
    s3, recordings, grades = fleet
    monkeypatch.setenv("BATCH_SIZE", "1")   # 4 refs a chunk: the first invocation stops after one chunk
    keys = [f"site-a/pump/id_00/{i:08d}.wav" for i in range(6)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=recordings, Key=key, Body=clip(i))
    bad = keys[1]
    with FaultProxy(s3_server.endpoint_url, seed=1) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        runtime.reset()
        proxy.add(Fault.internal_error(method="GET", path="^" + re.escape(f"/{recordings}/{bad}") + "$"))
        first = fleet_sweep.handler({"bucket": recordings, "prefix": PREFIX}, _ShortOnTime())
        assert first["complete"] is False and first["errors"] == {"storage_error": 1}
        proxy.clear()
        rest = fleet_sweep.handler({"bucket": recordings, "prefix": PREFIX, "start_after": first["resume_after"]})
    assert rest["complete"] is True and rest["errors"] == {}
    assert load_state(s3, grades, recordings, PREFIX).retry == [bad]


# --------------------------------------------------------------------------- #11 truncation keeps the newest


def test_the_retry_list_keeps_failure_order_so_truncation_keeps_the_newest():
    old = [f"{PREFIX}z/{i:08d}.wav" for i in range(MAX_RETRY_KEYS)]     # a long outage, alphabetically last
    tonight = [{"bucket": "rec", "key": f"{PREFIX}a/new.wav", "etag": "e", "status": "error", "error_code": "storage_error",
                "model_version": "v1", "scored_at": dt.datetime(2024, 5, 8, tzinfo=dt.timezone.utc)}]
    retry = next_retry(old, tonight, "rec", PREFIX)
    assert retry[-1] == f"{PREFIX}a/new.wav" and retry[:-1] == old
    kept = json.loads(SweepState(retry=retry).to_json())["retry"]
    assert len(kept) == MAX_RETRY_KEYS and kept[-1] == f"{PREFIX}a/new.wav" and old[0] not in kept


def test_the_retry_list_drops_what_is_graded_and_ignores_other_buckets_and_prefixes():
    at = dt.datetime(2024, 5, 8, tzinfo=dt.timezone.utc)

    def row(key, status="ok", code=None, when=at):
        return {"bucket": "rec", "key": key, "etag": "e", "status": status, "error_code": code, "model_version": "v1", "scored_at": when}

    rows = [row(f"{PREFIX}1.wav", "error", "storage_error", at - dt.timedelta(hours=1)), row(f"{PREFIX}1.wav"),
            row(f"{PREFIX}2.wav", "error", "model_error"), row("site-b/3.wav", "error", "storage_error"),
            {**row(f"{PREFIX}4.wav", "error", "storage_error"), "bucket": "other"}]
    assert next_retry([f"{PREFIX}1.wav", f"{PREFIX}0.wav", f"{PREFIX}9.wav"], rows, "rec", PREFIX, done={f"{PREFIX}9.wav"}) \
        == [f"{PREFIX}0.wav", f"{PREFIX}2.wav"]


# --------------------------------------------------------------------------- #5 the state's prefix may be listed


def test_a_missing_state_object_that_answers_403_is_not_read_as_a_first_sweep(fleet, s3_server, monkeypatch):
    """AWS answers 403 for a missing key without ListBucket on it: load_state must not guess (the template grants
    ListBucket on the state's prefix, tests/test_template_sweep_state.py)."""
    from signalcraft_core.errors import StorageError

    _, recordings, grades = fleet
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add(Fault(kind="error", status=403, code="AccessDenied", method="GET", path=re.escape(STATE_PREFIX)))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        runtime.reset()
        with pytest.raises(StorageError, match="AccessDenied"):
            load_state(runtime.get_runtime().client, grades, recordings, PREFIX)


# --------------------------------------------------------------------------- #6 the index knows the bucket


def test_the_same_key_and_bytes_in_another_recordings_bucket_is_another_recording(fleet, make_bucket):
    s3, recordings, grades = fleet
    other = make_bucket()
    key, data = "site-a/pump/id_00/00000001.wav", clip(3)
    for bucket in (recordings, other):
        s3.put_object(Bucket=bucket, Key=key, Body=data)   # one ETag: a replicated or staging copy
    assert fleet_sweep.handler({"bucket": recordings, "prefix": PREFIX})["records"] == 1
    again = fleet_sweep.handler({"bucket": other, "prefix": PREFIX})
    assert again["records"] == 1 and again["already_graded"] == 0
    rows = read_grades(f"s3://{grades}/grades/", s3).to_pylist()
    assert sorted(r["bucket"] for r in rows) == sorted([recordings, other])


def test_a_later_transient_error_of_graded_bytes_neither_hides_the_grade_nor_is_retried():
    """The index applies `records.precedence` too: a grade of these bytes stands against a later error."""
    from signalcraft_core.pipeline.sweep import final_records, transient_keys

    at = dt.datetime(2024, 5, 8, tzinfo=dt.timezone.utc)

    def row(etag, status, code, hours):
        return {"bucket": "rec", "key": f"{PREFIX}k.wav", "etag": etag, "status": status, "error_code": code,
                "model_version": "v1", "scored_at": at + dt.timedelta(hours=hours)}

    graded_then_throttled = [row("e1", "ok", None, 0), row("e1", "error", "storage_error", 1)]
    assert final_records(graded_then_throttled) == {("rec", f"{PREFIX}k.wav", "e1"): "v1"}
    assert transient_keys(graded_then_throttled) == set()
    new_bytes_failed = [*graded_then_throttled, row("e2", "error", "storage_error", 2)]   # an overwrite: retried
    assert transient_keys(new_bytes_failed) == {f"{PREFIX}k.wav"}
