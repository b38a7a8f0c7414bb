"""The core commands: synth, train, score, import-legacy, over the same pipe the handlers use.

Heavy modules (torch, sklearn, boto3) are imported inside commands so `--help` is instant.
Every user mistake ends in one `error: ...` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import click

from signalcraft_core.config import PREFERENCES
from signalcraft_core.io.keys import KNOWN_MACHINE_TYPES
from signalcraft_core.local.console import Progress, info
from signalcraft_core.local.cli.params import Location, endpoint_option
from signalcraft_core.logs import one_line, printable

EXIT_SCORE_ERRORS = 1
SCORE_BATCH = 16  # files read and graded together by `score`


def _command_line() -> str:
    return "signalcraft " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _path_part(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A value that becomes one folder name (synth's --machine-id), checked by synth's own rule."""
    from signalcraft_core.local.synth import check_path_part

    try:
        return check_path_part(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("out", type=Location(folder=True, s3_refusal="synth writes a local folder only", path_type=Path))
@click.option("--machine-type", "-m", type=click.Choice(KNOWN_MACHINE_TYPES), required=True)
@click.option("--normal", "n_normal", type=click.IntRange(0), default=40, show_default=True)
@click.option("--abnormal", "n_abnormal", type=click.IntRange(0), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--machine-id", default="id_00", show_default=True, callback=_path_part, help="One folder name.")
@click.option("--duration", type=click.FloatRange(1.0, 600.0), default=10.0, show_default=True, help="Seconds per clip.")
@click.option("--quiet", "-q", is_flag=True)
def synth(out: Path, machine_type: str, n_normal: int, n_abnormal: int, seed: int, machine_id: str, duration: float, quiet: bool) -> None:
    """Write synthetic MIMII-like clips: OUT/<type>/<id>/{normal,abnormal}/NNNNNNNN.wav.

    For tests and the demo only; accuracy claims come from real recordings.

    \b
    Example:
      signalcraft synth data/ --machine-type valve --normal 40 --abnormal 10 --seed 1
    """
    from signalcraft_core.local.synth import write_dataset

    files = write_dataset(out, machine_type, n_normal, n_abnormal, seed=seed, machine_id=machine_id, duration_s=duration)
    info(f"wrote {len(files)} clips under {out / machine_type / machine_id}", quiet)


@click.command()
@click.argument("data", nargs=-1, required=True, type=Location(exists=True))
@click.option("--out", "-o", required=True, type=Location(folder=True),
              help="Model folder, or s3://bucket/prefix/ (artifacts first, manifest last).")
@endpoint_option("S3 endpoint for s3:// data or --out (e.g. MinIO); default: AWS_ENDPOINT_URL.")
@click.option("--machine-type", "-m", required=True, help="pump, fan, slider, valve, or your own name.")
@click.option("--profile", "-p", default="default", show_default=True, help="Feature profile (default, seed).")
@click.option("--epochs", type=click.IntRange(1), default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--warning-rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01, show_default=True,
              help="False-alarm rate on normal sound at the WARNING threshold.")
@click.option("--critical-rate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.001, show_default=True)
@click.option("--name", help="Model set name (default <machine-type>-<profile>).")
@click.option("--quiet", "-q", is_flag=True)
def train(data: tuple[str, ...], out: str, endpoint_url: str | None, machine_type: str, profile: str, epochs: int,
          seed: int, warning_rate: float, critical_rate: float, name: str | None, quiet: bool) -> None:
    """Train both levels on the normal clips in DATA (files, folders or s3:// prefixes).

    Files under a folder named `abnormal` or `anomaly` are left out. A machine's own set goes to
    `<root>/<site>/<type>/<id>/` (or `<type>/<id>/`): it then grades that machine instead of the
    type's or the default set.

    \b
    Examples:
      signalcraft train data/pump/id_00 --out models/pump --machine-type pump
      signalcraft train s3://recordings/site-a/pump/id_00/ --out s3://models/site-a/pump/id_00/ -m pump
    """
    with tempfile.TemporaryDirectory(prefix="signalcraft-train-") as tmp:
        _train(data, out, endpoint_url, Path(tmp), machine_type, profile, epochs, seed, warning_rate, critical_rate,
               name, quiet)


def _train(data: tuple[str, ...], out: str, endpoint_url: str | None, tmp: Path, machine_type: str, profile: str,
           epochs: int, seed: int, warning_rate: float, critical_rate: float, name: str | None, quiet: bool) -> None:
    from signalcraft_core.dsp.features import get_profile
    from signalcraft_core.training.fit import (
        TrainingOptions,
        find_wavs,
        load_signals,
        train_model_set,
    )

    try:
        get_profile(profile)  # fail fast on a typo
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from None
    if not critical_rate < warning_rate:
        raise click.BadParameter(f"must be below --warning-rate ({warning_rate})", param_hint="--critical-rate")
    from signalcraft_core.io.audio import DEFAULT_AUDIO_CONFIG
    from signalcraft_core.io.objects import s3_client
    from signalcraft_core.training.sources import (
        download_normals,
        is_uri,
        publish_model_set,
    )

    client = s3_client(endpoint_url) if any(map(is_uri, (*data, out))) else None
    if is_uri(out):
        _probe_output(client, out)
    local: list[Path] = []
    origin: dict[Path, str] = {}  # downloaded copy -> its s3:// URI: messages name what the user gave
    for i, source in enumerate(data):
        if is_uri(source):
            copies, refused = download_normals(source, tmp / f"data-{i}", client, DEFAULT_AUDIO_CONFIG.max_bytes)
            for key in refused:
                info(f"skipped {printable(key)}: not a plain relative path below {source}", quiet)
            base = source if source.endswith("/") else source + "/"
            origin.update((copy, base + copy.relative_to(tmp / f"data-{i}").as_posix()) for copy in copies)
            local.append(tmp / f"data-{i}")
        else:
            local.append(Path(source))
    files = find_wavs(local)
    if not files:
        raise click.ClickException(f"no normal .wav files found under {', '.join(map(str, data))}")
    with Progress(quiet) as progress:
        signals, used, skipped = load_signals(files, progress=progress)
        for path, exc in skipped:
            info(f"skipped {printable(origin.get(Path(path), path))}: {exc}", quiet)
        options = TrainingOptions(machine_type=machine_type, profile=profile, name=name, epochs=epochs, seed=seed,
                                  warning_rate=warning_rate, critical_rate=critical_rate)
        try:
            folder = tmp / "model-set" if is_uri(out) else Path(out)
            manifest = train_model_set(signals, folder, options, used, _command_line(), progress)
        except ValueError as exc:  # too few readable clips, impossible calibration
            raise click.ClickException(str(exc)) from None
        if is_uri(out):
            publish_model_set(folder, out, client)
    val = manifest["validation"]
    info(
        f"trained {manifest['name']} v{manifest['version']} on {len(used)} clips ({len(skipped)} skipped) -> {out}\n"
        f"  out-of-fold WARNING rate on normal clips: level1 {val['level1']['warning_rate']:.1%}, "
        f"level2 {val['level2']['warning_rate']:.1%} (target {warning_rate:.1%})\n"
        f"  window {manifest['training']['clip_seconds']:g} s; shorter clips calibrated at "
        + (", ".join(f"{e['seconds']:g} s ({e['cuts']} cuts)" for e in val.get("short_clips", [])) or "no length")
        + " (models/clip_length.py)",
        quiet,
    )
    shortest, longest = manifest["training"]["clip_seconds_range"]
    if longest > 2 * shortest:   # one window for clips of very different lengths: say so, once
        info(f"  note: training clips run from {shortest:g} to {longest:g} s; the model's window is their median "
             f"{manifest['training']['clip_seconds']:g} s (longer recordings are graded window by window)", quiet)


def _probe_output(client, uri: str) -> None:
    """Fail in one line now, not after training, when the s3:// --out cannot be reached (no bucket, no
    credentials, a wrong endpoint): one listing of at most one key."""
    from signalcraft_core.io.objects import parse_uri

    bucket, prefix = parse_uri(uri)
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - botocore's errors are many; each is one line here
        raise click.ClickException(f"--out {uri} is not reachable: {one_line(str(exc))}") from None


def _score_json(record, result) -> dict:
    """One input's line: the grade record's identity and model, the score's findings."""
    return {
        "source": record.key,
        "status": result.status,
        "error": {"code": result.error_code, "message": result.error_message} if result.status != "ok" else None,
        "grade": result.grade,
        "score": result.score,
        "level1": {"score": result.level1_score, "iforest": result.iforest_raw, "rules": list(result.level1_rules),
                   "findings": list(result.rule_messages)},
        "level2": {"mse": result.level2_mse, "score": result.level2_score},
        "model": ({"name": record.model_name, "version": record.model_version, "scope": record.model_scope}
                  if record.model_name else None),
        "duration_s": result.duration_s,
        "sample_rate_in": result.sample_rate_in,
        "channels_in": result.channels_in,
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--models", "-M", help="Model folder or root of per-type folders (default: packaged models).",
              type=Location(exists=True, folder=True, path_type=Path, s3_refusal="score reads local model folders "
                            "only (s3:// model sets are MODEL_URI of the handlers: `signalcraft sweep --models`)"))
@click.option("--machine-type", "-m", help="Pick this type's model set from a model root (default: from the path, else `default`).")
@click.option("--level", type=click.Choice(PREFERENCES), help="Which level decides the grade (default: the manifest's).")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json", show_default=True)
def score(paths: tuple[Path, ...], models: Path | None, machine_type: str | None, level: str | None, fmt: str) -> None:
    """Grade WAV files (or folders of them): one JSON line per input.

    Below a folder, every entry named *.wav is an input, also one that cannot be read (a broken link:
    an error record, as when named); linked folders are followed, each once.

    Exit 0 when every input was graded, 1 when any error record was printed, 2 on usage errors,
    before any output: also a folder without .wav files, a missing or broken --models set, or a
    --level the set has not. A --machine-type without a set of its own is graded with the set
    found instead, with a warning.

    \b
    Example:
      signalcraft score recordings/*.wav --models models/pump --format table
    """
    from signalcraft_core.config import Settings
    from signalcraft_core.io.events import ObjectRef
    from signalcraft_core.pipeline.grade import grade_with_scores

    settings = Settings(preference=level)
    inputs: list[Path] = []
    for p in paths:
        if not p.is_dir():
            inputs.append(p)  # a missing or unreadable file is an error record, graded like any input
            continue
        found = recordings_under(p, settings.suffixes)
        if not found:  # nothing to grade is the user's mistake, not an input that failed (no record to print)
            raise click.BadParameter(f"folder {p} holds no {'/'.join(settings.suffixes)} files",
                                     param_hint="'PATHS...'")
        inputs.extend(found)
    store, model_sets = resolve_model_sets(models, inputs, machine_type, level)
    if machine_type:  # one set grades every input; a custom type may have its own, so a warning, not a refusal
        chosen = next(iter(model_sets))
        if machine_type not in (chosen.set_name, chosen.machine_type):
            click.echo(f"Warning: no model set for machine type {machine_type!r} under {store.uri}: "
                       f"graded with {chosen.name}", err=True)
    any_error = False
    if fmt == "table":
        click.echo(f"{'grade':<9} {'score':>6} {'L1':>6} {'L2':>6}  {'rules':<24} source")
    # The handlers' pipe with a local-file source; batches share one forest / autoencoder call per set.
    for start in range(0, len(inputs), SCORE_BATCH):
        refs = [ObjectRef(bucket=None, key=str(path), source="file") for path in inputs[start:start + SCORE_BATCH]]
        for record, result in grade_with_scores(refs, None, store, settings, machine_type=machine_type):
            any_error |= result.status != "ok"
            if fmt == "json":
                click.echo(json.dumps(_score_json(record, result)))
            elif result.status == "ok":  # one line per input: a newline in a file name is escaped, as in JSON
                click.echo(f"{result.grade:<9} {result.score:>6.1f} {_fmt(result.level1_score, '6.1f'):>6} "
                           f"{_fmt(result.level2_score, '6.1f'):>6}  {','.join(result.level1_rules) or '-':<24} "
                           f"{printable(record.key)}")
            else:
                click.echo(f"{'ERROR':<9} {'-':>6} {'-':>6} {'-':>6}  {result.error_code:<24} {printable(record.key)}: "
                           f"{printable(result.error_message)}")
    if any_error:
        sys.exit(EXIT_SCORE_ERRORS)


def recordings_under(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Every entry below `folder` whose name ends with one of `suffixes`, whatever it is, sorted.

    A broken link or a FIFO named `x.wav` is an input like a file, so it gets the error record the
    grading path gives it when named directly ("not a regular file", not_found), instead of being
    skipped while the exit code says everything was graded. Linked folders are followed, each real
    folder once, so a link to an ancestor cannot recurse forever. A folder that cannot be listed is
    refused before any output: its recordings would get no record.
    """
    wanted = tuple(s.lower() for s in suffixes)
    found: list[Path] = []
    seen: set[str] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        real = os.path.realpath(current)
        if real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir():  # follows links; False for a broken one
                        pending.append(Path(entry.path))
                    elif entry.name.lower().endswith(wanted):
                        found.append(Path(entry.path))
        except OSError as exc:
            raise click.BadParameter(f"cannot list folder {printable(current)}: {exc.strerror or exc}",
                                     param_hint="'PATHS...'") from None
    return sorted(found)


def resolve_model_sets(models: Path | None, inputs: list[Path], machine_type: str | None, level: str | None):
    """(store, model sets) grading `inputs`, checked before any output; shared by `score` and `explain`.

    A missing or broken set is a usage error (exit 2): exit 1 promises error records on stdout, and
    there are none. A --level the set has not is refused too: grading with the other level would be
    silent.
    """
    from signalcraft_core.errors import ModelError
    from signalcraft_core.models.model_store import ModelStore

    try:
        store = ModelStore(models)
        model_sets = list({id(s): s for s in (store.for_path(str(path), machine_type) for path in inputs)}.values())
    except ModelError as exc:
        raise click.BadParameter(exc.message, param_hint="'--models' / '-M'") from None
    for model_set in model_sets:
        if level in ("level1", "level2") and not getattr(model_set, f"has_{level}"):
            raise click.UsageError(f"model set {model_set.name} has no {level}")
    return store, model_sets


@click.command("import-legacy")
@click.argument("pth", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "-o", required=True,
              type=Location(folder=True, s3_refusal="import-legacy writes a local folder only", path_type=Path))
@click.option("--machine-type", "-m", help="Default: valve if the file name says so, else pump.")
@click.option("--calibrate", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Normal clips (files or folders) to calibrate on instead of the old min(1, 20*mse).")
@click.option("--quiet", "-q", is_flag=True)
def import_legacy_cmd(pth: Path, out: Path, machine_type: str | None, calibrate: tuple[Path, ...], quiet: bool) -> None:
    """Convert an earlier-app state dict (.pth) to TorchScript + manifest (`seed` profile).

    \b
    Example:
      signalcraft import-legacy ../shared/legacy/signalcraftapp/valve_autoencoder_v1.pth --out models-legacy-valve
    """
    import pickle

    from signalcraft_core.training.fit import find_wavs, load_signals
    from signalcraft_core.training.legacy import import_legacy

    signals = []
    if calibrate:
        signals, _, _ = load_signals(find_wavs(calibrate))
        if len(signals) < 3:
            raise click.ClickException("--calibrate needs at least 3 readable normal clips")
    try:
        manifest = import_legacy(pth, out, machine_type, signals, command=_command_line())
    except (ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # not a state dict of the old autoencoder
        raise click.ClickException(f"{pth}: not an earlier-app autoencoder state dict ({type(exc).__name__}: {_first_line(exc)})") from None
    cal = manifest["level2"]["calibration"]
    info(f"imported {pth.name} as {manifest['name']} v{manifest['version']} -> {out} (calibration: {cal['method']})", quiet)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
