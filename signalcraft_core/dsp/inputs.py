"""Everything both levels read from a batch of clips, computed once: training, evaluation and scoring share it.

`ClipInputs` holds, per clip, the Level-2 feature vector (the profile's pooled log-mel), the Level-1
descriptor vector and the rules' signal statistics. Training featurises its clips once and slices
them per fold; scoring featurises each batch; the decision (models/decision.py) only reads them.

The rules' statistics come in two recipes (dsp/signal_stats.py): v2 reads the STFT the descriptors
(and a `default` or `seed` profile's log-mel) read, so one spectral pass per clip serves all three;
v1, which older model sets were trained on, runs its own full-length FFTs in tasks of their own.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from signalcraft_core.dsp.descriptors import (
    BYTES_PER_SAMPLE as DESCRIPTOR_BYTES_PER_SAMPLE,
)
from signalcraft_core.dsp.descriptors import (
    HOP_LENGTH,
    LEVEL1_FEATURE_NAMES,
    N_FFT,
    descriptors_from_spectrum,
    level1_features_batch,
)
from signalcraft_core.dsp.features import (
    FeatureConfig,
    clip_features,
    features_from_spectrum,
    iter_equal_length_batches,
    spectral_pass,
)
from signalcraft_core.dsp.signal_stats import (
    BYTES_PER_SAMPLE as STATS_BYTES_PER_SAMPLE,
)
from signalcraft_core.dsp.signal_stats import (
    MAX_GROUP_BYTES as MAX_STATS_GROUP_BYTES,
)
from signalcraft_core.dsp.signal_stats import (
    CURRENT_MEASUREMENTS,
    MEASUREMENTS_V1,
    MEASUREMENTS_V2,
    SignalStats,
    check_signal,
    measurements_from_spectrum,
    signal_stats_batch,
)

MAX_WORKING_BYTES = 64 * 1024 * 1024
"""Cap on the working sets of all groups in flight at once (four 10 s clips on one thread, two per thread on two)."""

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


#: Lambda's CPU share grows with the function's memory: one vCPU's worth at 1,769 MB (AWS Lambda docs).
LAMBDA_MB_PER_VCPU = 1769


def default_threads() -> int:
    """Featurisation threads: the cores this process may use, at most 2 (each holds one capped group).

    In Lambda the guest sees two cores at any memory size, but a function of less than about
    1.5 vCPU's worth of memory (the template's 512 and 1024 MB) gets a fraction of one: a second
    thread there only contends for it (about 1.7 ms CPU more per clip measured on two real cores,
    12 % of the featurisation). So the memory size, when Lambda gives it, caps the count.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    memory_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if memory_mb.isdigit():
        cores = min(cores, max(1, round(int(memory_mb) / LAMBDA_MB_PER_VCPU)))
    return max(1, min(2, cores))


def _pool(threads: int) -> ThreadPoolExecutor:
    """One pool per size per process (numpy releases the GIL in its FFTs and array loops, so threads share the cores)."""
    with _pools_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="signalcraft-dsp")
        return _pools[threads]


@dataclass
class ClipInputs:
    """Per-clip inputs of both levels; a part a model set does not use is None."""

    level2: np.ndarray | None          # (n, profile.dim) pooled log-mel features
    level1: np.ndarray | None          # (n, len(LEVEL1_FEATURE_NAMES)) descriptors
    stats: list[SignalStats] | None    # n rule measurements
    seconds: np.ndarray | None = None  # (n,) clip lengths: a clip much shorter than the window has calibrations of its own

    def __len__(self) -> int:
        for part in (self.level2, self.level1, self.stats):
            if part is not None:
                return len(part)
        return 0

    def take(self, idx: Sequence[int] | np.ndarray) -> ClipInputs:
        """The rows `idx` (in that order): folds reuse features instead of decoding clips again."""
        rows = np.asarray(idx, dtype=np.intp)
        return ClipInputs(
            level2=None if self.level2 is None else self.level2[rows],
            level1=None if self.level1 is None else self.level1[rows],
            stats=None if self.stats is None else [self.stats[i] for i in rows],
            seconds=None if self.seconds is None else self.seconds[rows],
        )


def shares_spectrum(profile: FeatureConfig) -> bool:
    """True when the profile's log-mel and the Level-1 descriptors can read one STFT (same n_fft and hop)."""
    return profile.n_fft == N_FFT and profile.hop_length == HOP_LENGTH


SpectralResult = tuple[np.ndarray | None, np.ndarray | None, list[SignalStats] | None]


def _spectral_task(signals: Sequence[np.ndarray], profile: FeatureConfig, sample_rate: int, level2: bool,
                   level1: bool, stats: bool) -> SpectralResult:
    """One group of equal-length clips: what is asked of the log-mel, the descriptors and the v2 rule
    statistics, all from one STFT (n_fft 2048, hop 512) when the profile's frames are those."""
    shared_l2 = level2 and shares_spectrum(profile)
    if not (stats or (level1 and shared_l2)):   # nothing to share: each part from its own pass
        return (clip_features(signals, profile) if level2 else None,
                level1_features_batch(signals, sample_rate) if level1 else None, None)
    if stats:
        for x in signals:
            check_signal(x, sample_rate)
    l2 = (np.empty((len(signals), profile.dim), dtype=np.float32) if shared_l2
          else clip_features(signals, profile) if level2 else None)
    l1 = np.empty((len(signals), len(LEVEL1_FEATURE_NAMES)), dtype=np.float64) if level1 else None
    measured: list[SignalStats | None] = [None] * len(signals)
    for idx, batch in iter_equal_length_batches(signals, DESCRIPTOR_BYTES_PER_SAMPLE):   # validates the clips
        spectrum = spectral_pass(batch, N_FFT, HOP_LENGTH)
        if shared_l2:
            l2[idx] = features_from_spectrum(spectrum, profile)
        if level1:
            l1[idx] = descriptors_from_spectrum(batch, spectrum, sample_rate)
        if stats:
            for i, value in zip(idx, measurements_from_spectrum(batch, spectrum, sample_rate)):
                measured[i] = value
        del spectrum
    return l2, l1, measured if stats else None


def _groups(signals: Sequence[np.ndarray], bytes_per_sample: int, max_bytes: int, spread: int = 1) -> list[list[int]]:
    """Indices of equal-length clips, in groups whose working set stays under max_bytes (at least one clip),
    and at least `spread` groups of each length that has as many clips (work for every thread)."""
    by_length: dict[int, list[int]] = {}
    for i, x in enumerate(signals):
        by_length.setdefault(int(np.shape(x)[0]) if np.ndim(x) == 1 else -1 - i, []).append(i)
    out = []
    for length, idx in by_length.items():
        per_group = max(1, min(max_bytes // max(1, abs(length) * bytes_per_sample), -(-len(idx) // spread)))
        out.extend(idx[s:s + per_group] for s in range(0, len(idx), per_group))
    return out


def featurise(signals: Sequence[np.ndarray], profile: FeatureConfig, sample_rate: int = 16000, *,
              level2: bool = True, level1: bool = True, rules: bool = True,
              measurements: int = CURRENT_MEASUREMENTS, threads: int | None = None) -> ClipInputs:
    """The inputs of every clip, computed by `threads` threads (default: `default_threads()`).

    `measurements`: the rules' recipe (the model set's `rule_measurements`; training: the current one).
    One STFT per group of clips (n_fft 2048, hop 512) serves the descriptors, the v2 rule statistics
    and the log-mel of a profile with those frames (`default` and `seed`), with the same numbers as
    separate passes. The work is split into groups of equal-length clips, each capped at
    MAX_WORKING_BYTES / threads and at least one per thread, and run on a small thread pool (numpy's
    FFT is single-threaded, so the pool is what uses the cores): at most `threads` groups are in
    flight, so memory stays bounded. v1 statistics run as groups of their own, interleaved.
    """
    if rules and measurements not in (MEASUREMENTS_V1, MEASUREMENTS_V2):
        raise ValueError(f"unknown measurement version {measurements!r}")
    threads = default_threads() if threads is None else max(1, int(threads))
    n = len(signals)
    budget = MAX_WORKING_BYTES // threads   # per group: `threads` groups in flight stay within MAX_WORKING_BYTES
    shared_stats = rules and measurements == MEASUREMENTS_V2
    tasks: list[tuple[str, list[int], Callable[[], Any]]] = []
    if level1 or level2 or shared_stats:
        for idx in _groups(signals, DESCRIPTOR_BYTES_PER_SAMPLE, budget, threads):
            part = [signals[i] for i in idx]
            tasks.append(("spectral", idx, functools.partial(_spectral_task, part, profile, sample_rate, level2,
                                                             level1, shared_stats)))
    if rules and not shared_stats:
        stats_tasks = [("rules", idx, functools.partial(signal_stats_batch, [signals[i] for i in idx], sample_rate,
                                                        MEASUREMENTS_V1))
                       for idx in _groups(signals, STATS_BYTES_PER_SAMPLE, min(budget, MAX_STATS_GROUP_BYTES))]
        # Interleave, so two threads start on different kinds of work and finish together.
        merged: list[tuple[str, list[int], Callable[[], Any]]] = []
        for k in range(max(len(tasks), len(stats_tasks))):
            merged.extend(t[k] for t in (tasks, stats_tasks) if k < len(t))
        tasks = merged
    if threads == 1 or len(tasks) <= 1:
        results = [fn() for _, _, fn in tasks]
    else:
        futures = [_pool(threads).submit(fn) for _, _, fn in tasks]
        results = [f.result() for f in futures]
    l2 = np.empty((n, profile.dim), dtype=np.float32) if level2 else None
    l1 = np.empty((n, len(LEVEL1_FEATURE_NAMES)), dtype=np.float64) if level1 else None
    stats: list[SignalStats | None] | None = [None] * n if rules else None
    for (kind, idx, _), result in zip(tasks, results):
        if kind == "rules":
            for i, value in zip(idx, result):
                stats[i] = value
            continue
        a, b, c = result
        if l2 is not None:
            l2[idx] = a
        if l1 is not None:
            l1[idx] = b
        if c is not None:
            for i, value in zip(idx, c):
                stats[i] = value
    seconds = np.array([np.shape(x)[0] / sample_rate if np.ndim(x) == 1 else np.nan for x in signals], dtype=np.float64)
    return ClipInputs(level2=l2, level1=l1, stats=stats, seconds=seconds)


