"""Why: an alert is what wakes someone up. It must fire for a CRITICAL grade and for a machine whose scores
climb night after night (the stated CUSUM), carry what a person needs (record, rules, top mel bands),
and reach them once per machine and day: not once per recording of a noisy machine.

Everything runs against the loopback moto server (S3, EventBridge, SNS, SQS as the subscriber); boto3
is never patched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from faultproxy import Fault, FaultProxy
from handler_env import configure_handlers

from handlers import fleet_sweep, score_upload
from signalcraft_core.config import Settings
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.io.objects import s3_client
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.pipeline import alerts, runtime
from signalcraft_core.pipeline.alerts import CUSUM_H, CUSUM_K, SIGMA, cusum_trend, top_bands
from signalcraft_core.pipeline.records import GradeRecord
from signalcraft_core.pipeline.sinks import S3GradeSink, read_grades

TODAY = dt.datetime.now(dt.timezone.utc).date()


def days_before(n: int) -> list[str]:
    return [(TODAY - dt.timedelta(days=k)).isoformat() for k in range(n, 0, -1)]


# ------------------------------------------------------------------------------------------ the CUSUM rule


def test_a_steady_climb_fires_and_says_when():
    medians = [10, 11, 10, 16, 22, 28]
    trend = cusum_trend(list(zip(days_before(6), medians)), TODAY)
    assert trend.fired and trend.baseline == 10
    # S = max(0, S + (m - 10) / 5 - 0.5): 0.7, 2.6, 5.7 -> over h = 4 on the last night only
    assert trend.cusum == pytest.approx((0.7, 2.6, 5.7))
    assert not cusum_trend(list(zip(days_before(5), medians[:5])), TODAY).fired  # one night earlier: 2.6 <= 4


def test_noise_one_bad_night_and_a_recovered_spike_do_not_fire():
    rng = np.random.default_rng(0)
    noisy = [20 + float(rng.normal(0, 2)) for _ in range(10)]
    assert not cusum_trend(list(zip(days_before(10), noisy)), TODAY).fired
    one_night = [20, 20, 20, 20, 20, 35]  # z = 3: S = 2.5 <= h
    assert not cusum_trend(list(zip(days_before(6), one_night)), TODAY).fired
    two_nights = [20, 20, 20, 20, 35, 35]  # S = 2.5, 5.0 > h
    assert cusum_trend(list(zip(days_before(6), two_nights)), TODAY).fired
    recovered = [20, 20, 20, 60, 60, 20, 20]  # S still high from the spike, but the machine is back at baseline
    trend = cusum_trend(list(zip(days_before(7), recovered)), TODAY)
    assert trend.cusum[-1] > CUSUM_H and not trend.fired


def test_the_threshold_is_h_exactly_and_stale_or_short_histories_do_not_fire():
    # one post-baseline night at z = h + k exactly gives S = h: not over it; a hair more is
    assert (CUSUM_K, CUSUM_H, SIGMA) == (0.5, 4.0, 5.0)  # the stated rule (README, alerts.py)
    at_h = 10 + (4.0 + 0.5) * 5.0  # 32.5
    flat = [10, 10, 10, 10]
    assert not cusum_trend(list(zip(days_before(5), flat + [at_h])), TODAY).fired
    assert cusum_trend(list(zip(days_before(5), flat + [at_h + 0.1])), TODAY).fired
    assert not cusum_trend(list(zip(days_before(4), [10, 10, 10, 60])), TODAY).fired  # 4 days < 5 needed
    stale = list(zip([(TODAY - dt.timedelta(days=k)).isoformat() for k in range(9, 3, -1)], [10, 10, 10, 30, 40, 50]))
    assert not cusum_trend(stale, TODAY).fired  # nothing since 4 days ago: not a current trend


def test_top_mel_bands_are_the_argmax_first():
    assert top_bands([0.1, 5.0, 0.3, 9.0, float("nan"), 2.0]) == [3, 1, 5]
    assert top_bands(None) == [] and top_bands([1.0]) == [0]


# ------------------------------------------------------------------------------------------ end to end


def loud(seed: int, seconds: float = 2.0, rate: int = 16000) -> bytes:
    """Clipped full-scale noise: graded CRITICAL by the packaged models (the test checks it)."""
    rng = np.random.default_rng(seed)
    return encode_wav(np.clip(3 * rng.standard_normal(int(rate * seconds)), -1, 1), rate)


class Subscriber:
    """An SQS queue behind the alert bus (rule on the detail-type) and the alert topic."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        kw = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        self.sqs, events, sns = (boto3.client(s, **kw) for s in ("sqs", "events", "sns"))
        tag = uuid.uuid4().hex[:12]
        self.bus = f"alerts-{tag}"
        events.create_event_bus(Name=self.bus)
        self.events_queue, events_arn = self._queue(f"ev-{tag}")
        events.put_rule(Name=f"r-{tag}", EventBusName=self.bus,
                        EventPattern=json.dumps({"detail-type": [alerts.DETAIL_TYPE], "source": [alerts.SOURCE]}))
        events.put_targets(Rule=f"r-{tag}", EventBusName=self.bus, Targets=[{"Id": "q", "Arn": events_arn}])
        self.topic = sns.create_topic(Name=f"t-{tag}")["TopicArn"]
        self.sns_queue, sns_arn = self._queue(f"sns-{tag}")
        sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=sns_arn)

    def _queue(self, name: str) -> tuple[str, str]:
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        return url, self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def drain(self, url: str) -> list[dict]:
        out = []
        while True:
            got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not got:
                return out
            for m in got:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def events(self) -> list[dict]:
        return [e["detail"] for e in self.drain(self.events_queue)]

    def notifications(self) -> list[dict]:
        return [json.loads(n["Message"]) | {"_subject": n.get("Subject")} for n in self.drain(self.sns_queue)]


@pytest.fixture
def stack(s3_server, s3, make_bucket, monkeypatch, tmp_path):
    recordings, grades = make_bucket(), make_bucket()
    configure_handlers(monkeypatch, s3_server.endpoint_url, grades)
    subscriber = Subscriber(s3_server.endpoint_url)
    monkeypatch.setenv("ALERT_EVENT_BUS", subscriber.bus)
    monkeypatch.setenv("ALERT_TOPIC_ARN", subscriber.topic)
    monkeypatch.setenv("SIGNALCRAFT_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    yield s3, recordings, grades, subscriber, tmp_path / "alerts.jsonl"
    runtime.reset()


def upload(s3, bucket: str, key: str, data: bytes) -> dict:
    etag = s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"].strip('"')
    return generate_event("s3-put", bucket, key, size=len(data), etag=etag)


def test_a_critical_grade_alerts_once_per_machine_and_day(stack, capsys):
    s3, recordings, grades, subscriber, alerts_file = stack
    noisy = [f"site-a/pump/id_00/{n:08d}.wav" for n in range(3)]
    results = [score_upload.handler(upload(s3, recordings, key, loud(n))) for n, key in enumerate(noisy)]
    other = score_upload.handler(upload(s3, recordings, "site-a/fan/id_02/00000009.wav", loud(9)))
    assert [r["grades"] for r in results + [other]] == [{"CRITICAL": 1}] * 4

    events, notifications = subscriber.events(), subscriber.notifications()
    assert sorted(e["machine"]["machine_id"] for e in events) == ["id_00", "id_02"]  # 4 CRITICAL clips, 2 alerts
    assert sorted(n["machine"]["machine_id"] for n in notifications) == ["id_00", "id_02"]
    pump = next(e for e in events if e["machine"]["machine_type"] == "pump")
    assert pump["rules"] == ["critical_grade"] and pump["record"]["key"] == noisy[0]  # the first one paged
    row = next(r for r in read_grades(f"s3://{grades}/grades/", s3).to_pylist() if r["key"] == noisy[0])
    assert pump["record"]["record_id"] == row["record_id"] and pump["level1_rules"] == list(row["level1_rules"])
    assert [b["band"] for b in pump["top_mel_bands"]] == top_bands(row["level2_band_errors"])
    assert pump["top_mel_bands"][0]["band"] == int(np.argmax(row["level2_band_errors"]))
    assert next(n for n in notifications if n["machine"]["machine_type"] == "pump")["_subject"].startswith(
        "site-a/pump/id_00: critical_grade (CRITICAL")

    markers = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=grades, Prefix="_alerts/")["Contents"])
    assert markers == [f"_alerts/dt={TODAY}/site-a/fan/id_02.json", f"_alerts/dt={TODAY}/site-a/pump/id_00.json"]
    local = [json.loads(line) for line in alerts_file.read_text().splitlines()]  # the local JSON-lines copy
    assert sorted(a["machine"]["machine_id"] for a in local) == ["id_00", "id_02"]
    assert capsys.readouterr().err.count("ALERT site-a/") == 2
    listed = alerts.open_alerts(s3, grades, TODAY - dt.timedelta(days=1))
    assert sorted(a["record"]["key"] for a in listed) == sorted([noisy[0], "site-a/fan/id_02/00000009.wav"])


def test_old_recordings_graded_by_a_backfill_page_nobody(stack):
    s3, recordings, grades, subscriber, _ = stack
    score_upload.handler(upload(s3, recordings, "site-b/valve/id_04/00000001.wav", loud(1)))
    subscriber.events()  # today's alert for it
    record = read_grades(f"s3://{grades}/grades/", s3).to_pylist()[0]
    settings = Settings.from_env()
    recorded = record["event_time"]
    later = recorded + dt.timedelta(days=5)  # a backfill five days on re-grades it
    assert alerts.critical_alerts([record], settings, s3, grades, now=later) == []
    assert alerts.critical_alerts([record], settings, s3, grades, now=recorded + dt.timedelta(hours=47))
    assert len(subscriber.events()) == 1  # within 48 h it does page (its own day's marker)


def grade_row(day: str, machine: tuple[str, str, str], n: int, score: float) -> GradeRecord:
    when = dt.datetime.fromisoformat(day).replace(hour=3, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=n)
    site, machine_type, machine_id = machine
    bands = tuple(float(x) for x in np.roll(np.linspace(0.1, 1.6, 16), n % 3))
    return GradeRecord(record_id=uuid.uuid4().hex, bucket="rec", key=f"{site}/{machine_type}/{machine_id}/{day}-{n}.wav",
                       event_time=when, scored_at=when, site=site, machine_type=machine_type, machine_id=machine_id,
                       model_name="m", model_version="v1", score=score, grade="NORMAL" if score < 50 else "WARNING",
                       level1_rules=("band_energy",) if score > 40 else (), level2_band_errors=bands, status="ok")


def test_a_machine_climbing_night_after_night_alerts_at_the_nightly_step_once(stack):
    s3, _, grades, subscriber, _ = stack
    rising, steady = ("site-a", "pump", "id_07"), ("site-a", "pump", "id_08")
    sink = S3GradeSink(s3, grades, "grades/")
    rng = np.random.default_rng(3)
    climb = [12, 12, 13, 18, 24, 30, 36]
    for day, level in zip(days_before(7), climb):
        sink.write([grade_row(day, rising, n, level + float(rng.normal(0, 1))) for n in range(5)]
                   + [grade_row(day, steady, n, 12 + float(rng.normal(0, 2))) for n in range(5)])
    fleet_sweep.handler({"action": "compact"})

    events = subscriber.events()
    assert [e["machine"]["machine_id"] for e in events] == ["id_07"]
    alert = events[0]
    assert alert["rules"] == ["rising_trend"] and alert["trend"]["k"] == 0.5 and alert["trend"]["h"] == 4.0
    assert list(alert["trend"]["daily_medians"]) == days_before(7)
    assert alert["record"]["key"].startswith(f"site-a/pump/id_07/{days_before(1)[0]}")  # yesterday's worst clip
    assert alert["top_mel_bands"] and alert["level1_rules"] == []
    fleet_sweep.handler({"action": "compact"})  # a second complete sweep the same day: trends are not re-read
    assert subscriber.events() == []
    checks = s3.list_objects_v2(Bucket=grades, Prefix=alerts.TREND_CHECK_PREFIX)["Contents"]
    assert [c["Key"] for c in checks] == [f"{alerts.TREND_CHECK_PREFIX}dt={TODAY}.json"]


def test_without_conditional_writes_the_marker_falls_back_to_head_then_put(stack, s3_server):
    s3, _, grades, subscriber, _ = stack
    record = grade_row(TODAY.isoformat(), ("site-c", "fan", "id_01"), 0, 99.0)
    record = GradeRecord(**{**{f: getattr(record, f) for f in record.__dataclass_fields__}, "grade": "CRITICAL"})
    marker = re.escape(f"/{grades}/_alerts/dt={TODAY}/site-c/fan/id_01.json")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        client = s3_client(endpoint_url=proxy.url, max_attempts=1)
        settings = Settings.from_env()
        proxy.add(Fault.error(501, "NotImplemented", "A header you provided implies functionality that is not implemented",
                              method="PUT", path=marker, times=1))
        assert len(alerts.critical_alerts([record], settings, client, grades)) == 1  # 501 -> HEAD 404 -> PUT
        proxy.add(Fault.error(501, "NotImplemented", "not implemented", method="PUT", path=marker, times=1))
        assert alerts.critical_alerts([record], settings, client, grades) == []  # 501 -> HEAD 200: duplicate
        assert proxy.count(method="HEAD", path=marker) == 2
    assert [e["dedupe"] for e in subscriber.events()] == ["claimed-unconditionally"]





def test_signalcraft_report_lists_the_open_alerts(stack, s3_server):
    from click.testing import CliRunner

    from signalcraft_core.local.cli.app import cli

    s3, recordings, grades, subscriber, _ = stack
    score_upload.handler(upload(s3, recordings, "site-d/slider/id_03/00000001.wav", loud(4)))
    args = ["report", "--grades", f"s3://{grades}/grades/", "--endpoint-url", s3_server.endpoint_url]
    out = CliRunner().invoke(cli, args).output
    section = out[out.index("Open alerts"):].splitlines()
    assert section[0] == f"Open alerts {TODAY - dt.timedelta(days=6)} .. {TODAY} (one per machine and UTC day)"
    (line,) = [ln for ln in section if "site-d/slider/id_03" in ln]
    assert line.startswith(str(TODAY)) and "critical_grade" in line and line.endswith("site-d/slider/id_03/00000001.wav")
    old = CliRunner().invoke(cli, args + ["--date", "2024-01-02"]).output
    assert "Open alerts 2024-01-02 .. 2024-01-02" in old and old.rstrip().endswith("(none)")


def test_the_local_alerts_file_is_private_and_never_followed_through_a_link(stack):
    """A neighbour's symlink where the alerts file should be is refused; a new file is 0600, its folder 0700."""
    s3, recordings, _, _, alerts_file = stack
    victim = alerts_file.parent / "victim.rc"
    victim.write_text("untouched\n")
    alerts_file.symlink_to(victim)
    assert score_upload.handler(upload(s3, recordings, "site-a/pump/id_00/a.wav", loud(1)))["grades"] == {"CRITICAL": 1}
    assert victim.read_text() == "untouched\n"  # nothing appended through the link

    alerts_file.unlink()
    private = alerts_file.parent / "new" / "alerts.jsonl"
    settings = dataclasses.replace(Settings.from_env(), alerts_file=str(private))
    alerts.Publisher(settings, s3, "unused")._local(
        alerts.build_alert(grade_row("2026-01-02", ("s", "pump", "id_1"), 0, 99.0), ["critical_grade"],
                           dt.date(2026, 1, 2)))
    assert json.loads(private.read_text())["machine"]["machine_id"] == "id_1"
    assert private.stat().st_mode & 0o777 == 0o600 and private.parent.stat().st_mode & 0o777 == 0o700


def test_an_alert_line_cannot_forge_terminal_lines(tmp_path):
    """Control characters of a key print as escapes: one ALERT line, no carriage return or escape sequence."""
    row = dataclasses.replace(grade_row("2026-01-02", ("s", "pump", "id_1"), 0, 99.0),
                              key="s/pump/id_1/x\r\x1b[2KALERT forged\n.wav")
    terminal = io.StringIO()
    settings = dataclasses.replace(Settings.from_env(), alerts_file=str(tmp_path / "alerts.jsonl"))
    alerts.Publisher(settings, None, "unused", stream=terminal)._local(
        alerts.build_alert(row, ["critical_grade"], dt.date(2026, 1, 2)))
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ALERT s/pump/id_1") and "\x1b" not in lines[0]
    assert "x\\u000d\\u001b[2KALERT forged\\u000a.wav" in lines[0]
