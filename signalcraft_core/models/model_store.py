"""Model sets by machine type, from a local folder or `s3://bucket/prefix/`, cached for warm starts.

A model root holds one model set per machine type (`<root>/<type>/manifest.json`) plus
`<root>/default/`; a folder that itself has a manifest.json is a single set used for everything.
A local root is held to the rule the cache is (manifest.py: the root, each set folder, the manifest
and the artifacts owned by this user or root and not writable by others, ancestors StrictModes-style).
From S3, the manifest and artifacts are downloaded to a private cache folder (created 0700 and
refused when another user owns it or can write to it, never through a symlink or a FIFO), each
artifact's SHA-256 is checked against the manifest bytes this process downloaded (never a copy on
disk), the checked bytes are what is deserialised, and loaded sets stay in memory for warm invocations.
When the default cache folder is refused (a neighbour pre-created it), a private one replaces it
with a warning; a SIGNALCRAFT_CACHE_DIR that is refused stays an error.
The manifest's ETag is re-checked at most every `check_interval_s` seconds, so a newly published
model is picked up without a redeploy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from signalcraft_core.config import (
    configured_cache_dir,
    default_cache_dir,
    fallback_cache_dir,
)
from signalcraft_core.errors import ModelError
from signalcraft_core.io.keys import KNOWN_MACHINE_TYPES, KeyInfo, parse_key
from signalcraft_core.logs import one_line
from signalcraft_core.models.manifest import (
    MANIFEST_FILE,
    READ_FLAGS,
    Refuse,
    open_trusted_dir,
    open_trusted_subdirs,
    parse_manifest,
    sha256_bytes,
    verified_artifact,
)
from signalcraft_core.models.model_set import (
    ModelSet,
    load_model_set,
    model_set_from_bytes,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL_ROOT = Path(__file__).resolve().parents[2] / "models"  # the repository's (and the image's) models/
DEFAULT_SET = "default"
#: Set names and versions become cache folder names: plain names only, never `..` or a path.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: `<site>/<type>/<id>` is the most specific set a key can select.
MAX_SET_DEPTH = 3


def _cause(exc: Exception) -> str:
    """A store failure in one line, URL query strings and credential-looking tokens removed (it may be logged)."""

    return one_line(str(exc))


@dataclass
class _Cached:
    model_set: ModelSet
    etag: str | None
    checked_at: float


class ModelStore:
    """Resolve and cache model sets; safe to share between threads of one process."""

    def __init__(self, uri: str | Path | None = None, cache_dir: str | Path | None = None,
                 check_interval_s: float = 300.0, client: Any = None, key_pattern: str | None = None) -> None:
        self.uri = str(uri) if uri else str(DEFAULT_MODEL_ROOT)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.check_interval_s = check_interval_s
        self.key_pattern = _compile_pattern(key_pattern)
        self._client = client
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self.is_s3 = self.uri.startswith("s3://")
        if self.is_s3:
            bucket, _, prefix = self.uri[5:].partition("/")
            if not bucket:
                raise ModelError(f"MODEL_URI {self.uri!r} names no bucket")
            self.bucket, self.prefix = bucket, (prefix.rstrip("/") + "/" if prefix else "")
        else:
            root = Path(self.uri)
            if not root.is_dir():
                raise ModelError(f"model folder {root} does not exist")
            self.root = root

    # -- which set ---------------------------------------------------------------------------
    def set_names(self) -> list[str]:
        """Model sets under the root, as relative folder paths (`pump`, `pump/id_00`, `site-a/pump/id_00`,
        `default`); a single-set root answers [""]."""
        with self._lock:   # re-listed at most every `check_interval_s`: every key resolves through it
            names = getattr(self, "_names", None)
            if names is not None and time.monotonic() - self._names_at < self.check_interval_s:
                return names
        fresh = self._s3_set_names(names) if self.is_s3 else self._folder_set_names()
        with self._lock:
            self._names, self._names_at = fresh, time.monotonic()
        return fresh

    def _folder_set_names(self) -> list[str]:
        if (self.root / MANIFEST_FILE).is_file():
            return [""]
        found = []
        for depth in range(1, MAX_SET_DEPTH + 1):
            for manifest in self.root.glob("/".join(["*"] * depth) + "/" + MANIFEST_FILE):
                name = manifest.parent.relative_to(self.root).as_posix()
                if manifest.is_file() and all(_PLAIN_NAME.fullmatch(part) for part in name.split("/")):
                    found.append(name)
        return sorted(found)

    def machine_types(self) -> set[str]:
        """Machine types the sets are for (what the key parser should recognise)."""
        types = set(KNOWN_MACHINE_TYPES)
        for name in self.set_names():
            parts = name.split("/")
            if len(parts) in (1, 2) and parts[0] != DEFAULT_SET:
                types.add(parts[0])
            elif len(parts) == 3:
                types.add(parts[1])
        return {t for t in types if t}

    def key_info(self, key: str) -> KeyInfo:
        return parse_key(key, self.key_pattern, self.machine_types())

    def resolve(self, info: KeyInfo) -> str:
        """The most specific set for a recording: `<site>/<type>/<id>`, `<type>/<id>`, `<type>`, then `default`."""
        names = set(self.set_names())
        if names == {""}:
            return ""
        site, machine_type, machine_id = info.site, info.machine_type, info.machine_id
        candidates = []
        if machine_type and machine_id:
            if site:
                candidates.append(f"{site}/{machine_type}/{machine_id}")
            candidates.append(f"{machine_type}/{machine_id}")
        if machine_type:
            candidates.append(machine_type)
        candidates.append(DEFAULT_SET)
        for name in candidates:
            if name in names:
                return name
        raise ModelError(f"no model set for {machine_type or 'this recording'} and no `default` set under {self.uri}")

    def for_key(self, key: str) -> tuple[ModelSet, KeyInfo]:
        info = self.key_info(key)
        return self.load(self.resolve(info)), info

    def for_path(self, path: str, machine_type: str | None = None) -> ModelSet:
        if machine_type:
            return self.get(machine_type)
        return self.for_key(Path(path).as_posix())[0]

    def get(self, machine_type: str | None = None) -> ModelSet:
        """The set for a machine type (its type-level set), else the default set; cached."""
        return self.load(self.resolve(KeyInfo(machine_type=machine_type)))

    def load(self, name: str) -> ModelSet:
        """The set stored under `name` (a value of `set_names()`), loaded once and re-checked on S3."""
        with self._lock:
            cached = self._cache.get(name)
            now = time.monotonic()
            if cached and (not self.is_s3 or now - cached.checked_at < self.check_interval_s):
                return cached.model_set
            if cached and self.is_s3:
                etag = self._head_manifest(name)
                if etag is None or etag == cached.etag:  # unchanged, or the check failed: keep serving
                    cached.checked_at = now
                    return cached.model_set
            model_set, etag = self._load(name)
            model_set.set_name = name
            self._cache[name] = _Cached(model_set, etag, now)
            return model_set

    # -- loading -----------------------------------------------------------------------------
    def _load(self, name: str) -> tuple[ModelSet, str | None]:
        if not self.is_s3:
            folder = self.root / name if name else self.root
            target = folder.resolve()
            if name and target != self.root.resolve() / name:   # `pump -> pump-v3`: a set folder that is a link
                os.close(open_trusted_dir(self.root.resolve()))   # only we may have made the link: the root is ours
                return load_model_set(target), None       # and the folder it names is held to the same rule
            return load_model_set(folder, trusted_root=self.root), None
        return self._load_s3(name)

    def _s3(self):
        if self._client is None:
            from signalcraft_core.io.objects import s3_client

            self._client = s3_client()
        return self._client

    def _s3_key(self, name: str, filename: str) -> str:
        return f"{self.prefix}{name + '/' if name else ''}{filename}"

    def _s3_set_names(self, known: list[str] | None) -> list[str]:
        """The sets under the S3 root (`known`: what the last listing found, served again if the store hiccups)."""
        client = self._s3()
        try:
            client.head_object(Bucket=self.bucket, Key=self._s3_key("", MANIFEST_FILE))
            return [""]
        except Exception:  # noqa: BLE001 - not a single-set root; list the per-type sets
            try:
                fresh = sorted(self._s3_manifest_folders(client))
            except Exception as exc:  # noqa: BLE001
                if known is not None:
                    return known
                raise ModelError(f"cannot list model sets under {self.uri}: {_cause(exc)}") from None
            if not fresh:
                raise ModelError(f"no model sets under {self.uri}") from None
            return fresh

    def _s3_manifest_folders(self, client: Any) -> list[str]:
        """Folders below the prefix holding a manifest.json, at most MAX_SET_DEPTH deep, plain names only."""
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", ()) or ():
                rel = item["Key"][len(self.prefix):]
                folder, _, filename = rel.rpartition("/")
                parts = folder.split("/") if folder else []
                if filename == MANIFEST_FILE and 1 <= len(parts) <= MAX_SET_DEPTH \
                        and all(_PLAIN_NAME.fullmatch(p) for p in parts):
                    found.append(folder)
        return found

    def _head_manifest(self, name: str) -> str | None:
        try:
            return self._s3().head_object(Bucket=self.bucket, Key=self._s3_key(name, MANIFEST_FILE))["ETag"]
        except Exception:  # noqa: BLE001 - keep serving the loaded set if the check itself fails
            return None

    def _load_s3(self, name: str) -> tuple[ModelSet, str | None]:
        client = self._s3()
        manifest_key = self._s3_key(name, MANIFEST_FILE)
        try:
            obj = client.get_object(Bucket=self.bucket, Key=manifest_key)
            data = obj["Body"].read()
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"cannot read s3://{self.bucket}/{manifest_key}: {_cause(exc)}") from None
        manifest = parse_manifest(data, f"s3://{self.bucket}/{manifest_key}")
        folders, version = (name.split("/") if name else ["_root"]), str(manifest["version"])
        for part in (*folders, version):
            if not _PLAIN_NAME.fullmatch(part):
                raise ModelError(f"s3://{self.bucket}/{manifest_key}: set name or version {part!r} is not a plain "
                                 "folder name; refusing it")
        parts = [hashlib.sha256(self.uri.encode()).hexdigest()[:16], *folders, version]
        root_fd = self._open_cache()
        local = self.cache_dir.joinpath(*parts)
        try:
            set_fd = open_trusted_subdirs(root_fd, parts, self.cache_dir, create=True, refuse=_cache_refusal(self.cache_dir))
            try:
                artifacts = {art_name: self._fetch_artifact(client, name, art_name, art, set_fd, local)
                             for art_name, art in manifest["artifacts"].items()}
                _write_file(set_fd, MANIFEST_FILE, data)  # for people looking; never read back to verify
            finally:
                os.close(set_fd)
        finally:
            os.close(root_fd)
        # The bytes checked against the downloaded manifest are the bytes loaded: no path is reopened.
        return model_set_from_bytes(local, manifest, artifacts), obj.get("ETag")

    def _open_cache(self) -> int:
        """The cache folder's descriptor; the default /tmp one, when refused, gives way to a private one."""
        try:
            return open_private_dir(self.cache_dir)
        except ModelError as exc:
            if configured_cache_dir() is not None or self.cache_dir != default_cache_dir():
                raise  # a folder the operator chose: refusing it is the answer, not a surprise elsewhere
            fallback = fallback_cache_dir()
            log.warning("%s; caching models in %s instead", one_line(exc.message), fallback)
            self.cache_dir = fallback
            return open_private_dir(fallback)

    def _fetch_artifact(self, client: Any, name: str, art_name: str, art: dict, set_fd: int, local: Path) -> bytes:
        """One artifact's checked bytes: the cached file's when it already hashes right, else downloaded,
        checked and cached. The caller deserialises these bytes; the cached file is never read again."""
        *subdirs, filename = PurePosixPath(art["path"]).parts  # parse_manifest refused absolute paths, `..`, `.`
        dir_fd = open_trusted_subdirs(set_fd, subdirs, local, create=True, refuse=_cache_refusal(self.cache_dir))
        try:
            cached = _regular_file_bytes(dir_fd, filename)
            if cached is not None and sha256_bytes(cached) == art["sha256"]:
                return cached
            key = self._s3_key(name, art["path"])
            try:
                downloaded = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except Exception as exc:  # noqa: BLE001 - refused, or a connection lost mid-download
                raise ModelError(f"cannot download model artifact {art['path']} from {self.uri}: {_cause(exc)}") from None
            data = verified_artifact(art_name, art, downloaded, f"s3://{self.bucket}/{key}")
            _write_file(dir_fd, filename, data)
            return data
        finally:
            os.close(dir_fd)


# -- the private cache folder ---------------------------------------------------------------------


def _cache_refusal(cache: Path) -> Refuse:
    """How a cache folder that is not private (or an ancestor that lets others replace it) is refused."""

    def refuse(where: Path, reason: str) -> ModelError:
        what = f"{cache}" if where == cache else f"{cache}: {where}"
        return ModelError(f"model cache folder {what} {reason}; refusing to use it "
                          "(remove it, or set SIGNALCRAFT_CACHE_DIR to a folder only you can write)")

    return refuse


def open_private_dir(path: str | Path) -> int:
    """A descriptor of `path`, created 0700 if absent; refused unless it is a real folder only this user (or root) can write.

    The folder and its ancestors are walked from `/` with O_NOFOLLOW and checked on each descriptor
    (manifest.open_trusted_dir), so what was checked is what is used; only the folder's own name is
    not resolved first (a symlinked cache is refused, a symlinked /tmp is not).
    """
    path = Path(path)
    where = Path(os.path.abspath(path.parent)).resolve() / path.name
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(where, 0o700)
        except FileExistsError:
            pass
        return open_trusted_dir(where, refuse=_cache_refusal(path))
    except ModelError:
        raise
    except OSError as exc:
        raise ModelError(f"model cache folder {path} cannot be used: {exc.strerror or exc}") from None


def _regular_file_bytes(dir_fd: int, name: str) -> bytes | None:
    """The bytes of a regular file in the folder; None when absent, a symlink, a FIFO or anything else."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read()


def _write_file(dir_fd: int, name: str, content: bytes) -> None:
    """Write to a new temp file (O_EXCL, O_NOFOLLOW, 0600) in the folder, then rename it over `name`.

    Only checked bytes are written; the rename replaces whatever `name` was (a symlink, a FIFO)
    without following it.
    """
    tmp = f".{name}.{secrets.token_hex(8)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def _compile_pattern(pattern: str | None):
    """A bad KEY_PATTERN is a configuration error at start-up, not an internal error per recording."""
    if pattern is None or isinstance(pattern, re.Pattern):
        return pattern
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ModelError(f"KEY_PATTERN {pattern!r} is not a valid regular expression ({exc})") from None
