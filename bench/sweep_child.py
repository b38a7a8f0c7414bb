"""The process a sweep measurement spawns: grade every clip under a prefix of the loopback S3 server.

    python bench/sweep_child.py ours BUCKET PREFIX        handlers.fleet_sweep.handler (batches, one
                                                          Parquet per batch and partition, compaction)
    python bench/sweep_child.py reference BUCKET PREFIX   the earlier app's per-event loop: download each
                                                          object to a file, score it (bench/reference.py),
                                                          write one Parquet object per clip with pyarrow

Imports and model loading happen before the clock starts ("sweep_s" is the grading loop only); the
parent also measures the whole process. Prints one JSON line with the counts and timings, and a last
line {"done_at": ...}. The environment carries the endpoint, credentials and OUTPUT_BUCKET.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _ours(bucket: str, prefix: str) -> dict:
    from handlers import fleet_sweep
    from signalcraft_core.pipeline.runtime import get_runtime

    runtime = get_runtime()
    for machine in ("fan", "pump", "slider", "valve", "default"):  # load the model sets before the clock starts
        runtime.store.get(machine)
    # and the libraries the handler imports on first use (the reference imports its own before its clock)
    import pyarrow.dataset  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import signalcraft_core.pipeline.alerts  # noqa: F401
    import signalcraft_core.pipeline.sinks  # noqa: F401
    cpu0, t0 = time.process_time(), time.perf_counter()
    day = dt.datetime.now(dt.timezone.utc).date().isoformat()  # the partition the records land in (their event time)
    result = fleet_sweep.handler({"bucket": bucket, "prefix": prefix, "date": day})
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"records": result["records"], "errors": result["errors"], "parquet_files": result["parquet_files"],
            "compacted_into": len(result.get("compaction", {}).get("written", ())), "sweep_s": elapsed, "sweep_cpu_s": cpu}


def _reference(bucket: str, prefix: str) -> dict:
    import hashlib
    import io
    import tempfile

    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    import reference
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))
    model = reference.load_model()
    out_bucket = os.environ["OUTPUT_BUCKET"]
    cpu0, t0 = time.process_time(), time.perf_counter()
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "clip.wav")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                client.download_file(bucket, key, local)
                result = reference.score_file(model, local)
                grade = "CRITICAL" if result["score"] > 0.8 else "WARNING" if result["score"] > 0.5 else "NORMAL"
                table = pa.table({"key": [key], "mse": [result["mse"]], "score": [result["score"]], "grade": [grade],
                                  "scored_at": [time.time()]})
                buf = io.BytesIO()
                pq.write_table(table, buf)
                name = hashlib.sha256(key.encode()).hexdigest()[:16]
                client.put_object(Bucket=out_bucket, Key=f"reference/{name}.parquet", Body=buf.getvalue())
                n += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"records": n, "errors": {}, "parquet_files": n, "sweep_s": elapsed, "sweep_cpu_s": cpu}


def main(argv: list[str]) -> int:
    mode, bucket, prefix = argv
    out = _ours(bucket, prefix) if mode == "ours" else _reference(bucket, prefix)
    done_at = time.time()
    from procstat import peak_rss_mib

    print(json.dumps(out))
    print(json.dumps({"done_at": done_at, "peak_rss_mib": peak_rss_mib(), **out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
