"""One log-mel feature function shared by training and scoring, so the two can never drift apart.

No librosa and no scipy at run time: a centred, zero-padded, periodic-Hann STFT via ``numpy.fft.rfft``
on a strided frame view, a cached Slaney mel filterbank (same as ``librosa.filters.mel(htk=False,
norm="slaney")``), ``power_to_db``-style dB conversion, optional per-clip min-max scaling and time
pooling. The "seed" profile reproduces the earlier SignalCraft app's features (librosa defaults,
``power_to_db(ref=np.max, top_db=80)``, per-clip min-max, mean over time) to within 1e-4.

The "default" profile serves steady machines (fans, pumps: faults change the average spectrum) and
impulsive ones (valves, sliders: faults change short clicks) with one vector: absolute dB (no
per-clip scaling, so level changes count), 16 wide mel bands (n_fft 2048, hop 512) and, per band,
four global-weighted-rank poolings over time from mean to max (GWRP decay 1, 0.9, 0.5, 0; TWFR,
Guan et al., ICASSP 2023: r near 1 suits steady sound, r -> 0 clicks). Few wide bands keep the
64-dim vector learnable from 10 clips; more bands mainly add noise dimensions (measured with
`signalcraft evaluate`, see bench/results/accuracy.md).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from signalcraft_core.errors import AudioError, ErrorCode

AMIN = 1e-10
"""Floor applied to power before the log, as in ``librosa.power_to_db``."""

_MAX_BATCH_BYTES = 64 * 1024 * 1024
"""Cap on the windowed-frame buffer of one stacked rfft call; bigger groups are split."""

_DB_REFS = ("max", "one")
_CLIP_SCALINGS = ("minmax", "none")


@functools.lru_cache(maxsize=64)
def _parse_pool(spec: str) -> tuple[str, float]:
    """Turn a pooling spec into (kind, parameter); raises ValueError so bad manifests fail early."""
    if spec in ("mean", "max", "std"):
        return spec, 0.0
    if spec.startswith("gwrp:"):
        try:
            decay = float(spec[5:])
        except ValueError:
            raise ValueError(f"bad gwrp decay in pooling {spec!r}") from None
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"gwrp decay must be in (0, 1], got {spec!r}")
        return "gwrp", decay
    if spec.startswith("p") and len(spec) > 1:
        try:
            q = float(spec[1:])
        except ValueError:
            raise ValueError(f"unknown pooling {spec!r}") from None
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {spec!r}")
        return "percentile", q
    raise ValueError(f"unknown pooling {spec!r}; use mean, max, std, gwrp:R or pNN")


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that defines a feature vector; stored in the model manifest so scoring matches training."""

    name: str
    sample_rate: int = 16000
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None
    power: float = 2.0
    db_ref: str = "max"
    top_db: float | None = 80.0
    clip_scaling: str = "minmax"
    pooling: tuple[str, ...] = ("mean",)

    def __post_init__(self) -> None:
        if isinstance(self.pooling, list):
            object.__setattr__(self, "pooling", tuple(self.pooling))
        if self.sample_rate <= 0 or self.n_fft < 2 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"feature config {self.name!r}: sample_rate, n_fft, hop_length, n_mels must be positive")
        if not 0.0 <= self.fmin < self.fmax_hz <= self.sample_rate / 2:
            raise ValueError(f"feature config {self.name!r}: need 0 <= fmin < fmax <= sample_rate / 2")
        if self.power <= 0:
            raise ValueError(f"feature config {self.name!r}: power must be > 0")
        if self.db_ref not in _DB_REFS:
            raise ValueError(f"feature config {self.name!r}: db_ref must be one of {_DB_REFS}")
        if self.top_db is not None and self.top_db <= 0:
            raise ValueError(f"feature config {self.name!r}: top_db must be > 0 or None")
        if self.clip_scaling not in _CLIP_SCALINGS:
            raise ValueError(f"feature config {self.name!r}: clip_scaling must be one of {_CLIP_SCALINGS}")
        if not self.pooling:
            raise ValueError(f"feature config {self.name!r}: pooling must not be empty")
        for spec in self.pooling:
            _parse_pool(spec)

    @property
    def fmax_hz(self) -> float:
        """The upper mel edge in Hz (Nyquist when unset)."""
        return float(self.sample_rate) / 2 if self.fmax is None else float(self.fmax)

    @property
    def dim(self) -> int:
        """Length of the pooled vector: layout [pool0 band0..M-1, pool1 band0..M-1, ...]."""
        return len(self.pooling) * self.n_mels

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the model manifest."""
        d = dataclasses.asdict(self)
        d["pooling"] = list(self.pooling)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        """Inverse of ``to_dict``; unknown keys are an error so a newer manifest is not misread."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown feature config keys: {unknown}")
        kwargs = dict(d)
        if "pooling" in kwargs:
            kwargs["pooling"] = tuple(kwargs["pooling"])
        return cls(**kwargs)


PROFILES: dict[str, FeatureConfig] = {
    # Exact parity with the earlier app (and its legacy autoencoders).
    "seed": FeatureConfig(name="seed"),
    # One profile for steady and impulsive machines (module docstring): absolute dB, 16 wide mel
    # bands, and four time poolings from mean to max (GWRP decay 1, 0.9, 0.5, 0), as in TWFR (ICASSP 2023).
    "default": FeatureConfig(
        name="default",
        n_fft=2048,
        hop_length=512,
        n_mels=16,
        power=2.0,
        db_ref="one",
        top_db=None,
        clip_scaling="none",
        pooling=("mean", "gwrp:0.9", "gwrp:0.5", "max"),
    ),
}


def get_profile(name: str) -> FeatureConfig:
    """Look up a named profile; unknown names list the valid ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown feature profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None


# --- filterbank and window ---------------------------------------------------------------------------

_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    mels = f / _F_SP
    log_t = f >= _MIN_LOG_HZ
    return np.where(log_t, _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    freqs = _F_SP * m
    log_t = m >= _MIN_LOG_MEL
    return np.where(log_t, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), freqs)


@functools.lru_cache(maxsize=16)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    fftfreqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]  # Slaney area normalisation
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=16)
def _mel_filterbank_t(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Transposed contiguous copy: (bins, n_mels) for a time-major matmul."""
    out = np.ascontiguousarray(_mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T)
    out.setflags(write=False)
    return out


def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 Slaney mel filterbank, cached and read-only."""
    return _mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, float(config.fmin), config.fmax_hz)


def _mel_fb_t(config: FeatureConfig) -> np.ndarray:
    return _mel_filterbank_t(config.sample_rate, config.n_fft, config.n_mels, float(config.fmin), config.fmax_hz)


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (scipy ``get_window("hann", n, fftbins=True)``), float64, read-only."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    w.setflags(write=False)
    return w


# --- STFT ----------------------------------------------------------------------------------------------

#: Frames per FFT call of `frame_power`: the float64 windowed block and its spectrum (1 MiB at n_fft
#: 2048) stay in the core's cache, and no clip-sized temporary is allocated (and page-faulted) per call.
#: Measured on 10 s clips: 2.4 ms per clip at 32 frames, 3.5-5 ms at 64 or more.
FRAME_BLOCK = 32


def _as_signal(signal: np.ndarray) -> np.ndarray:
    """Validate one mono clip and return it as contiguous float32."""
    x = np.asarray(signal)
    if x.ndim != 1:
        raise ValueError(f"expected a mono 1-D signal, got shape {x.shape}")
    if x.size == 0:
        raise AudioError(ErrorCode.EMPTY, "the signal has no samples")
    return np.ascontiguousarray(x, dtype=np.float32)


def frame_signals(batch: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """Centred frames of equal-length clips: (n, samples) -> (n, 1 + samples // hop, n_fft) view.

    Zero padding of n_fft // 2 on each side, like librosa >= 0.10 ``stft(center=True)``.
    """
    pad = n_fft // 2
    padded = np.pad(batch, ((0, 0), (pad, pad)))
    return np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop_length]


def frame_power(frames: np.ndarray) -> np.ndarray:
    """``|rfft(hann * frame)|**2`` of (n, T, n_fft) frames: (n, T, 1 + n_fft // 2) float32.

    numpy's FFT in float64 (its float32 path is several times slower on short rows; float64 is as fast
    as scipy's float32 there), FRAME_BLOCK frames at a time, squared into float32.
    """
    n, t, n_fft = frames.shape
    window = hann_window(n_fft)
    out = np.empty((n, t, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n):
        for start in range(0, t, FRAME_BLOCK):
            spec = np.fft.rfft(frames[i, start:start + FRAME_BLOCK] * window, axis=-1)
            np.square(spec.real, out=spec.real)
            np.square(spec.imag, out=spec.imag)
            np.add(spec.real, spec.imag, out=out[i, start:start + FRAME_BLOCK], casting="same_kind")
    return out


def iter_equal_length_batches(
    signals: Sequence[np.ndarray], bytes_per_sample: int
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (original indices, stacked float32 clips) for groups of equal length, capped in memory.

    ``bytes_per_sample`` is the working-set cost per input sample, used to split big groups.
    """
    clips = [_as_signal(s) for s in signals]
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault(c.size, []).append(i)
    for length, idx in groups.items():
        per_batch = max(1, _MAX_BATCH_BYTES // max(1, length * bytes_per_sample))
        for start in range(0, len(idx), per_batch):
            chunk = idx[start : start + per_batch]
            yield chunk, np.stack([clips[i] for i in chunk])


def power_to_db(spec: np.ndarray, db_ref: str, top_db: float | None, axis: tuple[int, ...] | None = None) -> np.ndarray:
    """``librosa.power_to_db`` with ref = max (per clip, over ``axis``) or 1.0, in place on float32."""
    out = np.maximum(spec, np.float32(AMIN))
    np.log10(out, out=out)
    out *= np.float32(10.0)
    if db_ref == "max":
        # 10 * log10(max(amin, max S)) == max of the floored log spectrum.
        out -= out.max(axis=axis, keepdims=True)
    if top_db is not None:
        np.maximum(out, out.max(axis=axis, keepdims=True) - np.float32(top_db), out=out)
    return out


@dataclass(frozen=True)
class Spectrum:
    """One STFT pass over equal-length clips, shared by the log-mel features and the Level-1 descriptors.

    ``frames`` is the (n, T, n_fft) float32 view of the centred, zero-padded clips (unwindowed);
    ``power`` is ``|X|**2`` of their periodic-Hann rfft, (n, T, 1 + n_fft // 2) float32, time-major.
    Readers never write into either.
    """

    frames: np.ndarray
    power: np.ndarray
    n_fft: int
    hop_length: int

    def matches(self, config: FeatureConfig) -> bool:
        """True when ``config``'s log-mel can be read from this pass (same frame size and hop)."""
        return self.n_fft == config.n_fft and self.hop_length == config.hop_length


def spectral_pass(batch: np.ndarray, n_fft: int, hop_length: int) -> Spectrum:
    """(n, samples) equal-length clips -> their `Spectrum`: one rfft of every frame, its power in float32."""
    frames = frame_signals(np.asarray(batch, dtype=np.float32), n_fft, hop_length)
    power = frame_power(frames)
    power.setflags(write=False)
    return Spectrum(frames=frames, power=power, n_fft=n_fft, hop_length=hop_length)


def log_mel_from_spectrum(spectrum: Spectrum, config: FeatureConfig) -> np.ndarray:
    """(n, n_mels, frames) float32 log-mel of a `Spectrum` whose frame size and hop match ``config``."""
    if not spectrum.matches(config):
        raise ValueError(f"spectrum (n_fft {spectrum.n_fft}, hop {spectrum.hop_length}) does not match "
                         f"profile {config.name!r} (n_fft {config.n_fft}, hop {config.hop_length})")
    power = spectrum.power if config.power == 2.0 else np.power(spectrum.power, config.power / 2.0)
    mel = power @ _mel_fb_t(config)  # (n, frames, n_mels)
    del power
    per_clip = (1, 2)
    out = power_to_db(mel, config.db_ref, config.top_db, axis=per_clip)
    if config.clip_scaling == "minmax":
        lo = out.min(axis=per_clip, keepdims=True)
        hi = out.max(axis=per_clip, keepdims=True)
        out -= lo
        out /= hi - lo + np.float32(1e-6)
    return np.ascontiguousarray(out.transpose(0, 2, 1))


def _log_mel_stack(batch: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(n, samples) -> (n, n_mels, frames) float32 after dB and clip scaling."""
    return log_mel_from_spectrum(spectral_pass(batch, config.n_fft, config.hop_length), config)


def log_mel(signal: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(n_mels, frames) float32 log-mel spectrogram of one mono clip."""
    return _log_mel_stack(_as_signal(signal)[None, :], config)[0]


def log_mel_batch(signals: Sequence[np.ndarray], config: FeatureConfig) -> list[np.ndarray]:
    """``log_mel`` for many clips; equal-length clips share one rfft call (order is preserved)."""
    out: list[np.ndarray] = [np.empty(0, np.float32)] * len(signals)
    # Working set per sample: the padded clip (4 bytes), its float32 power (~ n_fft / hop values) and the mel.
    per_sample = 4 + 4 * 2 * max(1, config.n_fft // config.hop_length)
    for idx, batch in iter_equal_length_batches(signals, per_sample):
        for i, spec in zip(idx, _log_mel_stack(batch, config)):
            out[i] = spec
    return out


# --- pooling -------------------------------------------------------------------------------------------


def _gwrp(sorted_desc: np.ndarray, decay: float) -> np.ndarray:
    """Global weighted rank pooling: sum_j r^j x_(j) / sum_j r^j over values sorted high to low."""
    w = decay ** np.arange(sorted_desc.shape[1], dtype=np.float64)
    return (sorted_desc @ w) / w.sum()


def pool(spectrogram: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(n_mels, frames) -> (dim,) float32: each pooling over time, concatenated in config order."""
    s = np.asarray(spectrogram, dtype=np.float32)
    if s.ndim != 2 or s.shape[0] != config.n_mels or s.shape[1] == 0:
        raise ValueError(f"expected a ({config.n_mels}, frames>0) spectrogram, got shape {s.shape}")
    sorted_desc: np.ndarray | None = None
    parts = []
    for spec in config.pooling:
        kind, param = _parse_pool(spec)
        if kind == "mean":
            parts.append(s.mean(axis=1))
        elif kind == "max":
            parts.append(s.max(axis=1))
        elif kind == "std":
            parts.append(s.std(axis=1))
        elif kind == "gwrp":
            if sorted_desc is None:
                sorted_desc = -np.sort(-s, axis=1)
            parts.append(_gwrp(sorted_desc, param))
        else:
            parts.append(np.percentile(s, param, axis=1))
    return np.concatenate(parts).astype(np.float32, copy=False)


def clip_features(signals: Sequence[np.ndarray], config: FeatureConfig) -> np.ndarray:
    """(n_clips, dim) float32: ``pool(log_mel(clip))`` for every clip."""
    specs = log_mel_batch(signals, config)
    out = np.empty((len(specs), config.dim), dtype=np.float32)
    for i, s in enumerate(specs):
        out[i] = pool(s, config)
    return out


def features_from_spectrum(spectrum: Spectrum, config: FeatureConfig) -> np.ndarray:
    """(n, dim) float32: ``clip_features`` of the clips of one `Spectrum` (same numbers, no second STFT)."""
    specs = log_mel_from_spectrum(spectrum, config)
    out = np.empty((specs.shape[0], config.dim), dtype=np.float32)
    for i, s in enumerate(specs):
        out[i] = pool(s, config)
    return out
