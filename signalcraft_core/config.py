"""The one place that reads the environment: every handler setting, validated once at the cold start.

template.yaml sets these variables; `signalcraft` local commands set the same ones. A bad value is a
`ConfigError` naming the variable (the function fails its invocation and Lambda retries; the CLI
prints one line), never a per-recording error record.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from signalcraft_core.errors import ConfigError

#: Which level decides the grade: both (the more severe), or one of them.
PREFERENCES = ("hybrid", "level1", "level2")
#: What the nightly sweep grades: what is new since the last sweep, or everything again.
SWEEP_MODES = ("incremental", "backfill")
#: LOG_LEVEL values (the first is the default).
LOG_LEVELS = ("INFO", "DEBUG", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """The handlers' settings (names are the environment variables, lower-cased)."""

    output_bucket: str | None = None
    output_prefix: str = "grades/"
    model_uri: str | None = None
    preference: str | None = None  # None: each model set's own (its manifest's `preference`)
    suffixes: tuple[str, ...] = (".wav",)
    max_bytes: int = 256 * 1024 * 1024
    max_seconds: float = 600.0
    batch_size: int = 16  # clips scored together: batching gains level off, memory keeps growing
    io_threads: int = 8
    model_check_seconds: float = 300.0
    key_pattern: re.Pattern[str] | None = None
    sweep_bucket: str | None = None
    sweep_prefix: str = ""
    sweep_overlap_hours: float = 24.0
    level2_engine: str = "auto"
    # -- operations (issue 15): Powertools logs / metrics / tracing, machine alerts
    log_level: str = "INFO"
    service_name: str = "signalcraft-scoring"
    metrics_namespace: str = "SignalCraft"
    trace_enabled: bool = False
    in_lambda: bool = False  # AWS_LAMBDA_RUNTIME_API is set: EMF to stdout; otherwise metrics go to the logs
    alert_topic_arn: str | None = None
    alert_event_bus: str | None = None
    alerts_file: str | None = None  # local runs: JSON lines; None = ~/.signalcraft/alerts.jsonl
    alert_max_age_hours: float = 48.0  # a CRITICAL grade of an older recording (backfill) pages nobody
    alert_trend_days: int = 7  # calendar days of daily medians the trend test looks at

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            output_bucket=env.get("OUTPUT_BUCKET") or None,
            output_prefix=_prefix(env.get("OUTPUT_PREFIX", cls.output_prefix)),
            model_uri=env.get("MODEL_URI") or None,
            preference=_choice(env, "MODEL_PREFERENCE", PREFERENCES) if env.get("MODEL_PREFERENCE") else None,
            suffixes=tuple(s.strip() for s in env.get("SUFFIXES", ".wav").split(",") if s.strip()),
            max_bytes=_number(env, "MAX_OBJECT_BYTES", cls.max_bytes, int, 0),
            max_seconds=_number(env, "MAX_SECONDS", cls.max_seconds, float, 1),
            batch_size=_number(env, "BATCH_SIZE", cls.batch_size, int, 1),
            io_threads=_number(env, "IO_THREADS", cls.io_threads, int, 1),
            model_check_seconds=_number(env, "MODEL_CHECK_SECONDS", cls.model_check_seconds, float, 0),
            key_pattern=key_pattern(env.get("KEY_PATTERN") or None),
            sweep_bucket=env.get("SWEEP_BUCKET") or None,
            sweep_prefix=env.get("SWEEP_PREFIX", ""),
            sweep_overlap_hours=_number(env, "SWEEP_OVERLAP_HOURS", cls.sweep_overlap_hours, float, 0),
            level2_engine=level2_engine(env),
            log_level=_choice(env, "LOG_LEVEL", LOG_LEVELS, upper=True),
            service_name=env.get("POWERTOOLS_SERVICE_NAME") or cls.service_name,
            metrics_namespace=env.get("POWERTOOLS_METRICS_NAMESPACE") or cls.metrics_namespace,
            trace_enabled=not _flag(env, "POWERTOOLS_TRACE_DISABLED", default=True),
            in_lambda=bool(env.get("AWS_LAMBDA_RUNTIME_API")),
            alert_topic_arn=env.get("ALERT_TOPIC_ARN") or None,
            alert_event_bus=env.get("ALERT_EVENT_BUS") or None,
            alerts_file=env.get("SIGNALCRAFT_ALERTS_FILE") or None,
            alert_max_age_hours=_number(env, "ALERT_MAX_AGE_HOURS", cls.alert_max_age_hours, float, 0),
            alert_trend_days=_number(env, "ALERT_TREND_DAYS", cls.alert_trend_days, int, 3),
        )


def configured_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """SIGNALCRAFT_CACHE_DIR when set: a folder the operator chose, so a refused one is an error, never replaced."""
    value = (os.environ if env is None else env).get("SIGNALCRAFT_CACHE_DIR")
    return Path(value) if value else None


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """SIGNALCRAFT_CACHE_DIR, else a per-user folder in /tmp (another local user cannot pre-create ours
    unnoticed: the model store refuses a folder it does not own privately, then uses `fallback_cache_dir`)."""
    return configured_cache_dir(env) or Path(f"/tmp/signalcraft-models-{os.geteuid()}")


def fallback_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the model cache goes when the default /tmp folder is refused (another user pre-created it):
    $XDG_RUNTIME_DIR/signalcraft-models (the login's own 0700 folder), else a new private mkdtemp folder.

    Without it, one `mkdir /tmp/signalcraft-models-<uid>` by a neighbour would fail every S3 model load.
    """
    import tempfile

    runtime_dir = (os.environ if env is None else env).get("XDG_RUNTIME_DIR")
    if runtime_dir and Path(runtime_dir).is_absolute():
        return Path(runtime_dir) / "signalcraft-models"
    return Path(tempfile.mkdtemp(prefix=f"signalcraft-models-{os.geteuid()}-"))


def level2_engine(env: Mapping[str, str] | None = None) -> str:
    """SIGNALCRAFT_LEVEL2_ENGINE: `auto` (numpy for the exported layout) or `torch` (always torch.jit.load)."""
    return _choice(os.environ if env is None else env, "SIGNALCRAFT_LEVEL2_ENGINE", ("auto", "torch"))


def key_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """KEY_PATTERN compiled; it must name a `machine_type` group (the model set is chosen by it)."""
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError("KEY_PATTERN", f"{pattern!r} is not a valid regular expression ({exc})") from None
    if "machine_type" not in compiled.groupindex:
        raise ConfigError("KEY_PATTERN", f"{pattern!r} has no (?P<machine_type>...) group")
    return compiled


def _prefix(value: str) -> str:
    value = (value or "").lstrip("/")
    return value if not value or value.endswith("/") else value + "/"


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], upper: bool = False) -> str:
    value = env.get(name) or choices[0]
    value = value.strip().upper() if upper else value
    if value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, not {value!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A true/false setting (Powertools' spelling: true/false, 1/0, yes/no, on/off)."""
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on", "y", "t"):
        return True
    if raw in ("0", "false", "no", "off", "n", "f"):
        return False
    raise ConfigError(name, f"must be true or false, not {env.get(name)!r}")


def _number(env: Mapping[str, str], name: str, default: float, kind: type, minimum: float) -> Any:
    """A numeric setting; a typo names the variable (not a bare int() error)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(name, f"must be {'an integer' if kind is int else 'a number'}, not {raw!r}") from None
    if not value >= minimum:  # also refuses NaN
        raise ConfigError(name, f"must be >= {minimum:g}, not {raw!r}")
    return value
