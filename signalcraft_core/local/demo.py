"""`signalcraft demo`: the whole serverless path on one machine, start to finish.

Starts an embedded S3-compatible server (unless an endpoint such as MinIO is given), uploads a
synthetic fleet (four machine types, normal and abnormal clips, plus two broken files), drives
the upload handler with every event shape it accepts, redelivers one event, runs the nightly
sweep, then reads the Parquet grade records back and prints the fleet table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import click

from signalcraft_core.local.console import Progress, info

#: The synthetic-sound model sets the demo fleet is graded with (the packaged models/ are trained on
#: real recordings and are not meant for synthetic machines).
DEMO_MODELS = Path(__file__).resolve().parent / "demo_models"

RECORDINGS = "signalcraft-recordings"
GRADES = "signalcraft-grades"
SITE = "site-a"
MACHINES = {"pump": ("id_00", "id_02"), "fan": ("id_00", "id_02"), "slider": ("id_00", "id_02"), "valve": ("id_00", "id_02")}
EVENT_KINDS = ("s3-put", "minio", "eventbridge", "sqs")
#: Uploads that never get an event (a lost notification, a disabled trigger): what the nightly sweep is for.
MISSED_EVENTS = 4


def _ensure_bucket(client: Any, name: str) -> None:
    try:
        client.create_bucket(Bucket=name)
    except Exception as exc:  # noqa: BLE001 - an existing bucket of ours is fine
        if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
            raise


def upload_fleet(client: Any, workdir: Path, clips: int, seed: int) -> list[tuple[str, str]]:
    """Synthesise and upload the demo fleet; returns (key, label) pairs, label normal|abnormal|broken."""
    from signalcraft_core.local.synth import write_dataset

    uploaded: list[tuple[str, str]] = []
    for m_index, (machine_type, ids) in enumerate(MACHINES.items()):
        for i_index, machine_id in enumerate(ids):
            files = write_dataset(workdir, machine_type, clips, 1, seed=seed + 10 * m_index + i_index, machine_id=machine_id)
            for path in files:
                label = path.parent.name
                key = f"{SITE}/{machine_type}/{machine_id}/{label}-{path.stem}.wav"
                client.upload_file(str(path), RECORDINGS, key)
                uploaded.append((key, label))
    broken = {
        f"{SITE}/pump/id_00/notes from the field.wav": b"this is a text file with a .wav name\n",
        f"{SITE}/fan/id_00/cut-off.wav": (workdir / "fan" / "id_00" / "normal" / "00000000.wav").read_bytes()[:30],
    }
    for key, data in broken.items():
        client.put_object(Bucket=RECORDINGS, Key=key, Body=data)
        uploaded.append((key, "broken"))
    return uploaded


def fleet_table(table) -> list[str]:
    """Lines of the fleet summary, from the Parquet records read back."""
    rows = table.to_pylist()
    by_machine: dict[tuple, Counter] = defaultdict(Counter)
    worst: dict[tuple, float] = {}
    for r in rows:
        machine = (r["site"] or "-", r["machine_type"] or "-", r["machine_id"] or "-")
        by_machine[machine][r["grade"] if r["status"] == "ok" else "ERROR"] += 1
        if r["score"] is not None:
            worst[machine] = max(worst.get(machine, 0.0), r["score"])
    lines = [f"{'site':<8} {'type':<7} {'machine':<8} {'NORMAL':>7} {'WARNING':>8} {'CRITICAL':>9} {'ERROR':>6} {'max score':>10}"]
    for machine in sorted(by_machine):
        c = by_machine[machine]
        lines.append(f"{machine[0]:<8} {machine[1]:<7} {machine[2]:<8} {c['NORMAL']:>7} {c['WARNING']:>8} "
                     f"{c['CRITICAL']:>9} {c['ERROR']:>6} {worst.get(machine, float('nan')):>10.1f}")
    return lines


def run_demo(endpoint_url: str | None = None, clips: int = 3, seed: int = 7, models: str | None = None,
             quiet: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Run the demo against `endpoint_url`, or against an embedded server started (and stopped) for it."""
    with contextlib.ExitStack() as stack:
        if not endpoint_url:
            from signalcraft_core.local.s3server import start_s3_server

            server = stack.enter_context(start_s3_server())
            stack.enter_context(server.environment())   # its own key: the only one it accepts
            endpoint_url = server.endpoint_url
            info(f"started the embedded S3 server at {endpoint_url}", quiet)
        return _run(endpoint_url, clips, seed, models, quiet, verbose)


def _run(endpoint_url: str, clips: int, seed: int, models: str | None, quiet: bool, verbose: bool) -> dict[str, Any]:
    from signalcraft_core.local.invoke import (
        FUNCTIONS,
        LocalContext,
        handler_environment,
        load_handler,
    )

    score_upload = load_handler(FUNCTIONS["ScoreUploadFunction"])
    fleet_sweep = load_handler(FUNCTIONS["FleetSweepFunction"])
    from signalcraft_core.io.objects import clean_etag, s3_client
    from signalcraft_core.local.sample_events import generate_event
    from signalcraft_core.pipeline.sinks import read_grades

    client = s3_client(endpoint_url)
    for bucket in (RECORDINGS, GRADES):
        _ensure_bucket(client, bucket)
    env = {"OUTPUT_BUCKET": GRADES, "OUTPUT_PREFIX": "grades/", "MODEL_URI": models or str(DEMO_MODELS),
           "LOG_LEVEL": "INFO" if verbose else "WARNING"}
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    with tempfile.TemporaryDirectory() as tmp, handler_environment(env, endpoint_url):
        uploaded = upload_fleet(client, Path(tmp), clips, seed)
        info(f"uploaded {len(uploaded)} recordings to s3://{RECORDINGS}/{SITE}/", quiet)
        progress = Progress(quiet)
        notified = uploaded[:-MISSED_EVENTS]  # the last few never get an event: the nightly sweep finds them
        for n, (key, _label) in enumerate(notified):
            progress("events", n + 1, len(notified))
            head = client.head_object(Bucket=RECORDINGS, Key=key)
            event = generate_event(EVENT_KINDS[n % len(EVENT_KINDS)], RECORDINGS, key, size=head["ContentLength"],
                                   etag=clean_etag(head["ETag"]), date=today)
            score_upload(event, LocalContext("ScoreUploadFunction"))
            if n == 0:
                redelivered = event
        progress.close()
        for _ in range(2):
            score_upload(redelivered, LocalContext("ScoreUploadFunction"))
        info(f"upload handler: {len(notified)} events ({', '.join(EVENT_KINDS)}), one redelivered twice; "
             f"{MISSED_EVENTS} uploads sent no event", quiet)
        sweep = fleet_sweep({"bucket": RECORDINGS, "prefix": f"{SITE}/"}, LocalContext("FleetSweepFunction"))
        info(f"nightly sweep (incremental): {sweep['records']} new records, {sweep['already_graded']} already "
             f"graded, {sweep['parquet_files']} Parquet files, "
             f"compacted {sweep['compaction']['files_in']} files into {len(sweep['compaction']['written'])}", quiet)
    table = read_grades(f"s3://{GRADES}/grades/", client)
    click.echo("\n".join(fleet_table(table)))
    labels = dict(uploaded)
    rows = table.to_pylist()
    flagged = sum(1 for r in rows if labels.get(r["key"]) == "abnormal" and r["grade"] in ("WARNING", "CRITICAL"))
    false_alarms = sum(1 for r in rows if labels.get(r["key"]) == "normal" and r["grade"] != "NORMAL")
    n_abnormal = sum(1 for v in labels.values() if v == "abnormal")
    n_normal = sum(1 for v in labels.values() if v == "normal")
    errors = Counter(r["error_code"] for r in rows if r["status"] == "error")
    click.echo(f"\n{len(rows)} records for {len(uploaded)} recordings in s3://{GRADES}/grades/ "
               f"(one per recording after redelivery and the sweep)")
    click.echo(f"abnormal clips flagged: {flagged}/{n_abnormal}; normal clips flagged: {false_alarms}/{n_normal}; "
               f"error records: {dict(errors)}")
    return {"records": len(rows), "recordings": len(uploaded), "flagged": flagged, "false_alarms": false_alarms, "errors": dict(errors)}
