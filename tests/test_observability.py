"""Why: an operator sees the service only through its logs, metrics and traces (issue 15.1).

Every log line carries Powertools' Lambda context (service, cold_start, function name, request id) and a
correlation id from the event; the EMF metrics count what was graded, by grade and by error code, with
latency, bytes and model cache use, in the template's namespace; locally stdout stays the result and
the metrics go to the logs; tracing is off unless switched on, and then only does it import X-Ray.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from handler_env import configure_handlers

from handlers import score_upload
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.logs import JsonFormatter, LogHandler, configure
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.observability import correlation_id

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Context:
    aws_request_id: str
    function_name: str = "stack-score-upload"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:stack-score-upload"

    def get_remaining_time_in_millis(self) -> int:
        return 600_000


def clip(seed: int, rate: int = 16000) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(rate * 2) / rate
    return encode_wav(0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(len(t)), rate)


@pytest.fixture
def fn(s3_server, s3, make_bucket, monkeypatch, tmp_path):
    recordings, grades = make_bucket(), make_bucket()
    configure_handlers(monkeypatch, s3_server.endpoint_url, grades, log_level="INFO")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "svc-under-test")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "NsUnderTest")
    monkeypatch.setenv("SIGNALCRAFT_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    for name in ("AWS_LAMBDA_RUNTIME_API", "POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV", "ALERT_EVENT_BUS",
                 "ALERT_TOPIC_ARN"):
        monkeypatch.delenv(name, raising=False)
    buffer = io.StringIO()
    handler = configure()
    previous = handler.setStream(buffer)
    try:
        yield s3, recordings, buffer
    finally:
        handler.setStream(previous)
        runtime.reset()


def put(s3, bucket: str, key: str, data: bytes, kind: str = "s3-put") -> dict:
    etag = s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')
    return generate_event(kind, bucket, key, size=len(data), etag=etag)


def entries(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_log_lines_carry_the_lambda_context_and_the_events_correlation_id(fn):
    s3, recordings, buffer = fn
    score_upload.handler(put(s3, recordings, "site-a/pump/id_00/00000001.wav", clip(1)), Context("req-1"))
    sqs = put(s3, recordings, "site-a/pump/id_00/00000002.wav", clip(2), kind="sqs")
    score_upload.handler(sqs, Context("req-2"))
    bridge = put(s3, recordings, "site-a/pump/id_00/00000003.wav", clip(3), kind="eventbridge")
    score_upload.handler(bridge, Context("req-3"))

    graded = [e for e in entries(buffer) if e["message"] == "graded"]
    assert [e["function_request_id"] for e in graded] == ["req-1", "req-2", "req-3"]
    assert [e["request_id"] for e in graded] == ["req-1", "req-2", "req-3"]
    assert [e["correlation_id"] for e in graded] == [
        "EXAMPLE123456789", sqs["Records"][0]["messageId"], bridge["id"]]  # S3 request id, messageId, event id
    assert {e["service"] for e in graded} == {"svc-under-test"}
    assert {e["function_name"] for e in graded} == {"stack-score-upload"}
    assert all(isinstance(e["cold_start"], bool) for e in graded)
    assert graded[0]["logger"] == "signalcraft_core.pipeline.serverless" and graded[0]["key"].endswith("1.wav")


def test_correlation_ids_of_every_event_shape():
    assert correlation_id({"Records": [{"responseElements": {"x-amz-request-id": "R1"}}]}) == "R1"
    assert correlation_id({"Records": [{"messageId": "m-1"}, {"messageId": "m-2"}]}) == "m-1"
    assert correlation_id({"detail-type": "Object Created", "id": "e-1"}) == "e-1"
    assert correlation_id({"bucket": "b"}) is None and correlation_id([1]) is None


def emf(out: str) -> list[dict]:
    """EMF documents printed on stdout, single-value lists unwrapped ({"RecordingsGraded": [3.0]} -> 3.0)."""
    docs = [doc for doc in (json.loads(line) for line in out.splitlines() if line.startswith("{")) if "_aws" in doc]
    return [{k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in d.items()} for d in docs]


def test_emf_metrics_in_lambda_count_grades_errors_bytes_latency_and_model_cache(fn, monkeypatch, capsys):
    s3, recordings, buffer = fn
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")  # what Lambda sets: EMF goes to stdout
    good = [clip(n) for n in range(3)]
    refs = [put(s3, recordings, f"site-a/pump/id_00/{n:08d}.wav", data)["Records"][0] for n, data in enumerate(good)]
    refs.append(put(s3, recordings, "site-a/pump/id_00/notes.wav", b"not audio, named .wav")["Records"][0])
    capsys.readouterr()
    result = score_upload.handler({"Records": refs}, Context("req-m1"))
    docs = emf(capsys.readouterr().out)
    assert docs, "no EMF on stdout"
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "NsUnderTest" for d in docs)
    assert all(d["service"] == "svc-under-test" for d in docs)
    totals = next(d for d in docs if "RecordingsGraded" in d)
    assert totals["RecordingsGraded"] == 3 == sum(result["grades"].values())
    assert totals["BytesRead"] == sum(len(d) for d in good) + len(b"not audio, named .wav")
    # four records = four grading calls (one per event record): the first loaded the set, three found it cached
    assert (totals["ModelCacheMiss"], totals["ModelCacheHit"]) == (1, 3)
    assert len(totals["ScoreLatency"]) == 4 and all(0 < ms < 10_000 for ms in totals["ScoreLatency"])  # one per call
    by_grade = {d["grade"]: d["Records"] for d in docs if "grade" in d}
    assert by_grade == result["grades"]
    assert {d["error_code"]: d["RecordErrors"] for d in docs if "error_code" in d} == {"not_wav": 1}
    units = {m["Name"]: m["Unit"] for d in docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["ScoreLatency"] == "Milliseconds" and units["BytesRead"] == "Bytes"
    dims = [sorted(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) for d in docs if "error_code" in d]
    assert dims == [["error_code", "service"]]

    score_upload.handler(put(s3, recordings, "site-a/pump/id_00/00000009.wav", clip(9)), Context("req-m2"))
    warm = next(d for d in emf(capsys.readouterr().out) if "RecordingsGraded" in d)
    assert (warm["ModelCacheHit"], warm["ModelCacheMiss"]) == (1, 0)  # warm: served from the cache


def test_locally_stdout_stays_clean_and_metrics_go_to_the_log(fn, monkeypatch, capsys):
    s3, recordings, buffer = fn
    score_upload.handler(put(s3, recordings, "site-a/pump/id_00/00000001.wav", clip(1)), Context("req-l1"))
    assert emf(capsys.readouterr().out) == []
    logged = [e for e in entries(buffer) if e["message"] == "metrics"]
    assert len(logged) == 1 and logged[0]["metrics"][0]["RecordingsGraded"] == [1.0]
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    score_upload.handler(put(s3, recordings, "site-a/pump/id_00/00000002.wav", clip(2)), Context("req-l2"))
    assert emf(capsys.readouterr().out) == [] and len([e for e in entries(buffer) if e["message"] == "metrics"]) == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_log_entry_is_one_readable_line_and_still_scrubbed():
    handler = LogHandler(Terminal())
    handler.setFormatter(JsonFormatter())
    record = logging.makeLogRecord({"name": "signalcraft_core.x", "levelname": "INFO", "levelno": 20,
                                    "msg": "graded", "key": "site-a/pump/id_00/1.wav", "grade": "CRITICAL",
                                    "reason": "aws_secret_access_key = Zq9sEcReT"})
    line = handler.format(record)
    assert "\n" not in line and not line.startswith("{")
    assert " INFO    graded  key=site-a/pump/id_00/1.wav grade=CRITICAL" in line
    assert "Zq9sEcReT" not in line and "[redacted]" in line
    handler.setStream(io.StringIO())  # not a terminal: JSON again
    assert json.loads(handler.format(record))["grade"] == "CRITICAL"


_PROBE = """
import json, os, sys
sys.path.insert(0, {root!r})
from handlers import score_upload
try:
    score_upload.handler({{"bucket": "b"}})
except Exception as exc:
    outcome = type(exc).__name__
print(json.dumps({{"xray": "aws_xray_sdk" in sys.modules, "outcome": outcome}}))
"""


@pytest.mark.parametrize("disabled, imported", [("true", False), ("false", True)])
def test_tracing_imports_xray_only_when_switched_on(disabled, imported, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_LAMBDA"))}
    env.update(POWERTOOLS_TRACE_DISABLED=disabled, OUTPUT_BUCKET="", AWS_XRAY_CONTEXT_MISSING="IGNORE_ERROR",
               SIGNALCRAFT_ALERTS_FILE=str(tmp_path / "a.jsonl"), LOG_LEVEL="CRITICAL")
    out = subprocess.run([sys.executable, "-c", _PROBE.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    probe = json.loads(out.strip().splitlines()[-1])
    assert probe == {"xray": imported, "outcome": "ValueError"}  # the handler ran (and refused: no OUTPUT_BUCKET)
