"""Map a raw anomaly score to the 0-100 scale so that grades mean stated false-alarm rates.

A calibrator is fitted on raw scores of *normal* clips the model did not train on. The default
method fits a gamma distribution to them (as the DCASE task-2 baselines do) and defines

    z(raw) = -log10(P[normal raw >= raw])     (the false-alarm rate in decades)

then maps z piecewise-linearly so that the WARNING rate (default 1%, z=2) lands on 50 and the
CRITICAL rate (default 0.1%, z=3) on 80; the slope between them continues up to 100. The
mapping is stored as a table of knots (raw -> score), so scoring is a single `np.interp` with no
scipy on the cold-start path. `quantile` uses empirical quantiles instead (only sensible with
hundreds of validation clips); `linear` reproduces the earlier app's `min(1, 20*mse)`.

`decades` reads the same knots the other way: raw -> z (the tail probability in decades), continued
linearly past the last knot (a gamma tail is asymptotically exponential, so -log10 P is linear in
raw there) so that scores saturated at 100 still rank. The hybrid statistic (grading.py) combines
the two levels' z-values; a calibration fitted on that statistic puts the combined grade on the
same 50 / 80 scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from signalcraft_core.models.grading import (
    CRITICAL_SCORE,
    HYBRID_RULES,
    WARNING_SCORE,
    hybrid_statistic,
)

METHODS = ("gamma", "quantile", "linear")


@dataclass(frozen=True)
class Calibration:
    """A monotone raw-score -> 0-100 mapping, stored as knots in the model manifest."""

    method: str
    warning_rate: float
    critical_rate: float
    raw_knots: tuple[float, ...]
    score_knots: tuple[float, ...]
    n_clips: int = 0
    params: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        """Knots come from manifests: refuse shapes np.interp would misread rather than mis-grade."""
        raw, score = np.asarray(self.raw_knots, float), np.asarray(self.score_knots, float)
        if raw.size < 2 or raw.size != score.size:
            raise ValueError(f"calibration needs >= 2 raw/score knot pairs of equal length, got {raw.size}/{score.size}")
        if not (np.all(np.isfinite(raw)) and np.all(np.isfinite(score))):
            raise ValueError("calibration knots must be finite")
        if np.any(np.diff(raw) <= 0) or np.any(np.diff(score) < 0):
            raise ValueError("calibration knots must be increasing (raw strictly, score non-decreasing)")

    def score(self, raw: np.ndarray | float) -> np.ndarray:
        """Calibrated 0-100 scores; NaN raw stays NaN."""
        raw_arr = np.asarray(raw, dtype=np.float64)
        out = np.interp(raw_arr, self.raw_knots, self.score_knots, left=0.0, right=100.0)
        return np.where(np.isnan(raw_arr), np.nan, out)

    @property
    def has_rates(self) -> bool:
        """True when the knots place stated false-alarm rates (gamma / quantile); not for `linear`."""
        return (self.method != "linear" and math.isfinite(self.warning_rate) and math.isfinite(self.critical_rate)
                and 0.0 < self.critical_rate < self.warning_rate < 1.0)

    def decades(self, raw: np.ndarray | float) -> np.ndarray:
        """z = -log10(tail probability of `raw` among normal scores), from the knots; NaN stays NaN.

        0 below the first knot, linear past the last one with the slope of the last segment.
        """
        if not self.has_rates:
            raise ValueError(f"a {self.method!r} calibration states no false-alarm rates to read decades from")
        raw_arr = np.asarray(raw, dtype=np.float64)
        raw_k = np.asarray(self.raw_knots, dtype=np.float64)
        z_k = decades_of_score(np.asarray(self.score_knots, dtype=np.float64), self.warning_rate, self.critical_rate)
        z = np.interp(raw_arr, raw_k, z_k, left=0.0)
        slope = (z_k[-1] - z_k[-2]) / (raw_k[-1] - raw_k[-2])
        z = np.where(raw_arr > raw_k[-1], z_k[-1] + slope * (raw_arr - raw_k[-1]), z)
        return np.where(np.isnan(raw_arr), np.nan, z)

    @property
    def warning_raw(self) -> float:
        return float(np.interp(WARNING_SCORE, self.score_knots, self.raw_knots))

    @property
    def critical_raw(self) -> float:
        return float(np.interp(CRITICAL_SCORE, self.score_knots, self.raw_knots))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["raw_knots"] = [float(v) for v in self.raw_knots]
        d["score_knots"] = [float(v) for v in self.score_knots]
        d["params"] = [float(v) for v in self.params]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(
            method=str(d["method"]),
            warning_rate=float(d["warning_rate"]),
            critical_rate=float(d["critical_rate"]),
            raw_knots=tuple(float(v) for v in d["raw_knots"]),
            score_knots=tuple(float(v) for v in d["score_knots"]),
            n_clips=int(d.get("n_clips", 0)),
            params=tuple(float(v) for v in d.get("params", ())),
        )


def _scale_knots(z_warn: float, z_crit: float) -> tuple[list[float], list[float]]:
    """The product scale as (z, score) knots: 0 at z=0, 50 at z_warn, 80 at z_crit, the same slope on to 100."""
    slope = (CRITICAL_SCORE - WARNING_SCORE) / (z_crit - z_warn)
    z_top = z_crit + (100.0 - CRITICAL_SCORE) / slope
    return [0.0, z_warn, z_crit, z_top], [0.0, WARNING_SCORE, CRITICAL_SCORE, 100.0]


def _score_of_decades(z: np.ndarray, z_warn: float, z_crit: float) -> np.ndarray:
    """0 at z=0, 50 at z_warn, 80 at z_crit, the same slope on to 100."""
    zk, sk = _scale_knots(z_warn, z_crit)
    return np.interp(z, zk, sk)


def score_of_decades(z: np.ndarray | float, warning_rate: float = 0.01, critical_rate: float = 0.001) -> np.ndarray:
    """The product scale for a tail probability of 10**-z: 50 at the WARNING rate, 80 at the CRITICAL rate."""
    _check_rates(warning_rate, critical_rate)
    return _score_of_decades(np.asarray(z, dtype=np.float64), -math.log10(warning_rate), -math.log10(critical_rate))


def decades_of_score(score: np.ndarray | float, warning_rate: float = 0.01, critical_rate: float = 0.001) -> np.ndarray:
    """Inverse of `score_of_decades` on 0-100 (a score of 100 reads as the top knot, z_top)."""
    _check_rates(warning_rate, critical_rate)
    zk, sk = _scale_knots(-math.log10(warning_rate), -math.log10(critical_rate))
    return np.interp(np.asarray(score, dtype=np.float64), sk, zk)


def _check_rates(warning_rate: float, critical_rate: float) -> None:
    if not 0.0 < critical_rate < warning_rate < 1.0:
        raise ValueError(
            f"false-alarm rates must satisfy 0 < critical ({critical_rate}) < warning ({warning_rate}) < 1"
        )


def fit_calibration(
    raw_normal: np.ndarray,
    warning_rate: float = 0.01,
    critical_rate: float = 0.001,
    method: str = "gamma",
) -> Calibration:
    """Fit the raw -> 0-100 mapping on raw scores of held-out normal clips."""
    _check_rates(warning_rate, critical_rate)
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, not {method!r}")
    raw = np.asarray(raw_normal, dtype=np.float64)
    raw = raw[np.isfinite(raw)]
    if raw.size < 3:
        raise ValueError(f"calibration needs at least 3 normal validation scores, got {raw.size}")
    if method != "linear" and float(np.ptp(raw)) == 0.0:
        raise ValueError(f"all {raw.size} normal validation scores equal {raw[0]!r}: no spread to calibrate a false-alarm rate on")
    z_warn, z_crit = -math.log10(warning_rate), -math.log10(critical_rate)
    slope = (CRITICAL_SCORE - WARNING_SCORE) / (z_crit - z_warn)
    z_top = z_crit + (100.0 - CRITICAL_SCORE) / slope
    # The WARNING and CRITICAL decades are knots themselves, so their raw values map to exactly 50 / 80.
    z_grid = np.union1d(np.linspace(0.0, z_top, 49), [z_warn, z_crit])
    if method == "linear":
        return linear_calibration(float(np.max(raw)) * 2.0, warning_rate, critical_rate)
    if method == "quantile":
        probs = np.clip(10.0 ** -z_grid, 1.0 / (raw.size + 1), 1.0)
        raw_knots = np.quantile(raw, 1.0 - probs)
        params: tuple[float, ...] = ()
    else:
        from scipy import (
            stats,  # fitted once at training time; scoring never imports scipy here
        )

        shift = min(0.0, float(raw.min())) - 1e-12  # gamma needs positive support
        spread = float(np.std(raw))
        if spread <= 0:
            spread = max(abs(float(raw.mean())) * 1e-3, 1e-12)
        a, loc, scale = stats.gamma.fit(raw - shift, floc=0.0)
        raw_knots = stats.gamma.isf(10.0 ** -z_grid, a, loc=loc, scale=scale) + shift
        raw_knots[0] = min(raw_knots[0], float(raw.min()) - spread)
        params = (float(a), float(scale), float(shift))
    raw_knots = np.maximum.accumulate(np.asarray(raw_knots, dtype=np.float64))
    # Strictly increasing knots keep np.interp well defined on ties (e.g. many equal quantiles).
    eps = max(abs(float(raw_knots[-1])), 1e-12) * 1e-9
    raw_knots = raw_knots + eps * np.arange(raw_knots.size)
    return Calibration(
        method=method,
        warning_rate=warning_rate,
        critical_rate=critical_rate,
        raw_knots=tuple(float(v) for v in raw_knots),
        score_knots=tuple(float(v) for v in _score_of_decades(z_grid, z_warn, z_crit)),
        n_clips=int(raw.size),
        params=params,
    )


def linear_calibration(raw_at_100: float, warning_rate: float = float("nan"), critical_rate: float = float("nan")) -> Calibration:
    """score = 100 * min(1, raw / raw_at_100): the earlier app's `min(1, 20*mse)` with raw_at_100 = 0.05."""
    return Calibration(
        method="linear",
        warning_rate=warning_rate,
        critical_rate=critical_rate,
        raw_knots=(0.0, float(raw_at_100)),
        score_knots=(0.0, 100.0),
    )


@dataclass(frozen=True)
class HybridCalibration:
    """The hybrid grade as one calibrated decision: how the levels' decades merge, and that statistic's calibration.

    Stored in the manifest's `hybrid` section (`rule`, `calibration`); the calibration is fitted on the
    statistic of the training normals' out-of-fold scores (training/fit.py).
    """

    rule: str
    calibration: Calibration
    level1_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in HYBRID_RULES:
            raise ValueError(f"hybrid rule must be one of {', '.join(HYBRID_RULES)}, not {self.rule!r}")
        if not 0.0 <= self.level1_weight <= 1.0:
            raise ValueError(f"hybrid level1_weight must be in [0, 1], not {self.level1_weight!r}")

    def statistic(self, z1: np.ndarray | float, z2: np.ndarray | float) -> np.ndarray:
        return hybrid_statistic(z1, z2, self.rule, self.level1_weight)

    def score(self, z1: np.ndarray | float, z2: np.ndarray | float) -> np.ndarray:
        """Calibrated 0-100 hybrid scores from the two levels' decades; NaN in either stays NaN."""
        z1a, z2a = np.asarray(z1, dtype=np.float64), np.asarray(z2, dtype=np.float64)
        out = self.calibration.score(self.statistic(np.nan_to_num(z1a), np.nan_to_num(z2a)))
        return np.where(np.isnan(z1a) | np.isnan(z2a), np.nan, out)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "level1_weight": float(self.level1_weight), "calibration": self.calibration.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "HybridCalibration":
        return cls(rule=str(d["rule"]), calibration=Calibration.from_dict(d["calibration"]),
                   level1_weight=float(d.get("level1_weight", 1.0)))
