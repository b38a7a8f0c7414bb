"""Module-level state that survives warm invocations: config, S3 client, model store, grade sink.

Built on first use (the cold start) and reused afterwards; `reset()` drops it (tests, config
changes). Model sets themselves are cached inside the ModelStore with their ETag re-check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from signalcraft_core.config import Settings
from signalcraft_core.errors import ModelError
from signalcraft_core.logs import configure
from signalcraft_core.models.model_store import ModelStore


@dataclass
class Runtime:
    config: Settings
    client: Any
    store: ModelStore

    def sink(self, bucket: str | None = None):
        from signalcraft_core.pipeline.sinks import S3GradeSink

        target = bucket or self.config.output_bucket
        if not target:
            raise ValueError("OUTPUT_BUCKET is not set: where should grade records go?")
        return S3GradeSink(self.client, target, self.config.output_prefix)


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process-wide runtime, created on the cold start from the environment."""
    global _runtime
    with _lock:
        if _runtime is None:
            from signalcraft_core.io.objects import s3_client

            configure()
            config = Settings.from_env()
            client = s3_client()
            store = ModelStore(config.model_uri, check_interval_s=config.model_check_seconds,
                               client=client, key_pattern=config.key_pattern)
            # A MODEL_URI that names no model set is a configuration error: raise now (Lambda retries,
            # the CLI prints one line) instead of writing a final model_error record per recording.
            if not store.set_names():
                raise ModelError(f"no model sets under {store.uri} (MODEL_URI)")
            _runtime = Runtime(config=config, client=client, store=store)
        return _runtime


def reset() -> None:
    """Forget the cached runtime (the next invocation is a cold start again)."""
    global _runtime
    with _lock:
        _runtime = None
