"""The `signalcraft` command: one click group, every command registered here, errors as one line.

Command modules define plain click commands and never import this module, so there is no import
cycle; heavy modules (torch, sklearn, boto3) are imported inside commands so `--help` is instant.
Every user mistake ends in one `Error: ...` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import click

from signalcraft_core.errors import SignalcraftError
from signalcraft_core.local.cli import core, evaluate, report, serverless


class FriendlyGroup(click.Group):
    """Turns expected failures into one line on stderr instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SignalcraftError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # botocore errors are imported lazily; match them by module
            if type(exc).__module__.startswith(("botocore", "boto3", "urllib3")):
                raise click.ClickException(f"object store: {exc}") from None
            if isinstance(exc, OSError):  # any file-system refusal (exists, not a folder, full disk ...)
                raise click.ClickException(_os_error_line(exc)) from None
            raise


def _os_error_line(exc: OSError) -> str:
    """`strerror: filename` as the shell says it, or the error's own text when it names no file."""
    if not exc.strerror:
        return str(exc) or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{exc.strerror}: {' -> '.join(names)}" if names else exc.strerror


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="signalcraft-scoring")
def cli() -> None:
    """Grade machine recordings NORMAL / WARNING / CRITICAL with models trained on normal sound.

    \b
    Quick start:
      signalcraft synth data/ --machine-type pump --normal 40 --abnormal 10
      signalcraft train data/pump --out models-pump --machine-type pump
      signalcraft score data/pump/id_00/abnormal/*.wav --models models-pump
    """


for command in (core.synth, core.train, core.score, core.import_legacy_cmd, evaluate.evaluate, report.report,
                report.explain, serverless.local, serverless.sweep, serverless.watch, serverless.demo):
    cli.add_command(command)


if __name__ == "__main__":
    cli(prog_name="signalcraft")
