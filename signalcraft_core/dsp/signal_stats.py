"""Signal statistics per clip: level, peak, crest, clipping, DC, band shares, envelope line.

The cheap measurements the explainable Level-1 rules (models/rules.py) judge; signal processing only,
nothing learned. All bands lie below 8 kHz, so every measurement exists at 16 kHz.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from signalcraft_core.dsp.features import fft_workers
from signalcraft_core.errors import AudioError, ErrorCode

BANDS_HZ: tuple[tuple[float, float], ...] = ((0, 250), (250, 1000), (1000, 2000), (2000, 4000), (4000, 8000))
ENVELOPE_BAND_HZ: tuple[float, float] = (2000.0, 8000.0)
ENVELOPE_SEARCH_HZ: tuple[float, float] = (5.0, 500.0)
FLOOR_DB = -160.0
CLIP_LEVEL = 0.999
FLAT_TOP_MIN_RUN = 3
FLAT_TOP_MIN_PEAK = 0.25   # below this, runs of equal samples are quantisation of quiet sound, not clipping
DC_CRITICAL_FACTOR = 4.0


@dataclass(frozen=True)
class SignalStats:
    """Cheap per-clip measurements of a mono signal: everything the rules look at."""

    rms_dbfs: float
    peak: float
    crest_db: float
    clip_fraction: float
    dc_offset: float
    band_share_db: tuple[float, ...]
    envelope_peak_db: float
    envelope_peak_hz: float

    @property
    def ac_dbfs(self) -> float:
        """Level with the DC offset removed (20*log10(std)), so a DC shift is not read as loudness."""
        rms = 10.0 ** (self.rms_dbfs / 20.0)
        var = rms * rms - self.dc_offset * self.dc_offset
        return _db_power(max(var, 0.0))



def _db_power(power: float) -> float:
    return max(FLOOR_DB, 10.0 * math.log10(power)) if power > 0 else FLOOR_DB


def _runs_at_least(mask: np.ndarray, n: int) -> np.ndarray:
    """Marks the samples of `mask` that belong to runs of at least `n` consecutive True values."""
    edges = np.diff(np.concatenate(([0], mask.view(np.int8), [0])).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    keep = (ends - starts) >= n
    delta = np.zeros(mask.size + 1, dtype=np.int64)
    np.add.at(delta, starts[keep], 1)
    np.add.at(delta, ends[keep], -1)
    return np.cumsum(delta[:-1]) > 0


def _clip_fraction(x: np.ndarray) -> float:
    clipped = np.abs(x) >= CLIP_LEVEL
    for value in (x.max(), x.min()):
        if abs(value) >= FLAT_TOP_MIN_PEAK:
            clipped |= _runs_at_least(x == value, FLAT_TOP_MIN_RUN)
    return float(np.count_nonzero(clipped)) / x.size


def _band_shares(x: np.ndarray, dcs: np.ndarray, sample_rate: int) -> list[tuple[float, ...]]:
    """Energy share (dB) of each band in BANDS_HZ, DC removed, for each row of (m, samples) float32 clips.

    One float32 rfft of the whole clip (1/L Hz bins: the bands' edges are exact), band sums in float64.
    """
    from scipy.fft import rfft

    spec = rfft(x - dcs.astype(np.float32)[:, None], axis=-1, workers=fft_workers())
    power = spec.real * spec.real
    power += spec.imag * spec.imag
    del spec
    freqs = np.fft.rfftfreq(x.shape[-1], d=1.0 / sample_rate)
    total = power.sum(axis=-1, dtype=np.float64)
    bands = []
    for i, (lo, hi) in enumerate(BANDS_HZ):
        start = int(np.searchsorted(freqs, lo, side="left"))
        stop = int(np.searchsorted(freqs, hi, side="right" if i == len(BANDS_HZ) - 1 else "left"))
        bands.append(power[:, start:stop].sum(axis=-1, dtype=np.float64))
    return [tuple(_db_power(float(band[r]) / float(total[r])) if total[r] > 0 else FLOOR_DB for band in bands)
            for r in range(x.shape[0])]


_FILTER_ORDER = 4
_TAIL_TOLERANCE = 1e-13   # the FFT filter keeps the impulse response until it decays below this


def _butter_zpk(order: int, band_hz: float | tuple[float, float], btype: str,
                sample_rate: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Digital Butterworth zeros, poles, gain: scipy.signal.butter(..., output="zpk") in numpy."""
    wn = np.atleast_1d(np.asarray(band_hz, dtype=np.float64)) / (sample_rate / 2.0)
    warped = 4.0 * np.tan(np.pi * wn / 2.0)          # pre-warp, the bilinear transform at fs = 2
    poles = -np.exp(1j * np.pi * np.arange(-order + 1, order, 2) / (2 * order))  # analog prototype
    if btype == "highpass":
        p = warped[0] / poles
        z = np.zeros(order)
        k = float(np.real(1.0 / np.prod(-poles)))
    else:  # bandpass
        bw = warped[1] - warped[0]
        wo = math.sqrt(warped[0] * warped[1])
        p_lp = poles * bw / 2.0
        root = np.sqrt(p_lp * p_lp - wo * wo)
        p = np.concatenate([p_lp + root, p_lp - root])
        z = np.zeros(order)
        k = bw ** order
    fs2 = 4.0
    z_d = np.concatenate([(fs2 + z) / (fs2 - z), -np.ones(p.size - z.size)])
    p_d = (fs2 + p) / (fs2 - p)
    k_d = k * float(np.real(np.prod(fs2 - z) / np.prod(fs2 - p)))
    return z_d, p_d, k_d


@functools.lru_cache(maxsize=8)
def _filter_response(band_hz: float | tuple[float, float], btype: str, sample_rate: int,
                     length: int) -> tuple[int, np.ndarray]:
    """(FFT size, frequency response on its rfft grid) of the envelope band filter, cached per clip length."""
    from scipy.fft import next_fast_len

    z, p, k = _butter_zpk(_FILTER_ORDER, band_hz, btype, sample_rate)
    radius = float(np.max(np.abs(p)))
    tail = int(math.ceil(math.log(_TAIL_TOLERANCE) / math.log(radius))) if 0 < radius < 1 else length
    n = next_fast_len(length + min(tail, 8 * length), real=True)
    e = np.exp(1j * np.pi * np.arange(n // 2 + 1) / (n / 2.0))   # e^{jw} on the rfft grid
    h = np.full(e.shape, k, dtype=np.complex128)
    for zi, pi in zip(z, p):   # as many zeros as poles (bilinear_zpk adds them at z = -1)
        h *= (e - zi) / (e - pi)
    h = h.astype(np.complex64)
    h.setflags(write=False)
    return n, h


def _iir_filter(x: np.ndarray, band_hz: float | tuple[float, float], btype: str, sample_rate: int) -> np.ndarray:
    """Causal Butterworth filtering of each row with zero initial state (as sosfilt), by FFT to negligible tail error."""
    from scipy.fft import irfft, rfft

    length = x.shape[-1]
    n, h = _filter_response(band_hz, btype, sample_rate, length)
    return irfft(rfft(x, n, axis=-1, workers=fft_workers()) * h, n, axis=-1, workers=fft_workers())[..., :length]


@functools.lru_cache(maxsize=8)
def _hilbert_weights(n: int) -> np.ndarray:
    """-j on the positive frequencies of an n-point rfft grid, 0 at DC (and Nyquist): the Hilbert transform."""
    w = np.full(n // 2 + 1, -1j, dtype=np.complex64)
    w[0] = 0.0
    if n % 2 == 0:
        w[-1] = 0.0
    w.setflags(write=False)
    return w


def _hilbert_envelope(y: np.ndarray) -> np.ndarray:
    """|analytic signal| of each row, as np.abs(scipy.signal.hilbert(y, N=next_fast_len(n)))[..., :n].

    The analytic signal is y + j H{y}; H{y} is real, so two real FFTs do instead of two complex ones.
    """
    from scipy.fft import irfft, next_fast_len, rfft

    length = y.shape[-1]
    n = next_fast_len(length)
    quadrature = irfft(rfft(y, n, axis=-1, workers=fft_workers()) * _hilbert_weights(n), n, axis=-1, workers=fft_workers())[..., :length]
    quadrature *= quadrature
    quadrature += y * y
    return np.sqrt(quadrature, out=quadrature)


def _welch(x: np.ndarray, sample_rate: int, nperseg: int) -> np.ndarray:
    """The PSD of scipy.signal.welch(x, fs, window="hann", nperseg, detrend="linear") of each row (density, mean)."""
    from scipy.fft import rfft

    noverlap = nperseg // 2
    step = nperseg - noverlap
    count = (x.shape[-1] - noverlap) // step
    segments = np.lib.stride_tricks.sliding_window_view(x, nperseg, axis=-1)[..., ::step, :][..., :count, :]
    t = np.arange(1, nperseg + 1, dtype=np.float64) / nperseg      # scipy's detrend design [t, 1]
    tc = (t - t.mean()).astype(x.dtype)
    means = segments.mean(axis=-1, keepdims=True)
    slope = (segments @ tc) / (tc @ tc) if nperseg > 1 else np.zeros(segments.shape[:-1])
    detrended = segments - means
    detrended -= slope[..., None] * tc
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(nperseg) / nperseg)
    scale = 1.0 / (sample_rate * float((window * window).sum()))
    detrended *= window.astype(x.dtype)
    spec = rfft(detrended, nperseg, axis=-1, workers=fft_workers())
    del detrended
    psd = spec.real * spec.real
    psd += spec.imag * spec.imag
    psd *= scale
    if nperseg % 2:
        psd[..., 1:] *= 2.0
    else:
        psd[..., 1:-1] *= 2.0
    return psd.mean(axis=-2)


def _envelope_peak(x: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """Strongest envelope-spectrum line in 5-500 Hz above the median of that range (dB, Hz), per row.

    Butterworth band-pass (high-pass at 16 kHz), |Hilbert| envelope and Welch spectrum are the
    scipy.signal recipes written out with scipy.fft (importing scipy.signal costs ~1 s of a cold
    start) and run on all rows of (m, samples) at once.
    """
    length = x.shape[-1]
    nperseg = min(length, int(sample_rate))   # 1 Hz resolution when the clip is long enough
    freqs = np.fft.rfftfreq(nperseg, 1.0 / sample_rate)
    sel = (freqs >= ENVELOPE_SEARCH_HZ[0]) & (freqs <= ENVELOPE_SEARCH_HZ[1])
    if np.count_nonzero(sel) < 3:   # too short for an envelope spectrum
        return [(0.0, 0.0)] * x.shape[0]
    nyquist = sample_rate / 2.0
    lo, hi = ENVELOPE_BAND_HZ
    if hi < 0.95 * nyquist:
        y = _iir_filter(x, (lo, hi), "bandpass", sample_rate)
    elif lo < 0.95 * nyquist:
        y = _iir_filter(x, lo, "highpass", sample_rate)
    else:
        y = x
    psd = _welch(_hilbert_envelope(y), sample_rate, nperseg)
    out = []
    for band in psd[:, sel]:
        i = int(np.argmax(band))
        top = float(band[i])
        if top <= 0:
            out.append((0.0, 0.0))
            continue
        median = max(float(np.median(band)), top * 10.0 ** (FLOOR_DB / 10.0))
        out.append((10.0 * math.log10(top / median), float(freqs[sel][i])))
    return out


def _checked(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"signal_stats expects a mono 1-D signal, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"signal_stats expects float samples in [-1, 1], got {x.dtype}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if x.size == 0:
        raise AudioError(ErrorCode.EMPTY, "no samples to measure")
    if not np.all(np.isfinite(x)):
        raise AudioError(ErrorCode.NON_FINITE, "signal contains NaN or inf samples")
    return x


#: Working set per input sample of one stacked group (float32 clip, float64 copy for the sums, float32
#: spectra, filtered signal, envelope, Welch segments).
BYTES_PER_SAMPLE = 56
MAX_GROUP_BYTES = 32 * 1024 * 1024   # about four 10 s clips per group: runs beside the spectral groups


def signal_stats(samples: np.ndarray, sample_rate: int = 16000) -> SignalStats:
    """Measures a mono float signal in [-1, 1]; a few FFTs, ~10 ms for 10 s at 16 kHz."""
    return signal_stats_batch([samples], sample_rate)[0]


def signal_stats_batch(signals: Sequence[np.ndarray], sample_rate: int = 16000) -> list[SignalStats]:
    """`signal_stats` for many clips, in order; clips of equal length share each FFT (in groups capped in memory)."""
    clips = [_checked(s, sample_rate) for s in signals]
    out: list[SignalStats | None] = [None] * len(clips)
    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
        by_length.setdefault(c.size, []).append(i)
    for length, idx in by_length.items():
        per_group = max(1, MAX_GROUP_BYTES // (length * BYTES_PER_SAMPLE))
        for start in range(0, len(idx), per_group):
            members = idx[start:start + per_group]
            x = np.stack([clips[i] for i in members]).astype(np.float32, copy=False)
            x64 = x.astype(np.float64)    # the level and DC sums in float64; the spectra in float32
            mean_square = np.mean(x64 * x64, axis=-1)
            peaks = np.max(np.abs(x), axis=-1).astype(np.float64)
            dcs = x64.mean(axis=-1)
            del x64
            shares = _band_shares(x, dcs, sample_rate)
            envelopes = _envelope_peak(x, sample_rate)
            for row, i in enumerate(members):
                ms, peak = float(mean_square[row]), float(peaks[row])
                rms = math.sqrt(ms)
                out[i] = SignalStats(
                    rms_dbfs=_db_power(ms),
                    peak=peak,
                    crest_db=20.0 * math.log10(peak / rms) if rms > 0 and peak > 0 else 0.0,
                    clip_fraction=_clip_fraction(x[row]),
                    dc_offset=float(dcs[row]),
                    band_share_db=shares[row],
                    envelope_peak_db=envelopes[row][0],
                    envelope_peak_hz=envelopes[row][1],
                )
    return [s for s in out if s is not None]
