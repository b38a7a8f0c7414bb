"""Grading: the 50 / 80 thresholds and how Level 1 and Level 2 combine into the deciding score."""

from __future__ import annotations

import math

import pytest

from signalcraft_core.models.grading import (
    CRITICAL_SCORE,
    PREFERENCES,
    WARNING_SCORE,
    Grade,
    combine,
    grade,
)


@pytest.mark.parametrize(
    "score, expected",
    [
        (0.0, Grade.NORMAL),
        (49.999, Grade.NORMAL),
        (50.0, Grade.WARNING),
        (79.999, Grade.WARNING),
        (80.0, Grade.CRITICAL),
        (100.0, Grade.CRITICAL),
    ],
)
def test_thresholds(score, expected):
    assert grade(score) is expected


def test_threshold_constants_and_grade_values():
    assert (WARNING_SCORE, CRITICAL_SCORE) == (50.0, 80.0)
    assert [g.value for g in Grade] == ["NORMAL", "WARNING", "CRITICAL"]
    assert Grade("WARNING") == "WARNING"  # str enum: serialises as its name


@pytest.mark.parametrize("l1, l2", [(10.0, 90.0), (90.0, 10.0), (55.0, 55.0), (0.0, 0.0)])
def test_hybrid_takes_the_more_severe_level(l1, l2):
    assert combine(l1, l2, "hybrid") == max(l1, l2)
    assert combine(l1, l2) == max(l1, l2)  # hybrid is the default


def test_level_preference_selects_that_level_even_when_the_other_is_worse():
    assert combine(10.0, 90.0, "level1") == 10.0
    assert combine(90.0, 10.0, "level2") == 10.0


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_selection_falls_back_when_the_preferred_level_is_missing(missing):
    assert combine(missing, 70.0, "level1") == 70.0
    assert combine(30.0, missing, "level2") == 30.0
    assert combine(missing, 70.0, "hybrid") == 70.0
    assert combine(30.0, missing, "hybrid") == 30.0


def test_no_level_at_all_is_an_error():
    for preference in PREFERENCES:
        with pytest.raises(ValueError, match="no level"):
            combine(None, float("nan"), preference)


def test_unknown_preference_is_an_error():
    with pytest.raises(ValueError, match="preference must be one of"):
        combine(1.0, 2.0, "both")


def test_combine_returns_plain_floats():
    import numpy as np

    out = combine(np.float32(12.5), None, "level1")
    assert type(out) is float and out == 12.5
    assert not math.isnan(combine(float("nan"), 3.0))


# --- the hybrid as one calibrated decision -------------------------------------------------------------------


def test_hybrid_statistics_are_tail_probabilities_of_independent_uniform_p_values():
    import numpy as np

    from signalcraft_core.models.grading import hybrid_statistic

    rng = np.random.default_rng(0)
    p1, p2 = rng.uniform(size=200_000), rng.uniform(size=200_000)
    for rule in ("fisher", "sidak"):
        t = hybrid_statistic(-np.log10(p1), -np.log10(p2), rule)
        # a valid combined p-value 10**-t is uniform: 1 % of pairs reach t >= 2, 0.1 % reach t >= 3
        assert np.mean(t >= 2.0) == pytest.approx(0.01, rel=0.1), rule
        assert np.mean(t >= 3.0) == pytest.approx(0.001, rel=0.3), rule
    assert float(hybrid_statistic(0.0, 0.0, "fisher")) == 0.0 and float(hybrid_statistic(0.0, 0.0, "sidak")) == 0.0
    # weight 0: Level 2 alone decides; the statistic is monotone in z2 and ignores z1
    assert float(hybrid_statistic(5.0, 1.0, "fisher", 0.0)) == float(hybrid_statistic(0.0, 1.0, "fisher", 0.0))
    with pytest.raises(ValueError):
        hybrid_statistic(1.0, 1.0, "mean")


def _toy_set(hybrid: dict | None):
    """A ModelSet-like object whose levels return fixed raw scores (the decision path reads only these)."""
    import numpy as np

    from signalcraft_core.models.calibration import HybridCalibration, fit_calibration

    rng = np.random.default_rng(3)
    cal1 = fit_calibration(rng.gamma(3.0, 1.0, 400))
    cal2 = fit_calibration(rng.gamma(2.0, 0.1, 400))
    manifest = {"hybrid": hybrid(cal1, cal2)} if hybrid else {}

    class Set:
        level1_calibration, level2_calibration = cal1, cal2
        level1_pipeline, rules, level2_module = object(), None, object()
        has_level1 = has_level2 = True
        preference = "hybrid"
        profile = type("Profile", (), {"n_mels": 1})()

    s = Set()
    s.manifest = manifest
    return s, cal1, cal2, HybridCalibration


def test_decision_uses_the_manifest_hybrid_calibration_and_old_sets_keep_the_max_rule(monkeypatch):
    import numpy as np

    from signalcraft_core.models import decision

    raw1, raw2 = np.array([2.0, 9.0, 14.0]), np.array([0.1, 0.2, 1.5])
    monkeypatch.setattr(decision, "iforest_raw_score", lambda pipeline, x: raw1)
    monkeypatch.setattr(decision, "score_level2", lambda m, x, n: type("R", (), {"mse": raw2, "band_errors": np.zeros((3, 1))})())

    class Inputs:
        level1 = level2 = np.zeros((3, 1))
        stats = [None] * 3

        def __len__(self):
            return 3

    old, cal1, cal2, _ = _toy_set(None)
    d = decision.decide(old, Inputs())
    assert d.hybrid is None and d.final.tolist() == np.fmax(cal1.score(raw1), cal2.score(raw2)).tolist()

    def make(c1, c2):
        from signalcraft_core.models.calibration import fit_calibration
        from signalcraft_core.models.grading import hybrid_statistic

        rng = np.random.default_rng(4)
        stat = hybrid_statistic(c1.decades(rng.gamma(3.0, 1.0, 400)), c2.decades(rng.gamma(2.0, 0.1, 400)), "fisher")
        return {"rule": "fisher", "level1_weight": 1.0, "calibration": fit_calibration(stat).to_dict()}

    new, cal1, cal2, Hybrid = _toy_set(make)
    d = decision.decide(new, Inputs())
    expected = Hybrid.from_dict(new.manifest["hybrid"]).score(cal1.decades(raw1), cal2.decades(raw2))
    assert d.hybrid is not None and d.final.tolist() == pytest.approx(expected.tolist())
    assert d.final[2] > 80.0 and d.final[0] < 50.0
    # level preferences are untouched by the hybrid calibration
    assert decision.decide(new, Inputs(), "level2").final.tolist() == pytest.approx(cal2.score(raw2).tolist())
    new.manifest["hybrid"] = {"rule": "fisher"}
    from signalcraft_core.errors import ModelError

    with pytest.raises(ModelError, match="hybrid section"):
        decision.decide(new, Inputs())
