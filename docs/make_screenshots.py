"""Regenerate the README screenshots docs/report.png and docs/explain.png from synthetic recordings.

Needs the `plot` extra (matplotlib, Pillow) and Debian's `chromium`. Run from the repository root:
    .venv/bin/python docs/make_screenshots.py
Two weeks of a small fleet are graded by the packaged models (two machines degrade into a bearing
fault, a few files are broken), written as grade records, reported as HTML, and photographed.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np

from signalcraft_core.analysis.explain import explain_audio, render_png
from signalcraft_core.analysis.report import render_html, summarize
from signalcraft_core.io.audio import Audio, encode_wav, read_wav
from signalcraft_core.local.synth import ANOMALY_KINDS, SAMPLE_RATE, synthesize_clip
from signalcraft_core.models.model_store import ModelStore
from signalcraft_core.pipeline.records import GradeRecord, record_id
from signalcraft_core.pipeline.score import score_audio
from signalcraft_core.pipeline.sinks import LocalGradeSink, read_grades

DOCS = Path(__file__).resolve().parent
FLEET = {"pump": ("id_00", "id_02"), "fan": ("id_00", "id_02"), "valve": ("id_00",)}
DEGRADING = {("pump", "id_02"), ("fan", "id_02")}
START = dt.datetime(2025, 3, 1, 6, tzinfo=dt.timezone.utc)
DAYS = 14
BROKEN = (
    ("not_wav", "not a RIFF/WAVE file (looks like text)", "site-a/pump/id_00/notes from the field.wav"),
    ("truncated", "data chunk cut short: 30 of 320044 bytes", "site-a/fan/id_00/cut-off.wav"),
    ("truncated", "data chunk cut short: 1024 of 320044 bytes", "site-a/fan/id_02/partial.wav"),
    ("silent", "digital silence: nothing to grade", "site-a/valve/id_00/20250310T0600.wav"),
)


def fleet_records(store: ModelStore) -> list[GradeRecord]:
    """Two clips a day per machine; degrading machines blend in more of a bearing fault from day 6."""
    records = []
    for mtype, ids in FLEET.items():
        model_set = store.get(mtype)
        for mid in ids:
            rng = np.random.default_rng(zlib.crc32(f"{mtype}/{mid}".encode()))
            audios, times = [], []
            for day in range(DAYS):
                for hour in (0, 12):
                    x = synthesize_clip(mtype, None, rng, machine_id=mid)
                    if (mtype, mid) in DEGRADING and day >= 6:
                        fault = synthesize_clip(mtype, ANOMALY_KINDS[mtype][0], rng, machine_id=mid)
                        share = min(1.0, (day - 5) / 8) ** 2
                        x = ((1 - share) * x + share * fault).astype(np.float32)
                    audios.append(Audio(x, SAMPLE_RATE, SAMPLE_RATE, 1, len(x) / SAMPLE_RATE, "pcm16"))
                    times.append(START + dt.timedelta(days=day, hours=hour, minutes=int(rng.integers(0, 50))))
            for when, s in zip(times, score_audio(model_set, audios)):
                key = f"site-a/{mtype}/{mid}/{when:%Y%m%dT%H%M}.wav"
                records.append(GradeRecord(
                    record_id=record_id("recordings", key, None, model_set.version), bucket="recordings", key=key,
                    event_time=when, scored_at=when + dt.timedelta(seconds=30), site="site-a", machine_type=mtype,
                    machine_id=mid, model_name=model_set.name, model_version=model_set.version,
                    profile=model_set.profile.name, level1_score=s.level1_score, level1_rules=s.level1_rules,
                    iforest_score=s.iforest_raw, level2_mse=s.level2_mse, level2_score=s.level2_score,
                    level2_band_errors=s.band_errors or None, score=s.score, grade=s.grade, status="ok",
                    duration_s=s.duration_s, sample_rate_in=SAMPLE_RATE, channels_in=1))
    for n, (code, message, key) in enumerate(BROKEN):
        when = START + dt.timedelta(days=3 + 3 * n)
        _, mtype, mid, _ = key.split("/")
        records.append(GradeRecord(record_id=record_id("recordings", key, None, "none"), bucket="recordings", key=key,
                                   event_time=when, scored_at=when, site="site-a", machine_type=mtype, machine_id=mid,
                                   status="error", error_code=code, error_message=message))
    return records


def screenshot(html_file: Path, out: Path, workdir: Path) -> None:
    """Photograph the page in headless Chromium, then shrink it to a 256-colour PNG."""
    from PIL import Image

    raw = workdir / "raw.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={workdir / 'profile'}", f"--screenshot={raw}", "--window-size=1280,2000",
                    html_file.as_uri()], check=True, capture_output=True, timeout=120)
    Image.open(raw).convert("RGB").quantize(colors=256).save(out, optimize=True)


def main() -> None:
    store = ModelStore()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        LocalGradeSink(work / "grades").write(fleet_records(store))
        table = read_grades(work / "grades")
        page = work / "report.html"
        page.write_text(render_html(table, summarize(table, top=5), source="s3://signalcraft-grades/grades/"), "utf-8")
        screenshot(page, DOCS / "report.png", work)

        rng = np.random.default_rng(11)
        clip = work / "pump-id_00-bearing.wav"
        clip.write_bytes(encode_wav(synthesize_clip("pump", "bearing_fault", rng), SAMPLE_RATE))
        explanation = explain_audio(store.get("pump"), read_wav(clip), source="site-a/pump/id_00/bearing.wav")
        (DOCS / "explain.png").write_bytes(render_png(explanation))
    for name in ("report.png", "explain.png"):
        print(f"docs/{name}: {(DOCS / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
