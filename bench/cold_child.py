"""The process a cold-start measurement spawns: import nothing up front, grade one clip, say when.

    python bench/cold_child.py handler EVENT_JSON     handlers.score_upload.handler on an S3 event
    python bench/cold_child.py score PATH [MACHINE]   the scoring pipe on a local file (no S3, no Parquet)

Prints the result and a last JSON line {"done_at": time.time()} taken when the first record exists.
Only the standard library is imported before the measured work starts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _handler(event_json: str) -> dict:
    from handlers import score_upload

    result = score_upload.handler(json.loads(event_json))
    if result.get("records") != 1 or not result.get("written"):
        raise SystemExit(f"handler did not write one record: {result}")
    return {"grades": result.get("grades"), "written": len(result["written"])}


def _score(path: str, machine_type: str | None) -> dict:
    from signalcraft_core.io.audio import read_wav
    from signalcraft_core.models.model_store import ModelStore
    from signalcraft_core.pipeline.score import score_audio

    store = ModelStore()
    model_set = store.for_path(path, machine_type)
    (result,) = score_audio(model_set, [read_wav(path)])
    if result.status != "ok" or result.level1_score is None or result.level2_score is None:
        raise SystemExit(f"not graded on both levels: {result}")
    return {"grade": result.grade, "score": result.score}


def main(argv: list[str]) -> int:
    mode, *rest = argv
    if mode == "handler":
        out = _handler(rest[0])
    elif mode == "score":
        out = _score(rest[0], rest[1] if len(rest) > 1 else None)
    else:
        raise SystemExit(__doc__)
    done_at = time.time()
    from procstat import peak_rss_mib

    print(json.dumps(out))
    print(json.dumps({"done_at": done_at, "peak_rss_mib": peak_rss_mib()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
