"""template.yaml, the state machine, the MinIO setup and `signalcraft_core.local.sam_template` agree with each other."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from signalcraft_core.local.sam_template import (
    FunctionSpec,
    function_ids,
    function_spec,
    load_env_vars,
    load_template,
)

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
ASL = ROOT / "infra" / "statemachine" / "fleet_sweep.asl.json"
COMPOSE = ROOT / "infra" / "minio" / "docker-compose.yml"
SETUP_SH = ROOT / "infra" / "minio" / "setup.sh"
DOCKERFILE = ROOT / "infra" / "Dockerfile"

HANDLERS = {
    "ScoreUploadFunction": "handlers.score_upload.handler",
    "FleetSweepFunction": "handlers.fleet_sweep.handler",
    "SweepBatchFunction": "handlers.sweep_batch.handler",
}
WEBHOOK_ARN = "arn:minio:sqs::signalcraft:webhook"


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def resources(template: dict) -> dict:
    return template["Resources"]


@pytest.fixture(scope="module")
def asl_text() -> str:
    return ASL.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def asl(asl_text: str) -> dict:
    return json.loads(asl_text)


def _lint(path: Path) -> list[tuple[str, str]]:
    from cfnlint.api import lint_file

    return [(m.rule.id, f"{m.rule.id} {m.message} ({path.name}:{m.linenumber})") for m in lint_file(path)]


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _states(definition: dict) -> Iterator[tuple[str, dict]]:
    """Every state, including those nested in Map ItemProcessors."""
    for name, state in definition["States"].items():
        yield name, state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from _states(processor)


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))


# ---------------------------------------------------------------- template.yaml


def test_cfn_lint_finds_no_errors_or_warnings() -> None:
    findings = [text for rule_id, text in _lint(TEMPLATE) if rule_id[0] in "EW"]
    assert findings == []


def test_logical_ids_have_the_expected_types(resources: dict) -> None:
    expected = {
        "ScoreUploadFunction": "AWS::Serverless::Function",
        "FleetSweepFunction": "AWS::Serverless::Function",
        "SweepBatchFunction": "AWS::Serverless::Function",
        "FleetSweepStateMachine": "AWS::Serverless::StateMachine",
        "RecordingsBucket": "AWS::S3::Bucket",
        "GradesBucket": "AWS::S3::Bucket",
        "ScoreUploadDLQ": "AWS::SQS::Queue",
    }
    assert {rid: resources[rid]["Type"] for rid in expected if rid in resources} == expected


def test_functions_share_one_image_with_their_own_command(resources: dict) -> None:
    for rid, handler in HANDLERS.items():
        props, meta = resources[rid]["Properties"], resources[rid]["Metadata"]
        assert props["PackageType"] == "Image"
        assert props["ImageConfig"]["Command"] == [handler]
        assert (ROOT / meta["DockerContext"] / meta["Dockerfile"]).resolve() == DOCKERFILE
    tags = {resources[rid]["Metadata"]["DockerTag"] for rid in HANDLERS}
    assert len(tags) == 1


def test_upload_event_is_wav_object_created_on_the_recordings_bucket(resources: dict) -> None:
    events = resources["ScoreUploadFunction"]["Properties"]["Events"]
    s3_events = [e for e in events.values() if e["Type"] == "S3"]
    suffixes = set()
    for s3_event in s3_events:
        props = s3_event["Properties"]
        assert props["Bucket"] == {"Ref": "RecordingsBucket"}
        assert props["Events"] in ("s3:ObjectCreated:*", ["s3:ObjectCreated:*"])
        rules = {r["Name"]: r["Value"] for r in props["Filter"]["S3Key"]["Rules"]}
        suffixes.add(rules.pop("suffix"))
        assert rules == {}
    assert suffixes == {".wav", ".WAV"}  # S3 suffix filters are case-sensitive


def test_failed_uploads_go_to_the_dlq_after_two_retries(resources: dict) -> None:
    config = resources["ScoreUploadFunction"]["Properties"]["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 2
    on_failure = config["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    assert on_failure["Destination"] == {"Fn::GetAtt": ["ScoreUploadDLQ", "Arn"]}


def test_upload_concurrency_comes_from_the_parameter(template: dict, resources: dict) -> None:
    value = resources["ScoreUploadFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert value == {"Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}
    assert template["Parameters"]["ReservedConcurrency"]["Default"] == 0  # no reservation: new accounts deploy


def test_no_policy_references_the_recordings_bucket_resource(template: dict) -> None:
    """Ref/GetAtt of RecordingsBucket in a role closes bucket -> notification -> function -> role -> bucket."""
    policy_trees = [
        res["Properties"].get("Policies", [])
        for res in template["Resources"].values()
        if res["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine")
    ] + [res for res in template["Resources"].values() if res["Type"].startswith("AWS::IAM::")]
    assert policy_trees, "no policies found at all"
    for tree in policy_trees:
        for node in _walk(tree):
            assert node != {"Ref": "RecordingsBucket"}
            if isinstance(node, dict) and "Fn::GetAtt" in node:
                assert node["Fn::GetAtt"][0] != "RecordingsBucket"
            if isinstance(node, dict) and "Fn::Sub" in node:
                assert "${RecordingsBucket." not in json.dumps(node)
                assert "${RecordingsBucket}" not in json.dumps(node)


def test_state_machine_may_start_and_stop_its_own_child_executions(resources: dict) -> None:
    props = resources["FleetSweepStateMachine"]["Properties"]
    statements = [s for p in props["Policies"] if "Statement" in p for s in p["Statement"]]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"states:StartExecution", "states:DescribeExecution", "states:StopExecution"} <= actions
    resources_text = json.dumps([s["Resource"] for s in statements])
    assert "FleetSweepStateMachine" not in resources_text  # named, not referenced: no cycle
    name = props["Name"]["Fn::Sub"]
    assert f"stateMachine:{name}" in resources_text
    invoke = [s for s in statements if s["Action"] in ("lambda:InvokeFunction", ["lambda:InvokeFunction"])]
    invoked = {r["Fn::GetAtt"][0] for s in invoke for r in s["Resource"] if "Fn::GetAtt" in r}
    assert invoked == {"SweepBatchFunction", "FleetSweepFunction"}


def test_schedule_input_is_json_naming_the_recordings_bucket(resources: dict) -> None:
    events = resources["FleetSweepStateMachine"]["Properties"]["Events"]
    (schedule,) = [e for e in events.values() if e["Type"] == "ScheduleV2"]
    assert schedule["Properties"]["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    raw, variables = schedule["Properties"]["Input"]["Fn::Sub"]
    assert variables["Bucket"] == resources["RecordingsBucket"]["Properties"]["BucketName"]
    payload = json.loads(raw.replace("${Bucket}", "some-bucket").replace("${SweepPrefix}", "pump/"))
    assert payload == {"bucket": "some-bucket", "prefix": "pump/", "date": None, "mode": "incremental"}


# ---------------------------------------------------------------- state machine


def test_state_machine_is_a_distributed_map_over_an_s3_listing(asl: dict) -> None:
    maps = [s for _, s in _states(asl) if s["Type"] == "Map"]
    (sweep,) = maps
    assert sweep["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert sweep["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
    assert set(sweep["ItemReader"]["Parameters"]) == {"Bucket.$", "Prefix.$"}
    batcher = sweep["ItemBatcher"]
    assert "MaxItemsPerBatch" in batcher or "MaxItemsPerBatchPath" in batcher
    assert batcher["BatchInput"] == {"bucket.$": "$.bucket", "prefix.$": "$.prefix", "date.$": "$.date",
                                     "mode.$": "$.mode"}
    assert "ToleratedFailurePercentage" in sweep


def test_children_invoke_the_batch_function_and_the_day_is_compacted(asl: dict) -> None:
    tasks = {name: s for name, s in _states(asl) if s.get("Resource") == "arn:aws:states:::lambda:invoke"}
    by_function = {(t.get("Parameters") or t["Arguments"])["FunctionName"]: t for t in tasks.values()}
    batch = by_function["${SweepBatchFunctionArn}"]
    assert batch["Resource"] == "arn:aws:states:::lambda:invoke"
    assert batch["Parameters"]["Payload.$"] == "$"
    retried = {e for r in batch["Retry"] for e in r["ErrorEquals"]}
    assert {"Lambda.TooManyRequestsException", "Lambda.ServiceException"} <= retried
    # throttles back off; a batch stopped at its deadline is retried at once (it carries on, see serverless.py)
    assert all(r["BackoffRate"] > 1 for r in batch["Retry"] if r["ErrorEquals"] != ["BatchDeadline"])
    assert "BatchDeadline" in retried
    compact = by_function["${FleetSweepFunctionArn}"]
    payload = compact["Arguments"]["Payload"]   # JSONata: the sweep's outcome is computed (test_template_sweep_state.py)
    assert {k: payload[k] for k in ("action", "bucket", "prefix", "date", "mode")} == {
        "action": "compact", "bucket": "{% $states.input.bucket %}", "prefix": "{% $states.input.prefix %}",
        "date": "{% $states.input.date %}", "mode": "{% $states.input.mode %}"}
    assert set(payload) == {"action", "bucket", "prefix", "date", "mode", "started", "complete"}


def test_every_placeholder_has_a_definition_substitution(resources: dict, asl_text: str) -> None:
    substitutions = set(resources["FleetSweepStateMachine"]["Properties"]["DefinitionSubstitutions"])
    assert _placeholders(asl_text) == substitutions


def test_substituted_definition_passes_the_step_functions_schema(tmp_path: Path, asl_text: str) -> None:
    """cfn-lint validates inline ASL (E3601) but not a DefinitionUri file: inline it to check it."""

    def as_stack(text: str) -> Path:
        for name in _placeholders(text):
            value = "200" if name.startswith("Sweep") and not name.endswith("Arn") else f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
            value = "bucket-name" if name.endswith("BucketName") else value
            text = text.replace("${" + name + "}", value)
        stack = {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {
                "Sweep": {
                    "Type": "AWS::StepFunctions::StateMachine",
                    "Properties": {"RoleArn": "arn:aws:iam::123456789012:role/sweep", "Definition": json.loads(text)},
                }
            },
        }
        path = tmp_path / f"stack{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(stack, indent=1))
        return path

    assert [text for _, text in _lint(as_stack(asl_text))] == []
    # The check is live: a misspelt field is reported.
    broken = asl_text.replace('"ToleratedFailurePercentage"', '"ToleratedFailurePercent"')
    assert "E3601" in {rule_id for rule_id, _ in _lint(as_stack(broken))}


# ---------------------------------------------------------------- sam_template


def test_function_spec_reads_handlers_and_environment(template: dict) -> None:
    params = template["Parameters"]
    assert function_ids(template) == list(HANDLERS)
    for rid, handler in HANDLERS.items():
        spec = function_spec(template, rid)
        assert isinstance(spec, FunctionSpec)
        assert spec.handler == handler
        assert (spec.module, spec.function) == tuple(handler.rsplit(".", 1))
        # Empty bucket-name parameters: <stack>-<kind>-<account>-<region>, with sam local's pseudo parameters.
        assert spec.environment["OUTPUT_BUCKET"] == "local-grades-123456789012-us-east-1"
        assert spec.environment["OUTPUT_PREFIX"] == params["OutputPrefix"]["Default"]
        assert spec.environment["MODEL_URI"] == ""
        assert spec.environment["MODEL_PREFERENCE"] == "hybrid"
        assert spec.environment["LOG_LEVEL"] == "INFO"
        assert all(isinstance(v, str) for v in spec.environment.values())
    sweep_env = function_spec(template, "FleetSweepFunction").environment
    assert sweep_env["SWEEP_BUCKET"] == "local-recordings-123456789012-us-east-1"  # merged with Globals
    assert sweep_env["SWEEP_PREFIX"] == params["SweepPrefix"]["Default"] == ""
    named = function_spec(template, "FleetSweepFunction", {"RecordingsBucketName": "acme-rec", "GradesBucketName": "acme-gr"})
    assert (named.environment["SWEEP_BUCKET"], named.environment["OUTPUT_BUCKET"]) == ("acme-rec", "acme-gr")
    assert "SWEEP_BUCKET" not in function_spec(template, "ScoreUploadFunction").environment
    assert function_spec(template, "ScoreUploadFunction").timeout == 60
    assert function_spec(template, "SweepBatchFunction").timeout == 900
    assert function_spec(template, "ScoreUploadFunction").memory_mb < function_spec(template, "FleetSweepFunction").memory_mb


def test_parameter_overrides_reach_the_environment(template: dict) -> None:
    spec = function_spec(
        template, "SweepBatchFunction", {"GradesBucketName": "my-grades", "ModelUri": "s3://m/v1/"}
    )
    assert spec.environment["OUTPUT_BUCKET"] == "my-grades"
    assert spec.environment["MODEL_URI"] == "s3://m/v1/"
    assert function_spec(template, "SweepBatchFunction").environment["OUTPUT_BUCKET"] != "my-grades"


def test_env_vars_file_function_section_wins(tmp_path: Path, template: dict) -> None:
    path = tmp_path / "env.json"
    path.write_text(
        json.dumps(
            {
                "Parameters": {"LOG_LEVEL": "DEBUG", "OUTPUT_BUCKET": "everyone", "AWS_ENDPOINT_URL": "http://localhost:9000"},
                "ScoreUploadFunction": {"OUTPUT_BUCKET": "just-me", "RETRIES": 3, "DRY_RUN": True},
            }
        )
    )
    mine = load_env_vars(path, "ScoreUploadFunction")
    assert mine == {
        "LOG_LEVEL": "DEBUG",
        "OUTPUT_BUCKET": "just-me",
        "AWS_ENDPOINT_URL": "http://localhost:9000",
        "RETRIES": "3",
        "DRY_RUN": "true",
    }
    assert load_env_vars(path, "SweepBatchFunction")["OUTPUT_BUCKET"] == "everyone"
    spec = function_spec(template, "ScoreUploadFunction").with_environment(mine)
    assert spec.environment["OUTPUT_BUCKET"] == "just-me"
    assert spec.environment["MODEL_PREFERENCE"] == "hybrid"  # untouched template value stays


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '{"Parameters": ["A"]}', '{"Parameters": {"A": {"b": 1}}}'])
def test_bad_env_vars_file_is_a_value_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "env.json"
    path.write_text(content)
    with pytest.raises(ValueError):
        load_env_vars(path, "ScoreUploadFunction")


def test_unknown_function_lists_the_known_ones(template: dict) -> None:
    with pytest.raises(ValueError) as info:
        function_spec(template, "ScoreUpload")
    assert all(rid in str(info.value) for rid in HANDLERS)
    with pytest.raises(ValueError):
        function_spec(template, "RecordingsBucket")  # a resource, but not a function


SHORT_TAGS_TEMPLATE = """\
AWSTemplateFormatVersion: 2010-09-09
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
  NoDefault: {Type: String}
Mappings:
  Sizes:
    dev: {Memory: 256}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  NotProd: !Not [!Condition IsProd]
Globals:
  Function:
    Handler: handlers/zip_fn.handler
    Timeout: 30
    Environment:
      Variables:
        FROM_GLOBALS: kept
        SHADOWED: global
Resources:
  Bucket:
    Type: AWS::S3::Bucket
  ZipFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      MemorySize: !FindInMap [Sizes, !Ref Stage, Memory]
      Environment:
        Variables:
          SHADOWED: function
          SUB: !Sub "${Stage}-${AWS::Region}-${AWS::AccountId}"
          SUB_VARS: !Sub ["${X}/${!Literal}", {X: !Ref Stage}]
          JOINED: !Join ["+", !Ref Names]
          PICKED: !Select [1, !Split [",", "x,y,z"]]
          CHOSEN: !If [IsProd, big, small]
          NEGATED: !If [NotProd, yes-not-prod, prod]
          GETATT: !GetAtt Bucket.Arn
          RESOURCE_REF: !Ref Bucket
          SUB_OF_RESOURCE: !Sub "${Bucket.Arn}/x"
          DROPPED: !If [IsProd, present, !Ref AWS::NoValue]
          MISSING_PARAM: !Ref NoDefault
          FLAG: true
          NUMBER: 5
  Plain:
    Type: AWS::Lambda::Function
    Properties:
      Handler: app.main
      Timeout: !Ref AWS::NoValue
"""


def test_short_tags_and_intrinsics_resolve_like_sam_local(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(SHORT_TAGS_TEMPLATE)
    template = load_template(path)
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"  # not a datetime.date
    assert template["Resources"]["ZipFunction"]["Properties"]["Environment"]["Variables"]["GETATT"] == {
        "Fn::GetAtt": ["Bucket", "Arn"]
    }
    spec = function_spec(template, "ZipFunction")
    assert spec.handler == "handlers.zip_fn.handler"
    assert (spec.timeout, spec.memory_mb) == (30, 256)
    assert spec.environment == {
        "FROM_GLOBALS": "kept",
        "SHADOWED": "function",
        "SUB": "dev-us-east-1-123456789012",
        "SUB_VARS": "dev/${Literal}",
        "JOINED": "a+b+c",
        "PICKED": "y",
        "CHOSEN": "small",
        "NEGATED": "yes-not-prod",
        "GETATT": "",
        "RESOURCE_REF": "",
        "SUB_OF_RESOURCE": "",
        "MISSING_PARAM": "",
        "FLAG": "true",
        "NUMBER": "5",
    }
    prod = function_spec(template, "ZipFunction", {"Stage": "prod", "NoDefault": "given"})
    assert (prod.environment["CHOSEN"], prod.environment["DROPPED"], prod.environment["MISSING_PARAM"]) == (
        "big",
        "present",
        "given",
    )
    assert prod.memory_mb is None  # no "prod" row in the mapping
    plain = function_spec(template, "Plain")
    assert (plain.handler, plain.environment, plain.timeout) == ("app.main", {}, None)


def test_unknown_short_tag_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text("Resources:\n  X:\n    Type: !Bogus thing\n")
    with pytest.raises(ValueError, match=r"line 3: unknown CloudFormation tag !Bogus"):
        load_template(path)   # one line naming the place, as every bad template (sam_template._yaml_load)


# ---------------------------------------------------------------- image and MinIO


def test_dockerfile_builds_the_lambda_image_the_template_expects(resources: dict) -> None:
    """The image holds the runtime only: the floors the handlers import, no training libraries, no local tools."""
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM .+$", text, re.M) == ["FROM public.ecr.aws/lambda/python:3.11"]
    assert not re.search(r"torch|scikit|sklearn", text.split("\n# ", 1)[1].split("FROM", 1)[1])  # nothing installs them
    assert "['project']['dependencies']" in text and "[test" not in text and "[train" not in text
    copied = set(re.findall(r"\$\{LAMBDA_TASK_ROOT\}/(signalcraft_core/\w+)/$", text, re.M))
    copied |= {f"signalcraft_core/{m}" for m in re.findall(r"signalcraft_core/(\w+)\.py", text)}
    for folder in ("handlers", "models"):
        assert re.search(rf"^COPY {folder}/ \$\{{LAMBDA_TASK_ROOT\}}/{folder}/$", text, re.M)
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("signalcraft_core", "handlers")
    used = set()
    for handler in ("handlers.score_upload", "handlers.fleet_sweep", "handlers.sweep_batch"):
        for module in graph.find_upstream_modules(handler) | {handler}:
            parts = module.split(".")
            if parts[0] == "signalcraft_core" and len(parts) > 1:
                used.add("signalcraft_core/" + parts[1])
    assert used <= copied, f"the handlers import {sorted(used - copied)}, which the image lacks"
    assert not copied & {"signalcraft_core/training", "signalcraft_core/analysis", "signalcraft_core/local"}
    (cmd,) = re.findall(r"^CMD (.+)$", text, re.M)
    assert json.loads(cmd) == resources["ScoreUploadFunction"]["Properties"]["ImageConfig"]["Command"]


def test_minio_compose_wires_the_webhook_and_the_template_buckets(template: dict) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    minio = compose["services"]["minio"]
    env = minio["environment"]
    assert env["MINIO_NOTIFY_WEBHOOK_ENABLE_signalcraft"] == "on"
    assert env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_signalcraft"].endswith(":8765/")
    assert {"9000:9000", "9001:9001"} <= set(minio["ports"])
    init = compose["services"]["init"]
    script = "\n".join(init["command"])
    assert f"mc event add \"local/$$RECORDINGS_BUCKET\" {WEBHOOK_ARN} --event put --suffix .wav" in script
    # The template's names default to per-stack names; locally, samconfig.toml's local_invoke section
    # passes MinIO's bucket names as parameters (sam local invoke reads it; so can `signalcraft local invoke`).
    params = template["Parameters"]
    tomllib = pytest.importorskip("tomllib")
    samconfig = tomllib.loads((ROOT / "samconfig.toml").read_text())
    overrides = samconfig["default"]["local_invoke"]["parameters"]["parameter_overrides"]
    overrides = dict(item.split("=", 1) for item in (overrides.split() if isinstance(overrides, str) else overrides))
    assert {k: overrides[k] for k in ("RecordingsBucketName", "GradesBucketName")} == {
        "RecordingsBucketName": init["environment"]["RECORDINGS_BUCKET"],
        "GradesBucketName": init["environment"]["GRADES_BUCKET"],
    }
    for name in overrides:
        assert name in params
        assert re.fullmatch(params[name].get("AllowedPattern", ".*"), overrides[name])
    assert "parameter_overrides" not in samconfig["default"].get("deploy", {}).get("parameters", {})


def test_setup_script_is_valid_bash_for_the_same_target() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    subprocess.run([bash, "-n", str(SETUP_SH)], check=True)
    text = SETUP_SH.read_text()
    assert WEBHOOK_ARN in text and "--suffix .wav" in text and "notify_webhook:signalcraft" in text
