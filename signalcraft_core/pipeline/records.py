"""One source of truth for the grade record: the pyarrow schema, the row type and the Parquet naming.

Every front door (upload event, sweep, Distributed Map, CLI) ends in `GradeRecord` rows written
through this schema, so readers can trust column names, types and nullability; the README's
schema table is generated from the field descriptions here (`schema_markdown`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import struct
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timezone
from enum import Enum
from typing import Any, Sequence

import pyarrow as pa

SCHEMA_VERSION: int = 2  # 2: one row per recording (id without the model), files without partition columns

GRADES = ("NORMAL", "WARNING", "CRITICAL")
STATUSES = ("ok", "error")

_TS = pa.timestamp("ms", tz="UTC")


def _list(item: pa.DataType) -> pa.DataType:
    # Parquet names list items "element"; using that name here makes the round trip schema-exact.
    return pa.list_(pa.field("element", item))


def _f(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": description})


GRADE_SCHEMA: pa.Schema = pa.schema(
    [
        _f("record_id", pa.string(), "The recording's identity: sha256(bucket, key, version id, else ETag), 32 hex "
           "chars, the same on every path. One row per id in the table: a grade (status ok) beats any error "
           "row of the id, else the latest scored_at wins.", nullable=False),
        _f("bucket", pa.string(), "Source bucket of the recording (null for a local file)."),
        _f("key", pa.string(), "Object key of the recording, or the local file path."),
        _f("etag", pa.string(), "ETag of the source object, without quotes."),
        _f("version_id", pa.string(), "Version id of the source object, when the bucket is versioned."),
        _f("size_bytes", pa.int64(), "Size of the source object in bytes."),
        _f("event_time", _TS, "LastModified of the recording object, UTC (from the object's GET or HEAD, never an "
           "event field); its day is the dt partition. Null when the object could not be read (e.g. not_found): "
           "such a record is filed under the day it was scored."),
        _f("scored_at", _TS, "When this record was produced, UTC.", nullable=False),
        _f("site", pa.string(), "Site / plant the machine belongs to, when known."),
        _f("machine_type", pa.string(), "Machine type (pump, fan, slider, valve ...) from the key; selects the "
           "model set. A key naming none: the type asked for (score --machine-type), else default, whether "
           "or not the set loaded."),
        _f("machine_id", pa.string(), "Machine identifier within the site, when known."),
        _f("model_name", pa.string(), "Name of the model set that graded the recording."),
        _f("model_version", pa.string(), "Version of the model set that graded the recording; a backfill "
           "re-grades and replaces the row."),
        _f("model_scope", pa.string(), "How specific that set is: machine (<site>/<type>/<id> or <type>/<id>), "
           "type, or default (a machine graded by type or default is not enrolled yet)."),
        _f("profile", pa.string(), "Feature profile the model set was trained with."),
        _f("level1_score", pa.float32(), "Level 1 calibrated score, 0-100."),
        _f("level1_rules", _list(pa.string()), "Names of the explainable Level 1 rules that fired."),
        _f("iforest_score", pa.float32(), "Raw IsolationForest anomaly score (higher = more anomalous)."),
        _f("level2_mse", pa.float32(), "Level 2 autoencoder reconstruction mean squared error."),
        _f("level2_score", pa.float32(), "Level 2 calibrated score, 0-100."),
        _f("level2_band_errors", _list(pa.float32()), "Level 2 reconstruction error per mel band."),
        _f("score", pa.float32(), "Final anomaly score, 0-100 (null on error)."),
        _f("grade", pa.string(), "NORMAL, WARNING or CRITICAL; null on error."),
        _f("status", pa.string(), "ok, or error (then error_code says why).", nullable=False),
        _f("error_code", pa.string(), "Stable error code (see ErrorCode) when status is error."),
        _f("error_message", pa.string(), "One-line, user-facing error message when status is error."),
        _f("duration_s", pa.float32(), "Duration of the decoded recording in seconds."),
        _f("sample_rate_in", pa.int32(), "Sample rate of the input file in Hz, before resampling."),
        _f("channels_in", pa.int16(), "Channel count of the input file, before downmixing."),
        _f("schema_version", pa.int16(), "Version of this schema the row was written with.", nullable=False),
    ],
    metadata={"signalcraft.schema_version": str(SCHEMA_VERSION)},
)

#: Hive partition folders of the grades prefix: `dt=YYYY-MM-DD/machine_type=T/`. `dt` is the UTC day of
#: the recording object's LastModified (every path agrees on it; no event sender can forge it), or the
#: day it was scored when the object could not be HEAD-ed (its LastModified is unknown then).
PARTITION_COLUMNS = ("dt", "machine_type")
#: What a Parquet file holds: the record without its partition columns, so every reader (pyarrow
#: dataset, pandas, DuckDB, Athena) gets machine_type from the folder alone and nothing clashes.
FILE_SCHEMA: pa.Schema = pa.schema([f for f in GRADE_SCHEMA if f.name not in PARTITION_COLUMNS],
                                   metadata=GRADE_SCHEMA.metadata)

_FLOAT_FIELDS = frozenset(f.name for f in GRADE_SCHEMA if pa.types.is_float32(f.type))
_INT_FIELDS = frozenset(f.name for f in GRADE_SCHEMA if pa.types.is_integer(f.type))
_TS_FIELDS = frozenset(f.name for f in GRADE_SCHEMA if pa.types.is_timestamp(f.type))
_REQUIRED = tuple(f.name for f in GRADE_SCHEMA if not f.nullable)
_FLOAT32_MAX = 3.4028234663852886e38


def _to_float32(value: Any) -> float:
    """Round to float32 so a record equals itself after a Parquet round trip."""
    x = float(value)
    if math.isnan(x) or math.isinf(x):
        return x
    if abs(x) > _FLOAT32_MAX:
        return math.copysign(math.inf, x)
    return struct.unpack("f", struct.pack("f", x))[0]


def _to_utc_ms(value: Any, name: str) -> datetime:
    """Accept a datetime (naive = UTC) or an ISO-8601 string; keep millisecond precision like the schema."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{name}: not an ISO-8601 time: {value!r}") from exc
    elif not isinstance(value, datetime):
        raise TypeError(f"{name}: expected datetime or ISO string, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass(frozen=True, kw_only=True)
class GradeRecord:
    """One graded (or failed) recording; attributes mirror GRADE_SCHEMA field for field."""

    record_id: str
    bucket: str | None = None
    key: str | None = None
    etag: str | None = None
    version_id: str | None = None
    size_bytes: int | None = None
    event_time: datetime | None = None
    scored_at: datetime
    site: str | None = None
    machine_type: str | None = None
    machine_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_scope: str | None = None
    profile: str | None = None
    level1_score: float | None = None
    level1_rules: tuple[str, ...] | None = None
    iforest_score: float | None = None
    level2_mse: float | None = None
    level2_score: float | None = None
    level2_band_errors: tuple[float, ...] | None = None
    score: float | None = None
    grade: str | None = None
    status: str
    error_code: str | None = None
    error_message: str | None = None
    duration_s: float | None = None
    sample_rate_in: int | None = None
    channels_in: int | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Normalise once here so equality holds across a Parquet round trip.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in _REQUIRED:
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required")
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Enum):
                value = value.value
                put(f.name, value)
            if f.name in _TS_FIELDS:
                put(f.name, _to_utc_ms(value, f.name))
            elif f.name in _FLOAT_FIELDS:
                put(f.name, _to_float32(value))
            elif f.name in _INT_FIELDS:
                if isinstance(value, bool) or int(value) != value:
                    raise TypeError(f"{f.name}: expected an integer, got {value!r}")
                put(f.name, int(value))
        if self.level1_rules is not None:
            put("level1_rules", tuple(str(r) for r in self.level1_rules))
        if self.level2_band_errors is not None:
            put("level2_band_errors", tuple(_to_float32(v) for v in self.level2_band_errors))
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.grade is not None and self.grade not in GRADES:
            raise ValueError(f"grade must be one of {GRADES} or None, got {self.grade!r}")
        if self.status == "error" and self.grade is not None:
            raise ValueError("an error record has no grade")

    def to_row(self) -> dict[str, Any]:
        """Column name -> python value (lists as lists, times as aware datetimes), in schema order."""
        row = asdict(self)
        for name in ("level1_rules", "level2_band_errors"):
            if row[name] is not None:
                row[name] = list(row[name])
        return row

    def to_json_row(self) -> dict[str, Any]:
        """Like `to_row` but JSON-serialisable (ISO-8601 times), for handler responses and logs."""
        row = self.to_row()
        for name in _TS_FIELDS:
            if row[name] is not None:
                row[name] = row[name].isoformat().replace("+00:00", "Z")
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "GradeRecord":
        """Build from a column dict (unknown columns, e.g. partition columns, are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def record_id(bucket: str | None, key: str, version: str | None) -> str:
    """One recording, one id: the same object version on every path (event, sweep, Map batch, retry).

    `version` is the object's version id when the bucket is versioned, else its ETag, both read
    from the object itself (HEAD) before anything else, so an error record and the later grade of
    the same object share the id. The model is not part of it: a re-grade replaces the row.

    A local file name that is not valid UTF-8 arrives surrogate-escaped (os.fsdecode); it is hashed
    as its original bytes ("surrogateescape"), so it gets an id instead of failing the batch, while
    every valid UTF-8 name encodes exactly as before (ids unchanged). Any other lone surrogate (an
    event's JSON may carry one) is hashed as "surrogatepass" would write it.
    """
    joined = "\x1f".join([bucket or "", key or "", version or ""])
    try:
        data = joined.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = joined.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]


def records_to_file_table(records: Sequence[GradeRecord]) -> pa.Table:
    """The rows as a grade file stores them: FILE_SCHEMA, the partition columns left to the folder names."""
    return records_to_table(records).select(FILE_SCHEMA.names).cast(FILE_SCHEMA)


def records_to_table(records: Sequence[GradeRecord]) -> pa.Table:
    """Rows -> a table that conforms to GRADE_SCHEMA (types, field order and non-null columns)."""
    for r in records:
        if not isinstance(r, GradeRecord):
            raise TypeError(f"expected GradeRecord, got {type(r).__name__}")
    table = pa.Table.from_pylist([r.to_row() for r in records], schema=GRADE_SCHEMA)
    validate_table(table)
    return table


def validate_table(table: pa.Table) -> None:
    """Raise ValueError unless `table` has exactly GRADE_SCHEMA's columns, types and non-null columns."""
    got = [(f.name, f.type) for f in table.schema]
    want = [(f.name, f.type) for f in GRADE_SCHEMA]
    if got != want:
        raise ValueError(f"table does not match GRADE_SCHEMA: {got} != {want}")
    for name in _REQUIRED:
        if table.column(name).null_count:
            raise ValueError(f"column {name} must not contain nulls")
    table.validate(full=True)


def conform_table(table: pa.Table, partition: dict[str, str] | None = None) -> pa.Table:
    """GRADE_SCHEMA's columns from a table read back: partition values filled in from its folder
    (`partition`, e.g. {"machine_type": "pump"}) when the file does not hold them; extra columns dropped."""
    for name, value in (partition or {}).items():
        if name in GRADE_SCHEMA.names and name not in table.column_names:
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
    missing = [f.name for f in GRADE_SCHEMA if f.name not in table.column_names]
    if missing:
        raise ValueError(f"table lacks grade columns: {missing}")
    return table.select(GRADE_SCHEMA.names).cast(GRADE_SCHEMA)


def table_to_records(table: pa.Table) -> list[GradeRecord]:
    """Table -> rows; extra columns are ignored, missing grade columns are an error."""
    return [GradeRecord.from_row(row) for row in conform_table(table).to_pylist()]


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def safe_partition_value(value: str | None) -> str:
    """A partition folder value that is safe in a key or path: unsafe characters -> "_", empty -> "unknown"."""
    cleaned = _UNSAFE.sub("_", value.strip()) if value else ""
    return cleaned if cleaned.strip(".") else "unknown"


def partition_date(record: GradeRecord) -> date:
    """The day a record belongs to: the object's LastModified (UTC), else (never HEAD-ed) when it was scored."""
    when = record.event_time or record.scored_at
    return when.astimezone(timezone.utc).date()


def partition_path(record: GradeRecord) -> str:
    """Hive-style folder of a record: "dt=YYYY-MM-DD/machine_type=T/" (unsafe characters -> "_")."""
    return f"dt={partition_date(record).isoformat()}/machine_type={safe_partition_value(record.machine_type)}/"


def _ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(set(ids))).encode("utf-8")).hexdigest()[:32]


def batch_object_name(records: Sequence[GradeRecord]) -> str:
    """Name from what the rows say, all but scored_at: a redelivery that grades alike overwrites its own object.

    A batch with any other outcome for the same ids - a re-grade by another model version, a grade
    after an error, a not_found after the object was deleted - gets another name, so writing it
    never replaces a file holding different rows: the readers' dedupe (`dedupe_table`) decides which
    row stands, never the last writer. It also makes compaction safe on stores that ignore
    DeleteObjects' ETag condition: a file rewritten between compaction's check and its delete can
    only hold the rows compaction read (apart from scored_at), so deleting it loses nothing.
    """
    if not records:
        raise ValueError("no records")
    rows = sorted(json.dumps({k: v for k, v in r.to_json_row().items() if k != "scored_at"}, sort_keys=True)
                  for r in records)  # ASCII: json escapes every non-ASCII character (surrogates too)
    digest = hashlib.sha256("\n".join(rows).encode("ascii")).hexdigest()[:32]
    return f"part-{digest}.parquet"


def compacted_object_name(record_ids: Sequence[str]) -> str:
    """Name of a compacted partition file, from the set of record ids it holds."""
    if not record_ids:
        raise ValueError("no records")
    return f"compacted-{_ids_digest(record_ids)}.parquet"


def parquet_bytes(table: pa.Table) -> bytes:
    """Table -> zstd-compressed Parquet bytes (the arrow schema, incl. descriptions, travels along)."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def read_parquet_bytes(data: bytes, columns: Sequence[str] | None = None) -> pa.Table:
    """Parquet bytes -> table (of `columns` only, if given)."""
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data), columns=list(columns) if columns else None)


def _type_name(type_: pa.DataType) -> str:
    if pa.types.is_list(type_):
        return f"list<{_type_name(type_.value_type)}>"
    return {"float": "float32", "double": "float64", "halffloat": "float16"}.get(str(type_), str(type_))


def schema_markdown() -> str:
    """The README's schema table: one row per field, from the descriptions above."""
    lines = ["| name | type | description |", "|---|---|---|"]
    for f in GRADE_SCHEMA:
        type_ = f"`{_type_name(f.type)}`" + ("" if f.nullable else " (not null)")
        description = (f.metadata or {}).get(b"description", b"").decode("utf-8").replace("|", "\\|")
        lines.append(f"| `{f.name}` | {type_} | {description} |")
    return "\n".join(lines) + "\n"


def precedence(status: str | None, scored_at: datetime) -> tuple[bool, datetime]:
    """Which of two rows of one record_id stands: the higher value (a grade beats an error, then later scored_at).

    The same id means the same bytes, so a grade of them stays true: a later error row of the id
    (a not_found from a redelivered event after the object was deleted, a model_error during a
    backfill, ...) says something about that attempt, not the recording, and must never hide the
    grade. Given fields, not a record: the sweep's index rows are dicts. `dedupe_table` applies the
    same order to tables.
    """
    return status == "ok", scored_at


def dedupe_table(table: pa.Table) -> pa.Table:
    """One row per record_id, the one of highest `precedence`; rows ordered by (scored_at, record_id).

    Redelivery and interrupted compaction may leave a record twice; readers call this so that
    is never visible. Ties keep the first row in input order (stable sort).
    """
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return table
    graded = pc.equal(table.column("status"), "ok")
    order = pc.sort_indices(pa.table({"record_id": table.column("record_id"), "graded": graded,
                                      "scored_at": table.column("scored_at")}),
                            sort_keys=[("record_id", "ascending"), ("graded", "descending"),
                                       ("scored_at", "descending")])
    table = table.take(order)
    ids = table.column("record_id").combine_chunks()
    first = pa.concat_arrays([
        pa.array([True]),
        pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)),
    ])
    table = table.filter(first)
    table = _drop_superseded_errors(table)
    return table.take(pc.sort_indices(table, sort_keys=[("scored_at", "ascending"), ("record_id", "ascending")]))


def _drop_superseded_errors(table: pa.Table) -> pa.Table:
    """An error row whose object (bucket, key, ETag) was graded later under another id is history, not a row.

    This only happens when the object could not even be HEAD-ed on a versioned bucket, so its
    error record is keyed by the ETag while the later grade is keyed by the version id.
    """

    status = table.column("status").to_pylist()
    if "error" not in status:
        return table
    graded: dict[tuple, Any] = {}
    keys = list(zip(table.column("bucket").to_pylist(), table.column("key").to_pylist(),
                    table.column("etag").to_pylist()))
    scored = table.column("scored_at").to_pylist()
    for k, st, at in zip(keys, status, scored):
        if st == "ok" and (k not in graded or at > graded[k]):
            graded[k] = at
    keep = [not (st == "error" and k[2] is not None and k in graded and graded[k] >= at)
            for k, st, at in zip(keys, status, scored)]
    return table.filter(pa.array(keep))
