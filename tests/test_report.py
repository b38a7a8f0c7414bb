"""`signalcraft report`: fleet summary numbers, date filters, S3 and local input, and the HTML page in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from signalcraft_core.analysis.report import COLUMNS, filter_by_date, summarize
from signalcraft_core.local.cli.app import cli
from signalcraft_core.models.grading import grade
from signalcraft_core.pipeline.records import GradeRecord, record_id
from signalcraft_core.pipeline.sinks import LocalGradeSink, S3GradeSink, read_grades

START = datetime(2025, 3, 1, tzinfo=timezone.utc)

# (site, type, id, day 0-2, hour, score or error code, rules)
SPEC = [
    ("site-a", "pump", "id_00", 0, 6, 10.0, ()),
    ("site-a", "pump", "id_00", 1, 6, 20.0, ()),
    ("site-a", "pump", "id_00", 2, 6, 55.0, ("level_high",)),
    ("site-a", "pump", "id_02", 0, 7, 30.0, ()),
    ("site-a", "pump", "id_02", 1, 7, 85.0, ("bearing_peaks",)),
    ("site-a", "pump", "id_02", 2, 7, 97.5, ("bearing_peaks", "band_energy")),
    ("site-a", "pump", "id_02", 2, 8, "not_wav", ()),
    ("site-b", "fan", "id_00", 0, 9, 5.0, ()),
    ("site-b", "fan", "id_00", 1, 9, "truncated", ()),
    ("site-b", "fan", "id_00", 2, 9, "truncated", ()),
    ("site-b", "fan", "id_00", 2, 10, 62.0, ()),
    ("site-b", "fan", "id_00", 0, 23, 40.0, ()),  # scored after midnight: its day is still the event's
]
NO_EVENT_TIME = 3  # this one has no event_time: its day comes from scored_at


def _key(site: str, mtype: str, mid: str, day: int, hour: int) -> str:
    return f"{site}/{mtype}/{mid}/2025030{day + 1}T{hour:02d}.wav"


def _record(spec: tuple, score_override: float | None = None, scored_delay: timedelta | None = None) -> GradeRecord:
    site, mtype, mid, day, hour, outcome, rules = spec
    when = START + timedelta(days=day, hours=hour)
    scored_delay = scored_delay or timedelta(hours=2 if hour == 23 else 0, minutes=1)
    key = _key(site, mtype, mid, day, hour)
    common = dict(record_id=record_id("rec", key, "etag"), bucket="rec", key=key,
                  event_time=None if SPEC.index(spec) == NO_EVENT_TIME else when, scored_at=when + scored_delay,
                  site=site, machine_type=mtype, machine_id=mid)
    if isinstance(outcome, str):
        return GradeRecord(**common, status="error", error_code=outcome, error_message=f"{outcome} in <b>{key}</b>")
    score = outcome if score_override is None else score_override
    return GradeRecord(**common, status="ok", score=score, grade=grade(score).value, level1_score=score,
                       level1_rules=rules, level2_score=score / 2)


def _column_counts(specs=SPEC) -> Counter:
    return Counter("ERROR" if isinstance(s[5], str) else grade(s[5]).value for s in specs)


@pytest.fixture(scope="module")
def grades_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grades")
    sink = LocalGradeSink(root)
    # An older copy of the worst record with another score: readers must keep the latest one only.
    sink.write([_record(SPEC[5], score_override=1.0, scored_delay=timedelta(seconds=1))])
    sink.write([_record(s) for s in SPEC])
    return root


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _totals(text: str) -> dict[str, int]:
    m = re.search(r"NORMAL (\d+)\s+WARNING (\d+)\s+CRITICAL (\d+)\s+ERROR (\d+)", text)
    assert m, text
    return dict(zip(COLUMNS, map(int, m.groups())))


def _machine_line(text: str, machine: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(machine + " "))
    return line.split()


# --------------------------------------------------------------------------- summary


def test_summary_counts_grades_machines_worst_and_errors(grades_dir):
    summary = summarize(read_grades(grades_dir), top=3)
    assert summary.records == len(SPEC)
    assert dict(summary.grade_counts) == {c: _column_counts()[c] for c in COLUMNS}
    pump2 = next(m for m in summary.machines if m.label == "site-a/pump/id_02")
    assert (pump2.count("NORMAL"), pump2.count("CRITICAL"), pump2.count("ERROR")) == (1, 2, 1)
    assert pump2.max_score == 97.5 and pump2.latest_grade == "CRITICAL"
    fan = next(m for m in summary.machines if m.machine_type == "fan")
    assert fan.latest_score == 62.0 and fan.latest_grade == grade(62.0).value
    scores = sorted((s[5] for s in SPEC if not isinstance(s[5], str)), reverse=True)
    assert [w.score for w in summary.worst] == scores[:3]
    assert summary.worst[0].rules == ("bearing_peaks", "band_energy")
    codes = Counter(s[5] for s in SPEC if isinstance(s[5], str))
    assert [(e.code, e.count) for e in summary.errors] == codes.most_common()
    assert summary.errors[0].example_key == _key(*SPEC[9][:5])  # the latest truncated record


def test_filter_by_date_uses_event_time_then_scored_at(grades_dir):
    table = read_grades(grades_dir)
    day2 = filter_by_date(table, day=date(2025, 3, 2))
    want = {_key(*s[:5]) for s in SPEC if s[3] == 1}
    assert set(day2.column("key").to_pylist()) == want
    since = filter_by_date(table, since=date(2025, 3, 2))
    assert since.num_rows == sum(1 for s in SPEC if s[3] >= 1)
    day1 = filter_by_date(table, day=date(2025, 3, 1)).column("key").to_pylist()
    assert _key(*SPEC[NO_EVENT_TIME][:5]) in day1
    assert _key(*SPEC[-1][:5]) in day1


# --------------------------------------------------------------------------- CLI text


def test_report_prints_fleet_summary(grades_dir):
    result = _run("report", "--grades", str(grades_dir), "--top", "2")
    assert result.exit_code == 0, result.output
    assert _totals(result.output) == {c: _column_counts()[c] for c in COLUMNS}
    assert f"{len(SPEC)} records" in result.output
    pump0 = _machine_line(result.output, "site-a/pump/id_00")
    assert pump0[1:5] == ["2", "1", "0", "0"]  # NORMAL WARNING CRITICAL ERROR
    worst = result.output.split("Worst recordings")[1].split("Errors by code")[0].strip().splitlines()[1:]
    assert len(worst) == 2
    assert worst[0].split()[0] == "97.5" and worst[0].endswith(_key(*SPEC[5][:5]))
    assert "bearing_peaks,band_energy" in worst[0]
    errors = result.output.split("Errors by code")[1]
    assert re.search(r"truncated\s+2\b", errors) and re.search(r"not_wav\s+1\b", errors)


def test_report_date_and_since(grades_dir):
    day3 = [s for s in SPEC if s[3] == 2]
    result = _run("report", "--grades", str(grades_dir), "--date", "2025-03-03")
    assert result.exit_code == 0, result.output
    assert _totals(result.output) == {c: _column_counts(day3)[c] for c in COLUMNS}
    result = _run("report", "--grades", str(grades_dir), "--since", "2025-03-02")
    assert _totals(result.output) == {c: _column_counts([s for s in SPEC if s[3] >= 1])[c] for c in COLUMNS}
    result = _run("report", "--grades", str(grades_dir), "--date", "2024-01-01")
    assert result.exit_code == 0 and "no grade records" in result.output
    result = _run("report", "--grades", str(grades_dir), "--date", "2025-03-03", "--since", "2025-03-01")
    assert result.exit_code == 2 and "either --date or --since" in result.output


def test_report_missing_folder_is_one_line_error(tmp_path):
    result = _run("report", "--grades", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "not_found" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_report_reads_s3(s3, s3_server, bucket):
    S3GradeSink(s3, bucket, "grades/").write([_record(s) for s in SPEC])
    result = _run("report", "--grades", f"s3://{bucket}/grades/", "--endpoint-url", s3_server.endpoint_url,
                  "--date", "2025-03-02")
    assert result.exit_code == 0, result.output
    assert _totals(result.output) == {c: _column_counts([s for s in SPEC if s[3] == 1])[c] for c in COLUMNS}


def test_html_needs_the_plot_extra(grades_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    result = _run("report", "--grades", str(grades_dir), "--html", str(tmp_path / "r.html"))
    assert result.exit_code == 1
    assert "signalcraft-scoring[plot]" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
    assert _run("report", "--grades", str(grades_dir)).exit_code == 0  # the text report needs no matplotlib


# --------------------------------------------------------------------------- HTML


class _Elements(HTMLParser):
    """Tags with their attributes, plus the rows of each table by id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: Counter[str] = Counter()
        self._table: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self._table = attributes.get("id")
        elif tag == "tr" and self._table:
            self.rows[self._table] += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


def _parse(text: str) -> _Elements:
    parser = _Elements()
    parser.feed(text)
    return parser


def _check_report_dom(dom: str) -> None:
    parsed = _parse(dom)
    images = [a for t, a in parsed.tags if t == "img"]
    assert len(images) >= 3
    assert all((a.get("src") or "").startswith("data:image/png;base64,") for a in images)
    assert parsed.rows["machines"] == 1 + 3          # header + machines
    assert parsed.rows["worst"] == 1 + sum(1 for s in SPEC if not isinstance(s[5], str))
    assert parsed.rows["errors"] == 1 + 2            # header + codes
    assert not any(t in ("script", "link", "iframe") for t, _ in parsed.tags)
    assert not any(t == "b" for t, _ in parsed.tags)  # keys and messages are escaped, never markup


@pytest.fixture(scope="module")
def html_report(grades_dir, tmp_path_factory) -> Path:
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("html") / "report.html"
    result = _run("report", "--grades", str(grades_dir), "--html", str(out), "--quiet", "--top", "50")
    assert result.exit_code == 0, result.output
    assert result.output == ""  # --quiet with --html: only the file
    return out


def test_html_report_is_self_contained(html_report):
    text = html_report.read_text("utf-8")
    _check_report_dom(text)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)  # nothing fetched from elsewhere
    assert "&lt;b&gt;" in text


def _chromium() -> str:
    """Debian's chromium; installed with apt on CI (as root), else the test skips."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found:
        return found
    may_install = hasattr(os, "geteuid") and os.geteuid() == 0 and (os.environ.get("CI") or os.environ.get("SIGNALCRAFT_INSTALL_CHROMIUM"))
    if not may_install or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed (set CI or SIGNALCRAFT_INSTALL_CHROMIUM as root to install it)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    return shutil.which("chromium") or "/usr/bin/chromium"


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_html_report_renders_in_chromium(html_report, tmp_path):
    chromium = _chromium()
    dumped = _headless(chromium, tmp_path / "profile-dom", "--dump-dom", html_report.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    _check_report_dom(dumped.stdout)
    shot = tmp_path / "report.png"
    done = _headless(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2000",
                     html_report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert _png_size(data) == (1280, 2000)
    assert len(data) > 30_000  # plots and tables, not a blank page


def test_html_report_write_never_follows_a_planted_temporary_name(grades_dir, tmp_path):
    """The report's temporary file is a fresh mkstemp name: a symlink a neighbour planted is never written through."""
    pytest.importorskip("matplotlib")
    out, victim = tmp_path / "r.html", tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / f".r.html.tmp-{os.getpid()}").symlink_to(victim)  # the name the write used to predict
    result = _run("report", "--grades", str(grades_dir), "--html", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "untouched" and "<html" in out.read_text("utf-8").lower()
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".r.html.tmp-{os.getpid()}", "r.html", "victim"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_text_report_lines_print_control_characters_escaped():
    """A key is the uploader's text: its newline or escape sequence must not forge a report line."""
    from signalcraft_core.analysis.report import format_alerts

    alert = {"day": "2026-01-02", "machine": {"site": "s", "machine_type": "pump", "machine_id": "id\x1b[31m"},
             "record": {"key": "s/pump/x\nCRITICAL forged.wav", "score": 99.0}, "rules": ["critical_grade"]}
    text = format_alerts([alert], date(2026, 1, 1), date(2026, 1, 2))
    assert len(text.splitlines()) == 3 and "\x1b" not in text
    assert "x\\u000aCRITICAL forged.wav" in text and "id\\u001b[31m" in text
