"""The product's grade scale: one place for the 0-100 thresholds and how two levels combine."""

from __future__ import annotations

import math
from enum import Enum

from signalcraft_core.config import PREFERENCES

#: A calibrated score of 50 is the WARNING threshold, 80 the CRITICAL one (see calibration.py).
WARNING_SCORE = 50.0
CRITICAL_SCORE = 80.0


class Grade(str, Enum):
    NORMAL = "NORMAL"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


def grade(score: float) -> Grade:
    """Grade a calibrated 0-100 score."""
    if score >= CRITICAL_SCORE:
        return Grade.CRITICAL
    if score >= WARNING_SCORE:
        return Grade.WARNING
    return Grade.NORMAL


def combine(level1_score: float | None, level2_score: float | None, preference: str = "hybrid") -> float:
    """The score that decides the grade.

    `hybrid` takes the more severe level (either level alone may raise an alarm); `level1` /
    `level2` select one, falling back to the other only when the model set lacks it.
    """
    if preference not in PREFERENCES:
        raise ValueError(f"preference must be one of {', '.join(PREFERENCES)}, not {preference!r}")
    present = {
        "level1": level1_score if level1_score is not None and not math.isnan(level1_score) else None,
        "level2": level2_score if level2_score is not None and not math.isnan(level2_score) else None,
    }
    if preference != "hybrid" and present[preference] is not None:
        return float(present[preference])
    values = [v for v in present.values() if v is not None]
    if not values:
        raise ValueError("no level produced a score")
    return float(max(values))
