"""`signalcraft evaluate`: held-out separation on synthetic and real faults, the JSON contract, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from signalcraft_core.analysis.evaluation import (
    LEVELS,
    METRICS,
    EvaluationOptions,
    evaluate_signals,
    score_fitted,
    separation_metrics,
    wilson_interval,
)
from signalcraft_core.dsp.features import get_profile
from signalcraft_core.dsp.inputs import ClipInputs, featurise
from signalcraft_core.io.audio import Audio
from signalcraft_core.local.cli.app import cli
from signalcraft_core.local.cli.evaluate import evaluate as _registered  # noqa: F401 - registers the command
from signalcraft_core.local.synth import synthesize_clip, write_dataset
from signalcraft_core.training.fit import (
    TrainingOptions,
    fit_levels,
    jittered,
    resolve_options,
)

FAST = ("--epochs", "20")


def run(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def pump(tmp_path_factory) -> Path:
    """Synthetic pump: 20 normal + 10 abnormal clips of 3 s (every anomaly kind twice)."""
    root = tmp_path_factory.mktemp("evaluate")
    write_dataset(root, "pump", 20, 10, seed=0, duration_s=3.0)
    return root / "pump" / "id_00"


@pytest.fixture(scope="module")
def pump_report(pump) -> dict:
    result = run("evaluate", "--normal", pump / "normal", "--anomalous", pump / "abnormal", "--folds", "4",
                 "--format", "json", "-q", *FAST)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# --- the numbers ------------------------------------------------------------------------------------


def test_default_profile_detects_synthetic_faults(pump_report):
    """Synthetic faults are found; the hybrid grade ranks as Level 2 does (Level-1 weight 0, chosen on real dev clips).

    The earlier bar (hybrid AUC >= 0.95 here) held when the hybrid took the more severe level: the synthetic
    faults are ones Level 1 sees. The recipe's hybrid now follows the real-recording dev split (issue 13), which
    says the forest adds noise to the autoencoder; on this synthetic set that costs about 0.1 AUC.
    """
    levels = pump_report["levels"]
    assert pump_report["profile"] == "default"
    assert levels["hybrid"]["auc"]["mean"] >= 0.85
    assert levels["hybrid"]["auc"]["mean"] >= levels["level2"]["auc"]["mean"] - 0.02
    # Each level carries signal on its own, far above chance (0.5).
    assert levels["level1"]["auc"]["mean"] >= 0.75 and levels["level2"]["auc"]["mean"] >= 0.75
    # Faults raise alarms; normal clips mostly do not.
    assert levels["hybrid"]["warning_rate_anomalous"]["mean"] >= 0.5
    assert levels["hybrid"]["warning_rate_normal"]["mean"] <= 0.25


def test_json_report_has_every_field(pump_report):
    r = pump_report
    assert r["mode"] == "kfold" and r["folds"] == 4 and r["repeats"] == 1
    assert r["clips"] == {"normal": 20, "anomalous": 10, "train": 0}
    assert r["pauc"]["max_fpr"] == 0.1 and "McClish" in r["pauc"]["definition"]
    assert r["command"].startswith("signalcraft evaluate")
    for level in LEVELS:
        assert set(r["levels"][level]) == set(METRICS)
        for stat in r["levels"][level].values():
            assert set(stat) == {"mean", "std", "min", "max"} and stat["min"] <= stat["mean"] <= stat["max"]
        check = r["calibration_check"][level]
        assert check["held_out_normal_scores"] == 20 and check["distinct_normal_clips"] == 20
        assert check["measurable"] is False and check["within_2x"] is None  # 20 clips cannot measure 1%
        assert check["warning_rate"] == pytest.approx(check["warning_alarms"] / 20)
    folds = r["folds_detail"]
    assert len(folds) == 4
    assert sum(f["n_normal"] for f in folds) == 20  # every normal clip held out exactly once
    assert all(f["n_anomalous"] == 10 and f["n_train"] + f["n_normal"] == 20 for f in folds)
    aucs = [f["hybrid"]["auc"] for f in folds]
    assert r["levels"]["hybrid"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert r["levels"]["hybrid"]["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))


def test_separation_metrics_use_mcclish_pauc_and_score_thresholds():
    perfect = separation_metrics(np.array([1.0, 2.0, 3.0]), np.array([60.0, 90.0]))
    assert perfect["auc"] == 1.0 and perfect["pauc"] == pytest.approx(1.0)
    assert perfect["warning_rate_anomalous"] == 1.0 and perfect["critical_rate_anomalous"] == 0.5
    assert perfect["warning_rate_normal"] == 0.0
    chance = separation_metrics(np.full(10, 40.0), np.full(10, 40.0))
    # McClish puts chance at 0.5 (the unstandardised DCASE-text pAUC would be 0.05).
    assert chance["auc"] == pytest.approx(0.5) and chance["pauc"] == pytest.approx(0.5)
    reversed_ = separation_metrics(np.array([80.0, 90.0]), np.array([1.0, 2.0]))
    assert reversed_["auc"] == 0.0 and reversed_["pauc"] < 0.5
    assert reversed_["critical_rate_normal"] == 1.0


def test_wilson_interval_is_wide_for_few_clips():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35  # 0 alarms in 10 clips does not rule out 25 %
    lo, hi = wilson_interval(10, 1000)
    assert lo < 0.01 < hi and hi - lo < 0.02


# --- the mechanics ----------------------------------------------------------------------------------


def _clips(kind: str | None, n: int, seed: int, seconds: float = 2.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [synthesize_clip("valve", kind, rng, seconds) for _ in range(n)]


def test_evaluation_scores_equal_the_product_scoring_pipe():
    """score_fitted (precomputed features) must grade exactly as scoring.score_audio does."""
    from signalcraft_core.models.forest import CompiledForest
    from signalcraft_core.models.level2_numpy import NumpyScoringModule
    from signalcraft_core.models.model_set import ModelSet
    from signalcraft_core.pipeline.score import score_audio

    profile = get_profile("default")
    train = _clips(None, 6, seed=1)
    test = _clips(None, 2, seed=2) + _clips("rattle", 2, seed=3)
    options = resolve_options(TrainingOptions("valve", epochs=5, folds=2, n_estimators=20))
    fitted = fit_levels(featurise(train, profile), options, profile)
    # evaluation scores on the engines production runs, not on scikit-learn / torch
    assert isinstance(fitted.level2_module, NumpyScoringModule) and isinstance(fitted.level1_pipeline, CompiledForest)
    ours = score_fitted(fitted, featurise(test, profile))
    model_set = ModelSet(
        root=Path("."), manifest={"name": "t", "version": "v1", "machine_type": "valve", "preference": "hybrid",
                                  "hybrid": fitted.hybrid_calibration.to_dict()},
        profile=profile, level2_module=fitted.level2_module, level2_calibration=fitted.level2_calibration,
        level1_pipeline=fitted.level1_pipeline, level1_calibration=fitted.level1_calibration, rules=fitted.rules,
    )
    audios = [Audio(samples=s, sample_rate=16000, sample_rate_in=16000, channels_in=1, duration_s=2.0, format="float32")
              for s in test]
    product = score_audio(model_set, audios)
    np.testing.assert_allclose(ours.level1, [r.level1_score for r in product], atol=1e-6)
    np.testing.assert_allclose(ours.level2, [r.level2_score for r in product], atol=1e-4)
    np.testing.assert_allclose(ours.hybrid, [r.score for r in product], atol=1e-3)


def test_holdout_mode_trains_once_per_repeat_and_tests_every_clip():
    options = EvaluationOptions(TrainingOptions("valve", epochs=3, folds=2, n_estimators=10), repeats=2)
    report = evaluate_signals(_clips(None, 3, 5), _clips("leak", 2, 6), options, train=_clips(None, 6, 4))
    assert report.mode == "holdout" and len(report.results) == 2
    assert all(r.n_train == 6 and r.n_normal == 3 and r.n_anomalous == 2 for r in report.results)
    assert report.calibration_check()["level2"]["held_out_normal_scores"] == 6  # 3 clips x 2 repeats
    assert report.calibration_check()["level2"]["distinct_normal_clips"] == 3


def test_repeats_reshuffle_folds():
    options = EvaluationOptions(TrainingOptions("valve", epochs=2, folds=2, n_estimators=10), folds=2, repeats=2)
    report = evaluate_signals(_clips(None, 12, 7, 1.0), _clips("rattle", 2, 8, 1.0), options)
    assert len(report.results) == 4
    first, second = (sorted(r.normal_index for r in report.results if r.repeat == k) for k in (0, 1))
    assert sorted(i for fold in first for i in fold) == list(range(12))
    assert first != second


def test_too_few_clips_are_refused_before_any_work():
    options = EvaluationOptions(TrainingOptions("valve"), folds=2)
    with pytest.raises(ValueError, match="at least"):
        evaluate_signals(_clips(None, 6, 1, 1.0), _clips("leak", 1, 2, 1.0), options)  # 3 per fold
    with pytest.raises(ValueError, match="anomalous"):
        evaluate_signals(_clips(None, 12, 1, 1.0), [], options)


def test_featurised_take_and_jitter():
    data = ClipInputs(level2=np.arange(12.0).reshape(4, 3), level1=np.arange(8.0).reshape(4, 2), stats=list("abcd"))
    part = data.take([2, 0])
    assert len(part) == 2 and part.stats == ["c", "a"] and part.level2[0].tolist() == [6.0, 7.0, 8.0]
    x = np.random.default_rng(0).standard_normal((10, 3))
    out = jittered(x, samples=256, jitter=0.5, seed=1)
    assert out.shape[0] >= 256 and np.array_equal(out[:10], x)  # the real clips come first, unchanged
    assert np.allclose(out.mean(axis=0), x.mean(axis=0), atol=0.2)  # copies scatter around the clips
    assert np.array_equal(out, jittered(x, 256, 0.5, 1)) and not np.array_equal(out, jittered(x, 256, 0.5, 2))
    assert jittered(x, 256, 0.0, 1) is not None and jittered(x, 256, 0.0, 1).shape == x.shape


# --- the command line -------------------------------------------------------------------------------


def test_paths_may_follow_one_option_and_json_file_is_written(pump, tmp_path):
    normal = sorted((pump / "normal").glob("*.wav"))[:12]
    abnormal = sorted((pump / "abnormal").glob("*.wav"))[:3]
    out = tmp_path / "sub" / "report.json"
    result = run("evaluate", "--normal", *normal, "--anomalous", *abnormal, "--folds", "2", "--json", out, "-q",
                 "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert "hybrid" in result.output and "AUC" in result.output  # the table on stdout
    report = json.loads(out.read_text())
    assert report["clips"] == {"normal": 12, "anomalous": 3, "train": 0}


def test_train_option_switches_to_holdout(pump):
    normal = sorted((pump / "normal").glob("*.wav"))
    result = run("evaluate", "--train", *normal[:10], "--normal", *normal[10:14], "--anomalous", pump / "abnormal",
                 "--format", "json", "-q", "--epochs", "3")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["mode"] == "holdout" and report["clips"] == {"normal": 4, "anomalous": 10, "train": 10}


def test_usage_errors_exit_2(pump, tmp_path):
    result = run("evaluate", "--normal", pump / "normal")
    assert result.exit_code == 2 and "--anomalous" in result.output
    result = run("evaluate", "--normal", tmp_path / "missing", "--anomalous", pump / "abnormal")
    assert result.exit_code == 2
    result = run("evaluate", "--normal", pump / "normal", "--anomalous", pump / "abnormal", "--profile", "nope")
    assert result.exit_code == 2 and "unknown feature profile" in result.output
    result = run("evaluate", "--normal", pump / "normal", "--anomalous", pump / "abnormal", "--folds", "1")
    assert result.exit_code == 2


def test_unusable_inputs_exit_1_with_one_line(pump, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("evaluate", "--normal", tmp_path / "empty", "--anomalous", pump / "abnormal")
    assert result.exit_code == 1 and "no normal .wav files" in result.output
    few = sorted((pump / "normal").glob("*.wav"))[:4]
    result = run("evaluate", "--normal", *few, "--anomalous", pump / "abnormal", "-q")
    assert result.exit_code == 1 and "at least" in result.output and "Traceback" not in result.output
    one = pump / "normal" / "00000000.wav"
    result = run("evaluate", "--normal", pump / "normal", "--anomalous", one, "-q")
    assert result.exit_code == 1 and "share 1 file" in result.output


# --- real recordings --------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_default_profile_beats_seed_on_dcase_valve(shared_data):
    from signalcraft_core.training.fit import find_wavs, load_signals

    root = shared_data / "dcase-valve-sec00"
    normal, _, _ = load_signals(find_wavs([root / "normal"]))
    anomalous, _, _ = load_signals(find_wavs([root / "anomaly"], include_anomalies=True))
    if len(normal) < 20 or len(anomalous) < 10:
        pytest.skip("dcase-valve-sec00 is incomplete")
    auc = {}
    for profile in ("default", "seed"):
        options = EvaluationOptions(TrainingOptions("valve", profile=profile, epochs=20, folds=2, n_estimators=50),
                                    folds=2)
        auc[profile] = evaluate_signals(normal, anomalous, options).summary()["level2"]["auc"]["mean"]
    assert auc["default"] >= 0.9  # the 0.95 is measured with 5 folds x 50 epochs (bench/evaluate_real.py)
    assert auc["default"] > auc["seed"] + 0.2  # the old per-clip min-max mean is near chance on valve clicks
