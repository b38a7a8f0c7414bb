"""Structured JSON logs with the request id (Lambda Powertools style), safe to ship anywhere.

One JSON object per line: level, message, logger, timestamp, request_id and any `extra` fields.
Nothing here logs credentials or presigned URLs: storage errors are scrubbed at their source, and every
string field of a log line goes through `scrub` too.
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
        # Every string in the entry is scrubbed before encoding, so the line stays valid JSON.
        return json.dumps(_scrub_fields(entry), default=_scrubbed_str)


def _scrubbed_str(value: object) -> str:
    return scrub(str(value))


def _scrub_fields(value: object, depth: int = 0) -> object:
    """Strings scrubbed, values under secret-looking keys redacted, through dicts and lists (bounded depth)."""
    if isinstance(value, str):
        return scrub(value)
    if depth > 8:
        return _scrubbed_str(value)
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _SECRET_KEY.fullmatch(k) and value[k] is not None
                else _scrub_fields(value[k], depth + 1) for k in value}
    if isinstance(value, (list, tuple)):
        return [_scrub_fields(v, depth + 1) for v in value]
    return value


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


#: A URL's query string (presigned URLs carry X-Amz-Credential / X-Amz-Signature there): dropped.
_URL_QUERY = re.compile(r"(https?://[^\s?\"'<>]*)\?[^\s\"'<>]*")
#: A URL's user:password@ part: replaced.
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@:\"']+(?::[^\s/@\"']*)?@")
#: `name = value`, `name: value`, `"name": "value"`, `name=value&...` where the name says it is a secret
#: (aws_secret_access_key, X-Amz-Signature, auth_token, MINIO_ROOT_PASSWORD, Authorization, ...).
_SECRET_NAME = (r"[A-Za-z0-9_.-]*?(?:secret|token|password|passwd|signature|credential|authorization"
                r"|api[_-]?key|private[_-]?key)[A-Za-z0-9_.-]*")
_SECRETS = re.compile(
    r"(?i)(?P<name>(?:\\?[\"'])?\b" + _SECRET_NAME + r"(?:\\?[\"'])?\s*[=:]\s*)"
    r"(?P<value>(?:bearer|basic|token|aws4-hmac-sha256)\s+[^\s,;&\"'<>]+"  # Authorization: Bearer <token>
    r"|\\\"(?:[^\"\\]|\\[^\"])*\\\"|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"  # quoted; \"...\" inside a JSON string
    r"|[^\s,;&\"'<>(){}\[\]]+)"  # bare, up to the next separator
)
_SECRET_KEY = re.compile(_SECRET_NAME, re.IGNORECASE)
#: AWS access key ids (long-term AKIA..., temporary ASIA...), wherever they appear.
_ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{12,}")
REDACTED = "[redacted]"


def scrub(text: str) -> str:
    """`text` with URL query strings, URL passwords, named secrets and AWS access key ids removed."""
    text = _URL_QUERY.sub(r"\1", text)
    text = _URL_USERINFO.sub(r"\1" + REDACTED + "@", text)
    text = _SECRETS.sub(lambda m: m.group("name") + REDACTED, text)
    return _ACCESS_KEY_ID.sub(REDACTED, text)


def one_line(text: str, limit: int = 300) -> str:
    """First line, URL query strings and credential-looking tokens removed, bounded length."""
    text = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    text = scrub(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
