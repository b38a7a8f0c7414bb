"""The fleet report: grade records in, what a person reads out (a terminal summary and one HTML page).

Pure functions over a GRADE_SCHEMA table. The HTML page is self-contained (inline CSS, plots as
inline base64 PNG, no scripts, no external requests) so it can be mailed or archived as one file.
matplotlib (the `plot` extra) is imported only by `render_html`, and only its Agg canvas is used:
no pyplot, no global backend state.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Sequence

import pyarrow as pa

from signalcraft_core.logs import printable
from signalcraft_core.models.grading import CRITICAL_SCORE, WARNING_SCORE
from signalcraft_core.pipeline.records import GRADES

ERROR = "ERROR"
COLUMNS: tuple[str, ...] = (*GRADES, ERROR)
"""Grade columns of the report: the three grades plus error records."""

GRADE_COLORS = {"NORMAL": "#2e7d32", "WARNING": "#ef8f00", "CRITICAL": "#c62828", ERROR: "#757575"}
SERIES_COLORS = ("#3b6fb6", "#8e5ea2", "#2a9d8f", "#264653", "#b5838d", "#6c8ebf", "#a8763e", "#5c6b73")
"""Machines and machine types in plots: no red / amber / green, which mean grades."""
_SUMMARY_COLUMNS = ("record_id", "key", "event_time", "scored_at", "site", "machine_type", "machine_id",
                    "level1_score", "level1_rules", "level2_score", "score", "grade", "status", "error_code",
                    "error_message")


# --------------------------------------------------------------------------- selecting records


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def filter_by_date(table: pa.Table, day: date | None = None, since: date | None = None) -> pa.Table:
    """Rows of one UTC day, or from a day on, by the same date as the partition (event_time, else scored_at)."""
    if day is None and since is None:
        return table
    import pyarrow.compute as pc

    when = pc.coalesce(table.column("event_time"), table.column("scored_at"))
    start = _utc_midnight(day if day is not None else since)  # type: ignore[arg-type]
    mask = pc.greater_equal(when, pa.scalar(start, type=when.type))
    if day is not None:
        mask = pc.and_(mask, pc.less(when, pa.scalar(start + timedelta(days=1), type=when.type)))
    return table.filter(mask)


# --------------------------------------------------------------------------- the summary


@dataclass(frozen=True)
class MachineRow:
    """One machine (site, type, id): how its recordings were graded and where it stands now."""

    site: str
    machine_type: str
    machine_id: str
    counts: tuple[tuple[str, int], ...]  # (column, count) for every column of COLUMNS
    max_score: float | None
    latest_grade: str | None
    latest_score: float | None
    latest_time: datetime | None

    @property
    def label(self) -> str:
        return f"{self.site}/{self.machine_type}/{self.machine_id}"

    def count(self, column: str) -> int:
        return dict(self.counts).get(column, 0)


@dataclass(frozen=True)
class WorstRow:
    """A graded recording among the highest scores, with the rules that explain it."""

    score: float
    grade: str
    when: datetime
    machine: str
    key: str
    rules: tuple[str, ...]
    level1_score: float | None
    level2_score: float | None


@dataclass(frozen=True)
class ErrorRow:
    """All error records with one code, with the latest one as an example."""

    code: str
    count: int
    last_seen: datetime
    example_key: str
    example_message: str


@dataclass(frozen=True)
class FleetSummary:
    """Everything the text and HTML reports show, computed once."""

    records: int
    graded: int
    grade_counts: tuple[tuple[str, int], ...]  # (column, count) for every column of COLUMNS
    first: datetime | None
    last: datetime | None
    machines: tuple[MachineRow, ...]
    worst: tuple[WorstRow, ...]
    errors: tuple[ErrorRow, ...]

    @property
    def error_records(self) -> int:
        return self.records - self.graded

    def count(self, column: str) -> int:
        return dict(self.grade_counts).get(column, 0)


def _when(row: dict[str, Any]) -> datetime:
    return row["event_time"] or row["scored_at"]


def _machine(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["site"] or "-", row["machine_type"] or "-", row["machine_id"] or "-")


def _column(row: dict[str, Any]) -> str:
    return row["grade"] if row["status"] == "ok" and row["grade"] in GRADES else ERROR


def summarize(table: pa.Table, top: int = 10) -> FleetSummary:
    """Counts per grade and machine, the `top` highest-scored recordings, error records by code."""
    rows = table.select(list(_SUMMARY_COLUMNS)).to_pylist()
    totals: Counter[str] = Counter()
    per_machine: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    per_code: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        totals[_column(r)] += 1
        per_machine[_machine(r)].append(r)
        if r["status"] != "ok":
            per_code[r["error_code"] or "unknown"].append(r)
    machines = []
    for key in sorted(per_machine):
        mrows = per_machine[key]
        counts = Counter(_column(r) for r in mrows)
        graded = sorted((r for r in mrows if r["score"] is not None), key=lambda r: (_when(r), r["record_id"]))
        latest = graded[-1] if graded else None
        machines.append(MachineRow(
            site=key[0], machine_type=key[1], machine_id=key[2],
            counts=tuple((c, counts[c]) for c in COLUMNS),
            max_score=max((r["score"] for r in graded), default=None),
            latest_grade=latest["grade"] if latest else None,
            latest_score=latest["score"] if latest else None,
            latest_time=_when(latest) if latest else None,
        ))
    scored = [r for r in rows if r["status"] == "ok" and r["score"] is not None]
    scored.sort(key=lambda r: (-r["score"], -_when(r).timestamp(), r["record_id"]))
    worst = tuple(
        WorstRow(score=r["score"], grade=r["grade"], when=_when(r), machine="/".join(_machine(r)), key=r["key"] or "-",
                 rules=tuple(r["level1_rules"] or ()), level1_score=r["level1_score"], level2_score=r["level2_score"])
        for r in scored[:top]
    )
    errors = []
    for code, crows in per_code.items():
        latest = max(crows, key=lambda r: (_when(r), r["record_id"]))
        errors.append(ErrorRow(code=code, count=len(crows), last_seen=_when(latest), example_key=latest["key"] or "-",
                               example_message=latest["error_message"] or ""))
    errors.sort(key=lambda e: (-e.count, e.code))
    times = [_when(r) for r in rows]
    return FleetSummary(
        records=len(rows),
        graded=sum(1 for r in rows if r["status"] == "ok"),
        grade_counts=tuple((c, totals[c]) for c in COLUMNS),
        first=min(times, default=None),
        last=max(times, default=None),
        machines=tuple(machines),
        worst=worst,
        errors=tuple(errors),
    )


# --------------------------------------------------------------------------- text


def _t(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def _n(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _period(summary: FleetSummary) -> str:
    if summary.first is None or summary.last is None:
        return "no records"
    return f"{_t(summary.first)} .. {_t(summary.last)} UTC"


def format_summary(summary: FleetSummary, source: str = "") -> str:
    """The terminal report: fleet totals, machines by grade, worst recordings, errors by code."""
    where = f" in {source}" if source else ""
    if summary.records == 0:
        return f"no grade records{where}\n"
    lines = [
        f"{summary.records} records{where} ({summary.graded} graded, {summary.error_records} errors), "
        f"{_period(summary)}, {len(summary.machines)} machines",
        "  ".join(f"{c} {summary.count(c)}" for c in COLUMNS)
        + f"   (WARNING >= {WARNING_SCORE:g}, CRITICAL >= {CRITICAL_SCORE:g})",
        "",
        "Machines by grade",
        f"{'machine':<28} {'NORMAL':>7} {'WARNING':>8} {'CRITICAL':>9} {'ERROR':>6} {'max':>6}  latest",
    ]
    for m in summary.machines:
        latest = f"{m.latest_grade} {_n(m.latest_score)} at {_t(m.latest_time)}" if m.latest_grade else "-"
        lines.append(f"{m.label:<28} {m.count('NORMAL'):>7} {m.count('WARNING'):>8} {m.count('CRITICAL'):>9} "
                     f"{m.count(ERROR):>6} {_n(m.max_score):>6}  {latest}")
    lines += ["", "Worst recordings", f"{'score':>6}  {'grade':<9} {'when':<16}  {'rules':<26} key"]
    for w in summary.worst:
        lines.append(f"{w.score:>6.1f}  {w.grade:<9} {_t(w.when):<16}  {','.join(w.rules) or '-':<26} {w.key}")
    if not summary.worst:
        lines.append("  (no graded recordings)")
    lines += ["", "Errors by code"]
    if summary.errors:
        lines.append(f"{'code':<20} {'count':>6}  latest example")
        for e in summary.errors:
            lines.append(f"{e.code:<20} {e.count:>6}  {e.example_key}: {e.example_message}")
    else:
        lines.append("  (none)")
    return _terminal(lines)


def format_alerts(alerts: Sequence[dict[str, Any]], since: date, until: date) -> str:
    """Open machine alerts (pipeline/alerts.py markers): one line per machine and day, newest first."""
    lines = [f"Open alerts {since.isoformat()} .. {until.isoformat()} (one per machine and UTC day)"]
    if not alerts:
        return _terminal(lines + ["  (none)"])
    lines.append(f"{'day':<10}  {'machine':<28} {'rules':<28} {'score':>6}  {'bands':<10} key")
    for a in alerts:
        m, r = a.get("machine") or {}, a.get("record") or {}
        label = "/".join(str(p) for p in (m.get("site"), m.get("machine_type"), m.get("machine_id")) if p)
        bands = ",".join(str(b.get("band")) for b in a.get("top_mel_bands") or []) or "-"
        rules = ",".join(list(a.get("rules") or []) + list(a.get("level1_rules") or []))
        score = r.get("score")
        lines.append(f"{a.get('day', ''):<10}  {label:<28} {rules:<28} "
                     f"{_n(score) if isinstance(score, (int, float)) else '-':>6}  {bands:<10} {r.get('key') or '-'}")
    return _terminal(lines)


def _terminal(lines: Sequence[str]) -> str:
    """Report lines as terminal text; keys, labels and messages are uploaders' text, so controls print escaped."""
    return "".join(printable(line) + "\n" for line in lines)


# --------------------------------------------------------------------------- plots


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (lazy import: matplotlib is the optional `plot` extra)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig) -> bytes:
    """Render a Figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def shade_grade_zones(ax, vertical: bool = False) -> None:
    """Background bands and labelled threshold lines at WARNING_SCORE / CRITICAL_SCORE on a 0-100 score axis."""
    span, line = (ax.axvspan, ax.axvline) if vertical else (ax.axhspan, ax.axhline)
    span(WARNING_SCORE, CRITICAL_SCORE, color=GRADE_COLORS["WARNING"], alpha=0.08, lw=0)
    span(CRITICAL_SCORE, 100, color=GRADE_COLORS["CRITICAL"], alpha=0.08, lw=0)
    for value, name in ((WARNING_SCORE, "WARNING"), (CRITICAL_SCORE, "CRITICAL")):
        line(value, color=GRADE_COLORS[name], lw=1.2, ls="--")
        if vertical:
            ax.text(value, 0.98, f" {name} {value:g}", transform=ax.get_xaxis_transform(), rotation=90,
                    va="top", ha="left", fontsize=7, color=GRADE_COLORS[name])
        else:
            ax.text(0.002, value, f"{name} {value:g}", transform=ax.get_yaxis_transform(), va="bottom",
                    fontsize=7, color=GRADE_COLORS[name])


def _score_rows(table: pa.Table) -> list[dict[str, Any]]:
    cols = ["event_time", "scored_at", "site", "machine_type", "machine_id", "score", "grade", "status"]
    return [r for r in table.select(cols).to_pylist() if r["status"] == "ok" and r["score"] is not None]


def plot_scores_over_time(table: pa.Table) -> bytes | None:
    """Score per recording over time, one panel per machine type, one line per machine, with the thresholds."""
    import matplotlib.dates as mdates

    rows = _score_rows(table)
    if not rows:
        return None
    by_type: dict[str, dict[str, list[tuple[datetime, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_type[r["machine_type"] or "-"][f"{r['site'] or '-'}/{r['machine_id'] or '-'}"].append((_when(r), r["score"]))
    types = sorted(by_type)
    fig = new_figure(10.5, 0.4 + 2.1 * len(types))
    axes = fig.subplots(len(types), 1, sharex=True, squeeze=False)[:, 0]
    for ax, machine_type in zip(axes, types):
        ax.set_prop_cycle(color=SERIES_COLORS)
        shade_grade_zones(ax)
        for machine, points in sorted(by_type[machine_type].items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3.5, lw=1.2, label=machine)
        ax.set_ylim(-2, 102)
        ax.set_yticks([0, WARNING_SCORE, CRITICAL_SCORE, 100])
        ax.set_ylabel("score")
        ax.set_title(machine_type, loc="left", fontsize=10, fontweight="bold")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    locator = mdates.AutoDateLocator(tz=timezone.utc)
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
    axes[-1].set_xlabel("time (UTC)")
    return figure_png(fig)


def plot_score_distribution(table: pa.Table) -> bytes | None:
    """Histogram of scores per machine type (stacked), with the grade zones."""
    rows = _score_rows(table)
    if not rows:
        return None
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_type[r["machine_type"] or "-"].append(min(100.0, max(0.0, r["score"])))
    types = sorted(by_type)
    fig = new_figure(5.6, 3.6)
    ax = fig.subplots()
    shade_grade_zones(ax, vertical=True)
    ax.hist([by_type[t] for t in types], bins=[i * 5 for i in range(21)], stacked=True, label=types,
            color=[SERIES_COLORS[i % len(SERIES_COLORS)] for i in range(len(types))], edgecolor="white", lw=0.5)
    ax.set_xlim(0, 100)
    ax.set_xlabel("score")
    ax.set_ylabel("recordings")
    ax.set_title("Score distribution", loc="left", fontsize=10, fontweight="bold")
    ax.legend(fontsize=8, frameon=False, ncols=min(4, len(types)), loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return figure_png(fig)


def plot_grade_counts(summary: FleetSummary) -> bytes | None:
    """Stacked horizontal bars: NORMAL / WARNING / CRITICAL / ERROR recordings per machine."""
    machines = list(summary.machines)
    if not machines:
        return None
    fig = new_figure(5.6, max(2.4, 0.9 + 0.32 * len(machines)))
    ax = fig.subplots()
    labels = [m.label for m in machines]
    left = [0] * len(machines)
    for column in COLUMNS:
        values = [m.count(column) for m in machines]
        ax.barh(labels, values, left=left, color=GRADE_COLORS[column], label=column, height=0.7)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("recordings")
    ax.set_title("Grades per machine", loc="left", fontsize=10, fontweight="bold")
    ax.legend(fontsize=8, frameon=False, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return figure_png(fig)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2127}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:26px}h2{font-size:18px;margin:0 0 12px}
.meta{color:#5b6270;margin:0 0 20px;font-size:14px}
section{background:#fff;border-radius:8px;padding:18px 20px;margin:0 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.cards{display:flex;gap:12px;flex-wrap:wrap;background:none;box-shadow:none;padding:0}
.card{flex:1;min-width:140px;background:#fff;border-radius:8px;padding:14px 16px;border-top:5px solid #999;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card .n{font-size:30px;font-weight:700}.card .l{color:#5b6270;font-size:13px;text-transform:uppercase;letter-spacing:.04em}
.row{display:flex;gap:18px;flex-wrap:wrap}.row>div{flex:1;min-width:420px}
img{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e6e8eb;vertical-align:top}
th{background:#fafbfc;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.key{word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.rule{display:inline-block;background:#eef1f5;border-radius:4px;padding:0 6px;margin:0 4px 2px 0;font-size:12px}
.empty{color:#5b6270;font-style:italic}footer{color:#5b6270;font-size:12px;text-align:center;padding:8px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _badge(column: str | None) -> str:
    if not column:
        return "-"
    return f'<span class="badge" style="background:{GRADE_COLORS.get(column, "#999")}">{_e(column)}</span>'


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return '<p class="empty">No graded recordings to plot.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _table(head: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]], table_id: str, empty: str) -> str:
    if not rows:
        return f'<p class="empty" id="{table_id}-empty">{_e(empty)}</p>'
    th = "".join(f'<th class="{cls}">{_e(name)}</th>' for name, cls in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="{cls}">{cell}</td>' for (_, cls), cell in zip(head, row)) + "</tr>" for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def render_html(table: pa.Table, summary: FleetSummary, source: str = "", generated_at: datetime | None = None,
                title: str = "SignalCraft fleet report") -> str:
    """The self-contained HTML report (needs matplotlib for the plots)."""
    generated_at = generated_at or datetime.now(timezone.utc)
    cards = "".join(
        f'<div class="card" style="border-top-color:{GRADE_COLORS[c]}"><div class="n">{summary.count(c)}</div>'
        f'<div class="l">{_e(c)}</div></div>'
        for c in COLUMNS
    )
    machines = _table(
        [("machine", ""), ("NORMAL", "num"), ("WARNING", "num"), ("CRITICAL", "num"), ("ERROR", "num"),
         ("max score", "num"), ("latest", ""), ("latest at (UTC)", "")],
        [[_e(m.label), *(str(m.count(c)) for c in COLUMNS), _n(m.max_score),
          f"{_badge(m.latest_grade)} {_n(m.latest_score)}" if m.latest_grade else "-", _e(_t(m.latest_time))]
         for m in summary.machines],
        "machines", "No records.",
    )
    worst = _table(
        [("score", "num"), ("grade", ""), ("L1", "num"), ("L2", "num"), ("when (UTC)", ""), ("machine", ""),
         ("rules", ""), ("recording", "key")],
        [[f"{w.score:.1f}", _badge(w.grade), _n(w.level1_score), _n(w.level2_score), _e(_t(w.when)), _e(w.machine),
          "".join(f'<span class="rule">{_e(r)}</span>' for r in w.rules) or "-", _e(w.key)]
         for w in summary.worst],
        "worst", "No graded recordings.",
    )
    errors = _table(
        [("code", ""), ("count", "num"), ("last seen (UTC)", ""), ("latest example", "key")],
        [[f"<code>{_e(e.code)}</code>", str(e.count), _e(_t(e.last_seen)), f"{_e(e.example_key)}<br>{_e(e.example_message)}"]
         for e in summary.errors],
        "errors", "No error records.",
    )
    meta = (f"{summary.records} records ({summary.graded} graded, {summary.error_records} errors) &middot; "
            f"{len(summary.machines)} machines &middot; {_e(_period(summary))}"
            + (f" &middot; source <code>{_e(source)}</code>" if source else ""))
    over_time = _img(plot_scores_over_time(table), "score over time per machine, with the WARNING and CRITICAL lines")
    distribution = _img(plot_score_distribution(table), "distribution of scores per machine type")
    counts = _img(plot_grade_counts(summary), "grade counts per machine")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{_e(title)}</h1>
<p class="meta">{meta}</p>
<section class="cards" id="grade-counts">{cards}</section>
<section id="score-over-time"><h2>Score over time</h2>{over_time}</section>
<section><div class="row"><div id="distribution">{distribution}</div><div id="grades-per-machine">{counts}</div></div></section>
<section><h2>Machines</h2>{machines}</section>
<section><h2>Worst recordings</h2>{worst}</section>
<section><h2>Errors by code</h2>{errors}</section>
<footer>WARNING at score &ge; {WARNING_SCORE:g}, CRITICAL at &ge; {CRITICAL_SCORE:g} &middot;
generated {_e(_t(generated_at))} UTC by signalcraft report</footer>
</main></body></html>
"""
