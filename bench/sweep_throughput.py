"""Sweep throughput: N synthetic 10 s clips on the loopback S3 server -> Parquet, ours vs the reference loop.

OURS: handlers.fleet_sweep.handler (list the prefix, batches with threaded downloads, batched STFT /
forest / autoencoder, one Parquet object per batch and partition, then the day's compaction).
REFERENCE: the earlier app's per-event loop over the same objects (download to a file, librosa +
torch Level 2, one Parquet object per clip). Each runs in a fresh process; the grading loop is
timed inside the child (imports and model loading excluded), the whole process outside it. A third
row runs the reference loop with one BLAS and one torch thread: its default threads spin against
other load, so its speed (and every ratio against it) moves with what else runs on the machine.
"""

from __future__ import annotations

import argparse
import os

from harness import (
    GRADES,
    RECORDINGS,
    LoopbackS3,
    fleet_keys,
    median,
    ratio,
    run_child,
    synth_wavs,
    write_result,
)

NAME = "sweep_throughput"
PREFIX = "site-a/"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--clips", type=int, default=200)
    parser.add_argument("-r", "--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    runs: dict[str, list] = {"ours": [], "reference": [], "reference_1_thread": []}
    single = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    loads = []
    with LoopbackS3() as s3:
        s3.upload(fleet_keys(args.clips, synth_wavs(8, 10.0)))
        env = s3.env()
        for _ in range(args.repeats):
            for mode in runs:
                s3.clear(GRADES)
                loads.append(os.getloadavg()[0])
                child_mode = "ours" if mode == "ours" else "reference"
                run = run_child(["bench/sweep_child.py", child_mode, RECORDINGS, PREFIX],
                                {**env, **(single if mode == "reference_1_thread" else {})})
                info = run.last_json()
                if info["records"] != args.clips or info["errors"]:
                    raise RuntimeError(f"{mode}: {info}")
                runs[mode].append((run, info))
                if mode == "ours":
                    info["objects_written"] = s3.count(GRADES)

    def stats(mode: str) -> dict:
        items = runs[mode]
        sweep_s = median(i["sweep_s"] for _, i in items)
        return {"sweep_s": sweep_s, "clips_per_s": args.clips / sweep_s,
                "cpu_ms_per_clip": 1000 * median(i["sweep_cpu_s"] for _, i in items) / args.clips,
                "process_s": median(r.to_exit_s for r, _ in items), "peak_rss_mib": median(r.peak_rss_mib for r, _ in items),
                "parquet_objects": items[-1][1].get("objects_written", items[-1][1]["parquet_files"]),
                "runs": [{"sweep_s": i["sweep_s"], "process_s": r.to_exit_s, "peak_rss_mib": r.peak_rss_mib} for r, i in items]}

    ours, ref, ref1 = stats("ours"), stats("reference"), stats("reference_1_thread")
    speedup = ratio(ours["clips_per_s"], ref["clips_per_s"])
    rows = [
        ["OURS fleet_sweep handler (both levels)", ours["clips_per_s"], speedup, ours["cpu_ms_per_clip"], ours["sweep_s"],
         ours["process_s"], ours["peak_rss_mib"], ours["parquet_objects"]],
        ["REFERENCE per-event loop (Level 2 only)", ref["clips_per_s"], 1.0, ref["cpu_ms_per_clip"], ref["sweep_s"],
         ref["process_s"], ref["peak_rss_mib"], ref["parquet_objects"]],
        ["REFERENCE loop, 1 BLAS + 1 torch thread", ref1["clips_per_s"], ratio(ref1["clips_per_s"], ref["clips_per_s"]),
         ref1["cpu_ms_per_clip"], ref1["sweep_s"], ref1["process_s"], ref1["peak_rss_mib"], ref1["parquet_objects"]],
    ]
    summary = {"clips": args.clips, "clip_seconds": 10.0, "ours": ours, "reference": ref, "reference_1_thread": ref1,
               "speedup": speedup, "speedup_vs_1_thread_reference": ratio(ours["clips_per_s"], ref1["clips_per_s"]),
               "repeats": args.repeats, "load_avg_1min": {"min": min(loads), "max": max(loads)}}
    write_result(
        NAME, f"Sweep throughput: {args.clips} clips of 10 s on the loopback S3 server -> Parquet", summary,
        ["run", "clips/s", "speedup", "CPU ms/clip", "sweep s", "process s", "peak RSS MiB", "Parquet objects"],
        rows,
        notes=[f"median of {args.repeats} fresh processes each, alternating; {args.clips} objects (copies of 8 distinct "
               "synthetic clips, 4 machine types, normal and abnormal) under s3://bench-recordings/site-a/.",
               "clips/s and 'sweep s': the grading loop only (listing, downloads, scoring, Parquet writes; ours also "
               "compacts the day's files), measured inside the child after imports and model loading. 'process s': "
               "the whole child process, start to exit.",
               "CPU ms/clip: the child's CPU time in the loop (all its threads) per clip; the S3 server runs in the "
               "parent process and its CPU is not counted, but it shares the machine's cores.",
               f"1-min load average during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs.",
               "speedup = clips/s / REFERENCE clips/s (higher is better); the target compares OURS with the plain "
               "REFERENCE row."],
    )
    return summary


if __name__ == "__main__":
    main()
