"""The state machine and the roles keep the sweep state honest: only a complete sweep moves it, and it can be read.

(No JSONata evaluator runs here: the expressions are checked for what they must look at.)
"""

from __future__ import annotations

import fnmatch
import json

import pytest

from signalcraft_core.pipeline.sweep import STATE_PREFIX, state_key
from tests.test_template_policies import (  # noqa: F401 - the fixtures: template, _region (SAM needs a region)
    ASL,
    ROLE_SOURCES,
    STATE_MACHINE,
    _as_list,
    _region,
    allowed,
    roles_for,
    template,
)

STATE_READERS = ("FleetSweepFunction", "SweepBatchFunction")


@pytest.fixture(scope="module")
def states() -> dict:
    return json.loads(ASL.read_text(encoding="utf-8"))["States"]


def test_every_way_into_the_compaction_step_carries_the_sweeps_outcome(states: dict) -> None:
    sweep = states["SweepRecordings"]
    count = states[sweep["Next"]]
    # a Map within ToleratedFailurePercentage succeeds: its item counts say whether a batch failed
    assert count["Resource"] == "arn:aws:states:::aws-sdk:sfn:describeMapRun"
    assert count["Parameters"] == {"MapRunArn.$": "$.sweep.MapRunArn"} and count["ResultPath"] == "$.map_run"
    into_compaction = [c["Next"] for c in sweep["Catch"] + count["Catch"]] + [count["Next"]]
    assert set(into_compaction) == {"CompactDay"}
    assert all(c["ResultPath"] == "$.sweep_error" for c in sweep["Catch"] + count["Catch"])
    payload = states["CompactDay"]["Arguments"]["Payload"]
    assert payload["started"] == "{% $states.context.Execution.StartTime %}"   # the sweep's start, not "now"
    complete = payload["complete"]
    assert "$not($exists($states.input.sweep_error))" in complete
    for counter in ("Failed", "TimedOut", "Aborted"):
        assert f"$states.input.map_run.ItemCounts.{counter} = 0" in complete
    # an incomplete sweep fails the execution (FleetSweepFailedAlarm) after compacting
    outcome = states[states["CompactDay"]["Next"]]
    incomplete = [c for c in outcome["Choices"] if c.get("Variable") == "$.compaction.summary.complete"]
    assert incomplete == [{"Variable": "$.compaction.summary.complete", "BooleanEquals": False, "Next": "SweepIncomplete"}]
    assert states["SweepIncomplete"]["Type"] == "Fail"


@pytest.mark.parametrize("source", ROLE_SOURCES)
def test_the_state_machine_may_read_its_own_map_run_counts_only(source: str, template: dict) -> None:  # noqa: F811
    (describe,) = allowed(roles_for(source, template)[STATE_MACHINE], "states:DescribeMapRun")
    assert describe["Action"] == "states:DescribeMapRun"
    assert describe["Resource"]["Fn::Sub"].endswith(":mapRun:${AWS::StackName}-fleet-sweep/*")


@pytest.mark.parametrize("source", ROLE_SOURCES)
@pytest.mark.parametrize("output_prefix", ["grades/", ""])
def test_roles_that_read_the_sweep_state_may_list_its_key_and_nothing_else_new(source: str, template: dict,  # noqa: F811
                                                                               output_prefix: str) -> None:
    """A GET of a missing key answers 404 only with ListBucket on it (s3:prefix = the key); else 403."""
    roles = roles_for(source, template, {"OutputPrefix": output_prefix})
    key = state_key("recordings", "site-a/")
    for rid in STATE_READERS:
        (listing,) = [s for s in allowed(roles[rid], "s3:ListBucket") if s["Resource"] == {"Fn::GetAtt": ["GradesBucket", "Arn"]}]
        if not output_prefix:
            assert "Condition" not in listing, rid    # the whole bucket is the grades: no condition at all
            continue
        patterns = [p["Fn::Sub"] if isinstance(p, dict) else p for p in _as_list(listing["Condition"]["StringLike"]["s3:prefix"])]
        patterns = [p.replace("${OutputPrefix}", output_prefix) for p in patterns]
        assert sorted(patterns) == sorted([f"{output_prefix}*", f"{STATE_PREFIX}*"]), rid
        assert any(fnmatch.fnmatchcase(key, p) for p in patterns), rid
        for other in ("sweep-runs/x.json", "_alerts/x", "recordings/x.wav"):
            assert not any(fnmatch.fnmatchcase(other, p) for p in patterns), (rid, other)
