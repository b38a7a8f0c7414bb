"""Shared plumbing of the benchmarks: child processes with exact peak RSS, the loopback S3 fleet, result files.

Each benchmark script measures OUR pipeline and the REFERENCE (bench/reference.py) in the same run on
the same machine, prints a table with the ratio, and writes bench/results/<name>.json and .md.
Timings are never asserted anywhere: they are reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
RECORDINGS = "bench-recordings"
GRADES = "bench-grades"
MIB = 1024 * 1024

if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- child processes


@dataclass(frozen=True)
class ChildRun:
    """One fresh process: wall time to its 'done' mark and to exit, its peak RSS (VmHWM), CPU time, stdout."""

    to_done_s: float
    to_exit_s: float
    peak_rss_mib: float
    cpu_s: float
    stdout: str
    returncode: int

    def last_json(self) -> dict[str, Any]:
        for line in reversed(self.stdout.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"child printed no JSON line:\n{self.stdout[-2000:]}")


def run_child(args: Sequence[str], env: dict[str, str] | None = None, timeout_s: float = 600.0) -> ChildRun:
    """Run `python args...` in a fresh process, reaped with wait4 for its CPU time.

    The child prints a last JSON line with "done_at" (time.time() when its first record exists) and
    "peak_rss_mib" (its own VmHWM, bench/procstat.py; wait4's ru_maxrss would also count the parent's
    pages shared between fork and exec). `to_done_s` is measured from just before the spawn, so it
    includes interpreter start and imports.
    """
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.time()
        proc = subprocess.Popen([PYTHON, *args], stdout=out, stderr=err, env=full_env, cwd=str(ROOT))
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        t_exit = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} exited {proc.returncode}:\n{stderr[-4000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    run = ChildRun(0.0, t_exit - t0, usage.ru_maxrss / 1024.0, cpu, stdout, proc.returncode)
    report = run.last_json()
    done_at = report.get("done_at")
    return ChildRun((done_at - t0) if done_at else run.to_exit_s, run.to_exit_s,
                    float(report.get("peak_rss_mib", run.peak_rss_mib)), cpu, stdout, proc.returncode)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- synthetic fleet


MACHINE_TYPES = ("fan", "pump", "slider", "valve")


def synth_wavs(n_distinct: int = 8, duration_s: float = 10.0, seed: int = 0) -> list[tuple[str, bytes]]:
    """A few distinct synthetic clips (machine type, 16-bit WAV bytes), normal and abnormal mixed."""
    import numpy as np

    from signalcraft_core.io.audio import encode_wav
    from signalcraft_core.local.synth import ANOMALY_KINDS, synthesize_clip

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_distinct):
        machine = MACHINE_TYPES[i % len(MACHINE_TYPES)]
        anomaly = ANOMALY_KINDS[machine][0] if (i // len(MACHINE_TYPES)) % 2 else None
        clip = synthesize_clip(machine, anomaly, rng, duration_s=duration_s)
        out.append((machine, encode_wav(clip, 16000)))
    return out


def fleet_keys(n: int, distinct: Sequence[tuple[str, bytes]], prefix: str = "site-a/") -> list[tuple[str, bytes]]:
    """n keys `site-a/<type>/id_00/clip-NNNNNN.wav`, each a copy of one of the distinct clips."""
    out = []
    for i in range(n):
        machine, data = distinct[i % len(distinct)]
        out.append((f"{prefix}{machine}/id_00/clip-{i:06d}.wav", data))
    return out


def write_local_clip(directory: Path, data: bytes, name: str = "clip.wav") -> Path:
    path = Path(directory) / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- loopback S3


class LoopbackS3:
    """The project's embedded S3 server (moto, real HTTP on 127.0.0.1) with the two bench buckets."""

    def __init__(self) -> None:
        from signalcraft_core.local.s3server import start_s3_server

        self.server = start_s3_server()
        self.credentials = self.server.credentials_env()
        self._environment = contextlib.ExitStack()
        self._environment.enter_context(self.server.environment())   # its key, the shell's profile hidden
        self.endpoint_url = self.server.endpoint_url
        self.client = self._client()
        for bucket in (RECORDINGS, GRADES):
            self.client.create_bucket(Bucket=bucket)

    def _client(self):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=16,
                          request_checksum_calculation="when_required", response_checksum_validation="when_required"))

    def env(self, **extra: str) -> dict[str, str]:
        """The handler environment for a child process (or this one) against this server."""
        return {**self.credentials, "AWS_ENDPOINT_URL": self.endpoint_url, "OUTPUT_BUCKET": GRADES,
                "OUTPUT_PREFIX": "grades/", "LOG_LEVEL": "WARNING", **extra}

    def put_event(self, key: str, data: bytes) -> dict[str, Any]:
        """Upload one clip to the recordings bucket; the S3 put event Lambda would get for it."""
        from signalcraft_core.local.sample_events import generate_event

        self.client.put_object(Bucket=RECORDINGS, Key=key, Body=data)
        head = self.client.head_object(Bucket=RECORDINGS, Key=key)
        return generate_event("s3-put", RECORDINGS, key, size=head["ContentLength"], etag=head["ETag"].strip('"'))

    def upload(self, items: Sequence[tuple[str, bytes]], bucket: str = RECORDINGS, threads: int = 8) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda kv: self.client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items))

    def clear(self, bucket: str, prefix: str = "") -> int:
        """Delete every object under a prefix (between runs, so each starts from the same state)."""
        n = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            for start in range(0, len(keys), 1000):
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys[start:start + 1000]})
            n += len(keys)
        return n

    def count(self, bucket: str, prefix: str = "") -> int:
        paginator = self.client.get_paginator("list_objects_v2")
        return sum(len(page.get("Contents", [])) for page in paginator.paginate(Bucket=bucket, Prefix=prefix))

    def stop(self) -> None:
        self._environment.close()
        self.server.stop()

    def __enter__(self) -> "LoopbackS3":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- results


def machine_info() -> dict[str, Any]:
    import numpy
    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": numpy.__version__, "torch": torch.__version__}
    try:
        import librosa

        info["librosa"] = librosa.__version__
    except ImportError:  # pragma: no cover
        pass
    models = {}
    for manifest in sorted((ROOT / "models").glob("*/manifest.json")):
        doc = json.loads(manifest.read_text())
        profile = doc.get("profile", {})
        models[manifest.parent.name] = (f"{doc.get('version')} ({profile.get('name')}: n_fft {profile.get('n_fft')}, "
                                        f"{profile.get('n_mels')} mels, {len(profile.get('pooling', []))} poolings)")
    info["models"] = models
    return info


def ratio(ours: float, reference: float) -> float:
    return float(ours / reference) if reference else float("nan")


def table_lines(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table (also readable as plain text on a terminal)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    line = lambda vals: "| " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in cells)]


def write_result(name: str, title: str, summary: dict[str, Any], header: Sequence[str],
                 rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> str:
    """Print the table and write bench/results/<name>.json and <name>.md; returns the Markdown."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    lines = [f"## {title}", "", *table_lines(header, rows), ""]
    lines += [f"- {n}" for n in notes]
    md = "\n".join(lines).rstrip() + "\n"
    print(md)
    payload = {"name": name, "title": title, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine_info(), "summary": summary,
               "table": {"header": list(header), "rows": [list(r) for r in rows]}, "notes": list(notes)}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS_DIR / f"{name}.md").write_text(md)
    return md
