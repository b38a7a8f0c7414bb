"""A fleet that grows night after night: one identity, one partition, one row; incremental sweeps.

Real HTTP to the loopback S3 server; the handlers are driven as Lambda would drive them.
"""

from __future__ import annotations

import io
import threading

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest

from handlers import fleet_sweep, score_upload, sweep_batch
from signalcraft_core.io.objects import list_keys
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.records import GradeRecord, record_id
from signalcraft_core.pipeline.sinks import LocalGradeSink, read_grades
from tests.handler_env import CallLog, clip


def _keys(s3, bucket: str) -> list[str]:
    return [i.key for i in list_keys(s3, bucket, "grades/", (".parquet",))]


def _gets_of_recordings(log: CallLog) -> int:
    return log.operations.count("GetObject")


def _versioned(fleet) -> tuple:
    """The fleet with versioning on in the recordings bucket, a key and the bytes to put there."""
    s3, recordings, grades = fleet
    s3.put_bucket_versioning(Bucket=recordings, VersioningConfiguration={"Status": "Enabled"})
    return s3, recordings, grades, "site-a/pump/id_00/00000001.wav", clip(1)


def _version_event(bucket: str, key: str, data: bytes, version: str) -> dict:
    """An S3 put event for one version of an object (its ETag deliberately wrong: the HEAD decides)."""
    event = generate_event("s3-put", bucket, key, size=len(data), etag="x")
    event["Records"][0]["s3"]["object"]["versionId"] = version
    return event


def test_versioned_bucket_identical_bytes_twice_are_two_recordings_with_stable_ids(fleet):
    s3, recordings, grades, key, data = _versioned(fleet)
    v1 = s3.put_object(Bucket=recordings, Key=key, Body=data)["VersionId"]
    score_upload.handler(_version_event(recordings, key, data, v1))
    v2 = s3.put_object(Bucket=recordings, Key=key, Body=data)["VersionId"]  # same bytes, same ETag
    assert v1 != v2
    score_upload.handler(_version_event(recordings, key, data, v2))
    fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})  # finds both graded: nothing new
    rows = read_grades(f"s3://{grades}/grades/", s3).to_pylist()
    assert sorted(r["version_id"] for r in rows) == sorted([v1, v2])
    assert {r["record_id"] for r in rows} == {record_id(recordings, key, v1), record_id(recordings, key, v2)}
    # the same version through another door keeps its id: no new row
    score_upload.handler(generate_event("s3-put", recordings, key, size=len(data), etag="stale"))
    assert read_grades(f"s3://{grades}/grades/", s3).num_rows == 2


def test_the_sweep_reads_each_listed_recording_with_one_get_and_no_head(fleet):
    """The listing already gave size, ETag and LastModified: a HEAD per recording would only repeat them."""
    s3, recordings, grades = fleet
    keys = [f"site-a/pump/id_00/{n:08d}.wav" for n in range(5)]
    for n, key in enumerate(keys):
        s3.put_object(Bucket=recordings, Key=key, Body=clip(n))
    runtime.reset()
    with CallLog(runtime.get_runtime().client) as log:
        result = fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})
    assert result["records"] == 5
    assert log.count("GetObject", recordings) == 5 and log.count("HeadObject", recordings) == 0
    rows = read_grades(f"s3://{grades}/grades/", s3).to_pylist()
    etags = {key: s3.head_object(Bucket=recordings, Key=key)["ETag"].strip('"') for key in keys}
    assert {r["key"]: r["etag"] for r in rows} == etags   # the identity still comes from the store


def test_in_a_versioned_bucket_the_sweeps_get_gives_the_version_its_event_later_shares(fleet):
    s3, recordings, grades, key, data = _versioned(fleet)
    version = s3.put_object(Bucket=recordings, Key=key, Body=data)["VersionId"]
    fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})   # listed: no HEAD, the GET names the version
    score_upload.handler(_version_event(recordings, key, data, version))   # the late event of the same version
    rows = read_grades(f"s3://{grades}/grades/", s3, dedupe=False).to_pylist()
    assert [r["version_id"] for r in rows] == [version, version][:len(rows)]
    assert {r["record_id"] for r in rows} == {record_id(recordings, key, version)}


def test_a_listed_recording_replaced_before_its_get_is_identified_by_a_head(fleet):
    """Stale listing: other bytes are graded under their own ETag; a deleted object's error is not_found."""
    from signalcraft_core.io.events import ObjectRef
    from signalcraft_core.pipeline.grade import grade_objects

    s3, recordings, _ = fleet
    old, new = clip(1, seconds=2.0), clip(2, seconds=3.0)
    listed = []
    for key in ("site-a/pump/id_00/replaced.wav", "site-a/pump/id_00/gone.wav"):
        etag = s3.put_object(Bucket=recordings, Key=key, Body=old)["ETag"].strip('"')
        listed.append(ObjectRef(bucket=recordings, key=key, etag=etag, size=len(old), source="sweep",
                                event_time="2026-12-01T00:00:00+00:00"))
    new_etag = s3.put_object(Bucket=recordings, Key=listed[0].key, Body=new)["ETag"].strip('"')
    s3.delete_object(Bucket=recordings, Key=listed[1].key)
    rt = runtime.get_runtime()
    with CallLog(rt.client) as log:
        replaced, gone = grade_objects(listed, rt.client, rt.store, rt.config)
    assert replaced.status == "ok" and replaced.etag == new_etag and replaced.size_bytes == len(new)
    assert replaced.duration_s == pytest.approx(3.0, abs=0.01)
    assert gone.status == "error" and gone.error_code == "not_found"
    assert gone.record_id == record_id(recordings, listed[1].key, listed[1].etag)   # named by the listing
    assert log.count("HeadObject", recordings) == 1   # the replaced one; the GET's 404 needs no HEAD


@pytest.mark.parametrize("replacements", [1, 99])
def test_an_object_replaced_between_its_head_and_its_get_is_never_decoded_on_the_old_size(fleet, replacements):
    """Once: identified afresh and graded as the new bytes. Every time: a transient error, graded on a retry."""
    from signalcraft_core.io.events import ObjectRef
    from signalcraft_core.pipeline.grade import grade_objects

    s3, recordings, _ = fleet
    key = "site-a/pump/id_00/replaced.wav"
    s3.put_object(Bucket=recordings, Key=key, Body=clip(1, seconds=1.0))
    rt = runtime.get_runtime()
    bodies = iter([clip(n, seconds=2.0 + n) for n in range(2, 2 + replacements)])

    def replace_before_get(**_):   # another writer, between our HEAD and our GET
        body = next(bodies, None)
        if body is not None:
            s3.put_object(Bucket=recordings, Key=key, Body=body)

    rt.client.meta.events.register("before-call.s3.GetObject", replace_before_get)
    try:
        (record,) = grade_objects([ObjectRef(bucket=recordings, key=key)], rt.client, rt.store, rt.config)
    finally:
        rt.client.meta.events.unregister("before-call.s3.GetObject", replace_before_get)
    current = s3.head_object(Bucket=recordings, Key=key)
    if replacements == 1:
        assert record.status == "ok" and record.etag == current["ETag"].strip('"')
        assert record.duration_s == pytest.approx(4.0, abs=0.01) and record.size_bytes == current["ContentLength"]
    else:
        assert record.status == "error" and record.error_code == "storage_error" and "changed" in record.error_message


def test_four_nights_of_uploads_keep_one_row_per_recording_and_grade_only_whats_new(fleet, monkeypatch):
    s3, recordings, grades = fleet
    monkeypatch.setenv("SWEEP_OVERLAP_HOURS", "0")  # nights here are seconds apart: no overlap window
    gets_per_night = []
    for night in range(4):
        for i in range(4):
            n = night * 4 + i
            s3.put_object(Bucket=recordings, Key=f"site-a/{('pump', 'fan')[n % 2]}/id_0{n % 3}/{n:08d}.wav",
                          Body=clip(n))
        runtime.reset()
        with CallLog(runtime.get_runtime().client) as log:
            result = fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})
        assert result["complete"] and result["records"] == 4, (night, {k: v for k, v in result.items() if k != "compaction"})  # only the night's new recordings
        gets_per_night.append(_gets_of_recordings(log))
    # work per night does not grow with the bucket: four new recordings a night, ever
    # 4 recordings + per partition (2): its index file, compaction's inputs (2), the merged file read back for
    # the retry list + the state
    assert all(g <= 4 + 2 * 4 + 1 for g in gets_per_night), gets_per_night
    assert len(set(gets_per_night[1:])) == 1, gets_per_night
    table = read_grades(f"s3://{grades}/grades/", s3, dedupe=False)
    assert table.num_rows == 16 and len(set(table.column("record_id").to_pylist())) == 16
    assert len(_keys(s3, grades)) <= 2  # compacted: one file per partition (dt x machine type)
    # a backfill re-grades everything and still leaves one row each
    backfill = fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/", "mode": "backfill"})
    assert backfill["records"] == 16
    assert read_grades(f"s3://{grades}/grades/", s3, dedupe=False).num_rows == 16


def test_every_reader_reads_the_folder_as_one_table(fleet, tmp_path):
    s3, recordings, grades = fleet
    for n in range(6):
        s3.put_object(Bucket=recordings, Key=f"site-a/{('pump', 'valve')[n % 2]}/id_00/{n:08d}.wav", Body=clip(n))
    fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})
    root = tmp_path / "grades"
    for key in _keys(s3, grades):  # a local copy of the prefix, as `aws s3 sync` would make it
        target = root / key[len("grades/"):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=grades, Key=key)["Body"].read())
    arrow = ds.dataset(str(root), format="parquet", partitioning="hive").to_table()
    frame = pd.read_parquet(root)
    duck = duckdb.sql(f"SELECT machine_type, count(*) AS n FROM read_parquet('{root}/**/*.parquet', "
                      "hive_partitioning=true) GROUP BY machine_type ORDER BY machine_type").fetchall()
    assert arrow.num_rows == len(frame) == 6
    assert sorted(map(str, arrow.column("machine_type").to_pylist())) == ["pump"] * 3 + ["valve"] * 3
    assert sorted(frame["machine_type"].astype(str)) == ["pump"] * 3 + ["valve"] * 3
    assert duck == [("pump", 3), ("valve", 3)]
    assert read_grades(str(root)).num_rows == 6


class _RacingSink(LocalGradeSink):
    """A re-run rewrites `victim` (same name, new content) right after compaction has read it."""

    def __init__(self, root, victim: str, rerun) -> None:
        super().__init__(root)
        self.victim, self.rerun, self.fired = victim, rerun, False

    def _get(self, rel):
        got = super()._get(rel)
        if rel == self.victim and not self.fired:
            self.fired = True
            self.rerun()
        return got


def _record(i: int, day: str, score: float, status: str = "ok") -> GradeRecord:
    from datetime import datetime, timezone

    return GradeRecord(record_id=record_id("rec", f"pump/{i}.wav", f"e{i}"), bucket="rec", key=f"pump/{i}.wav",
                       etag=f"e{i}", event_time=datetime.fromisoformat(f"{day}T08:00:00+00:00"),
                       scored_at=datetime.now(timezone.utc), machine_type="pump", status=status,
                       score=score if status == "ok" else None, grade="NORMAL" if status == "ok" else None,
                       error_code=None if status == "ok" else "storage_error")


def test_compaction_never_deletes_a_file_rewritten_after_it_was_read(tmp_path):
    day = "2024-05-06"
    plain = LocalGradeSink(tmp_path)
    first = plain.write([_record(1, day, 11.0), _record(2, day, 12.0)])
    plain.write([_record(3, day, 10.0)])
    victim = first[0][len(str(tmp_path)) + 1:]
    again = [_record(1, day, 11.0), _record(2, day, 12.0)]  # a redelivery graded alike: same name, new bytes

    sink = _RacingSink(tmp_path, victim, lambda: LocalGradeSink(tmp_path).write(again))
    result = sink.compact(day)
    assert sink.fired and result.files_kept == 1  # the rewritten file survived
    rows = {r["key"]: r for r in read_grades(str(tmp_path)).to_pylist()}
    assert [rows[f"pump/{i}.wav"]["scored_at"] for i in (1, 2)] == [r.scored_at for r in again]
    assert sink.compact(day).files_deleted == 1  # the next run merges it; one row per recording
    assert read_grades(str(tmp_path), dedupe=False).num_rows == 3


def test_a_grade_written_while_compaction_runs_never_replaces_the_errors_it_read(tmp_path):
    """The night's errors, then their re-run's grades: another name, so compaction cannot delete them."""
    day = "2024-05-06"
    plain = LocalGradeSink(tmp_path)
    first = plain.write([_record(1, day, 0, "error"), _record(2, day, 0, "error")])
    plain.write([_record(3, day, 10.0)])
    victim = first[0][len(str(tmp_path)) + 1:]
    good = [_record(1, day, 11.0), _record(2, day, 12.0)]
    written = []
    sink = _RacingSink(tmp_path, victim, lambda: written.extend(LocalGradeSink(tmp_path).write(good)))
    result = sink.compact(day)
    assert sink.fired and written[0] != first[0] and result.files_deleted == 2
    rows = {r["key"]: r["status"] for r in read_grades(str(tmp_path)).to_pylist()}
    assert rows == {"pump/1.wav": "ok", "pump/2.wav": "ok", "pump/3.wav": "ok"}
    sink.compact(day)
    assert read_grades(str(tmp_path), dedupe=False).num_rows == 3


def test_compaction_racing_a_rerun_in_threads_loses_no_good_record(tmp_path):
    day = "2024-05-06"
    for trial in range(10):
        root = tmp_path / str(trial)
        errors = [_record(i, day, 0, "error") for i in range(4)]
        LocalGradeSink(root).write(errors)
        LocalGradeSink(root).write([_record(9, day, 1.0)])
        good = [_record(i, day, float(i)) for i in range(4)]
        rerun = threading.Thread(target=lambda: LocalGradeSink(root).write(good))
        rerun.start()
        LocalGradeSink(root).compact(day)
        rerun.join()
        rows = {r["key"]: r["status"] for r in read_grades(str(root)).to_pylist()}
        assert all(rows[f"pump/{i}.wav"] == "ok" for i in range(4)), (trial, rows)


def _uploaded_items(s3, recordings: str, n: int) -> list[dict]:
    """n recordings uploaded, as the Map's ItemReader (ListObjectsV2) lists them."""
    items = []
    for i in range(n):
        key = f"site-a/pump/id_00/{i:08d}.wav"
        s3.put_object(Bucket=recordings, Key=key, Body=clip(i))
        info = s3.head_object(Bucket=recordings, Key=key)
        items.append({"Key": key, "ETag": info["ETag"], "Size": info["ContentLength"],
                      "LastModified": info["LastModified"].isoformat()})
    return items


def test_map_batches_skip_what_is_graded_and_backfill_does_not(fleet):
    s3, recordings, grades = fleet
    items = _uploaded_items(s3, recordings, 3)
    batch = {"Items": items, "BatchInput": {"bucket": recordings, "mode": "incremental"}}
    assert sweep_batch.handler(batch)["records"] == 3
    assert sweep_batch.handler(batch)["records"] == 0  # redelivered / next night: nothing new
    assert sweep_batch.handler({**batch, "BatchInput": {"bucket": recordings, "mode": "backfill"}})["records"] == 3
    assert read_grades(f"s3://{grades}/grades/", s3).num_rows == 3
    with pytest.raises(ValueError, match="mode"):
        sweep_batch.handler({**batch, "BatchInput": {"bucket": recordings, "mode": "everything"}})


def test_the_sweep_state_advances_only_when_a_sweep_completes(fleet):
    s3, recordings, grades = fleet
    s3.put_object(Bucket=recordings, Key="site-a/pump/id_00/00000001.wav", Body=clip(1))
    result = fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})
    states = [k["Key"] for k in s3.list_objects_v2(Bucket=grades, Prefix="_signalcraft/").get("Contents", [])]
    assert result["complete"] and len(states) == 1
    state = io.BytesIO(s3.get_object(Bucket=grades, Key=states[0])["Body"].read()).read()
    assert result["watermark"].encode() in state.replace(b" ", b"")


class _ShortContext:
    """A Lambda context whose deadline is always near."""

    aws_request_id = "deadline-test"
    function_name = "SweepBatchFunction"

    def get_remaining_time_in_millis(self) -> int:
        return 1_000


def test_a_map_batch_near_its_deadline_stops_and_its_retry_carries_on(fleet, monkeypatch):
    from signalcraft_core.pipeline.serverless import BatchDeadline

    s3, recordings, grades = fleet
    monkeypatch.setenv("BATCH_SIZE", "2")
    runtime.reset()
    items = _uploaded_items(s3, recordings, 5)
    batch = {"Items": items, "BatchInput": {"bucket": recordings, "mode": "incremental"}}
    graded = []
    for _attempt in range(2):
        with pytest.raises(BatchDeadline, match="before the deadline"):
            sweep_batch.handler(batch, _ShortContext())
        graded.append(read_grades(f"s3://{grades}/grades/", s3).num_rows)
    assert graded == [2, 4]  # each attempt grades one chunk and leaves the rest to the retry
    assert sweep_batch.handler(batch, _ShortContext())["records"] == 1  # the last chunk: done
    assert read_grades(f"s3://{grades}/grades/", s3, dedupe=False).num_rows == 5


def test_the_state_machine_compaction_step_advances_the_sweep_state(fleet):
    """Map batches grade, then {"action": "compact", bucket, prefix, date, mode, complete, started}: the window moves on."""
    s3, recordings, grades = fleet
    key = "site-a/pump/id_00/00000001.wav"
    s3.put_object(Bucket=recordings, Key=key, Body=clip(1))
    info = s3.head_object(Bucket=recordings, Key=key)
    item = {"Key": key, "ETag": info["ETag"], "Size": info["ContentLength"], "LastModified": info["LastModified"].isoformat()}
    sweep_batch.handler({"Items": [item], "BatchInput": {"bucket": recordings, "prefix": "site-a/", "mode": "incremental"}})
    step = fleet_sweep.handler({"action": "compact", "bucket": recordings, "prefix": "site-a/", "date": "2024-01-01",
                                "mode": "incremental", "complete": True, "started": "2024-01-02T02:00:00Z"})
    assert step["watermark"] == "2024-01-02T02:00:00+00:00"
    from signalcraft_core.pipeline.sweep import load_state

    state = load_state(s3, grades, recordings, "site-a/")
    assert state.watermark is not None and state.watermark.isoformat() == step["watermark"] and state.retry == []


@pytest.mark.parametrize("others", [0, 3], ids=["one ref, fetched inline", "four refs, on the pool"])
def test_a_download_that_fails_unexpectedly_is_one_error_record_and_the_rest_grade(fleet, others):
    """A client failure that is no botocore error (a bug in a hook, a library) still yields its record."""
    from signalcraft_core.io.events import ObjectRef
    from signalcraft_core.pipeline.grade import grade_objects

    s3, recordings, _grades = fleet
    keys = [f"site-a/pump/id_00/{n:03d}.wav" for n in range(others + 1)]
    for n, key in enumerate(keys):
        s3.put_object(Bucket=recordings, Key=key, Body=clip(n))
    broken = keys[0]
    rt = runtime.get_runtime()

    def fail(params, **_):
        if params.get("Key") == broken:
            raise RuntimeError("a bug below the client")

    rt.client.meta.events.register("before-parameter-build.s3.GetObject", fail)
    try:
        records = grade_objects([ObjectRef(bucket=recordings, key=k) for k in keys], rt.client, rt.store, rt.config)
    finally:
        rt.client.meta.events.unregister("before-parameter-build.s3.GetObject", fail)
    assert [r.key for r in records] == keys
    assert (records[0].status, records[0].error_code) == ("error", "storage_error")
    assert "RuntimeError" in records[0].error_message
    assert [r.status for r in records[1:]] == ["ok"] * others
