"""`signalcraft local invoke` against the real SAM CLI: its generated events, its parameter syntax, its samconfig.

The SAM CLI lives in its own virtualenv (it pins its own boto3/click); found through SIGNALCRAFT_SAM_CLI,
then PATH, then .venv-sam/bin/sam. Without it every test here skips. `sam local invoke` itself needs
Docker, so the parity is checked on what SAM computes without one: `generate-event`, its
CfnParameterOverridesType parser and its SamConfig reader (run with the SAM virtualenv's Python).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from signalcraft_core.io.audio import encode_wav
from signalcraft_core.local.cli.app import cli
from signalcraft_core.local.sam_template import (
    load_samconfig,
    parse_parameter_overrides,
)
from signalcraft_core.local.synth import SAMPLE_RATE, synthesize_clip
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.sinks import read_grades

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
KEY = "site-a/valve/id_02/Ventil öffnet+7 t=05:00.wav"  # space, '+', ':', '=', unicode: SAM encodes them all


def find_sam() -> Path | None:
    for candidate in (os.environ.get("SIGNALCRAFT_SAM_CLI"), shutil.which("sam"), str(ROOT / ".venv-sam" / "bin" / "sam")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


SAM = find_sam()
pytestmark = pytest.mark.skipif(SAM is None, reason="SAM CLI not found (SIGNALCRAFT_SAM_CLI, PATH, .venv-sam/bin/sam)")


@pytest.fixture(scope="module")
def sam_env(tmp_path_factory) -> dict[str, str]:
    """No telemetry, and SAM's ~/.aws-sam metadata in a scratch home."""
    return {**os.environ, "SAM_CLI_TELEMETRY": "0", "HOME": str(tmp_path_factory.mktemp("sam-home"))}


def sam_python() -> Path:
    python = SAM.parent / "python"
    if not python.is_file():
        pytest.skip(f"no Python next to {SAM} (SAM CLI not in a virtualenv): cannot ask its parser")
    return python


def run_sam_python(sam_env, code: str, payload) -> object:
    done = subprocess.run([str(sam_python()), "-c", code], input=json.dumps(payload), capture_output=True, text=True,
                          env=sam_env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def sam_event(sam_env) -> dict:
    done = subprocess.run([str(SAM), "local", "generate-event", "s3", "put", "--bucket", "B", "--key", KEY],
                          capture_output=True, text=True, env=sam_env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout[done.stdout.index("{"):])


# --------------------------------------------------------------------------- what SAM computes, compared


def test_the_sam_event_carries_the_key_encoded(sam_event):
    raw = sam_event["Records"][0]["s3"]["object"]["key"]
    assert raw != KEY and "%3A" in raw and " " not in raw  # so decoding is really exercised below


OVERRIDE_CASES = [
    "OutputPrefix=custom/ ModelPreference=level1",
    "ParameterKey=OutputPrefix,ParameterValue=pk/ ParameterKey=ModelPreference,ParameterValue=level2",
    'OutputPrefix="with space/" ModelPreference=level1',
    "OutputPrefix='single quoted/'",
    r"OutputPrefix=escaped\ space/",
    "ModelUri=s3://models/v1/?a=b",
    'ParameterKey=ModelUri,ParameterValue="s3://x y/"',
    "MachineTypes=pump,fan ModelPreference=hybrid",
    'OutputPrefix=""',
]


def test_parameter_overrides_parse_as_the_sam_cli_parses_them(sam_env):
    code = (
        "import json, sys\n"
        "from samcli.cli.types import CfnParameterOverridesType\n"
        "cases = json.load(sys.stdin)\n"
        "print(json.dumps([CfnParameterOverridesType().convert(c, None, None) for c in cases]))\n"
    )
    theirs = run_sam_python(sam_env, code, OVERRIDE_CASES)
    ours = [parse_parameter_overrides(case) for case in OVERRIDE_CASES]
    assert ours == theirs
    # SAM's OptionNargs hands several command-line words over as a tuple; the result is the same.
    words = run_sam_python(sam_env, code.replace("convert(c,", "convert(tuple(c),"), [["OutputPrefix=a/", "LogLevel=DEBUG"]])
    assert parse_parameter_overrides(["OutputPrefix=a/", "LogLevel=DEBUG"]) == words[0]


SAMCONFIG = """\
version = 0.1
[default.global.parameters]
region = "ap-south-1"
stack_name = "signalcraft-scoring"
[default.local_invoke.parameters]
parameter_overrides = "OutputPrefix=cfg/"
region = "eu-west-1"
[staging.local_invoke.parameters]
parameter_overrides = ["OutputPrefix=st/", "LogLevel=WARNING"]
debug = true
"""


@pytest.mark.parametrize("env", ["default", "staging", "absent"])
def test_samconfig_reads_as_the_sam_cli_reads_it(sam_env, tmp_path, env):
    path = tmp_path / "samconfig.toml"
    path.write_text(SAMCONFIG)
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from samcli.lib.config.samconfig import SamConfig\n"
        "path, env = json.load(sys.stdin)\n"
        "config = SamConfig(Path(path).parent, Path(path).name)\n"
        "try:\n"
        "    print(json.dumps(dict(config.get_all(['local', 'invoke'], 'parameters', env=env))))\n"
        "except KeyError:\n"
        "    print('{}')\n"
    )
    theirs = run_sam_python(sam_env, code, [str(path), env])
    assert (load_samconfig(path, env) or {}) == theirs


# --------------------------------------------------------------------------- the SAM event through each flag


@pytest.fixture
def world(s3, s3_server, make_bucket, monkeypatch, sam_event, tmp_path):
    """The SAM event's object in a bucket, the event pointing at it, a grades bucket; a clean environment."""
    for name in ("AWS_ENDPOINT_URL", "OUTPUT_BUCKET", "OUTPUT_PREFIX", "MODEL_URI", "MODEL_PREFERENCE", "LOG_LEVEL",
                 "AWS_PROFILE", "AWS_REGION", "SAM_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    recordings, grades = make_bucket(), make_bucket()
    wav = encode_wav(synthesize_clip("valve", None, np.random.default_rng(5), 2.0), SAMPLE_RATE)
    s3.put_object(Bucket=recordings, Key=KEY, Body=wav)
    event = json.loads(json.dumps(sam_event))
    record = event["Records"][0]["s3"]
    record["bucket"]["name"], record["bucket"]["arn"] = recordings, f"arn:aws:s3:::{recordings}"
    record["object"]["size"] = len(wav)
    path = tmp_path / "sam-event.json"
    path.write_text(json.dumps(event))
    yield {"s3": s3, "endpoint": s3_server.endpoint_url, "recordings": recordings, "grades": grades,
           "event": path, "folder": tmp_path}
    runtime.reset()


def invoke(world, *args, input: str | None = None, event: bool = True):
    base = ["local", "invoke", "ScoreUploadFunction", "-t", str(TEMPLATE), "--endpoint-url", world["endpoint"]]
    if event:
        base += ["-e", str(world["event"])]
    return CliRunner().invoke(cli, [*base, *map(str, args)], input=input, catch_exceptions=False)


def graded_under(world, prefix: str) -> list[dict]:
    return read_grades(f"s3://{world['grades']}/{prefix}", world["s3"]).to_pylist()


def assert_graded(world, result, prefix: str = "grades/") -> dict:
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == 1 and summary["errors"] == {}, summary
    assert all(name.startswith(prefix) for name in summary["written"])
    (row,) = graded_under(world, prefix)
    assert row["key"] == KEY and row["status"] == "ok"
    return summary


def test_parameter_overrides_space_syntax(world):
    result = invoke(world, "--parameter-overrides", f"GradesBucketName={world['grades']} OutputPrefix=custom/")
    assert_graded(world, result, "custom/")


def test_parameter_overrides_parameterkey_syntax(world):
    result = invoke(world, "--parameter-overrides",
                    f"ParameterKey=GradesBucketName,ParameterValue={world['grades']} "
                    "ParameterKey=OutputPrefix,ParameterValue=pk/")
    assert_graded(world, result, "pk/")


def test_env_vars(world):
    envs = world["folder"] / "env.json"
    envs.write_text(json.dumps({"Parameters": {"OUTPUT_BUCKET": world["grades"], "MAX_OBJECT_BYTES": "10"},
                                "ScoreUploadFunction": {"OUTPUT_PREFIX": "env/"}}))
    result = invoke(world, "--env-vars", envs)
    assert_graded(world, result, "env/")  # MAX_OBJECT_BYTES is not declared: ignored, so no too_large
    assert "Warning: MAX_OBJECT_BYTES" in result.stderr


def test_region(world):
    grades = f"--parameter-overrides=GradesBucketName={world['grades']}"
    assert_graded(world, invoke(world, "--region", "eu-west-3", grades))
    bad = invoke(world, "--region", "not a region!", grades)  # it really reaches boto3
    assert bad.exit_code != 0 and "not a region!" in bad.output and "Traceback" not in bad.output


def test_profile(world, s3_server, monkeypatch):
    """The profile's key is the one used: the shell's key is refused by the server, the profile's accepted."""
    key_id, secret = "AKIAPARITY" + uuid.uuid4().hex[:10].upper(), "parity-" + uuid.uuid4().hex
    s3_server.accept(key_id, secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASHELLKEYREFUSED0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "refused")
    credentials = world["folder"] / "credentials"
    credentials.write_text(f"[parity]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(world["folder"] / "no-config"))
    grades = f"--parameter-overrides=GradesBucketName={world['grades']}"
    assert_graded(world, invoke(world, "--profile", "parity", grades))
    missing = invoke(world, "--profile", "nosuch-profile", grades)
    assert missing.exit_code != 0 and "nosuch-profile" in missing.output and "Traceback" not in missing.output


def test_log_file(world):
    log_file = world["folder"] / "invoke.log"
    result = invoke(world, "-l", log_file, f"--parameter-overrides=GradesBucketName={world['grades']}")
    assert_graded(world, result)
    logged = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(entry["message"] == "graded" and entry["key"] == KEY for entry in logged)
    assert '"graded"' not in result.stderr


def test_config_file_and_config_env(world):
    (world["folder"] / "samconfig.toml").write_text(
        "version = 0.1\n"
        f'[parity.local_invoke.parameters]\nparameter_overrides = "GradesBucketName={world["grades"]} OutputPrefix=cfg/"\n')
    result = invoke(world, "--config-file", world["folder"] / "samconfig.toml", "--config-env", "parity")
    assert_graded(world, result, "cfg/")


def test_default_samconfig_next_to_the_template(world):
    folder = world["folder"] / "project"
    folder.mkdir()
    shutil.copy(TEMPLATE, folder / "template.yaml")
    (folder / "samconfig.toml").write_text(
        f'version = 0.1\n[default.local_invoke.parameters]\nparameter_overrides = ["GradesBucketName={world["grades"]}", '
        '"OutputPrefix=next-to-template/"]\n')
    result = CliRunner().invoke(cli, ["local", "invoke", "ScoreUploadFunction", "-t", str(folder / "template.yaml"),
                                      "-e", str(world["event"]), "--endpoint-url", world["endpoint"]])
    assert_graded(world, result, "next-to-template/")


def test_debug(world):
    result = invoke(world, "--debug", f"--parameter-overrides=GradesBucketName={world['grades']}")
    assert_graded(world, result)
    assert "Debug: parameters: GradesBucketName=" in result.stderr
    assert any(json.loads(line).get("level") in ("DEBUG", "INFO") for line in result.stderr.splitlines()
               if line.startswith("{"))


def test_event_from_stdin(world):
    result = invoke(world, "-e", "-", f"--parameter-overrides=GradesBucketName={world['grades']}",
                    input=world["event"].read_text(), event=False)
    assert_graded(world, result)


def test_unknown_parameter_is_one_error_line_naming_the_template_parameters(world):
    result = invoke(world, "--parameter-overrides", "OutputPrefx=typo/")
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: ")
    assert "OutputPrefx" in lines[0] and "OutputPrefix" in lines[0] and "GradesBucketName" in lines[0]
