"""Open an HTML report in headless Chromium: every image loaded, a screenshot taken.

Import by name (pytest puts ``tests/`` on ``sys.path``)::

    from browser import chromium, check_page

The page itself has no script. The check opens a copy of it with one small script added, which
writes, once the page has loaded, the number of images and those not loaded (``complete`` and
``naturalWidth > 0``) into the DOM; ``--dump-dom`` prints that DOM.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

_PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var out = document.createElement("pre");
  out.id = "fertool-check";
  out.textContent = JSON.stringify({
    images: imgs.length,
    broken: bad.map(function (i) { return i.alt; }),
    widths: imgs.map(function (i) { return i.naturalWidth; }),
    tables: document.querySelectorAll("table").length,
    height: document.body.scrollHeight
  });
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    """The chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: float = 120) -> str:
    exe = chromium()
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", "--user-data-dir=/tmp/fertool-chromium"]
    res = subprocess.run(base + args, capture_output=True, text=True, timeout=timeout, check=False)
    return res.stdout


def check_page(page: Path, screenshot: Path, width: int = 1200, height: int = 2000) -> dict:
    """Load ``page`` in headless Chromium: the probe's result (images, broken, widths, tables,
    height) plus ``screenshot`` (a PNG of the first ``height`` pixels) and its pixel ``std``."""
    page = Path(page).resolve()
    text = page.read_text(encoding="utf-8")
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(text.replace("</body>", _PROBE + "\n</body>"), encoding="utf-8")
    try:
        dom = _run(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()])
    finally:
        probe.unlink()
    m = re.search(r'<pre id="fertool-check">(.*?)</pre>', dom, re.DOTALL)
    if m is None:
        raise AssertionError(f"chromium did not render {page} (dom: {dom[:300]!r})")
    import html

    result = json.loads(html.unescape(m.group(1)))
    screenshot = Path(screenshot).resolve()
    screenshot.unlink(missing_ok=True)
    _run([f"--window-size={width},{height}", f"--screenshot={screenshot}", page.as_uri()])
    from PIL import Image

    img = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    result.update(screenshot=screenshot, std=float(img.std()), shape=img.shape)
    return result


def self_contained(page: Path) -> bool:
    """No script, and nothing the page would fetch (src/href to http(s) or other files)."""
    text = Path(page).read_text(encoding="utf-8")
    if "<script" in text:
        return False
    srcs = re.findall(r'\ssrc="([^"]*)"', text)
    return all(s.startswith("data:") for s in srcs) and "<link" not in text
