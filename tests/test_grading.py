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
