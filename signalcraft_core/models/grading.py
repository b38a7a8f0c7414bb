"""The product's grade scale: one place for the 0-100 thresholds and how two levels combine.

Two ways to combine the levels:

- `combine` (`max`): the more severe calibrated score. Each level alone may alarm, so on normal sound
  the combined WARNING rate is up to twice the configured one. Model sets without a hybrid
  calibration (older manifests) are graded this way.
- `hybrid_statistic` + a calibration fitted on it (models/decision.py): the two levels' tail
  probabilities p1 = 10**-z1, p2 = 10**-z2 are merged into one tail probability, then that statistic
  is itself calibrated out-of-fold on the training normals, so the hybrid grade means the configured
  rates. `sidak`: -log10(1 - (1 - min(p1, p2))**2) (the min-p test, exact for independent levels);
  `fisher`: -log10 P[chi2_4 >= -2 ln(p1 p2)] (both levels' evidence adds up).
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np

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


#: Rules merging two tail probabilities (in decades) into one; `max` = no hybrid calibration.
HYBRID_RULES = ("fisher", "sidak")
_LN10 = math.log(10.0)


def hybrid_statistic(z1: np.ndarray | float, z2: np.ndarray | float, rule: str, level1_weight: float = 1.0) -> np.ndarray:
    """One tail probability, in decades (-log10 p), from the two levels' decades z1, z2 (>= 0).

    `level1_weight` w scales Level 1's evidence first (z1 -> w z1, i.e. p1 -> p1**w): 1 trusts both
    levels equally, 0 grades by Level 2 alone; the calibration of the statistic absorbs the change.

    Closed forms without exp overflow: fisher = s - log10(1 + ln(10) s) with s = z1 + z2 (chi-square,
    4 degrees of freedom); sidak = m - log10(2 - 10**-m) with m = max(z1, z2). Both are 0 when both
    levels see nothing unusual and, for independent uniform p-values, are distributed as -log10(U).
    """
    if not 0.0 <= level1_weight <= 1.0:
        raise ValueError(f"level1_weight must be in [0, 1], not {level1_weight!r}")
    a = level1_weight * np.maximum(np.asarray(z1, dtype=np.float64), 0.0)
    b = np.maximum(np.asarray(z2, dtype=np.float64), 0.0)
    if rule == "fisher":
        total = a + b
        return total - np.log10(1.0 + _LN10 * total)
    if rule == "sidak":
        m = np.maximum(a, b)
        return m - np.log10(2.0 - 10.0 ** -m)
    raise ValueError(f"hybrid rule must be one of {', '.join(HYBRID_RULES)}, not {rule!r}")
