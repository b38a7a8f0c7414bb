"""Distributed Map child: grade one ItemBatcher batch of listed objects, write one Parquet file.

Storage failures become error records here (the sweep carries on); re-running the map fills them in.
"""

from __future__ import annotations

from typing import Any

from signalcraft_core.io.events import parse_map_batch
from signalcraft_core.logs import request_id
from signalcraft_core.pipeline.grade import grade_objects, refusal, summarise
from signalcraft_core.pipeline.runtime import get_runtime


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    request_id.set(getattr(context, "aws_request_id", None))
    runtime = get_runtime()
    sink = runtime.sink()  # no OUTPUT_BUCKET: fail before grading anything
    batch = parse_map_batch(event)
    refs = [ref for ref in batch.refs if refusal(ref, runtime.config) is None]
    records = grade_objects(refs, runtime.client, runtime.store, runtime.config)
    written = sink.write(records) if records else []
    return {**summarise(records), "skipped": len(batch.refs) - len(refs), "written": written}
