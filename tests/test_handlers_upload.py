"""The upload handler end to end: real HTTP to the embedded S3 server, Parquet read back with pyarrow."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from handler_env import CallLog, configure_handlers

from handlers import score_upload
from signalcraft_core.errors import ModelError, SignalcraftError, StorageError
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.local.synth import SAMPLE_RATE, synthesize_clip
from signalcraft_core.models.grading import grade
from signalcraft_core.models.model_store import ModelStore
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.records import (
    FILE_SCHEMA,
    GRADE_SCHEMA,
    GRADES,
    SCHEMA_VERSION,
    record_id,
)
from signalcraft_core.pipeline.sinks import read_grades

PUMP_KEY = "site-a/pump/id_00/00000001.wav"
FAN_KEY = "site-a/fan/id_00/Lüfter Halle 3.wav"
DAY = "2024-05-06"
#: Records are filed under the day of the object\'s LastModified (uploaded during the test), never an event\'s date.
TODAY = dt.datetime.now(dt.timezone.utc).date().isoformat()
PART = re.compile(r"^grades/dt=(\d{4}-\d{2}-\d{2})/machine_type=([^/]+)/part-[0-9a-f]{32}\.parquet$")


@pytest.fixture(scope="module")
def wav() -> bytes:
    """A 10 s synthetic pump clip (what the packaged models were trained on)."""
    return encode_wav(synthesize_clip("pump", None, np.random.default_rng(11), 10.0), SAMPLE_RATE)


@pytest.fixture(scope="module")
def short_wav() -> bytes:
    return encode_wav(synthesize_clip("fan", None, np.random.default_rng(12), 2.0), SAMPLE_RATE)


@dataclass
class Env:
    s3: object
    recordings: str
    grades: str

    def put(self, key: str, data: bytes, bucket: str | None = None) -> str:
        return self.s3.put_object(Bucket=bucket or self.recordings, Key=key, Body=data)["ETag"].strip('"')

    def event(self, kind: str, key: str, data: bytes, etag: str, date: str | None = DAY) -> dict:
        return generate_event(kind, self.recordings, key, size=len(data), etag=etag, date=date)

    def parquet_keys(self) -> list[str]:
        resp = self.s3.list_objects_v2(Bucket=self.grades, Prefix="grades/")
        return sorted(o["Key"] for o in resp.get("Contents", []))

    def rows(self, dedupe: bool = True) -> list[dict]:
        return read_grades(f"s3://{self.grades}/grades/", self.s3, dedupe=dedupe).to_pylist()


@pytest.fixture
def env(s3_server, s3, make_bucket, monkeypatch):
    """Handler environment as template.yaml sets it, pointed at the embedded server; a cold start."""
    recordings, grades = make_bucket(), make_bucket()
    configure_handlers(monkeypatch, s3_server.endpoint_url, grades)
    yield Env(s3, recordings, grades)
    runtime.reset()


def sqs_message(message_id: str, body: object) -> dict:
    return {"messageId": message_id, "receiptHandle": "h", "eventSource": "aws:sqs", "awsRegion": "us-east-1",
            "body": body if isinstance(body, str) else json.dumps(body), "attributes": {}, "messageAttributes": {}}


# --------------------------------------------------------------------------- the record


def test_put_event_writes_one_parquet_record_with_every_field(env, wav):
    etag = env.put(PUMP_KEY, wav)
    result = score_upload.handler(env.event("s3-put", PUMP_KEY, wav, etag))

    assert result["records"] == 1 and result["errors"] == {} and sum(result["grades"].values()) == 1
    assert result["skipped"] == [] and "batchItemFailures" not in result
    (written,) = result["written"]
    assert PART.match(written).groups() == (TODAY, "pump"), written
    assert env.parquet_keys() == [written]

    raw = pq.read_table(pa.BufferReader(env.s3.get_object(Bucket=env.grades, Key=written)["Body"].read()))
    assert raw.schema.names == FILE_SCHEMA.names and raw.num_rows == 1
    (row,) = raw.to_pylist()
    row = {**row, "machine_type": "pump"}  # the partition folder carries it, not the file
    assert env.rows() == [{k: row[k] for k in GRADE_SCHEMA.names}] == env.rows(dedupe=False)

    model = ModelStore().get("pump")
    assert row["record_id"] == record_id(env.recordings, PUMP_KEY, etag)
    assert (row["bucket"], row["key"], row["etag"], row["size_bytes"]) == (env.recordings, PUMP_KEY, etag, len(wav))
    assert (row["site"], row["machine_type"], row["machine_id"]) == ("site-a", "pump", "id_00")
    assert (row["model_name"], row["model_version"], row["profile"]) == (model.name, model.version, model.profile.name)
    assert row["event_time"].date().isoformat() == TODAY
    assert row["status"] == "ok" and row["error_code"] is None and row["error_message"] is None
    assert 0 <= row["score"] <= 100 and row["grade"] in GRADES and row["grade"] == grade(row["score"]).value
    assert row["level1_score"] is not None and row["level2_score"] is not None and row["level2_mse"] >= 0
    assert row["level2_band_errors"] and len(row["level2_band_errors"]) == model.profile.n_mels
    assert (row["duration_s"], row["sample_rate_in"], row["channels_in"]) == (10.0, SAMPLE_RATE, 1)
    assert row["schema_version"] == SCHEMA_VERSION
    assert result["grades"] == {row["grade"]: 1}


def test_record_describes_the_object_even_when_the_event_guesses(env, short_wav):
    """`sam local generate-event` puts a fake ETag and size in: the record carries the real ones."""
    etag = env.put(PUMP_KEY, short_wav)
    event = generate_event("s3-put", env.recordings, PUMP_KEY)  # etag 0123..., size 1024
    with CallLog(runtime.get_runtime().client) as log:
        score_upload.handler(event)
    (row,) = env.rows()
    assert row["etag"] == etag and row["size_bytes"] == len(short_wav) and row["status"] == "ok"
    assert row["event_time"].year != 1970  # the object's LastModified, not the SAM sample's eventTime
    assert log.count("HeadObject", env.recordings) == 1   # the GET found another size: identified by a HEAD


def test_an_event_that_gives_size_and_etag_costs_one_get_and_no_head(env, short_wav):
    """The GET's response identifies the bytes graded; a HEAD first would only repeat it (and its S3 charge)."""
    etag = env.put(PUMP_KEY, short_wav)
    with CallLog(runtime.get_runtime().client) as log:
        score_upload.handler(env.event("s3-put", PUMP_KEY, short_wav, etag))
    assert (log.count("GetObject", env.recordings), log.count("HeadObject", env.recordings)) == (1, 0)
    (row,) = env.rows()
    assert (row["status"], row["etag"], row["record_id"]) == ("ok", etag, record_id(env.recordings, PUMP_KEY, etag))
    assert row["event_time"].date().isoformat() == TODAY   # LastModified from the GET, not the event's DAY


@pytest.mark.parametrize("encode", [
    pytest.param(lambda k: quote_plus(k, safe="/"), id="s3-plus"),
    pytest.param(quote, id="sam-%20"),
    pytest.param(lambda k: quote_plus(k, safe=""), id="minio-%2F"),
])
def test_key_with_spaces_and_unicode(env, short_wav, encode):
    etag = env.put(FAN_KEY, short_wav)
    event = env.event("s3-put", FAN_KEY, short_wav, etag)
    event["Records"][0]["s3"]["object"]["key"] = encode(FAN_KEY)
    assert " " not in event["Records"][0]["s3"]["object"]["key"]
    result = score_upload.handler(event)
    assert result["records"] == 1 and result["errors"] == {}, result
    (row,) = env.rows()
    assert row["key"] == FAN_KEY and row["status"] == "ok"
    assert (row["site"], row["machine_type"], row["machine_id"]) == ("site-a", "fan", "id_00")
    assert PART.match(result["written"][0]).groups() == (TODAY, "fan")


def test_same_event_three_times_gives_one_row(env, short_wav):
    etag = env.put(FAN_KEY, short_wav)
    event = env.event("s3-put", FAN_KEY, short_wav, etag)
    results = [score_upload.handler(copy.deepcopy(event)) for _ in range(3)]
    assert all(r["records"] == 1 for r in results)
    assert len({tuple(r["written"]) for r in results}) == 1  # deterministic object names
    assert len(env.parquet_keys()) == 1
    assert len(env.rows(dedupe=False)) == 1


# --------------------------------------------------------------------------- event shapes


def test_minio_bare_and_webhook_wrapper_and_eventbridge_name_the_same_record(env, short_wav):
    etag = env.put(FAN_KEY, short_wav)
    wrapper = env.event("minio", FAN_KEY, short_wav, etag)
    assert "%2F" in wrapper["Records"][0]["s3"]["object"]["key"]
    bare = {"Records": wrapper["Records"]}
    bridge = env.event("eventbridge", FAN_KEY, short_wav, etag)
    results = [score_upload.handler(e) for e in (wrapper, bare, bridge)]
    assert [r["records"] for r in results] == [1, 1, 1] and all(r["errors"] == {} for r in results)
    rows = env.rows(dedupe=False)
    assert len({r["record_id"] for r in rows}) == 1 and rows[0]["key"] == FAN_KEY


def test_sqs_batch_fails_only_the_garbage_message_and_skips_test_events(env, short_wav):
    keys = [f"site-a/pump/id_0{i}/clip.wav" for i in range(2)]
    etags = [env.put(k, short_wav) for k in keys]
    messages = [
        sqs_message("good-0", env.event("s3-put", keys[0], short_wav, etags[0])),
        sqs_message("garbage", "{not json"),
        sqs_message("test-event", {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": env.recordings}),
        sqs_message("good-1", env.event("eventbridge", keys[1], short_wav, etags[1])),
    ]
    result = score_upload.handler({"Records": messages})
    assert result["batchItemFailures"] == [{"itemIdentifier": "garbage"}]
    assert result["records"] == 2 and result["errors"] == {}
    assert [s["reason"] for s in result["skipped"]] == ["s3:TestEvent"]
    assert sorted(r["key"] for r in env.rows()) == sorted(keys)


def test_generated_sqs_event_grades_its_object(env, short_wav):
    etag = env.put(PUMP_KEY, short_wav)
    result = score_upload.handler(env.event("sqs", PUMP_KEY, short_wav, etag))
    assert result["batchItemFailures"] == [] and result["records"] == 1


def test_key_under_our_own_output_prefix_is_refused(env, short_wav):
    key = "grades/dt=2024-05-06/machine_type=pump/sneaky.wav"
    etag = env.put(key, short_wav, bucket=env.grades)
    event = generate_event("s3-put", env.grades, key, size=len(short_wav), etag=etag, date=DAY)
    result = score_upload.handler(event)
    assert result["records"] == 0 and result["written"] == []
    assert result["skipped"] == [{"key": key, "reason": "own output prefix"}]
    assert env.parquet_keys() == [key]  # only the object itself: no record was written


# --------------------------------------------------------------------------- bad objects


def _one_error(env, result, code: str) -> dict:
    assert result["records"] == 1 and result["errors"] == {code: 1} and result["grades"] == {}, result
    (row,) = env.rows(dedupe=False)
    assert row["status"] == "error" and row["error_code"] == code and row["error_message"]
    assert row["grade"] is None and row["score"] is None
    return row


def test_text_file_with_a_wav_name_is_one_not_wav_record(env):
    data = b"this is a text file with a .wav name\n" * 20
    etag = env.put(PUMP_KEY, data)
    row = _one_error(env, score_upload.handler(env.event("s3-put", PUMP_KEY, data, etag)), "not_wav")
    assert row["machine_type"] == "pump" and row["model_name"] is not None and row["etag"] == etag


def test_too_large_object_is_refused_without_downloading(env, monkeypatch, wav):
    monkeypatch.setenv("MAX_OBJECT_BYTES", "100000")
    runtime.reset()
    etag = env.put(PUMP_KEY, wav)
    client = runtime.get_runtime().client
    with CallLog(client) as log:
        result = score_upload.handler(env.event("s3-put", PUMP_KEY, wav, etag))
    assert "GetObject" not in log.operations
    row = _one_error(env, result, "too_large")
    assert row["size_bytes"] == len(wav)


def test_too_large_object_from_an_event_without_size_is_refused_after_head(env, monkeypatch, wav):
    monkeypatch.setenv("MAX_OBJECT_BYTES", "100000")
    runtime.reset()
    env.put(PUMP_KEY, wav)
    event = env.event("s3-put", PUMP_KEY, wav, "x")
    obj = event["Records"][0]["s3"]["object"]
    del obj["size"], obj["eTag"]
    with CallLog(runtime.get_runtime().client) as log:
        result = score_upload.handler(event)
    assert "HeadObject" in log.operations and "GetObject" not in log.operations
    _one_error(env, result, "too_large")


def test_missing_object_is_one_not_found_record(env, short_wav):
    with CallLog(runtime.get_runtime().client) as log:
        result = score_upload.handler(env.event("s3-put", PUMP_KEY, short_wav, "0" * 32))
    row = _one_error(env, result, "not_found")
    assert row["key"] == PUMP_KEY and row["machine_type"] == "pump"
    assert row["record_id"] == record_id(env.recordings, PUMP_KEY, "0" * 32)   # as a failed HEAD would name it
    assert log.count("HeadObject", env.recordings) == 0   # the GET's 404 says it all


# --------------------------------------------------------------------------- configuration errors


def test_missing_output_bucket_raises_before_grading(env, monkeypatch, short_wav):
    monkeypatch.delenv("OUTPUT_BUCKET")
    runtime.reset()
    etag = env.put(PUMP_KEY, short_wav)
    with CallLog(runtime.get_runtime().client) as log, pytest.raises(ValueError, match="OUTPUT_BUCKET"):
        score_upload.handler(env.event("s3-put", PUMP_KEY, short_wav, etag))
    assert log.operations == []


def test_output_bucket_that_does_not_exist_raises_so_lambda_retries(env, monkeypatch, short_wav):
    monkeypatch.setenv("OUTPUT_BUCKET", "sc-test-no-such-bucket")
    runtime.reset()
    etag = env.put(PUMP_KEY, short_wav)
    with pytest.raises(StorageError, match="sc-test-no-such-bucket"):
        score_upload.handler(env.event("s3-put", PUMP_KEY, short_wav, etag))
    assert env.parquet_keys() == []


@pytest.mark.parametrize("where", ["folder", "missing-bucket", "empty-prefix"])
def test_model_uri_pointing_nowhere_raises_a_model_error(env, monkeypatch, tmp_path, short_wav, where):
    uri = {"folder": str(tmp_path / "no-models"), "missing-bucket": "s3://sc-test-no-such-models/models/",
           "empty-prefix": f"s3://{env.grades}/no-models/"}[where]
    monkeypatch.setenv("MODEL_URI", uri)
    runtime.reset()
    etag = env.put(PUMP_KEY, short_wav)
    with pytest.raises(ModelError) as err:
        score_upload.handler(env.event("s3-put", PUMP_KEY, short_wav, etag))
    assert isinstance(err.value, SignalcraftError) and uri.rstrip("/") in str(err.value)
    assert "\n" not in str(err.value)
    assert env.parquet_keys() == []  # no model_error records pretending to be final


def test_model_set_from_s3_grades_like_the_packaged_one(env, monkeypatch, short_wav):
    """MODEL_URI=s3://... downloads, verifies and caches the sets; the record names the same model."""
    from signalcraft_core.models.model_store import DEFAULT_MODEL_ROOT

    for path in DEFAULT_MODEL_ROOT.glob("*/*"):
        if path.is_file() and path.parent.name in ("fan", "default"):
            env.s3.upload_file(str(path), env.grades, f"models/{path.parent.name}/{path.name}")
    monkeypatch.setenv("MODEL_URI", f"s3://{env.grades}/models/")
    runtime.reset()
    etag = env.put(FAN_KEY, short_wav)
    score_upload.handler(env.event("s3-put", FAN_KEY, short_wav, etag))
    (row,) = env.rows()
    assert row["status"] == "ok" and row["model_version"] == ModelStore().get("fan").version
