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


def _in_long_runs(positions: np.ndarray, n: int) -> np.ndarray:
    """The sorted sample `positions` that lie in runs of at least `n` consecutive positions."""
    if positions.size < n:
        return positions[:0]
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [positions.size])))
    return positions[np.repeat(lengths >= n, lengths)]


def _clip_fraction(x: np.ndarray) -> float:
    """Share of clipped samples: at full scale, or in flat tops at the clip's extremes (see rules.py).

    The flat tops are looked for among the samples equal to the maximum or minimum only (a handful
    in a clip that does not clip), not over the whole clip.
    """
    clipped = np.abs(x) >= CLIP_LEVEL
    count = int(np.count_nonzero(clipped))
    extra: list[np.ndarray] = []
    for value in (x.max(), x.min()):
        if abs(value) >= FLAT_TOP_MIN_PEAK and abs(value) < CLIP_LEVEL:   # at full scale: counted above
            extra.append(_in_long_runs(np.flatnonzero(x == value), FLAT_TOP_MIN_RUN))
    if extra:
        count += np.unique(np.concatenate(extra)).size
    return float(count) / x.size


def _band_shares(power: np.ndarray, sample_rate: int, length: int) -> list[tuple[float, ...]]:
    """Energy share (dB) of each band in BANDS_HZ for each row of a (m, 1 + length // 2) power spectrum.

    The spectrum is the clip's own length-L rfft (1/L Hz bins: the bands' edges are exact), DC already
    removed; band sums in float64.
    """
    freqs = np.fft.rfftfreq(length, d=1.0 / sample_rate)
    total = power.sum(axis=-1, dtype=np.float64)
    bands = []
    for i, (lo, hi) in enumerate(BANDS_HZ):
        start = int(np.searchsorted(freqs, lo, side="left"))
        stop = int(np.searchsorted(freqs, hi, side="right" if i == len(BANDS_HZ) - 1 else "left"))
        bands.append(power[:, start:stop].sum(axis=-1, dtype=np.float64))
    return [tuple(_db_power(float(band[r]) / float(total[r])) if total[r] > 0 else FLOOR_DB for band in bands)
            for r in range(power.shape[0])]


_FILTER_ORDER = 4


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
def _band_filter(sample_rate: int, length: int) -> np.ndarray | None:
    """The envelope band filter on the rfft grid of a length-L clip (read-only), or None for no filter.

    The Butterworth band-pass of ENVELOPE_BAND_HZ (a high-pass when the band reaches Nyquist; none when
    even its low edge does), evaluated at the clip's own bins, i.e. applied circularly: its impulse
    response dies out within a few milliseconds, so only the first milliseconds of the envelope hear
    the clip's end (the envelope spectrum moves by less than 0.001 dB on the shared recordings).
    """
    nyquist = sample_rate / 2.0
    lo, hi = ENVELOPE_BAND_HZ
    if lo >= 0.95 * nyquist:
        return None
    band, btype = ((lo, hi), "bandpass") if hi < 0.95 * nyquist else (lo, "highpass")
    z, p, k = _butter_zpk(_FILTER_ORDER, band, btype, sample_rate)
    e = np.exp(2j * np.pi * np.arange(length // 2 + 1) / length)   # e^{jw} on the rfft grid
    h = np.full(e.shape, k, dtype=np.complex128)
    for zi, pi in zip(z, p):   # as many zeros as poles (bilinear_zpk adds them at z = -1)
        h *= (e - zi) / (e - pi)
    out = h.astype(np.complex64)
    out.setflags(write=False)
    return out


def _envelope(spectrum: np.ndarray, length: int, sample_rate: int) -> np.ndarray:
    """|y + j H{y}| of the band-filtered clips y, from their length-L rfft: (m, L) float32.

    Two inverse real FFTs of the filtered spectrum: y itself, and its Hilbert transform (-j on the
    positive frequencies, DC and Nyquist dropped), as scipy.signal.hilbert on the L-point circle. The
    scipy recipe this replaces filtered and transformed separately (four FFTs besides the band shares').
    """
    h = _band_filter(sample_rate, length)
    filtered = np.multiply(spectrum, 1.0 if h is None else h, dtype=np.complex64)   # float32 envelope: 1e-4 dB
    y = np.fft.irfft(filtered, length, axis=-1)
    filtered *= -1j
    filtered[:, 0] = 0.0
    if length % 2 == 0:
        filtered[:, -1] = 0.0
    quadrature = np.fft.irfft(filtered, length, axis=-1)
    quadrature *= quadrature
    y *= y
    y += quadrature
    return np.sqrt(y, out=y)


@functools.lru_cache(maxsize=4)
def _welch_design(nperseg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hann window, centred detrend ramp, and the rfft of window and of window * ramp (read-only).

    Welch detrends each segment linearly (mean and slope) before windowing; the FFT is linear, so the
    detrended spectrum is rfft(w * s) - mean * rfft(w) - slope * rfft(w * ramp), with no detrended copy.
    """
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(nperseg) / nperseg)
    t = np.arange(1, nperseg + 1, dtype=np.float64) / nperseg      # scipy's detrend design [t, 1]
    ramp = t - t.mean()
    parts = (window, ramp, np.fft.rfft(window), np.fft.rfft(window * ramp))
    for part in parts:
        part.setflags(write=False)
    return parts


def _welch_band(x: np.ndarray, sample_rate: int, nperseg: int, sel: np.ndarray) -> np.ndarray:
    """The PSD of scipy.signal.welch(x, fs, window="hann", nperseg, detrend="linear") at the bins `sel`.

    One row (one clip) at a time, so the segment temporaries stay a few MiB (in cache, no page faults).
    """
    noverlap = nperseg // 2
    step = nperseg - noverlap
    count = (x.shape[-1] - noverlap) // step
    window, ramp, w_spec, wr_spec = _welch_design(nperseg)
    scale = 1.0 / (sample_rate * float((window * window).sum()))
    bins = np.flatnonzero(sel)
    doubled = np.where((bins > 0) & ((bins < nperseg // 2) | (nperseg % 2 == 1)), 2.0, 1.0)
    out = np.empty((x.shape[0], bins.size))
    for row, signal in enumerate(x):
        segments = np.lib.stride_tricks.sliding_window_view(signal, nperseg)[::step][:count]
        means = segments.mean(axis=-1)
        slopes = (segments @ ramp) / (ramp @ ramp) if nperseg > 1 else np.zeros(count)
        spec = np.fft.rfft(segments * window, axis=-1)[:, bins]
        spec -= means[:, None] * w_spec[bins]
        spec -= slopes[:, None] * wr_spec[bins]
        psd = spec.real * spec.real + spec.imag * spec.imag
        out[row] = psd.mean(axis=0) * scale * doubled
    return out


def _envelope_peak(spectrum: np.ndarray, length: int, sample_rate: int) -> list[tuple[float, float]]:
    """Strongest envelope-spectrum line in 5-500 Hz above the median of that range (dB, Hz), per row.

    Butterworth band-pass (high-pass at 16 kHz), |Hilbert| envelope and Welch spectrum with 1 Hz
    resolution (segments of one second): the scipy.signal recipe, written with numpy's FFT on the
    clip's rfft (`spectrum`, shared with the band shares) so the runtime needs no scipy.
    """
    nperseg = min(length, int(sample_rate))   # 1 Hz resolution when the clip is long enough
    freqs = np.fft.rfftfreq(nperseg, 1.0 / sample_rate)
    sel = (freqs >= ENVELOPE_SEARCH_HZ[0]) & (freqs <= ENVELOPE_SEARCH_HZ[1])
    if np.count_nonzero(sel) < 3:   # too short for an envelope spectrum
        return [(0.0, 0.0)] * spectrum.shape[0]
    psd = _welch_band(_envelope(spectrum, length, sample_rate), sample_rate, nperseg, sel)
    out = []
    for band in psd:
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


#: Working set per input sample of one stacked group (float32 clip, its float64 copy, complex spectrum
#: and power, the filtered spectrum, the filtered signal and its quadrature), with room to spare.
BYTES_PER_SAMPLE = 56
MAX_GROUP_BYTES = 32 * 1024 * 1024   # about four 10 s clips per group: runs beside the spectral groups


def signal_stats(samples: np.ndarray, sample_rate: int = 16000) -> SignalStats:
    """Measures a mono float signal in [-1, 1]; a few FFTs, ~5 ms for 10 s at 16 kHz."""
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
            x64 = x.astype(np.float64)    # numpy's FFT is fastest in float64, and the sums want it
            mean_square = np.mean(x64 * x64, axis=-1)
            peaks = np.max(np.abs(x), axis=-1).astype(np.float64)
            dcs = x64.mean(axis=-1)
            spectrum = np.fft.rfft(x64, axis=-1)   # one transform per clip: band shares and envelope
            del x64
            power = np.square(spectrum.real)
            power += np.square(spectrum.imag)
            power[:, 0] = np.square(spectrum[:, 0].real - length * dcs)   # the DC offset removed: bin 0 of x - mean(x)
            shares = _band_shares(power, sample_rate, length)
            del power
            envelopes = _envelope_peak(spectrum, length, sample_rate)
            del spectrum
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
