"""Scaling: 100 / 1000 / 5000 clips through our nightly sweep; time should grow linearly, memory stay flat.

Each size runs handlers.fleet_sweep.handler in a fresh process against the loopback S3 server (the
same child as sweep_throughput.py), so the peak RSS is that run's own. Two series: 10 s clips
(100, 1000) and 2 s clips (100, 1000, 5000; short clips keep the 5000-clip run to about a minute
on this 2-core machine). The S3 server's own CPU (it runs in this process) is reported alongside.
"""

from __future__ import annotations

import argparse
import os
import resource

from harness import (
    GRADES,
    RECORDINGS,
    LoopbackS3,
    fleet_keys,
    ratio,
    run_child,
    synth_wavs,
    write_result,
)

NAME = "scaling"


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", default="100,1000", help="sizes of the 10 s series")
    parser.add_argument("--short", default="100,1000,5000", help="sizes of the 2 s series")
    args = parser.parse_args(argv)
    series = [(10.0, [int(v) for v in args.long.split(",") if v]), (2.0, [int(v) for v in args.short.split(",") if v])]

    results = []
    loads = []
    with LoopbackS3() as s3:
        for seconds, sizes in series:
            distinct = synth_wavs(8, seconds)
            for n in sizes:
                prefix = f"scale-{seconds:g}s-{n}/"
                s3.upload(fleet_keys(n, distinct, prefix=prefix))
                loads.append(os.getloadavg()[0])
                server_cpu0 = _self_cpu()
                run = run_child(["bench/sweep_child.py", "ours", RECORDINGS, prefix], s3.env())
                server_cpu = _self_cpu() - server_cpu0
                info = run.last_json()
                if info["records"] != n or info["errors"]:
                    raise RuntimeError(f"{n} clips: {info}")
                results.append({"clip_s": seconds, "clips": n, "sweep_s": info["sweep_s"], "ms_per_clip": 1000 * info["sweep_s"] / n,
                                "cpu_ms_per_clip": 1000 * info["sweep_cpu_s"] / n, "clips_per_s": n / info["sweep_s"],
                                "process_s": run.to_exit_s, "peak_rss_mib": run.peak_rss_mib,
                                "s3_server_cpu_ms_per_clip": 1000 * server_cpu / n,
                                "parquet_files": info["parquet_files"], "objects_after_compaction": s3.count(GRADES)})
                s3.clear(GRADES)  # the next run starts from an empty grades bucket (its compaction sees only its own files)
                s3.clear(RECORDINGS, prefix)

    rows = []
    for r in results:
        first = next(x for x in results if x["clip_s"] == r["clip_s"])
        rows.append([f"{r['clips']} x {r['clip_s']:g} s", r["sweep_s"], r["ms_per_clip"],
                     ratio(r["ms_per_clip"], first["ms_per_clip"]), r["cpu_ms_per_clip"], r["s3_server_cpu_ms_per_clip"],
                     r["peak_rss_mib"], r["parquet_files"], r["objects_after_compaction"]])
    peak = max(r["peak_rss_mib"] for r in results)
    summary = {"runs": results, "max_peak_rss_mib": peak, "load_avg_1min": {"min": min(loads), "max": max(loads)}}
    write_result(
        NAME, "Scaling: our sweep over 100 / 1000 / 5000 clips", summary,
        ["clips", "sweep s", "ms/clip", "ms/clip vs smallest", "CPU ms/clip", "S3 server CPU ms/clip", "peak RSS MiB",
         "Parquet files written", "objects after compaction"],
        rows,
        notes=["one fresh process per size (peak RSS = that process's VmHWM); 'sweep s' is the handler call "
               "(listing, downloads, scoring, Parquet, compaction), after imports and model loading.",
               "linear cost: ms/clip stays level as the fleet grows; flat memory: peak RSS does not grow with the "
               "number of clips (batches are graded, written and dropped; the listing is paged).",
               "the 2 s series keeps the 5000-clip run short; per-clip times of the two series differ by clip length.",
               f"1-min load average during the runs: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs."],
    )
    return summary


if __name__ == "__main__":
    main()
