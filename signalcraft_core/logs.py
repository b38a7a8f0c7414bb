"""Structured JSON logs with the request id (Lambda Powertools style), safe to ship anywhere.

One JSON object per line: level, message, logger, timestamp, request_id and any `extra` fields.
Nothing here logs credentials or presigned URLs; storage errors are scrubbed at their source.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "request_id": request_id.get(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str | None = None, stream=None) -> None:
    """Route the `signalcraft_core` and `handlers` loggers through the JSON formatter, once."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    for name in ("signalcraft_core", "handlers"):
        logger = logging.getLogger(name)
        if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
            logger.addHandler(handler)
        logger.setLevel((level or os.environ.get("LOG_LEVEL") or "INFO").upper())
        logger.propagate = False
