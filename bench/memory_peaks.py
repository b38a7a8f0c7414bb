"""Peak RSS of one handler process on the biggest legal recordings (issue 11.4), and the worst sweep batch (11.5).

    python bench/memory_peaks.py [--quick] [--worst-batch]

Each case runs in a fresh process (`python bench/memory_peaks.py child ...`) through the real handler
against the loopback S3 server (bench/harness.py), so the figure includes the interpreter, imports,
model sets, boto3 and pyarrow: what a Lambda function's memory has to hold. The child reports its
VmHWM (bench/procstat.py; ru_maxrss of a child reaped with wait4 is also read, and can count pages
shared with this parent between fork and exec) and the CPU time of the handler call.

Cases (the limits' defaults: MAX_OBJECT_BYTES 256 MiB, MAX_SECONDS 600):
- a 10 s 16 kHz clip (the runtime's own floor),
- a 595 s, 96 kHz, 16-bit stereo WAV (218 MiB) through the upload handler,
- sixteen 10-minute 16 kHz files (BATCH_SIZE) in one upload event and in one sweep batch; the
  sweep's wall time is the worst legal batch that DEADLINE_MARGIN_MS must cover,
- a 1 s file at 383,999 Hz (a rate coprime with 16 kHz) through the upload handler: CPU time,
- with --worst-batch, sixteen 595 s 96 kHz stereo files (3.4 GiB) in one sweep batch (~8 minutes).

Writes bench/results/memory_peaks.json and .md; nothing is asserted here (tests/test_memory.py does).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GOAL_MIB = 300.0


def wav_bytes(seconds: float, rate: int, channels: int, seed: int = 0) -> bytes:
    """A machine-like 16-bit WAV written block by block (the parent never holds a float copy of it)."""
    import struct

    import numpy as np

    frames = int(round(seconds * rate))
    block_align = 2 * channels
    header = b"RIFF" + struct.pack("<I", 36 + frames * block_align) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block_align, block_align, 16)
    header += b"data" + struct.pack("<I", frames * block_align)
    out = bytearray(header)
    rng = np.random.default_rng(seed)
    step = 1 << 20
    for start in range(0, frames, step):
        n = min(step, frames - start)
        t = (start + np.arange(n)) / rate
        x = 0.2 * np.sin(2 * np.pi * 120.0 * t) + 0.05 * np.sin(2 * np.pi * 1730.0 * t)
        x = x[:, None] + 0.05 * rng.standard_normal((n, channels))
        out += np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2").tobytes()
    return bytes(out)


# --------------------------------------------------------------------------- child


def _child(argv: list[str]) -> int:
    import resource

    from procstat import peak_rss_mib

    mode, event_or_bucket = argv[0], argv[1]
    if mode == "decode":  # the decoder alone, warm (imports and scipy.signal loaded first), on a GET's bytes
        from signalcraft_core.io.audio import decode_wav, encode_wav
        from signalcraft_core.io.objects import get_bytes, s3_client

        data = get_bytes(s3_client(), event_or_bucket, argv[2])
        decode_wav(encode_wav([0.1, -0.1] * 24000, 48000))
        rss0, cpu0 = peak_rss_mib(), time.process_time()
        audio = decode_wav(data)
        out = {"decode_cpu_s": time.process_time() - cpu0, "samples": len(audio.samples), "done_at": time.time(),
               "peak_rss_mib": peak_rss_mib(), "rss_before_decode_mib": rss0}
        print(json.dumps(out), flush=True)
        return 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    if mode == "upload":
        from handlers import score_upload

        result = score_upload.handler(json.loads(event_or_bucket))
    else:
        from handlers import fleet_sweep

        result = fleet_sweep.handler({"bucket": event_or_bucket, "prefix": argv[2], "mode": "backfill"})
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    out = {"records": result.get("records"), "grades": result.get("grades"), "errors": result.get("errors"),
           "handler_cpu_s": cpu, "handler_wall_s": wall, "done_at": time.time(), "peak_rss_mib": peak_rss_mib(),
           "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    print(json.dumps(out), flush=True)
    return 0


# --------------------------------------------------------------------------- parent


def _event(s3, keys: list[str]) -> dict:
    """One S3 put event naming every key (what S3 sends is one record per object; SQS batches several)."""
    from harness import RECORDINGS

    from signalcraft_core.local.sample_events import generate_event

    records = []
    for key in keys:
        head = s3.client.head_object(Bucket=RECORDINGS, Key=key)
        records += generate_event("s3-put", RECORDINGS, key, size=head["ContentLength"],
                                  etag=head["ETag"].strip('"'))["Records"]
    return {"Records": records}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "child":
        return _child(argv[1:])
    from harness import GRADES, RECORDINGS, LoopbackS3, run_child, write_result

    quick = "--quick" in argv
    rows, summary = [], {}
    with LoopbackS3() as s3:
        env = s3.env()

        def case(name: str, keys: list[str], sweep_prefix: str | None = None) -> None:
            s3.clear(GRADES)
            args = ["bench/memory_peaks.py", "child"]
            args += ["sweep", RECORDINGS, sweep_prefix] if sweep_prefix is not None else \
                ["upload", json.dumps(_event(s3, keys))]
            run = run_child(args, env=env, timeout_s=1800)
            report = run.last_json()
            peak = float(report["peak_rss_mib"])
            summary[name] = {**report, "process_cpu_s": run.cpu_s, "process_wall_s": run.to_exit_s}
            rows.append((name, len(keys), f"{peak:.0f}", f"{GOAL_MIB:.0f}", "met" if peak <= GOAL_MIB else "MISSED",
                         f"{report['handler_cpu_s']:.2f}", f"{report['handler_wall_s']:.2f}",
                         json.dumps(report.get("grades") or report.get("errors"))))
            print(rows[-1], flush=True)

        s3.client.put_object(Bucket=RECORDINGS, Key="site-a/pump/id_00/clip-10s.wav", Body=wav_bytes(10, 16000, 1))
        case("10 s, 16 kHz mono (runtime floor)", ["site-a/pump/id_00/clip-10s.wav"])

        s3.client.put_object(Bucket=RECORDINGS, Key="site-a/pump/id_00/coprime.wav", Body=wav_bytes(1, 383999, 1))
        case("1 s at 383,999 Hz (coprime rate)", ["site-a/pump/id_00/coprime.wav"])
        decode = run_child(["bench/memory_peaks.py", "child", "decode", RECORDINGS, "site-a/pump/id_00/coprime.wav"],
                           env=env).last_json()
        summary["coprime_decode"] = decode
        print("coprime decode alone:", decode, flush=True)

        seconds = 120 if quick else 595
        big = wav_bytes(seconds, 96000, 2)
        s3.client.put_object(Bucket=RECORDINGS, Key="site-a/pump/id_00/long-96k.wav", Body=big)
        summary["big_object_mib"] = len(big) / 2**20
        del big
        case(f"{seconds} s, 96 kHz 16-bit stereo ({summary['big_object_mib']:.0f} MiB)",
             ["site-a/pump/id_00/long-96k.wav"])

        count = 4 if quick else 16
        ten = wav_bytes(120 if quick else 600, 16000, 1)
        keys = [f"batch/pump/id_00/ten-{i:02d}.wav" for i in range(count)]
        s3.upload([(k, ten) for k in keys], threads=4)
        del ten
        case(f"{count} x {'2' if quick else '10'}-minute 16 kHz mono, one upload event", keys)
        case(f"{count} x {'2' if quick else '10'}-minute 16 kHz mono, one sweep batch", keys, sweep_prefix="batch/")

        if "--worst-batch" in argv:  # BATCH_SIZE of the biggest legal files: the sweep deadline's worst case
            s3.clear(RECORDINGS, "batch/")
            big = wav_bytes(595, 96000, 2)
            keys = [f"worst/pump/id_00/long-{i:02d}.wav" for i in range(16)]
            s3.upload([(k, big) for k in keys], threads=2)
            del big
            case("16 x 595 s 96 kHz stereo (3.4 GiB), one sweep batch", keys, sweep_prefix="worst/")

    worst = summary[rows[-1][0]]
    summary["worst_batch_wall_s"] = worst["handler_wall_s"]
    notes = [
        f"goal: peak RSS <= {GOAL_MIB:.0f} MiB per handler process, runtime included (VmHWM of a fresh child).",
        f"worst legal sweep batch (BATCH_SIZE 10-minute files): {worst['handler_wall_s']:.1f} s wall, "
        f"{worst['handler_cpu_s']:.1f} s CPU on this machine ({os.cpu_count()} cores); see DEADLINE_MARGIN_MS.",
        f"383,999 Hz: the decoder alone (warm) {summary['coprime_decode']['decode_cpu_s'] * 1000:.0f} ms CPU, "
        f"peak {summary['coprime_decode']['peak_rss_mib']:.0f} MiB ({summary['coprime_decode']['rss_before_decode_mib']:.0f} "
        "before it); the handler row's CPU includes the cold start (imports, models).",
        "before (issue 11): 595 s 96 kHz stereo 1,349 MiB; 16 x 10-minute 2,329 MiB; 383,999 Hz: 466 MiB, 2.7 s CPU.",
    ]
    write_result("memory_peaks", "Peak RSS on the biggest legal inputs", summary,
                 ["case", "objects", "peak RSS MiB", "goal MiB", "", "handler CPU s", "handler wall s", "outcome"],
                 rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
