"""Structured JSON logs (AWS Lambda Powertools' formatter), scrubbed of secrets, readable on a terminal.

One JSON object per line: Powertools' keys (level, location, message, timestamp, service, and once a
handler runs: cold_start, function_name, function_request_id, correlation_id, xray_trace_id) plus
`logger`, `request_id` and any `extra` fields. `configure()` gives the `signalcraft_core` and
`handlers` loggers one shared handler; pipeline/observability.py hands the same handler and formatter
to the Powertools `Logger`, so the Lambda context keys it injects reach every module's lines.
Nothing here logs credentials or presigned URLs: storage errors are scrubbed at their source, and every
string field of a log line goes through `scrub` too. On a terminal the same entries print as one
`time LEVEL message key=value ...` line instead of JSON.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from typing import Any

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(LambdaPowertoolsFormatter):
    """Powertools' structured JSON, with `logger` and `request_id`, every string scrubbed before encoding."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("utc", True)
        options.setdefault("use_rfc3339", True)
        options.setdefault("log_record_order", ["level", "message", "logger", "timestamp", "request_id"])
        super().__init__(**options)

    def format(self, record: logging.LogRecord) -> str:
        extra = record.__dict__
        extra.setdefault("logger", record.name)
        if "request_id" not in extra and request_id.get() is not None:
            extra["request_id"] = request_id.get()
        return super().format(record)

    def serialize(self, log: dict[str, Any]) -> str:  # type: ignore[override]
        # Every string in the entry is scrubbed before encoding, so the line stays valid JSON.
        return json.dumps(_scrub_fields(log), default=_scrubbed_str, separators=(",", ":"), ensure_ascii=False)


class LogHandler(logging.StreamHandler):
    """The one stream handler: JSON lines, or `time LEVEL message key=value` when the stream is a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if not isinstance(self.formatter, JsonFormatter) or not _is_terminal(self.stream):
            return line
        return as_text(json.loads(line))


#: Keys a terminal line leaves out (they are the same on every line of an invocation, or noise there).
_QUIET_KEYS = {"level", "message", "timestamp", "logger", "location", "service", "sampling_rate", "cold_start",
               "function_name", "function_memory_size", "function_arn", "function_request_id", "request_id",
               "xray_trace_id", "correlation_id", "exception", "exception_name", "stack_trace", "exception_notes"}


def as_text(entry: dict[str, Any]) -> str:
    """One log entry as a terminal line: `12:00:00.123 INFO  graded key=... grade=CRITICAL`."""
    stamp = str(entry.get("timestamp", ""))[11:23]
    fields = " ".join(f"{k}={printable(v) if isinstance(v, (str, int, float)) else json.dumps(v)}"
                      for k, v in entry.items() if k not in _QUIET_KEYS)
    line = f"{stamp} {entry.get('level', ''):<7} {printable(entry.get('message', ''))}" + (f"  {fields}" if fields else "")
    return line + ("\n" + entry["exception"] if entry.get("exception") else "")


def _is_terminal(stream: Any) -> bool:
    """Whether log lines land on a terminal; a stream without isatty() (local invoke's stderr proxy) follows stderr."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else sys.stderr.isatty()
    except (ValueError, OSError):  # closed stream
        return False


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


_handler: LogHandler | None = None


def configure(level: str | None = None, stream=None) -> LogHandler:
    """Route the `signalcraft_core` and `handlers` loggers through one JSON handler (created once); returns it."""
    global _handler
    if _handler is None:
        _handler = LogHandler(stream or sys.stdout)
        _handler.setFormatter(JsonFormatter())
    elif stream is not None:
        _handler.stream = stream  # not setStream(): that flushes the old, maybe closed, stream
    for name in ("signalcraft_core", "handlers"):
        logger = logging.getLogger(name)
        if _handler not in logger.handlers:
            logger.addHandler(_handler)
        logger.setLevel((level or os.environ.get("LOG_LEVEL") or "INFO").upper())
        logger.propagate = False
    return _handler


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


#: C0 / C1 controls, DEL, line separators, bidi overrides, and the backslash that would make escapes ambiguous.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\\]")


def printable(text: object) -> str:
    """`text` safe to print on one terminal line: controls, line separators and bidi overrides as \\uXXXX.

    Object keys and error messages come from whoever uploaded or sent them; raw, a newline in one
    forges a status line and an ESC sequence rewrites the operator's screen. Backslashes are doubled
    so that a key spelling `\\u000a` cannot pass for an escaped newline.
    """
    return _UNPRINTABLE.sub(lambda m: "\\\\" if m.group() == "\\" else f"\\u{ord(m.group()):04x}", str(text))


def one_line(text: str, limit: int = 300) -> str:
    """First line, URL query strings and credential-looking tokens removed, bounded length."""
    text = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    text = scrub(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
