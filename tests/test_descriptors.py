"""Level-1 descriptors: vector layout, physical meaning of each descriptor, finiteness and batching."""

from __future__ import annotations

import numpy as np
import pytest

from signalcraft_core.dsp import features as F
from signalcraft_core.dsp.descriptors import (
    LEVEL1_FEATURE_NAMES,
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
