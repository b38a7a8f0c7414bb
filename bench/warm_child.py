"""The process a warm-latency measurement spawns: warm up, then grade the same clip many times, one at a time.

    python bench/warm_child.py MODE N_WARMUP N_TIMED ARG
    MODE ours-pipe       ARG = local WAV: read + decode + both levels (signalcraft_core.pipeline.score)
    MODE reference       ARG = local WAV: bench/reference.py score_file (librosa + torch, Level 2)
    MODE ours-handler    ARG = S3 event JSON: handlers.score_upload.handler (download, grade, Parquet PUT)
    MODE reference-event ARG = S3 event JSON: download to a file, reference score, one Parquet PUT

Prints one JSON line with every timed call's wall and CPU seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _ours_pipe(path: str):
    from signalcraft_core.models.model_store import ModelStore
    from signalcraft_core.pipeline.score import score_payloads

    model_set = ModelStore().for_path(path, "pump")
    data_path = Path(path)

    def call() -> None:
        (result,) = score_payloads(model_set, [data_path.read_bytes()])
        assert result.status == "ok" and result.level1_score is not None and result.level2_score is not None

    return call


def _reference(path: str):
    import reference

    model = reference.load_model()
    return lambda: reference.score_file(model, path)


def _ours_handler(event_json: str):
    from handlers import score_upload

    event = json.loads(event_json)

    def call() -> None:
        result = score_upload.handler(event)
        assert result["records"] == 1 and result["written"], result

    return call


def _reference_event(event_json: str):
    import hashlib
    import io
    import os
    import tempfile

    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    import reference
    from botocore.config import Config

    record = json.loads(event_json)["Records"][0]["s3"]
    bucket, key = record["bucket"]["name"], record["object"]["key"].replace("+", " ")
    client = boto3.session.Session().client(
        "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"))
    model = reference.load_model()
    local = os.path.join(tempfile.mkdtemp(), "clip.wav")

    def call() -> None:
        client.download_file(bucket, key, local)
        result = reference.score_file(model, local)
        buf = io.BytesIO()
        pq.write_table(pa.table({"key": [key], "mse": [result["mse"]], "score": [result["score"]]}), buf)
        name = hashlib.sha256(key.encode()).hexdigest()[:16]
        client.put_object(Bucket=os.environ["OUTPUT_BUCKET"], Key=f"reference/{name}.parquet", Body=buf.getvalue())

    return call


MODES = {"ours-pipe": _ours_pipe, "reference": _reference, "ours-handler": _ours_handler,
         "reference-event": _reference_event}


def main(argv: list[str]) -> int:
    mode, warmup, timed, arg = argv[0], int(argv[1]), int(argv[2]), argv[3]
    call = MODES[mode](arg)
    for _ in range(warmup):
        call()
    walls, cpus = [], []
    for _ in range(timed):
        c0, t0 = time.process_time(), time.perf_counter()
        call()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    from procstat import peak_rss_mib

    print(json.dumps({"mode": mode, "wall_s": walls, "cpu_s": cpus, "peak_rss_mib": peak_rss_mib()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
