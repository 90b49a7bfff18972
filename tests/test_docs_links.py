"""The user's guide and its pages hold together: every relative link in README.md and docs/*.md
names a file that exists, and every #anchor a heading of that page (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _outside_code(path: Path):
    """(line number, line) of the page's lines outside fenced code blocks."""
    fence = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fence = not fence
        elif not fence:
            yield number, line


def anchors(path: Path) -> set[str]:
    """The page's heading anchors; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    for _, line in _outside_code(path):
        if re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            seen[base] = seen.get(base, 0) + 1
            yield base if seen[base] == 1 else f"{base}-{seen[base] - 1}"


def relative_links() -> list[tuple[str, str]]:
    """(page:line, target) of every link that is not a URL, inline code left out."""
    found = []
    for page in PAGES:
        for number, line in _outside_code(page):
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                if not re.match(r"[a-z]+:", target):
                    found.append((f"{page.relative_to(ROOT)}:{number}", target))
    return found


def test_slug_follows_githubs_rules():
    assert slug("Reproducibility across CPUs (`prepare.numerics`)") == "reproducibility-across-cpus-preparenumerics"
    assert slug("Stage 1: one `s2lpo explore` worker per GPU") == "stage-1-one-s2lpo-explore-worker-per-gpu"


def test_every_docs_page_is_linked_from_the_readme_and_links_back():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, page.name
        assert "](../README.md)" in page.read_text().splitlines()[0], page.name


@pytest.mark.parametrize("where, target", relative_links(), ids=lambda x: x)
def test_relative_links_resolve(where, target):
    page = ROOT / where.split(":")[0]
    file, _, anchor = target.partition("#")
    dest = (page.parent / file).resolve() if file else page
    assert dest.exists(), f"{where}: {target}: no such file"
    if anchor:
        assert anchor in set(anchors(dest)), f"{where}: {target}: no such heading"
