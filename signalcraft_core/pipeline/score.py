"""Scoring: decoded clips in, one ClipScore per clip out (a grade or an error), batched.

Every front door (CLI, upload handler, sweep, Distributed Map batch) calls `score_payloads`,
`score_decoded` or `score_audio`; the per-event path is the batch path with a batch of one.

Long recordings are graded window by window: a recording longer than 1.5 windows (the model's clip
length, `window_seconds`: 10 s for the shipped models) is cut into windows of exactly that length
(the last one aligned to the end, overlapping its neighbour), every window is graded like a clip,
and the recording's record is the window with the highest final score, each level's values taken
from that same window (so a fault heard in one minute of ten is not averaged away). Recordings up to
1.5 windows are graded whole, as before.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from signalcraft_core.dsp.inputs import featurise
from signalcraft_core.errors import AudioError, ErrorCode, SignalcraftError
from signalcraft_core.io.audio import (
    DEFAULT_AUDIO_CONFIG,
    Audio,
    AudioConfig,
    decode_wav,
)
from signalcraft_core.models.clip_length import window_seconds
from signalcraft_core.models.decision import decide, levels_used, rule_measurements
from signalcraft_core.models.grading import grade
from signalcraft_core.models.model_set import ModelSet

log = logging.getLogger(__name__)

#: A recording up to this many windows long is graded whole (a 12 s clip scores as it always did).
WHOLE_UP_TO_WINDOWS = 1.5


@dataclass(frozen=True)
class ClipScore:
    """The outcome for one recording; `status` is "ok" (graded) or "error" (with a code)."""

    status: str
    grade: str | None = None
    score: float | None = None
    level1_score: float | None = None
    level1_rules: tuple[str, ...] = ()
    rule_messages: tuple[str, ...] = ()
    iforest_raw: float | None = None
    iforest_calibrated: float | None = None  # 0-100; the record's iforest_score column is the raw score
    level2_mse: float | None = None
    level2_score: float | None = None
    band_errors: tuple[float, ...] = ()
    duration_s: float | None = None
    sample_rate_in: int | None = None
    channels_in: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    windows: int = 1  # how many windows of the model's clip length were graded (the record is the worst)

    @classmethod
    def failure(cls, code: ErrorCode | str, message: str, audio: Audio | None = None) -> ClipScore:
        return cls(
            status="error",
            error_code=ErrorCode(code).value,
            error_message=message,
            duration_s=audio.duration_s if audio else None,
            sample_rate_in=audio.sample_rate_in if audio else None,
            channels_in=audio.channels_in if audio else None,
        )


_blas_limited = False


def limit_blas_threads() -> None:
    """One BLAS thread per process, once: the products here are small (one clip: 313 x 1025 @ 1025 x 64),
    and OpenBLAS's spinning worker threads cost more than they save (measured 3-20x on a 2-core
    machine); batching and the download threads keep the cores busy instead. An explicit
    OPENBLAS_NUM_THREADS / OMP_NUM_THREADS in the environment is left alone."""
    global _blas_limited
    if _blas_limited:
        return
    _blas_limited = True
    if os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"):
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return
    threadpool_limits(limits=1, user_api="blas")


_malloc_tuned = False
#: glibc malloc arenas for the whole process (M_ARENA_MAX). By default every download / featurisation
#: thread gets its own arena, each keeping its own high-water mark of freed block temporaries: measured
#: +50 MiB of RSS on a sweep batch of sixteen 10-minute files (274 -> 228 MiB with 2 arenas, same speed).
MALLOC_ARENAS = 2
#: Blocks up to this size come from the heap and are reused when freed (M_MMAP_THRESHOLD), and the heap
#: keeps up to MALLOC_TRIM_BYTES of freed memory (M_TRIM_THRESHOLD), instead of glibc's default of
#: mapping large temporaries afresh and returning them on free. A 10 s clip's FFT temporaries are 1-5
#: MiB; mapped afresh, their pages fault in on every clip (700,000 minor faults per 64 clips, 25-35 % of
#: the featurisation's time). Measured on real clips in batches of 16: 8.1-8.5 -> 6.3 ms wall and
#: 14.4-15.1 -> 11.4 ms CPU per clip, peak RSS unchanged; bench/memory_peaks.py unchanged too (a 64 MiB
#: threshold kept the 10-minute recordings' buffers in the heap: their sweep batch peaked at 307 MiB).
MALLOC_MMAP_BYTES = 8 * 1024 * 1024
MALLOC_TRIM_BYTES = 32 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def tune_malloc() -> None:
    """Set glibc's malloc for this workload once per process, before the download threads start.

    Linux glibc only; a setting given in the environment (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_,
    MALLOC_TRIM_THRESHOLD_) is left alone, glibc reads those itself.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    for variable, option, value in (("MALLOC_ARENA_MAX", _M_ARENA_MAX, MALLOC_ARENAS),
                                    ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MALLOC_MMAP_BYTES),
                                    ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, MALLOC_TRIM_BYTES)):
        if not os.environ.get(variable):
            mallopt(option, value)


def _opt(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def score_audio(model_set: ModelSet, audios: Sequence[Audio], preference: str | None = None) -> list[ClipScore]:
    """Grade decoded clips in one batch: one featurisation, then the one decision path (models/decision.py)."""
    if not audios:
        return []
    limit_blas_threads()
    tune_malloc()
    preference = preference or model_set.preference
    use_level1, use_level2 = levels_used(model_set, preference)
    inputs = featurise([a.samples for a in audios], model_set.profile, audios[0].sample_rate, level2=use_level2,
                       level1=use_level1 and model_set.level1_pipeline is not None,
                       rules=use_level1 and model_set.rules is not None, measurements=rule_measurements(model_set))
    d = decide(model_set, inputs, preference)
    out: list[ClipScore] = []
    for i, audio in enumerate(audios):
        final = float(d.final[i])
        out.append(
            ClipScore(
                status="ok",
                grade=grade(final).value,
                score=round(final, 3),
                level1_score=_opt(d.level1[i]),
                level1_rules=tuple(h.rule for h in d.hits[i]),
                rule_messages=tuple(h.message for h in d.hits[i]),
                iforest_raw=_opt(d.iforest_raw[i]),
                iforest_calibrated=_opt(d.iforest_calibrated[i]),
                level2_mse=_opt(d.level2_mse[i]),
                level2_score=_opt(d.level2[i]),
                band_errors=d.band_errors[i],
                duration_s=audio.duration_s,
                sample_rate_in=audio.sample_rate_in,
                channels_in=audio.channels_in,
            )
        )
    return out


def windows(n: int, window: int) -> list[slice]:
    """Sample ranges graded for a recording of n samples: whole up to 1.5 windows, else windows of `window`
    samples from the start, the last one ending at the end (it overlaps the one before)."""
    if window <= 0 or n <= WHOLE_UP_TO_WINDOWS * window:
        return [slice(0, n)]
    count = math.ceil(n / window)
    return [slice(k * window, (k + 1) * window) for k in range(count - 1)] + [slice(n - window, n)]


def score_payloads(
    model_set: ModelSet,
    payloads: Sequence[bytes | SignalcraftError],
    audio_config: AudioConfig = DEFAULT_AUDIO_CONFIG,
    preference: str | None = None,
) -> list[ClipScore]:
    """Decode and grade raw WAV bytes; a payload that is already an error passes through as one.

    Exactly one ClipScore per payload, in order: decode failures become error scores, and a
    failure of the batch itself is retried clip by clip so one bad clip cannot sink the rest.
    """
    decoded: list[Audio | SignalcraftError] = []
    for payload in payloads:
        if isinstance(payload, SignalcraftError):
            decoded.append(payload)
            continue
        try:
            decoded.append(decode_wav(payload, audio_config))
        except SignalcraftError as exc:
            decoded.append(exc)
    return score_decoded(model_set, decoded, preference)


def score_decoded(
    model_set: ModelSet, items: Sequence[Audio | SignalcraftError], preference: str | None = None
) -> list[ClipScore]:
    """Grade decoded recordings (long ones window by window); an item that is an error passes through as one.

    If the batch fails unexpectedly, each recording is graded alone, so only the one that triggers
    the bug gets an internal_error record (the one place this isolation lives: every caller has it).
    """
    results: list[ClipScore | None] = [None] * len(items)
    decoded: list[tuple[int, Audio]] = []
    for i, item in enumerate(items):
        if isinstance(item, SignalcraftError):
            failure = ClipScore.failure(item.code, item.message)
            if isinstance(item, AudioError):  # what the header said, when it was read before the failure
                failure = replace(failure, duration_s=item.duration_s, sample_rate_in=item.sample_rate_in,
                                  channels_in=item.channels_in)
            results[i] = failure
        else:
            decoded.append((i, item))
    try:
        scored = list(_score_recordings(model_set, decoded, preference))
    except Exception:  # noqa: BLE001 - a bug one clip triggers must not cost the others: each alone
        scored = [_score_alone(model_set, item, preference) for item in decoded]
    for i, score in scored:
        results[i] = score
    return [r if r is not None else ClipScore.failure(ErrorCode.INTERNAL_ERROR, "no result for this clip") for r in results]


def _score_alone(model_set: ModelSet, item: tuple[int, Audio], preference: str | None) -> tuple[int, ClipScore]:
    """One recording graded by itself, after its batch failed: its grade, or its internal-error record."""
    i, audio = item
    try:
        return next(_score_recordings(model_set, [item], preference))
    except Exception as exc:  # noqa: BLE001 - this clip is the culprit: a record says so
        log.exception("scoring failed")
        return i, ClipScore.failure(ErrorCode.INTERNAL_ERROR, f"scoring failed: {type(exc).__name__}: {exc}", audio)


def _score_recordings(model_set: ModelSet, decoded: list[tuple[int, Audio]],
                      preference: str | None) -> Iterator[tuple[int, ClipScore]]:
    """Cut long recordings into windows, grade all windows together, keep each recording's worst window."""
    pieces: list[tuple[int, Audio]] = []
    counts: dict[int, int] = {}
    for i, audio in decoded:
        spans = windows(len(audio.samples), round(window_seconds(model_set) * audio.sample_rate))
        counts[i] = len(spans)
        if len(spans) == 1:
            pieces.append((i, audio))
        else:
            pieces.extend((i, replace(audio, samples=audio.samples[span])) for span in spans)
    per_recording: dict[int, list[ClipScore]] = {}
    for i, score in _score_groups(model_set, pieces, preference):
        per_recording.setdefault(i, []).append(score)
    for i, _audio in decoded:
        scores = per_recording.get(i, [])
        failed = next((s for s in scores if s.status != "ok"), None)
        if failed is not None or len(scores) != counts[i]:
            yield i, failed or ClipScore.failure(ErrorCode.INTERNAL_ERROR, "no result for a window of this clip")
        elif len(scores) == 1:
            yield i, scores[0]
        else:  # the worst window speaks for the recording (the first one on ties)
            worst = max(range(len(scores)), key=lambda k: (scores[k].score, -k))
            yield i, replace(scores[worst], windows=len(scores))


def _score_groups(model_set: ModelSet, decoded: list[tuple[int, Audio]], preference: str | None):
    """Batch clips of equal length together (one STFT each group); a failure is `score_decoded`'s to isolate."""
    groups: dict[int, list[tuple[int, Audio]]] = {}
    for item in decoded:
        groups.setdefault(item[1].samples.shape[0], []).append(item)
    for group in groups.values():
        yield from zip((i for i, _ in group), score_audio(model_set, [a for _, a in group], preference))
