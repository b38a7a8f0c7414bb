"""Where training reads normal recordings and writes model sets: local folders or the object store.

`signalcraft train s3://recordings/site-a/pump/id_00/ --out s3://models/site-a/pump/id_00/` learns a
machine's model from what its bucket already holds. Publishing uploads every artifact first and the
manifest last: a warm function checks only the manifest's ETag, so it never sees half a set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signalcraft_core.io.objects import fetch_bytes, list_keys, parse_uri, put_bytes
from signalcraft_core.models.manifest import MANIFEST_FILE
from signalcraft_core.training.fit import ANOMALY_DIR_NAMES


def is_uri(value: str | Path) -> bool:
    return str(value).startswith("s3://")


def local_name(rel: str) -> bool:
    """Whether a key's part below the prefix is a plain relative path: no empty, `.` or `..` part, no NUL.

    Keys are whoever uploaded them: `a//tmp/x.wav` would make `dest / rel` the absolute `/tmp/x.wav`,
    and `..` would climb out of `dest`, so a training download could write anywhere the trainer can.
    """
    return bool(rel) and "\x00" not in rel and all(part not in ("", ".", "..") for part in rel.split("/"))


def download_normals(uri: str, dest: Path, client: Any, max_bytes: int) -> tuple[list[Path], list[str]]:
    """Every .wav under an s3:// prefix outside anomaly folders, copied below `dest` (same relative paths).

    Returns the files and the keys left out because they cannot be a path below `dest` (`local_name`).
    """
    bucket, prefix = parse_uri(uri)
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    files, refused = [], []
    for info in list_keys(client, bucket, prefix, (".wav",)):
        rel = info.key[len(prefix):]
        if not local_name(rel):
            refused.append(info.key)
            continue
        if any(part.lower() in ANOMALY_DIR_NAMES for part in rel.split("/")[:-1]):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fetch_bytes(client, bucket, info.key, max_bytes=max_bytes, known_size=info.size))
        files.append(target)
    return files, refused


def publish_model_set(folder: Path, uri: str, client: Any) -> list[str]:
    """Upload a trained set to s3://bucket/prefix/: artifacts first, manifest.json last; returns the keys."""
    bucket, prefix = parse_uri(uri)
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    keys = []
    for path in [*files, folder / MANIFEST_FILE]:
        key = prefix + path.relative_to(folder).as_posix()
        put_bytes(client, bucket, key, path.read_bytes())
        keys.append(key)
    return keys
