"""Structured JSON logs with the request id (Lambda Powertools style), safe to ship anywhere.

One JSON object per line: level, message, logger, timestamp, request_id and any `extra` fields.
Nothing here logs credentials or presigned URLs; storage errors are scrubbed at their source.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
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


_URL_QUERY = re.compile(r"(https?://[^\s?\"']*)\?[^\s\"']*")
_SECRETS = re.compile(r"(AKIA|ASIA)[A-Z0-9]{12,}|(?i:(signature|credential|token|secret)[=:]\s*)\S+")


def one_line(text: str, limit: int = 300) -> str:
    """First line, URL query strings and credential-looking tokens removed, bounded length."""
    text = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    text = _URL_QUERY.sub(r"\1", text)
    text = _SECRETS.sub("[redacted]", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
