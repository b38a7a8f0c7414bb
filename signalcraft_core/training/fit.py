"""Train a model set on normal clips: both levels, cross-fitted calibration, artifacts + manifest.

Calibration needs raw scores of normal clips the models did not see. With the few clips a new
machine has (often 10-50), one held-out split is too small, so the calibration scores are
*out-of-fold*: K models are trained on K-1 folds and score the held-out fold; the K x (1/K)
held-out scores calibrate the final models, which are then trained on every clip.

The hybrid grade is calibrated the same way: the out-of-fold raw scores, read as tail probabilities
through each level's calibration, are merged by the recipe's `hybrid_rule` (grading.hybrid_statistic)
and a calibration is fitted on that statistic, so the hybrid's 50 / 80 mean the configured rates
too (manifest `hybrid`). `hybrid_rule="max"` writes no hybrid section (the more severe level).

Clips much shorter than the training clips score more widely spread, so the clips are also cut into
1-5 s pieces (`short_clip_cuts`) that the same fold models score out-of-fold; each length gets its
own calibrations and rule ranges (manifest `short_clips`, models/clip_length.py), and the window
(`training.clip_seconds`) is the clips' median length.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from signalcraft_core import __version__
from signalcraft_core.dsp.features import FeatureConfig, get_profile
from signalcraft_core.dsp.inputs import ClipInputs, featurise
from signalcraft_core.errors import SignalcraftError
from signalcraft_core.io.audio import DEFAULT_AUDIO_CONFIG, AudioConfig, read_wav
from signalcraft_core.models.calibration import (
    Calibration,
    HybridCalibration,
    fit_calibration,
)
from signalcraft_core.models.clip_length import (
    DEFAULT_WINDOW_SECONDS,
    MIN_CUTS,
    LengthCalibrations,
    cut_lengths,
    cuts,
)
from signalcraft_core.models.forest import CompiledForest
from signalcraft_core.models.grading import CRITICAL_SCORE, HYBRID_RULES, WARNING_SCORE
from signalcraft_core.models.level1 import iforest_raw_score
from signalcraft_core.models.level2 import score_level2
from signalcraft_core.models.level2_numpy import NumpyScoringModule
from signalcraft_core.models.manifest import (
    MANIFEST_SCHEMA_VERSION,
    artifact_entry,
    sha256_bytes,
    write_manifest,
)
from signalcraft_core.models.model_set import (
    LEVEL1_ARTIFACT,
    LEVEL2_ARTIFACT,
    descriptor_settings,
)
from signalcraft_core.models.rules import RuleSet
from signalcraft_core.training.autoencoder import (
    HIDDEN_SIZES,
    ScoringModule,
    TrainConfig,
    export_torchscript,
    production_engine,
    train_autoencoder,
)
from signalcraft_core.training.level1 import Level1Model

#: Fewer clips leave each calibration fold's forest with too few samples to score anything.
MIN_TRAINING_CLIPS = 5
ANOMALY_DIR_NAMES = frozenset({"abnormal", "anomaly", "anomalous"})
#: What training and evaluation report progress to: (stage, done, total); local/console.Progress is one.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainingOptions:
    """Everything `signalcraft train` can set; recorded in the manifest."""

    machine_type: str
    profile: str = "default"
    name: str | None = None
    epochs: int = 50
    seed: int = 0
    warning_rate: float = 0.01
    critical_rate: float = 0.001
    calibration: str = "gamma"
    folds: int = 5
    preference: str = "hybrid"
    hybrid_rule: str = "fisher"   # how the hybrid merges the levels (grading.HYBRID_RULES), or "max"
    # Level 1's share of the hybrid evidence (grading.hybrid_statistic). 0 was best on the real dev split
    # (bench/evaluate_real.py: DCASE valve dev AUC 0.958 at 0 against 0.879 at 1): the forest adds noise
    # to the autoencoder there; the rules still raise alarms of their own.
    hybrid_level1_weight: float = 0.0
    n_estimators: int = 200
    level1_jitter: float = 0.5
    level1_samples: int = 256
    train: TrainConfig = field(default_factory=TrainConfig)


def find_wavs(paths: Sequence[str | Path], include_anomalies: bool = False) -> list[Path]:
    """WAV files under the given files/folders, sorted.

    Below a given folder, files in sub-folders named abnormal/anomaly are left out unless asked;
    a file named explicitly, or a folder given explicitly, is always taken as the user meant it.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            if path.suffix.lower() == ".wav":
                found.append(path)
            continue
        for p in sorted(q for q in path.rglob("*") if q.is_file() and q.suffix.lower() == ".wav"):
            below = {part.lower() for part in p.relative_to(path).parts[:-1]}
            if include_anomalies or not ANOMALY_DIR_NAMES & below:
                found.append(p)
    return sorted(set(found))


def load_signals(
    files: Sequence[Path], audio_config: AudioConfig = DEFAULT_AUDIO_CONFIG, progress: ProgressCallback | None = None
) -> tuple[list[np.ndarray], list[Path], list[tuple[Path, SignalcraftError]]]:
    """Decode the files; unreadable ones are reported, not fatal."""
    signals, used, skipped = [], [], []
    for i, f in enumerate(files):
        try:
            signals.append(read_wav(f, audio_config).samples)
            used.append(f)
        except SignalcraftError as exc:
            skipped.append((f, exc))
        if progress:
            progress("decode", i + 1, len(files))
    return signals, used, skipped


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[k::folds] for k in range(folds)]


@dataclass(frozen=True)
class ClipCuts:
    """Cuts of the training clips at one short length, for the calibrations of clips that short."""

    seconds: float
    inputs: ClipInputs      # both levels' features of every cut
    source: np.ndarray      # (cuts,) index of the training clip each cut was taken from

    def of(self, clips: np.ndarray) -> "ClipCuts":
        """The cuts of the training clips `clips` (indices into the clips these were cut from), re-indexed
        to positions in `clips`: what a model fitted on `data.take(clips)` trains with."""
        clips = np.asarray(clips, dtype=np.intp)
        rows = np.flatnonzero(np.isin(self.source, clips))
        position = {int(c): k for k, c in enumerate(clips)}
        return ClipCuts(self.seconds, self.inputs.take(rows),
                        np.array([position[int(i)] for i in self.source[rows]], dtype=np.intp))


def short_clip_cuts(signals: Sequence[np.ndarray], profile: FeatureConfig, window_s: float) -> list[ClipCuts]:
    """The training clips cut at each of the window's short lengths (models/clip_length.py)."""
    out = []
    for seconds in cut_lengths(window_s):
        size = round(seconds * profile.sample_rate)
        pieces = [(i, x[span]) for i, x in enumerate(signals) for span in cuts(len(x), size)]
        if len(pieces) >= MIN_CUTS:
            inputs = featurise([x for _, x in pieces], profile, profile.sample_rate)
            out.append(ClipCuts(seconds, inputs, np.array([i for i, _ in pieces], dtype=np.intp)))
    return out


def training_window(data: ClipInputs) -> float:
    """The model's window: the training clips' median length (10 s when the inputs do not say)."""
    if data.seconds is None or not np.isfinite(data.seconds).any():
        return DEFAULT_WINDOW_SECONDS
    return float(np.nanmedian(data.seconds))


def out_of_fold_scores(data: ClipInputs, options: TrainingOptions, n_mels: int,
                       progress: ProgressCallback | None = None, short: Sequence[ClipCuts] = (),
                       ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Raw Level-1 and Level-2 scores of every clip, and of every cut in `short`, from models that did not
    train on the clip (production engines)."""
    n = data.level2.shape[0]
    folds = max(2, min(options.folds, n))
    oof_l2 = np.full(n, np.nan)
    oof_l1 = np.full(n, np.nan)
    oof_cuts = [(np.full(len(c.source), np.nan), np.full(len(c.source), np.nan)) for c in short]
    for k, held in enumerate(fold_indices(n, folds, options.seed)):
        fit_idx = np.setdiff1d(np.arange(n), held)
        module, _ = train_autoencoder(data.level2[fit_idx], options.train)
        engine = production_engine(module)
        oof_l2[held] = score_level2(engine, data.level2[held], n_mels).mse
        forest = fit_level1(data.level1[fit_idx], options).production_forest()
        oof_l1[held] = iforest_raw_score(forest, data.level1[held])
        for c, (l1, l2) in zip(short, oof_cuts):
            rows = np.flatnonzero(np.isin(c.source, held))
            if rows.size:
                l2[rows] = score_level2(engine, c.inputs.level2[rows], n_mels).mse
                l1[rows] = iforest_raw_score(forest, c.inputs.level1[rows])
        if progress:
            progress("calibrate", k + 1, folds)
    return oof_l1, oof_l2, oof_cuts


def fit_length_calibrations(cut: ClipCuts, oof_l1: np.ndarray, oof_l2: np.ndarray,
                            options: TrainingOptions) -> LengthCalibrations | None:
    """One short length's calibrations from its cuts' out-of-fold scores, and rule ranges from the cuts;
    None when they cannot be fitted."""
    try:
        cal1, cal2, hybrid = fit_calibrations(oof_l1, oof_l2, options)
    except ValueError:  # e.g. all cuts scored alike: the window's calibrations grade such clips
        return None
    return LengthCalibrations(seconds=cut.seconds, level1=cal1, level2=cal2, hybrid=hybrid,
                              rules=RuleSet().fit(cut.inputs.stats))


def fit_calibrations(oof_l1: np.ndarray, oof_l2: np.ndarray, options: TrainingOptions,
                     ) -> tuple[Calibration, Calibration, HybridCalibration | None]:
    """Level 1's, Level 2's and the hybrid's calibrations from out-of-fold raw scores of normal clips."""
    cal2 = fit_calibration(oof_l2, options.warning_rate, options.critical_rate, options.calibration)
    cal1 = fit_calibration(oof_l1, options.warning_rate, options.critical_rate, options.calibration)
    return cal1, cal2, fit_hybrid_calibration(oof_l1, oof_l2, cal1, cal2, options)


def jittered(descriptors: np.ndarray, samples: int, jitter: float, seed: int) -> np.ndarray:
    """The clips plus Gaussian-jittered copies (sigma = `jitter` x each feature's spread), >= `samples` rows.

    An IsolationForest fitted on 10 clips has trees 3 levels deep and cannot tell the edge of the
    normal cloud from far outside it; fitted on a smoothed cloud of a few hundred points it can
    (measured: held-out AUC on MIMII fan 0.58 -> 0.79, DCASE valve 0.70 -> 0.74). The original clips
    are kept as they are; `jitter` 0 returns them unchanged.
    """
    x = np.asarray(descriptors, dtype=np.float64)
    if jitter <= 0 or x.shape[0] >= samples:
        return x
    copies = int(np.ceil(samples / x.shape[0])) - 1
    spread = np.nan_to_num(x.std(axis=0))
    noise = np.random.default_rng(seed).standard_normal((copies * x.shape[0], x.shape[1]))
    return np.concatenate([x, np.tile(x, (copies, 1)) + noise * spread * jitter])


def fit_level1(descriptors: np.ndarray, options: TrainingOptions) -> Level1Model:
    """The Level-1 forest (StandardScaler + IsolationForest) on jittered normal descriptors."""
    x = jittered(descriptors, options.level1_samples, options.level1_jitter, options.seed)
    return Level1Model(n_estimators=options.n_estimators, random_state=options.seed).fit(x)


def resolve_options(options: TrainingOptions) -> TrainingOptions:
    """Fold the top-level epochs and seed into the autoencoder recipe (what the manifest records)."""
    train_cfg = TrainConfig(**{**asdict(options.train), "epochs": options.epochs, "seed": options.seed})
    return TrainingOptions(**{**options.__dict__, "train": train_cfg})


@dataclass
class FittedLevels:
    """Both levels fitted in memory with their calibrations: what `train` writes and `evaluate` scores.

    It reads like a ModelSet (`level2_module`, `level1_pipeline`, ... are the production engines), so
    models/decision.py scores it exactly as it scores a loaded set.
    """

    autoencoder: ScoringModule          # torch module, exported to autoencoder.pt
    level1: Level1Model                 # scikit-learn pipeline, saved to level1.joblib
    level2_module: NumpyScoringModule   # the autoencoder as production runs it
    level2_calibration: Calibration
    level1_pipeline: CompiledForest     # the forest as production runs it
    level1_calibration: Calibration
    rules: RuleSet
    profile: FeatureConfig
    preference: str
    oof_level1: np.ndarray
    oof_level2: np.ndarray
    losses: list[float]
    has_level1: bool = True
    has_level2: bool = True
    hybrid_calibration: HybridCalibration | None = None
    short_clips: tuple[LengthCalibrations, ...] = ()
    clip_seconds: float | None = None   # the window (models/clip_length.window_seconds reads it)


def fit_levels(data: ClipInputs, options: TrainingOptions, profile: FeatureConfig,
               progress: ProgressCallback | None = None, short: Sequence[ClipCuts] = ()) -> FittedLevels:
    """Out-of-fold calibration, then both levels and the rules fitted on every clip of `data`.

    `short`: cuts of the same clips (`short_clip_cuts`), whose out-of-fold scores calibrate clips of
    their lengths. `options` should come from `resolve_options`.
    """
    if len(data) < MIN_TRAINING_CLIPS:
        raise ValueError(
            f"training needs at least {MIN_TRAINING_CLIPS} normal clips (out-of-fold calibration), got {len(data)}"
        )
    oof_l1, oof_l2, oof_cuts = out_of_fold_scores(data, options, profile.n_mels, progress, short)
    fitted_cuts = (fit_length_calibrations(c, l1, l2, options) for c, (l1, l2) in zip(short, oof_cuts))
    short_clips = tuple(entry for entry in fitted_cuts if entry is not None)
    cal_l1, cal_l2, cal_hybrid = fit_calibrations(oof_l1, oof_l2, options)
    losses: list[float] = []

    def on_epoch(epoch: int, loss: float) -> None:
        losses.append(loss)
        if progress:
            progress("train", epoch + 1, options.train.epochs)

    module, _ = train_autoencoder(data.level2, options.train, on_epoch)
    level1 = fit_level1(data.level1, options)
    rules = RuleSet().fit(data.stats)
    return FittedLevels(autoencoder=module, level1=level1, level2_module=production_engine(module),
                        level2_calibration=cal_l2, level1_pipeline=level1.production_forest(),
                        level1_calibration=cal_l1, rules=rules, profile=profile, preference=options.preference,
                        oof_level1=oof_l1, oof_level2=oof_l2, losses=losses, hybrid_calibration=cal_hybrid,
                        short_clips=short_clips, clip_seconds=training_window(data))


def fit_hybrid_calibration(oof_l1: np.ndarray, oof_l2: np.ndarray, cal_l1: Calibration, cal_l2: Calibration,
                           options: TrainingOptions) -> HybridCalibration | None:
    """The hybrid statistic's calibration on the out-of-fold scores; None for `max` or rate-less calibrations."""
    if options.hybrid_rule == "max" or not (cal_l1.has_rates and cal_l2.has_rates):
        return None
    if options.hybrid_rule not in HYBRID_RULES:
        raise ValueError(f"hybrid_rule must be max or one of {', '.join(HYBRID_RULES)}, not {options.hybrid_rule!r}")
    from signalcraft_core.models.grading import hybrid_statistic

    stat = hybrid_statistic(cal_l1.decades(oof_l1), cal_l2.decades(oof_l2), options.hybrid_rule,
                            options.hybrid_level1_weight)
    cal = fit_calibration(stat, options.warning_rate, options.critical_rate, options.calibration)
    return HybridCalibration(rule=options.hybrid_rule, calibration=cal, level1_weight=options.hybrid_level1_weight)


def train_model_set(
    signals: Sequence[np.ndarray],
    out_dir: str | Path,
    options: TrainingOptions,
    source_files: Sequence[str | Path] = (),
    command: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict:
    """Fit both levels on normal clips and write autoencoder.pt, level1.joblib and manifest.json."""
    import sklearn
    import torch

    if len(signals) < MIN_TRAINING_CLIPS:
        raise ValueError(
            f"training needs at least {MIN_TRAINING_CLIPS} normal clips (out-of-fold calibration), got {len(signals)}"
        )
    profile = get_profile(options.profile)
    options = resolve_options(options)
    train_cfg = options.train
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = featurise(signals, profile, profile.sample_rate)
    window_s = training_window(data)
    fitted = fit_levels(data, options, profile, progress, short_clip_cuts(signals, profile, window_s))
    module, level1, rules = fitted.autoencoder, fitted.level1, fitted.rules
    cal_l1, cal_l2, oof_l1, oof_l2, losses = (
        fitted.level1_calibration, fitted.level2_calibration, fitted.oof_level1, fitted.oof_level2, fitted.losses
    )
    cal_hybrid = fitted.hybrid_calibration
    export_torchscript(module, out / "autoencoder.pt")
    level1.save(out / "level1.joblib")

    from signalcraft_core.dsp.descriptors import LEVEL1_FEATURE_NAMES

    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "name": options.name or f"{options.machine_type}-{profile.name}",
        "version": "",
        "machine_type": options.machine_type,
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "preference": options.preference,
        "profile": profile.to_dict(),
        "artifacts": {
            LEVEL2_ARTIFACT: artifact_entry(out, "autoencoder.pt"),
            LEVEL1_ARTIFACT: artifact_entry(out, "level1.joblib"),
        },
        "level2": {
            "input_dim": int(data.level2.shape[1]),
            "hidden_sizes": list(HIDDEN_SIZES),
            "train": asdict(train_cfg),
            "calibration": cal_l2.to_dict(),
        },
        "level1": {
            "features": list(LEVEL1_FEATURE_NAMES),
            "descriptor": descriptor_settings(),
            "n_estimators": options.n_estimators,
            "fit_samples": options.level1_samples,
            "jitter": options.level1_jitter,
            "calibration": cal_l1.to_dict(),
            "rules": rules.to_dict(),
        },
        **({"hybrid": cal_hybrid.to_dict()} if cal_hybrid is not None else {}),
        **({"short_clips": [entry.to_dict() for entry in fitted.short_clips]} if fitted.short_clips else {}),
        "training": {
            "clips": len(signals),
            "clip_seconds": window_s,
            "clip_seconds_range": [float(np.nanmin(data.seconds)), float(np.nanmax(data.seconds))],
            "files_sha256": sha256_bytes("\n".join(sorted(str(f) for f in source_files)).encode()),
            "date": dt.date.today().isoformat(),
            "folds": options.folds,
            "final_loss": losses[-1] if losses else None,
            "command": command,
            "versions": {
                "signalcraft": __version__,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "numpy": np.__version__,
                "scikit-learn": sklearn.__version__,
            },
        },
        "validation": {**validation_summary(oof_l1, oof_l2, cal_l1, cal_l2, cal_hybrid),
                       "short_clips": [{"seconds": e.seconds, "cuts": e.level2.n_clips} for e in fitted.short_clips]},
    }
    write_manifest(out, manifest)
    return json.loads((out / "manifest.json").read_text())


def validation_summary(oof_l1: np.ndarray, oof_l2: np.ndarray, cal_l1: Calibration, cal_l2: Calibration,
                       cal_hybrid: HybridCalibration | None = None) -> dict:
    """Out-of-fold alarm rates on the normal training clips (a sanity check of the calibration)."""

    def rates(cal: Calibration, raw: np.ndarray) -> dict:
        s = cal.score(raw)
        return {
            "clips": int(raw.size),
            "warning_rate": float(np.mean(s >= WARNING_SCORE)),
            "critical_rate": float(np.mean(s >= CRITICAL_SCORE)),
            "raw_median": float(np.median(raw)),
            "warning_raw": cal.warning_raw,
            "critical_raw": cal.critical_raw,
        }

    out = {"method": "out-of-fold on normal training clips", "level1": rates(cal_l1, oof_l1), "level2": rates(cal_l2, oof_l2)}
    if cal_hybrid is not None:
        stat = cal_hybrid.statistic(cal_l1.decades(oof_l1), cal_l2.decades(oof_l2))
        out["hybrid"] = {"rule": cal_hybrid.rule, **rates(cal_hybrid.calibration, stat)}
    return out
