"""Measure how well a training recipe separates real faults from normal sound, on held-out clips.

Models are trained on normal clips only (exactly as `signalcraft train` does, in memory: out-of-fold
calibration, then both levels on every training clip), then score normal clips they did not see and
the anomalous clips. Either a fixed split (train on one set, test on another) or K-fold over the
normal clips, repeated with different seeds: every fold's model scores its held-out normal clips
and ALL anomalous clips. Features are computed once per clip and sliced per fold; so are the cuts
of the normal clips that calibrate short clips (models/clip_length.py), so a short test clip is
graded as a set written by `train` grades it.

Metrics per level (level1, level2, hybrid), on the product's calibrated 0-100 scores:

- AUC: ``sklearn.metrics.roc_auc_score``, anomalous = positive class.
- pAUC: ``roc_auc_score(max_fpr=0.1)``, i.e. McClish-standardised (0.5 = chance, 1 = perfect), the
  number the DCASE task-2 baseline code prints. Not the DCASE task text's unstandardised
  "area up to FPR 0.1 divided by 0.1" (which puts chance at 0.05).
- WARNING / CRITICAL rate: share of clips scored >= 50 / >= 80, on held-out normal clips (false
  alarms) and on anomalous clips (detections).

Per-fold values are summarised as mean and sample std over folds; alarm counts are also pooled
over all held-out scores for the calibration check (see `calibration_check`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from signalcraft_core.dsp.features import FeatureConfig
from signalcraft_core.dsp.inputs import ClipInputs, featurise
from signalcraft_core.models.decision import decide
from signalcraft_core.models.grading import CRITICAL_SCORE, WARNING_SCORE
from signalcraft_core.training.fit import (
    MIN_TRAINING_CLIPS,
    ClipCuts,
    FittedLevels,
    ProgressCallback,
    TrainingOptions,
    fit_levels,
    fold_indices,
    resolve_options,
    short_clip_cuts,
    training_window,
)

LEVELS = ("level1", "level2", "hybrid")
METRICS = (
    "auc",
    "pauc",
    "warning_rate_normal",
    "critical_rate_normal",
    "warning_rate_anomalous",
    "critical_rate_anomalous",
)
PAUC_DEFINITION = (
    "sklearn roc_auc_score(max_fpr=0.1): McClish-standardised partial AUC (0.5 = chance), "
    "as the DCASE task-2 baseline code computes it"
)
MEASURABLE_EXPECTED_ALARMS = 10.0
"""A false-alarm rate counts as measured when the distinct normal clips would give >= this many alarms."""



@dataclass(frozen=True)
class EvaluationOptions:
    """How to split and what to train; `training` is the same recipe `signalcraft train` uses."""

    training: TrainingOptions
    folds: int = 5
    repeats: int = 1
    seed: int = 0
    max_fpr: float = 0.1

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if not 0.0 < self.max_fpr <= 1.0:
            raise ValueError(f"max_fpr must be in (0, 1], got {self.max_fpr}")


@dataclass(frozen=True)
class LevelScores:
    """Calibrated 0-100 scores of some clips, per level, as the product would grade them."""

    level1: np.ndarray
    level2: np.ndarray
    hybrid: np.ndarray

    def get(self, level: str) -> np.ndarray:
        return getattr(self, level)


@dataclass(frozen=True)
class FoldResult:
    """One trained model's verdict on its held-out normal clips and on the anomalous clips."""

    repeat: int
    fold: int
    n_train: int
    n_normal: int
    n_anomalous: int
    metrics: dict[str, dict[str, float]]   # level -> metric -> value
    normal_index: tuple[int, ...] = ()      # which normal clips were held out
    normal_scores: dict[str, tuple[float, ...]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class EvaluationReport:
    """Everything `signalcraft evaluate` prints: per-fold metrics, their summary, the calibration check."""

    profile: str
    mode: str                 # "kfold" or "holdout"
    folds: int
    repeats: int
    seed: int
    max_fpr: float
    clips: dict[str, int]
    results: tuple[FoldResult, ...]
    warning_rate_target: float
    critical_rate_target: float
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """level -> metric -> {mean, std, min, max} over folds (sample std; 0 for a single fold)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for level in LEVELS:
            out[level] = {}
            for metric in METRICS:
                values = np.array([r.metrics[level][metric] for r in self.results], dtype=np.float64)
                out[level][metric] = _spread(values)
        return out

    def calibration_check(self) -> dict[str, dict[str, Any]]:
        """Pooled false-alarm counts on held-out normal clips against the calibration's promises.

        The WARNING threshold promises `warning_rate_target` (1%) false alarms, which a few dozen
        clips cannot measure: it counts as measurable only when the distinct normal clips would give
        >= 10 alarms (1000 clips for 1%), and only then is `within_2x` set. What a few dozen clips
        can measure is the calibration's 10% point (score 50 / z_warn, one decade): `rate_at_10pct`.
        """
        z_warn = -math.log10(self.warning_rate_target)
        score_10pct = WARNING_SCORE / z_warn if z_warn >= 1.0 else float("nan")
        distinct = self.clips["normal"]
        out: dict[str, dict[str, Any]] = {}
        for level in LEVELS:
            scores = np.concatenate([np.asarray(r.normal_scores[level], dtype=np.float64) for r in self.results])
            n = int(scores.size)
            warn = int(np.sum(scores >= WARNING_SCORE))
            crit = int(np.sum(scores >= CRITICAL_SCORE))
            measurable = distinct * self.warning_rate_target >= MEASURABLE_EXPECTED_ALARMS
            rate = warn / n if n else float("nan")
            out[level] = {
                "held_out_normal_scores": n,
                "distinct_normal_clips": distinct,
                "warning_alarms": warn,
                "warning_rate": rate,
                # Repeats score the same clips again: the interval counts distinct clips, not scores.
                "warning_rate_ci95": list(wilson_interval(rate * distinct, distinct)) if n else [None, None],
                "warning_rate_target": self.warning_rate_target,
                "measurable": bool(measurable),
                "within_2x": (bool(self.warning_rate_target / 2 <= rate <= 2 * self.warning_rate_target)
                              if measurable else None),
                "critical_alarms": crit,
                "critical_rate": crit / n if n else float("nan"),
                "critical_rate_target": self.critical_rate_target,
                "score_at_10pct": score_10pct,
                "rate_at_10pct": float(np.mean(scores >= score_10pct)) if n and np.isfinite(score_10pct) else None,
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (`--json` / `--format json`)."""
        return {
            "profile": self.profile,
            "mode": self.mode,
            "folds": self.folds,
            "repeats": self.repeats,
            "seed": self.seed,
            "clips": dict(self.clips),
            "pauc": {"max_fpr": self.max_fpr, "definition": PAUC_DEFINITION},
            "score_thresholds": {"warning": WARNING_SCORE, "critical": CRITICAL_SCORE},
            "levels": self.summary(),
            "calibration_check": self.calibration_check(),
            "folds_detail": [
                {
                    "repeat": r.repeat,
                    "fold": r.fold,
                    "n_train": r.n_train,
                    "n_normal": r.n_normal,
                    "n_anomalous": r.n_anomalous,
                    **{level: r.metrics[level] for level in LEVELS},
                }
                for r in self.results
            ],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _spread(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "min": float(finite.min()), "max": float(finite.max())}


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate: honest about how little a few dozen clips say."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def separation_metrics(normal: np.ndarray, anomalous: np.ndarray, max_fpr: float = 0.1) -> dict[str, float]:
    """AUC, pAUC and alarm rates of one set of scores (anomalous = positive)."""
    from sklearn.metrics import roc_auc_score

    normal = np.asarray(normal, dtype=np.float64)
    anomalous = np.asarray(anomalous, dtype=np.float64)
    y = np.r_[np.zeros(normal.size), np.ones(anomalous.size)]
    s = np.r_[normal, anomalous]
    both = normal.size > 0 and anomalous.size > 0
    return {
        "auc": float(roc_auc_score(y, s)) if both else float("nan"),
        "pauc": float(roc_auc_score(y, s, max_fpr=max_fpr)) if both else float("nan"),
        "warning_rate_normal": _rate(normal, WARNING_SCORE),
        "critical_rate_normal": _rate(normal, CRITICAL_SCORE),
        "warning_rate_anomalous": _rate(anomalous, WARNING_SCORE),
        "critical_rate_anomalous": _rate(anomalous, CRITICAL_SCORE),
    }


def _rate(scores: np.ndarray, threshold: float) -> float:
    return float(np.mean(scores >= threshold)) if scores.size else float("nan")


def score_fitted(fitted: FittedLevels, data: ClipInputs) -> LevelScores:
    """The product's scores from precomputed features, through the serving decision (models/decision.py)."""
    d = decide(fitted, data, "hybrid")
    return LevelScores(level1=d.level1, level2=d.level2, hybrid=d.final)


def _fold_result(repeat: int, fold: int, n_train: int, held: np.ndarray, normal: LevelScores,
                 anomalous: LevelScores, max_fpr: float) -> FoldResult:
    return FoldResult(
        repeat=repeat,
        fold=fold,
        n_train=n_train,
        n_normal=int(normal.hybrid.size),
        n_anomalous=int(anomalous.hybrid.size),
        metrics={lv: separation_metrics(normal.get(lv), anomalous.get(lv), max_fpr) for lv in LEVELS},
        normal_index=tuple(int(i) for i in held),
        normal_scores={lv: tuple(float(v) for v in normal.get(lv)) for lv in LEVELS},
    )


def evaluate_featurised(
    normal: ClipInputs,
    anomalous: ClipInputs,
    options: EvaluationOptions,
    profile: FeatureConfig,
    train: ClipInputs | None = None,
    progress: ProgressCallback | None = None,
    cuts: Sequence[ClipCuts] = (),
) -> tuple[FoldResult, ...]:
    """Fit per fold (or once on `train`) and score held-out normal and all anomalous clips.

    `cuts`: `short_clip_cuts` of the clips the models train on (`train`, else `normal`).
    """
    base = resolve_options(options.training)
    results: list[FoldResult] = []
    if train is not None:
        total = options.repeats
        for r in range(options.repeats):
            fitted = fit_levels(train, _reseed(base, options.seed + r), profile, short=cuts)
            results.append(_fold_result(r, 0, len(train), np.arange(len(normal)), score_fitted(fitted, normal),
                                        score_fitted(fitted, anomalous), options.max_fpr))
            if progress:
                progress("evaluate", r + 1, total)
        return tuple(results)
    n = len(normal)
    folds = min(options.folds, n)
    total = folds * options.repeats
    done = 0
    for r in range(options.repeats):
        recipe = _reseed(base, options.seed + r)
        for k, held in enumerate(fold_indices(n, folds, options.seed + r)):
            fit_idx = np.setdiff1d(np.arange(n), held)
            fitted = fit_levels(normal.take(fit_idx), recipe, profile, short=[c.of(fit_idx) for c in cuts])
            results.append(_fold_result(r, k, fit_idx.size, held, score_fitted(fitted, normal.take(held)),
                                        score_fitted(fitted, anomalous), options.max_fpr))
            done += 1
            if progress:
                progress("evaluate", done, total)
    return tuple(results)


def _reseed(options: TrainingOptions, seed: int) -> TrainingOptions:
    """The same recipe with another seed (model init, inner folds, forest) for a repeat."""
    return replace(options, seed=seed, train=replace(options.train, seed=seed))


def evaluate_signals(
    normal: Sequence[np.ndarray],
    anomalous: Sequence[np.ndarray],
    options: EvaluationOptions,
    train: Sequence[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
    sample_rate: int = 16000,
) -> EvaluationReport:
    """Featurise every clip once, then `evaluate_featurised`; the report says what was measured."""
    from signalcraft_core.dsp.features import get_profile

    profile = get_profile(options.training.profile)
    if not anomalous:
        raise ValueError("evaluation needs at least one anomalous clip")
    if len(normal) < (1 if train is not None else 2):
        raise ValueError(f"evaluation needs more normal test clips, got {len(normal)}")
    # The smallest training set: a k-fold split holds out at most ceil(n / k) clips.
    fit_pool = len(train) if train is not None else len(normal) - math.ceil(len(normal) / min(options.folds, len(normal)))
    if fit_pool < MIN_TRAINING_CLIPS:
        raise ValueError(
            f"each model would train on {fit_pool} normal clips; training needs at least {MIN_TRAINING_CLIPS}"
            + ("" if train is not None else " (use more normal clips or fewer folds)")
        )
    t0 = time.perf_counter()
    groups = [normal, anomalous] + ([train] if train is not None else [])
    feats: list[ClipInputs] = []
    for k, group in enumerate(groups):
        feats.append(featurise(group, profile, sample_rate))
        if progress:
            progress("featurise", k + 1, len(groups))
    feats_normal, feats_anomalous = feats[0], feats[1]
    feats_train = feats[2] if train is not None else None
    fit_clips, fit_feats = (train, feats_train) if train is not None else (normal, feats_normal)
    cuts = short_clip_cuts(fit_clips, profile, training_window(fit_feats))
    t1 = time.perf_counter()
    results = evaluate_featurised(feats_normal, feats_anomalous, options, profile, feats_train, progress, cuts)
    t2 = time.perf_counter()
    holdout = train is not None
    return EvaluationReport(
        profile=profile.name,
        mode="holdout" if holdout else "kfold",
        folds=1 if holdout else min(options.folds, len(normal)),
        repeats=options.repeats,
        seed=options.seed,
        max_fpr=options.max_fpr,
        clips={"normal": len(normal), "anomalous": len(anomalous), "train": len(train) if holdout else 0},
        results=results,
        warning_rate_target=options.training.warning_rate,
        critical_rate_target=options.training.critical_rate,
        seconds={"featurise": t1 - t0, "fit_and_score": t2 - t1},
    )


# --- presentation ----------------------------------------------------------------------------------


def _pm(stat: dict[str, float], percent: bool = False) -> str:
    if not np.isfinite(stat["mean"]):
        return "-"
    if percent:
        return f"{100 * stat['mean']:5.1f}±{100 * stat['std']:4.1f}%"
    return f"{stat['mean']:.3f}±{stat['std']:.3f}"


def format_table(report: EvaluationReport) -> str:
    """The human-readable report: one row per level, mean ± std over folds, then the calibration check."""
    summary = report.summary()
    if report.mode == "kfold":
        how = (f"{report.folds}-fold x {report.repeats} repeat(s) over {report.clips['normal']} normal clips "
               f"(seed {report.seed}); each fold's model scores its held-out normal clips and all "
               f"{report.clips['anomalous']} anomalous clips")
    else:
        how = (f"trained on {report.clips['train']} clips x {report.repeats} seed(s); tested on "
               f"{report.clips['normal']} normal and {report.clips['anomalous']} anomalous clips")
    headers = ("level", "AUC", f"pAUC@{report.max_fpr:g}", "WARN normal", "CRIT normal", "WARN anomal.", "CRIT anomal.")
    rows = [headers]
    for level in LEVELS:
        s = summary[level]
        rows.append((
            level, _pm(s["auc"]), _pm(s["pauc"]),
            _pm(s["warning_rate_normal"], True), _pm(s["critical_rate_normal"], True),
            _pm(s["warning_rate_anomalous"], True), _pm(s["critical_rate_anomalous"], True),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = [f"profile {report.profile}: {how}", "mean±std over folds; pAUC is McClish-standardised (0.5 = chance)", ""]
    for r in rows:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))))
    lines.append("")
    check = report.calibration_check()
    target = report.warning_rate_target
    for level in LEVELS:
        c = check[level]
        lo, hi = c["warning_rate_ci95"]
        verdict = (("within 2x of target" if c["within_2x"] else "NOT within 2x of target") if c["measurable"] else
                   f"target {target:.1%} not measurable with {c['distinct_normal_clips']} distinct clips "
                   f"(needs >= {math.ceil(MEASURABLE_EXPECTED_ALARMS / target)})")
        ten = "" if c["rate_at_10pct"] is None else f"; 10% point (score {c['score_at_10pct']:.0f}): {c['rate_at_10pct']:.1%}"
        lines.append(
            f"calibration {level}: WARNING on {c['warning_alarms']}/{c['held_out_normal_scores']} held-out normal scores "
            f"({c['warning_rate']:.1%}, 95% CI {lo:.1%}-{hi:.1%}); {verdict}{ten}"
        )
    return "\n".join(lines)


def report_json(report: EvaluationReport, command: str | None = None) -> dict[str, Any]:
    """`to_dict` plus the command line that produced it, with NaN as null so it is strict JSON."""
    d = report.to_dict()
    if command:
        d["command"] = command
    return _json_safe(d)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


__all__ = [
    "EvaluationOptions",
    "EvaluationReport",
    "FoldResult",
    "LevelScores",
    "LEVELS",
    "METRICS",
    "PAUC_DEFINITION",
    "evaluate_featurised",
    "evaluate_signals",
    "format_table",
    "report_json",
    "score_fitted",
    "separation_metrics",
    "wilson_interval",
]
