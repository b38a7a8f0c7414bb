"""Log-mel features: librosa parity of the seed profile, pooling semantics, batching and config round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from signalcraft_core.dsp import features as F
from signalcraft_core.dsp.features import (
    PROFILES,
    FeatureConfig,
    clip_features,
    get_profile,
    log_mel,
    log_mel_batch,
    mel_filterbank,
    pool,
)
from signalcraft_core.errors import AudioError, ErrorCode

librosa = pytest.importorskip("librosa")

SR = 16000
SEED = get_profile("seed")
DEFAULT = get_profile("default")


def _librosa_seed(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The earlier app's feature code, verbatim in spirit: returns (scaled log-mel, pooled 64-vector)."""
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_mels=64)
    db = librosa.power_to_db(mel, ref=np.max)
    scaled = (db - db.min()) / (db.max() - db.min() + 1e-6)
    return scaled, scaled.mean(axis=1)


def _synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(3 * SR) / SR
    chirp = np.sin(2 * np.pi * (100 + 2000 * t) * t)
    return {
        "tone_in_noise": (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
        "chirp_float64_odd_length": chirp[:40001] * 0.5,
        "shorter_than_n_fft": rng.standard_normal(1000).astype(np.float32),
        "bursty": (rng.standard_normal(t.size) * (np.sin(2 * np.pi * 3 * t) > 0.9)).astype(np.float32),
    }


def _assert_seed_parity(y: np.ndarray) -> None:
    ref_spec, ref_vec = _librosa_seed(y)
    spec = log_mel(y, SEED)
    assert spec.dtype == np.float32 and spec.shape == ref_spec.shape
    np.testing.assert_allclose(spec, ref_spec, atol=1e-4, rtol=0)
    vec = clip_features([y], SEED)[0]
    assert vec.shape == (64,)
    assert np.max(np.abs(vec - ref_vec)) <= 1e-4


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large:UserWarning")
@pytest.mark.parametrize("name", sorted(_synthetic()))
def test_seed_profile_matches_librosa_on_synthetic_clips(name: str) -> None:
    _assert_seed_parity(_synthetic()[name])


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("relpath", "channels"),
    [
        ("dcase-valve-sec00/normal/section_00_source_test_normal_0000_pat_01.wav", 1),
        ("mimii-fan-id00-0dB/normal/00000000.wav", 8),
        ("mimii-0dB-types/pump/id_00/abnormal/00000000.wav", 8),
    ],
)
def test_seed_profile_matches_librosa_on_real_clips(shared_data, relpath: str, channels: int) -> None:
    path = shared_data / relpath
    if not path.is_file():
        pytest.skip(f"{relpath} is absent")
    soundfile = pytest.importorskip("soundfile")
    assert soundfile.info(str(path)).channels == channels  # the MIMII clips really are mixed down to mono
    y, sr = librosa.load(path, sr=SR, mono=True)
    assert sr == SR and y.ndim == 1
    _assert_seed_parity(y)


@pytest.mark.parametrize(
    "config",
    [SEED, DEFAULT, FeatureConfig(name="narrow", n_fft=1024, n_mels=40, fmin=50.0, fmax=7000.0)],
    ids=lambda c: c.name,
)
def test_mel_filterbank_matches_librosa_slaney(config: FeatureConfig) -> None:
    ref = librosa.filters.mel(
        sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax_hz
    )
    ours = mel_filterbank(config)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)


def test_filterbank_is_cached_and_read_only() -> None:
    same_bands = FeatureConfig(name="other", pooling=("max",))
    assert mel_filterbank(same_bands) is mel_filterbank(SEED)
    with pytest.raises(ValueError):
        mel_filterbank(SEED)[0, 0] = 1.0


def test_hann_window_matches_scipy_periodic_hann() -> None:
    from scipy.signal import get_window

    np.testing.assert_allclose(F.hann_window(2048), get_window("hann", 2048, fftbins=True), atol=1e-7)


@pytest.mark.parametrize("config", [SEED, DEFAULT], ids=lambda c: c.name)
def test_shapes_and_dtypes(config: FeatureConfig) -> None:
    y = np.random.default_rng(0).standard_normal(SR * 2 + 123).astype(np.float32)
    spec = log_mel(y, config)
    assert spec.shape == (config.n_mels, 1 + y.size // config.hop_length)
    assert spec.dtype == np.float32
    vec = pool(spec, config)
    assert vec.shape == (config.dim,) and vec.dtype == np.float32
    feats = clip_features([y, y[:SR]], config)
    assert feats.shape == (2, config.dim) and feats.dtype == np.float32
    assert np.isfinite(feats).all()


def test_dim_and_layout_follow_pooling_order() -> None:
    config = FeatureConfig(name="layout", n_mels=8, pooling=("max", "mean"))
    assert config.dim == 16
    spec = np.arange(8 * 5, dtype=np.float32).reshape(8, 5)
    vec = pool(spec, config)
    np.testing.assert_array_equal(vec[:8], spec.max(axis=1))
    np.testing.assert_allclose(vec[8:], spec.mean(axis=1))


@pytest.mark.parametrize("config", [SEED, DEFAULT], ids=lambda c: c.name)
def test_batch_equals_per_clip_and_keeps_order(config: FeatureConfig, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    clips = [rng.standard_normal(n).astype(np.float32) * g for n, g in [(SR, 1.0), (SR + 700, 0.1), (SR, 0.01), (SR, 3.0)]]
    single = [log_mel(c, config) for c in clips]
    for chunk_bytes in (F._MAX_BATCH_BYTES, 1):  # one stacked rfft per length, then one clip per call
        monkeypatch.setattr(F, "_MAX_BATCH_BYTES", chunk_bytes)
        batched = log_mel_batch(clips, config)
        assert len(batched) == len(clips)
        for a, b in zip(single, batched):
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(
            clip_features(clips, config), np.stack([pool(s, config) for s in single]), atol=1e-5, rtol=1e-5
        )


def test_gwrp_spans_mean_to_max() -> None:
    spec = np.random.default_rng(1).random((16, 50)).astype(np.float32)
    mean = spec.mean(axis=1)
    top = spec.max(axis=1)
    at = {r: pool(spec, FeatureConfig(name="g", n_mels=16, pooling=(f"gwrp:{r}",))) for r in (1, 0.9, 0.5, 1e-6)}
    np.testing.assert_allclose(at[1], mean, rtol=1e-5)
    np.testing.assert_allclose(at[1e-6], top, rtol=1e-4)
    # Lower decay weights the loudest frames more: monotone between mean and max.
    assert np.all(at[1] <= at[0.9] + 1e-6) and np.all(at[0.9] <= at[0.5] + 1e-6) and np.all(at[0.5] <= at[1e-6] + 1e-6)
    assert np.any(at[0.9] > at[1] + 1e-3) and np.any(at[0.9] < top - 1e-3)


def test_percentile_and_std_pooling() -> None:
    spec = np.random.default_rng(2).random((4, 101)).astype(np.float32)
    config = FeatureConfig(name="p", n_mels=4, pooling=("p50", "p100", "std"))
    vec = pool(spec, config)
    np.testing.assert_allclose(vec[:4], np.median(spec, axis=1), rtol=1e-6)
    np.testing.assert_allclose(vec[4:8], spec.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(vec[8:], spec.std(axis=1), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_round_trips_through_json(name: str) -> None:
    config = get_profile(name)
    back = FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config
    assert back.dim == config.dim and isinstance(back.pooling, tuple)


def test_profiles_include_seed_and_default_and_unknown_names_are_listed() -> None:
    assert {"seed", "default"} <= set(PROFILES)
    with pytest.raises(ValueError, match="seed"):
        get_profile("nope")


@pytest.mark.parametrize(
    "bad",
    [
        {"pooling": ("median",)},
        {"pooling": ("gwrp:0",)},
        {"pooling": ("gwrp:1.5",)},
        {"pooling": ("p101",)},
        {"pooling": ()},
        {"db_ref": "min"},
        {"clip_scaling": "zscore"},
        {"fmax": 9000.0},
        {"hop_length": 0},
        {"top_db": -1.0},
    ],
)
def test_invalid_configs_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        FeatureConfig(name="bad", **bad)


def test_from_dict_rejects_unknown_keys() -> None:
    d = SEED.to_dict()
    d["window"] = "hamming"
    with pytest.raises(ValueError, match="window"):
        FeatureConfig.from_dict(d)


def test_empty_and_multichannel_inputs_fail_clearly() -> None:
    with pytest.raises(AudioError) as err:
        log_mel(np.zeros(0, np.float32), SEED)
    assert err.value.code is ErrorCode.EMPTY
    with pytest.raises(ValueError):
        log_mel(np.zeros((2, SR), np.float32), SEED)


def test_seed_is_gain_invariant_and_default_is_absolute_db() -> None:
    y = np.random.default_rng(4).standard_normal(SR).astype(np.float32) * 0.05
    np.testing.assert_allclose(log_mel(10 * y, SEED), log_mel(y, SEED), atol=1e-4)
    # ref=1.0 and no clamp: a 20 dB louder clip is 20 dB higher in every band and frame.
    np.testing.assert_allclose(log_mel(10 * y, DEFAULT) - log_mel(y, DEFAULT), 20.0, atol=1e-2)


def test_silence_gives_finite_features() -> None:
    for config in (SEED, DEFAULT):
        assert np.isfinite(clip_features([np.zeros(SR, np.float32)], config)).all()


def test_default_profile_keeps_a_short_click() -> None:
    rng = np.random.default_rng(5)
    t = np.arange(10 * SR) / SR
    base = (0.05 * np.sin(2 * np.pi * 120 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    clicked = base.copy()
    start = 4 * SR
    clicked[start : start + 80] += 0.8 * rng.standard_normal(80).astype(np.float32)  # 5 ms burst
    a, b = clip_features([base, clicked], DEFAULT)
    n = DEFAULT.n_mels
    parts = {name: np.abs(b[i * n : (i + 1) * n] - a[i * n : (i + 1) * n]).mean() for i, name in enumerate(DEFAULT.pooling)}
    assert "mean" in parts and "max" in parts
    assert parts["max"] > 10 * parts["mean"]
    assert parts["max"] > 10.0  # dB: the click stands far above the background in the max part
