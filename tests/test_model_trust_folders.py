"""Model folders another local user can write are refused before anything in them is read (audit F1, F10).

The threat: "anything that reads a shared folder assumes a hostile neighbour". A neighbour who can
write a model folder (or the folder above it) rewrites level1.joblib *and* its hash in
manifest.json, so the hash check alone proves nothing. The neighbour is uid 65534 (`nobody`): a
real process run with setpriv where the test needs one to act, os.chown where ownership is enough;
both need root, and those tests skip without it. Mode checks need no other user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from signalcraft_core.errors import ErrorCode, ModelError
from signalcraft_core.models import model_store as store_module
from signalcraft_core.models.manifest import MANIFEST_FILE, private_group
from signalcraft_core.models.model_set import load_model_set
from signalcraft_core.models.model_store import DEFAULT_MODEL_ROOT, ModelStore
from tests.neighbours import TouchOnLoad, shared_group

NEIGHBOUR = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another uid needs root")
PACKAGED_SET = DEFAULT_MODEL_ROOT / "pump"


def private_copy(target: Path) -> Path:
    """The packaged pump set copied to `target`, folders 0755 and files 0644 whatever the umask."""
    shutil.copytree(PACKAGED_SET, target)
    os.chmod(target, 0o755)
    for path in target.iterdir():
        os.chmod(path, 0o644)
    return target


def vouch_for(folder: Path, payload: bytes) -> None:
    """What a neighbour with write access does: a new level1.joblib and the manifest hash that matches it."""
    (folder / "level1.joblib").write_bytes(payload)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["artifacts"]["level1"]["sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def refusal(load) -> str:
    with pytest.raises(ModelError) as info:
        load()
    assert info.value.code is ErrorCode.MODEL_ERROR and "\n" not in str(info.value)
    return str(info.value)


# ------------------------------------------------------------------------------ what is trusted


def test_the_packaged_models_and_a_private_tmp_path_folder_load(tmp_path):
    """Control for the refusals below: root-owned 0755 packaged sets and our own pytest folders are trusted."""
    assert ModelStore().get("pump").has_level1
    folder = private_copy(tmp_path / "models" / "pump")
    store = ModelStore(tmp_path / "models")
    assert store.get("pump").has_level1 and load_model_set(folder).has_level2


def test_a_sticky_world_writable_ancestor_is_accepted_like_tmp(tmp_path):
    """Ours (or root's) and sticky: others may add entries, not rename ours (Lambda's /tmp may be the user's own)."""
    shared = tmp_path / "drop"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: others may add entries, not rename ours
    private_copy(shared / "pump")
    assert load_model_set(shared / "pump").has_level1


def test_a_read_only_mount_is_trusted_whatever_its_mode_bits(tmp_path, monkeypatch):
    """Lambda's /var/task (or a read-only image) keeps the modes of the zip; nobody can write it anyway."""
    from signalcraft_core.models import manifest as manifest_module

    folder = private_copy(tmp_path / "pump")
    os.chmod(folder, 0o777)
    os.chmod(folder / "level1.joblib", 0o666)
    with pytest.raises(ModelError, match="writable by other users"):
        load_model_set(folder)
    monkeypatch.setattr(manifest_module, "_on_read_only_mount", lambda fd: True)
    assert load_model_set(folder).has_level1
    os.replace(folder / "autoencoder.pt", tmp_path / "elsewhere.pt")
    (folder / "autoencoder.pt").symlink_to(tmp_path / "elsewhere.pt")  # still never followed
    with pytest.raises(ModelError, match="is a symbolic link"):
        load_model_set(folder)


# ------------------------------------------------------------------------------ what is refused


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777])
def test_a_model_folder_others_can_write_is_refused_and_names_the_remedy(tmp_path, mode):
    folder = private_copy(tmp_path / "models" / "pump")
    marker = tmp_path / "UNPICKLED"
    vouch_for(folder, pickle.dumps(TouchOnLoad(marker)))
    os.chmod(folder, mode)
    if mode & 0o020 and not mode & 0o002:
        os.chown(folder, -1, shared_group())   # group write matters when the group holds others
    for load in (lambda: ModelStore(folder).get("pump"), lambda: load_model_set(folder),
                 lambda: ModelStore(tmp_path / "models").get("pump")):
        message = refusal(load)
        assert f"{folder} is writable by other users (mode {mode:04o})" in message, message
        assert f"chmod -R go-w {folder}" in message and "refusing" in message
    assert not marker.exists()


def test_group_write_for_a_group_of_the_owner_alone_is_trusted(tmp_path):
    """A checkout under umask 002 (a private group per user) leaves the models 0775 / 0664: still ours alone."""
    folder = private_copy(tmp_path / "pump")
    gid = os.stat(folder).st_gid
    if not private_group(gid, os.geteuid()):
        pytest.skip("this user's group has other members here")
    for path in (folder, *folder.iterdir()):
        os.chmod(path, 0o775 if path.is_dir() else 0o664)
    assert ModelStore(folder).get("pump").name


@pytest.mark.parametrize("name", [MANIFEST_FILE, "level1.joblib", "autoencoder.pt"])
def test_a_manifest_or_artifact_others_can_write_is_refused(tmp_path, name):
    folder = private_copy(tmp_path / "pump")
    os.chmod(folder / name, 0o666)
    message = refusal(lambda: ModelStore(folder).get("pump"))
    assert f"{folder / name} is writable by other users (mode 0666)" in message, message
    assert f"chmod -R go-w {folder / name}" in message


def test_a_sticky_model_root_is_not_trusted_for_its_set_folders(tmp_path):
    """The root itself is held to the strict rule: in a sticky 1777 root a neighbour can add a set of its own."""
    root = tmp_path / "models"
    private_copy(root / "pump")
    os.chmod(root, 0o1777)
    message = refusal(lambda: ModelStore(root).get("pump"))
    assert f"{root} is writable by other users (mode 1777)" in message, message


def test_an_ancestor_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    folder = private_copy(shared / "team" / "pump")
    os.chmod(shared, 0o777)  # not sticky: anyone may rename `team` away and put their own in its place
    message = refusal(lambda: load_model_set(folder))
    assert f"{shared} is writable by other users (mode 0777)" in message and f"chmod -R go-w {shared}" in message


@as_root
@pytest.mark.parametrize("what", ["folder", "manifest", "artifact", "ancestor"])
def test_model_files_or_folders_another_user_owns_are_refused(tmp_path, what):
    folder = private_copy(tmp_path / "outer" / "pump")
    owned = {"folder": folder, "manifest": folder / MANIFEST_FILE, "artifact": folder / "level1.joblib",
             "ancestor": tmp_path / "outer"}[what]
    os.chown(owned, NEIGHBOUR, NEIGHBOUR)  # mode unchanged (0755 / 0644): the owner alone can rewrite it
    message = refusal(lambda: ModelStore(folder).get("pump"))
    assert f"{owned} is owned by uid {NEIGHBOUR}" in message, message


@as_root
def test_the_auditors_shared_model_folder_attack_runs_no_code(tmp_path):
    """poc_shared_model_folder.py: a real neighbour process rewrites the pickle and its hash in a team folder."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is not installed")
    with tempfile.TemporaryDirectory(dir="/tmp") as outer:  # tmp_path (0700) is out of the neighbour's reach
        os.chmod(outer, 0o755)
        drop = private_copy(Path(outer) / "sc-models")
        os.chmod(drop, 0o1777)
        for path in drop.iterdir():
            os.chmod(path, 0o666)
        marker = Path(outer) / "pwned"
        attack = (f"import hashlib, json, pickle, pathlib\n"
                  f"class Evil:\n"
                  f"    def __reduce__(self): return (pathlib.Path.touch, (pathlib.Path({str(marker)!r}),))\n"
                  f"data = pickle.dumps(Evil())\n"
                  f"drop = pathlib.Path({str(drop)!r})\n"
                  f"(drop / 'level1.joblib').write_bytes(data)\n"
                  f"m = json.loads((drop / 'manifest.json').read_text())\n"
                  f"m['artifacts']['level1']['sha256'] = hashlib.sha256(data).hexdigest()\n"
                  f"(drop / 'manifest.json').write_text(json.dumps(m))\n")
        subprocess.run(["setpriv", f"--reuid={NEIGHBOUR}", f"--regid={NEIGHBOUR}", "--clear-groups",
                        sys.executable, "-c", attack], check=True, timeout=60)
        assert os.stat(drop / "level1.joblib").st_mode & stat.S_IWOTH  # the neighbour really could write it
        message = refusal(lambda: ModelStore(str(drop)).load(""))
        assert f"{drop} is writable by other users" in message and "chmod -R go-w" in message, message
        assert not marker.exists(), "the neighbour's pickle ran"


# ------------------------------------------------------------------------------ the S3 cache folder (F10)


def upload(s3, bucket: str, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())


@pytest.fixture
def squatted_default_cache(tmp_path, monkeypatch) -> Path:
    """The default cache folder, pre-created by someone else: writable by all (and owned by `nobody` as root)."""
    default = tmp_path / "signalcraft-models-default"
    default.mkdir()
    os.chmod(default, 0o777)
    if os.geteuid() == 0:
        os.chown(default, NEIGHBOUR, NEIGHBOUR)
    monkeypatch.setattr(store_module, "default_cache_dir", lambda: default)
    monkeypatch.delenv("SIGNALCRAFT_CACHE_DIR", raising=False)
    return default


def test_a_squatted_default_cache_gives_way_to_the_private_runtime_folder(
        s3, bucket, tmp_path, monkeypatch, caplog, squatted_default_cache):
    upload(s3, bucket, PACKAGED_SET, "models/pump")
    runtime_dir = tmp_path / "run-user"
    runtime_dir.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    store = ModelStore(f"s3://{bucket}/models", client=s3)
    with caplog.at_level(logging.WARNING, logger=store_module.__name__):
        model_set = store.get("pump")
    assert model_set.has_level1 and store.cache_dir == runtime_dir / "signalcraft-models"
    assert runtime_dir / "signalcraft-models" in model_set.root.parents
    assert stat.S_IMODE(os.stat(store.cache_dir).st_mode) == 0o700
    assert list(squatted_default_cache.iterdir()) == []  # nothing written into the squatted folder
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(squatted_default_cache) in warning.getMessage() and str(store.cache_dir) in warning.getMessage()


def test_without_a_runtime_folder_the_fallback_is_a_fresh_private_temp_folder(
        s3, bucket, tmp_path, monkeypatch, squatted_default_cache):
    upload(s3, bucket, PACKAGED_SET, "models/pump")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    store = ModelStore(f"s3://{bucket}/models", client=s3)
    assert store.get("pump").has_level1
    assert store.cache_dir.parent == tmp_path and store.cache_dir.name.startswith(f"signalcraft-models-{os.geteuid()}-")
    assert stat.S_IMODE(os.stat(store.cache_dir).st_mode) == 0o700


def test_a_refused_signalcraft_cache_dir_stays_an_error(s3, bucket, tmp_path, monkeypatch):
    """A folder the operator chose is never silently replaced: the refusal is the answer."""
    upload(s3, bucket, PACKAGED_SET, "models/pump")
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    os.chmod(chosen, 0o777)
    monkeypatch.setenv("SIGNALCRAFT_CACHE_DIR", str(chosen))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    store = ModelStore(f"s3://{bucket}/models", client=s3)
    message = refusal(lambda: store.get("pump"))
    assert f"model cache folder {chosen} is writable by other users" in message and "SIGNALCRAFT_CACHE_DIR" in message
    assert store.cache_dir == chosen and not (tmp_path / "signalcraft-models").exists()


@as_root
def test_a_cache_below_a_folder_the_neighbour_owns_is_refused(s3, bucket, tmp_path):
    """poc_cache_toctou.py's set-up: the neighbour owns the folder above SIGNALCRAFT_CACHE_DIR and could swap it."""
    upload(s3, bucket, PACKAGED_SET, "models/pump")
    shared = tmp_path / "sc-shared"
    shared.mkdir()
    os.chown(shared, NEIGHBOUR, NEIGHBOUR)
    store = ModelStore(f"s3://{bucket}/models", client=s3, cache_dir=shared / "cache")
    message = refusal(lambda: store.get("pump"))
    assert f"{shared} is owned by uid {NEIGHBOUR}" in message and "SIGNALCRAFT_CACHE_DIR" in message, message


def test_a_set_folder_that_is_a_link_loads_when_its_target_is_ours_alone(tmp_path, monkeypatch):
    """`pump -> pump-v3` (a release switched by a link) is listed and loaded; a link to a folder others
    can write is refused like that folder itself."""
    root = tmp_path / "models"
    root.mkdir(mode=0o755)
    private_copy(tmp_path / "releases" / "pump-v3")
    (root / "pump").symlink_to(tmp_path / "releases" / "pump-v3")
    store = ModelStore(root)
    assert store.set_names() == ["pump"] and store.get("pump").name
    monkeypatch.chdir(tmp_path)   # a root given relative, as `--models models` is
    assert ModelStore("models").get("pump").name == store.get("pump").name
    os.chmod(tmp_path / "releases" / "pump-v3", 0o777)
    message = refusal(lambda: ModelStore(root).get("pump"))
    assert f"{tmp_path / 'releases' / 'pump-v3'} is writable by other users" in message, message
