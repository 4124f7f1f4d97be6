"""fertool's Markdown reports as one self-contained HTML page each.

::

    from fertool.evaluate.html import write_html

    write_html("runs/movie0/report.md")        # -> runs/movie0/report.html

The reports are Markdown that fertool itself generates, so a small subset is enough: ATX
headings, pipe tables (with ``:--:`` alignment), images, links, bullet and numbered lists
(nested by indentation), fenced code blocks, block quotes, rules, paragraphs, and inline code,
bold and italics. Every piece of text is HTML-escaped (file names are user data). Images are read
from the report's folder and inlined as ``data:`` URIs, so the page needs no network, no other
file and no JavaScript; an image that cannot be read shows as a visible note instead. A link to
another report (``compare/report.md``) points to its HTML twin when that exists.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

__all__ = ["markdown_to_html", "write_html"]

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#1d1d1f;background:#fff}
h1,h2,h3,h4{line-height:1.2;margin:1.3em 0 .5em}h1{font-size:1.7em}h2{font-size:1.35em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .6em;vertical-align:top}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}
code{font:.9em ui-monospace,Menlo,Consolas,monospace;background:#f3f3f3;padding:.05em .25em;
border-radius:3px}pre{background:#f6f6f6;padding:.7em;overflow-x:auto;border-radius:4px}
pre code{background:none;padding:0}img{max-width:100%;height:auto}
blockquote{margin:.8em 0;padding:.1em 1em;border-left:4px solid #ccc;color:#555}
.missing{color:#b00;font-style:italic}
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


class _Inliner:
    """Inline Markdown (code, images, links, bold, italics) to HTML, escaping the text."""

    _TOKEN = re.compile(
        r"(?P<code>`+)(?P<code_text>.+?)(?P=code)"
        r"|!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)(?:\s+\"[^\"]*\")?\)"
        r"|\[(?P<text>[^\]]+)\]\((?P<href>[^)\s]+)\)"
        r"|\*\*(?P<bold>.+?)\*\*"
        r"|(?<![\w*])\*(?P<em>[^*\s][^*]*?)\*(?!\w)"
        r"|(?<![\w_])_(?P<em2>[^_\s][^_]*?)_(?![\w])"
    )

    def __init__(self, base: Path | None):
        self.base = base
        self.images: list[tuple[str, bool]] = []

    def __call__(self, text: str) -> str:
        out, pos = [], 0
        for m in self._TOKEN.finditer(text):
            out.append(_esc(text[pos : m.start()]))
            pos = m.end()
            if m.group("code") is not None:
                out.append(f"<code>{_esc(m.group('code_text').strip())}</code>")
            elif m.group("src") is not None:
                out.append(self.image(m.group("alt"), m.group("src")))
            elif m.group("href") is not None:
                href = _esc(self.href(m.group("href")))
                out.append(f'<a href="{href}">{self(m.group("text"))}</a>')
            elif m.group("bold") is not None:
                out.append(f"<strong>{self(m.group('bold'))}</strong>")
            else:
                out.append(f"<em>{self(m.group('em') or m.group('em2'))}</em>")
        out.append(_esc(text[pos:]))
        return "".join(out)

    def _local(self, ref: str) -> Path | None:
        url = re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.IGNORECASE)
        if self.base is None or url or ref.startswith("#"):
            return None
        from urllib.parse import unquote

        return self.base / unquote(ref)

    def image(self, alt: str, src: str) -> str:
        path = self._local(src)
        mime = _MIME.get(Path(src).suffix.lower())
        if path is not None and mime is not None:
            try:
                data = base64.b64encode(path.read_bytes()).decode("ascii")
            except OSError as exc:
                self.images.append((src, False))
                why = exc.strerror or type(exc).__name__
                return f'<span class="missing">[image {_esc(src)}: {_esc(why)}]</span>'
            self.images.append((src, True))
            return f'<img src="data:{mime};base64,{data}" alt="{_esc(alt)}">'
        self.images.append((src, False))
        return f'<span class="missing">[image {_esc(src)} not inlined]</span>'

    def href(self, ref: str) -> str:
        path = self._local(ref)
        md = path is not None and path.suffix.lower() == ".md"
        if md and path.with_suffix(".html").is_file():
            return ref[: -len(path.suffix)] + ".html"
        return ref


_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_LIST = re.compile(r"^(?P<indent>\s*)(?P<mark>[-*+]|\d+[.)])\s+(?P<text>.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line.removeprefix("|")
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def _align(sep: str) -> list[str]:
    out = []
    for c in _cells(sep):
        left, right = c.startswith(":"), c.endswith(":")
        out.append("center" if left and right else "right" if right else "left" if left else "")
    return out


def _table(lines: list[str], inline) -> str:
    head, aligns, body = _cells(lines[0]), _align(lines[1]), [_cells(x) for x in lines[2:]]

    def cell(tag, text, k):
        a = aligns[k] if k < len(aligns) else ""
        style = f' style="text-align:{a}"' if a else ""
        return f"<{tag}{style}>{inline(text)}</{tag}>"

    rows = ["<tr>" + "".join(cell("th", c, k) for k, c in enumerate(head)) + "</tr>"]
    for r in body:
        r = (r + [""] * len(head))[: max(len(head), len(r))]
        rows.append("<tr>" + "".join(cell("td", c, k) for k, c in enumerate(r)) + "</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _list(lines: list[str], inline) -> str:
    """Nested lists from lines matching :data:`_LIST` (other lines continue the item above)."""
    items: list[list] = []  # [depth, tag, text]
    for line in lines:
        m = _LIST.match(line)
        if m is None:
            items[-1][2] += " " + line.strip()
            continue
        tag = "ol" if m.group("mark")[0].isdigit() else "ul"
        items.append([len(m.group("indent").expandtabs(4)), tag, m.group("text")])

    def render(k: int, depth: int) -> tuple[str, int]:
        tag = items[k][1]
        parts = [f"<{tag}>"]
        while k < len(items) and items[k][0] >= depth:
            if items[k][0] > depth and len(parts) > 1:
                sub, k = render(k, items[k][0])
                parts[-1] = parts[-1][: -len("</li>")] + sub + "</li>"
                continue
            parts.append(f"<li>{inline(items[k][2])}</li>")
            k += 1
        return "".join(parts) + f"</{tag}>", k

    out, k = [], 0
    while k < len(items):
        block, k = render(k, items[k][0])
        out.append(block)
    return "\n".join(out)


def markdown_to_html(text: str, base: str | os.PathLike | None = None, title: str | None = None):
    """A complete HTML document for Markdown ``text``; images relative to ``base`` are inlined.

    Returns
    -------
    (str, list of (str, bool))
        The page and, for every image reference, whether it was inlined.
    """
    inline = _Inliner(Path(base) if base is not None else None)
    lines = text.replace("\r\n", "\n").split("\n")
    blocks: list[str] = []
    i, n = 0, len(lines)
    para: list[str] = []

    def end_para():
        if para:
            blocks.append("<p>" + "<br>\n".join(inline(x.strip()) for x in _joined(para)) + "</p>")
            para.clear()

    while i < n:
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            end_para()
            fence = stripped[:3]
            j = i + 1
            while j < n and not lines[j].strip().startswith(fence):
                j += 1
            blocks.append("<pre><code>" + _esc("\n".join(lines[i + 1 : j])) + "</code></pre>")
            i = j + 1
            continue
        if not stripped:
            end_para()
            i += 1
            continue
        m = _HEADING.match(line)
        if m:
            end_para()
            level = len(m.group(1))
            title = title or m.group(2)
            blocks.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
            i += 1
            continue
        if re.match(r"^\s*([-*_])(\s*\1){2,}\s*$", line):
            end_para()
            blocks.append("<hr>")
            i += 1
            continue
        if "|" in line and i + 1 < n and _TABLE_SEP.match(lines[i + 1]):
            end_para()
            j = i + 2
            while j < n and lines[j].strip() and "|" in lines[j]:
                j += 1
            blocks.append(_table(lines[i:j], inline))
            i = j
            continue
        if stripped.startswith(">"):
            end_para()
            j = i
            quoted = []
            while j < n and lines[j].strip().startswith(">"):
                quoted.append(re.sub(r"^\s*>\s?", "", lines[j]))
                j += 1
            inner, _ = markdown_to_html("\n".join(quoted), inline.base)
            body = inner.split("<body>\n", 1)[1].rsplit("\n</body>", 1)[0]
            blocks.append(f"<blockquote>{body}</blockquote>")
            i = j
            continue
        if _LIST.match(line) and not para:
            j = i
            items = []
            while j < n and lines[j].strip() and (_LIST.match(lines[j]) or lines[j][:1] in " \t"):
                items.append(lines[j])
                j += 1
            blocks.append(_list(items, inline))
            i = j
            continue
        para.append(line)
        i += 1
    end_para()
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(_plain(title or 'fertool report'))}</title>\n<style>{CSS}</style>\n"
        "</head>\n<body>\n" + "\n".join(blocks) + "\n</body>\n</html>\n"
    )
    return page, inline.images


def _joined(lines: list[str]) -> list[str]:
    """Paragraph lines: a line ending in two spaces or a backslash breaks; others join."""
    out, cur = [], []
    for x in lines:
        hard = x.endswith(("  ", "\\"))
        cur.append(x.rstrip(" \\") if hard else x.strip())
        if hard:
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def _plain(text: str) -> str:
    return re.sub(r"[`*_]|!?\[([^\]]*)\]\([^)]*\)", r"\1", text)


def write_html(md_path: str | os.PathLike, html_path: str | os.PathLike | None = None) -> Path:
    """Write the HTML twin of the Markdown report ``md_path`` (default: same name, ``.html``),
    atomically; images are read relative to the report's folder."""
    from fertool.core.io import write_text

    md_path = Path(md_path)
    target = Path(html_path) if html_path is not None else md_path.with_suffix(".html")
    page, _ = markdown_to_html(md_path.read_text(encoding="utf-8"), md_path.parent)
    return write_text(target, page)
