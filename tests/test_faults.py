"""Why: "nothing lost" when the object store misbehaves - retries absorb transient faults, the rest is never silent.

The handlers talk to the loopback S3 server through tests/faultproxy.py, which injects 500 InternalError,
503 SlowDown, connection resets, cut-short and trickling bodies. botocore's standard retries (with
backoff) must absorb transient faults; when retries run out the upload handler raises (Lambda retries,
then the on-failure queue) or names the SQS message in batchItemFailures, and the sweep writes
storage_error records and carries on; a re-run fills them in. Each test counts the faults it injected
and the records lost (always 0) and prints both (run with -s to see them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import quote_plus

import numpy as np
import pytest
from faultproxy import Fault, FaultProxy
from handler_env import configure_handlers

from handlers import fleet_sweep, score_upload, sweep_batch
from signalcraft_core.errors import ErrorCode, StorageError
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.io.objects import get_bytes, head, list_keys, put_bytes, s3_client
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.sinks import read_grades

DAY = "2024-05-08"
#: storage.s3_client sets botocore's standard-mode `max_attempts` = 5 retries, i.e. 6 requests per call.
MAX_ATTEMPTS = 1 + 5


def clip(seed: int, seconds: float = 1.2, rate: int = 8000) -> bytes:
    """A tiny machine-like recording (hum + noise) that grades ok."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = sum(0.2 / k * np.sin(2 * np.pi * (100 + seed % 7 * 10) * k * t) for k in range(1, 4))
    return encode_wav(x + 0.05 * rng.standard_normal(len(t)), rate)


@dataclass
class Stack:
    s3: object  # direct client (test setup and read-back, never faulted)
    proxy: FaultProxy
    recordings: str
    grades: str
    etags: dict

    def upload(self, n: int, prefix: str = "site-a/pump/id_00/") -> list[str]:
        keys = [f"{prefix}{i:03d} rec.wav" for i in range(n)]
        for i, key in enumerate(keys):
            self.etags[key] = self.s3.put_object(Bucket=self.recordings, Key=key, Body=clip(i))["ETag"].strip('"')
        return keys

    def rows(self) -> list[dict]:
        return read_grades(f"s3://{self.grades}/grades/", self.s3).to_pylist()

    def parquet_keys(self) -> list[str]:
        return [i.key for i in list_keys(self.s3, self.grades, "grades/", (".parquet",))]

    def lost(self, keys: list[str]) -> int:
        """Objects without exactly one ok record."""
        ok = [r["key"] for r in self.rows() if r["status"] == "ok"]
        return sum(1 for k in keys if ok.count(k) != 1)

    def report(self, label: str, keys: list[str]) -> tuple[int, int]:
        faults, lost = self.proxy.faults_injected, self.lost(keys)
        print(f"\n[{label}] objects={len(keys)} requests={self.proxy.requests} faults injected={faults} "
              f"{dict(self.proxy.fault_counts())} records lost={lost}")
        return faults, lost


@pytest.fixture
def stack(s3_server, make_bucket, monkeypatch):
    """Handler environment with the S3 endpoint behind a fresh fault proxy (fresh client, fresh retry quota)."""
    s3 = s3_client(endpoint_url=s3_server.endpoint_url)
    recordings, grades = make_bucket(), make_bucket()
    with FaultProxy(s3_server.endpoint_url, seed=6) as proxy:
        configure_handlers(monkeypatch, proxy.url, grades, log_level="CRITICAL")
        try:
            yield Stack(s3, proxy, recordings, grades, {})
        finally:
            runtime.reset()


def put_event(stack: Stack, key: str, size: bool = True) -> dict:
    obj = {"key": quote_plus(key), "eTag": stack.etags[key]}
    if size:
        obj["size"] = len(clip(0))
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                         "eventTime": f"{DAY}T08:00:00.000Z", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": stack.recordings}, "object": obj}}]}


def sqs_batch(stack: Stack, keys: list[str], tag: str = "m") -> dict:
    return {"Records": [{"messageId": f"{tag}-{i}", "receiptHandle": "h", "eventSource": "aws:sqs",
                         "body": json.dumps(put_event(stack, key)), "attributes": {}, "messageAttributes": {}}
                        for i, key in enumerate(keys)]}


def key_path(stack: Stack, key: str) -> str:
    """The proxy's view of an object's path, as a regex."""
    import re

    return "^" + re.escape(f"/{stack.recordings}/{key}") + "$"


# ------------------------------------------------------------------------------ the proxy itself


def test_proxy_is_transparent_and_counts(stack):
    """No plan: every S3 call behaves as without the proxy (HEAD sizes, odd keys, listings, deletes)."""
    client = s3_client(endpoint_url=stack.proxy.url)
    key = "site-ä/pump/id 00/a+b %2F.wav"
    data = clip(1)
    assert put_bytes(client, stack.recordings, key, data) == stack.s3.head_object(
        Bucket=stack.recordings, Key=key)["ETag"].strip('"')
    assert get_bytes(client, stack.recordings, key) == data
    assert head(client, stack.recordings, key).size == len(data)
    assert [i.key for i in list_keys(client, stack.recordings, "site-ä/")] == [key]
    client.delete_object(Bucket=stack.recordings, Key=key)
    assert stack.proxy.count() == 5 and stack.proxy.faults_injected == 0
    assert stack.proxy.count("GET", path=key_path(stack, key)) == 1
    assert stack.proxy.count("HEAD") == 1 and stack.proxy.count("DELETE") == 1


def test_fault_plan_filters_times_rate_and_per_target(stack):
    proxy = stack.proxy
    client = s3_client(endpoint_url=proxy.url)
    put_bytes(client, stack.recordings, "k.wav", b"x")
    only_head = proxy.add(Fault.internal_error(method="HEAD", times=2))
    head(client, stack.recordings, "k.wav")  # two 500s, then through
    assert only_head.injected == 2 and proxy.count("HEAD") == 3 and proxy.count("HEAD", faulted=True) == 2
    other_key = proxy.add(Fault.internal_error(path="/nothing-here$"))
    assert get_bytes(client, stack.recordings, "k.wav") == b"x" and other_key.injected == 0
    proxy.clear()
    capped = proxy.add(Fault.internal_error(method="GET", rate=1.0, per_target=3))
    assert get_bytes(client, stack.recordings, "k.wav") == b"x"
    assert capped.injected == 3
    with pytest.raises(ValueError):
        Fault(kind="explode")


# ------------------------------------------------------------------------------ retries absorb transient faults


def test_storage_reads_and_writes_retry_with_backoff(stack):
    """Each call below meets faults first and still succeeds; the proxy saw every retry."""
    proxy = stack.proxy
    client = s3_client(endpoint_url=proxy.url)
    data = clip(2)
    proxy.add(Fault.slow_down(method="PUT", times=2))
    started = time.monotonic()
    put_bytes(client, stack.recordings, "w.wav", data)
    assert proxy.count("PUT") == 3
    puts = proxy.select("PUT")
    assert all(b.at > a.at for a, b in zip(puts, puts[1:]))  # retried in order, after a back-off
    assert stack.s3.get_object(Bucket=stack.recordings, Key="w.wav")["Body"].read() == data

    proxy.add(Fault.internal_error(method="GET", times=2), Fault.reset(method="GET", times=1))
    assert get_bytes(client, stack.recordings, "w.wav") == data
    assert proxy.count("GET") == 4
    proxy.add(Fault.truncate(method="GET", times=1))  # body cut mid-stream: storage re-reads once
    assert get_bytes(client, stack.recordings, "w.wav") == data
    proxy.add(Fault.trickle(method="GET", times=1, chunk=2048, delay=0.002))  # slow, but steady
    assert get_bytes(client, stack.recordings, "w.wav") == data
    proxy.add(Fault.reset(method="PUT", times=1, forward=True))  # the write landed, the answer did not
    put_bytes(client, stack.recordings, "w2.wav", data)
    assert stack.s3.get_object(Bucket=stack.recordings, Key="w2.wav")["Body"].read() == data
    proxy.add(Fault.internal_error(query="list-type=2", times=2))
    assert [i.key for i in list_keys(client, stack.recordings, "")] == ["w.wav", "w2.wav"]
    counts = proxy.fault_counts()
    assert counts == {"error:503": 2, "error:500": 4, "reset": 2, "truncate": 1, "trickle": 1}, counts
    print(f"\n[storage] faults injected={sum(counts.values())} {dict(counts)} in {time.monotonic() - started:.1f} s,"
          " every call succeeded")


def test_upload_handler_under_transient_faults_loses_nothing(stack):
    """A stream of SQS batches while ~40 % of GET/HEAD/PUT requests fail (500s, resets, cut bodies)."""
    keys = stack.upload(24)
    proxy = stack.proxy
    proxy.add(
        Fault.internal_error(method="GET", rate=0.4, per_target=2),
        Fault.reset(method="PUT", rate=0.3, per_target=1, forward=True),
        Fault.internal_error(method="PUT", rate=0.3, per_target=1),
        Fault.truncate(method="GET", rate=0.2, per_target=1),
        Fault.slow_down(method="GET", times=2),
    )
    failures = []
    for start in range(0, len(keys), 8):
        result = score_upload.handler(sqs_batch(stack, keys[start:start + 8], tag=f"b{start}"))
        failures += result["batchItemFailures"]
        assert result["records"] == len(keys[start:start + 8]) and result["errors"] == {}, result
    # events without a size: HEAD first, faulted too
    proxy.add(Fault.internal_error(method="HEAD", times=3))
    result = score_upload.handler(put_event(stack, keys[0], size=False))
    assert result["records"] == 1 and result["errors"] == {}
    faults, lost = stack.report("upload handler, transient faults", keys)
    assert failures == [] and faults >= 10 and lost == 0
    assert len(stack.parquet_keys()) == len(keys)  # a retried write overwrote itself, never duplicated


def test_sweep_and_map_batch_under_transient_faults_lose_nothing(stack):
    keys = stack.upload(20, prefix="site-b/fan/id_01/")
    proxy = stack.proxy
    proxy.add(
        Fault.internal_error(query="list-type=2", times=1),
        Fault.internal_error(method="GET", rate=0.5, per_target=2),
        Fault.reset(method="PUT", times=2),
    )
    result = fleet_sweep.handler({"bucket": stack.recordings, "prefix": "site-b/", "date": DAY})
    assert result["records"] == 20 and result["errors"] == {} and result["complete"], result
    items = [{"Key": k, "Size": len(clip(0)), "ETag": f'"{stack.etags[k]}"'} for k in keys[:6]]
    result = sweep_batch.handler({"Items": items, "BatchInput": {"bucket": stack.recordings}})
    assert result["records"] == 6 and result["errors"] == {}, result
    faults, lost = stack.report("sweep + map batch, transient faults", keys)
    assert faults >= 5 and lost == 0


# ------------------------------------------------------------------------------ when retries run out


def test_upload_handler_raises_when_reads_keep_failing_and_the_retry_completes(stack):
    """Direct invocation: the GET fails MAX_ATTEMPTS times -> the handler raises, Lambda's retry grades it."""
    (key,) = stack.upload(1)
    proxy = stack.proxy
    proxy.add(Fault.internal_error(method="GET"))
    with pytest.raises(StorageError) as info:
        score_upload.handler(put_event(stack, key))
    assert info.value.code is ErrorCode.STORAGE_ERROR and "InternalError" in info.value.message
    assert proxy.count("GET", path=key_path(stack, key)) == MAX_ATTEMPTS  # botocore retried, then gave up
    assert stack.parquet_keys() == []  # nothing final was written for it: not a silent drop either
    proxy.clear()
    result = score_upload.handler(put_event(stack, key))  # Lambda's automatic retry
    assert result["records"] == 1 and result["errors"] == {}
    faults, lost = stack.report("upload handler, GET outage then retry", [key])
    assert faults == MAX_ATTEMPTS and lost == 0


def test_upload_handler_raises_when_the_record_cannot_be_written(stack):
    (key,) = stack.upload(1)
    stack.proxy.add(Fault.reset(method="PUT"))
    with pytest.raises(StorageError) as info:
        score_upload.handler(put_event(stack, key))
    assert info.value.code is ErrorCode.STORAGE_ERROR and f"PUT s3://{stack.grades}/grades/" in info.value.message
    assert stack.proxy.count("PUT") == MAX_ATTEMPTS and stack.parquet_keys() == []
    stack.proxy.clear()
    assert score_upload.handler(put_event(stack, key))["records"] == 1
    faults, lost = stack.report("upload handler, PUT outage then retry", [key])
    assert faults == MAX_ATTEMPTS and lost == 0


def test_sqs_batch_names_exactly_the_failed_messages(stack):
    keys = stack.upload(5)
    dead = [keys[1], keys[3]]
    for key in dead:
        stack.proxy.add(Fault.internal_error(method="GET", path=key_path(stack, key)))
    result = score_upload.handler(sqs_batch(stack, keys))
    assert result["batchItemFailures"] == [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-3"}]
    assert result["records"] == 3 and result["errors"] == {}  # storage errors are not final records
    assert sorted(r["key"] for r in stack.rows()) == sorted(set(keys) - set(dead))
    stack.proxy.clear()
    redelivered = score_upload.handler(sqs_batch(stack, dead, tag="again"))  # SQS redelivers those two
    assert redelivered["batchItemFailures"] == [] and redelivered["records"] == 2
    faults, lost = stack.report("SQS partial batch failure", keys)
    assert faults == 2 * MAX_ATTEMPTS and lost == 0


def test_sweep_records_storage_errors_carries_on_and_a_rerun_fills_them_in(stack):
    keys = stack.upload(16, prefix="site-c/valve/id_00/")
    dead = keys[2::5]
    for key in dead:
        stack.proxy.add(Fault.internal_error(method="GET", path=key_path(stack, key)))
    stack.proxy.add(Fault.internal_error(method="GET", rate=0.3, per_target=1))  # and noise on the rest
    first = fleet_sweep.handler({"bucket": stack.recordings, "prefix": "site-c/", "date": DAY})
    assert first["records"] == 16 and first["errors"] == {"storage_error": len(dead)}, first
    errors = {r["key"]: r for r in stack.rows() if r["status"] == "error"}
    assert sorted(errors) == sorted(dead)
    assert all(r["error_code"] == "storage_error" and "InternalError" in r["error_message"] for r in errors.values())
    assert stack.lost(keys) == len(dead)

    stack.proxy.clear()
    second = fleet_sweep.handler({"bucket": stack.recordings, "prefix": "site-c/", "date": DAY})
    # incremental: only the recordings whose last record is a transient error are graded again
    assert second["errors"] == {} and second["records"] == len(dead) and second["already_graded"] == 16 - len(dead)
    rows = stack.rows()
    assert sorted(r["key"] for r in rows) == sorted(keys) and {r["status"] for r in rows} == {"ok"}
    faults, lost = stack.report("sweep, 3 objects unreadable, then re-run", keys)
    assert faults >= len(dead) * MAX_ATTEMPTS and lost == 0


def test_sweep_raises_when_it_cannot_write_and_a_rerun_completes(stack):
    keys = stack.upload(6, prefix="site-d/slider/id_00/")
    stack.proxy.add(Fault.internal_error(method="PUT", path=f"^/{stack.grades}/"))
    with pytest.raises(StorageError):
        fleet_sweep.handler({"bucket": stack.recordings, "prefix": "site-d/", "date": DAY})
    assert stack.parquet_keys() == []
    stack.proxy.clear()
    assert fleet_sweep.handler({"bucket": stack.recordings, "prefix": "site-d/", "date": DAY})["records"] == 6
    faults, lost = stack.report("sweep, grades bucket unwritable, then re-run", keys)
    assert faults == MAX_ATTEMPTS and lost == 0


def test_sweep_raises_when_it_cannot_list(stack):
    stack.upload(2, prefix="site-e/pump/id_00/")
    stack.proxy.add(Fault.internal_error(query="list-type=2"))
    with pytest.raises(StorageError) as info:
        fleet_sweep.handler({"bucket": stack.recordings, "prefix": "site-e/", "date": DAY})
    assert info.value.code is ErrorCode.STORAGE_ERROR
    assert stack.proxy.count(query="list-type=2") == MAX_ATTEMPTS and stack.parquet_keys() == []
