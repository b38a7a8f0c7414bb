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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from signalcraft_core.dsp.inputs import ClipInputs
from signalcraft_core.dsp.signal_stats import CURRENT_MEASUREMENTS
from signalcraft_core.errors import ModelError
from signalcraft_core.models.calibration import HybridCalibration, decades_of_score
from signalcraft_core.models.clip_length import (
    LengthCalibrations,
    choose,
    window_seconds,
)
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


def rule_measurements(model_set: Any) -> int:
    """The measurement recipe the set's rules judge (dsp/signal_stats.py): what its clips must be measured with.

    A rule set records the recipe it learned its ranges from (v1 when written before v2); a set
    without rules takes the current one (nothing judges its statistics).
    """
    rules = getattr(model_set, "rules", None)
    # An unfitted rule set has no recipe; its evaluate() then refuses with a ModelError of its own.
    return getattr(rules, "measurements_", CURRENT_MEASUREMENTS)


def level1_scores(forest_scores: np.ndarray | None, hits: Sequence[Sequence[RuleHit]]) -> np.ndarray:
    """Level 1 = the larger of the calibrated forest score and the worst rule (0 when no rule fires)."""
    rule_max = np.array([max((h.score for h in clip_hits), default=0.0) for clip_hits in hits], dtype=np.float64)
    if forest_scores is None:
        return rule_max
    return np.fmax(np.nan_to_num(np.asarray(forest_scores, np.float64), nan=0.0), rule_max)


def decide(model_set: Any, inputs: ClipInputs, preference: str | None = None) -> Decision:
    """Score `inputs` with `model_set` (a ModelSet, or anything with its fields) under `preference`.

    The engines are the same at every length; the calibrations and rule ranges are not: a clip much
    shorter than the model's window is graded with the set's entry for its length (models/clip_length.py).
    """
    preference = preference or model_set.preference
    use_level1, use_level2 = levels_used(model_set, preference)
    n = len(inputs)
    nan = np.full(n, np.nan)
    level2_mse, bands = nan, [()] * n
    if use_level2:
        result = score_level2(model_set.level2_module, inputs.level2, model_set.profile.n_mels)
        level2_mse = result.mse
        bands = [tuple(float(v) for v in row) for row in result.band_errors]
    if_raw = nan
    hits: list[list[RuleHit]] = [[] for _ in range(n)]
    forest = use_level1 and model_set.level1_pipeline is not None
    if forest:
        if_raw = iforest_raw_score(model_set.level1_pipeline, inputs.level1)
    out = {key: np.full(n, np.nan) for key in ("final", "level1", "level2", "if_score", "hybrid")}
    main_hybrid = hybrid_applies(model_set, preference)
    for rows, scale in _scales(model_set, inputs, main_hybrid, forest, use_level2):
        cal1, cal2, hybrid_cal = scale.level1, scale.level2, scale.hybrid
        if use_level2:
            out["level2"][rows] = cal2.score(level2_mse[rows])
        if use_level1 and scale.rules is not None:
            for i in np.flatnonzero(rows):
                hits[i] = scale.rules.evaluate(inputs.stats[i])
        row_hits = [hits[i] for i in np.flatnonzero(rows)]
        if use_level1:
            if forest:
                out["if_score"][rows] = cal1.score(if_raw[rows])
            out["level1"][rows] = level1_scores(out["if_score"][rows] if forest else None, row_hits)
        if hybrid_cal is not None:
            learned = [[h for h in clip if h.rule not in SENSOR_FAULT_RULES] for clip in row_hits]
            sensor = [[h for h in clip if h.rule in SENSOR_FAULT_RULES] for clip in row_hits]
            rule_z = decades_of_score(level1_scores(None, learned), cal1.warning_rate, cal1.critical_rate)
            z1 = np.fmax(cal1.decades(if_raw[rows]), rule_z)
            out["hybrid"][rows] = hybrid_cal.score(z1, cal2.decades(level2_mse[rows]))
            out["final"][rows] = np.fmax(out["hybrid"][rows], level1_scores(None, sensor))
        else:
            out["final"][rows] = [combine(_opt(a), _opt(b), preference)
                                  for a, b in zip(out["level1"][rows], out["level2"][rows])]
    return Decision(final=out["final"], level1=out["level1"], level2=out["level2"], iforest_raw=if_raw,
                    iforest_calibrated=out["if_score"], level2_mse=level2_mse, band_errors=bands, hits=hits,
                    hybrid=None if main_hybrid is None else out["hybrid"])


def _scales(model_set: Any, inputs: ClipInputs, main_hybrid: HybridCalibration | None, forest: bool,
            level2: bool) -> Iterator[tuple[np.ndarray, LengthCalibrations]]:
    """(rows, the calibrations and rule ranges that grade them), covering every clip once: each short
    length's entry for its clips, then the window's own for the rest.

    An entry grades its clips only when it carries every calibration the window's grading uses; an
    entry without rule ranges (older sets) uses the window's.
    """
    n = len(inputs)
    window = window_seconds(model_set)
    lengths = tuple(getattr(model_set, "short_clips", ()) or ())
    choice = choose(getattr(inputs, "seconds", None), window, lengths)
    if choice.size != n:
        choice = np.full(n, -1, dtype=np.intp)
    remaining = np.ones(n, dtype=bool)
    for k, entry in enumerate(lengths):
        rows = choice == k
        complete = ((entry.level1 is not None or not forest) and (entry.level2 is not None or not level2)
                    and (entry.hybrid is not None or main_hybrid is None))
        if rows.any() and complete:
            remaining &= ~rows   # rules run only where the window's do (the inputs carry stats then)
            rules = model_set.rules if entry.rules is None or model_set.rules is None else entry.rules
            yield rows, replace(entry, hybrid=entry.hybrid if main_hybrid is not None else None, rules=rules)
    if remaining.any():
        yield remaining, LengthCalibrations(window, level1=model_set.level1_calibration,
                                            level2=model_set.level2_calibration, hybrid=main_hybrid,
                                            rules=model_set.rules)


def _opt(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
