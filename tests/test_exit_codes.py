"""Exit codes have one owner: etl/errors.py's table decides every number; the CLI's help and
the README take theirs from it."""

from __future__ import annotations

import ast
import re

from etl.errors import EXIT_MEANINGS, ConfigError, EmbedEtlError, ExitCode, ModelError
from jobs.cli import cli
from tests.conftest import REPO

OWNER = REPO / "etl" / "errors.py"


def _int_assignments(path):
    """(line, name) of each name or attribute that looks like an exit code and is given a
    number: EXIT_*, *_EXIT, exit_code, ExitCode members."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and "exit" in node.name.lower():
            found.append((node.lineno, node.name))
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        numbers = [n for n in ast.walk(value) if isinstance(n, ast.Constant)]
        if not any(type(n.value) is int for n in numbers):
            continue
        for target in targets:
            for leaf in ast.walk(target):
                name = getattr(leaf, "id", None) or getattr(leaf, "attr", None) or ""
                if "exit" in name.lower():
                    found.append((node.lineno, name))
    return found


def test_no_exit_code_number_is_defined_but_in_the_owner():
    paths = sorted((REPO / "etl").rglob("*.py")) + sorted((REPO / "jobs").rglob("*.py"))
    assert OWNER in paths
    found = {
        f"{path.relative_to(REPO)}:{line} {name}"
        for path in paths
        if path != OWNER
        for line, name in _int_assignments(path)
    }
    assert not found, f"exit codes defined outside etl/errors.py: {sorted(found)}"
    assert _int_assignments(OWNER), "the finder finds the table itself"


def test_the_table_gives_every_code_a_meaning_and_every_error_a_code():
    assert set(EXIT_MEANINGS) == set(ExitCode)
    assert ConfigError.exit_code == ExitCode.USAGE
    assert EmbedEtlError.exit_code == ModelError.exit_code == ExitCode.ERROR


def test_the_readme_lists_every_exit_code_of_the_table():
    readme = (REPO / "README.md").read_text()
    paragraph = next(p for p in readme.split("\n\n") if "Exit codes:" in p)
    listed = {int(n) for n in re.findall(r"`(\d+)`", paragraph.split("Exit codes:", 1)[1])}
    assert listed == {int(code) for code in ExitCode}


def test_every_code_in_the_help_is_one_of_the_table():
    commands = [*cli.commands.values(), *cli.commands["store"].commands.values()]
    codes = {int(code) for code in ExitCode}
    for command in commands:
        if command.epilog:
            said = re.findall(r"(?:Exit codes: |; )(\d+) ", command.epilog)
            assert said and set(map(int, said)) <= codes, command.name
    assert "4" not in cli.commands["run"].epilog.split()  # `status` only
