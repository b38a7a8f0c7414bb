"""Cold start: a fresh process until the first grade record of one 10 s clip exists, ours vs the reference.

OURS (handler): handlers.score_upload.handler on an S3 put event against the loopback S3 server this
process starts: imports, runtime, model set, download, both levels, Parquet written to the bucket.
OURS (pipe): the scoring pipe on a local file (both levels, no S3, no Parquet): like for like with
the reference, which grades a local file on Level 2 only. REFERENCE with an empty numba cache
(NUMBA_CACHE_DIR pointed at a fresh folder) is reported on its own row. Wall time is measured from
just before the spawn to the child's "first record" mark; peak RSS is the child's own VmHWM; CPU is
the child's user + system time (less sensitive to other load on the machine than wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from harness import LoopbackS3, median, ratio, run_child, synth_wavs, write_result

NAME = "cold_start"


def _load() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--repeats", type=int, default=3)
    parser.add_argument("--numba-repeats", type=int, default=1, help="runs with an empty numba cache (~20 CPU-s each)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.numba_repeats < 1:
        parser.error("--repeats and --numba-repeats need at least 1 run each (every row is a median)")

    pump = next(data for machine, data in synth_wavs(4) if machine == "pump")
    rows_raw: dict[str, list] = {"ours_handler": [], "ours_pipe": [], "reference": [], "reference_empty_numba": []}
    loads = []
    with tempfile.TemporaryDirectory() as tmp, LoopbackS3() as s3:
        path = Path(tmp) / "pump-10s.wav"
        path.write_bytes(pump)
        event = s3.put_event("site-a/pump/id_00/cold-start.wav", pump)
        env = s3.env(SIGNALCRAFT_CACHE_DIR=str(Path(tmp) / "model-cache"))
        runs = {
            "ours_handler": (["bench/cold_child.py", "handler", json.dumps(event)], env),
            "ours_pipe": (["bench/cold_child.py", "score", str(path), "pump"], {}),
            "reference": (["bench/reference.py", str(path)], {}),
        }
        # Untimed warm-up: page cache for every library, numba's on-disk cache for the reference.
        for argv_, env_ in runs.values():
            run_child(argv_, env_)
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits all alike
            for name, (argv_, env_) in runs.items():
                loads.append(_load())
                rows_raw[name].append(run_child(argv_, env_))
        for _ in range(args.numba_repeats):
            with tempfile.TemporaryDirectory() as numba_cache:
                loads.append(_load())
                rows_raw["reference_empty_numba"].append(
                    run_child(["bench/reference.py", str(path)], {"NUMBA_CACHE_DIR": numba_cache}))

    def stats(name: str) -> dict:
        runs_ = rows_raw[name]
        return {"wall_s": median(r.to_done_s for r in runs_), "cpu_s": median(r.cpu_s for r in runs_),
                "peak_rss_mib": median(r.peak_rss_mib for r in runs_), "exit_s": median(r.to_exit_s for r in runs_),
                "runs": [{"wall_s": r.to_done_s, "cpu_s": r.cpu_s, "peak_rss_mib": r.peak_rss_mib} for r in runs_]}

    s = {name: stats(name) for name in rows_raw}
    ref = s["reference"]
    labels = {
        "ours_handler": "OURS upload handler (S3 event -> Parquet, both levels)",
        "ours_pipe": "OURS scoring pipe (local file, both levels)",
        "reference": "REFERENCE (local file, Level 2 only)",
        "reference_empty_numba": "REFERENCE, empty numba cache",
    }
    rows = [[labels[k], v["wall_s"], ratio(v["wall_s"], ref["wall_s"]), v["cpu_s"], ratio(v["cpu_s"], ref["cpu_s"]),
             v["peak_rss_mib"]] for k, v in s.items()]
    summary = {
        **s,
        "ratio_wall_handler": ratio(s["ours_handler"]["wall_s"], ref["wall_s"]),
        "ratio_wall_pipe": ratio(s["ours_pipe"]["wall_s"], ref["wall_s"]),
        "ratio_cpu_handler": ratio(s["ours_handler"]["cpu_s"], ref["cpu_s"]),
        "ratio_cpu_pipe": ratio(s["ours_pipe"]["cpu_s"], ref["cpu_s"]),
        "repeats": args.repeats, "load_avg_1min": {"min": min(loads), "max": max(loads)},
    }
    write_result(
        NAME, "Cold start: fresh process -> first grade record of one 10 s clip",
        summary,
        ["run", "wall s (median)", "wall ratio", "CPU s (median)", "CPU ratio", "peak RSS MiB"],
        rows,
        notes=[f"median of {args.repeats} fresh processes each, interleaved, after one untimed warm-up of each "
               f"(page cache; numba's on-disk cache for the reference); the empty-numba-cache row: {args.numba_repeats} "
               "run(s) with NUMBA_CACHE_DIR set to a new empty folder, so librosa's jitted functions compile.",
               "wall: from just before the spawn to the child's first-record mark (interpreter start and imports "
               "included; process teardown excluded). CPU: the child's user + system time.",
               f"1-min load average during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs "
               "(other work on the machine inflates wall time; the CPU column is the steadier comparison).",
               "ratio = OURS / REFERENCE (lower is better for time)."],
    )
    return summary


if __name__ == "__main__":
    main()
