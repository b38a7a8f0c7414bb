"""Where grade records go and how they are read back: partitioned Parquet in a bucket or a folder.

Sinks write deterministic Parquet names from the rows' content (a redelivery that grades alike
overwrites, never duplicates; a different outcome never overwrites); compaction merges each partition
into one file and leaves a record id in one of the partitions it merged; readers dedupe by record_id
(`records.precedence`: a grade beats an error).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date as _date
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import pyarrow as pa

from signalcraft_core.errors import ErrorCode, StorageError
from signalcraft_core.io.objects import (
    delete_keys,
    get_bytes,
    get_bytes_and_etag,
    list_keys,
    parse_uri,
    put_bytes,
    s3_client,
)
from signalcraft_core.logs import one_line
from signalcraft_core.pipeline.records import (
    FILE_SCHEMA,
    GRADE_SCHEMA,
    PARTITION_COLUMNS,
    GradeRecord,
    batch_object_name,
    compacted_object_name,
    conform_table,
    dedupe_table,
    parquet_bytes,
    partition_path,
    precedence,
    read_parquet_bytes,
    records_to_file_table,
    safe_partition_value,
)

if TYPE_CHECKING:  # boto3 types only for readers; the client is duck-typed at run time
    from botocore.client import BaseClient


PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"

# --------------------------------------------------------------------------- grade sinks


@dataclass(frozen=True)
class CompactionResult:
    """What a compaction did to the partitions it rewrote; `written` lists the compacted objects (keys or paths).

    A partition whose rows all lost to another partition is rewritten to no file: it counts in
    `partitions` but has no entry in `written`. rows_in - rows_out rows were dropped as duplicates.
    """

    partitions: int = 0
    files_in: int = 0
    files_deleted: int = 0
    files_kept: int = 0      # inputs rewritten while compaction ran: left for the next run, never deleted
    rows_in: int = 0
    rows_out: int = 0
    written: tuple[str, ...] = ()


#: The columns a sweep reads to decide what is already graded.
INDEX_COLUMNS = ("bucket", "key", "etag", "status", "error_code", "model_version", "scored_at")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INPUT_NAME = re.compile(r"^(part|compacted)-[0-9a-f]+\.parquet$")
_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})/machine_type=([^/]+)/$")
_PARTITION_IN_PATH = re.compile(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})/machine_type=([^/]+)/[^/]*$")
#: The column naming each row's partition folder while compaction pools partitions (never written).
_FOLDER = "partition"

log = logging.getLogger(__name__)

#: What a grades object that is not ours (not Parquet, or not grade rows) raises when read.
_UNREADABLE = (pa.ArrowException, ValueError)


def _grade_table(data: bytes, where: str, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The grade rows of one object under the grades prefix, or None (logged, naming it) when it holds none.

    Anyone with write access to the bucket can leave a file there: a truncated upload, a copy of the
    wrong thing, another tool's output. One such object must not stop every night's sweep, every
    report and every compaction of its partition: it is skipped and named in a warning, never
    deleted (it is not ours to delete), and the recordings it might have held are graded again.
    """
    try:
        table = read_parquet_bytes(data, columns)
        return table if columns else conform_table(table, partition_values(where))
    except _UNREADABLE as exc:
        log.warning("skipped a grades object that holds no grade rows",
                    extra={"object": where, "reason": one_line(str(exc))})
        return None


def partition_values(path: str) -> dict[str, str]:
    """{"dt": ..., "machine_type": ...} of a grade file's key or path ({} outside the layout)."""
    match = _PARTITION_IN_PATH.search(path)
    return dict(zip(PARTITION_COLUMNS, match.groups())) if match else {}


def _latest_per_id(records: Sequence[GradeRecord]) -> list[GradeRecord]:
    latest: dict[str, GradeRecord] = {}
    for r in records:
        kept = latest.get(r.record_id)
        if kept is None or precedence(r.status, r.scored_at) >= precedence(kept.status, kept.scored_at):
            latest[r.record_id] = r
    return [latest[k] for k in sorted(latest)]


class _PartitionedSink:
    """Write/compact logic over a tiny file API (list, get, put, delete) relative to the sink root.

    Layout: `dt=<LastModified day>/machine_type=<type>/<name>.parquet`; a record id lands in one
    partition (its object's LastModified and key never change), except when identical bytes are
    re-uploaded to the same key on a later day of an unversioned bucket: the same ETag keeps the id,
    the new LastModified files it under a second day. Compaction pools the partitions it merges, so
    afterwards each id stands in one of them.
    """

    def __init__(self) -> None:
        self.touched: set[str] = set()  # partitions this sink wrote to (what `compact()` merges)

    def _list(self, rel_prefix: str) -> list[tuple[str, datetime | None]]:
        raise NotImplementedError

    def _get(self, rel: str) -> tuple[bytes, str | None]:
        raise NotImplementedError

    def _put(self, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def _delete(self, rels: Sequence[str], etags: dict[str, str]) -> int:
        raise NotImplementedError

    def _location(self, rel: str) -> str:
        raise NotImplementedError

    def write(self, records: Sequence[GradeRecord]) -> list[str]:
        """One Parquet object per partition touched, named from its rows (`batch_object_name`); returns the names."""
        groups: dict[str, list[GradeRecord]] = {}
        for r in records:
            groups.setdefault(partition_path(r), []).append(r)
        written = []
        for partition in sorted(groups):
            rows = _latest_per_id(groups[partition])
            rel = partition + batch_object_name(rows)
            self._put(rel, parquet_bytes(records_to_file_table(rows)))
            self.touched.add(partition)
            written.append(self._location(rel))
        return written

    def recent_partitions(self, since: datetime) -> set[str]:
        """Partitions holding a file written at or after `since` (what the day's writers touched)."""
        out = set()
        for rel, modified in self._list(""):
            if modified is not None and modified >= since and partition_values(rel):
                out.add(rel.rpartition("/")[0] + "/")
        return out

    def index_rows(self, days: Iterable[str]) -> list[dict[str, Any]]:
        """What the sweep needs to know about the records of these days: INDEX_COLUMNS of every row."""
        rows: list[dict[str, Any]] = []
        for day in sorted(set(days)):
            for rel, _ in self._list(f"dt={day}/"):
                if partition_values(rel) and _INPUT_NAME.match(rel.rpartition("/")[2]):
                    data, _ = self._get(rel)
                    table = _grade_table(data, self._location(rel), list(INDEX_COLUMNS))
                    rows += table.to_pylist() if table is not None else []
        return rows

    def day_partitions(self, date: str, machine_type: str | None = None) -> set[str]:
        """The partitions of day `date` (of one machine type, if given)."""
        if not _DATE.match(date or ""):
            raise ValueError(f"date must be YYYY-MM-DD, got {date!r}")
        _date.fromisoformat(date)
        base = f"dt={date}/" + (f"machine_type={safe_partition_value(machine_type)}/" if machine_type else "")
        return {rel.rpartition("/")[0] + "/" for rel, _ in self._list(base) if partition_values(rel)}

    def compact(self, date: str | None = None, machine_type: str | None = None, *,
                partitions: Iterable[str] | None = None) -> CompactionResult:
        """Merge each partition into one file of the ids it wins: write every merged file first, delete inputs after.

        Which partitions: `partitions`, else those of day `date` (and `machine_type`), else the ones
        this sink wrote to; no other partition is read. Their rows are pooled and deduped as
        `read_grades` dedupes them (`dedupe_table`), so an id found in two of them (identical bytes
        re-uploaded on a later day) stays only in the partition of its winning row. Exact ties go
        to the earlier partition, the one `read_grades` lists first, so where an id stays follows
        from its rows alone, never from the order partitions are given or which compaction read
        them: two compactions, or one racing a writer, never each drop their own copy of a record,
        and `read_grades` returns the same rows before and after. A partition is rewritten
        when it has several inputs or holds a losing row; one whose rows all lost ends with no file.

        The pool is one machine type's partitions (an id's copies share its key, so its type), which
        bounds memory by a type's days, not the whole fleet's. Nothing of a pool is deleted before
        every merged file of it is written, and an input is deleted only if it
        still has the ETag compaction read (a re-run that rewrote it meanwhile keeps its new rows);
        where the store cannot make that check atomic (it ignores DeleteObjects' ETag condition), a
        rewrite landing just before the delete can only hold the rows compaction read, since a part
        file's name comes from its rows (`batch_object_name`), so no re-grade is lost. A crash between
        write and delete leaves rows twice, which the next compaction and every reader dedupe.
        """
        if partitions is None:
            partitions = self.day_partitions(date, machine_type) if date is not None else self.touched
        targets = sorted(set(partitions))
        for folder in targets:
            if not _PARTITION.match(folder):
                raise ValueError(f"not a grades partition: {folder!r}")
        totals = {"partitions": 0, "files_in": 0, "files_deleted": 0, "files_kept": 0, "rows_in": 0, "rows_out": 0}
        written: list[str] = []
        by_type: dict[str, list[str]] = {}
        for folder in targets:   # an id's copies share its key, so its machine_type: one pool per type
            by_type.setdefault(_PARTITION.match(folder).group(2), []).append(folder)
        for folders in by_type.values():
            self._compact_pool(folders, totals, written)
        return CompactionResult(written=tuple(written), **totals)

    def _compact_pool(self, folders: list[str], totals: dict[str, int], written: list[str]) -> None:
        """`compact` over the days of one machine type: read them all, write each one's winners, then delete."""
        import pyarrow.compute as pc

        inputs: dict[str, list[str]] = {}
        rows_read: dict[str, int] = {}
        etags: dict[str, str] = {}
        tables = []
        for folder in folders:  # in key order, as `read_grades` pools them: of tied rows `dedupe_table` keeps the first
            inputs[folder] = sorted(rel for rel, _ in self._list(folder) if rel.rpartition("/")[0] + "/" == folder
                                    and _INPUT_NAME.match(rel.rpartition("/")[2]))
            rows_read[folder] = 0
            for rel in list(inputs[folder]):
                data, etag = self._get(rel)
                table = _grade_table(data, self._location(rel))
                if table is None:   # not ours: neither merged nor deleted
                    inputs[folder].remove(rel)
                    continue
                etags[rel] = etag
                tables.append(table.append_column(_FOLDER, pa.array([folder] * table.num_rows, pa.string())))
                rows_read[folder] += table.num_rows
        if not tables:
            return
        winners = dedupe_table(pa.concat_tables(tables))
        del tables
        stale: list[str] = []
        for folder in folders:
            if not inputs[folder]:
                continue
            kept = winners.filter(pc.equal(winners.column(_FOLDER), folder))
            if len(inputs[folder]) == 1 and kept.num_rows == rows_read[folder]:
                continue  # already one file, every row of it a winner
            out = None
            if kept.num_rows:
                out = folder + compacted_object_name(kept.column("record_id").to_pylist())
                self._put(out, parquet_bytes(kept.select(FILE_SCHEMA.names).cast(FILE_SCHEMA)))
                written.append(self._location(out))
            stale += [rel for rel in inputs[folder] if rel != out]
            totals["partitions"] += 1
            totals["files_in"] += len(inputs[folder])
            totals["rows_in"] += rows_read[folder]
            totals["rows_out"] += kept.num_rows
        deleted = self._delete(stale, etags)
        totals["files_deleted"] += deleted
        totals["files_kept"] += len(stale) - deleted


class S3GradeSink(_PartitionedSink):
    """Grade records as Parquet objects under s3://bucket/prefix/dt=…/machine_type=…/."""

    def __init__(self, client: "BaseClient", bucket: str, prefix: str = "grades/") -> None:
        super().__init__()
        self.client = client
        self.bucket = bucket
        prefix = (prefix or "").lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _list(self, rel_prefix: str) -> list[tuple[str, datetime | None]]:
        keys = list_keys(self.client, self.bucket, self.prefix + rel_prefix, suffixes=(".parquet",))
        return [(info.key[len(self.prefix) :], info.last_modified) for info in keys]

    def _get(self, rel: str) -> tuple[bytes, str | None]:
        return get_bytes_and_etag(self.client, self.bucket, self.prefix + rel)

    def _put(self, rel: str, data: bytes) -> None:
        put_bytes(self.client, self.bucket, self.prefix + rel, data, content_type=PARQUET_CONTENT_TYPE)

    def _delete(self, rels: Sequence[str], etags: dict[str, str]) -> int:
        return delete_keys(self.client, self.bucket, [self.prefix + rel for rel in rels],
                           etags={self.prefix + rel: etags[rel] for rel in rels if etags.get(rel)})

    def _location(self, rel: str) -> str:
        return self.prefix + rel


def _visible_parquet(root: Path) -> list[Path]:
    """Parquet files under `root`, skipping hidden / underscore names (temp files, _SUCCESS ...)."""
    found = []
    for path in root.rglob("*.parquet"):
        parts = path.relative_to(root).parts
        if path.is_file() and not any(p.startswith((".", "_")) for p in parts):
            found.append(path)
    return sorted(found)


def _file_tag(path: Path) -> str:
    """A local file's stand-in for an ETag: changes whenever the file is replaced."""
    st = path.stat()
    return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"


class LocalGradeSink(_PartitionedSink):
    """Grade records as Parquet files in a local folder with the same Hive layout (CLI `--out DIR`, tests)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__()
        self.root = Path(root)

    @property
    def uri(self) -> str:
        return str(self.root)

    def _list(self, rel_prefix: str) -> list[tuple[str, datetime | None]]:
        start = self.root / rel_prefix
        if not start.is_dir():
            return []
        return [(p.relative_to(self.root).as_posix(),
                 datetime.fromtimestamp(p.stat().st_mtime, tz=timezone.utc)) for p in _visible_parquet(start)]

    def _get(self, rel: str) -> tuple[bytes, str | None]:
        path = self.root / rel
        try:
            tag = _file_tag(path)
            return path.read_bytes(), tag
        except FileNotFoundError:
            raise StorageError(ErrorCode.NOT_FOUND, f"file not found: {path}") from None
        except OSError as exc:
            raise StorageError(ErrorCode.STORAGE_ERROR, f"cannot read {path}: {exc.strerror}") from None

    def _put(self, rel: str, data: bytes) -> None:
        target = self.root / rel
        tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: readers never see half a file
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(ErrorCode.STORAGE_ERROR, f"cannot write {target}: {exc.strerror}") from None

    def _delete(self, rels: Sequence[str], etags: dict[str, str]) -> int:
        deleted = 0
        for rel in rels:
            path = self.root / rel
            try:
                if _file_tag(path) != etags.get(rel):
                    continue  # replaced since compaction read it
            except FileNotFoundError:
                continue
            path.unlink(missing_ok=True)
            deleted += 1
        return deleted

    def _location(self, rel: str) -> str:
        return str(self.root / rel)


# --------------------------------------------------------------------------- reading grades


def _finish(tables: list[pa.Table], dedupe: bool) -> pa.Table:
    if not tables:
        return GRADE_SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    return dedupe_table(table) if dedupe else table


def read_grades(uri: str | os.PathLike[str], client: "BaseClient | None" = None, dedupe: bool = True) -> pa.Table:
    """All grade rows under a local folder or s3:// prefix (or one Parquet file), as a GRADE_SCHEMA table.

    machine_type comes from the partition folders (files do not repeat it). With `dedupe`, one row
    per recording (a grade beats an error, else latest scored_at), ordered by (scored_at, record_id).
    """
    bucket, path = parse_uri(uri)
    if bucket is not None:
        client = client or s3_client()
        if path.endswith(".parquet"):
            keys = [path]
        else:
            prefix = path if not path or path.endswith("/") else path + "/"
            keys = [info.key for info in list_keys(client, bucket, prefix, suffixes=(".parquet",))
                    if not any(p.startswith((".", "_")) for p in info.key[len(prefix) :].split("/"))]
        if not keys:
            return _finish([], dedupe)

        def load(k: str) -> pa.Table | None:
            table = _grade_table(get_bytes(client, bucket, k), f"s3://{bucket}/{k}")
            if table is None and path.endswith(".parquet"):   # the one object asked for
                raise StorageError(ErrorCode.STORAGE_ERROR, f"s3://{bucket}/{k} holds no grade rows")
            return table

        with ThreadPoolExecutor(max_workers=min(8, len(keys))) as pool:
            return _finish([t for t in pool.map(load, keys) if t is not None], dedupe)

    import pyarrow.dataset as ds

    root = Path(path)
    if not root.exists():
        raise StorageError(ErrorCode.NOT_FOUND, f"no such grades folder: {root}")
    if root.is_file():
        table = _grade_table(_read_local(root), root.as_posix())
        if table is None:
            raise StorageError(ErrorCode.STORAGE_ERROR, f"{root} holds no grade rows (not a grades Parquet file)")
        return _finish([table], dedupe)
    files = _visible_parquet(root)
    if not files:
        return _finish([], dedupe)
    try:
        partitioning = ds.partitioning(pa.schema([(name, pa.string()) for name in PARTITION_COLUMNS]), flavor="hive")
        table = ds.dataset(str(root), format="parquet", partitioning=partitioning).to_table()
    except _UNREADABLE:   # a file that is not ours among them: read one by one, skipping it
        tables = [_grade_table(_read_local(f), f.as_posix()) for f in files]
        return _finish([t for t in tables if t is not None], dedupe)
    except OSError as exc:
        raise StorageError(ErrorCode.STORAGE_ERROR, f"cannot read grades under {root}: {one_line(str(exc))}") \
            from None
    return _finish([conform_table(table)], dedupe)


def _read_local(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(ErrorCode.STORAGE_ERROR, f"cannot read {path}: {exc.strerror}") from None
