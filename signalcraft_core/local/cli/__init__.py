"""The `signalcraft` command line, one module per group of commands.

`main` is the console script: it imports click (the `cli` extra) only when it runs, so a
runtime-only install says in one line what to install instead of printing a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from signalcraft_core.local.cli.app import cli
    except ImportError as exc:
        if exc.name not in ("click", "yaml"):
            raise
        sys.stderr.write(f"Error: signalcraft needs the cli extra ({exc.name} is not installed): "
                         "pip install 'signalcraft-scoring[cli]'\n")
        raise SystemExit(2) from None
    cli(prog_name="signalcraft")
