"""Why: "nothing let in" - model files, object keys, our own output and our logs are attack surface.

A joblib file is code: a tampered artifact in an S3 model prefix must be refused by its SHA-256 before it
is unpickled (the planted pickle would create a marker file). The manifest location is fixed by
MODEL_URI, and neither a manifest nor an object key can make the handler write outside its cache.
Keys under our own output prefix are refused. Logs are JSON lines that carry the request id, and no
credential or presigned URL reaches logs, records, results or error messages.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import pytest
from faultproxy import Fault, FaultProxy
from handler_env import configure_handlers

from handlers import fleet_sweep, score_upload, sweep_batch
from signalcraft_core.errors import (
    ErrorCode,
    ModelError,
    SignalcraftError,
    StorageError,
)
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.io.objects import list_keys, s3_client
from signalcraft_core.logs import JsonFormatter
from signalcraft_core.models.manifest import sha256_bytes
from signalcraft_core.models.model_store import DEFAULT_MODEL_ROOT
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.sinks import read_grades

SECRET = "SENTINEL-secret-" + uuid.uuid4().hex  # what AWS_SECRET_ACCESS_KEY holds during these tests
ACCESS_KEY = "AKIASENTINEL" + uuid.uuid4().hex[:8].upper()
SIGNATURE = "5e1f" * 16
PRESIGNED = ("https://recordings.s3.amazonaws.com/site-a/pump/id_00/x.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
             f"&X-Amz-Date=20240101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}")
LEAKS = (SECRET, ACCESS_KEY, SIGNATURE, "X-Amz-Signature", "X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE")
DAY = "2024-05-10"
PART = re.compile(r"^grades/dt=\d{4}-\d{2}-\d{2}/machine_type=[A-Za-z0-9_][A-Za-z0-9_.-]*/"
                  r"(part|compacted)-[0-9a-f]{32}\.parquet$")


def clip(seed: int = 0, seconds: float = 1.2, rate: int = 8000) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    return encode_wav(0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(len(t)), rate)


class _Unpickled:
    """Unpickling this calls open(marker, "w"): the file appearing proves the pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Unpickled(marker))


@dataclass
class Context:
    """The parts of a Lambda context the handlers use."""

    aws_request_id: str

    def get_remaining_time_in_millis(self) -> int:
        return 600_000


@dataclass
class Sec:
    s3: object
    proxy: FaultProxy
    recordings: str
    grades: str
    models: str
    cache: Path
    etags: dict

    def put(self, key: str, data: bytes, bucket: str | None = None) -> str:
        etag = self.s3.put_object(Bucket=bucket or self.recordings, Key=key, Body=data)["ETag"].strip('"')
        self.etags[key] = etag
        return etag

    def event(self, key: str, bucket: str | None = None) -> dict:
        bucket = bucket or self.recordings
        size = self.s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                             "eventTime": f"{DAY}T09:00:00.000Z", "eventName": "ObjectCreated:Put",
                             "s3": {"bucket": {"name": bucket},
                                    "object": {"key": quote_plus(key), "size": size, "eTag": self.etags.get(key)}}}]}

    def publish(self, prefix: str, source: Path = DEFAULT_MODEL_ROOT / "default", replace: dict | None = None,
                manifest: dict | None = None) -> dict:
        """Upload a model set under s3://models/<prefix>/ (files replaced / manifest overridden on request)."""
        replace = replace or {}
        for path in source.iterdir():
            if path.is_file() and path.name != "manifest.json":
                self.s3.put_object(Bucket=self.models, Key=f"{prefix}/{path.name}",
                                   Body=replace.get(path.name, path.read_bytes()))
        doc = manifest or json.loads((source / "manifest.json").read_text())
        self.s3.put_object(Bucket=self.models, Key=f"{prefix}/manifest.json", Body=json.dumps(doc).encode())
        return doc

    def cold_start(self, monkeypatch, model_uri: str | None = None):
        if model_uri:
            monkeypatch.setenv("MODEL_URI", model_uri)
        runtime.reset()
        rt = runtime.get_runtime()
        rt.store.cache_dir = self.cache  # keep the model cache inside this test's folder
        return rt

    def parquet_keys(self) -> list[str]:
        return [i.key for i in list_keys(self.s3, self.grades, "", (".parquet",))]


@pytest.fixture
def sec(s3_server, make_bucket, monkeypatch, tmp_path):
    """Handler environment behind a (transparent until told) fault proxy, with recognisable credentials."""
    s3 = s3_client(endpoint_url=s3_server.endpoint_url)
    recordings, grades, models = make_bucket(), make_bucket(), make_bucket()
    with FaultProxy(s3_server.endpoint_url) as proxy:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        # A new endpoint means a new client built with these credentials.
        configure_handlers(monkeypatch, proxy.url, grades, log_level="INFO")
        try:
            yield Sec(s3, proxy, recordings, grades, models, tmp_path / "cache", {})
        finally:
            runtime.reset()


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


# ------------------------------------------------------------------------------------------ model artifacts


def test_the_planted_pickle_is_live(tmp_path):
    """Control: unpickling the payload does create its marker, so an absent marker below means 'not loaded'."""
    import joblib

    marker = tmp_path / "control-marker"
    (tmp_path / "level1.joblib").write_bytes(evil_pickle(marker))
    joblib.load(tmp_path / "level1.joblib")
    assert marker.exists()


def test_tampered_level1_in_s3_is_refused_before_unpickling(sec, monkeypatch, tmp_path):
    marker = tmp_path / "UNPICKLED"
    sec.publish("sets/default", replace={"level1.joblib": evil_pickle(marker)})  # manifest keeps the real hash
    sec.cold_start(monkeypatch, f"s3://{sec.models}/sets/")
    key = "site-a/pump/id_00/00000001.wav"
    sec.put(key, clip())
    with pytest.raises(ModelError) as info:
        score_upload.handler(sec.event(key), Context("req-tampered"))
    message = str(info.value)
    assert "level1" in message and "integrity" in message and "\n" not in message, message
    assert not marker.exists(), "the tampered pickle was unpickled"
    assert sec.proxy.count("GET", path=r"/sets/default/level1\.joblib$") >= 1  # it was fetched, then refused
    assert sec.parquet_keys() == []  # not a final record: Lambda retries, then the on-failure queue keeps it

    sqs = {"Records": [{"messageId": "m-1", "receiptHandle": "h", "eventSource": "aws:sqs",
                        "body": json.dumps(sec.event(key)), "attributes": {}, "messageAttributes": {}}]}
    assert score_upload.handler(sqs, Context("req-tampered-sqs"))["batchItemFailures"] == [{"itemIdentifier": "m-1"}]
    sweep = fleet_sweep.handler({"bucket": sec.recordings, "prefix": "site-a/", "date": DAY})
    assert sweep["errors"] == {"model_error": 1} and sweep["records"] == 1  # the sweep records it and goes on
    assert not marker.exists()

    sec.publish("sets/default")  # the real file is put back: the next invocation loads and grades
    sec.cold_start(monkeypatch)
    result = score_upload.handler(sec.event(key), Context("req-repaired"))
    assert result["records"] == 1 and result["errors"] == {}
    assert not marker.exists()


@pytest.mark.parametrize("path", ["../../{x}", "../../../../../../../../tmp/{x}", "/tmp/{x}", "sub/../../{x}",
                                  "..\\{x}", "./../{x}"])
def test_manifest_artifact_paths_cannot_leave_the_cache(sec, monkeypatch, tmp_path, path):
    name = f"escape-{uuid.uuid4().hex[:8]}"
    target = path.format(x=name)
    marker = tmp_path / "UNPICKLED"
    payload = evil_pickle(marker)
    doc = json.loads((DEFAULT_MODEL_ROOT / "default" / "manifest.json").read_text())
    doc["artifacts"]["level1"] = {"path": target, "sha256": sha256_bytes(payload), "bytes": len(payload)}
    sec.publish("sets/default", manifest=doc, replace={"level1.joblib": payload})
    sec.s3.put_object(Bucket=sec.models, Key=f"sets/default/{target}", Body=payload)  # S3 keys may say ".."
    sec.cold_start(monkeypatch, f"s3://{sec.models}/sets/")
    key = "site-a/fan/id_00/00000002.wav"
    sec.put(key, clip(2))
    with pytest.raises(ModelError) as info:
        score_upload.handler(sec.event(key), Context("req-path"))
    assert "unsafe path" in str(info.value)
    assert sec.proxy.count("GET", path=r"/sets/default/(?!manifest\.json$)") == 0  # refused before any download
    assert not marker.exists()
    assert not any(p.name == name for p in files_under(tmp_path)) and not Path("/tmp", name).exists()


def test_manifest_version_cannot_name_a_folder_outside_the_cache(sec, monkeypatch, tmp_path):
    """The cache folder is built from the manifest's version: '../..' there must not escape either."""
    name = f"escaped-{uuid.uuid4().hex[:8]}"
    doc = json.loads((DEFAULT_MODEL_ROOT / "default" / "manifest.json").read_text())
    doc["version"] = f"../../../{name}"
    sec.publish("sets/default", manifest=doc)
    sec.cache = tmp_path / "a" / "b" / "cache"
    sec.cold_start(monkeypatch, f"s3://{sec.models}/sets/")
    key = "site-a/fan/id_00/00000003.wav"
    sec.put(key, clip(3))
    with pytest.raises(ModelError):
        score_upload.handler(sec.event(key), Context("req-version"))
    outside = files_under(tmp_path) - files_under(sec.cache) - {tmp_path / "a", tmp_path / "a" / "b", sec.cache}
    assert not outside, f"written outside the cache: {sorted(map(str, outside))}"


def test_keys_cannot_choose_a_model_set_outside_model_uri(sec, monkeypatch, tmp_path):
    """A hash-consistent 'evil' set next to the configured prefix is never read, whatever the key says."""
    marker = tmp_path / "UNPICKLED"
    payload = evil_pickle(marker)
    evil = json.loads((DEFAULT_MODEL_ROOT / "pump" / "manifest.json").read_text())
    evil["artifacts"]["level1"]["sha256"] = sha256_bytes(payload)  # self-consistent: only its location is wrong
    sec.publish("evil/pump", source=DEFAULT_MODEL_ROOT / "pump", manifest=evil, replace={"level1.joblib": payload})
    sec.publish("sets/default")
    monkeypatch.setenv("KEY_PATTERN", r"^(?P<site>[^/]+)/(?P<machine_type>.+)/(?P<machine_id>[^/]+)/[^/]+$")
    rt = sec.cold_start(monkeypatch, f"s3://{sec.models}/sets/")
    keys = ["site-a/../evil/pump/id_00/1.wav", "site-a/../../evil/pump/id_00/2.wav", "site-a/pump/id_00/3.wav"]
    for key in keys:
        sec.put(key, clip(4))
        assert score_upload.handler(sec.event(key), Context("req-choose"))["records"] == 1
    rows = read_grades(f"s3://{sec.grades}/grades/", sec.s3).to_pylist()
    assert sorted(r["key"] for r in rows) == sorted(keys)
    assert {r["model_version"] for r in rows} == {rt.store.get("default").version}
    assert sec.proxy.count(path=rf"^/{sec.models}/evil/") == 0 and not marker.exists()


# ------------------------------------------------------------------------------------------ object keys


def test_dot_dot_keys_are_just_keys(sec, monkeypatch, tmp_path):
    sec.cold_start(monkeypatch)
    keys = ["site-a/../../etc/passwd.wav", "../../../../tmp/owned.wav", "site-a/pump/../../../x/..%2F..%2Fy.wav",
            "/leading/slash.wav", "site-a//pump//id_00//double.wav"]
    passwd = Path("/etc/passwd")
    before = passwd.stat() if passwd.exists() else None
    for i, key in enumerate(keys):
        sec.put(key, clip(10 + i))
        result = score_upload.handler(sec.event(key), Context(f"req-dots-{i}"))
        assert result["records"] == 1 and result["errors"] == {}, result
    sweep = fleet_sweep.handler({"bucket": sec.recordings, "prefix": "", "date": DAY})
    assert sweep["records"] == len(keys)
    rows = read_grades(f"s3://{sec.grades}/grades/", sec.s3).to_pylist()
    assert sorted(r["key"] for r in rows) == sorted(keys)  # verbatim, one record each (upload and sweep agree)
    assert all(PART.match(k) for k in sec.parquet_keys()), sec.parquet_keys()
    assert files_under(tmp_path) == set()  # packaged models: nothing written to disk at all
    assert not Path("/tmp/owned.wav").exists()
    if before is not None:
        after = passwd.stat()
        assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_own_output_prefix_is_refused_by_every_door(sec, monkeypatch):
    sec.cold_start(monkeypatch)
    own = ["grades/dt=2024-05-10/machine_type=pump/looks-like.wav", "grades/also.WAV"]
    for key in own:
        sec.put(key, clip(20), bucket=sec.grades)
    sec.put("incoming/site-a/pump/id_00/fine.wav", clip(21), bucket=sec.grades)
    for key in own:
        result = score_upload.handler(sec.event(key, bucket=sec.grades), Context("req-own"))
        assert result["records"] == 0 and result["skipped"] == [{"key": key, "reason": "own output prefix"}]
    batch = sweep_batch.handler({"Items": [{"Key": k} for k in own], "BatchInput": {"bucket": sec.grades}})
    assert batch["records"] == 0 and batch["skipped"] == 2
    sweep = fleet_sweep.handler({"bucket": sec.grades, "prefix": "", "date": DAY})
    assert sweep["records"] == 1  # only incoming/...
    assert all(sec.proxy.count(m, path=re.escape(f"/{sec.grades}/{k}") + "$") == 0 for m in ("GET", "HEAD")
               for k in own), "an own-output key was read"
    rows = read_grades(f"s3://{sec.grades}/grades/", sec.s3).to_pylist()
    assert [r["key"] for r in rows] == ["incoming/site-a/pump/id_00/fine.wav"]

    monkeypatch.setenv("OUTPUT_PREFIX", "")  # records at the bucket root: then the whole bucket is ours
    sec.cold_start(monkeypatch)
    result = score_upload.handler(sec.event("incoming/site-a/pump/id_00/fine.wav", bucket=sec.grades))
    assert result["records"] == 0 and result["skipped"][0]["reason"] == "own output prefix"


# ------------------------------------------------------------------------------------------ logs and secrets


@pytest.fixture
def captured_logs(sec, monkeypatch):
    """The handlers' own JSON log handler, pointed at a buffer (configured by the cold start)."""
    sec.cold_start(monkeypatch)
    handlers = {h for name in ("handlers", "signalcraft_core") for h in logging.getLogger(name).handlers
                if isinstance(h.formatter, JsonFormatter)}
    assert handlers, "runtime.get_runtime() configures JSON logging"
    buffer = io.StringIO()
    previous = {h: h.setStream(buffer) for h in handlers}
    try:
        yield buffer
    finally:
        for h, stream in previous.items():
            h.setStream(stream)


def test_logs_are_json_with_the_request_id_and_leak_nothing(sec, captured_logs, capfd):
    good, text, gone, leaky = (f"site-a/pump/id_00/{n}.wav" for n in ("good", "text", "gone", "leaky"))
    sec.put(good, clip(30))
    sec.put(text, b"this is not audio, but it is named .wav\n")
    sec.put(leaky, clip(31))
    sec.etags[gone] = "0" * 32
    sec.proxy.add(Fault.error(403, "AccessDenied", f"Request has expired: {PRESIGNED}", method="GET",
                              path=re.escape(f"/{sec.recordings}/{leaky}") + "$"))

    def message(mid: str, body) -> dict:
        return {"messageId": mid, "receiptHandle": "h", "eventSource": "aws:sqs", "attributes": {},
                "messageAttributes": {}, "body": body if isinstance(body, str) else json.dumps(body)}

    outputs: list[str] = []
    sqs = {"Records": [message("m-good", sec.event(good)), message("m-text", sec.event(text)),
                       message("m-gone", {"Records": [{**sec.event(good)["Records"][0],
                                                       "s3": {"bucket": {"name": sec.recordings},
                                                              "object": {"key": gone, "size": 10}}}]}),
                       message("m-garbage", "{not json"), message("m-leaky", sec.event(leaky)),
                       message("m-own", sec.event(good) | {"Records": [{**sec.event(good)["Records"][0],
                               "s3": {"bucket": {"name": sec.grades}, "object": {"key": "grades/x.wav"}}}]})]}
    result = score_upload.handler(sqs, Context("req-sqs-1"))
    outputs.append(json.dumps(result))
    assert result["batchItemFailures"] == [{"itemIdentifier": "m-garbage"}, {"itemIdentifier": "m-leaky"}]
    with pytest.raises(StorageError) as info:
        score_upload.handler(sec.event(leaky), Context("req-direct-2"))
    outputs.append(str(info.value))
    assert "AccessDenied" in str(info.value)
    sweep = fleet_sweep.handler({"bucket": sec.recordings, "prefix": "site-a/", "date": DAY}, Context("req-sweep-3"))
    outputs.append(json.dumps(sweep))
    assert sweep["errors"] == {"not_wav": 1, "storage_error": 1}

    lines = captured_logs.getvalue().splitlines()
    assert len(lines) >= 7
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {e["request_id"] for e in entries} <= {"req-sqs-1", "req-direct-2", "req-sweep-3"}
    assert all(e["level"] and e["message"] and e["timestamp"] for e in entries)
    assert {e["message"] for e in entries} >= {"graded", "not graded", "unreadable message"}
    graded = [e for e in entries if e["message"] == "graded"]
    assert {(e["request_id"], e["key"]) for e in graded} >= {("req-sqs-1", good), ("req-sqs-1", text),
                                                             ("req-direct-2", leaky)}
    rows = read_grades(f"s3://{sec.grades}/grades/", sec.s3).to_pylist()
    leaky_row = next(r for r in rows if r["key"] == leaky and r["status"] == "error")
    assert leaky_row["error_code"] == "storage_error" and "AccessDenied" in leaky_row["error_message"]
    raw_objects = [sec.s3.get_object(Bucket=sec.grades, Key=k)["Body"].read() for k in sec.parquet_keys()]
    out, err = capfd.readouterr()
    haystacks = {"logs": captured_logs.getvalue(), "stdout": out, "stderr": err, "results": "\n".join(outputs),
                 "records": json.dumps(rows, default=str), "parquet": b"".join(raw_objects).decode("latin-1")}
    for where, text_ in haystacks.items():
        for leak in LEAKS:
            assert leak not in text_, f"{leak[:20]}... leaked into {where}"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET  # the sentinel really was the live credential


def test_model_store_errors_are_scrubbed_too(sec, monkeypatch):
    """A storage failure while fetching the manifest is a ModelError; its message must not carry the URL query."""
    sec.publish("sets/default")
    sec.proxy.add(Fault.error(403, "AccessDenied", f"Request has expired: {PRESIGNED}", method="GET",
                              path=r"/sets/default/manifest\.json$"))
    sec.cold_start(monkeypatch, f"s3://{sec.models}/sets/")
    key = "site-a/pump/id_00/00000005.wav"
    sec.put(key, clip(5))
    with pytest.raises(SignalcraftError) as info:
        score_upload.handler(sec.event(key), Context("req-model-403"))
    assert info.value.code is ErrorCode.MODEL_ERROR
    text = str(info.value)
    assert "AccessDenied" in text and not any(leak in text for leak in LEAKS), text
