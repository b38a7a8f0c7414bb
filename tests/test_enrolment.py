"""The report's "enrol this machine" list: machines graded by a type or default set, with their normal counts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from signalcraft_core.analysis.enrolment import enrolment_candidates, format_enrolment
from signalcraft_core.pipeline.records import GradeRecord, record_id, records_to_table

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _row(i: int, machine: str, scope: str, grade: str = "NORMAL", status: str = "ok") -> GradeRecord:
    site, machine_type, machine_id = machine.split("/")
    return GradeRecord(record_id=record_id("rec", f"{machine}/{i}.wav", "e"), bucket="rec", key=f"{machine}/{i}.wav",
                       scored_at=T0 + timedelta(minutes=i), site=site, machine_type=machine_type,
                       machine_id=machine_id, model_name=f"{scope}-set", model_scope=scope, status=status,
                       grade=grade if status == "ok" else None, score=10.0 if status == "ok" else None,
                       error_code=None if status == "ok" else "not_wav")


def test_only_machines_without_their_own_set_are_listed_with_their_normal_recordings():
    rows = [_row(i, "a/pump/id_00", "type") for i in range(6)]                          # ready: 6 normal
    rows += [_row(10, "a/pump/id_00", "type", grade="WARNING")]
    rows += [_row(20 + i, "a/fan/id_01", "default") for i in range(2)]                  # not ready
    rows += [_row(30, "a/fan/id_01", "default", status="error")]                         # errors do not count
    rows += [_row(40 + i, "a/valve/id_02", "machine") for i in range(9)]                # enrolled
    rows += [_row(50, "b/valve/id_03", "type"), _row(51, "b/valve/id_03", "machine")]   # enrolled since
    got = enrolment_candidates(records_to_table(rows))
    assert [(c.machine_type, c.machine_id, c.scope, c.normal_recordings, c.ready) for c in got] == [
        ("pump", "id_00", "type", 6, True), ("fan", "id_01", "default", 2, False)]
    text = format_enrolment(got, "rec")
    assert "signalcraft train s3://rec/a/pump/id_00/ --out s3://<models>/a/pump/id_00/ -m pump" in text
    assert "id_01" in text and "s3://rec/a/fan/id_01/" not in text  # too few normals: no command yet
    assert format_enrolment([]) == "Every machine is graded by its own model set."


def test_report_lists_the_machines_to_enrol(tmp_path):
    from click.testing import CliRunner

    from signalcraft_core.local.cli.app import cli
    from signalcraft_core.pipeline.sinks import LocalGradeSink

    LocalGradeSink(tmp_path).write([_row(i, "a/pump/id_00", "type") for i in range(6)]
                                   + [_row(10 + i, "a/valve/id_02", "machine") for i in range(3)])
    result = CliRunner().invoke(cli, ["report", "--grades", str(tmp_path)])
    assert result.exit_code == 0, result.output
    section = result.output.split("Enrol these machines", 1)[1]
    assert "id_00" in section and "id_02" not in section
    assert "signalcraft train s3://rec/a/pump/id_00/" in section
