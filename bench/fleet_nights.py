"""A 30-night fleet: requests and records per night of the incremental sweep vs re-grading everything.

Each night a few new recordings land in the bucket (tiny synthetic clips: the point is the work,
not the scoring); the nightly sweep runs in `incremental` mode. On sample nights a `backfill`
sweep over the same bucket (what the sweep did before it was incremental) is measured side by
side into a separate grades bucket. Requests are counted at the client (botocore's event hook).

    python bench/fleet_nights.py [--nights 30] [--per-night 5]

Writes bench/results/fleet_nights.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"


def clip(seed: int) -> bytes:
    from signalcraft_core.io.audio import encode_wav

    rng = np.random.default_rng(seed)
    t = np.arange(8800) / 8000
    return encode_wav(0.2 * np.sin(2 * np.pi * (100 + seed % 50) * t) + 0.05 * rng.standard_normal(t.size), 8000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--per-night", type=int, default=5)
    args = parser.parse_args()

    from signalcraft_core.local.invoke import FUNCTIONS, load_handler
    from signalcraft_core.local.s3server import start_s3_server
    from signalcraft_core.io.objects import s3_client
    from signalcraft_core.pipeline import runtime

    server = start_s3_server()
    key = server.environment()   # its key for the rest of this process, the shell's profile hidden
    key.__enter__()
    os.environ.update({"AWS_ENDPOINT_URL": server.endpoint_url, "OUTPUT_PREFIX": "grades/", "LOG_LEVEL": "CRITICAL",
                       "SWEEP_OVERLAP_HOURS": "0", "POWERTOOLS_METRICS_DISABLED": "true"})
    s3 = s3_client(server.endpoint_url)
    for bucket in ("fleet-recordings", "fleet-grades", "fleet-grades-backfill"):
        s3.create_bucket(Bucket=bucket)
    sweep = load_handler(FUNCTIONS["FleetSweepFunction"])
    samples = {1, 10, 20, args.nights}
    nights = []

    def run(output_bucket: str, mode: str) -> dict:
        os.environ["OUTPUT_BUCKET"] = output_bucket
        runtime.reset()
        client = runtime.get_runtime().client
        calls: Counter = Counter()
        hook = lambda model, **_: calls.update([model.name])  # noqa: E731
        client.meta.events.register("before-call.s3", hook)
        try:
            result = sweep({"bucket": "fleet-recordings", "prefix": "site-a/", "mode": mode})
        finally:
            client.meta.events.unregister("before-call.s3", hook)
        return {"records": result["records"], "GetObject": calls["GetObject"], "HeadObject": calls["HeadObject"],
                "ListObjectsV2": calls["ListObjectsV2"], "requests": sum(calls.values())}

    for night in range(1, args.nights + 1):
        for i in range(args.per_night):
            n = (night - 1) * args.per_night + i
            s3.put_object(Bucket="fleet-recordings", Key=f"site-a/pump/id_0{n % 4}/{n:08d}.wav", Body=clip(n))
        row = {"night": night, "recordings_in_bucket": night * args.per_night, "incremental": run("fleet-grades",
                                                                                                   "incremental")}
        if night in samples:
            row["backfill"] = run("fleet-grades-backfill", "backfill")
        nights.append(row)
        print(json.dumps(row), flush=True)
    key.__exit__(None, None, None)
    server.stop()

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet_nights.json").write_text(json.dumps(nights, indent=1) + "\n")
    lines = ["| night | recordings in bucket | incremental: records | GETs | all requests | "
             "re-grade all: records | GETs | all requests | requests ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in nights:
        inc, full = row["incremental"], row.get("backfill")
        if full is None:
            continue
        lines.append(f"| {row['night']} | {row['recordings_in_bucket']} | {inc['records']} | {inc['GetObject']} | "
                     f"{inc['requests']} | {full['records']} | {full['GetObject']} | {full['requests']} | "
                     f"{inc['requests'] / full['requests']:.2f}x |")
    total_inc = sum(r["incremental"]["records"] for r in nights)
    lines.append("")
    lines.append(f"{args.nights} nights, {args.per_night} new recordings a night: the incremental sweep graded "
                 f"{total_inc} recordings in all (each once); GETs per night stayed between "
                 f"{min(r['incremental']['GetObject'] for r in nights)} and "
                 f"{max(r['incremental']['GetObject'] for r in nights)} (new recordings + the grade files of "
                 "their day it reads as its index), while re-grading everything grows with the bucket.")
    (RESULTS / "fleet_nights.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
