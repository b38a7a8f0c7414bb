"""CLI commands that run the Lambda handlers locally: `local invoke`, events, sweep, watch, demo.

Nothing here re-implements a handler: every command sets the environment a deployed function
would have and calls the same `handlers.*.handler` in-process, like `sam local invoke`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import click
from click.core import ParameterSource

from signalcraft_core.config import PREFERENCES, SWEEP_MODES
from signalcraft_core.errors import ErrorCode, ModelError, StorageError
from signalcraft_core.local.cli.params import BucketName, endpoint_option
from signalcraft_core.local.console import Progress, info
from signalcraft_core.local.invoke import (
    FUNCTIONS,
    LocalContext,
    handler_environment,
    load_handler,
)

DEFAULT_RECORDINGS_BUCKET = "signalcraft-recordings"
DEFAULT_GRADES_BUCKET = "signalcraft-grades"


@click.group()
def local() -> None:
    """Run the Lambda functions of template.yaml on this machine (like `sam local`).

    \b
    Example:
      signalcraft local generate-event s3 put --bucket recordings --key site-a/pump/id_00/a.wav > put.json
      signalcraft local invoke ScoreUploadFunction -e put.json --endpoint-url http://localhost:9000
    """


class _Words(click.ParamType):
    """Every word an option took (see _GreedyOption), as a tuple of strings."""

    name = "KEY=VALUE..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        return tuple(str(v) for v in value) if isinstance(value, (tuple, list)) else (str(value),)


class _GreedyOption(click.Option):
    """An option that takes every following word up to the next option, like the SAM CLI's
    `--parameter-overrides A=1 B=2` (its OptionNargs); a quoted single string works as well."""

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            option = getattr(parser, "_long_opt", {}).get(name) or getattr(parser, "_short_opt", {}).get(name)
            if option is None or not hasattr(option, "process"):
                continue
            previous = option.process

            def process(value: Any, state: Any, previous: Any = previous) -> None:
                words = [value]
                while state.rargs and not state.rargs[0].startswith("-"):
                    words.append(state.rargs.pop(0))
                previous(tuple(words), state)

            option.process = process
            break


#: samconfig.toml keys `local invoke` reads ([env.local_invoke.parameters] over [env.global.parameters]);
#: the SAM CLI's other keys (docker_network, warm_containers ...) mean nothing without a container.
SAMCONFIG_KEYS = ("parameter_overrides", "region", "profile", "env_vars", "event", "log_file", "debug")
#: Shell credentials hidden from the function when --profile chooses the profile's own (as `sam local` does).
_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def _warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


@local.command("invoke")
@click.argument("function_id")
@click.option("--event", "-e", "event_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="JSON event file ('-' for stdin). Default: an empty event {}.")
@click.option("--template", "--template-file", "-t", "template_path", default="template.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--env-vars", "-n", type=click.Path(dir_okay=False, path_type=Path),
              help='SAM --env-vars JSON: {"FunctionId": {"VAR": "v"}, "Parameters": {"VAR": "v"}}; only '
                   "variables the template declares for the function are applied (a warning for the rest).")
@click.option("--parameter-overrides", cls=_GreedyOption, multiple=True, type=_Words(),
              help="Template parameters, in either SAM syntax: 'Key1=Value1 Key2=\"a b\"' or "
                   "'ParameterKey=Key1,ParameterValue=Value1 ParameterKey=...'.")
@click.option("--region", help="AWS Region for the invoke (AWS_REGION / AWS_DEFAULT_REGION, and AWS::Region).")
@click.option("--profile", help="AWS profile for the invoke (AWS_PROFILE; shell access keys are not passed on).")
@click.option("--log-file", "-l", type=click.Path(dir_okay=False, path_type=Path),
              help="Append the handler's logs to this file instead of stderr.")
@click.option("--config-file", default="samconfig.toml", show_default=True,
              help="SAM config file, relative to the template's folder.")
@click.option("--config-env", default="default", show_default=True, help="Environment in the config file.")
@click.option("--debug", is_flag=True, envvar="SAM_DEBUG", help="Debug logging (handler LOG_LEVEL=DEBUG, and what was resolved).")
@endpoint_option()
def local_invoke(function_id: str, event_path: Path | None, template_path: Path, env_vars: Path | None,
                 parameter_overrides: tuple[tuple[str, ...], ...], region: str | None, profile: str | None,
                 log_file: Path | None, config_file: str, config_env: str, debug: bool,
                 endpoint_url: str | None) -> None:
    """Invoke FUNCTION_ID from template.yaml in-process and print its JSON result (like `sam local invoke`).

    Options not given on the command line are read from the config file's
    [ENV.local_invoke.parameters] and [ENV.global.parameters] (parameter_overrides, region, profile,
    env_vars, event, log_file, debug), as the SAM CLI does. A declared variable set in the shell wins
    over the template's value, an --env-vars value over both.

    \b
    Example:
      signalcraft local invoke ScoreUploadFunction -e infra/events/s3-put.json \\
          --parameter-overrides "GradesBucketName=my-grades OutputPrefix=custom/" \\
          --endpoint-url http://localhost:9000
    """
    from signalcraft_core.local.sam_template import (
        function_spec,
        load_env_vars,
        load_template,
        parse_parameter_overrides,
    )

    ctx = click.get_current_context()
    if not template_path.is_file():
        raise click.ClickException(f"template {template_path} not found (run from the project folder or pass -t)")
    config = _samconfig(ctx, template_path, config_file, config_env)
    options = {"parameter_overrides": parameter_overrides, "region": region, "profile": profile,
               "env_vars": env_vars, "event": event_path, "log_file": log_file, "debug": debug}
    for key in SAMCONFIG_KEYS:
        param = "event_path" if key == "event" else key
        if key in config and ctx.get_parameter_source(param) in (ParameterSource.DEFAULT, None):
            value = config[key]
            options[key] = Path(value) if key in ("env_vars", "event", "log_file") and value else value
    debug = _truthy(options["debug"])
    region, profile = options["region"] or None, options["profile"] or None
    say = _debug_printer(debug)
    say(f"config: {config.get('__file__', 'none')} [{config_env}]"
        + (f", using {', '.join(k for k in SAMCONFIG_KEYS if k in config)}" if config else ""))

    try:  # messages of these two name their source (the override, the template file) themselves
        raw = options["parameter_overrides"]
        words = [w for group in raw for w in group] if isinstance(raw, tuple) else raw
        overrides = parse_parameter_overrides(words)
        template = load_template(template_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        spec = function_spec(template, function_id, overrides, region=region)
    except ValueError as exc:  # a function or parameter the template lacks or refuses: say which template
        raise click.ClickException(f"{template_path}: {exc}") from None
    say(f"parameters: {', '.join(f'{k}={v}' for k, v in overrides.items()) or 'defaults'}")

    # SAM's order: template value, then the shell's value of a declared variable, then --env-vars.
    environment = {name: os.environ.get(name, value) for name, value in spec.environment.items()}
    spec = replace(spec, environment=environment)
    if options["env_vars"]:
        path = Path(options["env_vars"])
        if not path.is_file():
            raise click.ClickException(f"--env-vars file {path} not found")
        try:
            spec, ignored = spec.with_declared_environment(load_env_vars(path, function_id))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        for name in ignored:
            _warn(f"{name} in {path} is not an environment variable of {function_id} in the template: ignored")
    env = dict(spec.environment)
    unset: tuple[str, ...] = ()
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    if profile:
        env["AWS_PROFILE"] = profile
        unset = _CREDENTIAL_VARIABLES
    if debug:
        env["LOG_LEVEL"] = "DEBUG"
    say(f"environment of {function_id}: {', '.join(sorted(env))}")

    event = _read_event(options["event"])
    handler = load_handler(spec.handler)
    with _log_target(options["log_file"]) as log_stream, \
            handler_environment(env, endpoint_url, unset=unset, log_stream=log_stream):
        result = _run(function_id, handler, event, LocalContext(function_id, spec.timeout or 900))
    click.echo(json.dumps(result, indent=2, default=str))


def _samconfig(ctx: click.Context, template_path: Path, config_file: str, config_env: str) -> dict[str, Any]:
    """The config file's parameters for `local invoke` ({} without one), found like the SAM CLI finds it."""
    from signalcraft_core.local.sam_template import default_samconfig, load_samconfig

    explicit = ctx.get_parameter_source("config_file") not in (ParameterSource.DEFAULT, None)
    if explicit:
        path = Path(config_file)
        if not path.is_absolute():
            path = template_path.resolve().parent / path
        if not path.is_file():
            raise click.ClickException(f"config file {config_file} does not exist or could not be read")
    else:
        path = default_samconfig(template_path)
        if not path.is_file():
            return {}
    try:
        config = load_samconfig(path, config_env)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if config is None:
        if ctx.get_parameter_source("config_env") not in (ParameterSource.DEFAULT, None):
            _warn(f"{path} has no [{config_env}.local_invoke.parameters] or [{config_env}.global.parameters]")
        return {}
    config = {k: v for k, v in config.items() if k in SAMCONFIG_KEYS}
    return {**config, "__file__": str(path)} if config else {}


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _debug_printer(enabled: bool):
    def say(message: str) -> None:
        if enabled:
            click.echo(f"Debug: {message}", err=True)
    return say


@contextmanager
def _log_target(path: Path | None) -> Iterator[Any]:
    """The open log file (append) for -l/--log-file, or None (stderr)."""
    if path is None:
        yield None
        return
    try:
        stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise click.ClickException(f"cannot write the log file {path}: {exc.strerror or exc}") from None
    try:
        yield stream
    finally:
        stream.close()


def _read_event(path: Path | str | None) -> Any:
    """The event JSON from a file or stdin ('-'); {} without one."""
    if path is None or str(path) == "":
        return {}
    if str(path) != "-" and not Path(path).is_file():
        raise click.ClickException(f"event file {path} not found")
    try:  # a WAV given as the event by mistake is not a traceback
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise click.ClickException(f"event {path} is not UTF-8 JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"event {path} is not JSON: {exc}") from None
    except RecursionError:
        raise click.ClickException(f"event {path} is nested too deeply to be an event") from None


def _run(label: str, handler: Any, event: Any, context: LocalContext) -> Any:
    """Call a handler; configuration and event errors become one `Error:` line."""
    with one_line_errors(label):
        return handler(event, context)


@contextmanager
def one_line_errors(label: str) -> Iterator[None]:
    """ValueErrors (bad event shape, no OUTPUT_BUCKET, bad MODEL_PREFERENCE / numbers) as one `Error:` line.

    SignalcraftError and botocore errors are already turned into one line by the `signalcraft` group.
    """
    try:
        yield
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f"{label}: {first}") from None


def _not_empty(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An empty key makes an event no handler can act on: refused here, not in the handler (the bucket's
    name is checked by its type, BucketName)."""
    if not value:
        raise click.BadParameter("must not be empty")
    return value


@local.command("generate-event")
@click.argument("service", type=click.Choice(["s3"]), metavar="SERVICE")
@click.argument("kind", type=click.Choice(["put", "eventbridge", "schedule", "sqs", "minio", "map-batch"]),
                metavar="KIND")
@click.option("--bucket", default=DEFAULT_RECORDINGS_BUCKET, show_default=True, type=BucketName())
@click.option("--key", default="site-a/pump/id_00/00000000.wav", show_default=True, callback=_not_empty)
@click.option("--prefix", default="", help="For schedule / map-batch.")
@click.option("--date", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="Event day (schedule: the day swept).")
def generate_event_cmd(service: str, kind: str, bucket: str, key: str, prefix: str, date: datetime | None) -> None:
    """Print a sample event in the SAM CLI's shapes.

    SERVICE is s3; KIND is put, eventbridge, schedule, sqs, minio or map-batch.

    \b
    Example:
      signalcraft local generate-event s3 put --bucket recordings --key "site-a/fan/id_00/rec 1.wav" > put.json
    """
    from signalcraft_core.local.sample_events import generate_event

    day = date.strftime("%Y-%m-%d") if date else None
    try:
        event = generate_event("s3-put" if kind == "put" else kind, bucket, key, prefix=prefix, date=day)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(event, indent=2))


def _function_env(output_bucket: str, output_prefix: str, models: str | None, level: str | None) -> dict[str, str]:
    env = {"OUTPUT_BUCKET": output_bucket, "OUTPUT_PREFIX": output_prefix}
    if models:
        env["MODEL_URI"] = models
    if level:
        env["MODEL_PREFERENCE"] = level
    return env


def _output_options(f):
    f = click.option("--level", type=click.Choice(PREFERENCES), help="MODEL_PREFERENCE.")(f)
    f = click.option("--models", envvar="MODEL_URI", help="MODEL_URI: s3://bucket/prefix/ or a folder (default: packaged models/).")(f)
    f = click.option("--output-prefix", default="grades/", show_default=True)(f)
    f = click.option("--output-bucket", envvar="OUTPUT_BUCKET", default=DEFAULT_GRADES_BUCKET, show_default=True,
                     type=BucketName("--output-prefix"))(f)
    return endpoint_option()(f)


@click.command()
@click.option("--bucket", required=True, type=BucketName("--prefix"), help="Recordings bucket to sweep.")
@click.option("--prefix", default="", help="Key prefix to sweep.")
@click.option("--mode", type=click.Choice(SWEEP_MODES), default=SWEEP_MODES[0], show_default=True,
              help="incremental: what is new since the last sweep and what failed transiently; "
                   "backfill: every recording again (e.g. after a new model).")
@click.option("--quiet", "-q", is_flag=True)
@_output_options
def sweep(bucket: str, prefix: str, mode: str, quiet: bool, endpoint_url: str | None, output_bucket: str,
          output_prefix: str, models: str | None, level: str | None) -> None:
    """Grade what the upload events missed under a prefix (the nightly sweep, run here).

    \b
    Examples:
      signalcraft sweep --bucket recordings --prefix site-a/ --endpoint-url http://localhost:9000
      signalcraft sweep --bucket recordings --mode backfill     # re-grade everything with the new model
    """
    handler = load_handler(FUNCTIONS["FleetSweepFunction"])
    from signalcraft_core.io.objects import list_keys
    from signalcraft_core.pipeline.runtime import get_runtime

    with handler_environment(_function_env(output_bucket, output_prefix, models, level), endpoint_url), \
            Progress(quiet) as progress:
        total = 0
        if progress.enabled:  # one extra listing, only to size the bar on a terminal
            runtime = get_runtime()
            total = sum(1 for _ in list_keys(runtime.client, bucket, prefix, runtime.config.suffixes))
        context = LocalContext("FleetSweepFunction", on_progress=lambda done: progress("sweep", done, total))
        result = _run("sweep", handler, {"bucket": bucket, "prefix": prefix, "mode": mode}, context)
    click.echo(json.dumps(result, indent=2, default=str))


@click.command()
@click.option("--bucket", required=True, type=BucketName("--prefix"), help="Recordings bucket to watch.")
@click.option("--prefix", default="")
@click.option("--interval", type=click.FloatRange(0.1), default=5.0, show_default=True, help="Seconds between polls.")
@click.option("--once", is_flag=True, help="Grade what is new now, then exit.")
@click.option("--retries", type=click.IntRange(0), default=5, show_default=True,
              help="With --once: passes retried after a transient storage/model error before giving up "
                   "(without --once it keeps retrying).")
@click.option("--backoff", type=click.FloatRange(0), default=1.0, show_default=True,
              help="First delay after a transient error, in seconds; doubles per failed pass, up to 60 s.")
@click.option("--quiet", "-q", is_flag=True)
@_output_options
def watch(bucket: str, prefix: str, interval: float, once: bool, retries: int, backoff: float, quiet: bool,
          endpoint_url: str | None, output_bucket: str, output_prefix: str, models: str | None,
          level: str | None) -> None:
    """Poll a bucket and grade new recordings through the upload handler (no notifications needed).

    A key counts as done once the handler returned for it (its record is written). A transient
    failure (HTTP 5xx / timeouts after botocore's own retries, an unusable model set) is retried
    on the next pass, after a backoff that doubles up to 60 s.

    \b
    Example:
      signalcraft watch --bucket recordings --endpoint-url http://localhost:9000
    """
    handler = load_handler(FUNCTIONS["ScoreUploadFunction"])
    from signalcraft_core.io.objects import list_keys
    from signalcraft_core.local.sample_events import generate_event
    from signalcraft_core.pipeline.runtime import get_runtime

    done: set[tuple[str, str | None]] = set()  # (key, ETag) the handler returned for: a record exists
    failed_passes = 0
    with handler_environment(_function_env(output_bucket, output_prefix, models, level), endpoint_url):
        with one_line_errors("watch"):
            runtime = get_runtime()
        while True:
            failure: str | None = None
            try:
                listing = list(list_keys(runtime.client, bucket, prefix, runtime.config.suffixes))
            except (StorageError, ModelError) as exc:
                if not _transient(exc):
                    raise
                listing, failure = [], f"listing s3://{bucket}/{prefix}: {exc}"
            for obj in listing:
                if (obj.key, obj.etag) in done:
                    continue
                event = generate_event("s3-put", bucket, obj.key, size=obj.size, etag=obj.etag or "")
                if obj.last_modified is not None:  # the sample's epoch time would file it under 1970
                    event["Records"][0]["eventTime"] = obj.last_modified.isoformat()
                try:
                    result = _run("watch", handler, event, LocalContext("ScoreUploadFunction"))
                except (StorageError, ModelError) as exc:
                    if not _transient(exc):
                        raise
                    failure = f"{obj.key}: {exc}"
                    info(f"{failure} (retried on the next pass)", quiet)
                    continue
                done.add((obj.key, obj.etag))
                info(f"{obj.key}: {json.dumps({k: result[k] for k in ('grades', 'errors')})}", quiet)
            if failure is None:
                failed_passes = 0
                if once:
                    return
                time.sleep(interval)
                continue
            failed_passes += 1
            if once and failed_passes > retries:
                raise click.ClickException(f"watch: gave up after {retries} retries: {failure}")
            delay = min(WATCH_MAX_BACKOFF_S, backoff * 2 ** (failed_passes - 1))
            info(f"transient failure ({failure}); next pass in {delay:.1f} s", quiet)
            time.sleep(delay)


#: The longest wait between passes of `watch` after transient failures.
WATCH_MAX_BACKOFF_S = 60.0


def _transient(exc: Exception) -> bool:
    """A failure worth retrying later: the object store or the model set, not the event or the recording."""
    code = getattr(getattr(exc, "code", None), "value", None)
    return code in (ErrorCode.STORAGE_ERROR.value, ErrorCode.MODEL_ERROR.value)


def _flag_beats_environment(token: str | None, token_file: str | None) -> tuple[str | None, str | None]:
    """Of a token and a token file given at different levels, the command line's wins over the environment's.

    The MinIO set-up exports SIGNALCRAFT_WEBHOOK_TOKEN for compose and setup.sh, then starts the
    listener with --auth-token-file: that is one token given twice, not a conflict. Both on the same
    level stays a mistake (`listener_token` refuses it).
    """
    if not (token and token_file):
        return token, token_file
    source = click.get_current_context().get_parameter_source
    from_env = click.core.ParameterSource.ENVIRONMENT
    if source("auth_token") == from_env and source("auth_token_file") != from_env:
        return None, token_file
    if source("auth_token_file") == from_env and source("auth_token") != from_env:
        return token, None
    return token, token_file


@local.command("minio-listener")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 when MinIO runs in a container). A token is required on any.")
@click.option("--auth-token-file", envvar="SIGNALCRAFT_WEBHOOK_TOKEN_FILE", metavar="PATH",
              help="File holding the shared secret (MinIO's notify_webhook auth_token, sent as `Authorization: "
                   "Bearer TOKEN`); refused unless a regular file of yours that only you can read (chmod 600). "
                   "The recommended way (env SIGNALCRAFT_WEBHOOK_TOKEN_FILE). Without it, --auth-token or "
                   "SIGNALCRAFT_WEBHOOK_TOKEN, a token is made in ~/.signalcraft/webhook-token and kept there.")
@click.option("--auth-token", envvar="SIGNALCRAFT_WEBHOOK_TOKEN", metavar="TOKEN",
              help="The shared secret itself (env SIGNALCRAFT_WEBHOOK_TOKEN; a flag shows in the process list).")
@click.option("--bucket", "buckets", multiple=True, envvar="SIGNALCRAFT_WEBHOOK_BUCKETS", type=BucketName(),
              default=(DEFAULT_RECORDINGS_BUCKET,), show_default=True,
              help="Bucket whose notifications are graded (repeatable; env SIGNALCRAFT_WEBHOOK_BUCKETS, "
                   "space-separated); others are answered 403.")
@_output_options
def minio_listener(port: int, host: str, auth_token_file: str | None, auth_token: str | None,
                   buckets: tuple[str, ...], endpoint_url: str | None,
                   output_bucket: str, output_prefix: str, models: str | None, level: str | None) -> None:
    """Receive MinIO bucket notifications (webhook target) and run the upload handler on each.

    Each notified object is HEAD-ed: its own ETag, version, size and LastModified are graded, never
    the sender's fields. 401 without the token, 403 for other buckets, 413 over 256 KiB, 503 when busy.
    A token is always required, on 127.0.0.1 too (other local users can reach it); given none, the
    listener makes one in ~/.signalcraft/webhook-token (0600) and prints the `mc` line to use it.

    \b
    Example (set-up in infra/minio/):
      signalcraft local minio-listener --port 8765 --endpoint-url http://localhost:9000
      mc admin config set local notify_webhook:signalcraft endpoint=http://127.0.0.1:8765/ \\
          auth_token="$(cat ~/.signalcraft/webhook-token)"
      mc admin service restart local
      mc event add local/signalcraft-recordings arn:minio:sqs::signalcraft:webhook --event put --suffix .wav

    \b
    With a token file of your own:
      (umask 077; openssl rand -hex 32 > ~/.minio-webhook-token)
      signalcraft local minio-listener --auth-token-file ~/.minio-webhook-token --endpoint-url http://localhost:9000
    """
    from signalcraft_core.local.webhook import ListenerRefused, listener_token, serve
    from signalcraft_core.pipeline.runtime import get_runtime

    with handler_environment(_function_env(output_bucket, output_prefix, models, level), endpoint_url):
        with one_line_errors("minio-listener"):
            get_runtime()  # configuration errors now, not on the first notification
        auth_token, auth_token_file = _flag_beats_environment(auth_token or None, auth_token_file or None)
        try:
            token, made_in = listener_token(auth_token, auth_token_file)
            if made_in is not None:  # the path, never the token: this line may end up in a log
                where = host if host.strip("[]") not in ("", "0.0.0.0", "::") else "THIS-HOST"
                info(f"bearer token in {made_in} (only you can read it); configure MinIO with: mc admin config set "
                     f"ALIAS notify_webhook:signalcraft endpoint=http://{where}:{port}/ "
                     f"auth_token=\"$(cat {shlex.quote(str(made_in))})\"")
            serve(host, port, lambda message: info(message), token=token, buckets=buckets)
        except ListenerRefused as exc:
            raise click.ClickException(f"minio-listener: {exc}") from None
        except OSError as exc:  # port in use, address not available
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@click.command()
@endpoint_option()
@click.option("--clips", type=click.IntRange(1, 50), default=3, show_default=True, help="Normal clips per machine (plus 1 abnormal).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--models", help="MODEL_URI (default: the packaged models/).")
@click.option("--quiet", "-q", is_flag=True)
@click.option("--verbose", "-v", is_flag=True, help="Show the handlers' JSON logs.")
def demo(endpoint_url: str | None, clips: int, seed: int, models: str | None, quiet: bool, verbose: bool) -> None:
    """The whole product on one machine: S3 server, fleet upload, events, sweep, fleet table.

    Without --endpoint-url an embedded S3-compatible server is started on 127.0.0.1.

    \b
    Example:
      signalcraft demo
      signalcraft demo --endpoint-url http://localhost:9000   # against MinIO
    """
    from signalcraft_core.local.demo import run_demo

    run_demo(endpoint_url=endpoint_url, clips=clips, seed=seed, models=models, quiet=quiet, verbose=verbose)
