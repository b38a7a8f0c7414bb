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


def test_generate_event_with_a_bad_date_is_a_usage_error_naming_date():
    result = run("local", "generate-event", "s3", "put", "--date", "2024-13-45")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "--date" in line and "2024-13-45" in line


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
    server = make_server("127.0.0.1", 0, said.append, token=LISTENER_TOKEN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", said
    finally:
        server.shutdown()
        server.server_close()


LISTENER_TOKEN = "tok-" + "c0de" * 8  # the listener always requires one, on loopback too


def post(url: str, body: bytes) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {LISTENER_TOKEN}"}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
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


# --------------------------------------------------------------------------- SAM CLI flags (an echo function)

ECHO_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev}
  Prefix: {Type: String, Default: grades/}
Globals:
  Function:
    Runtime: python3.11
    Environment:
      Variables:
        STAGE: !Ref Stage
Resources:
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: sc_echo_handler.handler
      Environment:
        Variables:
          PREFIX: !Ref Prefix
          REGION_SEEN: !Ref AWS::Region
          FROM_SHELL: template
  OtherFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: sc_echo_handler.handler
"""

ECHO_HANDLER = '''
import logging, os
log = logging.getLogger("handlers.sc_echo")
def handler(event, context):
    log.debug("echo debug")
    log.info("echo info")
    return {name: os.environ.get(name) for name in event.get("names", [])}
'''

ECHO_NAMES = ["STAGE", "PREFIX", "REGION_SEEN", "FROM_SHELL", "UNDECLARED", "ALSO_UNDECLARED", "AWS_REGION",
              "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "LOG_LEVEL"]


@pytest.fixture
def echo(tmp_path, monkeypatch) -> Path:
    """A template whose function returns its own environment; no shell value of its variables leaks in."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "template.yaml").write_text(ECHO_TEMPLATE)
    (tmp_path / "sc_echo_handler.py").write_text(ECHO_HANDLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ECHO_NAMES[:6] + ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "SAM_DEBUG", "LOG_LEVEL"]:
        monkeypatch.delenv(name, raising=False)
    return folder / "template.yaml"


def invoke_echo(template: Path, *args, function: str = "EchoFunction"):
    result = run("local", "invoke", function, "-t", template, "-e", "-", *args, input=json.dumps({"names": ECHO_NAMES}))
    env = json.loads(result.stdout) if result.exit_code == 0 else None
    return result, env


@pytest.mark.parametrize(
    "args",
    [
        ["--parameter-overrides", "Stage=prod Prefix=custom/"],  # was: the whole string became one value
        ["--parameter-overrides", "Stage=prod", "Prefix=custom/"],  # several words, as the SAM CLI takes them
        ["--parameter-overrides", "ParameterKey=Stage,ParameterValue=prod ParameterKey=Prefix,ParameterValue=custom/"],
        ["--parameter-overrides", "ParameterKey=Stage,ParameterValue=prod", "Prefix=custom/"],
        ["--parameter-overrides", "Stage=prod", "--parameter-overrides", "Prefix=custom/"],
    ],
    ids=["space", "words", "parameterkey", "mixed", "repeated"],
)
def test_parameter_overrides_in_both_sam_syntaxes_reach_the_environment(echo, args):
    result, env = invoke_echo(echo, *args)
    assert result.exit_code == 0, result.output
    assert (env["STAGE"], env["PREFIX"]) == ("prod", "custom/")


@pytest.mark.parametrize("text", ['Prefix="my custom/"', "Prefix='my custom/'", r"Prefix=my\ custom/",
                                  'ParameterKey=Prefix,ParameterValue="my custom/"'])
def test_parameter_override_values_with_spaces_are_quoted_like_a_shell(echo, text):
    result, env = invoke_echo(echo, "--parameter-overrides", f"Stage=x {text}")
    assert result.exit_code == 0, result.output
    assert (env["STAGE"], env["PREFIX"]) == ("x", "my custom/")


@pytest.mark.parametrize(("text", "needles"), [
    ("Nope=1 Stage=x", ("'Nope'", "Stage, Prefix")),
    ("Stage", ("'Stage'", "Key=Value")),
    ('Prefix="unclosed', ("quotation",)),
    ("ParameterKey=Stage", ("ParameterKey=Stage",)),
])
def test_unknown_or_malformed_overrides_are_one_error_line(echo, text, needles):
    result, _ = invoke_echo(echo, "--parameter-overrides", text)
    assert_one_error_line(result, *needles)


def test_env_vars_apply_only_the_variables_the_template_declares(echo, tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_SHELL", "shell")
    envs = tmp_path / "env.json"
    envs.write_text(json.dumps({
        "Parameters": {"PREFIX": "params/", "STAGE": "params", "UNDECLARED": "x"},
        "EchoFunction": {"STAGE": "mine", "ALSO_UNDECLARED": 1},
        "OtherFunction": {"PREFIX": "other/"},
    }))
    result, env = invoke_echo(echo, "--env-vars", envs)
    assert result.exit_code == 0, result.output
    assert (env["PREFIX"], env["STAGE"]) == ("params/", "mine")  # the function's section wins over Parameters
    assert env["UNDECLARED"] is None and env["ALSO_UNDECLARED"] is None
    assert env["FROM_SHELL"] == "shell"  # a declared variable set in the shell wins over the template (SAM's order)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 2 and "UNDECLARED" in warnings[0] and "ALSO_UNDECLARED" in warnings[1]
    assert all("EchoFunction" in w for w in warnings)
    monkeypatch.delenv("FROM_SHELL")
    other, env = invoke_echo(echo, "--env-vars", envs, function="OtherFunction")
    assert other.exit_code == 0 and env["STAGE"] == "params" and env["PREFIX"] is None  # OtherFunction has no PREFIX


def test_region_and_profile_are_set_for_the_invoke_only(echo, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "shell-key")
    result, env = invoke_echo(echo, "--region", "eu-west-3", "--profile", "parity")
    assert result.exit_code == 0, result.output
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == env["REGION_SEEN"] == "eu-west-3"
    assert env["AWS_PROFILE"] == "parity" and env["AWS_ACCESS_KEY_ID"] is None  # the profile's keys, not the shell's
    import os

    assert "AWS_PROFILE" not in os.environ and os.environ["AWS_ACCESS_KEY_ID"] == "shell-key"
    _, default = invoke_echo(echo)
    assert default["REGION_SEEN"] == "us-east-1" and default["AWS_ACCESS_KEY_ID"] == "shell-key"


def test_log_file_receives_the_handler_logs_instead_of_stderr(echo, tmp_path):
    log_file = tmp_path / "invoke.log"
    for _ in range(2):
        result, env = invoke_echo(echo, "-l", log_file)
        assert result.exit_code == 0 and env["STAGE"] == "dev"
        assert "echo info" not in result.stderr
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [entry["message"] for entry in lines] == ["echo info", "echo info"]  # appended, not overwritten
    result, _ = invoke_echo(echo)
    assert "echo info" in result.stderr  # the next invoke logs to stderr again


def test_debug_logs_at_debug_level_and_says_what_it_resolved(echo):
    quiet, env = invoke_echo(echo)
    assert "echo debug" not in quiet.stderr and "Debug:" not in quiet.stderr and env["LOG_LEVEL"] is None
    result, env = invoke_echo(echo, "--debug", "--parameter-overrides", "Stage=dbg")
    assert result.exit_code == 0, result.output
    assert env["LOG_LEVEL"] == "DEBUG" and "echo debug" in result.stderr
    assert "Debug: parameters: Stage=dbg" in result.stderr


SAMCONFIG = """\
version = 0.1
[default.global.parameters]
region = "ap-south-1"
stack_name = "not-a-local-invoke-option"
[default.local_invoke.parameters]
parameter_overrides = "Stage=from-config"
[staging.global.parameters]
region = "eu-north-1"
[staging.local_invoke.parameters]
parameter_overrides = ["Stage=staging", "Prefix=st/"]
debug = true
"""


def test_samconfig_next_to_the_template_fills_what_the_command_line_does_not(echo):
    (echo.parent / "samconfig.toml").write_text(SAMCONFIG)
    result, env = invoke_echo(echo)
    assert result.exit_code == 0, result.output
    assert (env["STAGE"], env["REGION_SEEN"], env["PREFIX"]) == ("from-config", "ap-south-1", "grades/")
    _, env = invoke_echo(echo, "--parameter-overrides", "Stage=cli", "--region", "us-west-2")
    assert (env["STAGE"], env["REGION_SEEN"]) == ("cli", "us-west-2")  # the command line wins
    staged, env = invoke_echo(echo, "--config-env", "staging")
    assert (env["STAGE"], env["PREFIX"], env["REGION_SEEN"]) == ("staging", "st/", "eu-north-1")
    assert env["LOG_LEVEL"] == "DEBUG" and "Debug:" in staged.stderr
    missing_env, env = invoke_echo(echo, "--config-env", "nosuch")
    assert env["STAGE"] == "dev" and "Warning:" in missing_env.stderr and "nosuch" in missing_env.stderr


def test_config_file_option_is_relative_to_the_template_and_must_exist(echo, tmp_path):
    envs = tmp_path / "env.json"
    envs.write_text(json.dumps({"EchoFunction": {"PREFIX": "from-env-file/"}}))
    (echo.parent / "other.toml").write_text(
        f'version = 0.1\n[default.local_invoke.parameters]\nenv_vars = "{envs}"\n'
        'parameter_overrides = "ParameterKey=Stage,ParameterValue=other"\n')
    result, env = invoke_echo(echo, "--config-file", "other.toml")
    assert result.exit_code == 0, result.output
    assert (env["STAGE"], env["PREFIX"]) == ("other", "from-env-file/")
    assert_one_error_line(invoke_echo(echo, "--config-file", "absent.toml")[0], "absent.toml")
    (echo.parent / "broken.toml").write_text("[default.local_invoke.parameters\n")
    assert_one_error_line(invoke_echo(echo, "--config-file", "broken.toml")[0], "broken.toml")


def test_parameter_overrides_reach_the_upload_function(s3, s3_server, buckets, wav, tmp_path):
    recordings, grades = buckets
    put(s3, recordings, KEY, wav)
    event = event_file(tmp_path, generate_event("s3-put", recordings, KEY))
    result = run("local", "invoke", "ScoreUploadFunction", "-e", event, "-t", TEMPLATE, "--endpoint-url",
                 s3_server.endpoint_url, "--parameter-overrides", f"GradesBucketName={grades} OutputPrefix=custom/",
                 "LogLevel=WARNING")
    assert result.exit_code == 0, result.output
    assert all(name.startswith("custom/") for name in json.loads(result.stdout)["written"])
    (row,) = read_grades(f"s3://{grades}/custom/", s3).to_pylist()
    assert row["key"] == KEY and row["status"] == "ok"
    assert '"graded"' not in result.stderr  # LogLevel=WARNING reached LOG_LEVEL


# --------------------------------------------------------------------------- keys as each source spells them

AWKWARD_KEYS = ["site-a/pump/id_00/a+b.wav", "site-a/pump/id_00/rec 1.wav", "site-a/pump/id_00/100% load.wav",
                "site-a/pump/id_00/t=05:00.wav", "site-a/pump/id_00/Lüfter ü.wav"]


def test_awkward_keys_are_found_through_s3_sqs_and_eventbridge(s3, s3_server, buckets, wav, tmp_path):
    """S3 notifications '+'-encode the key (decoded); EventBridge shows it raw (kept): HEAD/GET find each object."""
    from urllib.parse import quote_plus

    recordings, grades = buckets
    for key in AWKWARD_KEYS:
        put(s3, recordings, key, wav)

    def s3_put(key: str) -> dict:
        event = generate_event("s3-put", recordings, key)
        event["Records"][0]["s3"]["object"]["key"] = quote_plus(key, safe="/")  # as S3 itself encodes it
        return event

    s3_batch = {"Records": [s3_put(k)["Records"][0] for k in AWKWARD_KEYS]}
    sqs = generate_event("sqs", recordings, AWKWARD_KEYS[0])
    template_record = sqs["Records"][0]

    def sqs_of(bodies: list[dict]) -> dict:
        return {"Records": [{**template_record, "messageId": f"m-{i}", "body": json.dumps(b)}
                            for i, b in enumerate(bodies)]}

    events = {
        "s3": s3_batch,
        "sqs-s3": sqs_of([s3_put(k) for k in AWKWARD_KEYS]),
        "sqs-eventbridge": sqs_of([generate_event("eventbridge", recordings, k) for k in AWKWARD_KEYS]),
        "eventbridge": generate_event("eventbridge", recordings, "site-a/pump/id_00/t=05:00.wav"),
    }
    envs = env_file(tmp_path, grades, LOG_LEVEL="WARNING")
    for name, event in events.items():
        result = run("local", "invoke", "ScoreUploadFunction", "-e", event_file(tmp_path, event, f"{name}.json"),
                     "-t", TEMPLATE, "--env-vars", envs, "--endpoint-url", s3_server.endpoint_url)
        assert result.exit_code == 0, (name, result.output)
        summary = json.loads(result.stdout)
        assert summary["errors"] == {} and summary.get("batchItemFailures", []) == [], (name, summary)
        assert summary["records"] == (1 if name == "eventbridge" else len(AWKWARD_KEYS)), (name, summary)
    rows = grades_of(s3, grades)
    assert sorted(r["key"] for r in rows) == sorted(AWKWARD_KEYS) and {r["status"] for r in rows} == {"ok"}


# --------------------------------------------------------------------------- watch against a failing store


def test_watch_retries_transient_storage_errors_and_grades_the_key_once_it_can(s3, s3_server, buckets, wav):
    import re

    from faultproxy import Fault, FaultProxy

    recordings, grades = buckets
    put(s3, recordings, KEY, wav)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        # botocore tries each call 6 times (max_attempts 5 retries): 6 faults fail one whole call.
        listing = proxy.add(Fault.internal_error(method="GET", query="list-type", times=6))
        reads = proxy.add(Fault.internal_error(path=re.escape(f"/{recordings}/{KEY}") + "$", times=6))
        result = run("watch", "--bucket", recordings, "--once", "--backoff", "0.01", "--endpoint-url", proxy.url,
                     "--output-bucket", grades)
    assert result.exit_code == 0, result.output
    assert listing.injected == 6 and reads.injected == 6
    assert result.output.count("next pass in") == 2  # the failed LIST, then the failed read: two retried passes
    (row,) = grades_of(s3, grades)  # the key was not marked seen when its read failed
    assert row["key"] == KEY and row["status"] == "ok"


def test_watch_once_gives_up_after_its_retries_in_one_line(s3, s3_server, buckets, wav, monkeypatch):
    import re

    monkeypatch.setenv("LOG_LEVEL", "ERROR")  # the handler's JSON logs aside, the output is the one Error line
    from faultproxy import Fault, FaultProxy

    recordings, grades = buckets
    put(s3, recordings, KEY, wav)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add(Fault.internal_error(path=re.escape(f"/{recordings}/{KEY}") + "$"))
        result = run("watch", "--bucket", recordings, "--once", "--retries", "2", "--backoff", "0.01",
                     "--endpoint-url", proxy.url, "--output-bucket", grades, "--quiet")
    assert_one_error_line(result, "gave up after 2 retries", KEY)
    assert grades_of(s3, grades) == []
