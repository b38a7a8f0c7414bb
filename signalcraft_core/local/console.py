"""Terminal helpers for the CLI: progress that stays quiet off a terminal, one-line errors."""

from __future__ import annotations

import sys
from typing import Callable

import click


class Progress:
    """A `progress(stage, done, total)` callback drawing one bar per stage on a terminal.

    Quiet under --quiet or when stderr is not a terminal (CI, pipes, Lambda logs).
    """

    def __init__(self, quiet: bool = False) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self._stage: str | None = None
        self._bar = None
        self._done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            self._stage, self._done = stage, 0
            self._bar = click.progressbar(length=total, label=f"{stage:<10}", file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def info(message: str, quiet: bool = False) -> None:
    """Status lines go to stderr so stdout stays machine-readable (JSON lines)."""
    if not quiet:
        click.echo(message, err=True)


ProgressFn = Callable[[str, int, int], None]
