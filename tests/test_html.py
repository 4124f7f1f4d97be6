"""The Markdown-to-HTML converter of the reports (fertool.evaluate.html): escaping, the
Markdown subset the writers use, images inlined, and a page checked in headless Chromium."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from browser import check_page, chromium, self_contained

from fertool.evaluate.html import markdown_to_html, write_html


def _body(page: str) -> str:
    return page.split("<body>\n", 1)[1].rsplit("\n</body>", 1)[0]


def test_text_is_escaped_everywhere():
    evil = '<script>alert("x")</script>&<img src=x onerror=1>'
    md = (f"# {evil}\n\n{evil}\n\n| a | b |\n|---|---|\n| {evil} | `{evil}` |\n\n- {evil}\n\n"
          f"```\n{evil}\n```\n\n[{evil}](a.md)\n")
    page, _ = markdown_to_html(md)
    assert "<script" not in page and "<img src=x" not in page and "onerror=1>" not in page
    # title, heading, paragraph, two cells, item, code, link
    assert page.count("&lt;script&gt;") == 8
    assert "<title>&lt;script&gt;" in page


def test_the_markdown_subset():
    md = """# Title

Para with **bold**, *italic*, `a|b` and [link](http://example.org/x?a=1&b=2).
Next line joins.

| method | accuracy | n |
|:--|--:|:-:|
| LPQ | 41.2 | 3 \\| 4 |
| PHOG | 38.0 |

1. one
2. two
   - nested
3. three

> a quote

---
"""
    body = _body(markdown_to_html(md)[0])
    assert "<h1>Title</h1>" in body
    assert ("<p>Para with <strong>bold</strong>, <em>italic</em>, <code>a|b</code> and "
            '<a href="http://example.org/x?a=1&amp;b=2">link</a>. Next line joins.</p>') in body
    head = '<th style="text-align:left">method</th><th style="text-align:right">accuracy</th>'
    assert head in body
    assert '<td style="text-align:center">3 | 4</td>' in body
    assert re.search(r"<tr><td[^>]*>PHOG</td><td[^>]*>38.0</td><td[^>]*></td></tr>", body)
    assert "<ol><li>one</li><li>two<ul><li>nested</li></ul></li><li>three</li></ol>" in body
    assert "<blockquote><p>a quote</p></blockquote>" in body and "<hr>" in body


def test_images_are_inlined_and_missing_ones_say_so(tmp_path):
    from fertool.core.io import write_png

    write_png(tmp_path / "figs" / "cm.png", np.full((10, 20, 3), 200, np.uint8))
    (tmp_path / "other.md").write_text("# other\n")
    (tmp_path / "other.html").write_text("<html></html>")
    md = ("![confusion](figs/cm.png)\n\n![gone](nope.png)\n\n[the other](other.md) "
          "[no twin](third.md)\n")
    (tmp_path / "report.md").write_text(md)
    page = write_html(tmp_path / "report.md").read_text()
    src = re.search(r'<img src="data:image/png;base64,([^"]+)" alt="confusion">', page)
    assert base64.b64decode(src.group(1)) == (tmp_path / "figs" / "cm.png").read_bytes()
    assert '<span class="missing">[image nope.png: No such file or directory]</span>' in page
    assert '<a href="other.html">' in page and '<a href="third.md">' in page
    assert self_contained(tmp_path / "report.html")


NO_CHROMIUM = "chromium is not installed (apt-get install chromium)"


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_a_report_renders_in_chromium(tmp_path):
    from matplotlib.figure import Figure

    from fertool.core.io import save_figure
    from fertool.evaluate.metrics import plot_confusion

    cm = np.array([[5, 1], [2, 7]])
    save_figure(plot_confusion(cm, ["happy", "sad"]), tmp_path / "confusion.png")
    fig = Figure(figsize=(4, 3))
    fig.subplots().plot([0, 1, 2], [0.2, 0.5, 0.4])
    save_figure(fig, tmp_path / "curve 1.png")
    md = ("# A report\n\n| a | b |\n|--|--|\n| 1 | 2 |\n\n![confusion](confusion.png)\n\n"
          "![curve](curve%201.png)\n")
    (tmp_path / "report.md").write_text(md)
    page = write_html(tmp_path / "report.md")
    res = check_page(page, tmp_path / "shot.png", height=1400)
    assert res["images"] == 2 and res["broken"] == [] and min(res["widths"]) > 100
    assert res["tables"] == 1 and res["std"] > 10
