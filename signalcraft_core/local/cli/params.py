"""Parameter types shared by the commands: where a folder, a file to write, a bucket or an endpoint is
named, checked before any work."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import click

#: S3's rule for bucket names, widened to what older us-east-1 buckets may still carry (upper case,
#: underscores, up to 255 characters), so no existing bucket is locked out: 3 to 255 of letters, digits,
#: `.`, `-` and `_`, beginning and ending with a letter or digit. botocore refuses names outside its
#: charset only when the request is built, as "Parameter validation failed" - which `watch` took for
#: a storage fault and retried.
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse `name` as a bucket name, or None: one rule for --bucket options and s3:// URIs."""
    if not name:
        return "is empty"
    if not _BUCKET_NAME.fullmatch(name):
        return ("is not a bucket name (3 to 255 letters, digits, '.', '-' or '_', beginning and ending "
                "with a letter or digit)")
    if ".." in name:
        return "is not a bucket name (two dots in a row)"
    if _IP_ADDRESS.fullmatch(name):
        return "is not a bucket name (it is written as an IP address)"
    return None


class Location(click.ParamType):
    """A local path or an s3://BUCKET/PREFIX/ URI, checked before any work starts.

    One type for every command taking a folder, a file to write or a bucket: click.Path alone turns
    `s3://b/p` into `s3:/b/p`, lets a bare `s3://` through to a traceback deep in io/objects, and
    finds an --out that is a file only after minutes of training. `folder` asks that an existing
    path, or the nearest existing part of a path still to be made, is a folder; `file` asks the same
    of the folder of a file to write (missing folders are made, as for a `folder` --out), and that
    the path itself is not a folder, so `--json notes.wav/x.json` fails before an evaluation, not
    after it; `s3_refusal` (why) refuses s3:// for commands that read or write local files only.
    """

    def __init__(self, *, exists: bool = False, folder: bool = False, file: bool = False,
                 s3_refusal: str | None = None, path_type: type = str) -> None:
        self.exists, self.folder, self.file = exists, folder, file
        self.s3_refusal, self.path_type = s3_refusal, path_type
        self.name = ("FOLDER" if folder else "FILE" if file else "PATH") + ("" if s3_refusal else "|s3://BUCKET/PREFIX/")

    def convert(self, value, param, ctx):
        text = str(value)
        if text.startswith("s3://"):
            if self.s3_refusal:
                self.fail(f"{text}: {self.s3_refusal}", param, ctx)
            bucket = text[len("s3://"):].partition("/")[0]
            if not bucket:
                self.fail(f"{text!r} names no bucket; write s3://BUCKET/PREFIX/", param, ctx)
            problem = bucket_name_problem(bucket)
            if problem:
                self.fail(f"{text}: {bucket!r} {problem}", param, ctx)
            return text
        path = Path(text)
        if self.exists and not path.exists():
            self.fail(f"{text} does not exist", param, ctx)
        if self.file and path.is_dir():
            self.fail(f"{text} is a folder", param, ctx)
        if self.folder or self.file:
            existing = next((p for p in (path if self.folder else path.parent, *path.parents) if p.exists()), None)
            if existing is not None and not existing.is_dir():
                self.fail(f"{text} is not a folder" if existing == path else f"{text}: {existing} is not a folder",
                          param, ctx)
        return self.path_type(text)


class BucketName(click.ParamType):
    """A bucket name, refused before any request when S3 would refuse it (see `bucket_name_problem`).

    An s3:// URI is the likely mistake: it is answered with the options that say the same thing.
    `prefix_option` names the command's option for the key prefix (None when it has none).
    """

    name = "BUCKET"

    def __init__(self, prefix_option: str | None = None) -> None:
        self.prefix_option = prefix_option

    def convert(self, value, param, ctx):
        text = str(value)
        if text.lower().startswith("s3://"):
            bucket, _, prefix = text[len("s3://"):].partition("/")
            option = param.opts[0] if param is not None and param.opts else "--bucket"
            advice = f"{option} {shlex.quote(bucket) if bucket else 'BUCKET'}"
            if self.prefix_option and prefix:
                advice += f" {self.prefix_option} {shlex.quote(prefix)}"
            self.fail(f"{text!r} is an s3:// URI, not a bucket name: write {advice}", param, ctx)
        problem = bucket_name_problem(text)
        if problem:
            self.fail(f"{text!r} {problem}", param, ctx)
        return text


class Endpoint(click.ParamType):
    """An S3 endpoint URL, checked before any request: `localhost:9000` (no scheme) used to reach
    botocore as a traceback (`ValueError: Invalid endpoint`) in some commands and one line in others.

    The host is checked with botocore's own rule, so what passes here is what boto3 accepts. An empty
    value means no endpoint (boto3's chain), as before.
    """

    name = "URL"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        if not text:
            return None
        source = ""
        if ctx is not None and param is not None and param.name is not None \
                and ctx.get_parameter_source(param.name) is click.core.ParameterSource.ENVIRONMENT:
            source = f" (from {param.envvar})"
        parts = urlsplit(text)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            self.fail(f"{text!r}{source} has no valid port", param, ctx)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            self.fail(f"{text!r}{source} is not an http(s):// URL, e.g. http://localhost:9000", param, ctx)
        from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

        if not (is_valid_endpoint_url(text) or is_valid_ipv6_endpoint_url(text)):
            self.fail(f"{text!r}{source}: {parts.hostname!r} is not a host name", param, ctx)
        return text


def endpoint_option(help_text: str = "S3 endpoint, e.g. http://localhost:9000 for MinIO (default: boto3's chain)."):
    """--endpoint-url for every command that reaches S3: the same type and the same AWS_ENDPOINT_URL default."""
    return click.option("--endpoint-url", envvar="AWS_ENDPOINT_URL", type=Endpoint(), help=help_text)
