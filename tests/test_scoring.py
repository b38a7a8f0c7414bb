"""The scoring pipe: separation on synthetic data, one ClipScore per payload in order, level preference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from signalcraft_core.errors import AudioError, ErrorCode, StorageError
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.local.synth import synthesize_clip, write_dataset
from signalcraft_core.models.grading import grade
from signalcraft_core.models.level2_numpy import NumpyScoringModule
from signalcraft_core.models.model_set import load_model_set
from signalcraft_core.models.rules import RULE_NAMES
from signalcraft_core.pipeline.score import ClipScore, score_audio, score_payloads

N_TRAIN = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Pump: 24 normal + 8 abnormal 2 s clips; trained on 16 normals, the rest held out."""
    from signalcraft_core.training.fit import (
        TrainingOptions,
        load_signals,
        train_model_set,
    )

    root = tmp_path_factory.mktemp("scoring")
    files = write_dataset(root / "data", "pump", 24, 8, seed=0, duration_s=2.0)
    normal = [f for f in files if f.parent.name == "normal"]
    abnormal = [f for f in files if f.parent.name == "abnormal"]
    signals, used, skipped = load_signals(normal[:N_TRAIN])
    assert not skipped
    train_model_set(signals, root / "model", TrainingOptions("pump", epochs=50, folds=2, n_estimators=50), used)
    return load_model_set(root / "model"), normal[N_TRAIN:], abnormal


@pytest.fixture(scope="module")
def held_out(setup):
    model_set, normal, abnormal = setup
    results = score_payloads(model_set, [f.read_bytes() for f in normal + abnormal])
    return results[: len(normal)], results[len(normal):]


def auc(negatives, positives) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney)."""
    neg, pos = np.asarray(negatives, float)[:, None], np.asarray(positives, float)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def expected_hybrid(model_set, r) -> float:
    """The hybrid score recomputed from one result's raw values: the manifest's calibrated combination of
    both levels' tail probabilities when the set has one, else the more severe level."""
    from signalcraft_core.models.decision import hybrid_calibration

    cal = hybrid_calibration(model_set)
    if cal is None:
        return max(r.level1_score, r.level2_score)
    # the forest's evidence (a learned rule that fired would raise Level 1's; these synthetic clips fire none
    # that the combination weighs, or the assertion below says so)
    z1 = float(model_set.level1_calibration.decades(np.array([r.iforest_raw]))[0])
    z2 = float(model_set.level2_calibration.decades(np.array([r.level2_mse]))[0])
    return float(cal.score(np.array([z1]), np.array([z2]))[0])


def test_default_profile_separates_normal_from_abnormal(held_out):
    normal, abnormal = held_out
    assert all(r.status == "ok" for r in normal + abnormal)
    # Each level on its own carries signal; the calibrated hybrid (Level 2 led by default: Fisher with the
    # Level-1 weight chosen on real data) ranks about as well as the better level on this synthetic set.
    level1 = auc([r.level1_score for r in normal], [r.level1_score for r in abnormal])
    level2 = auc([r.level2_score for r in normal], [r.level2_score for r in abnormal])
    assert level1 >= 0.9 and level2 >= 0.9
    assert auc([r.score for r in normal], [r.score for r in abnormal]) >= max(0.85, level2 - 0.02)
    assert np.mean([r.grade != "NORMAL" for r in abnormal]) >= 0.75
    assert np.mean([r.grade == "NORMAL" for r in normal]) >= 0.75


def test_every_result_is_consistent(setup, held_out):
    model_set = setup[0]
    for r in held_out[0] + held_out[1]:
        assert r.grade == grade(r.score).value
        assert r.score == pytest.approx(expected_hybrid(model_set, r), abs=1e-3)
        assert 0.0 <= r.score <= 100.0 and r.level2_mse > 0 and r.iforest_raw is not None
        assert len(r.band_errors) == model_set.profile.n_mels  # per mel band
        assert (r.duration_s, r.sample_rate_in, r.channels_in) == (2.0, 16000, 1)
        assert r.error_code is None and r.error_message is None


def test_rule_bearing_results_name_their_rules(held_out):
    normal, abnormal = held_out
    with_rules = [r for r in normal + abnormal if r.level1_rules]
    assert sum(bool(r.level1_rules) for r in abnormal) >= 3  # the rules do fire on faults
    for r in with_rules:
        assert set(r.level1_rules) <= set(RULE_NAMES)
        assert len(r.rule_messages) == len(r.level1_rules) and all(m.strip() for m in r.rule_messages)
        assert r.level1_score >= 50.0  # a rule that fires is at least a WARNING


# ------------------------------------------------------------------------- one result per payload


def wav(seconds: float, seed: int, anomaly: str | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_wav(synthesize_clip("pump", anomaly, rng, seconds), 16000)


def test_error_payloads_become_error_scores_in_order(setup):
    model_set = setup[0]
    payloads = [
        StorageError(ErrorCode.NOT_FOUND, "gone"),
        wav(2.0, 1),
        b"hello, I am a text file",
        encode_wav(np.zeros(32000, np.float32), 16000),  # digital silence
        AudioError(ErrorCode.TOO_LARGE, "too big"),
        wav(2.0, 2),
        encode_wav(np.full(8000, 0.1, np.float32), 16000),  # 0.5 s: too short
    ]
    results = score_payloads(model_set, payloads)
    assert [(r.status, r.error_code) for r in results] == [
        ("error", "not_found"), ("ok", None), ("error", "not_wav"), ("error", "silent"),
        ("error", "too_large"), ("ok", None), ("error", "too_short"),
    ]
    assert results[0].error_message == "gone" and results[4].error_message == "too big"
    assert all(r.grade is None and r.score is None for r in results if r.status == "error")


def test_exactly_one_score_per_payload_across_lengths(setup):
    """Clips of different lengths are batched separately; results still come back in input order."""
    model_set = setup[0]
    lengths = [2.0, 3.0, 2.0, 1.5, 3.0, 2.0]
    payloads: list = [wav(s, 10 + i) for i, s in enumerate(lengths)]
    payloads.insert(3, b"")
    results = score_payloads(model_set, payloads)
    assert len(results) == len(payloads)
    assert [r.duration_s for r in results] == [2.0, 3.0, 2.0, None, 1.5, 3.0, 2.0]
    assert results[3].error_code == ErrorCode.EMPTY.value
    alone = [score_payloads(model_set, [p])[0] for p in payloads]
    for batched, single in zip(results, alone):
        assert batched.status == single.status and batched.grade == single.grade
        if batched.status == "ok":
            assert batched.score == pytest.approx(single.score, abs=1e-3)
    assert score_payloads(model_set, []) == [] and score_audio(model_set, []) == []


class FailsOnLoudClips(NumpyScoringModule):
    """The numpy autoencoder engine, raising for a batch holding a very loud clip.

    No decodable recording makes the real pipe raise (the decoder refuses everything the feature
    code cannot take), so this injects the failure at the model boundary.
    """

    def __init__(self, module: NumpyScoringModule, threshold: float) -> None:
        super().__init__(mean=module.mean, scale=module.scale, layers=module.layers)
        object.__setattr__(self, "threshold", threshold)

    def errors(self, features):
        if bool((features.max(axis=1) > self.threshold).any()):
            raise RuntimeError("simulated failure on this clip")
        return super().errors(features)


def test_one_failing_clip_does_not_sink_the_batch(setup):
    model_set = setup[0]
    quiet = [wav(2.0, 20 + i) for i in range(3)]
    loud = encode_wav(np.random.default_rng(5).uniform(-0.9, 0.9, 32000).astype(np.float32), 16000)
    expected = score_payloads(model_set, quiet)
    # Loud white noise has log-mel maxima (~15 dB) far above those of the ~-32 dBFS pump clips (~3 dB).
    broken = dataclasses.replace(model_set, level2_module=FailsOnLoudClips(model_set.level2_module, threshold=8.0))
    assert score_payloads(broken, quiet) == expected  # the wrapper alone changes nothing
    results = score_payloads(broken, [quiet[0], loud, quiet[1], quiet[2]])
    assert [r.status for r in results] == ["ok", "error", "ok", "ok"]
    assert results[1].error_code == ErrorCode.INTERNAL_ERROR.value
    assert "simulated failure" in results[1].error_message and results[1].duration_s == 2.0
    assert [r.score for r in (results[0], results[2], results[3])] == pytest.approx([r.score for r in expected], abs=1e-3)


# ---------------------------------------------------------------------------------- preference


def test_preference_selects_the_deciding_level(setup, held_out):
    model_set, normal, abnormal = setup
    payloads = [normal[0].read_bytes(), abnormal[0].read_bytes(), abnormal[1].read_bytes()]
    hybrid = score_payloads(model_set, payloads, preference="hybrid")
    level1 = score_payloads(model_set, payloads, preference="level1")
    level2 = score_payloads(model_set, payloads, preference="level2")
    assert score_payloads(model_set, payloads) == hybrid  # the manifest's preference is hybrid
    for h, l1, l2 in zip(hybrid, level1, level2):
        assert l1.score == pytest.approx(h.level1_score, abs=1e-3) and l1.level2_score is None and l1.level2_mse is None
        assert l2.score == pytest.approx(h.level2_score, abs=1e-3) and l2.level1_score is None and l2.level1_rules == ()
        assert h.score == pytest.approx(expected_hybrid(model_set, h), abs=1e-3)
        assert l1.grade == grade(l1.score).value and l2.grade == grade(l2.score).value


def test_preference_falls_back_when_the_set_lacks_that_level(setup):
    model_set, normal, abnormal = setup
    payloads = [normal[0].read_bytes(), abnormal[0].read_bytes()]
    full = score_payloads(model_set, payloads)
    only_l2 = dataclasses.replace(model_set, level1_pipeline=None, rules=None)
    only_l1 = dataclasses.replace(model_set, level2_module=None)
    assert not only_l2.has_level1 and not only_l1.has_level2
    for r, f in zip(score_payloads(only_l2, payloads, preference="level1"), full):
        assert r.status == "ok" and r.score == pytest.approx(f.level2_score, abs=1e-3) and r.level1_score is None
    for r, f in zip(score_payloads(only_l1, payloads, preference="level2"), full):
        assert r.status == "ok" and r.score == pytest.approx(f.level1_score, abs=1e-3) and r.level2_score is None


def test_unknown_preference_is_refused(setup):
    with pytest.raises(ValueError, match="preference"):
        score_audio(setup[0], [_audio(wav(2.0, 30))], preference="both")


def _audio(data: bytes):
    from signalcraft_core.io.audio import decode_wav

    return decode_wav(data)


def test_failure_record_keeps_what_the_recording_was():
    audio = _audio(wav(2.0, 31))
    failure = ClipScore.failure(ErrorCode.INTERNAL_ERROR, "x", audio)
    assert (failure.status, failure.error_code, failure.duration_s, failure.sample_rate_in) == ("error", "internal_error", 2.0, 16000)
    assert ClipScore.failure("not_wav", "y").duration_s is None


# ---------------------------------------------------------------------------------- long recordings


def test_windows_cover_long_recordings_and_leave_short_ones_whole():
    from signalcraft_core.pipeline.score import windows

    assert windows(150_000, 100_000) == [slice(0, 150_000)]  # up to 1.5 windows: whole, as before
    assert windows(160_000, 160_000) == [slice(0, 160_000)]
    assert windows(150_001, 100_000) == [slice(0, 100_000), slice(50_001, 150_001)]
    spans = windows(9_520_000, 160_000)  # 595 s at 16 kHz
    assert len(spans) == 60 and all(s.stop - s.start == 160_000 for s in spans)
    assert spans[0].start == 0 and spans[-1].stop == 9_520_000
    assert all(a.stop >= b.start for a, b in zip(spans, spans[1:]))  # no gap


def test_window_length_comes_from_the_manifest_else_10_s(setup):
    """Training records its clips' median length (2 s here); a manifest without one means 10 s."""
    from signalcraft_core.models.clip_length import window_seconds

    model_set = setup[0]
    assert model_set.manifest["training"]["clip_seconds"] == 2.0 and window_seconds(model_set) == 2.0
    training = {k: v for k, v in model_set.manifest["training"].items() if k != "clip_seconds"}
    older = dataclasses.replace(model_set, manifest={**model_set.manifest, "training": training})
    assert window_seconds(older) == 10.0


def test_long_recording_is_its_worst_window(setup):
    """8 s of normal pump then 2 s of a fault, windows of 2 s: the record is the fault window's grade."""
    model_set = setup[0]
    two = dataclasses.replace(model_set, manifest={**model_set.manifest,
                                                   "training": {**model_set.manifest["training"], "clip_seconds": 2}})
    rng = np.random.default_rng(40)
    normal = synthesize_clip("pump", None, rng, 8.0)
    fault = synthesize_clip("pump", "bearing_fault", np.random.default_rng(41), 2.0)
    audio = _audio(encode_wav(np.r_[normal, fault], 16000))
    (whole_long,) = score_payloads(two, [encode_wav(np.r_[normal, fault], 16000)])
    per_window = [score_audio(two, [dataclasses.replace(audio, samples=audio.samples[k * 32000:(k + 1) * 32000])])[0]
                  for k in range(5)]
    worst = max(range(5), key=lambda k: per_window[k].score)
    assert worst == 4 and per_window[4].score > max(w.score for w in per_window[:4])
    assert whole_long.windows == 5 and whole_long.duration_s == 10.0
    w = per_window[4]  # graded alone; the windows are batched in one STFT, so float32 sums differ a little
    assert whole_long.score == pytest.approx(w.score, abs=1e-3) and whole_long.grade == w.grade
    assert whole_long.level1_score == pytest.approx(w.level1_score, abs=1e-3)  # every level from that window
    assert whole_long.level1_rules == w.level1_rules
    assert whole_long.level2_mse == pytest.approx(w.level2_mse, rel=1e-5)
    assert whole_long.band_errors == pytest.approx(w.band_errors, rel=1e-4)
    # a recording up to 1.5 windows is graded whole, exactly as score_audio grades it
    short = encode_wav(normal[:48000], 16000)
    assert score_payloads(two, [short])[0] == score_audio(two, [_audio(short)])[0]


def test_a_set_whose_rules_predate_v2_statistics_is_measured_with_v1(setup, tmp_path, monkeypatch):
    """A manifest whose rule state records no measurement version (every set written before v2) keeps v1:
    serving measures its clips with v1, its grades are the v1 decision's, and its version is its own."""
    import json
    import shutil

    import signalcraft_core.pipeline.score as score_mod
    from signalcraft_core.dsp.inputs import featurise
    from signalcraft_core.dsp.signal_stats import MEASUREMENTS_V1, MEASUREMENTS_V2
    from signalcraft_core.errors import ModelError
    from signalcraft_core.io.audio import decode_wav
    from signalcraft_core.models.decision import decide
    from signalcraft_core.models.manifest import MANIFEST_FILE, write_manifest

    model_set, normal, abnormal = setup
    assert model_set.rules.measurements_ == MEASUREMENTS_V2   # training measures v2 and records it
    old = tmp_path / "before-v2"
    shutil.copytree(model_set.root, old)
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    for entry in [manifest["level1"], *manifest.get("short_clips", ())]:
        if entry.get("rules"):
            del entry["rules"]["state"]["measurements"]
    write_manifest(old, manifest)
    older = load_model_set(old)
    assert older.rules.measurements_ == MEASUREMENTS_V1 and older.version != model_set.version

    asked = []
    real = score_mod.featurise
    monkeypatch.setattr(score_mod, "featurise", lambda *a, **k: asked.append(k["measurements"]) or real(*a, **k))
    files = normal + abnormal
    results = score_payloads(older, [f.read_bytes() for f in files])
    assert asked == [MEASUREMENTS_V1] and all(r.status == "ok" for r in results)
    signals = [decode_wav(f.read_bytes()).samples for f in files]
    v1 = decide(older, featurise(signals, older.profile, measurements=MEASUREMENTS_V1))
    assert [r.score for r in results] == [round(float(v), 3) for v in v1.final]
    with pytest.raises(ModelError, match="v1 measurements"):
        decide(older, featurise(signals, older.profile, measurements=MEASUREMENTS_V2))
