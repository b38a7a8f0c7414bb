"""One config reader: every setting validated once, a bad value names its variable."""

from __future__ import annotations

import pytest

from signalcraft_core.config import Settings
from signalcraft_core.errors import ConfigError, ErrorCode


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert (s.output_bucket, s.output_prefix, s.preference, s.suffixes, s.batch_size) == (None, "grades/", None,
                                                                                         (".wav",), 16)
    assert s.key_pattern is None and s.sweep_prefix == "" and s.level2_engine == "auto"


def test_values_are_parsed():
    s = Settings.from_env({"OUTPUT_BUCKET": "g", "OUTPUT_PREFIX": "/out", "MODEL_PREFERENCE": "level2",
                           "SUFFIXES": ".wav, .WAV ,", "BATCH_SIZE": "4", "MAX_SECONDS": "30",
                           "KEY_PATTERN": r"^(?P<machine_type>\w+)/", "SWEEP_OVERLAP_HOURS": "6"})
    assert s.output_prefix == "out/" and s.preference == "level2" and s.suffixes == (".wav", ".WAV")
    assert s.batch_size == 4 and s.max_seconds == 30.0 and s.sweep_overlap_hours == 6.0
    assert s.key_pattern.match("pump/x.wav").group("machine_type") == "pump"


@pytest.mark.parametrize("env, variable", [
    ({"KEY_PATTERN": "(?P<site>"}, "KEY_PATTERN"),
    ({"KEY_PATTERN": r"(?P<site>\w+)"}, "KEY_PATTERN"),       # no machine_type group: no model could be chosen
    ({"MODEL_PREFERENCE": "best"}, "MODEL_PREFERENCE"),
    ({"BATCH_SIZE": "many"}, "BATCH_SIZE"),
    ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),
    ({"MAX_SECONDS": "nan"}, "MAX_SECONDS"),
    ({"SIGNALCRAFT_LEVEL2_ENGINE": "gpu"}, "SIGNALCRAFT_LEVEL2_ENGINE"),
])
def test_a_bad_value_is_a_config_error_naming_the_variable(env, variable):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert err.value.variable == variable and err.value.code == ErrorCode.CONFIG_ERROR
    assert str(err.value).startswith(f"config_error: {variable} ") and "\n" not in str(err.value)


def test_the_upload_handler_raises_a_config_error_not_a_model_error(monkeypatch):
    from signalcraft_core.pipeline import runtime
    from signalcraft_core.pipeline.serverless import grade_upload_event

    monkeypatch.setenv("OUTPUT_BUCKET", "grades")
    monkeypatch.setenv("KEY_PATTERN", "([")
    runtime.reset()
    try:
        with pytest.raises(ConfigError, match="KEY_PATTERN"):
            grade_upload_event({"Records": []})
    finally:
        runtime.reset()
