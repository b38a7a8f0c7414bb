"""`signalcraft local invoke / generate-event / minio-listener`, `sweep` and `watch` against the embedded S3 server."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from signalcraft_core.io.audio import encode_wav
from signalcraft_core.io.events import parse_event, parse_map_batch, parse_sweep_event
from signalcraft_core.local.cli.app import cli
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.local.synth import SAMPLE_RATE, synthesize_clip
from signalcraft_core.local.webhook import make_server
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.sinks import read_grades

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
KEY = "site-a/valve/id_02/Ventil öffnet 7.wav"


@pytest.fixture(scope="module")
def wav() -> bytes:
    return encode_wav(synthesize_clip("valve", None, np.random.default_rng(3), 2.0), SAMPLE_RATE)


@pytest.fixture
def buckets(s3, make_bucket, monkeypatch):
    """A recordings bucket holding KEY and an empty grades bucket; no handler settings leak in."""
    for name in ("AWS_ENDPOINT_URL", "OUTPUT_BUCKET", "OUTPUT_PREFIX", "MODEL_URI", "MODEL_PREFERENCE", "BATCH_SIZE",
                 "MAX_OBJECT_BYTES", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    recordings, grades = make_bucket(), make_bucket()
    yield recordings, grades
    runtime.reset()


def put(s3, bucket: str, key: str, data: bytes) -> str:
    return s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def env_file(tmp_path: Path, grades: str, **extra: str) -> Path:
    path = tmp_path / "env.json"
    path.write_text(json.dumps({"Parameters": {"OUTPUT_BUCKET": grades, **extra}}))
    return path


def event_file(tmp_path: Path, event: dict, name: str = "event.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(event))
    return path


def grades_of(s3, grades: str) -> list[dict]:
    return read_grades(f"s3://{grades}/grades/", s3).to_pylist()


def assert_one_error_line(result, *needles: str) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# --------------------------------------------------------------------------- local invoke


def test_invoke_score_upload_through_the_template(s3, s3_server, buckets, wav, tmp_path):
    recordings, grades = buckets
    etag = put(s3, recordings, KEY, wav)
    generated = run("local", "generate-event", "s3", "put", "--bucket", recordings, "--key", KEY)
    assert generated.exit_code == 0
    event = event_file(tmp_path, json.loads(generated.stdout))

    result = run("local", "invoke", "ScoreUploadFunction", "-e", event, "-t", TEMPLATE,
                 "--env-vars", env_file(tmp_path, grades), "--endpoint-url", s3_server.endpoint_url)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout is the result only; the JSON logs went to stderr
    assert summary["records"] == 1 and summary["errors"] == {} and len(summary["written"]) == 1
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(entry["message"] == "graded" and entry["key"] == KEY and entry["request_id"] for entry in logs)
    (row,) = grades_of(s3, grades)
    assert row["key"] == KEY and row["etag"] == etag and row["size_bytes"] == len(wav) and row["status"] == "ok"
    assert row["machine_type"] == "valve" and row["machine_id"] == "id_02"
    import os

    assert "OUTPUT_BUCKET" not in os.environ  # the function's environment does not leak


def test_invoke_reads_the_event_from_stdin(s3, s3_server, buckets, wav, tmp_path):
    recordings, grades = buckets
    etag = put(s3, recordings, KEY, wav)
    event = generate_event("minio", recordings, KEY, size=len(wav), etag=etag)
    result = run("local", "invoke", "ScoreUploadFunction", "-e", "-", "-t", TEMPLATE,
                 "--env-vars", env_file(tmp_path, grades), "--endpoint-url", s3_server.endpoint_url,
                 input=json.dumps(event))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["records"] == 1


def test_invoke_fleet_sweep_and_sweep_batch_through_the_template(s3, s3_server, buckets, wav, tmp_path):
    recordings, grades = buckets
    keys = [KEY, "site-a/valve/id_02/other.wav"]
    for key in keys:
        put(s3, recordings, key, wav)
    envs = env_file(tmp_path, grades)

    sweep_event = event_file(tmp_path, {"bucket": recordings, "prefix": "site-a/"}, "sweep.json")
    swept = run("local", "invoke", "FleetSweepFunction", "-e", sweep_event, "-t", TEMPLATE, "--env-vars", envs,
                "--endpoint-url", s3_server.endpoint_url)
    assert swept.exit_code == 0, swept.output
    result = json.loads(swept.stdout)
    assert result["records"] == 2 and result["complete"] is True and result["bucket"] == recordings

    generated = run("local", "generate-event", "s3", "map-batch", "--bucket", recordings, "--key", keys[1])
    batch_event = event_file(tmp_path, json.loads(generated.stdout), "batch.json")
    batch = run("local", "invoke", "SweepBatchFunction", "-e", batch_event, "-t", TEMPLATE, "--env-vars", envs,
                "--endpoint-url", s3_server.endpoint_url)
    assert batch.exit_code == 0, batch.output
    result = json.loads(batch.stdout)
    assert result["records"] == 1 and result["skipped"] == 0 and len(result["written"]) == 1
    assert sorted(r["key"] for r in grades_of(s3, grades)) == sorted(keys)


def test_unknown_function_id_is_one_clear_line(tmp_path):
    result = run("local", "invoke", "NoSuchFunction", "-t", TEMPLATE)
    line = assert_one_error_line(result, "NoSuchFunction")
    assert "ScoreUploadFunction" in line  # names the functions that do exist


def test_bad_event_files_are_one_line(s3_server, buckets, tmp_path):
    _, grades = buckets
    common = ["-t", TEMPLATE, "--env-vars", env_file(tmp_path, grades), "--endpoint-url", s3_server.endpoint_url]
    not_json = tmp_path / "broken.json"
    not_json.write_text("{ not json")
    assert_one_error_line(run("local", "invoke", "ScoreUploadFunction", "-e", not_json, *common), "not JSON")
    unknown = event_file(tmp_path, {"hello": "world"})
    assert_one_error_line(run("local", "invoke", "ScoreUploadFunction", "-e", unknown, *common), "unrecognised")


# --------------------------------------------------------------------------- generate-event


@pytest.mark.parametrize("kind", ["put", "eventbridge", "sqs", "minio", "schedule", "map-batch"])
def test_generate_event_parses_back(kind):
    result = run("local", "generate-event", "s3", kind, "--bucket", "recs", "--key", KEY, "--prefix", "site-a/",
                 "--date", "2024-05-06")
    assert result.exit_code == 0, result.output
    event = json.loads(result.stdout)
    if kind == "schedule":
        assert parse_sweep_event(event) == parse_sweep_event({"bucket": "recs", "prefix": "site-a/", "date": "2024-05-06"})
        return
    if kind == "map-batch":
        (ref,) = parse_map_batch(event).refs
    else:
        (item,) = parse_event(event)
        assert item.error is None and item.skipped is None
        (ref,) = item.refs
    assert (ref.bucket, ref.key) == ("recs", KEY)
    assert ref.event_time and ref.event_time.startswith("2024-05-06")


def test_generate_event_with_a_bad_date_is_one_line():
    assert_one_error_line(run("local", "generate-event", "s3", "put", "--date", "2024-13-45"), "2024-13-45")


# --------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize("case", ["no-output-bucket", "missing-output-bucket", "model-uri-nowhere", "bad-preference",
                                  "bad-batch-size"])
def test_configuration_errors_are_one_error_line(s3, s3_server, buckets, wav, tmp_path, case, monkeypatch):
    recordings, grades = buckets
    etag = put(s3, recordings, KEY, wav)
    event = event_file(tmp_path, generate_event("s3-put", recordings, KEY, size=len(wav), etag=etag))
    overrides, needle = {
        "no-output-bucket": ({"OUTPUT_BUCKET": ""}, "OUTPUT_BUCKET"),
        "missing-output-bucket": ({"OUTPUT_BUCKET": "sc-test-no-such-grades"}, "sc-test-no-such-grades"),
        "model-uri-nowhere": ({"MODEL_URI": str(tmp_path / "nowhere")}, "nowhere"),
        "bad-preference": ({"MODEL_PREFERENCE": "level3"}, "MODEL_PREFERENCE"),
        "bad-batch-size": ({}, "BATCH_SIZE"),  # not a template variable: from the shell, below
    }[case]
    if case == "bad-batch-size":
        monkeypatch.setenv("BATCH_SIZE", "0")
    envs = tmp_path / "env.json"
    envs.write_text(json.dumps({"Parameters": {"OUTPUT_BUCKET": grades, "LOG_LEVEL": "WARNING"},
                                "ScoreUploadFunction": overrides}))
    result = run("local", "invoke", "ScoreUploadFunction", "-e", event, "-t", TEMPLATE, "--env-vars", envs,
                 "--endpoint-url", s3_server.endpoint_url)
    assert_one_error_line(result, needle)
    assert grades_of(s3, grades) == []


def test_sweep_command_grades_and_reports_a_missing_bucket_in_one_line(s3, s3_server, buckets, wav):
    recordings, grades = buckets
    put(s3, recordings, KEY, wav)
    ok = run("sweep", "--bucket", recordings, "--endpoint-url", s3_server.endpoint_url, "--output-bucket", grades)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["records"] == 1
    missing = run("sweep", "--bucket", "sc-test-no-such-recordings", "--endpoint-url", s3_server.endpoint_url,
                  "--output-bucket", grades)
    assert_one_error_line(missing, "sc-test-no-such-recordings")


def test_watch_once_grades_new_recordings_under_todays_partition(s3, s3_server, buckets, wav):
    recordings, grades = buckets
    put(s3, recordings, KEY, wav)
    result = run("watch", "--bucket", recordings, "--once", "--endpoint-url", s3_server.endpoint_url,
                 "--output-bucket", grades)
    assert result.exit_code == 0, result.output
    (row,) = grades_of(s3, grades)
    head = s3.head_object(Bucket=recordings, Key=KEY)
    assert row["key"] == KEY and row["event_time"].date() == head["LastModified"].date()


# --------------------------------------------------------------------------- minio-listener


@pytest.fixture
def listener(s3_server, buckets, monkeypatch):
    """The webhook receiver on a free port in a thread, with the upload handler's environment."""
    _, grades = buckets
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("OUTPUT_BUCKET", grades)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    runtime.reset()
    said: list[str] = []
    server = make_server("127.0.0.1", 0, said.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", said
    finally:
        server.shutdown()
        server.server_close()


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_minio_listener_grades_a_notification(s3, buckets, listener, wav):
    recordings, grades = buckets
    url, said = listener
    etag = put(s3, recordings, KEY, wav)
    status, body = post(url, json.dumps(generate_event("minio", recordings, KEY, size=len(wav), etag=etag)).encode())
    assert status == 200 and body["records"] == 1, body
    (row,) = grades_of(s3, grades)
    assert row["key"] == KEY and row["status"] == "ok"
    assert any(KEY in line for line in said)
    with urllib.request.urlopen(url, timeout=10) as probe:  # MinIO checks the target with a GET
        assert probe.status == 200


def test_minio_listener_refuses_garbage_with_400(buckets, listener):
    url, _ = listener
    assert post(url, b"this is not json")[0] == 400
    assert post(url, json.dumps({"hello": "world"}).encode())[0] == 400
    assert post(url, json.dumps([1, 2, 3]).encode())[0] == 400


def test_minio_listener_answers_500_when_grades_cannot_be_written(s3, buckets, listener, wav, monkeypatch):
    """A storage failure is not the notification's fault: 500 makes MinIO deliver it again later."""
    recordings, _ = buckets
    url, _ = listener
    monkeypatch.setenv("OUTPUT_BUCKET", "sc-test-no-such-grades")
    runtime.reset()
    etag = put(s3, recordings, KEY, wav)
    status, body = post(url, json.dumps(generate_event("minio", recordings, KEY, size=len(wav), etag=etag)).encode())
    assert status == 500 and "sc-test-no-such-grades" in body["error"]
