"""Distributed Map child: grade one ItemBatcher batch of listed objects."""

from __future__ import annotations

from typing import Any

from signalcraft_core.pipeline.observability import lambda_handler
from signalcraft_core.pipeline.serverless import grade_map_batch


@lambda_handler  # Powertools logs (cold start, request and correlation ids), EMF metrics, tracing switch
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return grade_map_batch(event, context)
