"""Warm latency per clip: one 10 s clip at a time after warm-up, ours (both levels) vs the reference (Level 2).

Each pipeline runs in its own process (so one's thread settings cannot touch the other's), warms up,
then grades the same clip many times one by one; the table gives the median over all timed calls
of two alternating rounds. Rows: the scoring pipe on a local file (like for like with the
reference, which grades a local file), and the per-event path over the loopback S3 server (our
upload handler vs the reference downloading, scoring and writing one Parquet object). The last row
runs the reference with one BLAS and one torch thread, to show how much of the gap is threading.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from harness import LoopbackS3, ratio, run_child, synth_wavs, write_result

NAME = "warm_latency"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--timed", type=int, default=40, help="timed calls per round")
    parser.add_argument("-w", "--warmup", type=int, default=5)
    parser.add_argument("-r", "--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    pump = next(data for machine, data in synth_wavs(4) if machine == "pump")
    samples: dict[str, dict[str, list[float]]] = {}
    loads = []
    with tempfile.TemporaryDirectory() as tmp, LoopbackS3() as s3:
        path = Path(tmp) / "pump-10s.wav"
        path.write_bytes(pump)
        event = json.dumps(s3.put_event("site-a/pump/id_00/warm.wav", pump))
        env = s3.env(SIGNALCRAFT_CACHE_DIR=str(Path(tmp) / "model-cache"))
        single = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        runs = {
            "ours_pipe": ("ours-pipe", str(path), {}),
            "reference": ("reference", str(path), {}),
            "ours_handler": ("ours-handler", event, env),
            "reference_event": ("reference-event", event, env),
            "reference_1_thread": ("reference", str(path), single),
        }
        for _ in range(args.rounds):
            for name, (mode, arg, env_) in runs.items():
                loads.append(os.getloadavg()[0])
                out = run_child(["bench/warm_child.py", mode, str(args.warmup), str(args.timed), arg], env_).last_json()
                bucket = samples.setdefault(name, {"wall_s": [], "cpu_s": []})
                bucket["wall_s"] += out["wall_s"]
                bucket["cpu_s"] += out["cpu_s"]

    def stats(name: str) -> dict:
        wall, cpu = np.array(samples[name]["wall_s"]) * 1000, np.array(samples[name]["cpu_s"]) * 1000
        return {"wall_ms_median": float(np.median(wall)), "wall_ms_p90": float(np.percentile(wall, 90)),
                "cpu_ms_median": float(np.median(cpu)), "calls": int(wall.size)}

    s = {name: stats(name) for name in samples}
    pairs = {"ours_pipe": "reference", "ours_handler": "reference_event", "reference_event": "reference_event"}
    labels = {
        "ours_pipe": "OURS scoring pipe (local file, both levels)",
        "reference": "REFERENCE (local file, Level 2)",
        "ours_handler": "OURS upload handler (S3 GET, both levels, Parquet PUT)",
        "reference_event": "REFERENCE per event (S3 download, Level 2, Parquet PUT)",
        "reference_1_thread": "REFERENCE, 1 BLAS + 1 torch thread (local file)",
    }
    rows = []
    for name, st in s.items():
        base = s[pairs.get(name, "reference")]
        rows.append([labels[name], st["wall_ms_median"], ratio(st["wall_ms_median"], base["wall_ms_median"]),
                     st["wall_ms_p90"], st["cpu_ms_median"], ratio(st["cpu_ms_median"], base["cpu_ms_median"])])
    summary = {**s, "ratio_wall_pipe": ratio(s["ours_pipe"]["wall_ms_median"], s["reference"]["wall_ms_median"]),
               "ratio_cpu_pipe": ratio(s["ours_pipe"]["cpu_ms_median"], s["reference"]["cpu_ms_median"]),
               "ratio_wall_event": ratio(s["ours_handler"]["wall_ms_median"], s["reference_event"]["wall_ms_median"]),
               "ratio_wall_pipe_vs_1_thread_reference": ratio(s["ours_pipe"]["wall_ms_median"],
                                                              s["reference_1_thread"]["wall_ms_median"]),
               "load_avg_1min": {"min": min(loads), "max": max(loads)}}
    write_result(
        NAME, "Warm latency: one 10 s clip at a time, after warm-up", summary,
        ["run", "wall ms (median)", "wall ratio", "wall ms (p90)", "CPU ms (median)", "CPU ratio"],
        rows,
        notes=[f"{args.rounds} alternating rounds x {args.timed} timed calls per row after {args.warmup} warm-up calls, "
               "each row in its own process; medians over all timed calls.",
               "ratios: each OURS row against the REFERENCE row of the same kind (local file, or per event over "
               "the loopback S3 server); the 1-thread reference row against the plain reference.",
               "CPU: the process's user + system time for the call, all threads (ours overlaps the rule "
               "measurements with the other features on a second thread).",
               f"1-min load average during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs."],
    )
    return summary


if __name__ == "__main__":
    main()
