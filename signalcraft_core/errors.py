"""Typed errors with stable codes: every bad recording becomes an error record, never a traceback."""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """Stable codes written to `error_code` in grade records; users filter on them."""

    # Input: the recording itself.
    NOT_WAV = "not_wav"                  # not a RIFF/WAVE file (text, JPEG, MP3, FLAC ...)
    BAD_HEADER = "bad_header"            # fmt chunk missing or impossible (0 channels, absurd counts, lying sizes)
    TRUNCATED = "truncated"              # header or data cut short
    UNSUPPORTED_FORMAT = "unsupported_format"  # codec / bit depth we do not decode (ADPCM, 12-bit ...)
    UNSUPPORTED_RATE = "unsupported_rate"      # sample rate outside the range we resample from
    EMPTY = "empty"                      # zero bytes or no samples
    TOO_SHORT = "too_short"              # shorter than the configured minimum (1 s)
    TOO_LONG = "too_long"                # longer than the configured maximum (10 min)
    TOO_LARGE = "too_large"              # object bigger than the download limit (checked before download)
    NON_FINITE = "non_finite"            # NaN or inf samples in a float WAV
    OUT_OF_RANGE = "out_of_range"        # float samples far beyond full scale (|x| > 1e3, e.g. 1e20): garbage or a wrong scale
    SILENT = "silent"                    # digital silence: nothing to grade
    # Environment.
    NOT_FOUND = "not_found"              # object or file vanished before we read it
    STORAGE_ERROR = "storage_error"      # object store failed after retries
    MODEL_ERROR = "model_error"          # no usable model set (missing, hash mismatch)
    INTERNAL_ERROR = "internal_error"    # a bug: logged with a traceback, still one record
    CONFIG_ERROR = "config_error"        # a handler setting is invalid: raised at the cold start, never a record


class SignalcraftError(Exception):
    """An expected failure with a stable code and a one-line, user-facing message."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class AudioError(SignalcraftError):
    """The recording cannot be decoded into a gradeable signal.

    A failure after the fmt chunk was read (too short, silent, NaN samples, an unsupported rate ...)
    also says what the header declared, so its error record keeps the recording's rate, channels and
    duration; None where the decoder never learnt them (duration: a data chunk cut short).
    """

    sample_rate_in: int | None = None
    channels_in: int | None = None
    duration_s: float | None = None


class ModelError(SignalcraftError):
    """A model set is missing, incomplete or fails its integrity check."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.MODEL_ERROR, message)


class StorageError(SignalcraftError):
    """The object store or file system could not give us the bytes."""


class ConfigError(SignalcraftError, ValueError):
    """A setting (an environment variable) has a value we cannot use; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(ErrorCode.CONFIG_ERROR, f"{variable} {problem}")
        self.variable = variable
