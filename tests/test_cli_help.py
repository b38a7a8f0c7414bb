"""Every command's --help carries an example (issue: what users look at)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from signalcraft_core.local.cli.app import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))
        else:
            yield prefix + (name,)


COMMANDS = list(_commands(cli))


def test_all_commands_are_registered():
    names = {" ".join(c) for c in COMMANDS}
    for expected in ("synth", "train", "score", "import-legacy", "evaluate", "report", "explain", "sweep",
                     "watch", "demo", "local invoke", "local generate-event", "local minio-listener"):
        assert expected in names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p))
def test_help_has_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and "signalcraft " in result.output.split("Example", 1)[1]
