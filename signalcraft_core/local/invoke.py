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
from typing import Any, Callable, Iterable, Iterator

import click

from signalcraft_core.local.environ import patched_environ

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


def _route_logs(stream: Any = None) -> None:
    """The handlers' JSON logs go to `stream`, stderr by default, like `sam local invoke`: stdout stays the result."""
    from signalcraft_core.logs import JsonFormatter, configure

    target = stream if stream is not None else _Stderr()
    for name in ("signalcraft_core", "handlers"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and isinstance(handler.formatter, JsonFormatter):
                handler.stream = target  # not setStream(): that flushes the old, maybe closed, stream
    configure(stream=target)


#: The levels template.yaml's LogLevel allows.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _quiet_logs() -> dict[str, str]:
    """LOG_LEVEL=WARNING when the command running the handler was given -q (sweep, watch) without
    --verbose: quiet means the handlers' INFO lines too, as `demo` does. Variables the command sets
    itself (demo's LOG_LEVEL) still win."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.params.get("quiet") and not ctx.params.get("verbose"):
        return {"LOG_LEVEL": "WARNING"}
    return {}


@contextmanager
def handler_environment(variables: dict[str, str], endpoint_url: str | None = None, *,
                        unset: Iterable[str] = (), log_stream: Any = None) -> Iterator[None]:
    """Set the function's environment for an in-process invoke, and a fresh cold start.

    `unset` names variables hidden from the function for the invoke (e.g. shell credentials when a
    profile is chosen); `log_stream` receives the handlers' logs instead of stderr. Everything is
    restored afterwards.
    """
    from signalcraft_core.io.objects import clear_client_cache
    from signalcraft_core.pipeline.runtime import reset

    updates = {**_quiet_logs(), **{k: v for k, v in variables.items() if v is not None}}
    if endpoint_url:
        updates["AWS_ENDPOINT_URL"] = endpoint_url
    routed = False
    try:
        with patched_environ(updates, unset):   # restored before the caches are dropped and logs rerouted
            reset()
            clear_client_cache()
            try:
                _route_logs(log_stream)
                routed = True
            except ValueError:  # logging's "Unknown level: 'BOGUS'", raised before any handler runs
                raise click.ClickException(f"LOG_LEVEL {os.environ.get('LOG_LEVEL')!r} is not a log level "
                                           f"(one of {', '.join(LOG_LEVELS)})") from None
            yield
    finally:
        reset()
        clear_client_cache()
        if log_stream is not None and routed:
            _route_logs()  # the next invoke in this process logs to stderr again


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
