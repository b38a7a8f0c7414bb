"""Nightly fleet sweep: grade what the upload events missed, then compact the grade files it touched.

For fleets past one function's 15 minutes the state machine's Distributed Map fans out over
handlers.sweep_batch instead; this handler stops before its deadline and says where to resume.
"""

from __future__ import annotations

from typing import Any

from signalcraft_core.pipeline.observability import lambda_handler
from signalcraft_core.pipeline.serverless import run_sweep


@lambda_handler  # Powertools logs (cold start, request and correlation ids), EMF metrics, tracing switch
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return run_sweep(event, context)
