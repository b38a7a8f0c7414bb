"""Why: one identity, one partition, one row - whatever fails, whoever writes last, whatever the input's name.

A grade of some bytes is never hidden or overwritten by a later error row of the same id (a
redelivered event after the object was deleted); an error record and the later grade of one id share
one partition; a record never HEAD-ed is filed under the day it was scored, not an event's; a re-grade
racing compaction survives on a store that ignores DeleteObjects' ETag condition (moto does); a local
input with an odd name or type costs its own record, never the batch. Real HTTP to the loopback server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from handler_env import clip

from handlers import fleet_sweep, score_upload, sweep_batch
from signalcraft_core.config import Settings
from signalcraft_core.io.events import ObjectRef
from signalcraft_core.io.objects import delete_keys, list_keys
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.models.model_store import ModelStore
from signalcraft_core.pipeline import grade, runtime, score
from signalcraft_core.pipeline.records import (
    GradeRecord,
    batch_object_name,
    dedupe_table,
    record_id,
    records_to_table,
)
from signalcraft_core.pipeline.sinks import LocalGradeSink, S3GradeSink, read_grades

DEMO_MODELS = Path(__file__).resolve().parents[1] / "signalcraft_core" / "local" / "demo_models"
PUMP_KEY = "site-a/pump/id_00/00000001.wav"


def _grade_keys(s3, bucket: str) -> list[str]:
    return [i.key for i in list_keys(s3, bucket, "grades/", (".parquet",))]


def _row(key: str, status: str, scored_at: dt.datetime, version: str = "v1", **extra) -> GradeRecord:
    return GradeRecord(record_id=record_id("rec", key, "e"), bucket="rec", key=key, etag="e",
                       event_time=dt.datetime(2024, 5, 6, 8, tzinfo=dt.timezone.utc), scored_at=scored_at,
                       machine_type="pump", status=status, model_version=version,
                       score=1.0 if status == "ok" else None, grade="NORMAL" if status == "ok" else None,
                       error_code=None if status == "ok" else extra.pop("error_code", "not_found"), **extra)


# --------------------------------------------------------------------------- a grade is never replaced by an error


def test_a_redelivered_event_for_a_deleted_recording_never_replaces_its_grade(fleet):
    s3, recordings, grades = fleet
    data = clip(1)
    etag = s3.put_object(Bucket=recordings, Key=PUMP_KEY, Body=data)["ETag"].strip('"')
    event = generate_event("s3-put", recordings, PUMP_KEY, size=len(data), etag=etag)  # the real ETag, as S3 sends
    event["Records"][0]["eventTime"] = s3.head_object(Bucket=recordings, Key=PUMP_KEY)["LastModified"].strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")
    first = score_upload.handler(event)
    s3.delete_object(Bucket=recordings, Key=PUMP_KEY)  # a lifecycle rule or an operator
    again = score_upload.handler(event)  # the same event redelivered hours later
    assert again["errors"] == {"not_found": 1}
    assert first["written"][0] in _grade_keys(s3, grades)  # the grade's file was not overwritten
    raw = read_grades(f"s3://{grades}/grades/", s3, dedupe=False).to_pylist()
    assert sorted(r["status"] for r in raw) == ["error", "ok"] and len({r["record_id"] for r in raw}) == 1
    rows = read_grades(f"s3://{grades}/grades/", s3).to_pylist()
    assert [(r["status"], r["grade"] is not None) for r in rows] == [("ok", True)]
    # and compaction keeps the grade too
    S3GradeSink(s3, grades, "grades/").compact(partitions={k.rpartition("/")[0][len("grades/"):] + "/"
                                                           for k in _grade_keys(s3, grades)})
    assert [r["status"] for r in read_grades(f"s3://{grades}/grades/", s3, dedupe=False).to_pylist()] == ["ok"]


def test_a_grade_beats_a_later_error_of_the_same_id_in_every_dedupe(tmp_path):
    t0 = dt.datetime(2024, 5, 6, 9, tzinfo=dt.timezone.utc)
    good, late_error = _row("k", "ok", t0), _row("k", "error", t0 + dt.timedelta(hours=3))
    regrade = _row("k", "ok", t0 + dt.timedelta(hours=5), version="v2")
    for rows, want in (([good, late_error], good), ([late_error, good], good), ([good, late_error, regrade], regrade)):
        table = dedupe_table(records_to_table(rows))
        assert table.num_rows == 1 and table.column("scored_at")[0].as_py() == want.scored_at
        sink = LocalGradeSink(tmp_path / str(len(list(tmp_path.iterdir()))))
        sink.write(rows)  # one batch holding both: the writer keeps the same row as the readers
        assert [r["scored_at"] for r in read_grades(str(sink.root), dedupe=False).to_pylist()] == [want.scored_at]
    # the most recent error still wins among errors (a retry's final outcome)
    errors = [_row("k", "error", t0, error_code="storage_error"), late_error]
    assert dedupe_table(records_to_table(errors)).column("error_code").to_pylist() == ["not_found"]


def test_a_batch_name_comes_from_its_rows_so_a_different_outcome_never_overwrites():
    t0 = dt.datetime(2024, 5, 6, 9, tzinfo=dt.timezone.utc)
    good = [_row("a", "ok", t0), _row("b", "ok", t0)]
    name = batch_object_name(good)
    later = [replace(r, scored_at=t0 + dt.timedelta(hours=1)) for r in good]
    assert batch_object_name(list(reversed(later))) == name  # a redelivery graded alike: overwrites its own file
    assert batch_object_name([good[0], _row("b", "error", t0)]) != name  # an error of one id
    assert batch_object_name([good[0], _row("b", "ok", t0, version="v2")]) != name  # a re-grade


# --------------------------------------------------------------------------- one partition, whatever failed


def test_a_model_error_and_the_later_grade_of_a_key_without_a_type_share_one_partition(fleet, tmp_path, monkeypatch):
    s3, recordings, grades = fleet
    models = tmp_path / "models"
    shutil.copytree(DEMO_MODELS, models)
    artifact = models / "default" / "level1.joblib"
    intact = artifact.read_bytes()
    monkeypatch.setenv("MODEL_URI", str(models))
    monkeypatch.setenv("MODEL_CHECK_SECONDS", "0")
    s3.put_object(Bucket=recordings, Key="uploads/2026-12-03/rec-0001.wav", Body=clip(4))  # outside the layout
    artifact.write_bytes(intact[:-10] + b"corrupted!")  # the default set fails its SHA-256 check
    runtime.reset()
    assert fleet_sweep.handler({"bucket": recordings, "prefix": "uploads/"})["errors"] == {"model_error": 1}
    artifact.write_bytes(intact)
    runtime.reset()
    assert fleet_sweep.handler({"bucket": recordings, "prefix": "uploads/"})["records"] == 1
    folders = {k.rpartition("/")[0] for k in _grade_keys(s3, grades)}
    assert len(folders) == 1 and folders.pop().endswith("/machine_type=default"), _grade_keys(s3, grades)
    raw = read_grades(f"s3://{grades}/grades/", s3, dedupe=False).to_pylist()
    assert {r["machine_type"] for r in raw} == {"default"} and len({r["record_id"] for r in raw}) == 1


def test_a_record_never_headed_is_filed_under_the_day_it_was_scored(fleet):
    s3, recordings, grades = fleet
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    bridge = generate_event("eventbridge", recordings, "site-a/pump/id_00/never-there.wav")
    bridge["time"] = "2019-07-04T12:00:00Z"
    sam = generate_event("s3-put", recordings, "site-a/pump/id_00/never-there-2.wav")  # eventTime 1970
    written = score_upload.handler(bridge)["written"] + score_upload.handler(sam)["written"]
    assert written and all(k.startswith(f"grades/dt={today}/machine_type=pump/") for k in written), written
    rows = read_grades(f"s3://{grades}/grades/", s3).to_pylist()
    assert [(r["error_code"], r["event_time"]) for r in rows] == [("not_found", None)] * 2


def test_a_listed_object_that_cannot_be_headed_keeps_its_listed_day(fleet):
    """A Map item's LastModified came from ListObjectsV2, not a sender: the error row stays in that day's
    partition, where the later grade of the same bytes lands (one id, one partition)."""
    s3, recordings, grades = fleet
    item = {"Key": "site-a/pump/id_00/gone.wav", "ETag": '"0123456789abcdef0123456789abcdef"', "Size": 100,
            "LastModified": "2026-11-28T03:04:05+00:00"}   # listed, then deleted before the batch ran
    out = sweep_batch.handler({"Items": [item], "BatchInput": {"bucket": recordings, "prefix": "site-a/"}})
    assert out["written"] and all(k.startswith("grades/dt=2026-11-28/") for k in out["written"]), out
    (row,) = read_grades(f"s3://{grades}/grades/", s3).to_pylist()
    assert row["error_code"] == "not_found" and row["event_time"].date() == dt.date(2026, 11, 28)


# --------------------------------------------------------------------------- compaction on a store ignoring the ETag


class _ConditionBlindSink(S3GradeSink):
    """A re-grade rewrites its batch after compaction's ETag check, and the store deletes unconditionally.

    That is what happens on a store ignoring DeleteObjects' per-object ETag (moto, some S3-compatibles)
    when the rewrite lands between the HEAD and the DeleteObjects: made deterministic here.
    """

    def __init__(self, client, bucket, prefix, regrade) -> None:
        super().__init__(client, bucket, prefix)
        self.regrade = regrade

    def _delete(self, rels, etags):
        self.regrade()
        return delete_keys(self.client, self.bucket, [self.prefix + rel for rel in rels])


def test_a_regrade_racing_compaction_survives_a_store_that_ignores_the_etag_condition(s3, make_bucket):
    bucket = make_bucket()
    t0 = dt.datetime.now(dt.timezone.utc)
    keys = [f"k{i}" for i in range(4)]
    sink = S3GradeSink(s3, bucket, "grades/")
    sink.write([_row(k, "ok", t0) for k in keys[:2]])
    sink.write([_row(k, "ok", t0) for k in keys[2:]])
    v2 = [_row(k, "ok", t0 + dt.timedelta(seconds=1), version="v2") for k in keys[:2]]
    racing = _ConditionBlindSink(s3, bucket, "grades/", lambda: S3GradeSink(s3, bucket, "grades/").write(v2))
    racing.compact(partitions=sink.touched)
    got = {r["key"]: r["model_version"] for r in read_grades(f"s3://{bucket}/grades/", s3).to_pylist()}
    assert got == {"k0": "v2", "k1": "v2", "k2": "v1", "k3": "v1"}


# --------------------------------------------------------------------------- local inputs: odd names, odd files


def test_ids_of_valid_names_are_unchanged_and_a_non_utf8_name_gets_the_id_of_its_bytes():
    joined = "\x1f".join(["rec", "site-a/pump/id_00/ü.wav", "etag"])
    assert record_id("rec", "site-a/pump/id_00/ü.wav", "etag") == hashlib.sha256(joined.encode()).hexdigest()[:32]
    name = os.fsdecode(b"x/bad\xff.wav")
    assert record_id(None, name, "e") == hashlib.sha256(b"\x1fx/bad\xff.wav\x1fe").hexdigest()[:32]
    assert len(record_id(None, "x/\ud800.wav", "e")) == 32  # a lone surrogate from an event's JSON


def _local_refs(paths) -> list[ObjectRef]:
    return [ObjectRef(bucket=None, key=os.fsdecode(p), source="file") for p in paths]


def test_a_non_utf8_file_name_costs_no_other_record(tmp_path):
    good, bad = tmp_path / "good.wav", Path(os.fsdecode(bytes(tmp_path) + b"/bad\xff.wav"))
    good.write_bytes(clip(3))
    bad.write_bytes(clip(3))
    records = grade.grade_objects(_local_refs([good, bad]), None, ModelStore(), Settings())
    assert [r.status for r in records] == ["ok", "ok"] and records[1].key == str(bad)


def test_an_unexpected_failure_becomes_an_internal_error_record_of_that_input_alone(tmp_path, monkeypatch):
    paths = [tmp_path / f"{name}.wav" for name in ("a", "boom", "c")]
    for i, p in enumerate(paths):
        p.write_bytes(clip(i, seconds=1.3 if "boom" in p.name else 1.1))
    to_record = grade.to_record

    def fragile(ref, result, *args, **kwargs):
        if "boom" in ref.key and result.status == "ok":
            raise RuntimeError("a bug")
        return to_record(ref, result, *args, **kwargs)

    monkeypatch.setattr(grade, "to_record", fragile)
    records = grade.grade_objects(_local_refs(paths), None, ModelStore(), Settings())
    assert [(r.status, r.error_code) for r in records] == [("ok", None), ("error", "internal_error"), ("ok", None)]

    score_audio = score.score_audio

    def fragile_batch(model_set, audios, preference=None):  # fails any batch holding the 1.3 s clip
        if any(abs(a.duration_s - 1.3) < 0.01 for a in audios):
            raise RuntimeError("a bug in one clip")
        return score_audio(model_set, audios, preference)

    monkeypatch.setattr(grade, "to_record", to_record)
    monkeypatch.setattr(score, "score_audio", fragile_batch)
    records = grade.grade_objects(_local_refs(paths), None, ModelStore(), Settings())
    assert [(r.status, r.error_code) for r in records] == [("ok", None), ("error", "internal_error"), ("ok", None)]


def test_a_fifo_or_a_directory_named_wav_is_not_a_regular_file_and_never_hangs(tmp_path):
    fifo, folder, good = tmp_path / "fifo.wav", tmp_path / "dir.wav", tmp_path / "good.wav"
    os.mkfifo(fifo)
    folder.mkdir()
    good.write_bytes(clip(2))
    link = tmp_path / "link.wav"
    link.symlink_to(good)  # a normal symlink is still followed
    out: list = []
    worker = threading.Thread(target=lambda: out.extend(
        grade.grade_objects(_local_refs([fifo, folder, good, link]), None, ModelStore(), Settings())), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # unblock the reader so the test process can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("a FIFO input blocked the batch")
    assert [(r.status, r.error_code) for r in out[:2]] == [("error", "not_found")] * 2
    assert all(r.error_message.endswith("not a regular file") for r in out[:2])
    assert [r.status for r in out[2:]] == ["ok", "ok"]
