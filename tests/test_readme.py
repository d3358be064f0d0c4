"""The README reads in two minutes (issue 31): at most about 1,000 words, code within its first 40 lines, no
paragraph over 120 words; every relative link of the READMEs and docs/ leads to a file (and heading) there; and
docs/cli.md names every flag of every sub-command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "examples" / "glue" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def words(text: str) -> int:
    """Words as a reader counts them: whitespace-separated tokens holding a letter or digit (table bars, dashes and
    arrows do not count)."""
    return sum(1 for token in text.split() if re.search(r"\w", token))


def paragraphs(text: str) -> list[str]:
    """The README's prose paragraphs: blocks between blank lines, fenced code and tables left out (a list counts as
    one paragraph)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return [block for block in re.split(r"\n\s*\n", prose) if block.strip() and not block.lstrip().startswith("|")]


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub gives a Markdown page: lower case, punctuation dropped, spaces to hyphens, a
    repeated one suffixed -1, -2, ..."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def test_the_readme_is_short():
    assert words(README.read_text()) <= 1100


def test_the_first_code_block_starts_within_40_lines():
    lines = README.read_text().splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line.startswith("```"))
    assert first < 40, f"the README's first code block starts on line {first}"


def test_no_readme_paragraph_is_over_120_words():
    long = [(words(p), p[:60]) for p in paragraphs(README.read_text()) if words(p) > 120]
    assert not long, long


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_lead_to_files_and_headings_that_exist(page):
    broken = []
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {path or page.name}")
    assert not broken, broken


def test_the_cli_page_names_every_flag_of_every_sub_command():
    from hf_soups.cli import COMMANDS, build_parser

    page = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in COMMANDS:
        section = page.split(f"## hf-soups {name}\n", 1)[-1].split("\n## ", 1)[0]
        flags = {flag for action in commands[name]._actions for flag in action.option_strings} - {"-h", "--help"}
        missing = sorted(flag for flag in flags if not re.search(rf"`{re.escape(flag)}[ `]", section))
        assert not missing, f"docs/cli.md, hf-soups {name}: {missing} (regenerate from hf-soups {name} --help)"


def test_the_checks_catch_what_they_are_for(tmp_path):
    assert words("| a | b |\n|---|---|\n→ … word") == 3
    assert [words(p) for p in paragraphs("one two\n\n```\nnot prose\n```\n\n| a | b |\n\nthree")] == [2, 1]
    page = tmp_path / "page.md"
    page.write_text("# A title: `code`, again\n\n## A title: code again\n")
    assert anchors(page) == {"a-title-code-again", "a-title-code-again-1"}
