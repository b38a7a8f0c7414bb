"""Parameter types shared by the commands: where a folder or a bucket is named, checked before any work."""

from __future__ import annotations

from pathlib import Path

import click


class Location(click.ParamType):
    """A local path or an s3://BUCKET/PREFIX/ URI, checked before any work starts.

    One type for every command taking a folder or a bucket: click.Path alone turns `s3://b/p` into
    `s3:/b/p`, lets a bare `s3://` through to a traceback deep in io/objects, and finds an --out that
    is a file only after minutes of training. `folder` asks that an existing path, or the nearest
    existing part of a path still to be made, is a folder; `s3_refusal` (why) refuses s3:// for
    commands that read local files only.
    """

    def __init__(self, *, exists: bool = False, folder: bool = False, s3_refusal: str | None = None,
                 path_type: type = str) -> None:
        self.exists, self.folder, self.s3_refusal, self.path_type = exists, folder, s3_refusal, path_type
        self.name = ("FOLDER" if folder else "PATH") + ("" if s3_refusal else "|s3://BUCKET/PREFIX/")

    def convert(self, value, param, ctx):
        text = str(value)
        if text.startswith("s3://"):
            if self.s3_refusal:
                self.fail(f"{text}: {self.s3_refusal}", param, ctx)
            if not text[len("s3://"):].partition("/")[0]:
                self.fail(f"{text!r} names no bucket; write s3://BUCKET/PREFIX/", param, ctx)
            return text
        path = Path(text)
        if self.exists and not path.exists():
            self.fail(f"{text} does not exist", param, ctx)
        if self.folder:
            existing = next((p for p in (path, *path.parents) if p.exists()), None)
            if existing is not None and not existing.is_dir():
                self.fail(f"{text} is not a folder" if existing == path else f"{text}: {existing} is not a folder",
                          param, ctx)
        return self.path_type(text)
