"""The nightly sweep, its compaction step and the Distributed Map batch handler, against the embedded S3 server."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from handler_env import configure_handlers

from handlers import fleet_sweep, score_upload, sweep_batch
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.local.synth import SAMPLE_RATE, synthesize_clip
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.records import GRADES, record_id
from signalcraft_core.pipeline.serverless import SWEEP_CHUNK_BATCHES, SWEEP_CHUNK_BYTES
from signalcraft_core.pipeline.sinks import read_grades

DAY = "2024-05-06"
#: Records are filed under the day of the object\'s LastModified (uploaded during the test), never an event\'s date.
TODAY = dt.datetime.now(dt.timezone.utc).date().isoformat()


@pytest.fixture(scope="module")
def clips() -> list[bytes]:
    """A few distinct 1 s clips (one length: each batch is scored in one go); the fleet is copies of them."""
    rng = np.random.default_rng(5)
    return [encode_wav(synthesize_clip("pump", None, rng, 1.0), SAMPLE_RATE) for _ in range(4)]


class Env:
    def __init__(self, s3, recordings: str, grades: str) -> None:
        self.s3, self.recordings, self.grades = s3, recordings, grades

    def put_many(self, objects: dict[str, bytes]) -> dict[str, str]:
        """Upload in parallel; key -> ETag."""
        def put(item):
            key, data = item
            return key, self.s3.put_object(Bucket=self.recordings, Key=key, Body=data)["ETag"].strip('"')

        with ThreadPoolExecutor(8) as pool:
            return dict(pool.map(put, objects.items()))

    def parquet_keys(self, prefix: str = "grades/") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.grades, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def table(self, dedupe: bool = True):
        return read_grades(f"s3://{self.grades}/grades/", self.s3, dedupe=dedupe)


@pytest.fixture
def env(s3_server, s3, make_bucket, monkeypatch):
    recordings, grades = make_bucket(), make_bucket()
    configure_handlers(monkeypatch, s3_server.endpoint_url, grades)
    yield Env(s3, recordings, grades)
    runtime.reset()


class ShortOnTime:
    """A Lambda context with less than the sweep's safety margin left."""

    aws_request_id = "short-on-time"

    def get_remaining_time_in_millis(self) -> int:
        return 1_000


def _sorted_rows(table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["record_id"])


# --------------------------------------------------------------------------- fleet sweep


def test_sweep_of_200_objects_writes_200_records_in_batches_then_compacts(env, clips, monkeypatch):
    batch_size = 16
    monkeypatch.setenv("BATCH_SIZE", str(batch_size))
    runtime.reset()
    good = {f"fleet/pump/id_0{i % 4}/clip-{i:04d}.wav": clips[i % len(clips)] for i in range(197)}
    broken = {
        "fleet/pump/id_00/field notes.wav": b"this is a text file with a .wav name\n",
        "fleet/pump/id_01/cut-off.wav": clips[0][:30],
        "fleet/pump/id_02/blip.wav": encode_wav(np.zeros(800, dtype=np.float32) + 0.1, SAMPLE_RATE),
    }
    etags = env.put_many({**good, **broken, "fleet/pump/id_00/readme.txt": b"not a recording"})
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()

    # a few uploads were graded on arrival today: their per-upload files are what compaction merges
    arrived = sorted(good)[:3]
    for key in arrived:
        event = generate_event("s3-put", env.recordings, key, size=len(good[key]), etag=etags[key], date=today)
        assert score_upload.handler(event)["records"] == 1
    upload_files = env.parquet_keys()
    assert len(upload_files) == 3

    # backfill: everything again (an incremental sweep would skip the three graded on arrival)
    result = fleet_sweep.handler({"bucket": env.recordings, "prefix": "fleet/", "mode": "backfill"})

    assert result["records"] == 200 and result["complete"] is True and result["resume_after"] is None
    assert sum(result["grades"].values()) == 197 and set(result["grades"]) <= set(GRADES)
    assert result["errors"] == {"not_wav": 1, "truncated": 1, "too_short": 1}
    assert result["parquet_files"] == math.ceil(200 / (SWEEP_CHUNK_BATCHES * batch_size))   # one file per chunk
    compaction = result["compaction"]
    assert compaction["partitions"] == 1 and len(compaction["written"]) == 1
    assert compaction["files_in"] == result["parquet_files"] + len(upload_files)
    assert compaction["rows_in"] == 200 + 3 and compaction["rows_out"] == 200

    # after compaction: one file for the day's partition, one row per recording, the right ids
    (only,) = env.parquet_keys()
    assert only == compaction["written"][0] and only.startswith(f"grades/dt={today}/machine_type=pump/compacted-")
    raw = env.table(dedupe=False)
    assert raw.num_rows == 200
    expected = {record_id(env.recordings, k, etags[k]) for k in {**good, **broken}}
    assert set(raw.column("record_id").to_pylist()) == expected
    rows = raw.to_pylist()
    assert Counter(r["grade"] for r in rows if r["status"] == "ok") == Counter(result["grades"])
    assert Counter(r["error_code"] for r in rows if r["status"] == "error") == Counter(result["errors"])
    assert all(r["etag"] == etags[r["key"]] and r["machine_type"] == "pump" for r in rows)


def test_compaction_step_keeps_exactly_the_same_records(env, clips):
    keys = [f"site-a/pump/id_0{i}/rec.wav" for i in range(6)]
    etags = env.put_many({k: clips[i % len(clips)] for i, k in enumerate(keys)})
    for key in keys[:3]:  # per-upload files
        score_upload.handler(generate_event("s3-put", env.recordings, key, size=1, etag=etags[key], date=DAY))
    items = [generate_event("map-batch", env.recordings, k, etag=etags[k], date=DAY)["Items"][0] for k in keys[2:]]
    sweep_batch.handler({"Items": items, "BatchInput": {"bucket": env.recordings}})  # keys[2] graded twice
    files_before = env.parquet_keys()
    assert len(files_before) == 4 and all(f"/dt={TODAY}/" in k for k in files_before)
    before = env.table()
    assert before.num_rows == 6 and env.table(dedupe=False).num_rows == 7

    result = fleet_sweep.handler({"action": "compact", "date": TODAY})

    assert result["date"] == TODAY and result["files_in"] == 4 and result["rows_in"] == 7 and result["rows_out"] == 6
    assert env.parquet_keys() == list(result["written"])
    assert _sorted_rows(env.table()) == _sorted_rows(before)
    assert env.table(dedupe=False).num_rows == 6
    again = fleet_sweep.handler({"action": "compact", "date": TODAY})  # nothing left to merge
    assert again["files_in"] == 0 and env.parquet_keys() == list(result["written"])


def test_sweep_out_of_time_says_where_to_resume_and_the_rest_completes(env, clips, monkeypatch):
    monkeypatch.setenv("BATCH_SIZE", "1")
    runtime.reset()
    chunk = SWEEP_CHUNK_BATCHES   # refs per grading call: SWEEP_CHUNK_BATCHES batches of one
    keys = [f"site-a/fan/id_00/{i:02d}.wav" for i in range(chunk + 1)]
    env.put_many({k: clips[0] for k in keys})
    first = fleet_sweep.handler({"bucket": env.recordings, "prefix": "site-a/"}, ShortOnTime())
    assert first["complete"] is False and first["resume_after"] == keys[chunk - 1] and first["records"] == chunk
    assert "compaction" not in first
    rest = fleet_sweep.handler({"bucket": env.recordings, "prefix": "site-a/", "start_after": first["resume_after"]})
    assert rest["complete"] is True and rest["records"] == 1 and "compaction" in rest
    assert sorted(env.table().column("key").to_pylist()) == keys


def test_sweep_chunks_end_at_the_byte_cap(env, clips, monkeypatch):
    """Long recordings make short chunks: a chunk ends once its objects reach SWEEP_CHUNK_BYTES."""
    from signalcraft_core.pipeline import serverless

    runtime.reset()
    keys = [f"site-a/fan/id_00/{i:02d}.wav" for i in range(3)]
    env.put_many({k: clips[0] for k in keys})
    assert 3 * len(clips[0]) < SWEEP_CHUNK_BYTES    # by count alone all three would be one chunk
    monkeypatch.setattr(serverless, "SWEEP_CHUNK_BYTES", 2 * len(clips[0]))
    result = fleet_sweep.handler({"bucket": env.recordings, "prefix": "site-a/", "mode": "backfill"})
    assert result["records"] == 3 and result["parquet_files"] == 2   # two objects, then the last one
    first = fleet_sweep.handler({"bucket": env.recordings, "prefix": "site-a/", "mode": "backfill"}, ShortOnTime())
    assert first["resume_after"] == keys[1] and first["records"] == 2


def test_scheduled_event_sweeps_the_configured_bucket(env, clips, monkeypatch):
    monkeypatch.setenv("SWEEP_BUCKET", env.recordings)
    monkeypatch.setenv("SWEEP_PREFIX", "site-b/")
    runtime.reset()
    env.put_many({"site-b/valve/id_00/a.wav": clips[1], "site-c/valve/id_00/b.wav": clips[1]})
    event = {"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": f"{DAY}T02:00:00Z", "region": "us-east-1", "resources": [],
             "detail": {}}
    result = fleet_sweep.handler(event)
    assert (result["bucket"], result["prefix"], result["records"]) == (env.recordings, "site-b/", 1)
    assert env.table().column("key").to_pylist() == ["site-b/valve/id_00/a.wav"]


def test_sweep_of_a_bucket_that_does_not_exist_raises(env):
    from signalcraft_core.errors import StorageError

    with pytest.raises(StorageError, match="sc-test-missing-recordings"):
        fleet_sweep.handler({"bucket": "sc-test-missing-recordings", "prefix": ""})


# --------------------------------------------------------------------------- Distributed Map batch


def test_map_batch_grades_its_items_into_one_file(env, clips):
    keys = [f"site-a/slider/id_0{i}/take {i}.wav" for i in range(3)]
    etags = env.put_many({k: clips[i] for i, k in enumerate(keys)})
    items = [generate_event("map-batch", env.recordings, k, size=len(clips[i]), etag=etags[k], date=DAY)["Items"][0]
             for i, k in enumerate(keys)]
    items.append({"Key": "site-a/slider/id_00/notes.txt", "Size": 3, "Etag": '"x"', "LastModified": 0})
    event = {"Items": items, "BatchInput": {"bucket": env.recordings, "prefix": "site-a/", "date": DAY}}

    result = sweep_batch.handler(event)

    assert result["records"] == 3 and result["skipped"] == 1 and result["errors"] == {}
    assert len(result["written"]) == 1 and f"grades/dt={TODAY}/machine_type=slider/" in result["written"][0]
    rows = _sorted_rows(env.table(dedupe=False))
    assert sorted(r["key"] for r in rows) == sorted(keys)
    assert all(r["status"] == "ok" and r["etag"] == etags[r["key"]] and r["event_time"].date().isoformat() == TODAY
               for r in rows)
    assert sweep_batch.handler(event)["written"] == result["written"]  # a retried child overwrites its file
    assert env.table(dedupe=False).num_rows == 3
