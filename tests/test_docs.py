"""The documentation stays true: docs/cli.md is what the CLI's --help says now, it names every
command and option, the README's first screen is the two commands the Makefile runs, and every
relative link leads to a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.cli import cli
from jobs.cli_docs import TARGET, render
from tests.conftest import REPO

DOCS = [
    REPO / "README.md",
    REPO / "CHANGELOG.md",
    REPO / "benchmarks" / "RESULTS.md",
    *sorted((REPO / "docs").glob("*.md")),
]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(path: Path) -> str:
    """A Markdown file without its code blocks and inline code, where links cannot be."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", path.read_text()))


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ +(.+?) *$", FENCE.sub("", path.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_cli_reference_is_what_the_cli_says_now():
    if not TARGET.is_file() or TARGET.read_text() != render():
        pytest.fail("docs/cli.md is stale: run make docs")


def test_cli_reference_lists_every_option_of_every_command():
    reference = TARGET.read_text()
    for name, command in cli.commands.items():
        assert f"embed-etl {name}" in reference, name
        for param in command.params:
            for opt in param.opts + param.secondary_opts:
                if opt.startswith("--") and opt != "--help":
                    pattern = rf"(?<![\w-]){re.escape(opt)}(?![\w-])"
                    assert re.search(pattern, reference), f"{name} {opt} not in docs/cli.md"


def test_the_readme_opens_with_the_two_commands_the_makefile_has():
    readme = (REPO / "README.md").read_text()
    first = FENCE.search(readme).group(0).splitlines()[1:-1]
    assert [line.split("#")[0].strip() for line in first] == ["make embed", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^embed:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert len(readme.splitlines()) <= 150, "the README is the front door: details go to docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_that_exists(doc):
    broken = []
    for target in LINK.findall(_prose(doc)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.relative_to(REPO)}: broken links: {', '.join(broken)}"
