"""Why: one object under the grades prefix that holds no grade rows must not stop the fleet.

Anyone who can write to the grades bucket can leave a file there (a truncated upload, another
tool's Parquet, a WAV copied to the wrong place). Before, one such `part-*.parquet` made every
night's sweep fail before grading anything (its index read it), and `report` end in a traceback.
Now the sweep, compaction and `read_grades` over a prefix skip it with a warning that names it,
never delete it, and a reader asked for that one object gets a one-line StorageError.
"""

from __future__ import annotations

import datetime as dt
import io
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from handlers import fleet_sweep
from signalcraft_core.errors import StorageError
from signalcraft_core.pipeline.records import GradeRecord, record_id
from signalcraft_core.pipeline.sinks import LocalGradeSink, S3GradeSink, read_grades
from tests.handler_env import clip

TODAY = dt.datetime.now(dt.timezone.utc).date().isoformat()
JUNK = f"grades/dt={TODAY}/machine_type=pump/part-0000000000000000000000000000junk.parquet"
OTHER = f"grades/dt={TODAY}/machine_type=pump/part-000000000000000000000000000other.parquet"


def _other_parquet() -> bytes:
    """Valid Parquet, but not grade rows (another tool's output)."""
    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2, 3]}), sink)
    return sink.getvalue()


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.objects: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.objects.append(getattr(record, "object", ""))


@pytest.fixture
def warnings():
    logger = logging.getLogger("signalcraft_core.pipeline.sinks")
    handler, level = _Warnings(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _row(name: str, day: str = TODAY) -> GradeRecord:
    key = f"site-a/pump/id_00/{name}.wav"
    return GradeRecord(record_id=record_id("rec", key, f"etag-{name}"), bucket="rec", key=key, etag=f"etag-{name}",
                       event_time=dt.datetime.fromisoformat(f"{day}T00:00:10+00:00"),
                       scored_at=dt.datetime.now(dt.timezone.utc), machine_type="pump", status="ok", score=10.0,
                       grade="NORMAL")


def test_a_sweep_grades_every_recording_past_foreign_objects_and_keeps_them(fleet, warnings):
    s3, recordings, grades = fleet
    s3.put_object(Bucket=grades, Key=JUNK, Body=b"junk")
    s3.put_object(Bucket=grades, Key=OTHER, Body=_other_parquet())
    keys = [f"site-a/pump/id_00/c{i}.wav" for i in range(3)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=recordings, Key=key, Body=clip(i))
    result = fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})
    assert result["records"] == 3 and result["complete"]
    rows = read_grades(f"s3://{grades}/grades/", s3).to_pylist()
    assert sorted(r["key"] for r in rows) == keys
    stored = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=grades, Prefix="grades/")["Contents"]}
    assert stored[JUNK] == 4 and OTHER in stored   # not ours to delete: compaction left them
    assert f"{grades}/{JUNK}" in " ".join(warnings.objects) and OTHER in " ".join(warnings.objects)
    again = fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})   # the next night: nothing new
    assert again["records"] == 0 and again["already_graded"] == 3


def test_read_grades_skips_them_under_a_prefix_and_names_the_one_object_asked_for(s3, bucket, warnings):
    sink = S3GradeSink(s3, bucket)
    sink.write([_row("a"), _row("b")])
    s3.put_object(Bucket=bucket, Key=JUNK, Body=b"junk")
    assert sorted(r["key"] for r in read_grades(f"s3://{bucket}/grades/", s3).to_pylist()) == \
        ["site-a/pump/id_00/a.wav", "site-a/pump/id_00/b.wav"]
    with pytest.raises(StorageError, match=f"s3://{bucket}/{JUNK} holds no grade rows"):
        read_grades(f"s3://{bucket}/{JUNK}", s3)


def test_compaction_merges_the_grade_files_around_a_foreign_one(s3, bucket, warnings):
    sink = S3GradeSink(s3, bucket)
    sink.write([_row("a")])
    sink.write([_row("b")])
    s3.put_object(Bucket=bucket, Key=JUNK, Body=b"junk")
    result = sink.compact(date=TODAY)
    assert (result.files_in, result.rows_out) == (2, 2)
    names = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="grades/")["Contents"])
    assert JUNK in names and len(names) == 2 and any("/compacted-" in n for n in names)


def test_a_local_folder_with_a_foreign_file_reads_the_rest(tmp_path, warnings):
    sink = LocalGradeSink(tmp_path)
    sink.write([_row("a"), _row("b")])
    junk = tmp_path / JUNK.removeprefix("grades/")
    junk.write_bytes(b"junk")
    assert len(read_grades(tmp_path)) == 2
    assert str(junk) in " ".join(warnings.objects)
    with pytest.raises(StorageError, match="holds no grade rows"):
        read_grades(junk)
    assert sink.compact(date=TODAY).partitions == 0 and junk.exists()   # one grade file: nothing to merge
    assert len(read_grades(tmp_path)) == 2
