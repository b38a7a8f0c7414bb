"""Run a Lambda handler in this process the way `sam local invoke` does: its environment, a context, its logs.

Local tools (CLI, demo, MinIO webhook) call the deployed handlers through here, by the handler
string template.yaml gives them, so nothing local re-implements a handler.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

#: template.yaml's function ids and their handlers (the template is the source; a test keeps these equal).
FUNCTIONS = {
    "ScoreUploadFunction": "handlers.score_upload.handler",
    "FleetSweepFunction": "handlers.fleet_sweep.handler",
    "SweepBatchFunction": "handlers.sweep_batch.handler",
}


class LocalContext:
    """The bits of the Lambda context object our handlers read."""

    def __init__(self, function_name: str = "local", timeout_s: int = 900,
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name
        self.on_progress = on_progress  # not a Lambda attribute: local runs report progress through it
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _Stderr:
    """sys.stderr looked up at each write (click's test runner swaps the stream per invocation)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _logs_to_stderr() -> None:
    """The handlers' JSON logs go to stderr here, like `sam local invoke`: stdout stays the result."""
    from signalcraft_core.logs import JsonFormatter, configure

    for name in ("signalcraft_core", "handlers"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and isinstance(handler.formatter, JsonFormatter):
                handler.stream = _Stderr()  # not setStream(): that flushes the old, maybe closed, stream
    configure(stream=_Stderr())


@contextmanager
def handler_environment(variables: dict[str, str], endpoint_url: str | None = None) -> Iterator[None]:
    """Set the function's environment for an in-process invoke, and a fresh cold start."""
    from signalcraft_core.io.objects import clear_client_cache
    from signalcraft_core.pipeline.runtime import reset

    updates = {k: v for k, v in variables.items() if v is not None}
    if endpoint_url:
        updates["AWS_ENDPOINT_URL"] = endpoint_url
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    reset()
    clear_client_cache()
    _logs_to_stderr()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset()


def load_handler(path: str) -> Callable[[Any, Any], Any]:
    """The function a `module.function` handler string names, imported the way the Lambda runtime does.

    The package never imports `handlers` statically: local tools reach a handler by its name in
    template.yaml (or FUNCTIONS), exactly like `sam local invoke`.
    """
    module_name, _, func = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError, ValueError) as exc:
        raise click.ClickException(f"handler {path!r} cannot be imported: {exc}") from None
