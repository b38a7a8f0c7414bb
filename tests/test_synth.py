"""The synthetic generator: deterministic, well-formed, MIMII-shaped, and anomalies that show."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalcraft_core.io.audio import AudioConfig, decode_wav
from signalcraft_core.local import synth
from signalcraft_core.local.synth import (
    ANOMALY_KINDS,
    MACHINE_TYPES,
    machine_profile,
    synthesize_clip,
    write_dataset,
)

SR = 16000
ALL_CASES = [(t, None) for t in MACHINE_TYPES] + [(t, k) for t in MACHINE_TYPES for k in ANOMALY_KINDS[t]]
SPECTRAL_CASES = [(t, k) for t in MACHINE_TYPES for k in ANOMALY_KINDS[t] if k != "timing_fault"]


def _clip(machine_type: str, anomaly: str | None, seed: int, duration_s: float = 3.0) -> np.ndarray:
    return synthesize_clip(machine_type, anomaly, np.random.default_rng(seed), duration_s)


def _rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x.astype(np.float64))))))


def _band_spectrum(x: np.ndarray, nfft: int = 4096) -> np.ndarray:
    """Mean power in third-octave bands 25 Hz - 8 kHz, dB, minus its mean (level-free shape)."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), nfft)[:: nfft // 2]
    power = (np.abs(np.fft.rfft(frames * np.hanning(nfft), axis=1)) ** 2).mean(axis=0)
    f = np.fft.rfftfreq(nfft, 1 / SR)
    edges = 25.0 * 2 ** (np.arange(26) / 3)
    bands = np.array([power[(f >= lo) & (f < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])
    db = 10 * np.log10(bands + 1e-20)
    return db - db.mean()


def _periodicity(x: np.ndarray, period_s: float, hop: int = 160) -> float:
    """Autocorrelation of the log energy envelope at the machine's actuation period (+-4 %)."""
    n = x.size // hop
    env = np.log(np.sqrt(np.mean(x[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1)) + 1e-6)
    env -= env.mean()
    lag = period_s * SR / hop
    best = -1.0
    for k in range(int(lag * 0.96), int(np.ceil(lag * 1.04)) + 1):
        a, b = env[:-k], env[k:]
        best = max(best, float(a @ b / np.sqrt((a @ a) * (b @ b))))
    return best


# --------------------------------------------------------------------------- clips


@pytest.mark.parametrize(("machine_type", "anomaly"), ALL_CASES)
def test_every_type_and_kind_gives_a_valid_clip(machine_type: str, anomaly: str | None) -> None:
    x = _clip(machine_type, anomaly, seed=3, duration_s=2.0)
    assert x.dtype == np.float32
    assert x.shape == (2 * SR,)
    assert np.isfinite(x).all()
    assert np.abs(x).max() <= 1.0
    assert -50.0 < _rms_db(x) < -20.0  # audible, quiet like MIMII, never near full scale


@pytest.mark.parametrize("sample_rate", [8000, 22050, 48000])
def test_other_sample_rates_give_the_right_length(sample_rate: int) -> None:
    for machine_type in MACHINE_TYPES:
        x = synthesize_clip(machine_type, ANOMALY_KINDS[machine_type][0], np.random.default_rng(0),
                            1.5, sample_rate)
        assert x.shape == (round(1.5 * sample_rate),)
        assert np.isfinite(x).all() and np.abs(x).max() <= 1.0


@settings(max_examples=30, deadline=None)
@given(
    case=st.sampled_from(ALL_CASES),
    seed=st.integers(0, 2**32 - 1),
    duration_s=st.floats(0.01, 2.5),
)
def test_any_seed_and_duration_gives_finite_bounded_float32(
    case: tuple[str, str | None], seed: int, duration_s: float
) -> None:
    machine_type, anomaly = case
    x = synthesize_clip(machine_type, anomaly, np.random.default_rng(seed), duration_s)
    assert x.dtype == np.float32
    assert x.shape == (max(1, round(duration_s * SR)),)
    assert np.isfinite(x).all() and np.abs(x).max() <= 1.0


def test_same_rng_seed_same_clip_other_seed_differs() -> None:
    a = _clip("fan", "rattle", seed=11)
    b = _clip("fan", "rattle", seed=11)
    c = _clip("fan", "rattle", seed=12)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize(
    ("machine_type", "anomaly", "duration_s"),
    [("unknown", None, 3.0), ("valve", "cavitation", 3.0), ("fan", "leak", 3.0),
     ("pump", None, 0.0), ("pump", None, -1.0), ("pump", None, float("nan"))],
)
def test_bad_arguments_are_rejected(machine_type: str, anomaly: str | None, duration_s: float) -> None:
    with pytest.raises(ValueError):
        _clip(machine_type, anomaly, 0, duration_s)


def test_machine_id_selects_a_stable_machine() -> None:
    assert machine_profile("pump", "id_00") == machine_profile("pump", "id_00")
    assert machine_profile("pump", "id_00") != machine_profile("pump", "id_02")
    assert 25.0 <= machine_profile("pump", "id_02").shaft_hz <= 50.0
    rng = np.random.default_rng
    a = synthesize_clip("pump", None, rng(1), 2.0, machine_id="id_00")
    b = synthesize_clip("pump", None, rng(1), 2.0, machine_id="id_02")
    assert not np.allclose(a, b)


def test_ten_second_clip_is_fast() -> None:
    for machine_type in MACHINE_TYPES:
        _clip(machine_type, None, 0, 10.0)  # warm caches
        best = float("inf")
        for seed in range(5):
            t0 = time.process_time()
            _clip(machine_type, ANOMALY_KINDS[machine_type][0], seed, 10.0)
            best = min(best, time.process_time() - t0)
        assert best < 0.05, f"{machine_type}: {best * 1e3:.1f} ms"


# --------------------------------------------------------------------------- realism


@pytest.mark.parametrize("machine_type", MACHINE_TYPES)
def test_normal_level_varies_a_little_and_anomalies_are_not_just_louder(machine_type: str) -> None:
    normal = [_rms_db(_clip(machine_type, None, s)) for s in range(12)]
    assert 0.5 < max(normal) - min(normal) < 6.0  # clips differ, but by a few dB only
    for kind in ANOMALY_KINDS[machine_type]:
        abnormal = [_rms_db(_clip(machine_type, kind, 100 + s)) for s in range(4)]
        assert abs(np.median(abnormal) - np.median(normal)) < 3.0, kind


@pytest.mark.parametrize("machine_type", MACHINE_TYPES)
def test_normal_clips_are_not_identical(machine_type: str) -> None:
    a, b = _band_spectrum(_clip(machine_type, None, 1)), _band_spectrum(_clip(machine_type, None, 2))
    assert np.max(np.abs(a - b)) > 0.3


@pytest.fixture(scope="module")
def normal_model() -> dict[str, tuple[np.ndarray, np.ndarray, list[float]]]:
    """Per type: band mean and std over 12 normal clips, and max-|z| scores of 8 held-out normals."""
    out = {}
    for machine_type in MACHINE_TYPES:
        train = np.array([_band_spectrum(_clip(machine_type, None, 1000 + s)) for s in range(12)])
        mu, sd = train.mean(axis=0), np.maximum(train.std(axis=0, ddof=1), 0.5)
        held = [float(np.max(np.abs(_band_spectrum(_clip(machine_type, None, 2000 + s)) - mu) / sd))
                for s in range(8)]
        out[machine_type] = (mu, sd, held)
    return out


@pytest.mark.parametrize(("machine_type", "anomaly"), SPECTRAL_CASES)
def test_anomalies_shift_the_spectrum_beyond_normal_spread(
    normal_model: dict[str, tuple[np.ndarray, np.ndarray, list[float]]], machine_type: str, anomaly: str
) -> None:
    mu, sd, held = normal_model[machine_type]
    scores = [float(np.max(np.abs(_band_spectrum(_clip(machine_type, anomaly, 3000 + s)) - mu) / sd))
              for s in range(6)]
    assert np.median(scores) > max(held), (scores, held)
    assert min(scores) > np.median(held), (scores, held)


@pytest.mark.parametrize("machine_type", ["slider", "valve"])
def test_timing_faults_break_the_actuation_rhythm(machine_type: str) -> None:
    period = machine_profile(machine_type).period_s
    normal = [_periodicity(_clip(machine_type, None, s, 4.0), period) for s in range(8)]
    faulty = [_periodicity(_clip(machine_type, "timing_fault", 50 + s, 4.0), period) for s in range(8)]
    assert np.median(normal) > max(faulty), (normal, faulty)
    assert min(normal) > np.median(faulty), (normal, faulty)


# --------------------------------------------------------------------------- dataset files


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


def test_dataset_is_byte_identical_for_a_seed_and_differs_for_another(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_dataset(tmp_path / name, "pump", 2, 3, seed=seed, duration_s=2.0)
    a, b, c = (_tree(tmp_path / name) for name in "abc")
    assert len(a) == 5
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


def test_dataset_tree_layout_and_counts(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path, "valve", 3, 4, machine_id="id_04", duration_s=2.0)
    base = tmp_path / "valve" / "id_04"
    expected = [base / "normal" / f"{i:08d}.wav" for i in range(3)]
    expected += [base / "abnormal" / f"{i:08d}.wav" for i in range(4)]
    assert paths == expected
    assert sorted(tmp_path.rglob("*.wav")) == sorted(expected)
    assert sorted(p.name for p in (base / "abnormal").iterdir()) == [f"{i:08d}.wav" for i in range(4)]


def test_dataset_with_no_abnormal_clips(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path, "fan", 2, 0, duration_s=2.0)
    assert [p.parent.name for p in paths] == ["normal", "normal"]


def test_abnormal_clips_cycle_through_the_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str | None] = []
    real = synth.synthesize_clip

    def spy(machine_type: str, anomaly: str | None, *args: object, **kwargs: object) -> np.ndarray:
        calls.append(anomaly)
        return real(machine_type, anomaly, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(synth, "synthesize_clip", spy)
    kinds = ANOMALY_KINDS["slider"]
    write_dataset(tmp_path, "slider", 2, len(kinds) + 2, duration_s=1.0)
    assert calls[:2] == [None, None]
    assert calls[2:] == [kinds[i % len(kinds)] for i in range(len(kinds) + 2)]


def test_files_read_back_as_16_bit_mono_at_16_khz(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path, "slider", 2, 2, duration_s=2.0)
    for path in paths:
        data = path.read_bytes()
        assert int.from_bytes(data[20:22], "little") == 1  # plain PCM, not extensible
        audio = decode_wav(data)
        assert (audio.sample_rate, audio.sample_rate_in, audio.channels_in) == (SR, SR, 1)
        assert audio.format == "pcm16"
        assert audio.duration_s == pytest.approx(2.0)
        assert audio.samples.shape == (2 * SR,)
        assert -50.0 < _rms_db(audio.samples) < -20.0


@pytest.mark.parametrize(("channels", "tag"), [(2, 1), (8, 0xFFFE)])
def test_multichannel_files_are_an_array_view_of_one_source(tmp_path: Path, channels: int, tag: int) -> None:
    (path,) = write_dataset(tmp_path, "fan", 1, 0, duration_s=2.0, channels=channels)
    data = path.read_bytes()
    assert int.from_bytes(data[20:22], "little") == tag
    assert decode_wav(data).channels_in == channels
    first = decode_wav(data, AudioConfig(channel=0)).samples
    last = decode_wav(data, AudioConfig(channel=channels - 1)).samples
    assert not np.array_equal(first, last)
    # Channels differ by a few samples of delay, a fraction of a dB and sensor noise.
    n = first.size - 8
    best = max(float(np.corrcoef(first[4: 4 + n], last[4 + d: 4 + d + n])[0, 1]) for d in range(-4, 5))
    assert best > 0.95
