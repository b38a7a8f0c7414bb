"""Model sets on disk: the manifest's hashes are checked before any artifact is deserialised.

Also: the exported Level-2 artifact is self-contained TorchScript that a process without any
signalcraft code grades identically.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from signalcraft_core.errors import ErrorCode, ModelError
from signalcraft_core.io.audio import decode_wav, encode_wav
from signalcraft_core.local.synth import synthesize_clip
from signalcraft_core.models.manifest import (
    MANIFEST_FILE,
    model_version,
    parse_manifest,
    read_manifest,
    safe_artifact_path,
)
from signalcraft_core.models.model_set import load_model_set
from tests.neighbours import TouchOnLoad

SR = 16000


def clips(n: int, seed: int, anomaly: str | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [synthesize_clip("pump", anomaly, rng, 2.0) for _ in range(n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from signalcraft_core.training.fit import TrainingOptions, train_model_set

    out = tmp_path_factory.mktemp("models") / "pump"
    train_model_set(clips(8, seed=0), out, TrainingOptions("pump", epochs=3, folds=2, n_estimators=20))
    return out


@pytest.fixture
def model_dir(trained, tmp_path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(trained, tmp_path / "set"))


def edit_manifest(model_dir: Path, edit) -> None:
    path = model_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def plant_payload(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(TouchOnLoad(marker)))


# ------------------------------------------------------------------------------------ loading


def test_load_model_set_loads_both_levels(trained):
    ms = load_model_set(trained)
    assert ms.has_level1 and ms.has_level2 and ms.rules is not None
    assert ms.name == "pump-default" and ms.machine_type == "pump" and ms.preference == "hybrid"
    assert ms.version == model_version(ms.manifest) and len(ms.version) == 12
    assert ms.profile.name == "default"
    assert ms.level1_calibration.method == ms.level2_calibration.method == "gamma"


def test_the_version_changes_with_everything_that_changes_grades(trained):
    """Short-clip calibrations and the window regrade recordings: a set that changes them is a new version."""
    manifest = load_model_set(trained).manifest
    base = model_version(manifest)
    assert manifest["short_clips"] and manifest["training"]["clip_seconds"]
    shorter = {**manifest, "short_clips": manifest["short_clips"][:-1]}
    window = {**manifest, "training": {**manifest["training"], "clip_seconds": 5.0}}
    older = {k: v for k, v in manifest.items() if k != "short_clips"}
    older["training"] = {k: v for k, v in manifest["training"].items() if k != "clip_seconds"}
    versions = {base, model_version(shorter), model_version(window), model_version(older)}
    assert len(versions) == 4
    # a set written before these sections existed hashes only what it has: the same as before
    assert model_version(older) == model_version({k: v for k, v in older.items() if k != "training"})


def test_the_planted_payload_really_runs_code_when_unpickled(tmp_path):
    """Control for the refusal tests below: loading this file unverified would create the marker."""
    import joblib

    marker = tmp_path / "pwned"
    plant_payload(tmp_path / "evil.joblib", marker)
    joblib.load(tmp_path / "evil.joblib")
    assert marker.exists()


def test_appending_one_byte_to_level1_is_refused(model_dir):
    with open(model_dir / "level1.joblib", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError, match="level1.*integrity") as info:
        load_model_set(model_dir)
    assert info.value.code is ErrorCode.MODEL_ERROR


def test_a_swapped_joblib_is_refused_before_it_is_unpickled(model_dir, tmp_path):
    marker = tmp_path / "pwned"
    plant_payload(model_dir / "level1.joblib", marker)  # the manifest is left as it was
    with pytest.raises(ModelError, match="integrity"):
        load_model_set(model_dir)
    assert not marker.exists()


def test_a_tampered_autoencoder_is_refused(model_dir):
    data = bytearray((model_dir / "autoencoder.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_dir / "autoencoder.pt").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="autoencoder.*integrity"):
        load_model_set(model_dir)


def test_a_missing_artifact_is_refused(model_dir):
    (model_dir / "autoencoder.pt").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model_set(model_dir)


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "sub/../../x", "a\\..\\x", ""])
def test_unsafe_artifact_paths_are_refused(model_dir, tmp_path, bad):
    # A matching file sits where `../x` points: the path itself is refused, not just a missing file.
    outside = model_dir.parent / "x"
    shutil.copy(model_dir / "level1.joblib", outside)
    edit_manifest(model_dir, lambda m: m["artifacts"]["level1"].update(path=bad))
    with pytest.raises(ModelError, match="unsafe path"):
        load_model_set(model_dir)
    with pytest.raises(ModelError, match="unsafe path"):
        safe_artifact_path(bad, "m", "level1")


def test_a_plain_name_or_subfolder_is_a_safe_path():
    assert safe_artifact_path("level1.joblib", "m", "a") == "level1.joblib"
    assert safe_artifact_path("v2/level1.joblib", "m", "a") == "v2/level1.joblib"


def test_a_missing_manifest_is_a_clear_model_error(tmp_path):
    with pytest.raises(ModelError, match=r"no manifest\.json in .*signalcraft train"):
        load_model_set(tmp_path)
    with pytest.raises(ModelError, match="no manifest.json"):
        read_manifest(tmp_path / "does-not-exist")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (json.dumps({"schema_version": 1, "name": "x"}).encode(), "lacks version, machine_type, profile, artifacts"),
    ],
)
def test_malformed_manifests_are_model_errors(data, message):
    with pytest.raises(ModelError, match=message):
        parse_manifest(data, "here")


def base_manifest(**changes) -> bytes:
    manifest = {"schema_version": 1, "name": "n", "version": "v", "machine_type": "pump", "profile": {},
                "artifacts": {"a": {"path": "a.bin", "sha256": "0" * 64}}}
    manifest.update(changes)
    return json.dumps(manifest).encode()


def test_manifest_shape_checks():
    assert parse_manifest(base_manifest(), "here")["name"] == "n"
    with pytest.raises(ModelError, match="schema 2 is not supported"):
        parse_manifest(base_manifest(schema_version=2), "here")
    with pytest.raises(ModelError, match="no valid sha256"):
        parse_manifest(base_manifest(artifacts={"a": {"path": "a.bin", "sha256": "abc"}}), "here")
    with pytest.raises(ModelError, match="artifacts must be an object"):
        parse_manifest(base_manifest(artifacts=["a.bin"]), "here")
    with pytest.raises(ModelError, match="artifact a must be an object"):
        parse_manifest(base_manifest(artifacts={"a": "a.bin"}), "here")
    with pytest.raises(ModelError, match="preference 'bogus' is not one of hybrid, level1, level2"):
        parse_manifest(base_manifest(preference="bogus"), "here")   # not a traceback on every grade
    assert parse_manifest(base_manifest(preference="level2"), "here")["preference"] == "level2"


@pytest.mark.parametrize("changes, message", [
    ({"level1": "x"}, "level1 must be an object, got str"),
    ({"profile": []}, "profile must be an object, got list"),
    ({"short_clips": {}}, "short_clips must be a list, got dict"),
    ({"level2": {"calibration": 3}}, "level2.calibration must be an object, got int"),
    ({"level1": {"descriptor": "n_fft"}}, "level1.descriptor must be an object, got str"),
])
def test_hand_edited_sections_of_the_wrong_type_are_model_errors_at_load(changes, message):
    """Read with .get() and .items() while grading: a string there was an AttributeError per recording."""
    with pytest.raises(ModelError, match=message):
        parse_manifest(base_manifest(**changes), "here")
    assert parse_manifest(base_manifest(level1=None, short_clips=[]), "here")["level1"] is None   # absent-alike


def test_hash_matching_but_broken_sections_are_model_errors(model_dir):
    edit_manifest(model_dir, lambda m: m["level2"].pop("calibration"))
    with pytest.raises(ModelError, match="level2.calibration"):
        load_model_set(model_dir)
    edit_manifest(model_dir, lambda m: m.update(profile={"name": "x", "n_mels": -1}))
    with pytest.raises(ModelError, match="profile is invalid"):
        load_model_set(model_dir)


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["level1"].update(features=m["level1"]["features"][:-1]), "level1.features"),
    (lambda m: m["level1"].update(descriptor={**m["level1"]["descriptor"], "n_fft": 1024}), "level1.descriptor.n_fft"),
    (lambda m: m["level2"].update(input_dim=m["level2"]["input_dim"] + 1), "level2.input_dim"),
])
def test_feature_settings_that_do_not_match_the_code_are_refused(model_dir, edit, field):
    """Loading compares what training recorded with what this code computes; the message names the field."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["level1"]["descriptor"]["n_fft"] == 2048  # training records the descriptor recipe
    load_model_set(model_dir)
    edit_manifest(model_dir, edit)
    with pytest.raises(ModelError, match=field.replace(".", r"\.")):
        load_model_set(model_dir)


def test_a_manifest_without_any_level_is_refused(model_dir):
    def drop(m):
        m["artifacts"] = {}
        m["level1"] = None

    edit_manifest(model_dir, drop)
    with pytest.raises(ModelError, match="neither"):
        load_model_set(model_dir)


# ---------------------------------------------------------------------- self-contained Level 2

STANDALONE = """
import json, sys
import numpy as np
import torch
module = torch.jit.load(sys.argv[1], map_location="cpu").eval()
with torch.inference_mode():
    errors = module(torch.from_numpy(np.load(sys.argv[2])))
loaded = sorted(name for name in sys.modules if name.startswith("signalcraft"))
assert "signalcraft_core.training.autoencoder" not in sys.modules, loaded
print(json.dumps({"mse": errors.double().mean(dim=1).tolist(), "signalcraft_modules": loaded}))
"""


def test_autoencoder_pt_grades_identically_in_a_process_without_signalcraft(trained, tmp_path):
    from signalcraft_core.dsp.features import clip_features
    from signalcraft_core.pipeline.score import score_payloads

    signals = clips(2, seed=50) + clips(1, seed=51, anomaly="bearing_fault")
    payloads = [encode_wav(s, SR) for s in signals]
    ms = load_model_set(trained)
    in_process = np.array([r.level2_mse for r in score_payloads(ms, payloads)])
    features = clip_features([decode_wav(p).samples for p in payloads], ms.profile)
    np.save(tmp_path / "features.npy", features)

    proc = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(trained / "autoencoder.pt"), str(tmp_path / "features.npy")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["signalcraft_modules"] == []
    # float32 networks: equal to 1e-6 (relative for the large MSE of the anomaly, absolute near zero).
    np.testing.assert_allclose(out["mse"], in_process, rtol=1e-6, atol=1e-6)
    assert in_process[2] > in_process[:2].max()  # not a constant: the anomaly reconstructs worse
