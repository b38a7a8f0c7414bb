"""Why: at-least-once delivery and concurrent functions must never duplicate, lose or tear a record.

S3, SQS and EventBridge deliver events at least once; Lambda runs invocations concurrently. The same
event three times gives one record and one Parquet object; the same object through every front door
gives one record id; 20 concurrent invocations over 200 objects (overlapping subsets, every event
shape) leave exactly 200 intact records, before and after compaction.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from handler_env import configure_handlers

from handlers import fleet_sweep, score_upload, sweep_batch
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.io.objects import list_keys
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.records import (
    FILE_SCHEMA,
    GRADES,
    read_parquet_bytes,
    validate_table,
)
from signalcraft_core.pipeline.sinks import read_grades

DAY = "2024-05-09"
#: Records are filed under the day of the object\'s LastModified (uploaded during the test), never an event\'s date.
TODAY = dt.datetime.now(dt.timezone.utc).date().isoformat()
MACHINES = ("pump", "fan", "slider", "valve")


def clip(seed: int, seconds: float = 1.1, rate: int = 8000) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = sum(0.2 / k * np.sin(2 * np.pi * (90 + seed % 11 * 10) * k * t) for k in range(1, 4))
    return encode_wav(x + 0.05 * rng.standard_normal(len(t)), rate)


def payload(i: int) -> bytes:
    """Mostly gradeable clips; every 4th object is a broken one (its error record must be just as unique)."""
    kind = i % 8
    if kind == 3:
        return b"not a wav at all " * (i % 5 + 1)
    if kind == 7:
        return clip(i)[: 44 + i % 100]  # truncated
    return clip(i)


@dataclass
class Env:
    s3: object
    recordings: str
    grades: str
    etags: dict

    def put(self, key: str, data: bytes) -> None:
        self.etags[key] = self.s3.put_object(Bucket=self.recordings, Key=key, Body=data)["ETag"].strip('"')

    def event(self, kind: str, key: str) -> dict:
        size = self.s3.head_object(Bucket=self.recordings, Key=key)["ContentLength"]
        return generate_event(kind, self.recordings, key, size=size, etag=self.etags[key], date=DAY)

    def parquet_keys(self) -> list[str]:
        return [i.key for i in list_keys(self.s3, self.grades, "grades/", (".parquet",))]

    def table(self, dedupe: bool = True) -> pa.Table:
        return read_grades(f"s3://{self.grades}/grades/", self.s3, dedupe=dedupe)


@pytest.fixture
def env(s3_server, s3, make_bucket, monkeypatch):
    recordings, grades = make_bucket(), make_bucket()
    configure_handlers(monkeypatch, s3_server.endpoint_url, grades, log_level="CRITICAL")
    yield Env(s3, recordings, grades, {})
    runtime.reset()


def invoke(kind: str, event: dict) -> dict:
    return (sweep_batch.handler if kind == "map-batch" else score_upload.handler)(event)


# ---------------------------------------------------------------------------------------------- redelivery


@pytest.mark.parametrize("kind", ["s3-put", "sqs", "eventbridge", "minio", "map-batch"])
def test_same_event_three_times_is_one_record_and_one_object(env, kind):
    key = "site-a/pump/id_00/00000042.wav"
    env.put(key, clip(42))
    event = env.event(kind, key)
    results = [invoke(kind, json.loads(json.dumps(event))) for _ in range(3)]
    assert all(r["records"] == 1 for r in results), results
    assert len(env.parquet_keys()) == 1, env.parquet_keys()
    raw = env.table(dedupe=False)
    assert raw.num_rows == 1 and raw.column("key").to_pylist() == [key]
    assert results[0]["written"] == results[2]["written"]


def test_three_copies_in_one_sqs_batch_are_one_record(env):
    key = "site-a/fan/id_01/00000007.wav"
    env.put(key, clip(7))
    message = env.event("sqs", key)["Records"][0]
    batch = {"Records": [{**message, "messageId": f"copy-{i}"} for i in range(3)]}
    result = score_upload.handler(batch)
    assert result["batchItemFailures"] == [] and result["records"] == 3  # graded three times ...
    assert len(env.parquet_keys()) == 1 and env.table(dedupe=False).num_rows == 1  # ... stored once


def test_same_object_through_every_door_has_one_record_id(env):
    """Upload events of every shape, a map batch and the nightly sweep: one record id, one row read back."""
    key = "site-b/valve/id_00/00000003.wav"
    env.put(key, clip(3))
    for kind in ("s3-put", "sqs", "eventbridge", "minio", "map-batch"):
        event = env.event(kind, key)
        if kind == "map-batch":  # backfill: grade it again although it has a record
            event["BatchInput"] = {**event.get("BatchInput", {}), "mode": "backfill"}
        assert invoke(kind, event)["records"] == 1
    sweep = fleet_sweep.handler({"bucket": env.recordings, "prefix": "site-b/", "mode": "backfill"})
    assert sweep["records"] == 1
    assert fleet_sweep.handler({"bucket": env.recordings, "prefix": "site-b/"})["already_graded"] == 1
    raw = env.table(dedupe=False)
    # every door files it under the object's LastModified with the same id: one file, one row, even unread
    assert raw.num_rows == 1 and len(env.parquet_keys()) == 1
    assert env.table().num_rows == 1


# ---------------------------------------------------------------------------------------------- concurrency


N_OBJECTS = 200
N_INVOCATIONS = 20


def index(key: str) -> int:
    return int(key[-12:-4])  # keys end in "/NNNNNNNN.wav"


def _event_for(kind: str, env: Env, keys: list[str], tag: str) -> dict:
    """One invocation's event naming `keys`, in the shape `kind`."""
    if kind == "map-batch":
        items = [{"Key": k, "Size": len(payload(index(k))), "ETag": f'"{env.etags[k]}"',
                  "LastModified": f"{DAY}T06:00:00Z"} for k in keys]
        return {"Items": items, "BatchInput": {"bucket": env.recordings}}
    records = [generate_event("s3-put", env.recordings, k, size=len(payload(index(k))), etag=env.etags[k],
                              date=DAY)["Records"][0] for k in keys]
    if kind == "sqs":
        return {"Records": [{"messageId": f"{tag}-{i}", "receiptHandle": "h", "eventSource": "aws:sqs",
                             "body": json.dumps({"Records": [r]}), "attributes": {}, "messageAttributes": {}}
                            for i, r in enumerate(records)]}
    return {"Records": records}  # one notification with many records


def test_twenty_concurrent_invocations_over_200_objects_leave_200_intact_records(env):
    keys = [f"site-{i % 3}/{MACHINES[i % 4]}/id_0{i % 2}/{i:08d}.wav" for i in range(N_OBJECTS)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: env.put(k, payload(index(k))), keys))
    rng = random.Random(9)
    shuffled = rng.sample(keys, len(keys))
    share = N_OBJECTS // N_INVOCATIONS
    plans = []
    for n in range(N_INVOCATIONS):
        own = shuffled[n * share:(n + 1) * share]
        neighbour = (n + 1) % N_INVOCATIONS
        overlap = rng.sample(shuffled[neighbour * share:(neighbour + 1) * share], 4)  # also graded next door
        dupes = own[:1]  # the same object twice within one invocation, too
        kind = ("s3-put", "sqs", "map-batch")[n % 3]
        plans.append((kind, _event_for(kind, env, own + overlap + dupes, f"inv{n}")))
    runtime.get_runtime().store.get("pump")  # one cold start before the crowd (Lambda: one per container)

    barrier = threading.Barrier(N_INVOCATIONS)

    def run(plan: tuple[str, dict]) -> dict:
        kind, event = plan
        barrier.wait(timeout=60)
        return invoke(kind, event)

    with ThreadPoolExecutor(N_INVOCATIONS) as pool:
        results = list(pool.map(run, plans))
    graded = sum(r["records"] for r in results)
    assert graded == N_OBJECTS + N_INVOCATIONS * 5  # every delivery graded, none dropped
    assert all(not r.get("batchItemFailures") for r in results), [r.get("batchItemFailures") for r in results]

    def check(table: pa.Table, label: str) -> None:
        validate_table(table)
        assert table.num_rows == N_OBJECTS, f"{label}: {table.num_rows} rows"
        rows = table.to_pylist()
        assert Counter(r["key"] for r in rows) == Counter(keys), label
        for r in rows:
            assert r["etag"] == env.etags[r["key"]] and r["bucket"] == env.recordings
            i = index(r["key"])
            if i % 8 in (3, 7):
                assert r["status"] == "error" and r["error_code"] in ("not_wav", "truncated"), r
            else:
                assert r["status"] == "ok" and r["grade"] in GRADES and 0 <= r["score"] <= 100, r

    files = env.parquet_keys()
    for name in files:  # every object intact on its own: readable, exactly the schema
        table = read_parquet_bytes(env.s3.get_object(Bucket=env.grades, Key=name)["Body"].read())
        assert table.schema.equals(FILE_SCHEMA, check_metadata=False), name
        table.validate(full=True)
    check(env.table(), "read back, deduped")
    raw = env.table(dedupe=False)
    assert raw.num_rows > N_OBJECTS  # map batches that overlapped hold some records twice ...
    fleet_sweep.handler({"action": "compact", "date": TODAY})
    assert len(env.parquet_keys()) == len(MACHINES)  # one compacted file per partition
    check(env.table(dedupe=False), "after compaction, raw")  # ... compaction leaves each once
    print(f"\nconcurrency: {N_INVOCATIONS} invocations, {graded} gradings of {N_OBJECTS} objects -> "
          f"{len(files)} Parquet objects, {raw.num_rows} raw rows -> {N_OBJECTS} records; lost 0, duplicated 0")
