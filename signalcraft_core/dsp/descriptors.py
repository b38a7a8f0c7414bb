"""The Level-1 descriptor vector: a few dozen explainable numbers per clip for the IsolationForest and its rules.

All frame-wise descriptors come from one centred STFT (``features.spectral_pass``, shared with the log-mel
features when the profile's frames match: n_fft 2048, hop 512, periodic
Hann, zero padding of n_fft/2 on each side, so a clip of L samples has 1 + L // 512 frames). With
``|X|`` the magnitude spectrum of a frame, ``f_k`` the bin frequencies in Hz and ``x`` the raw
(unwindowed) samples of the same 2048-sample frame:

- ``mfcc_mean_00..12`` / ``mfcc_std_00..12``: mean and standard deviation over frames of the first 13
  MFCCs. MFCC = orthonormal DCT-II over the 64 mel bands of the mel power spectrogram in dB
  (Slaney mel filterbank on ``|X|**2``, ``10*log10(max(1e-10, S))`` re 1.0, floored at the clip's
  maximum minus 80 dB), as ``librosa.feature.mfcc`` defaults.
- ``centroid_mean`` / ``centroid_std``: spectral centroid in Hz, ``sum_k f_k |X_k| / sum_k |X_k|``
  (0 for a silent frame).
- ``bandwidth_mean`` / ``bandwidth_std``: spectral bandwidth in Hz with p = 2,
  ``sqrt(sum_k |X_k| (f_k - centroid)**2 / sum_k |X_k|)``.
- ``zcr_mean`` / ``zcr_std``: zero-crossing rate per frame, the number of sign changes between adjacent
  samples of the frame divided by 2048 (samples with ``|x| <= 1e-10`` count as positive). A tone of
  f Hz gives about ``2 f / sample_rate``.
- ``rolloff_mean`` / ``rolloff_std``: spectral roll-off in Hz, the lowest bin frequency below which
  85 % of the frame's magnitude ``sum_k |X_k|`` lies.
- ``rms_db_mean`` / ``rms_db_std``: frame RMS level in dB re full scale,
  ``10*log10(max(1e-10, mean(x**2)))``.
- ``crest_db``: crest factor of the whole clip, ``20*log10(max(1e-10, max|x|) / max(1e-10, rms(x)))``;
  impacts and clicks raise it.

Means and standard deviations (population, ddof 0) are taken over all frames of the clip. The
definitions follow librosa's meaning (magnitude spectrum for centroid / bandwidth / roll-off) but are
computed here without librosa, so values may differ from librosa in the last digits and at the
padded clip edges.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from signalcraft_core.dsp.features import (
    FeatureConfig,
    Spectrum,
    iter_equal_length_batches,
    mel_filterbank,
    power_to_db,
    spectral_pass,
)

N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 64
N_MFCC = 13
ROLL_PERCENT = 0.85
TOP_DB = 80.0
ZCR_THRESHOLD = 1e-10
_AMIN = 1e-10

LEVEL1_FEATURE_NAMES: tuple[str, ...] = (
    *(f"mfcc_mean_{i:02d}" for i in range(N_MFCC)),
    *(f"mfcc_std_{i:02d}" for i in range(N_MFCC)),
    "centroid_mean",
    "centroid_std",
    "bandwidth_mean",
    "bandwidth_std",
    "zcr_mean",
    "zcr_std",
    "rolloff_mean",
    "rolloff_std",
    "rms_db_mean",
    "rms_db_std",
    "crest_db",
)

# Working set per input sample of one stacked batch (frames, spectrum, float64 magnitude, temporaries).
BYTES_PER_SAMPLE = 96


@functools.lru_cache(maxsize=8)
def _mel_config(sample_rate: int) -> FeatureConfig:
    return FeatureConfig(name="level1", sample_rate=sample_rate, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS)


@functools.lru_cache(maxsize=2)
def _dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_in, n_out) orthonormal DCT-II basis, so ``db @ D`` gives the first n_out coefficients."""
    m = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    d = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * m + 1) / (2 * n_in))
    d[:, 0] *= np.sqrt(0.5)
    out = d.astype(np.float32)
    out.setflags(write=False)
    return out


def _frame_sign_changes(batch: np.ndarray, n_frames: int) -> np.ndarray:
    """(n, T) sign changes between adjacent samples inside each centred frame, counted once per clip.

    A running count of changes over the zero-padded clip (padding counts as positive), differenced at
    the frame edges: the same integers as counting inside every (overlapping) frame, with a quarter of
    the work. int32 counts: a clip would need 2**31 samples to overflow them.
    """
    pad = N_FFT // 2
    n, length = batch.shape
    negative = np.zeros((n, length + 2 * pad), dtype=bool)
    np.less(batch, -ZCR_THRESHOLD, out=negative[:, pad:pad + length])
    running = np.empty(negative.shape, dtype=np.int32)
    running[:, 0] = 0
    np.cumsum(negative[:, 1:] != negative[:, :-1], axis=1, dtype=np.int32, out=running[:, 1:])
    starts = np.arange(n_frames) * HOP_LENGTH
    return running[:, starts + N_FFT - 1] - running[:, starts]


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std over the frame axis (axis 1)."""
    return x.mean(axis=1), x.std(axis=1)


def spectrum_matches(spectrum: Spectrum) -> bool:
    """True when the descriptors can be read from ``spectrum`` (their own frame size and hop)."""
    return spectrum.n_fft == N_FFT and spectrum.hop_length == HOP_LENGTH


def descriptors_from_spectrum(batch: np.ndarray, spectrum: Spectrum, sample_rate: int) -> np.ndarray:
    """(n, samples) float32 clips and their `Spectrum` (n_fft 2048, hop 512) -> (n, d) float64 descriptors."""
    if not spectrum_matches(spectrum):
        raise ValueError(f"descriptors need n_fft {N_FFT}, hop {HOP_LENGTH}; got {spectrum.n_fft}, {spectrum.hop_length}")
    frames, power = spectrum.frames, spectrum.power   # (n, T, N_FFT) view, (n, T, bins) |X|**2

    # MFCC from the mel power spectrogram in dB (per-clip top_db floor).
    mel = power @ np.ascontiguousarray(mel_filterbank(_mel_config(sample_rate)).T)  # (n, T, mels)
    mel_db = power_to_db(mel, "one", TOP_DB, axis=(1, 2))
    mfcc = mel_db @ _dct_matrix(N_MFCC, N_MELS)  # (n, T, 13)

    # Magnitude-spectrum descriptors in float64 (bandwidth and roll-off sum many small terms).
    mag = np.sqrt(power, dtype=np.float64)
    freqs = np.fft.rfftfreq(N_FFT, d=1.0 / sample_rate)
    total = mag.sum(axis=-1)
    safe_total = np.where(total > 0, total, 1.0)
    first = mag @ freqs
    centroid = first / safe_total
    # sum_k |X_k| (f_k - c)^2 = sum |X| f^2 - 2 c sum |X| f + c^2 sum |X|: two products, no (n, T, K) temporary.
    spread = (mag @ np.square(freqs)) - 2.0 * centroid * first + np.square(centroid) * total
    bandwidth = np.sqrt(np.maximum(spread, 0.0) / safe_total)
    cumulative = np.cumsum(mag, axis=-1, out=mag)
    reached = cumulative >= (ROLL_PERCENT * cumulative[..., -1])[..., None]
    rolloff = freqs[np.argmax(reached, axis=-1)]
    del mag, cumulative, reached

    # Time-domain descriptors on the same (unwindowed) frames.
    zcr = _frame_sign_changes(batch, frames.shape[1]) / N_FFT
    frame_ms = np.einsum("ntk,ntk->nt", frames, frames, dtype=np.float64) / N_FFT
    rms_db = 10.0 * np.log10(np.maximum(frame_ms, _AMIN))

    x = batch.astype(np.float64)
    peak = np.abs(x).max(axis=1)
    clip_rms = np.sqrt(np.mean(np.square(x), axis=1))
    crest_db = 20.0 * np.log10(np.maximum(peak, _AMIN) / np.maximum(clip_rms, _AMIN))

    parts = [
        *_mean_std(mfcc.astype(np.float64)),
        *_mean_std(centroid),
        *_mean_std(bandwidth),
        *_mean_std(zcr),
        *_mean_std(rolloff),
        *_mean_std(rms_db),
    ]
    n = batch.shape[0]
    columns = [p.reshape(n, -1) for p in parts] + [crest_db.reshape(n, 1)]
    return np.concatenate(columns, axis=1)


def level1_features(signal: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """(len(LEVEL1_FEATURE_NAMES),) float64 descriptor vector of one mono clip."""
    return level1_features_batch([signal], sample_rate)[0]


def level1_features_batch(signals: Sequence[np.ndarray], sample_rate: int = 16000) -> np.ndarray:
    """(n, len(LEVEL1_FEATURE_NAMES)) float64; equal-length clips share one STFT, order is preserved."""
    out = np.empty((len(signals), len(LEVEL1_FEATURE_NAMES)), dtype=np.float64)
    for idx, batch in iter_equal_length_batches(signals, BYTES_PER_SAMPLE):
        out[idx] = descriptors_from_spectrum(batch, spectral_pass(batch, N_FFT, HOP_LENGTH), sample_rate)
    return out
