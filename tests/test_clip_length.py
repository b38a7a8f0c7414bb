"""Clips shorter than the model's window: which calibrations grade them, how training fits them, the manifest."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from signalcraft_core.dsp.features import get_profile
from signalcraft_core.dsp.inputs import featurise
from signalcraft_core.errors import ModelError
from signalcraft_core.local.synth import synthesize_clip
from signalcraft_core.models.calibration import fit_calibration
from signalcraft_core.models.clip_length import (
    FULL_WINDOW_FROM,
    MAX_CUTS_PER_CLIP,
    LengthCalibrations,
    choose,
    cut_lengths,
    cuts,
)
from signalcraft_core.models.decision import decide
from signalcraft_core.models.model_set import load_model_set


def test_a_clip_takes_the_longest_length_it_reaches_and_whole_windows_keep_their_own():
    lengths = [LengthCalibrations(5.0), LengthCalibrations(2.0)]   # order in the manifest does not matter
    seconds = np.array([0.5, 2.0, 3.9, 5.0, 7.49, 7.5, 10.0, 30.0, np.nan])
    assert choose(seconds, 10.0, lengths).tolist() == [1, 1, 1, 0, 0, -1, -1, -1, -1]
    assert FULL_WINDOW_FROM * 10.0 == 7.5
    assert choose(seconds, 10.0, []).tolist() == [-1] * 9
    assert choose(None, 10.0, lengths).size == 0


def test_cuts_spread_over_the_clip_without_overlap_and_are_capped():
    assert cut_lengths(10.0) == (1.0, 2.0, 5.0) and cut_lengths(60.0) == (1.0, 2.0, 5.0, 12.0, 30.0)
    assert cut_lengths(2.0) == (1.0,) and cut_lengths(1.0) == ()   # nothing under the decoder's 1 s minimum
    assert cuts(160_000, 32_000) == [slice(k * 32_000, (k + 1) * 32_000) for k in range(5)]   # they tile it
    assert cuts(100_000, 40_000) == [slice(0, 40_000), slice(60_000, 100_000)]
    assert cuts(50_000, 40_000) == [slice(0, 40_000)]
    spread = cuts(160_000, 16_000)   # 1 s of 10 s: every phase of the clip, not its first 5 s
    assert len(spread) == MAX_CUTS_PER_CLIP and spread[0].start == 0 and spread[-1].stop == 160_000
    assert all(a.stop <= b.start for a, b in zip(spread, spread[1:]))
    assert cuts(10_000, 32_000) == [] and cuts(10_000, 0) == []


def test_length_calibrations_round_trip_and_refuse_nonsense():
    rng = np.random.default_rng(0)
    entry = LengthCalibrations(2.0, level2=fit_calibration(rng.gamma(2.0, 1.0, 50)))
    assert LengthCalibrations.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError):
            LengthCalibrations(bad)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A pump set trained on 12 normal 10 s clips (3 folds): its manifest carries 1, 2 and 5 s calibrations."""
    from signalcraft_core.training.fit import TrainingOptions, train_model_set

    root = tmp_path_factory.mktemp("short")
    signals = [synthesize_clip("pump", None, np.random.default_rng(100 + i), 10.0) for i in range(12)]
    options = TrainingOptions("pump", epochs=30, folds=3, n_estimators=50, hybrid_level1_weight=0.5)  # z1 counts
    train_model_set(signals, root / "model", options)
    return root / "model", signals


def test_training_records_the_window_and_calibrations_for_short_clips(trained):
    root, _ = trained
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["training"]["clip_seconds"] == 10.0
    entries = manifest["short_clips"]
    assert [e["seconds"] for e in entries] == [1.0, 2.0, 5.0]
    for e in entries:   # every out-of-fold cut: 12 clips x 5 (1 s, 2 s) or x 2 (5 s)
        want = 12 * (2 if e["seconds"] == 5.0 else 5)
        assert e["level2"]["n_clips"] == e["level1"]["n_clips"] == e["hybrid"]["calibration"]["n_clips"] == want
    model_set = load_model_set(root)
    assert [e.seconds for e in model_set.short_clips] == [1.0, 2.0, 5.0]


def test_a_short_clip_is_graded_by_its_length_calibrations_and_a_whole_one_by_the_window(trained):
    root, signals = trained
    model_set = load_model_set(root)
    clips = [synthesize_clip("pump", None, np.random.default_rng(900), 10.0)]
    clips += [clips[0][:32_000], clips[0][:64_000], clips[0][:80_000], clips[0][:120_000], clips[0][:20_000]]
    inputs = featurise(clips, model_set.profile)   # 10, 2, 4, 5, 7.5 and 1.25 s
    d = decide(model_set, inputs)
    one, two, five = model_set.short_clips
    assert d.level2[0] == pytest.approx(float(model_set.level2_calibration.score(d.level2_mse[0])))
    assert d.hits[0] == model_set.rules.evaluate(inputs.stats[0])
    assert d.level2[4] == pytest.approx(float(model_set.level2_calibration.score(d.level2_mse[4])))
    for i, entry in ((1, two), (2, two), (3, five), (5, one)):
        assert entry.rules is not None and d.hits[i] == entry.rules.evaluate(inputs.stats[i])
        assert d.level2[i] == pytest.approx(float(entry.level2.score(d.level2_mse[i])))
        assert d.iforest_calibrated[i] == pytest.approx(float(entry.level1.score(d.iforest_raw[i])))
        z1, z2 = entry.level1.decades(d.iforest_raw[i]), entry.level2.decades(d.level2_mse[i])
        assert d.hybrid[i] == pytest.approx(float(entry.hybrid.score(z1, z2)))
    # a loud 2 s clip: the entry's level rule fires and is what lifts its Level-1 score
    loud = featurise([np.clip(clips[1] * 6.0, -0.99, 0.99)], model_set.profile)
    hit = decide(model_set, loud)
    assert hit.hits[0] == two.rules.evaluate(loud.stats[0]) and hit.hits[0]
    assert hit.level1[0] >= max(h.score for h in hit.hits[0]) > 0
    # the same 2 s clip graded on the window's scale scores differently: the entry is what decided it
    whole = decide(dataclasses.replace(model_set, short_clips=()), inputs)
    assert whole.level2_mse[1] == d.level2_mse[1] and whole.level2[1] != pytest.approx(d.level2[1])
    # an entry missing a calibration the grading needs is not used: the window's grades those clips
    partial = dataclasses.replace(model_set, short_clips=(one, dataclasses.replace(two, hybrid=None), five))
    p = decide(partial, inputs)
    assert p.final[1] == pytest.approx(whole.final[1]) and p.final[3] == pytest.approx(d.final[3])


def test_short_clip_calibrations_keep_short_normals_at_the_configured_rate(trained):
    """Normal 2 s clips graded on the window's scale reach WARNING far more often than promised; on their own
    scale they do not (synthetic pump, 200 held-out 2 s clips)."""
    root, _ = trained
    model_set = load_model_set(root)
    clips = [synthesize_clip("pump", None, np.random.default_rng(5000 + i), 2.0) for i in range(200)]
    inputs = featurise(clips, model_set.profile)
    own = decide(model_set, inputs).level2
    window = decide(dataclasses.replace(model_set, short_clips=()), inputs).level2
    assert np.mean(own >= 50) <= 0.05
    assert np.median(own) < np.median(window)


def test_a_malformed_short_clips_section_is_a_model_error(trained, tmp_path):
    import shutil

    root, _ = trained
    copy = tmp_path / "set"
    shutil.copytree(root, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["short_clips"] = [{"seconds": -1}]
    with pytest.raises(ModelError, match="short_clips"):
        load_model_set(copy, manifest)


def test_the_scoring_pipe_grades_a_short_upload_on_its_length_and_a_long_one_by_windows(trained):
    """Through score_payloads (what every front door calls): a 2 s WAV on the 2 s entry, a 30 s WAV window by
    window on the window's own calibrations."""
    from signalcraft_core.io.audio import encode_wav
    from signalcraft_core.pipeline.score import score_payloads

    root, _ = trained
    model_set = load_model_set(root)
    clip = synthesize_clip("pump", None, np.random.default_rng(77), 30.0)
    short, long_ = score_payloads(model_set, [encode_wav(clip[:32_000], 16000), encode_wav(clip, 16000)])
    two = next(e for e in model_set.short_clips if e.seconds == 2.0)
    assert short.status == "ok" and short.windows == 1
    assert short.level2_score == pytest.approx(float(two.level2.score(short.level2_mse)))
    assert long_.windows == 3
    assert long_.level2_score == pytest.approx(float(model_set.level2_calibration.score(long_.level2_mse)))


def test_a_folds_cuts_are_its_training_clips_cuts_reindexed():
    """`signalcraft evaluate` fits per fold; each fold's short-clip calibrations see only its own clips' cuts."""
    from signalcraft_core.training.fit import short_clip_cuts, training_window

    profile = get_profile("default")
    signals = [synthesize_clip("fan", None, np.random.default_rng(i), 10.0) for i in range(4)]
    two = next(c for c in short_clip_cuts(signals, profile, 10.0) if c.seconds == 2.0)
    assert two.source.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    fold = two.of(np.array([1, 3]))
    assert fold.source.tolist() == [0] * 5 + [1] * 5
    np.testing.assert_array_equal(fold.inputs.level2, two.inputs.level2[np.r_[5:10, 15:20]])
    assert training_window(featurise(signals[:3] + [signals[3][:80_000]], profile)) == 10.0
