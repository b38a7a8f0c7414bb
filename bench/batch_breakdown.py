"""Batch ratio on real recordings vs the seed reference, per-clip CPU by stage, and 1 vs 2 featurisation threads.

All on ../shared/data (up to --clips real clips, sorted by path), each measurement in a fresh process,
the runs interleaved and repeated (-r) so both sides see the same machine; medians reported.

- batch: read + decode + both levels + Parquet bytes, batches of 16 (ours, 1 and 2 featurisation
  threads) vs bench/reference.py one clip at a time (librosa + torch, Level 2 only): wall, CPU, peak RSS.
- stages: our path one stage after the other on one thread, CPU ms per clip.
- featurise: dsp.inputs.featurise of one 16-clip batch with 1 and 2 threads: wall, CPU, peak RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from harness import ROOT, ratio, run_child, write_result

NAME = "batch_breakdown"
DATA = ROOT.parent / "shared" / "data"


def _median(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    files = sorted(DATA.rglob("*.wav"))[: args.clips]
    if not files:
        raise SystemExit(f"no recordings under {DATA}")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(str(p) for p in files) + "\n")
        listing = f.name
    env = {"PYTHONHASHSEED": "0"}
    runs: dict[str, list[dict]] = {k: [] for k in ("reference", "ours_1", "ours_2", "feat_1", "feat_2")}
    loads = []
    try:
        for _ in range(args.repeats):
            loads.append(os.getloadavg()[0])
            for key, cmd in (("reference", ["reference"]), ("ours_1", ["ours", "1", str(args.batch)]),
                             ("ours_2", ["ours", "2", str(args.batch)]), ("feat_1", ["featurise", "1"]),
                             ("feat_2", ["featurise", "2"])):
                mode, *rest = cmd
                info = run_child(["bench/batch_child.py", mode, listing, *rest], env).last_json()
                runs[key].append(info)
        stages = run_child(["bench/batch_child.py", "breakdown", listing, str(args.batch)], env).last_json()
    finally:
        os.unlink(listing)

    n = len(files)
    summary: dict = {"clips": n, "batch": args.batch, "repeats": args.repeats,
                     "load_avg_1min": {"min": min(loads), "max": max(loads)}}
    rows = []
    for key, label in (("reference", "reference (librosa + torch, Level 2, one clip at a time)"),
                       ("ours_1", "ours, both levels, 1 featurisation thread"),
                       ("ours_2", "ours, both levels, 2 featurisation threads")):
        wall, cpu, rss = _median(runs[key], "wall_s"), _median(runs[key], "cpu_s"), _median(runs[key], "peak_rss_mib")
        summary[key] = {"wall_ms_per_clip": 1000 * wall / n, "cpu_ms_per_clip": 1000 * cpu / n, "peak_rss_mib": rss}
        rows.append([label, 1000 * wall / n, 1000 * cpu / n, rss])
    ref = summary["reference"]
    for key in ("ours_1", "ours_2"):
        summary[key]["ratio_wall"] = ratio(summary[key]["wall_ms_per_clip"], ref["wall_ms_per_clip"])
        summary[key]["ratio_cpu"] = ratio(summary[key]["cpu_ms_per_clip"], ref["cpu_ms_per_clip"])
    for row, key in zip(rows, ("reference", "ours_1", "ours_2")):
        row += [summary[key].get("ratio_wall", 1.0), summary[key].get("ratio_cpu", 1.0)]
    for key in ("feat_1", "feat_2"):
        summary[key] = {"wall_ms_per_clip": 1000 * _median(runs[key], "wall_s") / 16,
                        "cpu_ms_per_clip": 1000 * _median(runs[key], "cpu_s") / 16,
                        "peak_rss_mib": _median(runs[key], "peak_rss_mib")}
    summary["featurise_speedup_2_threads"] = ratio(summary["feat_1"]["wall_ms_per_clip"], summary["feat_2"]["wall_ms_per_clip"])
    summary["featurise_rss_growth_2_threads"] = ratio(summary["feat_2"]["peak_rss_mib"], summary["feat_1"]["peak_rss_mib"]) - 1
    for key, label in (("feat_1", "featurise 16 clips, 1 thread"), ("feat_2", "featurise 16 clips, 2 threads")):
        s = summary[key]
        rows.append([label, s["wall_ms_per_clip"], s["cpu_ms_per_clip"], s["peak_rss_mib"],
                     ratio(s["wall_ms_per_clip"], summary["feat_1"]["wall_ms_per_clip"]),
                     ratio(s["cpu_ms_per_clip"], summary["feat_1"]["cpu_ms_per_clip"])])
    per_clip = {k: 1000 * v / stages["clips"] for k, v in stages["stages_cpu_s"].items()}
    summary["stages_cpu_ms_per_clip"] = per_clip
    total = sum(per_clip.values())
    rows += [[f"stage: {k}", float("nan"), v, float("nan"), v / total, float("nan")] for k, v in per_clip.items()]
    write_result(
        NAME, f"Batch on {n} real clips vs the reference, stages, featurisation threads", summary,
        ["run", "wall ms/clip", "CPU ms/clip", "peak RSS MiB", "wall vs reference (stages: share of CPU)", "CPU vs reference"],
        rows,
        notes=[f"{n} real recordings from ../shared/data (sorted by path: DCASE 2020 dev samples, DCASE valve, MIMII; "
               f"10-11 s, mono and 8-channel), median of {args.repeats} interleaved runs, one fresh process each; "
               f"ours grades batches of {args.batch} with the `default` model set and builds the Parquet bytes.",
               "featurise rows: ratios against the 1-thread row; peak RSS is the whole process (VmHWM).",
               "stage rows: CPU per clip on one thread (the first pass over the clips warms "
               "caches and is not counted); 'decision_and_write' is the pipe minus featurisation, forest and "
               "autoencoder: calibration, grading, records and Parquet bytes.",
               f"load average during the run: {min(loads):.1f}-{max(loads):.1f} (other work shares the 2 cores)."],
    )
    return summary


if __name__ == "__main__":
    main()
