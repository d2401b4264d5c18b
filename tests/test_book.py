"""The whole book: every chapter executes in the ci profile, the HTML builds, a browser shows it.

Marked ``book``: ``make test`` runs these, ``make test-unit`` skips them. The chapter runner
caches a chapter whose notebook, library, data and pins are unchanged, so after ``make book``
these tests reuse its executed notebooks; on a fresh clone (CI) everything executes.
The browser runs with the network cut off: formulas must be typeset by the MathJax the book
serves itself (see pagecheck.py for what counts as a rendered page).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pagecheck
import pytest
import yaml
from bs4 import BeautifulSoup
from PIL import Image

from pulse_lib import runner

pytestmark = pytest.mark.book
ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = runner.toc_chapters(ROOT)


@pytest.fixture(scope="session")
def chapter_results():
    return {r.chapter: r for r in runner.run_chapters(profile="ci", root=ROOT)}


@pytest.fixture(scope="session")
def html(chapter_results) -> Path:
    failed = [name for name, r in chapter_results.items() if r.status == "failed"]
    if failed:
        pytest.fail(f"cannot build the book: chapters failed: {failed}")
    return runner.build_html(ROOT)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes_in_ci_profile(chapter_results, chapter):
    result = chapter_results[chapter]
    assert result.status in ("ok", "cached"), f"{chapter} failed at {result.detail}"
    executed = nbformat.read(ROOT / runner.STAGE_DIR / "chapters" / f"{chapter}.ipynb", as_version=4)
    assert executed.metadata["pulse_book"]["profile"] == "ci"
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is missing: `make setup` installs Debian's chromium")
    return path


#: Chromium with the network cut off (every host resolves to nothing): a page passes only with
#: what the built book itself serves (MathJax included), as on an offline laptop or behind a proxy.
OFFLINE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,900",
]


def _render(page: Path, tmp_path: Path, screenshot: bool = True) -> tuple[BeautifulSoup, Path | None]:
    """Open a page in headless Chromium; return the DOM after scripts (MathJax) ran, and a
    screenshot."""
    profile = tmp_path / f"profile-{page.stem}"
    dom = subprocess.run(
        [_chromium(), *OFFLINE_FLAGS, f"--user-data-dir={profile}-dom", "--virtual-time-budget=15000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180, check=True,
    ).stdout
    if not screenshot:
        return BeautifulSoup(dom, "html.parser"), None
    shot = tmp_path / f"{page.stem}.png"
    subprocess.run(
        [_chromium(), *OFFLINE_FLAGS, f"--user-data-dir={profile}-shot", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=180, check=True,
    )
    return BeautifulSoup(dom, "html.parser"), shot


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_shows_title_figures_and_math_in_a_browser(html, chapter, tmp_path):
    source = nbformat.read(ROOT / "chapters" / f"{chapter}.ipynb", as_version=4)
    title = source.cells[0].source.splitlines()[0].lstrip("# ").strip()
    page = html / "chapters" / f"{chapter}.html"
    assert page.is_file(), f"no page for {chapter}"
    soup, shot = _render(page, tmp_path)
    heading = soup.find("h1")
    assert heading is not None and title in heading.get_text(), f"page title {heading!r} is not {title!r}"
    assert not pagecheck.figure_problems(soup, page), pagecheck.figure_problems(soup, page)
    assert not pagecheck.math_problems(soup), pagecheck.math_problems(soup)
    assert not soup.select(".output.traceback, .cell_output .traceback"), "the page shows an error output"
    assert "Traceback (most recent call last)" not in soup.get_text()
    assert "Gym has been unmaintained" not in soup.get_text(), "d3rlpy's gym notice is on the page"
    with Image.open(shot) as screenshot:
        colours = screenshot.convert("L").getextrema()
        assert colours[1] - colours[0] > 100, "the screenshot is blank"


TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
#: The prose pages (root included): the chapters have their own, fuller browser test.
PAGES = [TOC["root"]] + [entry for entry in runner._walk_toc(TOC) if not entry.startswith("chapters/")]


@pytest.mark.parametrize("entry", PAGES)
def test_prose_page_renders_its_math_offline(html, entry, tmp_path):
    page = html / f"{entry}.html"
    assert page.is_file(), f"no page for {entry}"
    soup, _ = _render(page, tmp_path, screenshot=False)
    assert soup.find("h1") is not None, f"{entry} has no title"
    assert not pagecheck.math_problems(soup), pagecheck.math_problems(soup)


def test_book_has_numbered_parts_bibliography_and_colab_buttons(html):
    index = BeautifulSoup((html / "chapters" / f"{CHAPTERS[0]}.html").read_text(), "html.parser")
    captions = [c.get_text(strip=True) for c in index.select("p.caption, .caption-text")]
    assert "Getting started" in captions
    assert "colab.research.google.com" in str(index), "the Colab launch button is missing"
    bibliography = (html / "book" / "bibliography.html").read_text()
    assert "implementing reinforcement learning for marketing channel optimization" in bibliography.lower()
    toc_titles = index.select("nav.bd-links a")
    assert any(a.get_text(strip=True).startswith("1.") for a in toc_titles), "chapters are not numbered"
