"""Distributed Map child: grade one ItemBatcher batch of listed objects."""

from __future__ import annotations

from typing import Any

from signalcraft_core.pipeline.serverless import grade_map_batch


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return grade_map_batch(event, context)
