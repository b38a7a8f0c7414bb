"""Where grade records go and how they are read back: partitioned Parquet in a bucket or a folder.

Sinks write deterministic Parquet names (redelivery overwrites, never duplicates); compaction merges
a partition into one file; readers dedupe by record_id.
"""

from __future__ import annotations

import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date as _date
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import pyarrow as pa

from signalcraft_core.errors import ErrorCode, StorageError
from signalcraft_core.io.objects import (
    delete_keys,
    get_bytes,
    list_keys,
    parse_uri,
    put_bytes,
    s3_client,
)
from signalcraft_core.logs import one_line
from signalcraft_core.pipeline.records import (
    GRADE_SCHEMA,
    GradeRecord,
    batch_object_name,
    compacted_object_name,
    conform_table,
    dedupe_table,
    parquet_bytes,
    partition_path,
    read_parquet_bytes,
    records_to_table,
    safe_partition_value,
)

if TYPE_CHECKING:  # boto3 types only for readers; the client is duck-typed at run time
    from botocore.client import BaseClient


PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"

# --------------------------------------------------------------------------- grade sinks


@dataclass(frozen=True)
class CompactionResult:
    """What a compaction did; `written` lists the compacted objects (keys or paths)."""

    partitions: int = 0
    files_in: int = 0
    files_deleted: int = 0
    rows_in: int = 0
    rows_out: int = 0
    written: tuple[str, ...] = ()


class GradeSink(Protocol):
    """Where grade records go: Parquet under dt=/machine_type= partitions, deterministic names."""

    def write(self, records: Sequence[GradeRecord]) -> list[str]: ...

    def compact(self, date: str, machine_type: str | None = None) -> CompactionResult: ...


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INPUT_NAME = re.compile(r"^(part|compacted)-[0-9a-f]+\.parquet$")


def _latest_per_id(records: Sequence[GradeRecord]) -> list[GradeRecord]:
    latest: dict[str, GradeRecord] = {}
    for r in records:
        kept = latest.get(r.record_id)
        if kept is None or r.scored_at >= kept.scored_at:
            latest[r.record_id] = r
    return [latest[k] for k in sorted(latest)]


class _PartitionedSink:
    """Shared write/compact logic over a tiny file API (list, get, put, delete) relative to the sink root."""

    def _list(self, rel_prefix: str) -> list[str]:
        raise NotImplementedError

    def _get(self, rel: str) -> bytes:
        raise NotImplementedError

    def _put(self, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def _delete(self, rels: Sequence[str]) -> int:
        raise NotImplementedError

    def _location(self, rel: str) -> str:
        raise NotImplementedError

    def write(self, records: Sequence[GradeRecord]) -> list[str]:
        """One Parquet object per partition touched, named from its record ids; returns what was written."""
        groups: dict[str, list[GradeRecord]] = {}
        for r in records:
            groups.setdefault(partition_path(r), []).append(r)
        written = []
        for partition in sorted(groups):
            rows = _latest_per_id(groups[partition])
            rel = partition + batch_object_name(rows)
            self._put(rel, parquet_bytes(records_to_table(rows)))
            written.append(self._location(rel))
        return written

    def compact(self, date: str, machine_type: str | None = None) -> CompactionResult:
        """Merge each partition of day `date` into one file: write the merged file first, delete inputs after.

        A crash between the two leaves duplicate rows that readers dedupe by record_id; nothing is lost.
        Files written while compaction runs are not listed, so they are not deleted.
        """
        if not _DATE.match(date or ""):
            raise ValueError(f"date must be YYYY-MM-DD, got {date!r}")
        _date.fromisoformat(date)
        base = f"dt={date}/" + (f"machine_type={safe_partition_value(machine_type)}/" if machine_type else "")
        partitions: dict[str, list[str]] = {}
        for rel in self._list(base):
            folder, _, name = rel.rpartition("/")
            if folder.startswith(f"dt={date}/machine_type=") and "/" not in folder[len(f"dt={date}/"):] \
                    and _INPUT_NAME.match(name):
                partitions.setdefault(folder + "/", []).append(rel)
        totals = {"partitions": 0, "files_in": 0, "files_deleted": 0, "rows_in": 0, "rows_out": 0}
        written: list[str] = []
        for folder in sorted(partitions):
            inputs = sorted(partitions[folder])
            if len(inputs) < 2:
                continue  # nothing to merge
            table = pa.concat_tables([conform_table(read_parquet_bytes(self._get(rel))) for rel in inputs])
            merged = dedupe_table(table)
            out = folder + compacted_object_name(merged.column("record_id").to_pylist())
            self._put(out, parquet_bytes(merged))
            deleted = self._delete([rel for rel in inputs if rel != out])
            written.append(self._location(out))
            totals["partitions"] += 1
            totals["files_in"] += len(inputs)
            totals["files_deleted"] += deleted
            totals["rows_in"] += table.num_rows
            totals["rows_out"] += merged.num_rows
        return CompactionResult(written=tuple(written), **totals)


class S3GradeSink(_PartitionedSink):
    """Grade records as Parquet objects under s3://bucket/prefix/dt=…/machine_type=…/."""

    def __init__(self, client: "BaseClient", bucket: str, prefix: str = "grades/") -> None:
        self.client = client
        self.bucket = bucket
        prefix = (prefix or "").lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _list(self, rel_prefix: str) -> list[str]:
        keys = list_keys(self.client, self.bucket, self.prefix + rel_prefix, suffixes=(".parquet",))
        return [info.key[len(self.prefix) :] for info in keys]

    def _get(self, rel: str) -> bytes:
        return get_bytes(self.client, self.bucket, self.prefix + rel)

    def _put(self, rel: str, data: bytes) -> None:
        put_bytes(self.client, self.bucket, self.prefix + rel, data, content_type=PARQUET_CONTENT_TYPE)

    def _delete(self, rels: Sequence[str]) -> int:
        return delete_keys(self.client, self.bucket, [self.prefix + rel for rel in rels])

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


class LocalGradeSink(_PartitionedSink):
    """Grade records as Parquet files in a local folder with the same Hive layout (CLI `--out DIR`, tests)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def uri(self) -> str:
        return str(self.root)

    def _list(self, rel_prefix: str) -> list[str]:
        start = self.root / rel_prefix
        if not start.is_dir():
            return []
        return [p.relative_to(self.root).as_posix() for p in _visible_parquet(start)]

    def _get(self, rel: str) -> bytes:
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            raise StorageError(ErrorCode.NOT_FOUND, f"file not found: {self.root / rel}") from None
        except OSError as exc:
            raise StorageError(ErrorCode.STORAGE_ERROR, f"cannot read {self.root / rel}: {exc.strerror}") from None

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

    def _delete(self, rels: Sequence[str]) -> int:
        for rel in rels:
            (self.root / rel).unlink(missing_ok=True)
        return len(rels)

    def _location(self, rel: str) -> str:
        return str(self.root / rel)


# --------------------------------------------------------------------------- reading grades


def _finish(tables: list[pa.Table], dedupe: bool) -> pa.Table:
    if not tables:
        return GRADE_SCHEMA.empty_table()
    table = pa.concat_tables([conform_table(t) for t in tables])
    return dedupe_table(table) if dedupe else table


def read_grades(uri: str | os.PathLike[str], client: "BaseClient | None" = None, dedupe: bool = True) -> pa.Table:
    """All grade rows under a local folder or s3:// prefix (or one Parquet file), as a GRADE_SCHEMA table.

    Partition folders are not turned into columns (rows already carry machine_type). With `dedupe`,
    one row per record_id (latest scored_at), ordered by (scored_at, record_id).
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
        with ThreadPoolExecutor(max_workers=min(8, len(keys))) as pool:
            tables = list(pool.map(lambda k: read_parquet_bytes(get_bytes(client, bucket, k)), keys))
        return _finish(tables, dedupe)

    import pyarrow.dataset as ds

    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = _visible_parquet(root)
    else:
        raise StorageError(ErrorCode.NOT_FOUND, f"no such grades folder: {root}")
    if not files:
        return _finish([], dedupe)
    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet", schema=GRADE_SCHEMA)
        table = dataset.to_table()
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(ErrorCode.STORAGE_ERROR, f"cannot read grades under {root}: {one_line(str(exc))}") \
            from None
    return _finish([table], dedupe)
