"""The model manifest: one JSON file per model set that names, hashes and configures everything.

It is the single source of truth for a model set: feature profile, artifacts with SHA-256,
calibration knots, learned rule ranges, training summary and validation metrics. Loading checks
every hash *before* any artifact is deserialised: a joblib file is code, never load one unverified.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from signalcraft_core.errors import ModelError

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "name", "version", "machine_type", "profile", "artifacts")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: Reads of model files never follow a symlink in the last component, and never block on a FIFO.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


class NotARegularFile(OSError):
    """A symlink, FIFO, device or folder where a model file belongs."""


def _open_regular(path: Path) -> int:
    """A descriptor of a regular file at `path`; NotARegularFile for a symlink, FIFO or anything else."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW on a symlink (EMLINK on FreeBSD)
            raise NotARegularFile(exc.errno, "is a symbolic link") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARegularFile(0, "is not a regular file")
    return fd


def read_regular_file(path: str | Path) -> bytes:
    """The bytes of a regular file, read without following a symlink or opening a FIFO for good."""
    fd = _open_regular(Path(path))
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def sha256_regular_file(path: str | Path) -> str:
    """sha256_file, but refusing symlinks, FIFOs and other non-regular files (NotARegularFile)."""
    fd = _open_regular(Path(path))
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_version(manifest: dict[str, Any]) -> str:
    """Content version: a hash of what changes grades (artifacts, profile, calibrations, rules, hybrid,
    the short-clip calibrations and the window long recordings are cut into).

    The later sections join the hash only when present, so sets written before them keep their versions."""
    content = {k: manifest.get(k) for k in ("artifacts", "profile", "level1", "level2")}
    for key in ("hybrid", "short_clips"):
        if key in manifest:
            content[key] = manifest[key]
    window = (manifest.get("training") or {}).get("clip_seconds")
    if window is not None:
        content["clip_seconds"] = window
    return sha256_bytes(json.dumps(content, sort_keys=True).encode())[:12]


def parse_manifest(data: bytes, origin: str) -> dict[str, Any]:
    """Validate a manifest's shape; `origin` names where it came from for the error line."""
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{origin}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{origin}: manifest must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelError(f"{origin}: manifest lacks {', '.join(missing)}")
    if manifest["schema_version"] != MANIFEST_SCHEMA_VERSION:
        raise ModelError(
            f"{origin}: manifest schema {manifest['schema_version']} is not supported (expected {MANIFEST_SCHEMA_VERSION})"
        )
    if not isinstance(manifest["artifacts"], dict):
        raise ModelError(f"{origin}: manifest artifacts must be an object of name -> {{path, sha256}}")
    for name, art in manifest["artifacts"].items():
        if not isinstance(art, dict):
            raise ModelError(f"{origin}: artifact {name} must be an object with path and sha256")
        safe_artifact_path(str(art.get("path", "")), origin, name)
        if not isinstance(art.get("sha256"), str) or len(art["sha256"]) != 64:
            raise ModelError(f"{origin}: artifact {name} has no valid sha256")
    return manifest


def safe_artifact_path(path: str, origin: str, name: str) -> str:
    """Artifact paths are plain names inside the model folder: no absolute paths, no `..`."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise ModelError(f"{origin}: artifact {name} has an unsafe path {path!r}")
    return path


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MANIFEST_FILE
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        raise ModelError(f"no {MANIFEST_FILE} in {model_dir} (is this a model folder? see `signalcraft train`)") from None
    except NotARegularFile as exc:
        raise ModelError(f"{path} {exc.strerror}; refusing to read it") from None
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    return parse_manifest(data, str(path))


def verify_artifacts(model_dir: str | Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """Paths of every artifact whose SHA-256 matches the manifest; refuses any mismatch.

    `manifest` is the one the caller parsed (from the bytes it downloaded, for a model store), never
    re-read here; symlinks and FIFOs are refused, not followed.
    """
    root = Path(model_dir)
    verified: dict[str, Path] = {}
    for name, art in manifest["artifacts"].items():
        path = root / safe_artifact_path(str(art.get("path", "")), str(root), name)
        try:
            actual = sha256_regular_file(path)
        except FileNotFoundError:
            raise ModelError(f"{root}: artifact {name} ({art['path']}) is missing") from None
        except NotARegularFile as exc:
            raise ModelError(f"{root}: artifact {name} ({art['path']}) {exc.strerror}; refusing to load it") from None
        except OSError as exc:
            raise ModelError(f"{root}: artifact {name} ({art['path']}) cannot be read: {exc.strerror or exc}") from None
        if actual != art["sha256"]:
            raise ModelError(
                f"{root}: artifact {name} ({art['path']}) fails its integrity check "
                f"(sha256 {actual[:12]}... != manifest {art['sha256'][:12]}...); refusing to load it"
            )
        verified[name] = path
    return verified


def write_manifest(model_dir: str | Path, manifest: dict[str, Any]) -> Path:
    manifest = dict(manifest)
    manifest["version"] = model_version(manifest)
    path = Path(model_dir) / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def artifact_entry(model_dir: str | Path, filename: str) -> dict[str, Any]:
    path = Path(model_dir) / filename
    return {"path": filename, "sha256": sha256_file(path), "bytes": path.stat().st_size}
