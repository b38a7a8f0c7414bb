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
import stat
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
from tests.neighbours import TouchOnLoad, shared_group

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


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(TouchOnLoad(marker))


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
        s3_server.accept(ACCESS_KEY, SECRET)
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


# ------------------------------------------------------------------------------------------ model cache


def cache_set_dir(sec: Sec, model_uri: str, name: str = "default") -> Path:
    """Where the store caches set `name` of `model_uri` (the layout an attacker would plant into)."""
    import hashlib

    version = json.loads((DEFAULT_MODEL_ROOT / name / "manifest.json").read_text())["version"]
    return sec.cache / hashlib.sha256(model_uri.encode()).hexdigest()[:16] / name / version


def plant(folder: Path, marker: Path, victim: Path) -> dict[str, object]:
    """What a local attacker leaves in a cache folder: a FIFO manifest, a pickle with a manifest naming it, a symlink.

    Returns what each planted path is, to show afterwards that none of it was read or written through.
    """
    payload = evil_pickle(marker)
    folder.mkdir(parents=True)
    doc = json.loads((DEFAULT_MODEL_ROOT / "default" / "manifest.json").read_text())
    doc["artifacts"]["level1"]["sha256"] = sha256_bytes(payload)  # the planted manifest vouches for the pickle
    (folder / "attacker-manifest.json").write_text(json.dumps(doc))
    os.mkfifo(folder / "manifest.json")  # a reader that opens this blocks; a writer feeds the attacker
    (folder / "level1.joblib").write_bytes(payload)
    victim.write_bytes(b"victim's file\n")
    (folder / "autoencoder.pt").symlink_to(victim)  # a writer that follows it overwrites the victim
    return {"payload": payload}


def call_with_deadline(fn, seconds: float = 120.0):
    """Run fn in a thread; a hang (e.g. blocked on a FIFO) fails the test instead of stalling the suite."""
    import threading

    outcome: dict[str, object] = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the store hung (a planted FIFO was opened)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a folder owned by another uid needs root")
def test_a_cache_folder_another_user_created_is_refused_and_nothing_planted_is_read(sec, monkeypatch, tmp_path):
    """The attack of issue 12: another local user pre-creates the cache folder and plants files in it."""
    marker, victim = tmp_path / "UNPICKLED", tmp_path / "victim"
    sec.publish("sets/default")  # the honest set in S3
    uri = f"s3://{sec.models}/sets/"
    folder = cache_set_dir(sec, uri)
    plant(folder, marker, victim)
    for path in [sec.cache, *sec.cache.rglob("*")]:
        os.chown(path, 65534, 65534, follow_symlinks=False)  # all of it belongs to `nobody`
    sec.cold_start(monkeypatch, uri)
    key = "site-a/pump/id_00/00000006.wav"
    sec.put(key, clip(6))
    with pytest.raises(ModelError) as info:
        call_with_deadline(lambda: score_upload.handler(sec.event(key), Context("req-planted")))
    message = str(info.value)
    assert "\n" not in message and str(sec.cache) in message and "owned by uid 65534" in message, message
    assert "refusing" in message and "SIGNALCRAFT_CACHE_DIR" in message
    assert not marker.exists(), "the planted pickle was unpickled"
    assert victim.read_bytes() == b"victim's file\n"  # nothing written through the symlink
    assert stat.S_ISFIFO(os.lstat(folder / "manifest.json").st_mode)  # nothing renamed over or written into it
    assert os.path.islink(folder / "autoencoder.pt")
    assert {p.name for p in folder.iterdir()} == {"attacker-manifest.json", "manifest.json", "level1.joblib",
                                                  "autoencoder.pt"}  # no temp file or download left in there
    assert sec.proxy.count("GET", path=r"/sets/default/(?!manifest\.json$)") == 0  # refused before any artifact
    assert sec.parquet_keys() == []  # a model error is retried, not recorded


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777])
def test_a_cache_folder_others_can_write_is_refused(sec, monkeypatch, mode):
    sec.publish("sets/default")
    sec.cache.mkdir()
    os.chmod(sec.cache, mode)
    if mode & 0o020 and not mode & 0o002:
        os.chown(sec.cache, -1, shared_group())   # group write matters when the group holds others
    rt = sec.cold_start(monkeypatch, f"s3://{sec.models}/sets/")
    with pytest.raises(ModelError) as info:
        rt.store.get("default")
    assert "writable by other users" in str(info.value) and f"{mode:04o}" in str(info.value)
    assert list(sec.cache.iterdir()) == []


def test_a_cache_folder_that_is_a_symlink_is_refused(sec, monkeypatch, tmp_path):
    sec.publish("sets/default")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    sec.cache.symlink_to(elsewhere, target_is_directory=True)
    rt = sec.cold_start(monkeypatch, f"s3://{sec.models}/sets/")
    with pytest.raises(ModelError, match="is a symbolic link"):
        rt.store.get("default")
    assert list(elsewhere.iterdir()) == []


def test_a_new_cache_is_private_and_files_planted_in_our_own_cache_are_replaced_unread(sec, monkeypatch, tmp_path):
    """Even inside a folder we own, a FIFO, a symlink or a hash-matching planted manifest changes nothing."""
    marker, victim = tmp_path / "UNPICKLED", tmp_path / "victim"
    sec.publish("sets/default")
    uri = f"s3://{sec.models}/sets/"
    rt = sec.cold_start(monkeypatch, uri)
    first = rt.store.get("default")  # a fresh cache: created 0700, files 0600
    assert stat.S_IMODE(os.stat(sec.cache).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in first.root.iterdir())
    folder = cache_set_dir(sec, uri)
    assert first.root == folder
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    planted = plant(folder, marker, victim)
    os.replace(folder / "attacker-manifest.json", folder / "level1.manifest-copy.json")
    rt = sec.cold_start(monkeypatch, uri)
    model_set = call_with_deadline(lambda: rt.store.get("default"))
    assert model_set.version == first.version
    assert not marker.exists(), "the planted pickle was unpickled"
    assert victim.read_bytes() == b"victim's file\n"
    for name in ("manifest.json", "level1.joblib", "autoencoder.pt"):
        st = os.lstat(folder / name)
        assert stat.S_ISREG(st.st_mode), name  # the FIFO and the symlink were replaced, not used
        published = sec.s3.get_object(Bucket=sec.models, Key=f"sets/default/{name}")["Body"].read()
        assert (folder / name).read_bytes() == published, name
    assert (folder / "level1.joblib").read_bytes() != planted["payload"]
    assert not list(folder.glob(".*.part"))


def test_hashes_are_checked_against_the_downloaded_manifest_not_the_cached_copy(sec, monkeypatch, tmp_path):
    """A manifest.json in the cache that vouches for a planted pickle is never what the hashes are checked against."""
    marker = tmp_path / "UNPICKLED"
    payload = evil_pickle(marker)
    sec.publish("sets/default", replace={"level1.joblib": payload})  # S3's manifest keeps the honest hash
    uri = f"s3://{sec.models}/sets/"
    folder = cache_set_dir(sec, uri)
    folder.mkdir(parents=True)
    os.chmod(sec.cache, 0o700)
    doc = json.loads((DEFAULT_MODEL_ROOT / "default" / "manifest.json").read_text())
    doc["artifacts"]["level1"]["sha256"] = sha256_bytes(payload)
    (folder / "manifest.json").write_text(json.dumps(doc))  # agrees with the tampered file
    (folder / "level1.joblib").write_bytes(payload)
    rt = sec.cold_start(monkeypatch, uri)
    with pytest.raises(ModelError, match="level1.*integrity"):
        rt.store.get("default")
    assert not marker.exists()


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
    sweep = fleet_sweep.handler({"bucket": sec.recordings, "prefix": "", "date": DAY, "mode": "backfill"})
    assert sweep["records"] == len(keys)  # everything again (incremental would skip what the uploads graded)
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
    sweep = fleet_sweep.handler({"bucket": sec.recordings, "prefix": "site-a/", "date": DAY, "mode": "backfill"},
                                Context("req-sweep-3"))
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


VALUE = "Zq9sEcReTvAlUe7"  # what each form below hides; it must never survive scrubbing


@pytest.mark.parametrize("text, kept", [
    (f"aws_secret_access_key = {VALUE}", "aws_secret_access_key = [redacted]"),  # spaces around '=' (issue 12)
    (f"aws_secret_access_key={VALUE}", "aws_secret_access_key=[redacted]"),
    (f"AWS_SECRET_ACCESS_KEY: {VALUE}", "AWS_SECRET_ACCESS_KEY: [redacted]"),
    (f'{{"aws_secret_access_key": "{VALUE}", "region": "us-east-1"}}', '"region": "us-east-1"'),
    (f"{{'aws_session_token': '{VALUE}'}}", "aws_session_token"),
    (f'body {{\\"secret\\": \\"{VALUE}\\", \\"n\\": 1}}', '\\"n\\": 1'),  # JSON inside a JSON string
    (f'{{"password": "pa\\"{VALUE}"}}', '"password": [redacted]'),  # an escaped quote does not end the value
    (f"secret={VALUE}", "secret=[redacted]"),
    (f"token: {VALUE}", "token: [redacted]"),
    (f"MINIO_ROOT_PASSWORD={VALUE} started", "started"),
    (f"auth_token={VALUE},queue_dir=/data", "queue_dir=/data"),
    (f"password = '{VALUE} with spaces'", "password = [redacted]"),
    (f"X-Amz-Signature={VALUE}&X-Amz-Date=20240101T000000Z", "X-Amz-Date=20240101T000000Z"),
    (f"X-Amz-Credential={VALUE}%2F20240101%2Fus-east-1", "X-Amz-Credential=[redacted]"),
    (f"GET https://b.s3.amazonaws.com/k.wav?X-Amz-Signature={VALUE}&x=1 failed",
     "GET https://b.s3.amazonaws.com/k.wav failed"),
    (f"cannot reach https://minio:{VALUE}@storage.local:9000/bucket", "https://[redacted]@storage.local:9000/bucket"),
    (f"endpoint http://user:{VALUE}@127.0.0.1:8765/ down", "@127.0.0.1:8765/ down"),
    (f"Authorization: Bearer {VALUE}", "Authorization: [redacted]"),
    (f"headers {{'Authorization': 'Bearer {VALUE}'}}", "Authorization"),
    (f"Authorization: AWS4-HMAC-SHA256 Credential=AKIA{VALUE.upper()}/x, SignedHeaders=host, Signature={VALUE}",
     "SignedHeaders=host"),
    (f"api_key={VALUE}", "api_key=[redacted]"),
    (f"access key AKIA{VALUE.upper()} is not valid", "access key [redacted] is not valid"),
    (f"temporary key ASIA{VALUE.upper()}", "temporary key [redacted]"),
])
def test_secrets_are_scrubbed_in_every_form(text, kept):
    from signalcraft_core.logs import one_line, scrub

    for scrubbed in (one_line(text), scrub(text)):
        assert VALUE not in scrubbed and VALUE.upper() not in scrubbed, scrubbed
        assert kept in scrubbed, scrubbed  # only the secret goes, the context stays


@pytest.mark.parametrize("text", [
    "s3://recordings/site-a/pump/id_00/00000001.wav is 12 bytes, over the 10-byte limit",
    "The request signature we calculated does not match the signature you provided.",
    "HEAD s3://b/k.wav failed: ClientError: An error occurred (403) when calling the HeadObject operation: Forbidden",
    "manifest version 55ea0bf0a228, token count 3",
])
def test_ordinary_messages_are_left_alone(text):
    from signalcraft_core.logs import one_line

    assert one_line(text) == text


def test_json_log_lines_are_scrubbed_and_stay_json():
    record = logging.makeLogRecord({"name": "handlers.x", "levelname": "WARNING", "levelno": 30,
                                    "msg": "store said %s", "args": (f"aws_secret_access_key = {VALUE}",),
                                    "reason": f"https://u:{VALUE}@h/x?X-Amz-Signature={VALUE}",
                                    "detail": {"password": VALUE}})
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert VALUE not in line, line
    assert entry["message"] == "store said aws_secret_access_key = [redacted]"
    assert entry["reason"] == "https://[redacted]@h/x"
