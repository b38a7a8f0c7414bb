"""The bytes whose hash was checked are the bytes deserialised, and the Level-1 unpickler runs nothing
but what a forest pipeline needs (audit F2); artifact paths are plain names (audit F13).

A swap "between check and load" is simulated by rewriting the file on disk right after its hash was
checked (or right after the S3 cache wrote it): a loader that opened the path again would unpickle
the swapped file and create the marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest

from signalcraft_core.errors import ErrorCode, ModelError
from signalcraft_core.models import manifest as manifest_module
from signalcraft_core.models import model_store as store_module
from signalcraft_core.models.forest import CompiledForest, DisallowedGlobal, read_level1
from signalcraft_core.models.manifest import (
    MANIFEST_FILE,
    parse_manifest,
    safe_artifact_path,
)
from signalcraft_core.models.model_set import load_model_set
from signalcraft_core.models.model_store import DEFAULT_MODEL_ROOT, ModelStore
from tests.neighbours import TouchOnLoad

PACKAGED_SET = DEFAULT_MODEL_ROOT / "pump"


def upload(s3, bucket: str, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())


def vouch_for(folder: Path, payload: bytes) -> None:
    """A level1.joblib and a manifest hash that matches it: what a publisher (or anyone who got past the
    folder check) would ship."""
    (folder / "level1.joblib").write_bytes(payload)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["artifacts"]["level1"]["sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


# ------------------------------------------------------------------------------ checked bytes = loaded bytes


def test_a_local_artifact_swapped_after_its_hash_check_is_not_what_loads(tmp_path, monkeypatch):
    folder = Path(shutil.copytree(PACKAGED_SET, tmp_path / "pump"))
    marker = tmp_path / "UNPICKLED"
    real = manifest_module.verified_artifact

    def check_then_swap(name, art, data, origin):
        out = real(name, art, data, origin)
        if name == "level1":  # between check and use
            (folder / art["path"]).write_bytes(pickle.dumps(TouchOnLoad(marker)))
        return out

    monkeypatch.setattr(manifest_module, "verified_artifact", check_then_swap)
    model_set = load_model_set(folder)
    assert not marker.exists(), "the file swapped after the hash check was unpickled"
    assert isinstance(model_set.level1_pipeline, CompiledForest) and model_set.has_level2


def test_an_s3_artifact_swapped_in_the_cache_after_download_is_not_what_loads(s3, bucket, tmp_path, monkeypatch):
    upload(s3, bucket, PACKAGED_SET, "models/pump")
    marker = tmp_path / "UNPICKLED"
    real = store_module._write_file

    def write_then_swap(dir_fd, name, content):
        real(dir_fd, name, content)
        if name == "level1.joblib":  # the cached copy changes once it is on disk
            real(dir_fd, name, pickle.dumps(TouchOnLoad(marker)))

    monkeypatch.setattr(store_module, "_write_file", write_then_swap)
    store = ModelStore(f"s3://{bucket}/models", cache_dir=tmp_path / "cache", client=s3)
    model_set = store.get("pump")
    assert not marker.exists(), "the cached file was reopened and unpickled after the download was checked"
    assert isinstance(model_set.level1_pipeline, CompiledForest)
    assert (model_set.root / "level1.joblib").read_bytes() != (PACKAGED_SET / "level1.joblib").read_bytes()


# ------------------------------------------------------------------------------ the Level-1 unpickler


def test_a_hash_matching_pickle_that_names_other_globals_runs_nothing(tmp_path):
    """Even bytes the manifest vouches for run no code: no global outside the allow-list, no joblib.load fallback."""
    folder = Path(shutil.copytree(PACKAGED_SET, tmp_path / "pump"))
    marker = tmp_path / "UNPICKLED"
    vouch_for(folder, pickle.dumps(TouchOnLoad(marker)))
    with pytest.raises(ModelError, match=r"level1 model does not load \(DisallowedGlobal: .*pathlib") as info:
        load_model_set(folder)
    assert info.value.code is ErrorCode.MODEL_ERROR
    assert not marker.exists(), "the pickle ran"
    with pytest.raises(DisallowedGlobal):
        read_level1(pickle.dumps(TouchOnLoad(marker)))
    assert not marker.exists()


def test_bytes_that_are_not_a_pickle_are_a_model_error_not_a_joblib_retry(tmp_path):
    folder = Path(shutil.copytree(PACKAGED_SET, tmp_path / "pump"))
    vouch_for(folder, b"not a pickle at all")
    with pytest.raises(ModelError, match="level1 model does not load"):
        load_model_set(folder)


def test_a_pipeline_only_scikit_learn_can_score_still_loads_with_scikit_learn(tmp_path, caplog, monkeypatch):
    """The one fallback kept: scikit-learn classes the numpy forest cannot score, loaded with the same allow-list."""
    pytest.importorskip("sklearn")
    # logs.configure (run by any handler test before this one) may have raised the level and stopped propagation
    monkeypatch.setattr(logging.getLogger("signalcraft_core"), "propagate", True)
    import io

    import joblib
    import numpy as np
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    x = np.random.default_rng(0).normal(size=(50, 37))
    pipeline = make_pipeline(MinMaxScaler(), IsolationForest(n_estimators=10, random_state=0)).fit(x)
    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer, compress=3)
    folder = Path(shutil.copytree(PACKAGED_SET, tmp_path / "pump"))
    vouch_for(folder, buffer.getvalue())
    with caplog.at_level(logging.WARNING, logger="signalcraft_core"):
        loaded = load_model_set(folder).level1_pipeline
    assert type(loaded).__module__.startswith("sklearn")
    assert np.array_equal(loaded.score_samples(x), pipeline.score_samples(x))
    assert any("needs scikit-learn" in r.getMessage() for r in caplog.records)


def test_the_scikit_learn_pass_resolves_only_classes_scikit_learn_defines():
    """`sklearn.pipeline.chain` is itertools.chain imported there: a name under sklearn., not a sklearn class."""
    pytest.importorskip("sklearn")
    # GLOBAL sklearn.pipeline chain, no args, REDUCE: the stub pass sees a stand-in, the real pass must refuse it.
    data = b"\x80\x02csklearn.pipeline\nchain\n)R."
    with pytest.raises(DisallowedGlobal, match="sklearn.pipeline.chain, which is not a scikit-learn class"):
        read_level1(data)


# ------------------------------------------------------------------------------ artifact paths (F13)


@pytest.mark.parametrize("bad", [".", "./level1.joblib", "a/.", "a/", "a//level1.joblib", "level1.joblib\x00x",
                                 "..", "a/../level1.joblib", ""])
def test_empty_dot_and_nul_artifact_path_parts_are_refused(bad):
    with pytest.raises(ModelError, match="unsafe path"):
        safe_artifact_path(bad, "m", "level1")


@pytest.mark.parametrize("bad", [".", "level1.joblib\x00x"])
def test_such_a_path_from_s3_is_a_model_error_not_an_internal_error(s3, bucket, tmp_path, bad):
    upload(s3, bucket, PACKAGED_SET, "models/pump")
    manifest = json.loads((PACKAGED_SET / MANIFEST_FILE).read_text())
    manifest["artifacts"]["level1"]["path"] = bad
    s3.put_object(Bucket=bucket, Key="models/pump/manifest.json", Body=json.dumps(manifest).encode())
    store = ModelStore(f"s3://{bucket}/models", cache_dir=tmp_path / "cache", client=s3)
    with pytest.raises(ModelError, match="unsafe path") as info:
        store.get("pump")
    assert info.value.code is ErrorCode.MODEL_ERROR
    assert not (tmp_path / "cache").exists() or not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_plain_names_and_subfolders_stay_valid():
    doc = {"schema_version": 1, "name": "n", "version": "v", "machine_type": "pump", "profile": {},
           "artifacts": {"a": {"path": "v2/level1.joblib", "sha256": "0" * 64}}}
    assert parse_manifest(json.dumps(doc).encode(), "here")["artifacts"]["a"]["path"] == "v2/level1.joblib"
    assert safe_artifact_path("level1.joblib", "m", "a") == "level1.joblib"
