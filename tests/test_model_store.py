"""ModelStore: which set grades a recording, and loading sets from S3 through a verified local cache."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from signalcraft_core.errors import ModelError
from signalcraft_core.models.manifest import (
    MANIFEST_FILE,
    artifact_entry,
    sha256_bytes,
    sha256_file,
    write_manifest,
)
from signalcraft_core.models.model_store import ModelStore
from tests.neighbours import TouchOnLoad


def make_set(folder: Path, name: str, machine_type: str, seed: int = 0) -> Path:
    """A small Level-2-only model set (random weights; what matters here is which one is served)."""
    import torch

    from signalcraft_core.dsp.features import get_profile
    from signalcraft_core.models.calibration import linear_calibration
    from signalcraft_core.training.autoencoder import (
        Autoencoder,
        ScoringModule,
        export_torchscript,
    )

    profile = get_profile("default")
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    module = ScoringModule(Autoencoder(profile.dim), np.zeros(profile.dim, np.float32), np.ones(profile.dim, np.float32))
    export_torchscript(module, folder / "autoencoder.pt")
    write_manifest(folder, {
        "schema_version": 1, "name": name, "version": "", "machine_type": machine_type, "preference": "level2",
        "profile": profile.to_dict(), "artifacts": {"autoencoder": artifact_entry(folder, "autoencoder.pt")},
        "level2": {"calibration": linear_calibration(1.0).to_dict()}, "level1": None,
    })
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    return {
        "pump": make_set(root / "pump", "pump-v1", "pump", seed=1),
        "pump2": make_set(root / "pump2", "pump-v2", "pump", seed=2),
        "valve": make_set(root / "valve", "valve-v1", "valve", seed=3),
        "default": make_set(root / "default", "default-v1", "default", seed=4),
    }


def local_root(tmp_path: Path, sets: dict[str, Path], names=("pump", "valve", "default")) -> Path:
    root = tmp_path / "models"
    for name in names:
        shutil.copytree(sets[name], root / name)
    return root


# ------------------------------------------------------------------------------------ local


def test_per_type_selection_with_default_fallback(tmp_path, sets):
    store = ModelStore(local_root(tmp_path, sets))
    assert store.set_names() == ["default", "pump", "valve"]
    assert store.get("pump").name == "pump-v1"
    assert store.get("valve").name == "valve-v1"
    assert store.get("fan").name == "default-v1"
    assert store.get(None).name == "default-v1"
    assert store.get("pump") is store.get("pump")  # loaded once, then served from memory


def test_a_folder_is_rescanned_only_after_the_check_interval(tmp_path, sets):
    """Every key resolves through the set list: a folder is scanned once per interval, not per recording."""
    root = local_root(tmp_path, sets, names=("default",))
    patient, eager = ModelStore(root, check_interval_s=3600.0), ModelStore(root, check_interval_s=0.0)
    assert patient.get("valve").name == eager.get("valve").name == "default-v1"
    shutil.copytree(sets["valve"], root / "valve")
    assert patient.get("valve").name == "default-v1"      # within its interval: the last scan
    assert eager.get("valve").name == "valve-v1"          # interval over: the new set is found


def test_for_path_and_for_key_read_the_machine_type_off_the_name(tmp_path, sets):
    store = ModelStore(local_root(tmp_path, sets))
    assert store.for_path("data/pump/id_00/normal/00000001.wav").name == "pump-v1"
    assert store.for_path("data/valve/id_02/x.wav").name == "valve-v1"
    assert store.for_path("recordings/x.wav").name == "default-v1"
    assert store.for_path("data/pump/id_00/x.wav", machine_type="valve").name == "valve-v1"
    model_set, info = store.for_key("site-a/valve/id_03/x.wav")
    assert model_set.name == "valve-v1" and (info.site, info.machine_type, info.machine_id) == ("site-a", "valve", "id_03")


def test_set_names_become_machine_types(tmp_path, sets):
    root = local_root(tmp_path, sets, names=("default",))
    shutil.copytree(sets["pump"], root / "compressor")
    store = ModelStore(root)
    assert store.key_info("site/compressor/c-1/x.wav").machine_type == "compressor"
    assert store.for_key("site/compressor/c-1/x.wav")[0].name == "pump-v1"


def test_custom_key_pattern(tmp_path, sets):
    store = ModelStore(local_root(tmp_path, sets), key_pattern=r"^(?P<machine_type>[a-z]+)_(?P<machine_id>\d+)\.wav$")
    model_set, info = store.for_key("valve_17.wav")
    assert model_set.name == "valve-v1" and info.machine_id == "17"
    with pytest.raises(ModelError, match="KEY_PATTERN"):
        ModelStore(local_root(tmp_path / "b", sets), key_pattern="(?P<site>")


def test_a_folder_with_a_manifest_is_one_set_for_everything(tmp_path, sets):
    store = ModelStore(shutil.copytree(sets["valve"], tmp_path / "single"))
    assert store.set_names() == [""]
    assert store.get("pump").name == store.get(None).name == "valve-v1"
    assert store.for_path("data/fan/id_00/x.wav").name == "valve-v1"


def test_no_matching_set_and_no_default_is_a_model_error(tmp_path, sets):
    store = ModelStore(local_root(tmp_path, sets, names=("pump",)))
    assert store.get("pump").name == "pump-v1"
    with pytest.raises(ModelError, match="no model set for fan and no `default` set"):
        store.get("fan")


def test_a_missing_root_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        ModelStore(tmp_path / "nope")
    with pytest.raises(ModelError, match="names no bucket"):
        ModelStore("s3:///models")


def upload(s3, bucket: str, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())


def s3_store(s3, bucket: str, cache: Path, interval: float = 0.0) -> ModelStore:
    return ModelStore(f"s3://{bucket}/models", cache_dir=cache, check_interval_s=interval, client=s3)


def test_s3_sets_load_through_a_verified_cache(s3, bucket, sets, tmp_path):
    upload(s3, bucket, sets["pump"], "models/pump")
    upload(s3, bucket, sets["default"], "models/default")
    cache = tmp_path / "cache"
    store = s3_store(s3, bucket, cache)
    assert store.set_names() == ["default", "pump"]
    model_set = store.get("pump")
    assert model_set.name == "pump-v1" and store.get("fan").name == "default-v1"
    assert cache in model_set.root.parents
    manifest = json.loads((model_set.root / MANIFEST_FILE).read_text())
    assert manifest == json.loads((sets["pump"] / MANIFEST_FILE).read_text())
    for art in manifest["artifacts"].values():
        assert sha256_file(model_set.root / art["path"]) == art["sha256"]
    assert not list(cache.rglob("*.part"))
    # A second store (a new container) with the same cache grades with the same set.
    again = s3_store(s3, bucket, cache).get("pump")
    assert again.root == model_set.root and again.version == model_set.version


def test_s3_single_set_root(s3, bucket, sets, tmp_path):
    upload(s3, bucket, sets["valve"], "models")
    store = s3_store(s3, bucket, tmp_path / "cache")
    assert store.set_names() == [""]
    assert store.get("pump").name == "valve-v1"


def test_a_tampered_artifact_in_s3_is_refused(s3, bucket, sets, tmp_path):
    upload(s3, bucket, sets["pump"], "models/pump")
    tampered = (sets["pump"] / "autoencoder.pt").read_bytes() + b"\0"
    s3.put_object(Bucket=bucket, Key="models/pump/autoencoder.pt", Body=tampered)
    with pytest.raises(ModelError, match="integrity"):
        s3_store(s3, bucket, tmp_path / "cache").get("pump")


def test_a_swapped_pickle_in_s3_is_never_unpickled(s3, bucket, sets, tmp_path):
    """The manifest names an honest level1.joblib; the bucket holds one that runs code when loaded."""
    folder = shutil.copytree(sets["pump"], tmp_path / "pump")
    honest = pickle.dumps({"honest": True})
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["artifacts"]["level1"] = {"path": "level1.joblib", "sha256": sha256_bytes(honest), "bytes": len(honest)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    upload(s3, bucket, folder, "models/pump")
    marker = tmp_path / "pwned"
    s3.put_object(Bucket=bucket, Key="models/pump/level1.joblib", Body=pickle.dumps(TouchOnLoad(marker)))
    with pytest.raises(ModelError, match="level1.*integrity"):
        s3_store(s3, bucket, tmp_path / "cache").get("pump")
    assert not marker.exists()


def test_a_republished_set_is_picked_up_after_the_check_interval(s3, bucket, sets, tmp_path):
    upload(s3, bucket, sets["pump"], "models/pump")
    eager = s3_store(s3, bucket, tmp_path / "cache", interval=0.0)
    lazy = s3_store(s3, bucket, tmp_path / "cache", interval=3600.0)
    first = eager.get("pump")
    assert lazy.get("pump").name == first.name == "pump-v1"
    assert eager.get("pump") is first  # unchanged manifest: the loaded set is kept
    upload(s3, bucket, sets["pump2"], "models/pump")
    second = eager.get("pump")
    assert second.name == "pump-v2" and second.version != first.version
    assert lazy.get("pump").name == "pump-v1"  # within its interval: no re-check yet


def test_new_sets_in_s3_are_listed_after_the_check_interval(s3, bucket, sets, tmp_path):
    upload(s3, bucket, sets["default"], "models/default")
    store = s3_store(s3, bucket, tmp_path / "cache")
    assert store.get("valve").name == "default-v1"
    upload(s3, bucket, sets["valve"], "models/valve")
    assert store.get("valve").name == "valve-v1"


def test_an_empty_s3_root_is_a_model_error(s3, bucket, tmp_path):
    with pytest.raises(ModelError, match="no model sets under"):
        s3_store(s3, bucket, tmp_path / "cache").get("pump")


def test_a_failing_check_keeps_serving_the_loaded_set(s3, bucket, sets, tmp_path):
    upload(s3, bucket, sets["pump"], "models/pump")
    store = s3_store(s3, bucket, tmp_path / "cache")
    first = store.get("pump")

    def unreachable(**_):
        raise ConnectionError("store unreachable")

    s3.meta.events.register("before-call.s3.HeadObject", unreachable)
    try:
        assert store.get("pump") is first
    finally:
        s3.meta.events.unregister("before-call.s3.HeadObject", unreachable)


# ------------------------------------------------------------------------------- planted files


def test_a_fifo_manifest_or_a_symlinked_artifact_in_a_model_folder_is_refused_not_followed(tmp_path, sets):
    """Reads open with O_NOFOLLOW | O_NONBLOCK and check S_ISREG: a FIFO cannot hang a load, a symlink is not read."""
    import os
    import threading

    from signalcraft_core.models.model_set import load_model_set

    fifo_set = shutil.copytree(sets["pump"], tmp_path / "fifo")
    (fifo_set / MANIFEST_FILE).unlink()
    os.mkfifo(fifo_set / MANIFEST_FILE)
    outcome: list[str] = []

    def load() -> None:
        try:
            load_model_set(fifo_set)
        except ModelError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "opening the FIFO manifest blocked"
    assert len(outcome) == 1 and "manifest.json is not a regular file; refusing" in outcome[0], outcome

    link_set = shutil.copytree(sets["pump"], tmp_path / "link")
    real = tmp_path / "elsewhere.pt"
    os.replace(link_set / "autoencoder.pt", real)
    (link_set / "autoencoder.pt").symlink_to(real)  # same bytes, so only the symlink itself is refused
    with pytest.raises(ModelError, match=r"autoencoder \(autoencoder\.pt\) is a symbolic link; refusing to load it"):
        ModelStore(link_set).get("pump")


# ------------------------------------------------------------------------------ per-machine sets

MACHINE_KEYS = {  # key -> (set that must grade it, scope)
    "site-a/pump/id_00/0001.wav": ("pump2", "machine"),     # site-a/pump/id_00
    "site-b/pump/id_00/0001.wav": ("valve", "machine"),     # pump/id_00 (no site-b set)
    "site-b/pump/id_07/0001.wav": ("pump", "type"),         # pump
    "site-b/fan/id_01/0001.wav": ("default", "default"),    # nothing for fans
}


def _machine_root(tmp_path: Path, sets) -> Path:
    root = tmp_path / "models"
    for name, target in (("pump", "pump"), ("default", "default"), ("pump2", "site-a/pump/id_00"),
                         ("valve", "pump/id_00")):
        shutil.copytree(sets[name], root / target)
    return root


def _check_resolution(store: ModelStore, sets) -> None:
    names = {name: json.loads((sets[name] / MANIFEST_FILE).read_text())["name"] for name in sets}
    assert store.set_names() == ["default", "pump", "pump/id_00", "site-a/pump/id_00"]
    for key, (expected, scope) in MACHINE_KEYS.items():
        model_set, info = store.for_key(key)
        assert (model_set.name, model_set.scope) == (names[expected], scope), key


def test_the_most_specific_set_grades_a_machine(tmp_path, sets):
    _check_resolution(ModelStore(_machine_root(tmp_path, sets)), sets)


def test_the_most_specific_set_grades_a_machine_from_s3(s3, bucket, sets, tmp_path):
    root = _machine_root(tmp_path, sets)
    for manifest in root.rglob(MANIFEST_FILE):
        upload(s3, bucket, manifest.parent, f"models/{manifest.parent.relative_to(root).as_posix()}")
    _check_resolution(s3_store(s3, bucket, tmp_path / "cache"), sets)
