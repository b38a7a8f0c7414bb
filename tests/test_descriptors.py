"""Level-1 descriptors: vector layout, physical meaning of each descriptor, finiteness, batching, and
agreement with the direct (slow) per-frame definitions the fast paths replace."""

from __future__ import annotations

import numpy as np
import pytest

from signalcraft_core.dsp import descriptors as D
from signalcraft_core.dsp import features as F
from signalcraft_core.dsp.descriptors import (
    LEVEL1_FEATURE_NAMES,
    descriptors_from_spectrum,
    level1_features,
    level1_features_batch,
)

SR = 16000


def _tone(freq: float, seconds: float = 5.0, amplitude: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _named(vec: np.ndarray) -> dict[str, float]:
    return dict(zip(LEVEL1_FEATURE_NAMES, vec.tolist()))


def test_names_match_vector_length_and_are_unique() -> None:
    vec = level1_features(_tone(440.0, 1.0))
    assert vec.shape == (len(LEVEL1_FEATURE_NAMES),)
    assert vec.dtype == np.float64
    assert len(set(LEVEL1_FEATURE_NAMES)) == len(LEVEL1_FEATURE_NAMES)
    assert sum(n.startswith("mfcc_mean_") for n in LEVEL1_FEATURE_NAMES) == 13


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_tone_centroid_rolloff_and_zcr_follow_frequency(freq: float) -> None:
    d = _named(level1_features(_tone(freq)))
    assert d["centroid_mean"] == pytest.approx(freq, rel=0.02)
    assert d["rolloff_mean"] == pytest.approx(freq, rel=0.03)
    assert d["zcr_mean"] == pytest.approx(2 * freq / SR, rel=0.05)
    assert d["bandwidth_mean"] < 0.1 * freq + 100  # a pure tone is narrow


def test_sample_rate_is_respected() -> None:
    d = _named(level1_features(_tone(1000.0, sr=8000), sample_rate=8000))
    assert d["centroid_mean"] == pytest.approx(1000.0, rel=0.02)
    assert d["zcr_mean"] == pytest.approx(2 * 1000.0 / 8000, rel=0.05)


def test_level_and_crest_follow_their_definitions() -> None:
    amplitude = 0.5
    d = _named(level1_features(_tone(1000.0, amplitude=amplitude)))
    assert d["rms_db_mean"] == pytest.approx(20 * np.log10(amplitude / np.sqrt(2)), abs=0.1)
    assert d["crest_db"] == pytest.approx(20 * np.log10(np.sqrt(2)), abs=0.05)
    clicked = _tone(1000.0, amplitude=0.05)
    clicked[SR : SR + 10] = 0.9
    assert _named(level1_features(clicked))["crest_db"] > d["crest_db"] + 10


def test_noise_is_broader_and_busier_than_a_low_tone() -> None:
    noise = np.random.default_rng(0).standard_normal(SR * 2).astype(np.float32) * 0.1
    n, t = _named(level1_features(noise)), _named(level1_features(_tone(200.0, 2.0)))
    assert n["centroid_mean"] == pytest.approx(SR / 4, rel=0.05)  # white noise: centroid at half Nyquist
    assert n["bandwidth_mean"] > 10 * t["bandwidth_mean"]
    assert n["zcr_mean"] > 5 * t["zcr_mean"]


@pytest.mark.parametrize(
    "signal",
    [
        np.random.default_rng(1).standard_normal(SR).astype(np.float32),
        _tone(440.0, 1.0),
        _tone(440.0, 1.0, amplitude=1e-9),
        np.zeros(SR, np.float32),
        np.random.default_rng(2).standard_normal(700).astype(np.float32),  # shorter than n_fft
    ],
    ids=["noise", "tone", "near_silence", "digital_silence", "short"],
)
def test_features_are_finite(signal: np.ndarray) -> None:
    assert np.isfinite(level1_features(signal)).all()


def test_batch_equals_per_clip_and_keeps_order(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    clips = [
        rng.standard_normal(SR).astype(np.float32),
        _tone(500.0, 1.5),
        rng.standard_normal(SR).astype(np.float32) * 1e-3,
        _tone(2000.0, 1.0),
    ]
    single = np.stack([level1_features(c) for c in clips])
    for chunk_bytes in (F._MAX_BATCH_BYTES, 1):  # stacked by length, then one clip per STFT call
        monkeypatch.setattr(F, "_MAX_BATCH_BYTES", chunk_bytes)
        batch = level1_features_batch(clips)
        assert batch.shape == (len(clips), len(LEVEL1_FEATURE_NAMES))
        np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)


def test_definitions_agree_with_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(4)
    t = np.arange(SR * 2) / SR
    y = (0.2 * np.sin(2 * np.pi * 700 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    d = _named(level1_features(y))
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=13, n_mels=64)
    np.testing.assert_allclose([d[f"mfcc_mean_{i:02d}"] for i in range(13)], mfcc.mean(axis=1), rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose([d[f"mfcc_std_{i:02d}"] for i in range(13)], mfcc.std(axis=1), rtol=1e-3, atol=1e-2)
    for name, ref in [
        ("centroid", librosa.feature.spectral_centroid(y=y, sr=SR)),
        ("bandwidth", librosa.feature.spectral_bandwidth(y=y, sr=SR)),
        ("rolloff", librosa.feature.spectral_rolloff(y=y, sr=SR)),
        ("zcr", librosa.feature.zero_crossing_rate(y)),
    ]:
        assert d[f"{name}_mean"] == pytest.approx(float(ref.mean()), rel=0.01), name


# --- the fast paths against the direct per-frame definitions -------------------------------------------


def _direct_descriptors(batch: np.ndarray, spectrum: F.Spectrum, sample_rate: int) -> np.ndarray:
    """The module docstring's definitions computed plainly: dense mel product, float64 magnitude,
    full cumulative sums, sums over every (overlapping) frame."""
    frames, power = spectrum.frames, spectrum.power
    mel = power @ F.mel_filterbank(D._mel_config(sample_rate)).T
    mfcc = F.power_to_db(mel, "one", D.TOP_DB, axis=(1, 2)) @ D._dct_matrix(D.N_MFCC, D.N_MELS)
    mag = np.sqrt(power, dtype=np.float64)
    freqs = np.fft.rfftfreq(D.N_FFT, d=1.0 / sample_rate)
    total = mag.sum(axis=-1)
    safe = np.where(total > 0, total, 1.0)
    centroid = (mag @ freqs) / safe
    bandwidth = np.sqrt(np.einsum("ntk,ntk->nt", mag, np.square(freqs - centroid[..., None])) / safe)
    cumulative = np.cumsum(mag, axis=-1)
    rolloff = freqs[np.argmax(cumulative >= (D.ROLL_PERCENT * cumulative[..., -1])[..., None], axis=-1)]
    negative = frames < -D.ZCR_THRESHOLD
    zcr = np.count_nonzero(negative[..., 1:] != negative[..., :-1], axis=-1) / D.N_FFT
    rms_db = 10.0 * np.log10(np.maximum(np.einsum("ntk,ntk->nt", frames, frames, dtype=np.float64) / D.N_FFT, 1e-10))
    x = batch.astype(np.float64)
    peak, rms = np.abs(x).max(axis=1), np.sqrt(np.mean(x * x, axis=1))
    crest = 20.0 * np.log10(np.maximum(peak, 1e-10) / np.maximum(rms, 1e-10))
    columns = [mfcc.astype(np.float64).mean(axis=1), mfcc.astype(np.float64).std(axis=1)]
    for v in (centroid, bandwidth, zcr, rolloff, rms_db):
        columns += [v.mean(axis=1)[:, None], v.std(axis=1)[:, None]]
    return np.concatenate(columns + [crest[:, None]], axis=1)


def _awkward_clips(length: int, seed: int) -> np.ndarray:
    """Four clips of one length: noise, a tone in noise, silence with clicks and a quiet stretch, pure silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SR
    gappy = (0.3 * rng.standard_normal(length)).astype(np.float32)
    gappy[length // 4 : length // 2] = 0.0
    gappy[length // 2 : 3 * length // 4] *= 1e-7
    gappy[:: max(1, length // 5)] = 0.95
    return np.stack([
        rng.standard_normal(length).astype(np.float32) * 0.1,
        (0.4 * np.sin(2 * np.pi * 1234.5 * t) + 0.01 * rng.standard_normal(length)).astype(np.float32),
        gappy,
        np.zeros(length, np.float32),
    ])


_COLUMN = {name: i for i, name in enumerate(LEVEL1_FEATURE_NAMES)}
_EXACT = [_COLUMN[n] for n in ("zcr_mean", "zcr_std", "rolloff_mean", "rolloff_std", "rms_db_mean", "rms_db_std",
                                "crest_db")]
_MOMENT_MEANS = [_COLUMN[n] for n in ("centroid_mean", "bandwidth_mean")]
_MOMENT_STDS = [_COLUMN[n] for n in ("centroid_std", "bandwidth_std")]


@pytest.mark.parametrize("length", [700, 2048, 16000, 16001, 512 * 40, 100_000])
@pytest.mark.parametrize("sample_rate", [16000, 8000])
def test_descriptors_equal_the_direct_definitions(length: int, sample_rate: int) -> None:
    """Roll-off bins, zero crossings, frame levels and crest as the direct sums (to float64 rounding);
    centroid and bandwidth to 1e-8 of their means (float32 magnitudes); MFCC (float32 mel product) to 1e-5 dB."""
    batch = _awkward_clips(length, seed=length)
    spectrum = F.spectral_pass(batch, D.N_FFT, D.HOP_LENGTH)
    got = descriptors_from_spectrum(batch, spectrum, sample_rate)
    want = _direct_descriptors(batch, spectrum, sample_rate)
    np.testing.assert_allclose(got[:, _EXACT], want[:, _EXACT], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got[:, _MOMENT_MEANS], want[:, _MOMENT_MEANS], rtol=1e-8, atol=1e-9)
    std_error = np.abs(got[:, _MOMENT_STDS] - want[:, _MOMENT_STDS])
    assert (std_error <= 1e-9 + 1e-8 * want[:, _MOMENT_MEANS]).all(), std_error
    np.testing.assert_allclose(got[:, : 2 * D.N_MFCC], want[:, : 2 * D.N_MFCC], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("length", [1, 511, 512, 700, 2047, 2048, 16000, 16001])
def test_frame_sums_equal_sums_over_every_frame(length: int) -> None:
    """Hop sums added four to a frame: frame mean squares to 1e-9, sign changes as the same integers."""
    rng = np.random.default_rng(length)
    batch = rng.standard_normal((3, length)).astype(np.float32) * np.float32(0.3)
    batch[1, ::3] = 0.0                                     # zeros and threshold-sized values count as positive
    batch[2, ::2] = np.float32(-1e-10)
    frames = F.frame_signals(batch, D.N_FFT, D.HOP_LENGTH)
    n_frames = frames.shape[1]
    mean_squares, clip_sums = D._frame_mean_squares(batch, n_frames)
    np.testing.assert_allclose(mean_squares, np.einsum("ntk,ntk->nt", frames, frames, dtype=np.float64) / D.N_FFT,
                               rtol=1e-9, atol=0)
    np.testing.assert_allclose(clip_sums, np.square(batch, dtype=np.float64).sum(axis=1), rtol=1e-12)
    negative = frames < -D.ZCR_THRESHOLD
    np.testing.assert_array_equal(D._frame_sign_changes(batch, n_frames),
                                  np.count_nonzero(negative[..., 1:] != negative[..., :-1], axis=-1))


def _flat_band_ties() -> list[np.ndarray]:
    """Flat bands: the 85 % crossing lies exactly on the threshold (any summation order may pick either bin)."""
    rows = []
    for value in (2.0, 3.0, 0.5, 1e-3, 7.0):
        for width in range(20, 1021, 20):
            for start in (0, 3, 41):
                if start + width <= 1025:
                    row = np.zeros(1025, np.float32)
                    row[start : start + width] = value
                    rows.append(row)
    return rows


def _near_ties(delta: float = 1e-9, a_bins: int = 700) -> list[np.ndarray]:
    """Frames whose exact crossing is ``delta`` of the total from the threshold, on the side where the float32
    rounding of sqrt(a) moves it across: a_bins bins of power a, one tuning bin, then bins of power 1 (exact)."""
    rows = []
    for a in np.float32(2.0) + np.arange(200, dtype=np.float32) * np.float32(2**-20):
        s, s32 = np.sqrt(np.float64(a)), np.float64(np.sqrt(a))
        d = delta if s32 < s else -delta
        rest = (0.15 - d) * a_bins * s / (0.85 + d)       # 0.15 * a_bins * s - 0.85 * rest == d * total
        row = np.zeros(1025, np.float32)
        row[:a_bins] = a
        row[a_bins] = np.float32((rest - int(rest)) ** 2)
        row[a_bins + 1 : a_bins + 1 + int(rest)] = 1.0
        rows.append(row)
    return rows


def test_rolloff_bins_are_exact_at_ties() -> None:
    """At (near) ties float32 magnitudes or another summation order pick a neighbouring bin; those frames are
    redone with the float64 cumulative sum, so every bin is the definition's (a margin under ~1e-8 fails here)."""
    power = np.stack(_flat_band_ties() + _near_ties())[:, None, :]   # one frame per clip: roll-off mean = its bin
    power.setflags(write=False)
    batch = np.zeros((power.shape[0], 100), np.float32)
    spectrum = F.Spectrum(frames=F.frame_signals(batch, D.N_FFT, D.HOP_LENGTH), power=power,
                          n_fft=D.N_FFT, hop_length=D.HOP_LENGTH)
    got = descriptors_from_spectrum(batch, spectrum, SR)[:, _COLUMN["rolloff_mean"]]
    cumulative = np.cumsum(np.sqrt(power[:, 0], dtype=np.float64), axis=1)
    want = np.fft.rfftfreq(D.N_FFT, 1.0 / SR)[np.argmax(cumulative >= (0.85 * cumulative[:, -1])[:, None], axis=1)]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 44100, 48000])
def test_mel_blocks_equal_the_dense_filterbank_product(sample_rate: int) -> None:
    power = np.random.default_rng(5).random((2, 7, 1025), dtype=np.float32) ** 4
    dense = power @ F.mel_filterbank(D._mel_config(sample_rate)).T
    np.testing.assert_allclose(D._mel_power(power, sample_rate), dense, rtol=1e-5, atol=0)
