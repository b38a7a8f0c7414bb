"""Least privilege in template.yaml (issue 12): who may read, write and delete what, KMS, buckets, DLQ.

The roles are read twice: from the template's own `Policies` (always), and from the CloudFormation
the SAM translator generates (the roles as deployed, including what SAM adds on its own: managed
policies, the EventInvokeConfig destination policy). The second needs `aws-sam-translator`
(`pip install aws-sam-translator`) and skips cleanly without it. Conditions are evaluated for given
parameter values, so "KMS statements only when KmsKeyArn is set" is checked both ways.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

import pytest

from signalcraft_core.local.sam_template import load_template

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
ASL = ROOT / "infra" / "statemachine" / "fleet_sweep.asl.json"

KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:signalcraft-alerts"
FUNCTIONS = ("ScoreUploadFunction", "FleetSweepFunction", "SweepBatchFunction")
STATE_MACHINE = "FleetSweepStateMachine"
PRINCIPALS = (*FUNCTIONS, STATE_MACHINE)
#: Managed policies SAM may attach; none of them grants anything on S3, KMS, SNS or EventBridge.
HARMLESS_MANAGED = {"AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess", "AWSXRayDaemonWriteAccess"}
NO_VALUE = {"Ref": "AWS::NoValue"}


# ---------------------------------------------------------------- condition evaluation


class _Drop(Exception):
    pass


def parameter_values(template: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    values.update({k: str(v) for k, v in (overrides or {}).items()})
    return values


def condition(template: Mapping[str, Any], name: str, params: Mapping[str, str]) -> bool:
    return bool(_value(template["Conditions"][name], template, params))


def _value(node: Any, template: Mapping[str, Any], params: Mapping[str, str]) -> Any:
    """The value of a condition expression (Equals / Not / And / Or / Condition / Ref to a parameter)."""
    if isinstance(node, dict) and len(node) == 1:
        (key, arg), = node.items()
        if key == "Ref":
            return params[arg]
        if key == "Condition":
            return condition(template, arg, params)
        if key == "Fn::Equals":
            left, right = (str(_value(a, template, params)) for a in arg)
            return left == right
        if key == "Fn::Not":
            return not _value(arg[0], template, params)
        if key == "Fn::And":
            return all(_value(a, template, params) for a in arg)
        if key == "Fn::Or":
            return any(_value(a, template, params) for a in arg)
    return node


def fold(node: Any, template: Mapping[str, Any], params: Mapping[str, str]) -> Any:
    """`node` with every Fn::If decided and AWS::NoValue removed (other intrinsics left as they are)."""

    def walk(item: Any) -> Any:
        if item == NO_VALUE:
            raise _Drop
        if isinstance(item, dict):
            if set(item) == {"Fn::If"}:
                name, yes, no = item["Fn::If"]
                return walk(yes if condition(template, name, params) else no)
            out = {}
            for key, value in item.items():
                try:
                    out[key] = walk(value)
                except _Drop:
                    continue
            return out
        if isinstance(item, list):
            out_list = []
            for value in item:
                try:
                    out_list.append(walk(value))
                except _Drop:
                    continue
            return out_list
        return item

    try:
        return walk(node)
    except _Drop:
        return None


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------- roles, two ways


def raw_roles(template: dict, params: Mapping[str, str]) -> dict[str, dict]:
    """{principal: {"statements": [...], "managed": set()}} from the template's Policies."""
    roles = {}
    for rid in PRINCIPALS:
        policies = fold(template["Resources"][rid]["Properties"].get("Policies", []), template, params)
        statements = []
        for policy in policies:
            assert isinstance(policy, dict) and set(policy) == {"Statement"}, (
                f"{rid}: {sorted(policy)}: use explicit statements, not SAM policy templates (S3CrudPolicy grants "
                "DeleteObject, PutObjectAcl, PutLifecycleConfiguration)"
            )
            statements += policy["Statement"]
        roles[rid] = {"statements": statements, "managed": set()}
    return roles


def sam_transform(template: dict, params: Mapping[str, str]) -> dict:
    """The CloudFormation the SAM translator makes of the template (as `sam deploy` would)."""
    translator = pytest.importorskip("samtranslator.translator.transform", reason="aws-sam-translator is not installed")
    from samtranslator.public.translator import ManagedPolicyLoader

    class NoIamLoader(ManagedPolicyLoader):
        def __init__(self) -> None:
            super().__init__(None)

        def load(self) -> dict[str, str]:
            return {}

    fragment = copy.deepcopy(template)
    for res in fragment["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":  # `sam build` sets ImageUri
            res["Properties"]["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/signalcraft:latest"
    machine = fragment["Resources"][STATE_MACHINE]["Properties"]
    machine.pop("DefinitionUri")  # `sam package` uploads it; inline it instead
    machine["Definition"] = json.loads(ASL.read_text(encoding="utf-8"))
    return translator.transform(fragment, dict(params), NoIamLoader())


def sam_roles(template: dict, params: Mapping[str, str]) -> dict[str, dict]:
    out = sam_transform(template, params)
    resources = out["Resources"]
    roles = {}
    for rid in PRINCIPALS:
        role_ref = resources[rid]["Properties"]["RoleArn" if rid == STATE_MACHINE else "Role"]
        role = fold(resources[role_ref["Fn::GetAtt"][0]]["Properties"], out, params)
        statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        managed = {str(arn).rsplit("/", 1)[-1] for arn in role.get("ManagedPolicyArns", [])}
        roles[rid] = {"statements": statements, "managed": managed}
    # Every role of the stack belongs to one of the principals above or to the scheduler.
    other = [rid for rid, r in resources.items() if r["Type"] == "AWS::IAM::Role" and not rid.startswith(PRINCIPALS)]
    assert other == []
    return roles


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template(TEMPLATE)


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SAM translator resolves AWS::Region from boto3's chain."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


ROLE_SOURCES = ["template", "sam-translator"]


def roles_for(source: str, template: dict, overrides: Mapping[str, Any] | None = None) -> dict[str, dict]:
    params = parameter_values(template, overrides)
    return raw_roles(template, params) if source == "template" else sam_roles(template, params)


def allowed(role: dict, action: str) -> list[dict]:
    """Allow statements whose actions (wildcards included) cover `action`."""
    return [
        s for s in role["statements"]
        if s.get("Effect") == "Allow" and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _as_list(s["Action"]))
    ]


def who_may(roles: Mapping[str, dict], action: str) -> set[str]:
    return {rid for rid, role in roles.items() if allowed(role, action)}


def resources_of(statements: list[dict]) -> str:
    return json.dumps([s["Resource"] for s in statements], sort_keys=True)


# ---------------------------------------------------------------- who may do what


@pytest.mark.parametrize("source", ROLE_SOURCES)
def test_only_the_compaction_function_may_delete_and_only_grades(source: str, template: dict) -> None:
    roles = roles_for(source, template)
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:DeleteBucket"):
        expected = {"FleetSweepFunction"} if action == "s3:DeleteObject" else set()
        assert who_may(roles, action) == expected, action
    (delete,) = allowed(roles["FleetSweepFunction"], "s3:DeleteObject")
    assert delete["Resource"] == {"Fn::Sub": "${GradesBucket.Arn}/${OutputPrefix}*"}


@pytest.mark.parametrize("source", ROLE_SOURCES)
def test_no_role_touches_acls_lifecycle_or_bucket_policy(source: str, template: dict) -> None:
    roles = roles_for(source, template, {"KmsKeyArn": KMS_ARN, "AlertTopicArn": TOPIC_ARN, "ModelBucketName": "models"})
    for action in ("s3:PutObjectAcl", "s3:PutObjectVersionAcl", "s3:PutBucketAcl", "s3:PutLifecycleConfiguration",
                   "s3:PutBucketPolicy", "s3:PutEncryptionConfiguration", "s3:PutBucketNotification"):
        assert who_may(roles, action) == set(), action
    for rid, role in roles.items():
        assert role["managed"] <= HARMLESS_MANAGED, rid


@pytest.mark.parametrize("source", ROLE_SOURCES)
def test_each_role_has_exactly_its_s3_actions(source: str, template: dict) -> None:
    roles = roles_for(source, template)

    def s3_actions(rid: str) -> set[str]:
        return {a for s in roles[rid]["statements"] for a in _as_list(s["Action"]) if a.startswith("s3:")}

    read = {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"}
    assert s3_actions("ScoreUploadFunction") == read | {"s3:PutObject"}
    assert s3_actions("SweepBatchFunction") == read | {"s3:PutObject"}
    assert s3_actions("FleetSweepFunction") == read | {"s3:PutObject", "s3:DeleteObject"}
    assert s3_actions(STATE_MACHINE) == {"s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload",
                                         "s3:ListMultipartUploadParts"}
    # Writes go under the grades prefix, the sweep state and the alert markers (the state machine's map
    # manifests under sweep-runs/) only.
    for rid in FUNCTIONS:
        assert resources_of(allowed(roles[rid], "s3:PutObject")) == json.dumps(
            [{"Fn::Sub": "${GradesBucket.Arn}/${OutputPrefix}*"},
             [{"Fn::Sub": "${GradesBucket.Arn}/_signalcraft/*"}, {"Fn::Sub": "${GradesBucket.Arn}/_alerts/*"}]])
    assert resources_of(allowed(roles[STATE_MACHINE], "s3:PutObject")) == json.dumps(
        [{"Fn::Sub": "${GradesBucket.Arn}/sweep-runs/*"}])
    # The upload function never reads grade records (only the markers and state beside them); the
    # state machine reads no object at all.
    assert "OutputPrefix" not in resources_of(allowed(roles["ScoreUploadFunction"], "s3:GetObject"))
    assert allowed(roles[STATE_MACHINE], "s3:GetObject") == []
    (listing,) = allowed(roles[STATE_MACHINE], "s3:ListBucket")
    assert "recordings" in json.dumps(listing["Resource"])


@pytest.mark.parametrize("source", ROLE_SOURCES)
def test_state_machine_invokes_only_the_two_sweep_functions(source: str, template: dict) -> None:
    roles = roles_for(source, template)
    invoke = allowed(roles[STATE_MACHINE], "lambda:InvokeFunction")
    targets = {r["Fn::GetAtt"][0] if "Fn::GetAtt" in r else r["Fn::Sub"].split(".")[0].lstrip("${")
               for s in invoke for r in _as_list(s["Resource"])}
    assert targets == {"SweepBatchFunction", "FleetSweepFunction"}
    assert who_may(roles, "lambda:InvokeFunction") == {STATE_MACHINE}


@pytest.mark.parametrize("source", ROLE_SOURCES)
def test_kms_statements_only_when_a_key_is_given(source: str, template: dict) -> None:
    without = roles_for(source, template)
    assert who_may(without, "kms:Decrypt") == who_may(without, "kms:GenerateDataKey") == set()
    assert not [a for r in without.values() for s in r["statements"] for a in _as_list(s["Action"]) if a.startswith("kms:")]
    with_key = roles_for(source, template, {"KmsKeyArn": KMS_ARN})
    assert who_may(with_key, "kms:Decrypt") == who_may(with_key, "kms:GenerateDataKey") == set(PRINCIPALS)
    for role in with_key.values():
        assert resources_of(allowed(role, "kms:GenerateDataKey")) == json.dumps([{"Ref": "KmsKeyArn"}])
        assert not allowed(role, "kms:CreateGrant") and not allowed(role, "kms:PutKeyPolicy")


@pytest.mark.parametrize("source", ROLE_SOURCES)
def test_alert_permissions(source: str, template: dict) -> None:
    assert who_may(roles_for(source, template), "sns:Publish") == set()
    with_topic = roles_for(source, template, {"AlertTopicArn": TOPIC_ARN})
    assert who_may(with_topic, "sns:Publish") == set(FUNCTIONS)
    for rid in FUNCTIONS:
        assert resources_of(allowed(with_topic[rid], "sns:Publish")) == json.dumps([{"Ref": "AlertTopicArn"}])
        (put,) = allowed(with_topic[rid], "events:PutEvents")
        assert put["Resource"]["Fn::Sub"].endswith(":event-bus/${AlertEventBusName}")
    assert who_may(with_topic, "events:PutEvents") == set(FUNCTIONS)


def test_the_upload_dead_letter_policy_is_sams_send_only(template: dict) -> None:
    roles = roles_for("sam-translator", template)
    sends = allowed(roles["ScoreUploadFunction"], "sqs:SendMessage")
    assert sends and all(set(_as_list(s["Action"])) <= {"sqs:SendMessage"} for s in sends)
    assert "ScoreUploadDLQ" in resources_of(sends)
    assert who_may(roles, "sqs:SendMessage") == {"ScoreUploadFunction"}


# ---------------------------------------------------------------- buckets, concurrency, queue


def _sse(template: dict, bucket: str, params: Mapping[str, str]) -> dict:
    props = fold(template["Resources"][bucket]["Properties"], template, params)
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    return rule


@pytest.mark.parametrize("bucket", ["RecordingsBucket", "GradesBucket"])
def test_buckets_use_sse_kms_when_a_key_is_given_else_sse_s3(template: dict, bucket: str) -> None:
    assert _sse(template, bucket, parameter_values(template)) == {
        "ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}
    }
    assert _sse(template, bucket, parameter_values(template, {"KmsKeyArn": KMS_ARN})) == {
        "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Ref": "KmsKeyArn"}},
        "BucketKeyEnabled": True,
    }


@pytest.mark.parametrize("bucket,kind", [("RecordingsBucket", "recordings"), ("GradesBucket", "grades")])
def test_bucket_names_are_unique_per_account_and_region_and_retained(template: dict, bucket: str, kind: str) -> None:
    res = template["Resources"][bucket]
    assert (res["DeletionPolicy"], res["UpdateReplacePolicy"]) == ("Retain", "Retain")
    parameter = f"{bucket}Name"
    assert template["Parameters"][parameter]["Default"] == ""
    default = fold(res["Properties"]["BucketName"], template, parameter_values(template))
    assert default == {"Fn::Sub": f"${{AWS::StackName}}-{kind}-${{AWS::AccountId}}-${{AWS::Region}}"}
    given = fold(res["Properties"]["BucketName"], template, parameter_values(template, {parameter: "acme-x"}))
    assert given == {"Ref": parameter}


def test_the_bucket_name_expression_is_the_same_everywhere(template: dict) -> None:
    """Roles, schedule and state machine name the recordings bucket by the same expression as the bucket."""
    expression = template["Resources"]["RecordingsBucket"]["Properties"]["BucketName"]
    text = json.dumps(template["Resources"])
    uses = text.count(json.dumps(expression))
    assert uses >= 1 + 3 * 2 + 1 + 1 + 1 + 1  # bucket, 3 roles x (get, list), SM list, SM substitution, schedule, SWEEP_BUCKET
    assert text.count("-recordings-${AWS::AccountId}-${AWS::Region}") == uses  # no other spelling


def test_reserved_concurrency_defaults_to_no_reservation(template: dict) -> None:
    assert template["Parameters"]["ReservedConcurrency"]["Default"] == 0
    raw = template["Resources"]["ScoreUploadFunction"]["Properties"]
    assert fold(raw, template, parameter_values(template)).get("ReservedConcurrentExecutions") is None
    assert fold(raw, template, parameter_values(template, {"ReservedConcurrency": 10}))[
        "ReservedConcurrentExecutions"] == {"Ref": "ReservedConcurrency"}


def test_uploads_notify_for_lower_and_upper_case_wav(template: dict) -> None:
    events = template["Resources"]["ScoreUploadFunction"]["Properties"]["Events"]
    suffixes = []
    for event in events.values():
        assert event["Type"] == "S3"
        assert event["Properties"]["Bucket"] == {"Ref": "RecordingsBucket"}
        (rule,) = event["Properties"]["Filter"]["S3Key"]["Rules"]
        assert rule["Name"] == "suffix"
        suffixes.append(rule["Value"])
    assert sorted(suffixes) == [".WAV", ".wav"]


def test_dead_letter_queue_is_encrypted(template: dict) -> None:
    props = template["Resources"]["ScoreUploadDLQ"]["Properties"]
    assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props


# ---------------------------------------------------------------- sam validate --lint (optional)


def test_sam_validate_lint_is_clean(tmp_path: Path) -> None:
    local = ROOT / ".venv-sam" / "bin" / "sam"  # `make test` installs it there
    sam = str(local) if local.exists() else shutil.which("sam")
    if sam is None:
        pytest.skip("the SAM CLI (sam) is not installed (.venv-sam or PATH)")
    result = subprocess.run([sam, "validate", "--lint", "--template-file", str(TEMPLATE), "--region", "us-east-1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
