"""CLI commands for people reading results: `signalcraft report` (fleet) and `signalcraft explain` (one clip).

Registered on the shared `cli` group at import. Text output needs nothing extra; plots (--html,
--png) need matplotlib, the `plot` extra, imported only when asked for.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import click

from signalcraft_core.config import PREFERENCES
from signalcraft_core.local.cli.params import Location, endpoint_option
from signalcraft_core.local.console import info

PLOT_HINT = "plots need matplotlib, which is not installed: pip install 'signalcraft-scoring[plot]'"


def _require_matplotlib() -> None:
    """Fail in one line, before any slow work, when the `plot` extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException(PLOT_HINT) from None


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary name so a reader never sees half a file.

    The temporary file is mkstemp's (a new, unpredictable name opened O_EXCL): a fixed name in a
    folder others can write could be a symlink planted there, and the write would follow it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # the mode a plain write would give, set on the file we opened
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process umask (read by setting it, then restored), so a report gets the mode a plain write would."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read_records(uri: str, day: date | None, endpoint_url: str | None):
    """Grade records under `uri`; with --date only that day's partition folder is listed and read."""
    from signalcraft_core.errors import ErrorCode, StorageError
    from signalcraft_core.io.objects import parse_uri, s3_client
    from signalcraft_core.pipeline.sinks import read_grades

    bucket, path = parse_uri(uri)
    client = s3_client(endpoint_url) if bucket is not None else None
    if bucket is None and not Path(path).exists():
        raise StorageError(ErrorCode.NOT_FOUND, f"no such grades folder: {path}")
    narrow = day is not None and not path.endswith(".parquet") and "dt=" not in path
    if narrow and (bucket is not None or Path(path).is_dir()):
        base = path if not path or path.endswith("/") else path + "/"
        sub = f"{base}dt={day.isoformat()}/"
        if bucket is None and not Path(sub).is_dir():
            from signalcraft_core.pipeline.records import GRADE_SCHEMA

            return GRADE_SCHEMA.empty_table()
        uri = f"s3://{bucket}/{sub}" if bucket is not None else sub
    return read_grades(uri, client)


#: Without --date / --since, the alerts of the last 7 days are "open".
OPEN_ALERT_DAYS = 7


def _open_alerts(uri: str, day: date | None, since: date | None, endpoint_url: str | None):
    """(alerts, first day, last day) from the alert markers of an s3:// grades bucket; None for a folder."""
    from signalcraft_core.io.objects import parse_uri, s3_client
    from signalcraft_core.pipeline.alerts import open_alerts

    bucket, _ = parse_uri(uri)
    if bucket is None:
        return None  # local runs keep their alerts in the JSON-lines file (SIGNALCRAFT_ALERTS_FILE)
    today = datetime.now(timezone.utc).date()
    first = day or since or today - timedelta(days=OPEN_ALERT_DAYS - 1)
    last = day or today
    return open_alerts(s3_client(endpoint_url), bucket, first, last), first, last


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


@click.command()
@click.option("--grades", "-g", "grades", required=True, type=Location(), metavar="DIR|s3://BUCKET/PREFIX/",
              help="Grade records: a local folder (or Parquet file) or an S3 prefix.")
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="Only this UTC day (the dt= partition).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="Only records from this UTC day on.")
@click.option("--html", "html_out", type=Location(file=True, path_type=Path, s3_refusal="report writes a local file only"),
              help="Also write a self-contained HTML report with plots (needs the `plot` extra).")
@click.option("--top", type=click.IntRange(1), default=10, show_default=True, help="How many worst recordings to list.")
@endpoint_option("S3-compatible endpoint (MinIO ...); default: AWS_ENDPOINT_URL, else AWS.")
@click.option("--quiet", "-q", is_flag=True, help="No status lines; with --html, no terminal summary either.")
def report(grades: str, day: datetime | None, since: datetime | None, html_out: Path | None, top: int,
           endpoint_url: str | None, quiet: bool) -> None:
    """Summarise the fleet from grade records: machines by grade, worst recordings, errors by code, open
    alerts, and the machines still graded by a type or default set (enrol them with `signalcraft train`).

    Open alerts (an S3 prefix only) are the machine alerts raised in the period (--date, --since, else the
    last 7 days), read from the markers `_alerts/dt=DAY/...` in the grades bucket.

    \b
    Examples:
      signalcraft report --grades s3://signalcraft-grades/grades/ --since 2025-01-01
      signalcraft report --grades out/ --date 2025-01-31 --html report.html
    """
    from signalcraft_core.analysis.enrolment import (
        enrolment_candidates,
        format_enrolment,
    )
    from signalcraft_core.analysis.report import (
        filter_by_date,
        format_alerts,
        format_summary,
        render_html,
        summarize,
    )

    if day is not None and since is not None:
        raise click.UsageError("use either --date or --since, not both")
    if html_out is not None:
        _require_matplotlib()
    table = filter_by_date(_read_records(grades, _day(day), endpoint_url), _day(day), _day(since))
    summary = summarize(table, top=top)
    if not (quiet and html_out is not None):
        click.echo(format_summary(summary, grades), nl=False)
        found = _open_alerts(grades, _day(day), _day(since), endpoint_url)
        if found is not None:
            click.echo("\n" + format_alerts(*found), nl=False)
        candidates = enrolment_candidates(table)
        if candidates:
            click.echo("\n" + format_enrolment(candidates, _recordings_bucket(table)))
    if html_out is not None:
        page = render_html(table, summary, source=grades, generated_at=datetime.now(timezone.utc))
        _write(html_out, page.encode("utf-8"))
        info(f"wrote {html_out} ({len(page) // 1024} KiB)", quiet)


def _recordings_bucket(table) -> str | None:
    """The one bucket the records came from (for the train commands), if there is exactly one."""
    buckets = {b for b in table.column("bucket").to_pylist() if b}
    return buckets.pop() if len(buckets) == 1 else None


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--models", "-M", type=Location(exists=True, folder=True, path_type=Path,
                                              s3_refusal="explain reads local model folders only"),
              help="Model folder or root of per-type folders (default: packaged models).")
@click.option("--machine-type", "-m", help="Pick this type's model set from a model root (default: from the path).")
@click.option("--level", type=click.Choice(PREFERENCES),
              help="Which level decides the grade (default: the manifest's).")
@click.option("--png", "png_out", type=Location(file=True, path_type=Path, s3_refusal="explain writes a local file only"),
              help="Write one image: log-mel, per-band error, rules, grade (needs the `plot` extra).")
@click.option("--quiet", "-q", is_flag=True, help="No status lines; with --png, no terminal text either.")
def explain(file: Path, models: Path | None, machine_type: str | None, level: str | None, png_out: Path | None,
            quiet: bool) -> None:
    """Show why FILE got its grade: scores, the rules that fired, the mel bands the autoencoder missed most.

    \b
    Examples:
      signalcraft explain recording.wav --models models/pump
      signalcraft explain data/pump/id_00/abnormal/00000000.wav --png why.png
    """
    from signalcraft_core.analysis.explain import (
        explain_audio,
        format_explanation,
        render_png,
    )
    from signalcraft_core.io.audio import read_wav
    from signalcraft_core.local.cli.core import resolve_model_sets

    if png_out is not None:
        _require_matplotlib()
    _, (model_set,) = resolve_model_sets(models, [file], machine_type, level)  # score's checks, before any work
    explanation = explain_audio(model_set, read_wav(file), source=file.name, preference=level)
    if not (quiet and png_out is not None):
        click.echo(format_explanation(explanation), nl=False)
    if png_out is not None:
        data = render_png(explanation)
        _write(png_out, data)
        info(f"wrote {png_out} ({len(data) // 1024} KiB)", quiet)
