"""Calibration: the 0-100 scale means stated false-alarm rates on normal sound (50 = WARNING, 80 = CRITICAL)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from signalcraft_core.models.calibration import (
    Calibration,
    fit_calibration,
    linear_calibration,
)
from signalcraft_core.models.grading import CRITICAL_SCORE, WARNING_SCORE

SHAPE, SCALE = 2.5, 0.3  # a right-skewed, MSE-like distribution of normal raw scores


def gamma_sample(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).gamma(SHAPE, SCALE, n)


@pytest.fixture(scope="module")
def fitted() -> tuple[np.ndarray, Calibration]:
    raw = gamma_sample(20_000, seed=1)
    return raw, fit_calibration(raw)


def test_gamma_fit_maps_the_fitted_warning_and_critical_quantiles_to_50_and_80(fitted):
    from scipy import stats

    _, cal = fitted
    a, scale, shift = cal.params
    assert a == pytest.approx(SHAPE, rel=0.05) and scale == pytest.approx(SCALE, rel=0.05)
    warn_raw = stats.gamma.isf(0.01, a, scale=scale) + shift
    crit_raw = stats.gamma.isf(0.001, a, scale=scale) + shift
    assert float(cal.score(warn_raw)) == pytest.approx(WARNING_SCORE, abs=1e-3)
    assert float(cal.score(crit_raw)) == pytest.approx(CRITICAL_SCORE, abs=1e-3)
    assert cal.warning_raw == pytest.approx(warn_raw, rel=1e-6)
    assert cal.critical_raw == pytest.approx(crit_raw, rel=1e-6)


def test_gamma_fit_gives_the_stated_false_alarm_rates_on_new_normal_samples(fitted):
    _, cal = fitted
    new = gamma_sample(400_000, seed=2)
    scores = cal.score(new)
    # Binomial noise is ~1.6e-4 / 5e-5 here; the rest of the slack is the fit's own uncertainty.
    assert np.mean(scores >= WARNING_SCORE) == pytest.approx(0.01, rel=0.2)
    assert np.mean(scores >= CRITICAL_SCORE) == pytest.approx(0.001, rel=0.35)
    assert np.mean(scores >= 25.0) > 0.05  # the scale is not a step: lower scores are common


def test_other_rates_move_the_thresholds():
    raw = gamma_sample(20_000, seed=3)
    cal = fit_calibration(raw, warning_rate=0.05, critical_rate=0.005)
    scores = cal.score(gamma_sample(200_000, seed=4))
    assert np.mean(scores >= WARNING_SCORE) == pytest.approx(0.05, rel=0.15)
    assert np.mean(scores >= CRITICAL_SCORE) == pytest.approx(0.005, rel=0.3)
    assert cal.warning_raw < fit_calibration(raw).warning_raw


@pytest.mark.parametrize("method", ["gamma", "quantile", "linear"])
def test_mapping_is_monotone_and_bounded(method):
    raw = gamma_sample(2_000, seed=5)
    cal = fit_calibration(raw, method=method)
    grid = np.linspace(-1.0, 3.0 * raw.max(), 5_001)
    scores = cal.score(grid)
    assert np.all(np.diff(scores) >= 0)
    assert scores.min() == 0.0 and scores.max() == 100.0
    assert np.all(np.diff(cal.raw_knots) > 0) and np.all(np.diff(cal.score_knots) >= 0)


def test_quantile_method_uses_empirical_quantiles():
    raw = gamma_sample(20_000, seed=6)
    cal = fit_calibration(raw, method="quantile")
    assert cal.method == "quantile" and cal.params == ()
    assert float(cal.score(np.quantile(raw, 0.99))) == pytest.approx(WARNING_SCORE, abs=0.01)
    assert float(cal.score(np.quantile(raw, 0.999))) == pytest.approx(CRITICAL_SCORE, abs=0.01)
    scores = cal.score(raw)
    assert np.mean(scores >= WARNING_SCORE) == pytest.approx(0.01, abs=0.001)
    assert np.mean(scores >= CRITICAL_SCORE) == pytest.approx(0.001, abs=0.0003)


def test_quantile_differs_from_gamma_on_non_gamma_data():
    """Heavy-tailed normals: the empirical method follows the data, the gamma fit does not."""
    raw = np.abs(np.random.default_rng(7).standard_t(2, 20_000))
    q, g = fit_calibration(raw, method="quantile"), fit_calibration(raw, method="gamma")
    assert np.mean(q.score(raw) >= WARNING_SCORE) == pytest.approx(0.01, abs=0.001)
    assert abs(q.warning_raw - g.warning_raw) > 0.1 * q.warning_raw


def test_nan_raw_scores_pass_through_as_nan(fitted):
    _, cal = fitted
    out = cal.score(np.array([np.nan, 0.5, np.nan]))
    assert np.isnan(out[0]) and np.isnan(out[2]) and np.isfinite(out[1])
    assert math.isnan(float(cal.score(float("nan"))))
    assert np.isnan(linear_calibration(0.05).score(np.nan))


def test_fit_ignores_non_finite_raw_scores():
    raw = gamma_sample(500, seed=8)
    dirty = np.concatenate([raw, [np.nan, np.inf, -np.inf]])
    assert fit_calibration(dirty) == fit_calibration(raw)
    assert fit_calibration(dirty).n_clips == raw.size


@pytest.mark.parametrize("method", ["gamma", "quantile", "linear"])
def test_to_dict_from_dict_round_trip_through_json(method):
    cal = fit_calibration(gamma_sample(300, seed=9), warning_rate=0.02, critical_rate=0.002, method=method)
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    probe = np.linspace(0, 5, 101)
    np.testing.assert_array_equal(back.score(probe), cal.score(probe))


def test_from_dict_refuses_knots_interp_would_misread():
    good = linear_calibration(0.05).to_dict()
    with pytest.raises(ValueError, match="equal length"):
        Calibration.from_dict({**good, "score_knots": [0.0, 50.0, 100.0]})
    with pytest.raises(ValueError, match="increasing"):
        Calibration.from_dict({**good, "raw_knots": [0.05, 0.0]})
    with pytest.raises(ValueError, match="finite"):
        Calibration.from_dict({**good, "raw_knots": [0.0, float("nan")]})


def test_linear_is_the_earlier_apps_min_1_20_mse():
    cal = linear_calibration(0.05)
    mse = np.array([0.0, 1e-4, 0.001, 0.0125, 0.025, 0.04, 0.0499, 0.05, 0.06, 0.5, 10.0])
    np.testing.assert_allclose(cal.score(mse), 100.0 * np.minimum(1.0, 20.0 * mse), atol=1e-9)
    assert cal.warning_raw == pytest.approx(0.025) and cal.critical_raw == pytest.approx(0.04)


def test_linear_method_of_fit_scales_to_twice_the_largest_normal():
    raw = gamma_sample(100, seed=10)
    cal = fit_calibration(raw, method="linear")
    assert float(cal.score(raw.max())) == pytest.approx(50.0)
    assert float(cal.score(2 * raw.max())) == pytest.approx(100.0)


@pytest.mark.parametrize(
    "warning_rate, critical_rate",
    [(0.001, 0.01), (0.01, 0.01), (0.01, 0.0), (1.0, 0.001), (0.01, -0.001), (1.5, 0.1), (float("nan"), 0.001)],
)
def test_rates_must_satisfy_0_lt_critical_lt_warning_lt_1(warning_rate, critical_rate):
    with pytest.raises(ValueError, match="false-alarm rates"):
        fit_calibration(gamma_sample(100, seed=11), warning_rate, critical_rate)


def test_unknown_method_too_few_scores_and_no_spread_are_errors():
    raw = gamma_sample(100, seed=12)
    with pytest.raises(ValueError, match="method"):
        fit_calibration(raw, method="isotonic")
    with pytest.raises(ValueError, match="at least 3"):
        fit_calibration([0.1, np.nan, 0.2, np.inf])
    with pytest.raises(ValueError, match="all 10 normal validation scores equal"):
        fit_calibration(np.full(10, 0.5))


# --- the scale above CRITICAL is pinned: 30 points per decade from 80 (0.1 %) to 100 (z = 11/3) --------------


def test_scale_above_critical_is_pinned_to_exact_scores():
    from signalcraft_core.models.calibration import score_of_decades

    z = [2.0, 2.5, 3.0, 3.1, 3.25, 3.5, 3.6, 11 / 3, 4.0, 6.0]
    expected = [50.0, 65.0, 80.0, 83.0, 87.5, 95.0, 98.0, 100.0, 100.0, 100.0]
    assert score_of_decades(z).tolist() == pytest.approx(expected, abs=1e-9)


def test_fitted_calibration_scores_beyond_the_critical_knot_follow_the_pinned_slope(fitted):
    from scipy import stats

    _, cal = fitted
    a, scale, shift = cal.params
    for z, expected in ((3.25, 87.5), (3.5, 95.0), (3.6, 98.0), (4.0, 100.0)):
        raw = stats.gamma.isf(10.0 ** -z, a, scale=scale) + shift
        assert float(cal.score(raw)) == pytest.approx(expected, abs=0.01), z
    top = float(np.interp(100.0, cal.score_knots, cal.raw_knots))
    assert cal.score_knots[-1] == 100.0 and float(cal.score(top * 1.5)) == 100.0


def test_decades_read_the_knots_back_and_continue_past_the_last_one(fitted):
    from scipy import stats

    from signalcraft_core.models.calibration import decades_of_score

    _, cal = fitted
    a, scale, shift = cal.params
    for z in (0.5, 1.0, 2.0, 3.0, 3.5):
        assert float(cal.decades(stats.gamma.isf(10.0 ** -z, a, scale=scale) + shift)) == pytest.approx(z, abs=1e-3)
    # past the top knot (score 100) the tail keeps ranking: linear in raw, close to the gamma tail
    far = [stats.gamma.isf(10.0 ** -z, a, scale=scale) + shift for z in (4.0, 5.0, 6.0)]
    got = cal.decades(np.array(far))
    assert np.all(np.diff(got) > 0.5) and got.tolist() == pytest.approx([4.0, 5.0, 6.0], abs=0.1)
    assert float(cal.decades(cal.raw_knots[0] - 1.0)) == 0.0 and np.isnan(cal.decades(np.nan))
    assert decades_of_score([0.0, 25.0, 50.0, 80.0, 95.0, 100.0]).tolist() == pytest.approx(
        [0.0, 1.0, 2.0, 3.0, 3.5, 11 / 3])


def test_linear_calibration_states_no_rates_and_has_no_decades():
    cal = linear_calibration(0.05)
    assert not cal.has_rates
    with pytest.raises(ValueError, match="no false-alarm rates"):
        cal.decades(0.01)


def test_hybrid_calibration_round_trips_and_refuses_unknown_rules(fitted):
    from signalcraft_core.models.calibration import HybridCalibration

    _, cal = fitted
    hybrid = HybridCalibration(rule="fisher", calibration=cal, level1_weight=0.25)
    again = HybridCalibration.from_dict(json.loads(json.dumps(hybrid.to_dict())))
    assert again == hybrid
    assert HybridCalibration.from_dict({"rule": "sidak", "calibration": cal.to_dict()}).level1_weight == 1.0
    with pytest.raises(ValueError, match="hybrid rule"):
        HybridCalibration(rule="mean", calibration=cal)
    with pytest.raises(ValueError, match="level1_weight"):
        HybridCalibration(rule="fisher", calibration=cal, level1_weight=2.0)
    z = np.array([0.0, 1.0, np.nan])
    assert np.isnan(hybrid.score(z, np.array([1.0, 1.0, 1.0]))[2])
