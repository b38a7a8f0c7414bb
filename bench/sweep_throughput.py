"""Sweep throughput: N recordings on the loopback S3 server -> Parquet, ours vs the reference per-event loop.

OURS: handlers.fleet_sweep.handler (list the prefix, batches with threaded downloads, batched STFT /
forest / autoencoder, one Parquet object per batch and partition, then the day's compaction).
REFERENCE: the earlier app's per-event loop over the same objects (download to a file, librosa +
torch Level 2, one Parquet object per clip). Each runs in a fresh process; the grading loop is
timed inside the child (imports and model loading excluded), the whole process outside it. A third
row runs the reference loop with one BLAS and one torch thread: its default threads spin against
other load, so its speed (and every ratio against it) moves with what else runs on the machine.

The recordings are real when ../shared/data exists: the first N of its WAV files sorted by path
(DCASE valve, DCASE 2020 dev samples, then the 8-channel MIMII files, eight times the bytes of a mono
clip), cycled when N is larger. Without it (or with --synthetic) they are copies of 8 synthetic 10 s
clips. The table notes say which. Keys follow the project's layout
`site-a/<machine type>/<machine id>/clip-NNNNNN.wav`, type and id read off the recording's path;
types without a model set of their own (toycar, toyconveyor) are graded with the `default` set.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from harness import (
    GRADES,
    MACHINE_TYPES,
    RECORDINGS,
    ROOT,
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
DATA = ROOT.parent / "shared" / "data"


def key_parts(relative: Path) -> tuple[str, str]:
    """(machine type, machine id) of a recording's path under DATA.

    The type: a folder named like a known type, else a folder with a type among its words
    (`dcase-valve-sec00`, `mimii-fan-id00-0dB`), else the folder two above the file (DCASE 2020's
    `<type>/{normal,abnormal}/`). The id: the first `id_NN` / `idNN` in the path, else id_00.
    """
    folders = [p.lower() for p in relative.parts[:-1]]
    machine = next((p for p in folders if p in MACHINE_TYPES), None)
    if machine is None:
        machine = next((t for p in folders for t in MACHINE_TYPES if t in re.split(r"[^a-z]+", p)), None)
    if machine is None:
        machine = folders[-2] if len(folders) >= 2 else "unknown"
    found = re.search(r"id_?(\d+)", "/".join(p.lower() for p in relative.parts))
    return machine, f"id_{int(found.group(1)):02d}" if found else "id_00"


def real_recordings(n: int, data: Path = DATA) -> tuple[list[tuple[str, bytes]], dict]:
    """n keys and bytes of the first n recordings under data (sorted by path, cycled), and what they are."""
    import soundfile  # librosa's reader (the [bench] extra); header facts only

    files = sorted(data.rglob("*.wav"))[:n] if data.is_dir() else []
    if not files:
        return [], {}
    facts = {}
    for path in files:
        info = soundfile.info(str(path))
        facts[path] = (path.read_bytes(), info.frames / info.samplerate, info.channels)
    items, folders = [], {}
    for i in range(n):
        path = files[i % len(files)]
        machine, machine_id = key_parts(path.relative_to(data))
        items.append((f"{PREFIX}{machine}/{machine_id}/clip-{i:06d}.wav", facts[path][0]))
        top = path.relative_to(data).parts[0]
        folders[top] = folders.get(top, 0) + 1
    seconds = [facts[files[i % len(files)]][1] for i in range(n)]
    return items, {"kind": "real", "distinct_files": len(files), "folders": folders,
                   "clip_seconds_mean": sum(seconds) / n, "clip_seconds_min": min(seconds),
                   "clip_seconds_max": max(seconds),
                   "multichannel_clips": sum(facts[files[i % len(files)]][2] > 1 for i in range(n)),
                   "mib": sum(len(d) for _, d in items) / 2**20}


def synthetic_recordings(n: int) -> tuple[list[tuple[str, bytes]], dict]:
    items = fleet_keys(n, synth_wavs(8, 10.0), prefix=PREFIX)
    return items, {"kind": "synthetic", "distinct_files": 8, "folders": {}, "clip_seconds_mean": 10.0,
                   "clip_seconds_min": 10.0, "clip_seconds_max": 10.0, "multichannel_clips": 0,
                   "mib": sum(len(d) for _, d in items) / 2**20}


def _recordings_note(n: int, about: dict) -> str:
    if about["kind"] == "synthetic":
        return (f"{n} objects, copies of 8 distinct synthetic 10 s clips (4 machine types, normal and abnormal; "
                f"{about['mib']:.0f} MiB) under s3://bench-recordings/{PREFIX}: ../shared/data was absent or "
                "--synthetic was given.")
    m = about["distinct_files"]
    which = (f"the first {n} WAV files of ../shared/data sorted by path" if n <= m else
             f"all {m} WAV files of ../shared/data sorted by path, cycled, each up to {-(-n // m)} times")
    folders = ", ".join(f"{k} {v}" for k, v in about["folders"].items())
    lo, hi = about["clip_seconds_min"], about["clip_seconds_max"]
    span = f"{lo:.3g}" if lo == hi else f"{lo:.3g}-{hi:.3g}"
    return (f"{n} REAL recordings under s3://bench-recordings/{PREFIX}: {which} ({folders}); "
            f"{span} s, mean {about['clip_seconds_mean']:.2f} s; {about['multichannel_clips']} of them 8-channel MIMII; "
            f"{about['mib']:.0f} MiB in all.")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--clips", type=int, default=200)
    parser.add_argument("-r", "--repeats", type=int, default=2)
    parser.add_argument("--synthetic", action="store_true", help="synthetic clips even when ../shared/data exists")
    args = parser.parse_args(argv)
    items, about = ([], {}) if args.synthetic else real_recordings(args.clips)
    if not items:
        items, about = synthetic_recordings(args.clips)

    runs: dict[str, list] = {"ours": [], "reference": [], "reference_1_thread": []}
    single = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    loads = []
    with LoopbackS3() as s3:
        s3.upload(items)
        del items
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
    summary = {"clips": args.clips, "recordings": about, "clip_seconds": about["clip_seconds_mean"], "ours": ours,
               "reference": ref, "reference_1_thread": ref1, "speedup": speedup,
               "speedup_vs_1_thread_reference": ratio(ours["clips_per_s"], ref1["clips_per_s"]),
               "repeats": args.repeats, "load_avg_1min": {"min": min(loads), "max": max(loads)}}
    kind = "real recordings" if about["kind"] == "real" else "synthetic clips of 10 s"
    write_result(
        NAME, f"Sweep throughput: {args.clips} {kind} on the loopback S3 server -> Parquet", summary,
        ["run", "clips/s", "speedup", "CPU ms/clip", "sweep s", "process s", "peak RSS MiB", "Parquet objects"],
        rows,
        notes=[f"median of {args.repeats} fresh processes each, alternating.",
               _recordings_note(args.clips, about),
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
