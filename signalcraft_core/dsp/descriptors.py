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


# Frames are whole hops, and so is the padding: frame t of the zero-padded clip is its hops t .. t + 3.
_HOPS_PER_FRAME = N_FFT // HOP_LENGTH
_PAD = N_FFT // 2
_CHUNK_FRAMES = 256   # frames of float64 magnitude (2 MiB) per step: ~10 % faster than all at once (measured)
_ROLLOFF_BLOCK = 41   # the 1025 bins are 25 blocks of 41: a free reshape of the contiguous spectrum
_ROLLOFF_MARGIN = 1e-6
"""Distance to the roll-off threshold, relative to the frame total, under which a frame is redone exactly.

The fast roll-off sums ``float64(sqrt(float32 power))``, which differs from the definition's
``sqrt(float64(power))`` by at most 2**-24 relative per bin; all terms are positive, so its
cumulative sums and its threshold each move by at most 6e-8 of the frame total (float64 rounding
adds ~1e-13). A crossing clear of the threshold by more than 1e-6 of the total is the exact one;
tests/test_descriptors.py builds near-ties that a margin under ~1e-8 gets wrong."""


def _frame_sums(hops: np.ndarray, n_frames: int) -> np.ndarray:
    """(n, n_frames) sums over each frame's hops, from (n, n_frames + 3) per-hop sums of the padded clip."""
    out = hops[:, :n_frames].copy()
    for j in range(1, _HOPS_PER_FRAME):
        out += hops[:, j:j + n_frames]
    return out


def _frame_sign_changes(batch: np.ndarray, n_frames: int) -> np.ndarray:
    """(n, T) sign changes between adjacent samples inside each centred frame, counted once per clip.

    Changes between sample i and i + 1 of the zero-padded clip (padding counts as positive), summed
    per hop; a frame's count is its four hops' minus the change across its right edge: the same
    integers as counting inside every (overlapping) frame, with a quarter of the work.
    """
    n, length = batch.shape
    negative = np.zeros((n, length + 2 * _PAD + 1), dtype=bool)
    np.less(batch, -ZCR_THRESHOLD, out=negative[:, _PAD:_PAD + length])
    changes = negative[:, 1:] != negative[:, :-1]   # changes[:, i]: between i and i + 1
    n_hops = n_frames + _HOPS_PER_FRAME - 1         # length + 2 * _PAD >= n_hops * HOP_LENGTH
    hops = changes[:, :n_hops * HOP_LENGTH].reshape(n, n_hops, HOP_LENGTH).sum(axis=2, dtype=np.int32)
    edges = changes[:, np.arange(n_frames) * HOP_LENGTH + N_FFT - 1]
    return _frame_sums(hops, n_frames) - edges


def _frame_mean_squares(batch: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, T) mean of x**2 over each centred frame and (n,) sum of x**2 over each clip, in float64.

    Sums over 512-sample hops (the padding is zeros), four per frame: the same sums as over every
    overlapping frame with a quarter of the work, and no long running sum to difference. One clip's
    float64 squares at a time, so they stay in cache.
    """
    n, length = batch.shape
    full = length // HOP_LENGTH
    lead = _PAD // HOP_LENGTH
    hops = np.zeros((n, n_frames + _HOPS_PER_FRAME - 1), dtype=np.float64)
    ones = np.ones(HOP_LENGTH)
    for i in range(n):
        squares = batch[i].astype(np.float64)
        np.square(squares, out=squares)
        hops[i, lead:lead + full] = squares[:full * HOP_LENGTH].reshape(full, HOP_LENGTH) @ ones
        hops[i, lead + full] = squares[full * HOP_LENGTH:].sum()   # the partial last hop (maybe empty)
    return _frame_sums(hops, n_frames) / N_FFT, hops.sum(axis=1)


@functools.lru_cache(maxsize=8)
def _mel_band_groups(sample_rate: int) -> tuple[tuple[slice, slice, np.ndarray], ...]:
    """The (bins, mels) mel filterbank as a few dense blocks: (bin slice, band slice, float32 weights).

    A Slaney band spans only the bins between its neighbours' centres, so the filterbank is 97 %
    zeros around a widening diagonal. Runs of bands, each with the bins any of them touches, chosen
    by a dynamic programme that minimises the weights multiplied plus a per-product overhead, make
    the mel product ~5x cheaper: the same nonzero terms, summed in another order.
    """
    fb = np.ascontiguousarray(mel_filterbank(_mel_config(sample_rate)).T)
    bins, mels = fb.shape
    nonzero = fb != 0
    used = nonzero.any(axis=0)
    lo = np.where(used, nonzero.argmax(axis=0), bins)          # an empty band spans no bins
    hi = np.where(used, bins - nonzero[::-1].argmax(axis=0), 0)
    overhead = 1000   # one more product costs about as much as this many weights (10 s clips, measured)

    def span(c: int, d: int) -> tuple[int, int]:
        first, last = int(lo[c:d].min()), int(hi[c:d].max())
        return (first, last) if first < last else (0, 0)

    best = [0.0] + [np.inf] * mels
    cut = [0] * (mels + 1)
    for d in range(1, mels + 1):
        for c in range(d):
            first, last = span(c, d)
            cost = best[c] + (last - first) * (d - c) + overhead
            if cost < best[d]:
                best[d], cut[d] = cost, c
    groups = []
    d = mels
    while d > 0:
        c = cut[d]
        first, last = span(c, d)
        weights = np.ascontiguousarray(fb[first:last, c:d])
        weights.setflags(write=False)
        groups.append((slice(first, last), slice(c, d), weights))
        d = c
    return tuple(reversed(groups))


def _mel_power(power: np.ndarray, sample_rate: int) -> np.ndarray:
    """(n, T, bins) float32 power -> (n, T, N_MELS) float32 ``power @ filterbank.T``, one block at a time."""
    mel = np.empty(power.shape[:-1] + (N_MELS,), dtype=np.float32)
    for bins, bands, weights in _mel_band_groups(sample_rate):
        np.matmul(power[..., bins], weights, out=mel[..., bands])
    return mel


@functools.lru_cache(maxsize=8)
def _moment_weights(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(bins,) float64 bin frequencies in Hz and (bins, 2) float64 columns f, f**2; read-only."""
    freqs = np.fft.rfftfreq(N_FFT, d=1.0 / sample_rate)
    weights = np.stack([freqs, np.square(freqs)], axis=1)
    freqs.setflags(write=False)
    weights.setflags(write=False)
    return freqs, weights


@functools.lru_cache(maxsize=4)
def _upper_ones(size: int) -> np.ndarray:
    """(size, size) float64 upper-triangular ones: ``x @ U`` is the running sum of x's rows."""
    out = np.triu(np.ones((size, size)))
    out.setflags(write=False)
    return out


def _rolloff_bins(power: np.ndarray, mag: np.ndarray, blocks: np.ndarray, total: np.ndarray) -> np.ndarray:
    """(R,) roll-off bin of each frame: the first whose cumulative magnitude reaches 85 % of the frame's.

    ``power`` (R, bins) float32, ``mag`` (R, bins) float64 magnitudes, ``blocks`` (R, bins // 41) their
    sums over blocks of 41 bins and ``total`` (R,) over all. Running sums over blocks find the
    block, running sums inside it the bin; a frame whose crossing is not clear of the threshold by
    `_ROLLOFF_MARGIN` is redone with the defining float64 cumulative sum. So every bin is
    ``argmax(cumsum(sqrt(float64 power)) >= 0.85 * total)``, silent frames included (bin 0).
    """
    rows = np.arange(mag.shape[0])
    threshold = ROLL_PERCENT * total
    n_blocks = blocks.shape[1]
    block_cum = blocks @ _upper_ones(n_blocks)
    block = np.minimum(np.count_nonzero(block_cum < threshold[:, None], axis=1), n_blocks - 1)
    before = block_cum[rows, block] - blocks[rows, block]
    cum = mag.reshape(mag.shape[0], n_blocks, _ROLLOFF_BLOCK)[rows, block] @ _upper_ones(_ROLLOFF_BLOCK)
    cum += before[:, None]
    offset = np.minimum(np.count_nonzero(cum < threshold[:, None], axis=1), _ROLLOFF_BLOCK - 1)
    previous = np.where(offset > 0, cum[rows, offset - 1], before)
    margin = _ROLLOFF_MARGIN * total
    clear = (cum[rows, offset] - threshold > margin) & (threshold - previous > margin)
    out = block * _ROLLOFF_BLOCK + offset
    unsure = np.flatnonzero(~clear & (total > 0))
    if unsure.size:
        exact = np.cumsum(np.sqrt(power[unsure], dtype=np.float64), axis=1)
        out[unsure] = np.argmax(exact >= (ROLL_PERCENT * exact[:, -1])[:, None], axis=1)
    return out


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
    power = spectrum.power   # (n, T, bins) |X|**2
    n, n_frames, bins = power.shape

    # MFCC from the mel power spectrogram in dB (per-clip top_db floor).
    mel_db = power_to_db(_mel_power(power, sample_rate), "one", TOP_DB, axis=(1, 2))
    mfcc = mel_db @ _dct_matrix(N_MFCC, N_MELS)  # (n, T, 13)

    # Magnitude-spectrum descriptors: float32 sqrt (exactly rounded), float64 sums (bandwidth and
    # roll-off sum many small terms), a cache-sized run of frames at a time.
    flat = power.reshape(n * n_frames, bins)
    freqs, weights = _moment_weights(sample_rate)
    total = np.empty(n * n_frames)
    moments = np.empty((n * n_frames, 2))
    bins_reached = np.empty(n * n_frames, dtype=np.intp)
    chunk = min(_CHUNK_FRAMES, flat.shape[0])
    mag32 = np.empty((chunk, bins), dtype=np.float32)
    mag64 = np.empty((chunk, bins))
    ones = np.ones(_ROLLOFF_BLOCK)
    for start in range(0, flat.shape[0], chunk):
        part = flat[start:start + chunk]
        stop = start + part.shape[0]
        mag = mag64[:part.shape[0]]
        np.copyto(mag, np.sqrt(part, out=mag32[:part.shape[0]]))
        blocks = (mag.reshape(-1, _ROLLOFF_BLOCK) @ ones).reshape(part.shape[0], -1)
        np.sum(blocks, axis=1, out=total[start:stop])
        np.matmul(mag, weights, out=moments[start:stop])
        bins_reached[start:stop] = _rolloff_bins(part, mag, blocks, total[start:stop])
    total = total.reshape(n, n_frames)
    first, second = moments[:, 0].reshape(n, n_frames), moments[:, 1].reshape(n, n_frames)
    safe_total = np.where(total > 0, total, 1.0)
    centroid = first / safe_total
    # sum_k |X_k| (f_k - c)^2 = sum |X| f^2 - 2 c sum |X| f + c^2 sum |X|: no (n, T, K) temporary.
    spread = second - 2.0 * centroid * first + np.square(centroid) * total
    bandwidth = np.sqrt(np.maximum(spread, 0.0) / safe_total)
    rolloff = freqs[bins_reached].reshape(n, n_frames)

    # Time-domain descriptors on the same (unwindowed) frames.
    zcr = _frame_sign_changes(batch, n_frames) / N_FFT
    frame_ms, clip_sum = _frame_mean_squares(batch, n_frames)
    rms_db = 10.0 * np.log10(np.maximum(frame_ms, _AMIN))

    peak = np.maximum(batch.max(axis=1), -batch.min(axis=1)).astype(np.float64)
    clip_rms = np.sqrt(clip_sum / batch.shape[1])
    crest_db = 20.0 * np.log10(np.maximum(peak, _AMIN) / np.maximum(clip_rms, _AMIN))

    parts = [
        *_mean_std(mfcc.astype(np.float64)),
        *_mean_std(centroid),
        *_mean_std(bandwidth),
        *_mean_std(zcr),
        *_mean_std(rolloff),
        *_mean_std(rms_db),
    ]
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
