"""The grade record schema: field order and descriptions, ids, round trips, partition and object names."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from signalcraft_core.errors import ErrorCode
from signalcraft_core.pipeline.records import (
    GRADE_SCHEMA,
    SCHEMA_VERSION,
    GradeRecord,
    batch_object_name,
    dedupe_table,
    parquet_bytes,
    partition_path,
    read_parquet_bytes,
    record_id,
    records_to_table,
    schema_markdown,
    table_to_records,
    validate_table,
)

EXPECTED_FIELDS = [
    ("record_id", pa.string(), False), ("bucket", pa.string(), True), ("key", pa.string(), True),
    ("etag", pa.string(), True), ("version_id", pa.string(), True), ("size_bytes", pa.int64(), True),
    ("event_time", pa.timestamp("ms", tz="UTC"), True), ("scored_at", pa.timestamp("ms", tz="UTC"), False),
    ("site", pa.string(), True), ("machine_type", pa.string(), True), ("machine_id", pa.string(), True),
    ("model_name", pa.string(), True), ("model_version", pa.string(), True), ("model_scope", pa.string(), True),
    ("profile", pa.string(), True),
    ("level1_score", pa.float32(), True), ("level1_rules", pa.list_(pa.field("element", pa.string())), True),
    ("iforest_score", pa.float32(), True), ("level2_mse", pa.float32(), True),
    ("level2_score", pa.float32(), True), ("level2_band_errors", pa.list_(pa.field("element", pa.float32())), True),
    ("score", pa.float32(), True), ("grade", pa.string(), True), ("status", pa.string(), False),
    ("error_code", pa.string(), True), ("error_message", pa.string(), True), ("duration_s", pa.float32(), True),
    ("sample_rate_in", pa.int32(), True), ("channels_in", pa.int16(), True), ("schema_version", pa.int16(), False),
]

T0 = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)


def ok_record(**overrides) -> GradeRecord:
    values = dict(
        record_id=record_id("in", "pump/a.wav", "etag1"), bucket="in", key="pump/a.wav", etag="etag1",
        size_bytes=320_044, event_time=T0, scored_at=T0 + timedelta(seconds=3), site="plant-1",
        machine_type="pump", machine_id="id_00", model_name="pump-default", model_version="v1", profile="seed",
        level1_score=12.5, level1_rules=("hf_energy", "kurtosis"), iforest_score=-0.41, level2_mse=0.0123,
        level2_score=33.3, level2_band_errors=tuple(0.1 * i for i in range(64)), score=33.3, grade="NORMAL",
        status="ok", duration_s=10.0, sample_rate_in=16000, channels_in=8,
    )
    values.update(overrides)
    return GradeRecord(**values)


def error_record(**overrides) -> GradeRecord:
    values = dict(
        record_id=record_id("in", "bad.wav", None), bucket="in", key="bad.wav", scored_at=T0,
        status="error", error_code=ErrorCode.NOT_WAV, error_message="not a RIFF/WAVE file",
    )
    values.update(overrides)
    return GradeRecord(**values)


# --------------------------------------------------------------------------- schema


def test_schema_fields_types_nullability_in_order():
    assert [(f.name, f.type, f.nullable) for f in GRADE_SCHEMA] == EXPECTED_FIELDS


def test_every_field_has_a_description():
    for f in GRADE_SCHEMA:
        description = (f.metadata or {}).get(b"description", b"").decode()
        assert len(description) > 10, f.name


def test_dataclass_mirrors_schema():
    assert [f.name for f in fields(GradeRecord)] == GRADE_SCHEMA.names


def test_schema_markdown_lists_every_field_with_its_description():
    md = schema_markdown()
    lines = md.strip().splitlines()
    assert lines[0].replace(" ", "") == "|name|type|description|"
    rows = lines[2:]
    assert len(rows) == len(GRADE_SCHEMA)
    for row, f in zip(rows, GRADE_SCHEMA):
        assert f"`{f.name}`" in row
        assert f.metadata[b"description"].decode() in row
        assert ("not null" in row) == (not f.nullable)
    assert "list<float32>" in md and "timestamp[ms, tz=UTC]" in md


# --------------------------------------------------------------------------- record_id


def test_record_id_is_deterministic_32_hex():
    a = record_id("b", "k.wav", "v")
    assert a == record_id("b", "k.wav", "v")
    assert len(a) == 32 and int(a, 16) >= 0


@pytest.mark.parametrize("position", range(3))
def test_record_id_changes_with_each_input(position):
    base = ["b", "k.wav", "v"]
    changed = list(base)
    changed[position] = changed[position] + "x"
    assert record_id(*changed) != record_id(*base)


def test_record_id_separator_prevents_concatenation_collisions():
    assert record_id("ab", "c", "v") != record_id("a", "bc", "v")


def test_record_id_without_version_differs_from_with_version():
    assert record_id("b", "k", None) != record_id("b", "k", "etag")
    assert record_id("b", "k", None) == record_id("b", "k", "")


# --------------------------------------------------------------------------- records


def test_record_normalises_times_floats_lists_and_enums():
    r = error_record(scored_at="2024-05-06T09:08:09.123456+02:00", event_time=datetime(2024, 5, 6, 7, 0))
    assert r.scored_at == datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)
    assert r.event_time.tzinfo is not None and r.event_time.hour == 7  # naive = UTC
    assert r.error_code == "not_wav" and type(r.error_code) is str
    z = error_record(scored_at="2024-05-06T07:08:09Z")
    assert z.scored_at == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    ok = ok_record(level1_rules=["a"], level2_band_errors=[0.1])
    assert ok.level1_rules == ("a",) and isinstance(ok.level2_band_errors, tuple)
    assert ok.level2_band_errors[0] != 0.1 and math.isclose(ok.level2_band_errors[0], 0.1, rel_tol=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [dict(status="failed"), dict(grade="BAD"), dict(status="error", grade="NORMAL"), dict(status=None),
     dict(scored_at=None), dict(record_id=None), dict(channels_in=1.5), dict(scored_at="yesterday")],
)
def test_invalid_records_are_refused(overrides):
    with pytest.raises((ValueError, TypeError)):
        ok_record(**overrides)


def test_round_trip_ok_and_error_records_through_parquet():
    records = [ok_record(), error_record(), ok_record(record_id="x" * 32, level1_rules=(), level2_band_errors=())]
    table = records_to_table(records)
    validate_table(table)
    assert table.schema.equals(GRADE_SCHEMA, check_metadata=True)
    back = read_parquet_bytes(parquet_bytes(table))
    assert back.schema.equals(GRADE_SCHEMA, check_metadata=True)  # descriptions survive Parquet
    assert table_to_records(back) == records
    err = table_to_records(back)[1]
    assert err.grade is None and err.score is None and err.level1_rules is None
    assert err.schema_version == SCHEMA_VERSION
    assert back.column("level1_rules")[2].as_py() == []  # empty list stays distinct from null


def test_to_row_uses_schema_order_and_lists():
    row = ok_record().to_row()
    assert list(row) == GRADE_SCHEMA.names
    assert isinstance(row["level1_rules"], list)
    json_row = ok_record().to_json_row()
    assert json_row["scored_at"] == "2024-05-06T07:08:12.123000Z"


def test_records_to_table_rejects_non_records_and_out_of_range_ints():
    with pytest.raises(TypeError):
        records_to_table([ok_record().to_row()])
    with pytest.raises(pa.ArrowInvalid):
        records_to_table([ok_record(channels_in=70_000)])


def test_table_to_records_ignores_extra_columns_and_needs_all_grade_columns():
    table = records_to_table([ok_record()])
    extra = table.append_column("dt", pa.array(["2024-05-06"]))
    assert table_to_records(extra) == [ok_record()]
    with pytest.raises(ValueError):
        table_to_records(table.drop_columns(["grade"]))


@given(
    score=st.one_of(st.none(), st.floats(0, 100, allow_nan=False, width=32)),
    bands=st.one_of(st.none(), st.lists(st.floats(0, 1e6, allow_nan=False, width=32), max_size=8)),
    rules=st.one_of(st.none(), st.lists(st.text(max_size=8), max_size=4)),
    millis=st.integers(0, 4_000_000_000_000),
)
def test_round_trip_property(score, bands, rules, millis):
    when = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    r = ok_record(score=score, level2_band_errors=bands, level1_rules=rules, scored_at=when)
    assert table_to_records(read_parquet_bytes(parquet_bytes(records_to_table([r])))) == [r]


# --------------------------------------------------------------------------- names


def test_partition_path_uses_event_time_then_scored_at_and_unknown_type():
    assert partition_path(ok_record()) == "dt=2024-05-06/machine_type=pump/"
    late = datetime(2024, 5, 6, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 2024-05-07 in UTC
    assert partition_path(ok_record(event_time=late)) == "dt=2024-05-07/machine_type=pump/"
    no_event = error_record(event_time=None, scored_at=datetime(2024, 1, 2, tzinfo=timezone.utc))
    assert partition_path(no_event) == "dt=2024-01-02/machine_type=unknown/"
    assert partition_path(ok_record(machine_type="")) == "dt=2024-05-06/machine_type=unknown/"
    assert partition_path(ok_record(machine_type="../a/b=c")) == "dt=2024-05-06/machine_type=.._a_b_c/"


def test_batch_object_name_depends_on_the_rows_but_not_on_order_or_scored_at():
    a, b, c = (ok_record(record_id=i * 32) for i in "abc")
    name = batch_object_name([a, b, c])
    assert name.startswith("part-") and name.endswith(".parquet") and len(name) == len("part-.parquet") + 32
    assert batch_object_name([c, a, b]) == name
    assert batch_object_name([a, b, replace(c, scored_at=c.scored_at + timedelta(hours=1))]) == name  # redelivery
    assert batch_object_name([a, b, replace(c, score=99.0)]) != name  # another outcome never overwrites
    assert batch_object_name([a, b]) != name
    with pytest.raises(ValueError):
        batch_object_name([])


def test_dedupe_table_keeps_latest_scored_at_per_record_id():
    old = ok_record(score=10.0)
    new = ok_record(score=90.0, scored_at=old.scored_at + timedelta(hours=1))
    other = error_record()
    table = dedupe_table(records_to_table([new, other, old]))
    assert table.num_rows == 2
    assert sorted(table.column("record_id").to_pylist()) == sorted([old.record_id, other.record_id])
    kept = [r for r in table_to_records(table) if r.record_id == old.record_id]
    assert kept == [new]
    assert dedupe_table(GRADE_SCHEMA.empty_table()).num_rows == 0


def test_record_id_golden_value():
    """The identity is a stored key: changing its recipe (hash, order, separator, fields) orphans every row."""
    assert record_id("recordings", "site-a/pump/id_00/0001.wav", "3HL4kqtJlcpXroDTDmJ") == \
        "5fda16270542a8c97ee42ce3d6712065"
