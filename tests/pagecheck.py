"""What a reader must see on a rendered page: checks shared by the browser test (test_book.py)
and their own unit tests (test_pagecheck.py), which prove each check can fail.

The page is the DOM headless Chromium dumps after its scripts ran (MathJax included), with the
network cut off, so a formula counts as rendered only if MathJax was served by the book itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup
from PIL import Image

#: Raw TeX delimiters a reader would see if MathJax did not run: \( \) \[ \] and $$.
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$")
#: Where text is code or program output, in which a backslash or ``$$`` is legitimate.
CODE = "pre, code, .cell_input, .cell_output, .highlight, script, style, mjx-container, .MathJax"


def reader_text(soup: BeautifulSoup) -> str:
    """The page's prose as a reader sees it: the article without code, outputs and rendered math."""
    article = soup.select_one("main article, article, main") or soup
    article = BeautifulSoup(str(article), "html.parser")
    for node in article.select(CODE):
        node.decompose()
    return article.get_text(" ")


def math_problems(soup: BeautifulSoup) -> list[str]:
    """Why the page's math is not rendered (empty list: it is, or the page has none)."""
    problems = []
    untypeset = [
        el
        for el in soup.select("span.math, div.math")
        if not el.select("mjx-container")
    ]
    if untypeset:
        sample = untypeset[0].get_text()[:60]
        problems.append(
            f"{len(untypeset)} formula(s) not typeset by MathJax, e.g. {sample!r}"
        )
    raw = RAW_TEX.findall(reader_text(soup))
    if raw:
        lines = [
            line.strip()
            for line in reader_text(soup).splitlines()
            if RAW_TEX.search(line)
        ]
        problems.append(
            f"raw TeX on the page ({len(raw)} delimiters), e.g. {lines[0][:80]!r}"
        )
    return problems


def has_math(soup: BeautifulSoup) -> bool:
    """The page holds formulas (typeset or not)."""
    return bool(soup.select("span.math, div.math, mjx-container")) or bool(
        RAW_TEX.search(reader_text(soup))
    )


def figure_problems(soup: BeautifulSoup, page: Path, min_side: int = 100) -> list[str]:
    """Why the page's figures are not shown: none at all, a file missing or too small."""
    images = [
        img
        for img in soup.select("main img, article img")
        if "_images/" in img.get("src", "")
    ]
    if not images:
        return ["the page shows no figure"]
    problems = []
    for img in images:
        path = (page.parent / img["src"]).resolve()
        if not path.is_file():
            problems.append(f"{img['src']} is missing from the build")
            continue
        with Image.open(path) as figure:
            if min(figure.size) <= min_side:
                problems.append(
                    f"{img['src']} is too small to be a figure ({figure.size})"
                )
    return problems
