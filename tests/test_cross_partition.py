"""Why: one record id, one row, even for a raw per-partition reader once compaction has run.

In an unversioned bucket, identical bytes re-uploaded to the same key on a later day (a recorder
retrying just after midnight) keep their record id (same ETag) but get a new LastModified, so their
second grade lands in a second `dt=` partition. Compaction pools the partitions it is given and
leaves the id in one of them: the partition of the row `read_grades` keeps (a grade beats an error,
then later scored_at, then the earlier partition), whichever order, how often and how concurrently it
runs. Raw readers here are pyarrow file by file and DuckDB over the Hive folders, never `read_grades`
(it dedupes). Both sinks, the S3 one over real HTTP to the loopback server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from signalcraft_core.errors import ErrorCode, StorageError
from signalcraft_core.io.objects import get_bytes, list_keys
from signalcraft_core.pipeline.records import GradeRecord, record_id
from signalcraft_core.pipeline.sinks import LocalGradeSink, S3GradeSink, read_grades

D1, D2, D3 = "2024-05-06", "2024-05-07", "2024-05-08"
T0 = datetime(2024, 5, 8, 12, tzinfo=timezone.utc)


def folder(day: str) -> str:
    return f"dt={day}/machine_type=pump/"


def row(name: str, uploaded: str, scored: datetime = T0, status: str = "ok", version: str | None = None) \
        -> GradeRecord:
    """A record of recording `name`: uploaded on day `uploaded` (its LastModified), graded or failed at `scored`.

    The same `name` always has the same ETag: a re-upload of identical bytes, so the same record id
    (unless `version`, a versioned bucket's version id, names the object instead)."""
    key, etag = f"site-a/pump/id_00/{name}.wav", f"etag-{name}"
    return GradeRecord(record_id=record_id("rec", key, version or etag), bucket="rec", key=key, etag=etag,
                       version_id=version, event_time=datetime.fromisoformat(f"{uploaded}T00:00:10+00:00"),
                       scored_at=scored, machine_type="pump", status=status, model_version="v1",
                       score=10.0 if status == "ok" else None, grade="NORMAL" if status == "ok" else None,
                       error_code=None if status == "ok" else "model_error")


class _Racing:
    """Runs `rival` once, just before this compaction writes its first file: both compactions read the same rows."""

    rival: Callable[[], Any] | None = None

    def _put(self, rel: str, data: bytes) -> None:
        rival, self.rival = self.rival, None
        if rival is not None:
            rival()
        super()._put(rel, data)


class _Reads:
    """Notes every grade file this sink reads."""

    read: tuple[str, ...] = ()

    def _get(self, rel: str):
        self.read += (rel,)
        return super()._get(rel)


class _CrashBeforeDelete:
    """Dies where compaction would start deleting, noting which grade files existed at that moment."""

    seen: tuple[str, ...] = ()

    def _delete(self, rels, etags) -> int:
        self.seen = tuple(sorted(rel for rel, _ in self._list("")))
        raise StorageError(ErrorCode.STORAGE_ERROR, "the function timed out")


@dataclass
class Store:
    """One grades store (an S3 prefix or a local folder); `sink()` opens a new sink on it."""

    kind: str
    open: Callable[[type], Any]
    uri: str
    client: Any = None

    def sink(self, behaviour: type | None = None):
        base = S3GradeSink if self.kind == "s3" else LocalGradeSink
        return self.open(type(f"{behaviour.__name__}Sink", (behaviour, base), {}) if behaviour else base)

    def files(self) -> dict[str, bytes]:
        """Path (relative to the store) -> bytes of every grade file, as a raw reader finds them."""
        if self.kind == "s3":
            bucket, prefix = self.uri[len("s3://"):].split("/", 1)
            return {i.key[len(prefix):]: get_bytes(self.client, bucket, i.key)
                    for i in list_keys(self.client, bucket, prefix, (".parquet",))}
        root = Path(self.uri)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}

    def raw(self) -> dict[str, list[dict]]:
        """Partition folder -> the rows of its files, each file read alone with pyarrow (no dedupe)."""
        out: dict[str, list[dict]] = {}
        for rel, data in self.files().items():
            out.setdefault(rel.rpartition("/")[0] + "/", []).extend(pq.read_table(pa.BufferReader(data)).to_pylist())
        return out

    def where(self, rec: GradeRecord) -> list[tuple[str, datetime, str]]:
        """(partition, scored_at, status) of every raw row of `rec`'s record id."""
        return sorted((f, r["scored_at"], r["status"]) for f, rows in self.raw().items() for r in rows
                      if r["record_id"] == rec.record_id)

    def keys_in(self, day: str) -> list[str]:
        return sorted(r["key"] for r in self.raw().get(folder(day), []))

    def read(self, dedupe: bool = True) -> pa.Table:
        return read_grades(self.uri, client=self.client, dedupe=dedupe)


@pytest.fixture(params=["s3", "local"])
def store(request, tmp_path) -> Store:
    if request.param == "s3":
        client, bucket = request.getfixturevalue("s3"), request.getfixturevalue("make_bucket")()
        return Store("s3", lambda cls: cls(client, bucket, "grades/"), f"s3://{bucket}/grades/", client)
    return Store("local", lambda cls: cls(tmp_path / "grades"), str(tmp_path / "grades"))


def _as_set(table: pa.Table) -> set:
    return {tuple(sorted((k, str(v)) for k, v in r.items())) for r in table.to_pylist()}


def assert_raw_agrees_with_read_grades(store: Store, before: pa.Table) -> None:
    """Undeduped rows after compaction are exactly what the deduping reader returned before it."""
    raw = store.read(dedupe=False)
    assert raw.num_rows == len(set(raw.column("record_id").to_pylist()))  # one row per id
    assert _as_set(raw) == _as_set(before)


# --------------------------------------------------------------------------- the re-upload on a later day


@pytest.mark.parametrize("winner", [D1, D2])
def test_a_reupload_on_a_later_day_leaves_one_row_in_the_partition_of_the_winner(store, winner):
    """Day 1's grade and day 2's grade of the same bytes: the later-scored one stays, in its own partition."""
    sink = store.sink()
    scored = {D1: T0, D2: T0 + timedelta(hours=1)} if winner == D2 else {D1: T0 + timedelta(hours=1), D2: T0}
    retried = row("retried", D1, scored[D1])
    sink.write([retried, row("a", D1)])
    sink.write([row("retried", D2, scored[D2]), row("b", D2)])
    assert [f for f, _, _ in store.where(retried)] == [folder(D1), folder(D2)]  # the gap, before compaction
    before = store.read()

    result = sink.compact(partitions={folder(D1), folder(D2)})

    assert store.where(retried) == [(folder(winner), scored[winner], "ok")]
    loser = D1 if winner == D2 else D2
    assert store.keys_in(loser) == [f"site-a/pump/id_00/{'a' if loser == D1 else 'b'}.wav"]  # its other record
    # only the loser's partition was rewritten, although it had a single input file
    assert (result.partitions, result.files_in, result.files_deleted, result.files_kept) == (1, 1, 1, 0)
    assert (result.rows_in, result.rows_out) == (2, 1)
    [merged] = result.written
    assert folder(loser) in merged and Path(merged).name.startswith("compacted-")
    assert_raw_agrees_with_read_grades(store, before)


def test_duckdb_over_the_hive_folders_sees_one_row_after_compaction(tmp_path):
    sink = LocalGradeSink(tmp_path / "grades")
    retried = row("retried", D1)
    sink.write([retried, row("a", D1)])
    sink.write([row("retried", D2, T0 + timedelta(minutes=5)), row("b", D2)])
    files = f"read_parquet('{tmp_path / 'grades'}/**/*.parquet', hive_partitioning=true)"
    query = f"SELECT CAST(dt AS VARCHAR), machine_type, scored_at FROM {files} WHERE record_id = ?"
    with duckdb.connect() as db:  # its own connection: the module-wide default one is shared with other tests
        assert len(db.execute(query, [retried.record_id]).fetchall()) == 2

        sink.compact(partitions=sink.touched)

        [(dt, machine_type, scored_at)] = db.execute(query, [retried.record_id]).fetchall()
        assert (dt, machine_type) == (D2, "pump")
        assert scored_at.astimezone(timezone.utc) == T0 + timedelta(minutes=5)
        assert db.execute(f"SELECT count(*), count(DISTINCT record_id) FROM {files}").fetchone() == (3, 3)


# --------------------------------------------------------------------------- a grade beats an error


@pytest.mark.parametrize("graded_on", [D1, D2])
def test_an_error_on_another_day_never_displaces_the_grade(store, graded_on):
    """The error is scored later, yet the grade stays; a partition whose only row lost ends with no file."""
    sink = store.sink()
    failed_on = D2 if graded_on == D1 else D1
    good = row("retried", graded_on, T0)
    sink.write([good, row("other", graded_on)])
    sink.write([row("retried", failed_on, T0 + timedelta(hours=3), status="error")])
    before = store.read()
    assert before.filter(pc.equal(before.column("record_id"), good.record_id)) \
        .column("status").to_pylist() == ["ok"]

    result = sink.compact(partitions={folder(D1), folder(D2)})

    assert store.where(good) == [(folder(graded_on), T0, "ok")]
    assert not any(rel.startswith(folder(failed_on)) for rel in store.files())  # no grades file left there
    assert (result.partitions, result.written, result.files_deleted, result.rows_in, result.rows_out) == \
        (1, (), 1, 1, 0)
    assert_raw_agrees_with_read_grades(store, before)


def test_an_error_superseded_by_a_grade_filed_on_another_day_goes_as_read_grades_drops_it(store):
    """A versioned recording never HEAD-ed: its error (ETag id, filed by the day scored) and its later grade
    (version id, filed by LastModified) are two ids; compaction drops the error just as the readers do."""
    sink = store.sink()
    error = row("versioned", D2, T0, status="error")
    grade = row("versioned", D1, T0 + timedelta(hours=1), version="v-1")
    assert error.record_id != grade.record_id
    sink.write([error])
    sink.write([grade])
    before = store.read()
    assert before.column("status").to_pylist() == ["ok"]

    sink.compact(partitions={folder(D1), folder(D2)})

    assert store.where(grade) == [(folder(D1), grade.scored_at, "ok")] and store.where(error) == []
    assert_raw_agrees_with_read_grades(store, before)


# --------------------------------------------------------------------------- exact ties: a total order


def _tied(store: Store) -> GradeRecord:
    sink = store.sink()
    tied = row("tied", D1, T0)
    sink.write([tied, row("a", D1)])
    sink.write([row("tied", D2, T0), row("b", D2)])  # same status, same scored_at
    return tied


@pytest.mark.parametrize("order", [[folder(D1), folder(D2)], [folder(D2), folder(D1)]])
def test_an_exact_tie_keeps_the_earlier_partition_whatever_the_order_and_twice_changes_nothing(store, order):
    """The earlier partition is the copy `read_grades` keeps: compacting never changes what it returns."""
    tied = _tied(store)
    before = store.read()
    assert before.filter(pc.equal(before.column("record_id"), tied.record_id)) \
        .column("event_time").to_pylist() == [tied.event_time]
    store.sink().compact(partitions=order)
    assert store.where(tied) == [(folder(D1), T0, "ok")]
    assert store.keys_in(D2) == ["site-a/pump/id_00/b.wav"]
    assert_raw_agrees_with_read_grades(store, before)
    compacted = store.files()

    again = store.sink().compact(partitions=list(reversed(order)))

    assert again.partitions == 0 and store.files() == compacted  # already compact: nothing rewritten


def test_both_orders_store_the_same_files(tmp_path):
    stored = []
    for n, order in enumerate(([folder(D1), folder(D2)], [folder(D2), folder(D1)])):
        root = tmp_path / str(n)
        store = Store("local", lambda cls, root=root: cls(root), str(root))
        _tied(store)
        store.sink().compact(partitions=order)
        stored.append(store.files())
    assert stored[0] == stored[1]


def test_two_compactions_reading_the_same_tie_never_both_drop_their_copy(store):
    """Each compaction has read both copies before either writes; listing the partitions in opposite
    orders must not make them pick opposite winners, or each would delete the other's copy."""
    tied = _tied(store)
    before = store.read()
    first = store.sink(_Racing)
    first.rival = lambda: store.sink().compact(partitions=[folder(D2), folder(D1)])

    first.compact(partitions=[folder(D1), folder(D2)])

    assert store.where(tied) == [(folder(D1), T0, "ok")]
    assert_raw_agrees_with_read_grades(store, before)


# --------------------------------------------------------------------------- what is written, deleted, left alone


def test_every_merged_file_is_written_before_any_input_is_deleted(store):
    """A compaction that dies at its first delete leaves duplicates, never a loss, and the next run finishes."""
    sink = store.sink()
    retried = row("retried", D1)
    sink.write([retried, row("a", D1)])
    sink.write([row("c", D1)])
    sink.write([row("retried", D2, T0 + timedelta(hours=1)), row("b", D2)])
    sink.write([row("d", D2)])
    before = store.read()
    crashing = store.sink(_CrashBeforeDelete)

    with pytest.raises(StorageError):
        crashing.compact(partitions={folder(D1), folder(D2)})

    merged = {rel.rpartition("/")[0] + "/" for rel in crashing.seen if "/compacted-" in rel}
    assert merged == {folder(D1), folder(D2)}  # both merged files were there before the first delete
    assert store.read().equals(before)
    result = store.sink().compact(partitions={folder(D1), folder(D2)})
    assert (result.rows_in, result.rows_out) == (5 + 6, 2 + 3)  # the crashed run's merged files are read too
    assert store.where(retried) == [(folder(D2), T0 + timedelta(hours=1), "ok")]
    assert_raw_agrees_with_read_grades(store, before)


def test_partitions_not_given_are_neither_read_nor_changed(store):
    sink = store.sink()
    retried = row("retried", D1)
    for day, other, hours in ((D1, "a", 0), (D2, "b", 1), (D3, "c", 2)):
        sink.write([row("retried", day, T0 + timedelta(hours=hours)), row(other, day)])
    untouched = {rel: data for rel, data in store.files().items() if rel.startswith(folder(D3))}

    assert store.sink().compact(D1).partitions == 0  # one day alone: one file, no duplicate within it
    compaction = store.sink(_Reads)
    result = compaction.compact(partitions={folder(D1), folder(D2)})

    assert compaction.read and not any(rel.startswith(folder(D3)) for rel in compaction.read)
    assert result.partitions == 1  # day 1 lost its copy to day 2; day 3 was not asked for
    assert store.where(retried) == [(folder(D2), T0 + timedelta(hours=1), "ok"),
                                    (folder(D3), T0 + timedelta(hours=2), "ok")]
    assert {rel: data for rel, data in store.files().items() if rel.startswith(folder(D3))} == untouched
    store.sink().compact(partitions={folder(D2), folder(D3)})  # the next sweep's window
    assert store.where(retried) == [(folder(D3), T0 + timedelta(hours=2), "ok")]
    assert [store.keys_in(d) for d in (D1, D2, D3)] == [["site-a/pump/id_00/a.wav"], ["site-a/pump/id_00/b.wav"],
                                                        ["site-a/pump/id_00/c.wav", "site-a/pump/id_00/retried.wav"]]
