"""Training: seeded and reproducible, a complete manifest, and only normal clips are used."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest

from signalcraft_core.dsp.features import get_profile
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.local.synth import synthesize_clip
from signalcraft_core.models.manifest import MANIFEST_SCHEMA_VERSION, sha256_file
from signalcraft_core.training.fit import (
    TrainingOptions,
    find_wavs,
    fold_indices,
    load_signals,
    train_model_set,
)

OPTIONS = TrainingOptions("fan", epochs=3, folds=2, n_estimators=10, name="fan-test")
SOURCES = [f"data/fan/id_00/normal/{i:08d}.wav" for i in range(6)]


def signals(n: int = 6, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [synthesize_clip("fan", None, rng, 2.0) for _ in range(n)]


@pytest.fixture(scope="module")
def twice(tmp_path_factory) -> tuple[tuple[Path, dict], tuple[Path, dict]]:
    """The same clips and options trained into two folders."""
    root = tmp_path_factory.mktemp("train")
    data = signals()
    runs = []
    for name in ("a", "b"):
        manifest = train_model_set(data, root / name, OPTIONS, SOURCES, command="signalcraft train data/fan")
        runs.append((root / name, manifest))
    return runs[0], runs[1]


def state(path: Path) -> dict:
    import torch

    return torch.jit.load(str(path / "autoencoder.pt")).state_dict()


def test_training_twice_gives_identical_autoencoder_weights(twice):
    import torch

    (dir_a, man_a), (dir_b, man_b) = twice
    a, b = state(dir_a), state(dir_b)
    assert a.keys() == b.keys() and "autoencoder.encoder.0.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert man_a["artifacts"]["autoencoder"]["sha256"] == man_b["artifacts"]["autoencoder"]["sha256"]
    assert man_a["level2"]["calibration"] == man_b["level2"]["calibration"]
    assert man_a["version"] == man_b["version"]


def test_the_seed_matters():
    """Control for the reproducibility test: a different seed does change the weights."""
    import torch

    from signalcraft_core.dsp.features import clip_features
    from signalcraft_core.training.autoencoder import TrainConfig, train_autoencoder

    x = clip_features(signals(), get_profile("default"))
    a, _ = train_autoencoder(x, TrainConfig(epochs=2, seed=0))
    b, _ = train_autoencoder(x, TrainConfig(epochs=2, seed=1))
    c, _ = train_autoencoder(x, TrainConfig(epochs=2, seed=0))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert not torch.equal(sa["autoencoder.encoder.0.weight"], sb["autoencoder.encoder.0.weight"])
    assert all(torch.equal(sa[k], sc[k]) for k in sa)


def test_manifest_has_every_required_field(twice):
    (model_dir, m), _ = twice
    assert m["schema_version"] == MANIFEST_SCHEMA_VERSION
    assert m["name"] == "fan-test" and m["machine_type"] == "fan" and m["preference"] == "hybrid"
    assert re.fullmatch(r"[0-9a-f]{12}", m["version"])
    assert m["profile"] == get_profile("default").to_dict()
    # Artifacts: hashed files that really are in the folder.
    assert set(m["artifacts"]) == {"autoencoder", "level1"}
    for art in m["artifacts"].values():
        assert sha256_file(model_dir / art["path"]) == art["sha256"]
        assert (model_dir / art["path"]).stat().st_size == art["bytes"]
    # Level 2: shape, training recipe, calibration.
    l2 = m["level2"]
    assert l2["input_dim"] == get_profile("default").dim and l2["hidden_sizes"] == [128, 64, 16]
    assert l2["train"]["epochs"] == 3 and l2["train"]["seed"] == 0 and l2["train"]["batch_size"] == 16
    for level in ("level1", "level2"):
        cal = m[level]["calibration"]
        assert cal["method"] == "gamma" and cal["n_clips"] == 6
        assert cal["warning_rate"] == 0.01 and cal["critical_rate"] == 0.001
        assert len(cal["raw_knots"]) == len(cal["score_knots"]) >= 10
    assert m["level1"]["n_estimators"] == 10 and len(m["level1"]["features"]) > 0 and m["level1"]["rules"]
    # Training summary.
    t = m["training"]
    assert t["clips"] == 6 and t["folds"] == 2
    assert re.fullmatch(r"[0-9a-f]{64}", t["files_sha256"])
    assert t["date"] == dt.date.today().isoformat()
    assert dt.datetime.fromisoformat(m["created_at"]).tzinfo is not None
    assert t["command"] == "signalcraft train data/fan"
    assert {"signalcraft", "python", "torch", "numpy", "scikit-learn"} <= set(t["versions"])
    assert np.isfinite(t["final_loss"])
    # Validation metrics: out-of-fold rates of both levels.
    for level in ("level1", "level2"):
        v = m["validation"][level]
        assert v["clips"] == 6 and 0.0 <= v["warning_rate"] <= 1.0 and 0.0 <= v["critical_rate"] <= v["warning_rate"]
        assert v["warning_raw"] < v["critical_raw"]


def test_files_hash_names_the_training_files(twice, tmp_path):
    (_, trained), _ = twice
    data = signals(6, seed=3)
    fast = TrainingOptions("fan", epochs=1, folds=2, n_estimators=10)
    reordered = train_model_set(data, tmp_path / "a", fast, SOURCES[::-1])["training"]["files_sha256"]
    other = train_model_set(data, tmp_path / "b", fast, SOURCES[:-1])["training"]["files_sha256"]
    assert reordered == trained["training"]["files_sha256"] != other


def test_training_needs_enough_clips_for_out_of_fold_calibration(tmp_path):
    from signalcraft_core.training.fit import MIN_TRAINING_CLIPS

    with pytest.raises(ValueError, match=f"at least {MIN_TRAINING_CLIPS}"):
        train_model_set(signals(MIN_TRAINING_CLIPS - 1), tmp_path, OPTIONS)


def test_fold_indices_partition_the_clips():
    folds = fold_indices(11, 3, seed=4)
    assert len(folds) == 3
    assert sorted(np.concatenate(folds).tolist()) == list(range(11))
    assert [f.tolist() for f in folds] == [f.tolist() for f in fold_indices(11, 3, seed=4)]


# ------------------------------------------------------------------------------ what is trained on


def write(path: Path, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_wav(np.zeros(16000, np.float32) + 0.01, 16000) if data is None else data)
    return path


def test_find_wavs_leaves_out_anomaly_folders(tmp_path):
    keep = [
        write(tmp_path / "fan/id_00/normal/00000000.wav"),
        write(tmp_path / "fan/id_00/normal/00000001.WAV"),
        write(tmp_path / "valve/section_00/normal/source_0001.wav"),
    ]
    dropped = [
        write(tmp_path / "fan/id_00/abnormal/00000000.wav"),
        write(tmp_path / "valve/section_00/anomaly/x.wav"),
        write(tmp_path / "pump/Anomalous/x.wav"),
        write(tmp_path / "fan/ABNORMAL/y.wav"),
    ]
    write(tmp_path / "fan/id_00/normal/notes.txt", b"not audio")
    assert find_wavs([tmp_path]) == sorted(keep)
    assert find_wavs([tmp_path], include_anomalies=True) == sorted(keep + dropped)
    # Files and folders mix; duplicates collapse.
    assert find_wavs([keep[0], tmp_path / "fan"]) == sorted(keep[:2])


def test_load_signals_reports_unreadable_files_instead_of_failing(tmp_path):
    good = write(tmp_path / "normal/a.wav")
    bad = write(tmp_path / "normal/b.wav", b"this is text, not a recording")
    seen = []
    sigs, used, skipped = load_signals([good, bad], progress=lambda *a: seen.append(a))
    assert used == [good] and len(sigs) == 1 and sigs[0].shape == (16000,)
    assert [(p, e.code.value) for p, e in skipped] == [(bad, "not_wav")]
    assert seen[-1] == ("decode", 2, 2)


def test_autoencoder_standardisation_ignores_a_few_clips_of_another_machine() -> None:
    """Median / MAD: five clips of another machine among twenty do not inflate the scale (a std would, ~2.7x)."""
    from signalcraft_core.training.autoencoder import MAD_TO_STD, standardisation

    rng = np.random.default_rng(3)
    own = rng.normal(0.0, 1.0, size=(20, 4))
    other = rng.normal(6.0, 1.0, size=(5, 4))
    centre, scale = standardisation(np.vstack([own, other]), min_scale=1e-3)
    assert np.all(np.abs(centre) < 1.0)                      # the mean would sit near 1.2
    assert np.all((scale > 0.6) & (scale < 1.8))             # the std would be near 2.6
    mad = np.median(np.abs(np.vstack([own, other]) - centre), axis=0)
    np.testing.assert_allclose(scale, np.maximum(MAD_TO_STD * mad, 1e-3), rtol=1e-6)
    flat = np.ones((10, 2))
    assert np.all(standardisation(flat, min_scale=1e-3)[1] == np.float32(1e-3))   # no spread: the floor
