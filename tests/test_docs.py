"""The documentation's links: every relative link in README.md and docs/*.md names a file that exists (and, with
a #fragment, a heading or anchor in it), and README.md stays a front page of at most 150 lines."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 150
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
COMMENT = re.compile(r"<!--.*?-->", re.S)
ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "README.md"]


def prose(path: Path) -> str:
    """The Markdown without code blocks and comments, where link syntax is not a link."""
    return COMMENT.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = prose(path)
    found = {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}
    return found | set(ANCHOR.findall(path.read_text(encoding="utf-8")))


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading or anchor #{fragment} there)")
    return broken


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert path.exists()
    assert broken_links(path) == []


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "b.md").write_text("# Some `code` heading's end\n<a id=\"here\"></a>\n", encoding="utf-8")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md) [ok](b.md#some-code-headings-end) [ok](b.md#here) ![no](img/c.png)\n"
                    "[no](b.md#other) [web](https://example.org) <!-- [no](e.md) -->\n"
                    "```\n[in code](d.md)\n```\n", encoding="utf-8")
    assert broken_links(page) == ["img/c.png (no such file)", "b.md#other (no heading or anchor #other there)"]
