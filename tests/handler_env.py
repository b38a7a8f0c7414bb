"""Test helpers shared by the handler tests: the handlers' environment, and an S3 call log."""

from __future__ import annotations

import numpy as np

from signalcraft_core.io.audio import encode_wav
from signalcraft_core.pipeline import runtime

#: Every variable the handlers read that a test may have set; cleared before each configuration.
HANDLER_VARIABLES = (
    "MODEL_URI", "MODEL_PREFERENCE", "MAX_OBJECT_BYTES", "BATCH_SIZE", "KEY_PATTERN",
    "OUTPUT_PREFIX", "SUFFIXES", "SWEEP_BUCKET", "SWEEP_PREFIX",
)


def configure_handlers(monkeypatch, endpoint_url: str, output_bucket: str, log_level: str = "WARNING") -> None:
    """The environment template.yaml gives the functions, pointed at a loopback endpoint; next call is a cold start."""
    for name in HANDLER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint_url)
    monkeypatch.setenv("OUTPUT_BUCKET", output_bucket)
    monkeypatch.setenv("OUTPUT_PREFIX", "grades/")
    monkeypatch.setenv("LOG_LEVEL", log_level)
    runtime.reset()


def clip(seed: int, seconds: float = 1.1, rate: int = 8000) -> bytes:
    """A short, cheap-to-grade WAV (tone plus noise, distinct per seed) for the fleet tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    return encode_wav(0.2 * np.sin(2 * np.pi * (100 + seed) * t) + 0.05 * rng.standard_normal(t.size), rate)


class CallLog:
    """The S3 operations a client sends (a botocore event hook: observed, nothing is patched)."""

    def __init__(self, client) -> None:
        self.client = client
        self.operations: list[str] = []
        self.buckets: list[str | None] = []   # the Bucket parameter of each operation, in step with `operations`

    def __call__(self, model, params=None, **_) -> None:   # provide-client-params: the API call's own parameters
        self.operations.append(model.name)
        self.buckets.append((params or {}).get("Bucket"))

    def count(self, operation: str, bucket: str) -> int:
        """How many `operation` calls went to `bucket`."""
        return sum(1 for op, b in zip(self.operations, self.buckets) if op == operation and b == bucket)

    def __enter__(self) -> "CallLog":
        self.client.meta.events.register("provide-client-params.s3", self)
        return self

    def __exit__(self, *exc) -> None:
        self.client.meta.events.unregister("provide-client-params.s3", self)
