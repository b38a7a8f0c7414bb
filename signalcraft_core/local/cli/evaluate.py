"""`signalcraft evaluate`: how well a recipe separates real faults from normal sound, on held-out clips.

Registered on the `signalcraft` group when imported (cli.main imports it). The work is in
evaluation.py; this module only gathers files, draws progress and prints the table / JSON.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from signalcraft_core.local.cli.params import Location
from signalcraft_core.local.console import Progress, info

PATH_OPTIONS = ("--normal", "--anomalous", "--train")


class _PathListCommand(click.Command):
    """Lets `--normal a.wav b.wav dir/` take several paths (as a shell glob gives them).

    Click options take one value each; before parsing, every bare word that follows one of
    PATH_OPTIONS (up to the next option) gets that option repeated in front of it.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["signalcraft.evaluate.args"] = list(args)
        expanded: list[str] = []
        current: str | None = None
        expect_value = False
        for arg in args:
            if expect_value:
                expanded.append(arg)
                expect_value = False
            elif arg == "--":
                current = None
                expanded.append(arg)
            elif arg in PATH_OPTIONS:
                current = arg
                expanded.append(arg)
                expect_value = True
            elif arg.startswith("-") and arg != "-":
                current = None
                expanded.append(arg)
            elif current is not None:
                expanded.extend((current, arg))
            else:
                expanded.append(arg)
        return super().parse_args(ctx, expanded)


def _files(paths: tuple[Path, ...], anomalous: bool) -> list[Path]:
    from signalcraft_core.training.fit import find_wavs

    return find_wavs(paths, include_anomalies=anomalous)


def _load(files: list[Path], what: str, progress, quiet: bool) -> list:
    from signalcraft_core.training.fit import load_signals

    signals, _, skipped = load_signals(files, progress=lambda stage, done, total: progress(f"decode {what}", done, total))
    for path, exc in skipped:
        info(f"skipped {path}: {exc}", quiet)
    return signals


@click.command(cls=_PathListCommand)
@click.option("--normal", "-n", "normal", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Normal clips: files or folders (abnormal/anomaly sub-folders are left out). Takes several.")
@click.option("--anomalous", "-a", "anomalous", multiple=True, required=True,
              type=click.Path(exists=True, path_type=Path), help="Anomalous clips: files or folders. Takes several.")
@click.option("--train", "train", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Train on these normal clips and test on all of --normal (default: k-fold over --normal).")
@click.option("--profile", "-p", default="default", show_default=True, help="Feature profile (default, seed).")
@click.option("--machine-type", "-m", default="unknown", show_default=True, help="Recorded in the training recipe.")
@click.option("--folds", "-k", type=click.IntRange(2), default=5, show_default=True)
@click.option("--repeats", "-r", type=click.IntRange(1), default=1, show_default=True,
              help="Repeat the k-fold split (and model seeds) this many times.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(1), help="Autoencoder epochs (default: the training default).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="What goes to stdout.")
@click.option("--json", "json_path", help="Also write the JSON report here (missing folders are made).",
              type=Location(file=True, path_type=Path, s3_refusal="evaluate writes a local file only"))
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines.")
def evaluate(normal: tuple[Path, ...], anomalous: tuple[Path, ...], train: tuple[Path, ...], profile: str,
             machine_type: str, folds: int, repeats: int, seed: int, epochs: int | None, fmt: str,
             json_path: Path | None, quiet: bool) -> None:
    """Train on normal clips only and measure AUC, pAUC and alarm rates on held-out clips.

    Prints one row per level (level1, level2, hybrid): AUC and pAUC (max FPR 0.1, McClish-standardised)
    as mean±std over folds, and the WARNING / CRITICAL rates on held-out normal clips (false alarms)
    and on anomalous clips (detections). Exit 0 on success, 1 when the clips cannot be evaluated
    (none found, too few), 2 on usage errors.

    \b
    Examples:
      signalcraft evaluate --normal data/valve/normal --anomalous data/valve/anomaly --folds 5
      signalcraft evaluate --normal clips/n_*.wav --anomalous clips/a_*.wav --format json
      signalcraft evaluate --train old/normal --normal new/normal --anomalous new/abnormal
    """
    from dataclasses import replace

    from signalcraft_core.analysis.evaluation import (
        EvaluationOptions,
        evaluate_signals,
        format_table,
        report_json,
    )
    from signalcraft_core.dsp.features import get_profile
    from signalcraft_core.training.fit import TrainingOptions

    try:
        get_profile(profile)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from None
    normal_files = _files(normal, anomalous=False)
    anomalous_files = _files(anomalous, anomalous=True)
    train_files = _files(train, anomalous=False) if train else []
    if not normal_files:
        raise click.ClickException(f"no normal .wav files found under {', '.join(map(str, normal))}")
    if not anomalous_files:
        raise click.ClickException(f"no anomalous .wav files found under {', '.join(map(str, anomalous))}")
    if train and not train_files:
        raise click.ClickException(f"no training .wav files found under {', '.join(map(str, train))}")
    for a, b, name in ((normal_files, anomalous_files, "--normal and --anomalous"),
                       (train_files, normal_files, "--train and --normal"),
                       (train_files, anomalous_files, "--train and --anomalous")):
        shared = {p.resolve() for p in a} & {p.resolve() for p in b}
        if shared:
            raise click.ClickException(f"{name} share {len(shared)} file(s), e.g. {sorted(shared)[0]}")
    options = TrainingOptions(machine_type=machine_type, profile=profile, seed=seed)
    if epochs is not None:
        options = replace(options, epochs=epochs)
    with Progress(quiet) as progress:
        normal_signals = _load(normal_files, "normal", progress, quiet)
        anomalous_signals = _load(anomalous_files, "anomalous", progress, quiet)
        train_signals = _load(train_files, "train", progress, quiet) if train else None
        try:
            report = evaluate_signals(
                normal_signals, anomalous_signals,
                EvaluationOptions(training=options, folds=folds, repeats=repeats, seed=seed),
                train=train_signals, progress=progress,
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    args = click.get_current_context().meta.get("signalcraft.evaluate.args", [])
    payload = report_json(report, "signalcraft evaluate " + shlex.join(args))
    if fmt == "json":
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(format_table(report))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        info(f"wrote {json_path}", quiet)
