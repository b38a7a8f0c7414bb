"""The one decision path: clip inputs + a model set -> both levels' scores and the final score.

Serving (pipeline/score.py), evaluation (analysis/evaluation.py) and training's out-of-fold
calibration all call `decide`, on the engines production runs (the numpy forest and autoencoder),
so what is measured is what is served.

- Level 1 = max(calibrated forest score, worst rule score) (`level1_scores`).
- Level 2 = calibrated reconstruction error of the autoencoder (`level2.score_level2`).
- Final   = under `level1` / `level2` that level (`grading.combine`). Under `hybrid`, when the set
  carries a hybrid calibration (manifest `hybrid`, fitted by training on out-of-fold scores): the
  Level 1's evidence (the forest, and the rules whose ranges are learned from the training normals)
  and the autoencoder's tail probabilities merged (`grading.hybrid_statistic`, Level 1 weighted by the
  manifest's `level1_weight`), calibrated to the configured rates, and never below a sensor-fault rule
  (`SENSOR_FAULT_RULES`: fixed thresholds with an absolute meaning). Without one (older sets): the
  more severe level (`grading.combine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from signalcraft_core.dsp.inputs import ClipInputs
from signalcraft_core.errors import ModelError
from signalcraft_core.models.calibration import HybridCalibration, decades_of_score
from signalcraft_core.models.grading import combine
from signalcraft_core.models.level1 import iforest_raw_score
from signalcraft_core.models.level2 import score_level2
from signalcraft_core.models.rules import RuleHit

#: Rules with fixed thresholds (a sensor or converter fault, whatever the machine): they floor the hybrid grade.
#: The others judge ranges learned from a few training clips and count as Level-1 evidence in the hybrid.
SENSOR_FAULT_RULES = frozenset({"clipping", "dead_sensor", "dc_offset"})


@dataclass
class Decision:
    """Per-clip outcome arrays, NaN where a level did not run."""

    final: np.ndarray            # (n,) the score that decides the grade, 0-100
    level1: np.ndarray           # (n,) Level-1 score, 0-100
    level2: np.ndarray           # (n,) Level-2 calibrated score, 0-100
    iforest_raw: np.ndarray      # (n,) raw forest score (higher = more anomalous)
    iforest_calibrated: np.ndarray    # (n,) calibrated forest score, 0-100
    level2_mse: np.ndarray       # (n,) reconstruction error
    band_errors: list[tuple[float, ...]]
    hits: list[list[RuleHit]]
    hybrid: np.ndarray | None = None  # (n,) calibrated hybrid statistic, 0-100; None when graded by the max rule


def hybrid_calibration(model_set: Any) -> HybridCalibration | None:
    """The set's hybrid calibration (fitted in memory, or the manifest's `hybrid` section); None if it has none."""
    fitted = getattr(model_set, "hybrid_calibration", None)
    if fitted is not None:
        return fitted
    section = (getattr(model_set, "manifest", None) or {}).get("hybrid")
    if not section:
        return None
    try:
        return HybridCalibration.from_dict(section)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{getattr(model_set, 'root', 'model set')}: manifest hybrid section is invalid ({exc!r})") from None


def hybrid_applies(model_set: Any, preference: str | None) -> HybridCalibration | None:
    """The hybrid calibration when this set grades `preference` with it (both levels, forest present), else None."""
    preference = preference or model_set.preference
    if preference != "hybrid" or levels_used(model_set, preference) != (True, True) or model_set.level1_pipeline is None:
        return None
    cal = hybrid_calibration(model_set)
    if cal is None or not (model_set.level1_calibration.has_rates and model_set.level2_calibration.has_rates):
        return None
    return cal


def levels_used(model_set: Any, preference: str | None) -> tuple[bool, bool]:
    """(Level 1 runs, Level 2 runs) for a preference; a set lacking the preferred level uses the other."""
    preference = preference or model_set.preference
    use_level2 = model_set.has_level2 and (preference != "level1" or not model_set.has_level1)
    use_level1 = model_set.has_level1 and (preference != "level2" or not model_set.has_level2)
    return use_level1, use_level2


def level1_scores(forest_scores: np.ndarray | None, hits: Sequence[Sequence[RuleHit]]) -> np.ndarray:
    """Level 1 = the larger of the calibrated forest score and the worst rule (0 when no rule fires)."""
    rule_max = np.array([max((h.score for h in clip_hits), default=0.0) for clip_hits in hits], dtype=np.float64)
    if forest_scores is None:
        return rule_max
    return np.fmax(np.nan_to_num(np.asarray(forest_scores, np.float64), nan=0.0), rule_max)


def decide(model_set: Any, inputs: ClipInputs, preference: str | None = None) -> Decision:
    """Score `inputs` with `model_set` (a ModelSet, or anything with its fields) under `preference`."""
    preference = preference or model_set.preference
    use_level1, use_level2 = levels_used(model_set, preference)
    n = len(inputs)
    nan = np.full(n, np.nan)
    level2_mse, level2, bands = nan, nan, [()] * n
    if use_level2:
        result = score_level2(model_set.level2_module, inputs.level2, model_set.profile.n_mels)
        level2_mse = result.mse
        level2 = model_set.level2_calibration.score(level2_mse)
        bands = [tuple(float(v) for v in row) for row in result.band_errors]
    if_raw, if_score, level1 = nan, nan, nan
    hits: list[list[RuleHit]] = [[] for _ in range(n)]
    if use_level1:
        if model_set.level1_pipeline is not None:
            if_raw = iforest_raw_score(model_set.level1_pipeline, inputs.level1)
            if_score = model_set.level1_calibration.score(if_raw)
        if model_set.rules is not None:
            hits = [model_set.rules.evaluate(s) for s in inputs.stats]
        level1 = level1_scores(if_score if model_set.level1_pipeline is not None else None, hits)
    hybrid_cal = hybrid_applies(model_set, preference)
    hybrid = None
    if hybrid_cal is not None:
        cal1 = model_set.level1_calibration
        learned = [[h for h in clip if h.rule not in SENSOR_FAULT_RULES] for clip in hits]
        sensor = [[h for h in clip if h.rule in SENSOR_FAULT_RULES] for clip in hits]
        rule_z = decades_of_score(level1_scores(None, learned), cal1.warning_rate, cal1.critical_rate)
        z1 = np.fmax(cal1.decades(if_raw), rule_z)
        hybrid = hybrid_cal.score(z1, model_set.level2_calibration.decades(level2_mse))
        final = np.fmax(hybrid, level1_scores(None, sensor))
    else:
        final = np.array([combine(_opt(a), _opt(b), preference) for a, b in zip(level1, level2)], dtype=np.float64)
    return Decision(final=final, level1=level1, level2=level2, iforest_raw=if_raw, iforest_calibrated=if_score,
                    level2_mse=level2_mse, band_errors=bands, hits=hits, hybrid=hybrid)


def _opt(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
