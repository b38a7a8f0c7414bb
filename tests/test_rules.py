"""The explainable Level-1 rules: each fires on its own fault at 16 kHz, none on normal sound."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalcraft_core.dsp.signal_stats import (
    BANDS_HZ,
    FIRST_BAND_BIN,
    MEASUREMENT_VERSIONS,
    MEASUREMENTS_V1,
    MEASUREMENTS_V2,
    SignalStats,
    signal_stats,
)
from signalcraft_core.errors import AudioError, ErrorCode, ModelError
from signalcraft_core.models.rules import RULE_NAMES, RuleHit, RuleSet

SR = 16000
SECONDS = 3.0
HUM_RMS = 0.03      # about -30 dBFS
NOISE_RMS = 0.003


def normal_clip(rng: np.random.Generator, gain_db: float | None = None) -> np.ndarray:
    """Harmonic 50 Hz hum + broadband noise, with a small random level and pitch variation."""
    t = np.arange(int(SR * SECONDS)) / SR
    f0 = 50.0 * (1.0 + rng.uniform(-0.01, 0.01))
    hum = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    x = HUM_RMS * hum / np.std(hum) + rng.normal(0.0, NOISE_RMS, t.size)
    gain_db = rng.uniform(-1.0, 1.0) if gain_db is None else gain_db
    return (x * 10 ** (gain_db / 20)).astype(np.float32)


def band_noise(rng: np.random.Generator, lo: float, hi: float, rms: float, n: int) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    y = sosfilt(butter(6, [lo, hi], btype="bandpass", fs=SR, output="sos"), rng.normal(size=n))
    return rms * y / np.std(y)


def impacts(n: int, rate_hz: float, amplitude: float, carrier_hz: float = 3500.0) -> np.ndarray:
    """A high-frequency resonance struck `rate_hz` times a second: decaying bursts, i.e. an AM carrier."""
    t = np.arange(n) / SR
    since_hit = np.mod(t, 1.0 / rate_hz)
    return amplitude * np.exp(-since_hit / 0.0008) * np.sin(2 * np.pi * carrier_hz * t)


def rules_of(hits: list[RuleHit]) -> set[str]:
    return {h.rule for h in hits}


def by_rule(hits: list[RuleHit], rule: str) -> RuleHit:
    (hit,) = [h for h in hits if h.rule == rule]
    return hit


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    rng = np.random.default_rng(0)
    return RuleSet().fit([signal_stats(normal_clip(rng), SR) for _ in range(20)])


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    """One held-out normal clip at nominal level, the starting point of every crafted fault."""
    return normal_clip(np.random.default_rng(123), gain_db=0.0).astype(np.float64)


# --- no false alarms ---------------------------------------------------------------------------

def test_no_rule_fires_on_held_out_normal_clips(rules: RuleSet) -> None:
    rng = np.random.default_rng(1)
    for _ in range(10):
        assert rules.evaluate(signal_stats(normal_clip(rng), SR)) == []


# --- each rule fires on its fault, at 16 kHz ---------------------------------------------------

def test_clipping_fires_on_hard_clipped_clip(rules: RuleSet, base: np.ndarray) -> None:
    x = np.clip(base * 40.0, -1.0, 1.0)
    hit = by_rule(rules.evaluate(signal_stats(x, SR)), "clipping")
    assert hit.score >= 80
    assert "%" in hit.message


def test_clipping_counts_flat_tops_below_full_scale(rules: RuleSet, base: np.ndarray) -> None:
    """Clipped 16-bit data that never reaches 1.0: the flat tops are the evidence."""
    loud = base * (0.9 / np.max(np.abs(base)))
    flat = np.round(np.clip(loud, -0.6, 0.6) * 32767) / 32768
    intact = np.round(loud * 32767) / 32768
    s = signal_stats(flat, SR)
    assert s.peak < 0.999
    assert s.clip_fraction >= rules.clip_warning
    assert "clipping" in rules_of(rules.evaluate(s))
    assert signal_stats(intact, SR).clip_fraction == 0.0


def test_dead_sensor_fires_on_minus_80_dbfs(rules: RuleSet, base: np.ndarray) -> None:
    x = base * (10 ** (-80 / 20) / np.sqrt(np.mean(base**2)))
    hits = rules.evaluate(signal_stats(x, SR))
    assert rules_of(hits) == {"dead_sensor"}      # not reported twice as level_low
    assert by_rule(hits, "dead_sensor").score >= 80


def test_dead_sensor_fires_on_stuck_constant_signal(rules: RuleSet) -> None:
    x = 0.2 + np.random.default_rng(2).normal(0.0, 1e-7, int(SR * SECONDS))
    hits = rules.evaluate(signal_stats(x, SR))
    assert by_rule(hits, "dead_sensor").score >= 80
    assert "dc_offset" in rules_of(hits)
    assert "level_high" not in rules_of(hits)     # a DC shift is not loudness


def test_level_high_fires_at_plus_20_db(rules: RuleSet, base: np.ndarray) -> None:
    hits = rules.evaluate(signal_stats(base * 10 ** (20 / 20), SR))
    assert rules_of(hits) == {"level_high"}
    hit = hits[0]
    assert hit.score >= 80
    assert "above normal range" in hit.message and "dBFS" in hit.message


def test_level_low_fires_at_minus_15_db(rules: RuleSet, base: np.ndarray) -> None:
    hits = rules.evaluate(signal_stats(base * 10 ** (-15 / 20), SR))
    assert rules_of(hits) == {"level_low"}
    assert 50 <= hits[0].score <= 100
    assert "below normal range" in hits[0].message


def test_band_energy_fires_on_added_5khz_hiss(rules: RuleSet, base: np.ndarray) -> None:
    x = base + band_noise(np.random.default_rng(3), 4500, 5500, 0.01, base.size)
    hits = rules.evaluate(signal_stats(x, SR))
    assert not rules_of(hits) & {"level_high", "level_low"}     # same loudness, different sound
    hit = by_rule(hits, "band_energy")
    assert hit.score >= 50
    assert "4000-8000 Hz" in hit.message and "above" in hit.message


@pytest.mark.parametrize("measurements", MEASUREMENT_VERSIONS)
def test_bearing_peaks_fires_on_impulse_train(base: np.ndarray, measurements: int) -> None:
    rate = 97.0
    rng = np.random.default_rng(0)
    rules = RuleSet().fit([signal_stats(normal_clip(rng), SR, measurements) for _ in range(20)])
    s = signal_stats(base + impacts(base.size, rate, 0.02), SR, measurements)
    hit = by_rule(rules.evaluate(s), "bearing_peaks")
    assert hit.score >= 50
    harmonic = s.envelope_peak_hz / rate
    assert round(harmonic) >= 1 and abs(harmonic - round(harmonic)) * rate <= 2.0
    assert f"{s.envelope_peak_hz:.1f} Hz" in hit.message


def test_dc_offset_fires_alone(rules: RuleSet, base: np.ndarray) -> None:
    hits = rules.evaluate(signal_stats(base + 0.1, SR))
    assert rules_of(hits) == {"dc_offset"}
    assert 50 <= hits[0].score < 80


def test_rule_names_are_stable() -> None:
    assert set(RULE_NAMES) == {
        "clipping", "dead_sensor", "level_high", "level_low", "band_energy", "bearing_peaks", "dc_offset",
    }


# --- scores ------------------------------------------------------------------------------------

def test_level_score_grows_with_gain(rules: RuleSet, base: np.ndarray) -> None:
    scores = []
    for gain_db in np.arange(8.0, 30.0, 2.0):
        hits = rules.evaluate(signal_stats(base * 10 ** (gain_db / 20), SR))
        scores.append(by_rule(hits, "level_high").score)
    diffs = np.diff(scores)
    assert np.all(diffs >= 0)
    assert np.all(diffs[np.array(scores[1:]) < 100] > 0)
    assert scores[0] < 80 <= scores[-1] and scores[-1] == 100


def test_band_score_grows_with_hiss(rules: RuleSet, base: np.ndarray) -> None:
    hiss = band_noise(np.random.default_rng(4), 4500, 5500, 1.0, base.size)
    scores = [by_rule(rules.evaluate(signal_stats(base + a * hiss, SR)), "band_energy").score
              for a in (0.006, 0.01, 0.02, 0.04)]
    assert scores == sorted(scores) and scores[0] < scores[-1]


def _shifted(rules: RuleSet, s: SignalStats, rule: str, excess: float) -> SignalStats:
    """`s` moved `excess` (dB, or a raw value for clipping / dc) beyond the normal range of `rule`."""
    if rule == "level_high":
        return replace(s, rms_dbfs=rules.level_max_ + excess, dc_offset=0.0)
    if rule == "level_low":
        return replace(s, rms_dbfs=rules.level_min_ - excess, dc_offset=0.0)
    if rule == "band_energy":
        shares = list(s.band_share_db)
        shares[4] = rules.band_max_[4] + excess
        return replace(s, band_share_db=tuple(shares))
    if rule == "bearing_peaks":
        return replace(s, envelope_peak_db=rules.envelope_max_ + excess)
    if rule == "clipping":
        return replace(s, clip_fraction=excess)
    if rule == "dc_offset":
        return replace(s, dc_offset=excess)
    raise AssertionError(rule)


def _thresholds(rules: RuleSet, rule: str) -> tuple[float, float, float]:
    """(warning excess, critical excess, an excess far enough beyond critical to hit the cap of 100)."""
    return {
        "level_high": (rules.level_margin_db, rules.level_critical_db, 25.0),
        "level_low": (rules.level_margin_db, rules.level_critical_db, 25.0),   # below the dead margin
        "band_energy": (rules.band_margin_db, rules.band_critical_db, 25.0),
        "bearing_peaks": (rules.envelope_margin_db, rules.envelope_critical_db, 25.0),
        "clipping": (rules.clip_warning, rules.clip_critical, 1.0),
        "dc_offset": (rules.dc_warning, 4 * rules.dc_warning, 0.9),
    }[rule]


GRADED_RULES = ["level_high", "level_low", "band_energy", "bearing_peaks", "clipping", "dc_offset"]


@pytest.mark.parametrize("rule", GRADED_RULES)
def test_warning_and_critical_boundaries(rules: RuleSet, base: np.ndarray, rule: str) -> None:
    s = signal_stats(base, SR)
    warn, crit, capped = _thresholds(rules, rule)
    eps = 1e-6 * crit

    def score(excess: float) -> float | None:
        hits = [h for h in rules.evaluate(_shifted(rules, s, rule, excess)) if h.rule == rule]
        return hits[0].score if hits else None

    assert score(warn - (crit - warn) * 0.01) is None                  # just inside: silent
    assert score(warn + eps) == pytest.approx(50.0, abs=1e-3)          # at the margin: WARNING
    assert 50.0 <= score(warn + eps) < 80.0
    assert score(crit - (crit - warn) * 0.01) < 80.0                   # just short: still WARNING
    assert score(crit + eps) == pytest.approx(80.0, abs=1e-3)          # at critical: CRITICAL
    assert score(crit + eps) >= 80.0
    assert score(capped) == 100.0                                      # capped


@settings(max_examples=80, deadline=None)
@given(a=st.floats(0.0, 150.0), b=st.floats(0.0, 150.0),
       rule=st.sampled_from(["level_high", "level_low", "band_energy", "bearing_peaks"]))
def test_scores_are_monotone_in_the_excess(rules: RuleSet, base_stats: SignalStats,
                                           a: float, b: float, rule: str) -> None:
    """Including across the level_low -> dead_sensor hand-over: a quieter clip never scores lower."""
    lo, hi = sorted((a, b))
    names = {rule, "dead_sensor"} if rule == "level_low" else {rule}

    def score(excess: float) -> float:
        hits = [h for h in rules.evaluate(_shifted(rules, base_stats, rule, excess)) if h.rule in names]
        assert len(hits) <= 1
        return hits[0].score if hits else 0.0

    assert 0.0 <= score(lo) <= score(hi) <= 100.0


@pytest.fixture(scope="module")
def base_stats(base: np.ndarray) -> SignalStats:
    return signal_stats(base, SR)


def test_dead_sensor_is_critical_from_its_margin(base_stats: SignalStats) -> None:
    """With a wide level_low ramp the dead_sensor floor of 80 shows; the hand-over stays monotone."""
    wide = RuleSet(level_margin_db=6.0, level_critical_db=60.0, dead_margin_db=30.0).fit([base_stats])

    def low(deficit: float) -> RuleHit:
        (hit,) = wide.evaluate(replace(base_stats, rms_dbfs=wide.level_min_ - deficit, dc_offset=0.0))
        return hit

    assert low(29.9).rule == "level_low" and low(29.9).score < 80
    assert low(30.1).rule == "dead_sensor" and low(30.1).score == pytest.approx(80.0)
    assert low(80.0).rule == "dead_sensor" and 80.0 < low(80.0).score < low(100.0).score


# --- persistence -------------------------------------------------------------------------------

def test_to_dict_round_trip_gives_same_hits(rules: RuleSet, base: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    clips = [
        base, np.clip(base * 40, -1, 1), base * 1e-4, base * 10, base * 0.2,
        base + band_noise(rng, 4500, 5500, 0.01, base.size), base + impacts(base.size, 100.0, 0.02), base + 0.1,
    ]
    doc = json.loads(json.dumps(rules.to_dict()))
    loaded = RuleSet.from_dict(doc)
    assert loaded.to_dict() == rules.to_dict()
    for x in clips:
        s = signal_stats(x, SR)
        assert loaded.evaluate(s) == rules.evaluate(s)
    assert sum(bool(rules.evaluate(signal_stats(x, SR))) for x in clips) == len(clips) - 1


def test_custom_params_survive_round_trip(rules: RuleSet) -> None:
    custom = RuleSet(level_margin_db=3.0, level_critical_db=9.0, dc_warning=0.02)
    custom.fit([signal_stats(np.random.default_rng(6).normal(0, 0.01, SR), SR)])
    loaded = RuleSet.from_dict(json.loads(json.dumps(custom.to_dict())))
    assert loaded.level_margin_db == 3.0 and loaded.dc_warning == 0.02
    assert loaded.level_max_ == custom.level_max_


def test_unfitted_and_malformed_rule_sets_are_model_errors() -> None:
    unfitted = RuleSet.from_dict(RuleSet().to_dict())
    with pytest.raises(ModelError):
        unfitted.evaluate(signal_stats(np.random.default_rng(7).normal(0, 0.01, SR), SR))
    doc = RuleSet().fit([signal_stats(np.random.default_rng(8).normal(0, 0.01, SR), SR)]).to_dict()
    for broken in (
        {**doc, "format": "something else"},
        {**doc, "bands_hz": [[0, 500]]},
        {**doc, "params": {**doc["params"], "surprise": 1.0}},
        {**doc, "state": {**doc["state"], "band_min_db": [0.0]}},
        {**doc, "state": {"level_min_db": -40.0}},
    ):
        with pytest.raises(ModelError):
            RuleSet.from_dict(broken)


def test_bad_params_are_rejected_at_fit(base_stats: SignalStats) -> None:
    with pytest.raises(ValueError):
        RuleSet(level_margin_db=12.0, level_critical_db=6.0).fit([base_stats])
    with pytest.raises(ValueError):
        RuleSet(dc_warning=-1.0).fit([base_stats])
    with pytest.raises(ValueError):
        RuleSet().fit([])


# --- measurements --------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [
    np.zeros(SR), np.full(SR, 1e-12), np.random.default_rng(9).normal(0, 1e-9, SR),
    np.random.default_rng(10).normal(0, 1e-6, 100), np.array([0.0]), np.array([0.5]),
], ids=["zeros", "tiny-constant", "1e-9-noise", "100-samples", "one-zero", "one-sample"])
def test_stats_are_finite_on_near_silence_and_tiny_clips(rules: RuleSet, x: np.ndarray) -> None:
    s = signal_stats(x.astype(np.float32), SR)
    values = [s.rms_dbfs, s.peak, s.crest_db, s.clip_fraction, s.dc_offset, s.envelope_peak_db,
              s.envelope_peak_hz, *s.band_share_db]
    assert all(math.isfinite(v) for v in values)
    assert s.rms_dbfs >= -160.0 and len(s.band_share_db) == len(BANDS_HZ)
    rules.evaluate(s)                                           # must not raise


def test_silence_is_a_dead_sensor(rules: RuleSet) -> None:
    assert by_rule(rules.evaluate(signal_stats(np.zeros(SR, np.float32), SR)), "dead_sensor").score == 100.0


def test_stats_measure_what_they_claim() -> None:
    t = np.arange(SR * 2) / SR
    x = 0.5 * np.sin(2 * np.pi * 1500 * t)                  # all energy in the 1000-2000 Hz band
    s = signal_stats(x, SR)
    assert s.rms_dbfs == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert s.crest_db == pytest.approx(20 * math.log10(math.sqrt(2)), abs=0.01)
    assert s.peak == pytest.approx(0.5, abs=1e-3) and s.clip_fraction == 0.0
    assert abs(s.dc_offset) < 1e-6
    assert s.band_share_db[2] == pytest.approx(0.0, abs=0.01)
    assert max(s.band_share_db[:2] + s.band_share_db[3:]) < -40


def _stft_reference_shares(x: np.ndarray) -> list[float]:
    """v2's band shares by their definition, one frame at a time in float64: centred Hann frames of 2048,
    hop 512, zero padding of 1024; |rfft|**2 summed over the frames that hold no padding; bins from
    FIRST_BAND_BIN, a bin in [lo, hi) (the last band's top included)."""
    padded = np.pad(np.asarray(x, np.float64), 1024)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2048) / 2048)
    inner = range(2, (x.size - 1024) // 512 + 1)   # the frames wholly inside the clip
    power = sum(np.abs(np.fft.rfft(padded[t * 512:t * 512 + 2048] * window)) ** 2 for t in inner)
    freqs = np.arange(power.size) * SR / 2048
    total = power[FIRST_BAND_BIN:].sum()
    shares = []
    for i, (lo, hi) in enumerate(BANDS_HZ):
        inside = (freqs >= lo) & ((freqs <= hi) if i == len(BANDS_HZ) - 1 else (freqs < hi))
        inside[:FIRST_BAND_BIN] = False
        shares.append(10 * math.log10(power[inside].sum() / total))
    return shares


def _band_limited_noise(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """Noise with its spectrum exactly zero outside [lo, hi] Hz (on the clip's own FFT grid)."""
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    spectrum[(freqs < lo) | (freqs > hi)] = 0
    y = np.fft.irfft(spectrum, n)
    return 0.05 * y / np.std(y)


def test_v2_band_shares_are_the_stft_definition() -> None:
    rng = np.random.default_rng(21)
    t = np.arange(2 * SR) / SR
    for x in (rng.normal(0, 0.05, 2 * SR), normal_clip(rng), 0.3 * np.sin(2 * np.pi * 997 * t) + 0.2,
              _band_limited_noise(rng, 300, 3000, 2 * SR) + rng.normal(0, 1e-3, 2 * SR)):
        got = signal_stats(x.astype(np.float32), SR, MEASUREMENTS_V2).band_share_db
        want = _stft_reference_shares(x.astype(np.float32))
        assert got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("band", range(len(BANDS_HZ)))
def test_v2_band_limited_noise_lands_in_its_band(band: int) -> None:
    """Noise inside one band (clear of its edges by the Hann frames' main lobe) puts its energy there;
    a DC offset 4x the noise moves no share (it lands in the frames' bins 0 and 1, below the lowest band)."""
    lo, hi = BANDS_HZ[band]
    guard = 4 * SR / 2048   # the main lobe spans two bins each side
    x = _band_limited_noise(np.random.default_rng(band), lo + guard + (20 if lo == 0 else 0), hi - guard, 3 * SR)
    for offset in (0.0, 0.2):
        shares = signal_stats((x + offset).astype(np.float32), SR, MEASUREMENTS_V2).band_share_db
        assert shares[band] == pytest.approx(0.0, abs=0.01)
        assert max(shares[:band] + shares[band + 1:]) < -30


def test_v2_measures_level_peak_crest_clipping_and_dc_as_v1() -> None:
    rng = np.random.default_rng(40)
    for x in (normal_clip(rng), np.clip(rng.normal(0.05, 0.5, 2 * SR), -1, 1), np.full(SR, 0.3) + rng.normal(0, 1e-6, SR)):
        one, two = (signal_stats(x.astype(np.float32), SR, m) for m in (MEASUREMENTS_V1, MEASUREMENTS_V2))
        assert (two.rms_dbfs, two.peak, two.crest_db, two.clip_fraction, two.dc_offset) == \
            (one.rms_dbfs, one.peak, one.crest_db, one.clip_fraction, one.dc_offset)


def test_rule_ranges_judge_only_their_own_recipe(base: np.ndarray) -> None:
    """Ranges learned from one recipe refuse the other's numbers; a rule document without a version is v1."""
    clips = [normal_clip(np.random.default_rng(30 + i)) for i in range(4)]
    v1 = [signal_stats(x, SR, MEASUREMENTS_V1) for x in clips]
    v2 = [signal_stats(x, SR, MEASUREMENTS_V2) for x in clips]
    fitted = RuleSet().fit(v2)
    assert fitted.measurements_ == MEASUREMENTS_V2 and fitted.to_dict()["state"]["measurements"] == MEASUREMENTS_V2
    fitted.evaluate(v2[0])
    with pytest.raises(ModelError, match="v2 measurements"):
        fitted.evaluate(v1[0])
    with pytest.raises(ValueError, match="one recipe"):
        RuleSet().fit(v1 + v2)
    doc = RuleSet().fit(v1).to_dict()
    del doc["state"]["measurements"]
    older = RuleSet.from_dict(doc)
    assert older.measurements_ == MEASUREMENTS_V1 and older.evaluate(v1[0]) == RuleSet().fit(v1).evaluate(v1[0])
    with pytest.raises(ModelError):
        RuleSet.from_dict({**doc, "state": {**doc["state"], "measurements": 3}})


def test_bad_input_raises_typed_errors() -> None:
    with pytest.raises(AudioError) as err:
        signal_stats(np.array([], np.float32), SR)
    assert err.value.code is ErrorCode.EMPTY
    with pytest.raises(AudioError) as err:
        signal_stats(np.array([0.0, np.nan, 0.1], np.float32), SR)
    assert err.value.code is ErrorCode.NON_FINITE
    with pytest.raises(ValueError):
        signal_stats(np.zeros((SR, 2), np.float32), SR)
    with pytest.raises(ValueError):
        signal_stats(np.zeros(SR, np.int16), SR)


# --- real recordings -------------------------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.parametrize("folder", ["dcase-valve-sec00/normal", "mimii-fan-id00-0dB/normal"])
def test_rules_stay_quiet_on_held_out_real_normal_clips(shared_data, folder: str) -> None:
    """Fit on half of a machine's normal recordings; the other half must (almost) never raise a rule."""
    from scipy.io import wavfile

    paths = sorted((shared_data / folder).glob("*.wav"))
    if len(paths) < 4:
        pytest.skip(f"too few recordings in {folder}")
    stats = []
    for path in paths:
        rate, data = wavfile.read(path)
        mono = data[:, 0] if data.ndim > 1 else data
        stats.append(signal_stats(mono.astype(np.float32) / 32768.0, rate))
    half = len(stats) // 2
    fitted = RuleSet().fit(stats[:half])
    fired = [fitted.evaluate(s) for s in stats[half:]]
    assert sum(bool(h) for h in fired) <= 0.1 * len(fired), fired


def test_an_unfitted_rule_set_is_a_model_error_at_scoring_not_an_attribute_error() -> None:
    from types import SimpleNamespace

    from signalcraft_core.dsp.signal_stats import CURRENT_MEASUREMENTS
    from signalcraft_core.models.decision import rule_measurements

    unfitted = RuleSet.from_dict(RuleSet().to_dict())
    assert rule_measurements(SimpleNamespace(rules=unfitted)) == CURRENT_MEASUREMENTS
    with pytest.raises(ModelError, match="not fitted"):
        unfitted.evaluate(signal_stats(np.random.default_rng(9).normal(0, 0.01, SR).astype(np.float32), SR))
