"""Why: a recording refused after its header was read still says what it was (rate, channels, duration) in its record."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from signalcraft_core.errors import ErrorCode
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.models.model_set import load_model_set
from signalcraft_core.pipeline.score import score_payloads

PUMP_MODELS = Path(__file__).resolve().parents[1] / "models" / "pump"


def _tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    x = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(int(rate * seconds)) / rate)
    return np.repeat(x[:, None], channels, 1)


def _with(x: np.ndarray, index: int, value: float) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


def _rate(wav: bytes, rate: int) -> bytes:
    """`wav` (a plain 44-byte header) declaring another sample rate."""
    return wav[:24] + struct.pack("<I", rate) + wav[28:]


# (payload, expected code, (duration_s, sample_rate_in, channels_in))
CASES = {
    "too_short": (encode_wav(_tone(16000, 0.5), 16000), ErrorCode.TOO_SHORT, (0.5, 16000, 1)),
    "too_long": (encode_wav(_tone(4000, 601.0, 2), 4000, "pcm8"), ErrorCode.TOO_LONG, (601.0, 4000, 2)),
    "silent": (encode_wav(np.zeros((96000, 2)), 48000), ErrorCode.SILENT, (2.0, 48000, 2)),
    "non_finite": (encode_wav(_with(_tone(8000, 1.5), 100, np.nan), 8000, "float32"), ErrorCode.NON_FINITE,
                   (1.5, 8000, 1)),
    "out_of_range": (encode_wav(_with(_tone(22050, 2.0, 3), 7, 1e20), 22050, "float64"), ErrorCode.OUT_OF_RANGE,
                     (2.0, 22050, 3)),
    "unsupported_rate": (encode_wav(_tone(2000, 3.0), 2000), ErrorCode.UNSUPPORTED_RATE, (3.0, 2000, 1)),
    # The data chunk declares more than the file holds: the duration is unknown.
    "truncated": (encode_wav(_tone(16000, 2.0), 16000)[:-1000], ErrorCode.TRUNCATED, (None, 16000, 1)),
    "rate_1_hz": (encode_wav(_tone(8000, 0.5), 1), ErrorCode.UNSUPPORTED_RATE, (4000.0, 1, 1)),
    # A rate no int32 record column holds is garbage, not a fact (it would fail the batch's Parquet write).
    "rate_2**32-1": (_rate(encode_wav(_tone(8000, 0.5), 8000), 2**32 - 1), ErrorCode.UNSUPPORTED_RATE,
                     (None, None, 1)),
    # Nothing trustworthy was read: the record says nothing about the recording.
    "not_wav": (b"hello, this is text", ErrorCode.NOT_WAV, (None, None, None)),
    "zero_channels": (b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 0, 16000, 0, 0, 16)
                      + b"data\0\0\0\0", ErrorCode.BAD_HEADER, (None, None, None)),
}


@pytest.fixture(scope="module")
def model_set():
    if not (PUMP_MODELS / "manifest.json").is_file():
        pytest.skip("shipped pump models not present")
    return load_model_set(PUMP_MODELS)


def test_decode_error_records_keep_what_the_header_said(model_set) -> None:
    names = list(CASES)
    results = score_payloads(model_set, [CASES[name][0] for name in names])
    for name, result in zip(names, results):
        _payload, code, (duration, rate, channels) = CASES[name]
        assert (result.status, result.error_code) == ("error", code.value), (name, result.error_message)
        got = (result.duration_s, result.sample_rate_in, result.channels_in)
        assert got == ((pytest.approx(duration) if duration is not None else None), rate, channels), name
