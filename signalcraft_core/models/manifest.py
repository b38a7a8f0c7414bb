"""The model manifest: one JSON file per model set that names, hashes and configures everything.

It is the single source of truth for a model set: feature profile, artifacts with SHA-256,
calibration knots, learned rule ranges, training summary and validation metrics. Loading checks
every hash *before* any artifact is deserialised: a joblib file is code, never load one unverified.

A hash only helps if nobody else can rewrite the manifest next to the artifact, and only if the
bytes hashed are the bytes deserialised. So a model folder is opened from `/` one component at a
time (never through a symlink), every folder and file must be owned by this user or root and not
writable by others, nor by a group holding anyone but its owner (OpenSSH's StrictModes with
Debian's private-group rule; an ancestor may be world-writable only when sticky, like /tmp; a
read-only mount is trusted as it is), and each artifact is read once into memory, hashed, and
handed to its loader as those same bytes: nothing is reopened by path after the check.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import json
import os
import pwd
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from signalcraft_core.config import PREFERENCES
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
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
#: Folders are walked with O_PATH where there is one: fstat, fstatvfs and openat need only search
#: permission then, as reading by path does (an execute-only 0711 home folder above the models).
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW | getattr(os, "O_PATH", 0)


class NotARegularFile(OSError):
    """A symlink, FIFO, device or folder where a model file belongs."""


def trust_refusal(st: os.stat_result, *, folder: bool, ancestor: bool = False, read_only: bool = False) -> str | None:
    """Why another local user could change this model file or folder, or None when only we (or root) can.

    A file anyone else can write, or one in a folder anyone else can write, is a pickle they choose
    (together with the manifest hash that vouches for it). `ancestor`: a folder above the model root
    may be world-writable when it is sticky (/tmp): others can add entries there but cannot rename or
    replace ours (only we or root own it, checked first). `read_only`: on a read-only mount (Lambda's
    /var/task, a read-only image) nobody can change anything, whatever the mode bits say.
    """
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if folder and not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if not folder and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if read_only:
        return None
    if st.st_uid not in (os.geteuid(), 0):
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}) or root"
    if ancestor and st.st_mode & stat.S_ISVTX:
        return None
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and not private_group(st.st_gid, st.st_uid)):
        return f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def private_group(gid: int, owner_uid: int) -> bool:
    """Whether group `gid` has exactly one member, the owner: group write then lets nobody else in.

    A checkout or copy made under umask 002 (distributions with a private group per user) leaves the
    packaged models group-writable by a group that holds only their owner; refusing those would turn
    every grade into a model_error for no gain. The rule is Debian's OpenSSH StrictModes patch: the
    owner is the group's one member, by primary group or by the member list (an empty group is not
    private: setgid programs use those).
    """
    try:
        group = grp.getgrgid(gid)
        owner = pwd.getpwuid(owner_uid).pw_name
    except KeyError:
        return False
    primary = [p.pw_uid for p in pwd.getpwall() if p.pw_gid == gid]
    if any(uid != owner_uid for uid in primary) or any(name != owner for name in group.gr_mem):
        return False
    return bool(primary or group.gr_mem)


def _on_read_only_mount(fd: int) -> bool:
    return bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)


class UntrustedModelPath(ModelError):
    """A model folder or file that another local user can write (or owns): refused before anything is read."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path} {reason}; refusing to load models from it ({trust_remedy(path, reason)})")


def trust_remedy(path: Path, reason: str) -> str:
    """The command that makes `path` trustworthy again, for the refusal message."""
    if "writable by other users" in reason:
        return f"run `chmod -R go-w {path}`, or copy the models to a folder only you can write"
    if "owned by uid" in reason:
        return f"run `chown {os.geteuid()} {path}`, or copy the models to a folder only you can write"
    return "use a plain folder only you can write"


#: How a refusal becomes an error: (offending path, reason) -> the exception to raise.
Refuse = Callable[[Path, str], Exception]


def open_trusted_dir(path: str | Path, *, strict_from: str | Path | None = None, refuse: Refuse = UntrustedModelPath) -> int:
    """A descriptor of the folder `path`, reached from `/` one component at a time and checked on the way.

    Each component is opened with O_NOFOLLOW relative to its parent's descriptor and checked with
    `trust_refusal` on that descriptor, so what was checked is what is used. Components above
    `strict_from` (default: `path` itself) are ancestors (the sticky /tmp allowance); it and those
    below it are held to the strict rule. `path` must be absolute and already resolved where symlinks
    are acceptable (the caller decides). FileNotFoundError when a component is missing.
    """
    path = Path(path)
    if not path.is_absolute():
        raise ValueError(f"{path} is not an absolute path")
    strict = len(Path(strict_from if strict_from is not None else path).parts)
    fd = os.open("/", _DIR_FLAGS)
    where = Path("/")
    try:
        _check_folder(fd, where, ancestor=strict > 1, refuse=refuse)
        for depth, name in enumerate(path.parts[1:], start=2):
            where = where / name
            child = _descend(fd, name, where, ancestor=depth < strict, refuse=refuse)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_trusted_subdirs(parent_fd: int, names: list[str] | tuple[str, ...], where: Path, *,
                         create: bool = False, refuse: Refuse = UntrustedModelPath) -> int:
    """Descend (creating 0700 when `create`) through `names` below an open, checked folder; a new descriptor."""
    fd = os.dup(parent_fd)
    try:
        for name in names:
            where = where / name
            if create:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            child = _descend(fd, name, where, ancestor=False, refuse=refuse)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _descend(fd: int, name: str, where: Path, *, ancestor: bool, refuse: Refuse) -> int:
    """A new descriptor of the checked child folder `name` of `fd` (which the caller still owns)."""
    try:
        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):  # a symlink or a file where a folder belongs
            st = os.lstat(name, dir_fd=fd)
            raise refuse(where, trust_refusal(st, folder=True) or f"cannot be opened ({exc.strerror})") from None
        raise
    try:
        _check_folder(child, where, ancestor=ancestor, refuse=refuse)
    except BaseException:
        os.close(child)
        raise
    return child


def _check_folder(fd: int, where: Path, *, ancestor: bool, refuse: Refuse) -> None:
    reason = trust_refusal(os.fstat(fd), folder=True, ancestor=ancestor, read_only=_on_read_only_mount(fd))
    if reason:
        raise refuse(where, reason)


@contextmanager
def trusted_model_folder(model_dir: str | Path, trusted_root: str | Path | None = None) -> Iterator[int]:
    """A checked descriptor of a model folder (symlinks in the path given are resolved first, StrictModes-style).

    `trusted_root`: the model root `model_dir` lies in; it and every folder below it are held to the
    strict rule (a sticky /tmp-like root would let others add a set folder of their own).
    """
    root = Path(trusted_root if trusted_root is not None else model_dir).resolve()
    below = Path(model_dir).relative_to(trusted_root).parts if trusted_root is not None else ()
    root_fd = open_trusted_dir(root)
    try:
        fd = open_trusted_subdirs(root_fd, below, root)
    finally:
        os.close(root_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def read_trusted_file(dir_fd: int, relpath: str, where: Path) -> bytes:
    """The bytes of `relpath` below an open, checked folder: no symlink, FIFO, or file others can write.

    NotARegularFile for a symlink or anything but a regular file; UntrustedModelPath for a file
    (or subfolder) another user owns or can write; FileNotFoundError when it is absent.
    """
    *subdirs, name = PurePosixPath(relpath).parts
    parent = open_trusted_subdirs(dir_fd, subdirs, where)
    try:
        try:
            fd = os.open(name, READ_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW on a symlink (EMLINK on FreeBSD)
                raise NotARegularFile(exc.errno, "is a symbolic link") from None
            raise
    finally:
        os.close(parent)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(0, "is not a regular file")
        reason = trust_refusal(st, folder=False, read_only=_on_read_only_mount(handle.fileno()))
        if reason:
            raise UntrustedModelPath(where / relpath, reason)
        return handle.read()


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


#: Sections a set may carry and the JSON type each must have when present (a hand-edited manifest
#: with `"level1": "x"` is a model error at load, not an AttributeError while grading).
_SECTION_SHAPES: dict[str, type] = {"profile": dict, "level1": dict, "level2": dict, "hybrid": dict,
                                    "training": dict, "validation": dict, "short_clips": list}
_KIND_NAMES = {dict: "an object", list: "a list"}
#: Fields of the level sections that are objects themselves.
_LEVEL_OBJECTS = frozenset({"calibration", "descriptor", "rules", "train"})


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
    if manifest.get("preference", "hybrid") not in PREFERENCES:   # read on every grade: refused at load instead
        raise ModelError(f"{origin}: manifest preference {manifest['preference']!r} is not one of "
                         f"{', '.join(PREFERENCES)}")
    for section, kind in _SECTION_SHAPES.items():   # read with .get() and .items() when the set is loaded and used
        value = manifest.get(section)
        if value is not None and not isinstance(value, kind):
            raise ModelError(f"{origin}: manifest {section} must be {_KIND_NAMES[kind]}, got {type(value).__name__}")
    for level in ("level1", "level2", "hybrid"):
        for field, value in (manifest.get(level) or {}).items():
            if field in _LEVEL_OBJECTS and value is not None and not isinstance(value, dict):
                raise ModelError(f"{origin}: manifest {level}.{field} must be an object, got {type(value).__name__}")
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
    """Artifact paths are plain names inside the model folder: no absolute paths, no `..`, `.` or empty
    parts, no NUL, no backslash.

    Checked on the raw string (PurePosixPath folds `a//b` and `a/.` away): the S3 cache splits the
    path into folders and a file name, and `.` alone would leave no file name at all.
    """
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or "\x00" in path \
            or any(part in ("", ".", "..") for part in parts):
        raise ModelError(f"{origin}: artifact {name} has an unsafe path {path!r}")
    return path


def read_manifest(model_dir: str | Path, dir_fd: int | None = None) -> dict[str, Any]:
    """The folder's manifest, parsed; `dir_fd`: the folder already opened by `trusted_model_folder`."""
    path = Path(model_dir) / MANIFEST_FILE
    try:
        if dir_fd is None:
            with trusted_model_folder(model_dir) as fd:
                data = read_trusted_file(fd, MANIFEST_FILE, Path(model_dir))
        else:
            data = read_trusted_file(dir_fd, MANIFEST_FILE, Path(model_dir))
    except FileNotFoundError:
        raise ModelError(f"no {MANIFEST_FILE} in {model_dir} (is this a model folder? see `signalcraft train`)") from None
    except NotARegularFile as exc:
        raise ModelError(f"{path} {exc.strerror}; refusing to read it") from None
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    return parse_manifest(data, str(path))


def verified_artifact(art_name: str, art: dict[str, Any], data: bytes, origin: str) -> bytes:
    """`data` when its SHA-256 is the manifest's for this artifact; the integrity refusal otherwise."""
    actual = sha256_bytes(data)
    if actual != art["sha256"]:
        raise ModelError(
            f"{origin}: artifact {art_name} ({art['path']}) fails its integrity check "
            f"(sha256 {actual[:12]}... != manifest {art['sha256'][:12]}...); refusing to load it"
        )
    return data


def read_artifacts(model_dir: str | Path, manifest: dict[str, Any], dir_fd: int) -> dict[str, bytes]:
    """Every artifact's bytes, read once through `dir_fd` and hash-checked; loaders get these bytes, never a path.

    `manifest` is the one the caller parsed (from the bytes it downloaded, for a model store), never
    re-read here; symlinks, FIFOs and files other users can write are refused, not read.
    """
    root = Path(model_dir)
    verified: dict[str, bytes] = {}
    for name, art in manifest["artifacts"].items():
        relpath = safe_artifact_path(str(art.get("path", "")), str(root), name)
        try:
            data = read_trusted_file(dir_fd, relpath, root)
        except FileNotFoundError:
            raise ModelError(f"{root}: artifact {name} ({art['path']}) is missing") from None
        except NotARegularFile as exc:
            raise ModelError(f"{root}: artifact {name} ({art['path']}) {exc.strerror}; refusing to load it") from None
        except OSError as exc:
            raise ModelError(f"{root}: artifact {name} ({art['path']}) cannot be read: {exc.strerror or exc}") from None
        verified[name] = verified_artifact(name, art, data, str(root))
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
