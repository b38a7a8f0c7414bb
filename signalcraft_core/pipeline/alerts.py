"""Machine alerts people act on: a CRITICAL grade, or scores that climb night after night; once per machine a day.

Two rules raise an alert for a machine (site, machine_type, machine_id):
- `critical_grade`: a recording graded CRITICAL, recorded within ALERT_MAX_AGE_HOURS (48 h) of now
  (a backfill of old recordings pages nobody). Checked wherever records are written.
- `rising_trend`: a one-sided CUSUM on the machine's daily median score (ok records, one median per
  LastModified day, the ALERT_TREND_DAYS full days before today): baseline mu0 = median of the first
  BASELINE_DAYS daily medians, z = (median - mu0) / SIGMA with SIGMA = 5 score points (the 0-100 scale
  is calibrated: 50 = WARNING), S = max(0, S + z - K) over the later days with K = 0.5, and the rule
  fires when S > H = 4 on the last day, that day's median is still above mu0 + K * SIGMA, and the
  last day is yesterday. Two nights 15 points above baseline fire; one does not, nor does a past
  spike the machine has recovered from. Checked by the first sweep of a UTC day that completes (the
  nightly step; the marker `_alerts/trend-checks/dt=<today>.json` says it ran), so later sweeps that
  day read no grade files for it; the upload function may not read the grades at all.

An alert is one event: EventBridge PutEvents (detail-type "SignalCraft Machine Alert", source
"signalcraft.scoring") on ALERT_EVENT_BUS and/or SNS Publish to ALERT_TOPIC_ARN, carrying the record,
the rules that fired (ours and the record's Level-1 rules) and the top mel bands (indices of the
largest `level2_band_errors`). Outside Lambda it also goes to stderr and to a JSON-lines file
(SIGNALCRAFT_ALERTS_FILE, default ~/.signalcraft/alerts.jsonl).

Dedupe: before publishing, the marker `_alerts/dt=<today>/<site>/<type>/<id>.json` (the
event itself) is created in the grades bucket with PutObject IfNoneMatch="*": S3 answers 412 when it
exists, so exactly one writer per machine and UTC day publishes. A store without conditional writes
(NotImplemented) falls back to HEAD-then-PUT. When the marker cannot be written at all the alert is
published anyway (a duplicate page beats a missed one) and a warning says so. `open_alerts` reads the
markers back for `signalcraft report`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import stat
import statistics
import sys
import threading
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote, unquote

from signalcraft_core.config import Settings
from signalcraft_core.errors import SignalcraftError
from signalcraft_core.io.objects import get_bytes, list_keys
from signalcraft_core.logs import one_line, printable
from signalcraft_core.pipeline import observability

log = logging.getLogger(__name__)

DETAIL_TYPE = "SignalCraft Machine Alert"
SOURCE = "signalcraft.scoring"
MARKER_PREFIX = "_alerts/"
TREND_CHECK_PREFIX = "_alerts/trend-checks/"
#: CUSUM of the daily median score (see the module docstring).
CUSUM_K = 0.5
CUSUM_H = 4.0
SIGMA = 5.0
BASELINE_DAYS = 3
MIN_DAYS = BASELINE_DAYS + 2
TOP_BANDS = 3
#: The record fields an alert carries (level2_band_errors is summarised as top_mel_bands).
RECORD_FIELDS = ("record_id", "bucket", "key", "etag", "version_id", "event_time", "scored_at", "site",
                 "machine_type", "machine_id", "model_name", "model_version", "profile", "score", "grade",
                 "level1_score", "level1_rules", "iforest_score", "level2_score", "level2_mse", "duration_s")
_TREND_COLUMNS = ["record_id", "scored_at", "site", "machine_id", "score", "status"]


# ------------------------------------------------------------------------------------------ the rules


@dataclass(frozen=True)
class Trend:
    """The CUSUM of one machine's daily medians; `fired` says whether `rising_trend` holds."""

    fired: bool
    days: tuple[str, ...] = ()
    medians: tuple[float, ...] = ()
    baseline: float | None = None
    cusum: tuple[float, ...] = ()
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"test": "one-sided CUSUM of the daily median score", "k": CUSUM_K, "h": CUSUM_H, "sigma": SIGMA,
                "baseline_days": BASELINE_DAYS, "baseline": self.baseline,
                "daily_medians": dict(zip(self.days, (round(m, 2) for m in self.medians))),
                "cusum": [round(s, 3) for s in self.cusum]}


def cusum_trend(daily: Sequence[tuple[str, float]], today: dt.date) -> Trend:
    """`rising_trend` on (day, median score) pairs, oldest first (days without records are absent)."""
    daily = sorted((d, float(m)) for d, m in daily if m is not None and math.isfinite(m))
    days, medians = tuple(d for d, _ in daily), tuple(m for _, m in daily)
    if len(daily) < MIN_DAYS:
        return Trend(False, days, medians, reason=f"{len(daily)} days with records, {MIN_DAYS} needed")
    baseline = statistics.median(medians[:BASELINE_DAYS])
    s, path = 0.0, []
    for m in medians[BASELINE_DAYS:]:
        s = max(0.0, s + (m - baseline) / SIGMA - CUSUM_K)
        path.append(s)
    trend = dict(days=days, medians=medians, baseline=baseline, cusum=tuple(path))
    if dt.date.fromisoformat(days[-1]) < today - dt.timedelta(days=1):
        return Trend(False, **trend, reason="no records since yesterday")
    if s <= CUSUM_H:
        return Trend(False, **trend, reason=f"CUSUM {s:.2f} <= {CUSUM_H}")
    if medians[-1] <= baseline + CUSUM_K * SIGMA:
        return Trend(False, **trend, reason="back near its baseline")
    return Trend(True, **trend, reason=f"CUSUM {s:.2f} > {CUSUM_H}")


def top_bands(band_errors: Sequence[float] | None, n: int = TOP_BANDS) -> list[int]:
    """Mel band indices with the largest reconstruction error, largest first (argmax, then the next ones)."""
    if not band_errors:
        return []
    values = [(-(float(v) if v is not None and math.isfinite(float(v)) else -math.inf), i)
              for i, v in enumerate(band_errors)]
    return [i for _, i in sorted(values)[:n]]


# ------------------------------------------------------------------------------------------ the event


def _row(record: Any) -> dict[str, Any]:
    if is_dataclass(record):
        return {f.name: getattr(record, f.name) for f in fields(record)}
    return dict(record)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


def machine_of(row: Mapping[str, Any]) -> tuple[str, str, str]:
    return (row.get("site") or "", row.get("machine_type") or "unknown", row.get("machine_id") or "")


def build_alert(record: Any, rules: Sequence[str], day: dt.date, trend: Trend | None = None) -> dict[str, Any]:
    """The alert event's detail: machine, the rules that fired, the record, its top mel bands."""
    row = _row(record)
    site, machine_type, machine_id = machine_of(row)
    bands = row.get("level2_band_errors") or []
    top = top_bands(bands)
    alert = {
        "alert": DETAIL_TYPE, "day": day.isoformat(),
        "machine": {"site": site or None, "machine_type": machine_type, "machine_id": machine_id or None},
        "rules": list(rules), "level1_rules": list(row.get("level1_rules") or []),
        "top_mel_bands": [{"band": i, "error": _json_value(float(bands[i]))} for i in top],
        "record": {name: _json_value(row.get(name)) for name in RECORD_FIELDS},
        "raised_at": _json_value(dt.datetime.now(dt.timezone.utc)),
    }
    if trend is not None:
        alert["trend"] = trend.as_dict()
    return alert


def marker_key(day: dt.date, machine: tuple[str, str, str]) -> str:
    site, machine_type, machine_id = (quote(part or "_", safe="") for part in machine)
    return f"{MARKER_PREFIX}dt={day.isoformat()}/{site}/{machine_type}/{machine_id}.json"


# ------------------------------------------------------------------------------------------ publishing


_clients: dict[tuple[str, str | None], Any] = {}
_clients_lock = threading.Lock()
_file_lock = threading.Lock()


def _client(service: str) -> Any:
    """A boto3 client for events / sns: short timeouts, few retries (an alert must not stall grading)."""
    key = (service, os.environ.get("AWS_ENDPOINT_URL"))
    with _clients_lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)
            _clients[key] = boto3.session.Session().client(service, config=config)
        return _clients[key]


class Publisher:
    """Claims the day's marker for a machine, then sends the alert to every configured target."""

    def __init__(self, settings: Settings, s3: Any, bucket: str, stream: Any = None) -> None:
        self.settings, self.s3, self.bucket = settings, s3, bucket
        self.stream = stream

    def publish(self, alert: dict[str, Any]) -> bool:
        """True when this call published the alert, False when the machine was alerted today already."""
        machine = (alert["machine"]["site"], alert["machine"]["machine_type"], alert["machine"]["machine_id"])
        key = marker_key(dt.date.fromisoformat(alert["day"]), machine)
        body = json.dumps(alert, sort_keys=True).encode()
        claim = self._claim(key, body)
        if claim == "duplicate":
            observability.count("AlertsSuppressed")
            log.info("alert suppressed: machine alerted today", extra={"marker": key, "rules": alert["rules"]})
            return False
        alert = {**alert, "dedupe": claim}
        with observability.span("publish_alert"):
            self._send(alert)
        observability.count("AlertsPublished")
        # WARNING in CloudWatch; locally the terminal line says it already, so the log line is INFO
        log.log(logging.WARNING if self.settings.in_lambda else logging.INFO, "machine alert", extra={"machine": "/".join(p or "_" for p in machine), "rules": alert["rules"],
                                            "key": alert["record"]["key"], "score": alert["record"]["score"]})
        return True

    def _claim(self, key: str, body: bytes) -> str:
        """"claimed" (marker created), "duplicate" (it existed), or "unavailable" (could not tell)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json",
                               IfNoneMatch="*")
            return "claimed"
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return "duplicate"
            if code not in ("NotImplemented", "InvalidArgument", "InvalidRequest") and status != 501:
                log.warning("alert marker not written: publishing without dedupe",
                            extra={"marker": key, "error": one_line(f"{code} (HTTP {status})")})
                return "unavailable"
        except BotoCoreError as exc:
            log.warning("alert marker not written: publishing without dedupe",
                        extra={"marker": key, "error": one_line(str(exc))})
            return "unavailable"
        return self._claim_without_condition(key, body)

    def _claim_without_condition(self, key: str, body: bytes) -> str:
        """HEAD-then-PUT for stores without conditional writes (two writers in the same second may both win)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return "duplicate"
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                return "unavailable"
        except BotoCoreError:
            return "unavailable"
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
            return "claimed-unconditionally"
        except (ClientError, BotoCoreError):
            return "unavailable"

    def _send(self, alert: dict[str, Any]) -> None:
        detail = json.dumps(alert, sort_keys=True, default=str)
        if self.settings.alert_event_bus:
            self._call("events", lambda c: c.put_events(Entries=[{
                "Source": SOURCE, "DetailType": DETAIL_TYPE, "Detail": detail,
                "EventBusName": self.settings.alert_event_bus,
                "Resources": [f"arn:aws:s3:::{alert['record']['bucket']}/{alert['record']['key']}"]
                if alert["record"].get("bucket") else []}]))
        if self.settings.alert_topic_arn:
            self._call("sns", lambda c: c.publish(TopicArn=self.settings.alert_topic_arn, Subject=subject(alert),
                                                  Message=detail))
        if not self.settings.in_lambda:
            self._local(alert)

    def _call(self, service: str, send: Any) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = send(_client(service))
        except (ClientError, BotoCoreError) as exc:
            log.warning(f"alert not sent to {service}", extra={"error": one_line(str(exc))})
            return
        if response.get("FailedEntryCount"):
            log.warning(f"alert not sent to {service}",
                        extra={"error": one_line(str(response.get("Entries", [{}])[0].get("ErrorMessage")))})

    def _local(self, alert: dict[str, Any]) -> None:
        """The terminal line and the JSON-lines file of a local run."""
        path = Path(self.settings.alerts_file or Path.home() / ".signalcraft" / "alerts.jsonl")
        stream = self.stream or sys.stderr
        stream.write(printable(f"ALERT {subject(alert)}  bands {[b['band'] for b in alert['top_mel_bands']]}  "
                               f"{alert['record'].get('key')}  (-> {path})") + "\n")
        try:
            with _file_lock:
                _append_private(path, (json.dumps(alert, sort_keys=True, default=str) + "\n").encode("utf-8"))
        except OSError as exc:
            log.warning("alert not written to the alerts file", extra={"path": str(path), "error": one_line(str(exc))})


def _append_private(path: Path, line: bytes) -> None:
    """Append `line` to the alerts file: ours alone (0600 in a 0700 folder when created here), never a link.

    The file may sit in a shared folder (SIGNALCRAFT_ALERTS_FILE): a neighbour's symlink in its place
    would have us append sender-chosen text to a file of theirs choosing, so the open refuses links and
    the open file must be a regular file this user owns, with no other link to it.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:   # no hard link either
            raise OSError(f"{path} is not a regular file owned by this user; alert not appended")
        os.write(fd, line)
    finally:
        os.close(fd)


def subject(alert: Mapping[str, Any]) -> str:
    m, r = alert["machine"], alert["record"]
    where = "/".join(p for p in (m.get("site"), m.get("machine_type"), m.get("machine_id")) if p)
    score = r.get("score")
    text = f"{where}: {', '.join(alert['rules'])} ({r.get('grade')}, score {score if score is not None else '-'})"
    return text[:100]  # SNS subjects stop at 100 characters


# ------------------------------------------------------------------------------------------ entry points


def critical_alerts(records: Iterable[Any], settings: Settings, s3: Any, bucket: str,
                    now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """`critical_grade` for freshly written records: the worst recent CRITICAL record per machine, published once."""
    now = now or dt.datetime.now(dt.timezone.utc)
    oldest = now - dt.timedelta(hours=settings.alert_max_age_hours)
    worst: dict[tuple[str, str, str], Any] = {}
    for r in records:
        row = _row(r)
        when = row.get("event_time") or row.get("scored_at")
        if row.get("grade") != "CRITICAL" or (when is not None and when < oldest):
            continue
        machine = machine_of(row)
        if machine not in worst or (row.get("score") or 0) > (worst[machine].get("score") or 0):
            worst[machine] = row
    published = []
    publisher = Publisher(settings, s3, bucket)
    for row in worst.values():
        alert = build_alert(row, ["critical_grade"], now.date())
        if _safely(publisher.publish, alert):
            published.append(alert)
    return published


def trend_alerts(s3: Any, bucket: str, prefix: str, settings: Settings,
                 now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """`rising_trend` over the grades under s3://bucket/prefix (the nightly step): one alert per rising machine.

    Runs once per UTC day and bucket (the first call claims the day's trend-check marker; later ones return []).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    today = now.date()
    publisher = Publisher(settings, s3, bucket)
    check = json.dumps({"checked_at": _json_value(now), "prefix": prefix}).encode()
    if publisher._claim(f"{TREND_CHECK_PREFIX}dt={today.isoformat()}.json", check) == "duplicate":
        return []
    days = [(today - dt.timedelta(days=n)).isoformat() for n in range(settings.alert_trend_days, 0, -1)]
    scores = daily_scores(s3, bucket, prefix, days)
    published = []
    for machine, by_day in sorted(scores.items()):
        trend = cusum_trend([(d, statistics.median(v)) for d, v in by_day.items()], today)
        if not trend.fired:
            continue
        row = _worst_record(s3, bucket, prefix, trend.days[-1], machine)
        if row is None:
            continue
        alert = build_alert(row, ["rising_trend"] + (["critical_grade"] if row.get("grade") == "CRITICAL" else []),
                            today, trend)
        if _safely(publisher.publish, alert):
            published.append(alert)
    return published


def _safely(publish: Any, alert: dict[str, Any]) -> bool:
    """Alerting never fails the grading it follows: its own errors are logged."""
    try:
        return publish(alert)
    except Exception:  # noqa: BLE001
        log.exception("alert not published")
        return False


def daily_scores(s3: Any, bucket: str, prefix: str, days: Sequence[str]) -> dict[tuple[str, str, str], dict[str, list[float]]]:
    """{machine: {day: [scores of ok records]}}, one score per record id (latest scored_at), a few columns read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from signalcraft_core.pipeline.sinks import partition_values

    out: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for day in days:
        latest: dict[str, tuple[Any, tuple[str, str, str], float]] = {}
        for info in list_keys(s3, bucket, f"{prefix}dt={day}/", suffixes=(".parquet",)):
            machine_type = partition_values(info.key).get("machine_type")
            if machine_type is None:
                continue
            table = pq.read_table(pa.BufferReader(get_bytes(s3, bucket, info.key)), columns=_TREND_COLUMNS)
            for row in table.to_pylist():
                if row["status"] != "ok" or row["score"] is None:
                    continue
                kept = latest.get(row["record_id"])
                if kept is None or row["scored_at"] >= kept[0]:
                    latest[row["record_id"]] = (row["scored_at"], (row["site"] or "", machine_type,
                                                                   row["machine_id"] or ""), float(row["score"]))
        for _, machine, score in latest.values():
            out.setdefault(machine, {}).setdefault(day, []).append(score)
    return out


def _worst_record(s3: Any, bucket: str, prefix: str, day: str, machine: tuple[str, str, str]) -> dict | None:
    from signalcraft_core.pipeline.records import safe_partition_value
    from signalcraft_core.pipeline.sinks import read_grades

    table = read_grades(f"s3://{bucket}/{prefix}dt={day}/machine_type={safe_partition_value(machine[1])}/", s3)
    rows = [r for r in table.to_pylist() if r["status"] == "ok" and machine_of(r) == machine]
    return max(rows, key=lambda r: r["score"] or 0) if rows else None


def open_alerts(s3: Any, bucket: str, since: dt.date, until: dt.date | None = None) -> list[dict[str, Any]]:
    """The alerts raised from `since` to `until` (UTC days), read from their markers, newest first."""
    until = until or dt.datetime.now(dt.timezone.utc).date()
    alerts = []
    day = since
    while day <= until:
        for info in list_keys(s3, bucket, f"{MARKER_PREFIX}dt={day.isoformat()}/", suffixes=(".json",)):
            try:
                alerts.append(json.loads(get_bytes(s3, bucket, info.key)))
            except (SignalcraftError, ValueError):
                parts = [unquote(p) for p in info.key.rsplit("/", 3)[1:]]
                alerts.append({"day": day.isoformat(), "rules": ["?"], "record": {},
                               "machine": dict(zip(("site", "machine_type", "machine_id"),
                                                   [parts[0], parts[1], parts[2][:-5]]))})
        day += dt.timedelta(days=1)
    return sorted(alerts, key=lambda a: (a.get("day", ""), a.get("raised_at", "")), reverse=True)
