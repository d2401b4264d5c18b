"""The browser test's page checks can fail: raw TeX, untypeset formulas, a missing figure."""

from __future__ import annotations

from pathlib import Path

import pagecheck
from bs4 import BeautifulSoup
from PIL import Image


def _soup(body: str) -> BeautifulSoup:
    return BeautifulSoup(
        f"<html><body><main><article>{body}</article></main></body></html>",
        "html.parser",
    )


def test_typeset_math_passes():
    soup = _soup(
        '<p>Loss <span class="math notranslate"><mjx-container class="MathJax">'
        "<mjx-math>L</mjx-math></mjx-container></span> falls.</p>"
    )
    assert pagecheck.has_math(soup)
    assert pagecheck.math_problems(soup) == []


def test_raw_inline_tex_fails():
    soup = _soup(
        r'<p>Loss <span class="math notranslate">\(\mathcal{L}(\theta)\)</span>.</p>'
    )
    problems = pagecheck.math_problems(soup)
    assert any("not typeset" in p for p in problems)
    assert any("raw TeX" in p and "mathcal" in p for p in problems)


def test_raw_display_tex_outside_math_spans_fails():
    soup = _soup(r"<p>$$ r_t = \sum_k \log(1 + c_k) $$</p>")
    assert pagecheck.has_math(soup)
    assert any("raw TeX" in p for p in pagecheck.math_problems(soup))


def test_tex_in_code_and_outputs_is_not_prose():
    soup = _soup(
        r'<div class="cell_input"><pre>print("\\(x\\)", "$$")</pre></div>'
        r'<div class="cell_output"><pre>cost $$ \[1\]</pre></div><p>No math here.</p>'
    )
    assert not pagecheck.has_math(soup)
    assert pagecheck.math_problems(soup) == []


def test_missing_small_and_absent_figures_fail(tmp_path: Path):
    page = tmp_path / "chapters" / "page.html"
    (tmp_path / "_images").mkdir()
    page.parent.mkdir()
    Image.new("RGB", (640, 480), "white").save(tmp_path / "_images" / "big.png")
    Image.new("RGB", (40, 40), "white").save(tmp_path / "_images" / "tiny.png")
    good = _soup('<img src="../_images/big.png">')
    assert pagecheck.figure_problems(good, page) == []
    missing = pagecheck.figure_problems(_soup('<img src="../_images/gone.png">'), page)
    assert missing and "missing" in missing[0]
    tiny = pagecheck.figure_problems(_soup('<img src="../_images/tiny.png">'), page)
    assert tiny and "too small" in tiny[0]
    assert pagecheck.figure_problems(_soup("<p>text only</p>"), page) == [
        "the page shows no figure"
    ]
