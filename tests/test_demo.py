"""`signalcraft demo`: the whole serverless path on one machine ends in one record per recording."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from signalcraft_core.local.demo import MACHINES, fleet_table, run_demo
from signalcraft_core.pipeline import runtime

ROOT = Path(__file__).resolve().parents[1]


def test_run_demo_gives_one_record_per_recording(monkeypatch, capsys):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("OUTPUT_BUCKET", raising=False)
    runtime.reset()

    summary = run_demo(clips=1, quiet=True)

    recordings = sum(len(ids) for ids in MACHINES.values()) * (1 + 1) + 2  # 1 normal + 1 abnormal each, 2 broken
    assert summary["recordings"] == recordings
    assert summary["records"] == summary["recordings"]  # after redelivery and the sweep
    assert sum(summary["errors"].values()) == 2  # the two broken files, nothing else
    assert summary["errors"] == {"not_wav": 1, "truncated": 1}
    # The demo's synthetic sets (signalcraft_core/local/demo_models/) on its seeded fleet: 6 of the 8 abnormal
    # clips flagged, none of the 8 normal ones.
    n_machines = sum(len(ids) for ids in MACHINES.values())
    assert (summary["flagged"], n_machines) == (6, 8)
    assert summary["false_alarms"] == 0
    out = capsys.readouterr().out
    assert f"abnormal clips flagged: 6/{n_machines}; normal clips flagged: 0/{n_machines}" in out
    assert f"{recordings} records for {recordings} recordings" in out
    assert "OUTPUT_BUCKET" not in os.environ  # the handlers' environment was restored
    for machine_type in MACHINES:
        assert re.search(rf"^site-a\s+{machine_type}\s+id_00\s", out, re.MULTILINE)


def test_fleet_table_counts_grades_and_errors_per_machine():
    rows = [
        {"site": "s", "machine_type": "pump", "machine_id": "a", "grade": "NORMAL", "status": "ok", "score": 10.0},
        {"site": "s", "machine_type": "pump", "machine_id": "a", "grade": "CRITICAL", "status": "ok", "score": 91.0},
        {"site": "s", "machine_type": "pump", "machine_id": "a", "grade": None, "status": "error", "score": None},
    ]

    class Table:
        def to_pylist(self):
            return rows

    header, line = fleet_table(Table())
    assert header.split()[:3] == ["site", "type", "machine"]
    assert line.split() == ["s", "pump", "a", "1", "0", "1", "1", "91.0"]


@pytest.mark.slow
def test_signalcraft_demo_command_exits_zero():
    exe = shutil.which("signalcraft", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "signalcraft_core.local.cli.core"]
    command += ["demo", "--clips", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT_URL", "OUTPUT_", "MODEL_"))}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    match = re.search(r"^(\d+) records for (\d+) recordings", done.stdout, re.MULTILINE)
    assert match and match.group(1) == match.group(2), done.stdout
    errors = re.search(r"error records: (\{.*\})", done.stdout)
    assert errors and "'not_wav': 1" in errors.group(1) and "'truncated': 1" in errors.group(1)
