"""template.yaml operations (issue 15) and fleet (issue 11): alarms, log groups, tracing, Powertools and
alert environment, the incremental / backfill sweep mode, and the Athena table over FILE_SCHEMA."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from test_template_policies import FUNCTIONS, TOPIC_ARN, fold, parameter_values

from signalcraft_core.local.sam_template import function_spec, load_template
from signalcraft_core.pipeline.records import (
    FILE_SCHEMA,
    GRADE_SCHEMA,
    PARTITION_COLUMNS,
)

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
ASL = ROOT / "infra" / "statemachine" / "fleet_sweep.asl.json"
README = ROOT / "infra" / "README.md"


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def resources(template: dict) -> dict:
    return template["Resources"]


def _of_type(resources: dict, kind: str) -> dict[str, dict]:
    return {rid: r for rid, r in resources.items() if r["Type"] == kind}


# ---------------------------------------------------------------- alarms


def _alarm_targets(resources: dict) -> dict[tuple[str, str], dict]:
    """(metric, what it watches) -> alarm properties."""
    out = {}
    for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        (dim,) = props["Dimensions"]
        value = dim["Value"]
        target = value["Ref"] if "Ref" in value else value["Fn::GetAtt"][0]
        out[(f'{props["Namespace"]}/{props["MetricName"]}', target)] = props
    return out


def test_alarms_cover_dlq_errors_throttles_and_failed_executions(resources: dict) -> None:
    targets = _alarm_targets(resources)
    expected = {("AWS/SQS/ApproximateNumberOfMessagesVisible", "ScoreUploadDLQ"),
                ("AWS/States/ExecutionsFailed", "FleetSweepStateMachine")}
    expected |= {(f"AWS/Lambda/{metric}", fn) for fn in FUNCTIONS for metric in ("Errors", "Throttles")}
    assert set(targets) == expected
    for (metric, _), props in targets.items():
        assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanThreshold", 0), metric
        assert props["TreatMissingData"] == "notBreaching"  # quiet nights are not alarms
        assert props["Statistic"] == ("Maximum" if metric.startswith("AWS/SQS") else "Sum")
    dims = {k: p["Dimensions"][0]["Name"] for k, p in targets.items()}
    assert dims[("AWS/SQS/ApproximateNumberOfMessagesVisible", "ScoreUploadDLQ")] == "QueueName"
    assert dims[("AWS/States/ExecutionsFailed", "FleetSweepStateMachine")] == "StateMachineArn"
    assert {dims[("AWS/Lambda/Errors", fn)] for fn in FUNCTIONS} == {"FunctionName"}


def test_alarm_actions_only_with_a_topic(template: dict, resources: dict) -> None:
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""
    for rid, alarm in _of_type(resources, "AWS::CloudWatch::Alarm").items():
        assert "AlarmActions" not in fold(alarm["Properties"], template, parameter_values(template)), rid
        with_topic = fold(alarm["Properties"], template, parameter_values(template, {"AlarmTopicArn": TOPIC_ARN}))
        assert with_topic["AlarmActions"] == [{"Ref": "AlarmTopicArn"}], rid


# ---------------------------------------------------------------- logs and tracing


def test_every_function_and_the_state_machine_log_to_a_retained_group(template: dict, resources: dict) -> None:
    groups = _of_type(resources, "AWS::Logs::LogGroup")
    assert template["Parameters"]["LogRetentionDays"]["Default"] == 30
    for rid, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, rid
    for fn in FUNCTIONS:
        props = resources[fn]["Properties"]
        (group_id,) = [g for g in groups if props["LoggingConfig"]["LogGroup"] == {"Ref": g}]
        # /aws/lambda/<function name>: the group Lambda would create, made first, with retention.
        name = groups[group_id]["Properties"]["LogGroupName"]["Fn::Sub"]
        assert name == "/aws/lambda/" + props["FunctionName"]["Fn::Sub"]
    machine = resources["FleetSweepStateMachine"]["Properties"]
    (dest,) = machine["Logging"]["Destinations"]
    group_id = dest["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert group_id in groups and group_id not in {resources[f]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for f in FUNCTIONS}
    assert len(groups) == len(FUNCTIONS) + 1


def test_tracing_switch_reaches_functions_state_machine_and_powertools(template: dict, resources: dict) -> None:
    assert template["Parameters"]["Tracing"]["AllowedValues"] == ["Active", "PassThrough"]
    assert template["Globals"]["Function"]["Tracing"] == {"Ref": "Tracing"}
    machine = resources["FleetSweepStateMachine"]["Properties"]
    for value, enabled, disabled in (("Active", True, "false"), ("PassThrough", False, "true")):
        params = parameter_values(template, {"Tracing": value})
        assert fold(machine["Tracing"], template, params) == {"Enabled": enabled}
        for fn in FUNCTIONS:
            assert function_spec(template, fn, {"Tracing": value}).environment["POWERTOOLS_TRACE_DISABLED"] == disabled
    assert template["Parameters"]["Tracing"]["Default"] == "PassThrough"


def test_powertools_and_alert_environment(template: dict) -> None:
    for fn in FUNCTIONS:
        env = function_spec(template, fn).environment
        assert env["POWERTOOLS_SERVICE_NAME"] == "signalcraft-scoring"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "SignalCraft"
        assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
        assert env["ALERT_TOPIC_ARN"] == ""
        assert env["ALERT_EVENT_BUS"] == "default"
        # The variables the handlers have always read keep their names.
        assert {"OUTPUT_BUCKET", "OUTPUT_PREFIX", "MODEL_URI", "MODEL_PREFERENCE", "LOG_LEVEL"} <= set(env)
    env = function_spec(template, "ScoreUploadFunction", {
        "ServiceName": "svc", "MetricsNamespace": "Ns", "AlertTopicArn": TOPIC_ARN, "AlertEventBusName": "alerts",
    }).environment
    assert (env["POWERTOOLS_SERVICE_NAME"], env["POWERTOOLS_METRICS_NAMESPACE"]) == ("svc", "Ns")
    assert (env["ALERT_TOPIC_ARN"], env["ALERT_EVENT_BUS"]) == (TOPIC_ARN, "alerts")


def test_memory_sizes_are_parameters_and_ephemeral_storage_stays(template: dict) -> None:
    params = template["Parameters"]
    # from bench/memory_peaks.py: 246 and 276 MiB measured peaks on the biggest legal inputs
    assert (params["UploadMemoryMB"]["Default"], params["BatchMemoryMB"]["Default"]) == (512, 1024)
    assert function_spec(template, "ScoreUploadFunction").memory_mb == 512
    assert function_spec(template, "SweepBatchFunction").memory_mb == 1024
    assert function_spec(template, "SweepBatchFunction", {"BatchMemoryMB": "3008"}).memory_mb == 3008
    assert function_spec(template, "ScoreUploadFunction", {"UploadMemoryMB": "1536"}).memory_mb == 1536
    assert template["Globals"]["Function"]["EphemeralStorage"] == {"Size": 1024}


# ---------------------------------------------------------------- incremental sweep


def _states(definition: dict):
    for name, state in definition["States"].items():
        yield name, state
        if "ItemProcessor" in state:
            yield from _states(state["ItemProcessor"])


def test_sweep_mode_defaults_to_incremental_and_is_checked() -> None:
    asl = json.loads(ASL.read_text(encoding="utf-8"))
    states = dict(_states(asl))
    resolve = states[asl["StartAt"]]
    mode = resolve["Output"]["mode"]
    assert "$states.input.mode" in mode and "'incremental'" in mode
    assert "${SweepPrefix}" in resolve["Output"]["prefix"]  # a hand-started run without prefix lists SweepPrefix
    check = states[resolve["Next"]]
    assert check["Type"] == "Choice"
    (choice,) = check["Choices"]
    assert sorted(c["StringEquals"] for c in choice["Or"]) == ["backfill", "incremental"]
    assert all(c["Variable"] == "$.mode" for c in choice["Or"])
    assert states[choice["Next"]]["Type"] == "Map"
    assert states[check["Default"]]["Type"] == "Fail"
    # The Map still lists the prefix; the mode travels to every batch and to compaction.
    sweep = states[choice["Next"]]
    assert sweep["ItemReader"]["Parameters"] == {"Bucket.$": "$.bucket", "Prefix.$": "$.prefix"}
    assert sweep["ItemBatcher"]["BatchInput"]["mode.$"] == "$.mode"
    compact = states["CompactDay"]
    assert compact["Arguments"]["Payload"]["mode"] == "{% $states.input.mode %}"
    assert sweep["Catch"][0]["Next"] == "CompactDay"  # compaction runs after a failed map too


def test_sweep_prefix_parameter_reaches_schedule_state_machine_and_function(template: dict, resources: dict) -> None:
    assert template["Parameters"]["SweepPrefix"]["Default"] == ""
    machine = resources["FleetSweepStateMachine"]["Properties"]
    assert machine["DefinitionSubstitutions"]["SweepPrefix"] == {"Ref": "SweepPrefix"}
    (schedule,) = machine["Events"].values()
    assert "${SweepPrefix}" in schedule["Properties"]["Input"]["Fn::Sub"][0]
    assert function_spec(template, "FleetSweepFunction", {"SweepPrefix": "pump/"}).environment["SWEEP_PREFIX"] == "pump/"
    # Its pattern keeps the schedule input valid JSON and the JSONata string literal intact.
    pattern = template["Parameters"]["SweepPrefix"]["AllowedPattern"]
    assert re.fullmatch(pattern, "site-a/pump/") and re.fullmatch(pattern, "")
    for bad in ('a"b', "a'b", "a\\b"):
        assert not re.fullmatch(pattern, bad)


# ---------------------------------------------------------------- Athena / Glue


def glue_type(arrow: pa.DataType) -> str:
    """Hive / Glue type of an arrow type, for the types FILE_SCHEMA uses (anything else fails the test)."""
    if pa.types.is_list(arrow):
        return f"array<{glue_type(arrow.value_type)}>"
    simple = {pa.string(): "string", pa.float32(): "float", pa.float64(): "double", pa.int64(): "bigint",
              pa.int32(): "int", pa.int16(): "smallint", pa.bool_(): "boolean"}
    if arrow in simple:
        return simple[arrow]
    if pa.types.is_timestamp(arrow) and arrow.unit == "ms" and arrow.tz == "UTC":
        return "timestamp"
    raise AssertionError(f"no Glue type mapped for {arrow}")


def test_glue_columns_are_exactly_file_schema(resources: dict) -> None:
    table = resources["GradesTable"]["Properties"]["TableInput"]
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [(f.name, glue_type(f.type)) for f in FILE_SCHEMA]
    assert [(k["Name"], k["Type"]) for k in table["PartitionKeys"]] == [(name, "string") for name in PARTITION_COLUMNS]
    assert not {name for name, _ in columns} & set(PARTITION_COLUMNS)
    assert {f.name for f in GRADE_SCHEMA} <= {name for name, _ in columns} | set(PARTITION_COLUMNS)


def test_glue_type_mapping_is_the_stated_one() -> None:
    assert glue_type(pa.timestamp("ms", tz="UTC")) == "timestamp"
    assert glue_type(pa.list_(pa.field("element", pa.float32()))) == "array<float>"
    assert glue_type(pa.list_(pa.string())) == "array<string>"
    assert [glue_type(t) for t in (pa.int16(), pa.int32(), pa.int64(), pa.float32())] == ["smallint", "int", "bigint", "float"]
    with pytest.raises(AssertionError):
        glue_type(pa.timestamp("ns"))


def test_glue_table_is_parquet_with_partition_projection(template: dict, resources: dict) -> None:
    table = resources["GradesTable"]["Properties"]["TableInput"]
    assert resources["GradesTable"]["Properties"]["DatabaseName"] == {"Ref": "GradesDatabase"}
    assert resources["GradesDatabase"]["Properties"]["DatabaseInput"]["Name"] == {"Ref": "GlueDatabaseName"}
    sd = table["StorageDescriptor"]
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert sd["InputFormat"].endswith("MapredParquetInputFormat")
    assert sd["Location"] == {"Fn::Sub": "s3://${GradesBucket}/${OutputPrefix}"}
    p = table["Parameters"]
    assert p["projection.enabled"] == "true"
    assert (p["projection.dt.type"], p["projection.dt.format"], p["projection.dt.range"]) == (
        "date", "yyyy-MM-dd", "2020-01-01,NOW")
    assert p["projection.machine_type.type"] == "enum"
    assert p["projection.machine_type.values"] == {"Ref": "MachineTypes"}
    assert template["Parameters"]["MachineTypes"]["Default"] == "pump,fan,slider,valve,toycar,toyconveyor,default,unknown"
    # The folders the sink writes: <prefix>dt=YYYY-MM-DD/machine_type=T/ ("${!x}" is a literal ${x}).
    assert p["storage.location.template"] == {
        "Fn::Sub": "s3://${GradesBucket}/${OutputPrefix}dt=${!dt}/machine_type=${!machine_type}/"}


# ---------------------------------------------------------------- documentation


def test_infra_readme_documents_every_parameter_and_alarm(template: dict, resources: dict) -> None:
    text = README.read_text(encoding="utf-8")
    missing = [name for name in template["Parameters"] if f"`{name}`" not in text]
    assert missing == []
    for rid in _of_type(resources, "AWS::CloudWatch::Alarm"):
        assert f"`{rid}`" in text, rid
    assert "max_by(" in text and "row_number()" in text
