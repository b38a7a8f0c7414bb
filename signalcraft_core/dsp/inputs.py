"""Everything both levels read from a batch of clips, computed once: training, evaluation and scoring share it.

`ClipInputs` holds, per clip, the Level-2 feature vector (the profile's pooled log-mel), the Level-1
descriptor vector and the rules' signal statistics. Training featurises its clips once and slices
them per fold; scoring featurises each batch; the decision (models/decision.py) only reads them.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from signalcraft_core.dsp.descriptors import (
    BYTES_PER_SAMPLE as DESCRIPTOR_BYTES_PER_SAMPLE,
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
from signalcraft_core.dsp.signal_stats import SignalStats, signal_stats_batch

_stats_pool: ThreadPoolExecutor | None = None
_stats_pool_lock = threading.Lock()


def _stats_worker() -> ThreadPoolExecutor:
    """One background thread per process for the rule measurements (numpy and pocketfft release the GIL)."""
    global _stats_pool
    with _stats_pool_lock:
        if _stats_pool is None:
            _stats_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signalcraft-rules")
        return _stats_pool


@dataclass
class ClipInputs:
    """Per-clip inputs of both levels; a part a model set does not use is None."""

    level2: np.ndarray | None          # (n, profile.dim) pooled log-mel features
    level1: np.ndarray | None          # (n, len(LEVEL1_FEATURE_NAMES)) descriptors
    stats: list[SignalStats] | None    # n rule measurements

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
        )


def shares_spectrum(profile: FeatureConfig) -> bool:
    """True when the profile's log-mel and the Level-1 descriptors can read one STFT (same n_fft and hop)."""
    return profile.n_fft == N_FFT and profile.hop_length == HOP_LENGTH


def _level2_and_level1(signals: Sequence[np.ndarray], profile: FeatureConfig,
                       sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Both levels' vectors from one float32 STFT per group of equal-length clips (capped in memory)."""
    level2 = np.empty((len(signals), profile.dim), dtype=np.float32)
    level1 = np.empty((len(signals), len(LEVEL1_FEATURE_NAMES)), dtype=np.float64)
    for idx, batch in iter_equal_length_batches(signals, DESCRIPTOR_BYTES_PER_SAMPLE):
        spectrum = spectral_pass(batch, N_FFT, HOP_LENGTH)
        level2[idx] = features_from_spectrum(spectrum, profile)
        level1[idx] = descriptors_from_spectrum(batch, spectrum, sample_rate)
        del spectrum
    return level2, level1


def featurise(signals: Sequence[np.ndarray], profile: FeatureConfig, sample_rate: int = 16000, *,
              level2: bool = True, level1: bool = True, rules: bool = True) -> ClipInputs:
    """The inputs of every clip; the rules' FFTs run on a second thread beside the rest.

    When both levels are wanted and the profile's frames are the descriptors' (n_fft 2048, hop 512:
    `default` and `seed`), one STFT serves both, with the same numbers as two separate passes.
    """
    stats_future = _stats_worker().submit(signal_stats_batch, signals, sample_rate) if rules else None
    if level2 and level1 and shares_spectrum(profile):
        l2, l1 = _level2_and_level1(signals, profile, sample_rate)
    else:
        l2 = clip_features(signals, profile) if level2 else None
        l1 = level1_features_batch(signals, sample_rate) if level1 else None
    return ClipInputs(level2=l2, level1=l1, stats=stats_future.result() if stats_future is not None else None)
