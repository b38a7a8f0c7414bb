"""The README's generated parts stay true: the record schema table and the two commands."""

from __future__ import annotations

from pathlib import Path

from signalcraft_core.pipeline.records import GRADE_SCHEMA, schema_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_schema_table_matches_the_code() -> None:
    text = README.read_text()
    start, end = text.index("<!-- schema:start -->"), text.index("<!-- schema:end -->")
    assert text[start:end].split("\n", 1)[1].strip() == schema_markdown().strip()
    for field in GRADE_SCHEMA:
        assert f"`{field.name}`" in text[start:end]


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_accuracy_table_is_the_bench_output() -> None:
    text = README.read_text()
    start, end = text.index("<!-- accuracy:start -->"), text.index("<!-- accuracy:end -->")
    generated = (README.parent / "bench" / "results" / "accuracy.md").read_text().strip()
    assert text[start:end].split("\n", 1)[1].strip() == generated


def test_performance_targets_are_the_bench_output() -> None:
    text = README.read_text()
    start, end = text.index("<!-- performance:start -->"), text.index("<!-- performance:end -->")
    perf = (README.parent / "bench" / "results" / "performance.md").read_text()
    targets = perf[perf.index("## Targets"):perf.index("## Cold start")].split("\n", 1)[1].strip()
    assert text[start:end].split("\n", 1)[1].strip() == targets


def test_layout_names_every_module_of_the_package() -> None:
    """The README's Layout section is the map a newcomer walks: every module must be on it."""
    text = README.read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    package = README.parent / "signalcraft_core"
    missing = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
               if p.name != "__init__.py" and p.stem not in text]
    assert missing == []


def test_every_option_the_command_line_table_shows_exists() -> None:
    """The table is what users copy from: an option it names that the command lacks is a usage error for them."""
    import re

    import click

    from signalcraft_core.local.cli.app import cli

    text = README.read_text()
    table = text[text.index("## Command line"):text.index("`score` output")]
    checked = 0
    for cell in re.findall(r"^\| `(signalcraft [^`]+)` \|", table, flags=re.M):
        words = cell.split()[1:]
        command: click.Command = cli
        while isinstance(command, click.Group) and words and words[0] in command.commands:
            command, words = command.commands[words[0]], words[1:]
        known = {name for p in command.params for name in (*p.opts, *p.secondary_opts)}
        shown = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", " ".join(words)))
        assert shown <= known, f"{cell!r}: {sorted(shown - known)} not options of {command.name}"
        checked += 1
    assert checked >= 12   # every row was parsed
