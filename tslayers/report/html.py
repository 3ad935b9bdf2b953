"""The report as one self-contained HTML file: the markdown the report writes (headings,
paragraphs, lists, tables, images, bold/italic/code) converted here, figures inlined as base64,
so the file can be mailed or opened anywhere without its folder."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1180px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #eee; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px;
        font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; }
tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0 .2em; }
code { background: #f2f2f2; padding: 0 .25em; border-radius: 3px; font-size: 90%; }
em { color: #555; }
"""
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")


def _inline(text: str) -> str:
    """Escape, then render `code`, **bold** and *italic* (code spans are left alone)."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", part)
        out.append(part)
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(x) for x in lines[2:]]
    rows = ["<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _image(alt: str, src: str, folder: Path) -> str:
    path = folder / src
    if not path.is_file():
        return f"<p>[missing figure {html.escape(src)}]</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _blocks(text: str) -> list[list[str]]:
    """Split markdown into blocks: runs of table rows, of list items, or of other lines."""
    blocks: list[list[str]] = []
    kind = None
    for line in text.splitlines():
        k = None if not line.strip() else "table" if line.startswith("|") else \
            "list" if line.startswith("- ") else "head" if line.startswith("#") else "text"
        if k is None:
            kind = None
            continue
        if k != kind or k == "head":
            blocks.append([])
        blocks[-1].append(line)
        kind = k
    return blocks


def markdown_to_html(text: str, folder: Path) -> str:
    """Convert the report's markdown; images are read from ``folder`` and inlined; the first
    heading is the page title."""
    body = []
    heads = [x.lstrip("#").strip() for x in text.splitlines() if x.startswith("# ")]
    title = heads[0] if heads else "tslayers report"
    for block in _blocks(text):
        first = block[0]
        if first.startswith("#"):
            level = min(len(first) - len(first.lstrip("#")), 4)
            body.append(f"<h{level}>{_inline(first[level:].strip())}</h{level}>")
        elif first.startswith("|"):
            body.append(_table(block))
        elif first.startswith("- "):
            body.append("<ul>" + "".join(f"<li>{_inline(x[2:])}</li>" for x in block) + "</ul>")
        elif len(block) == 1 and _IMAGE.match(first):
            body.append(_image(*_IMAGE.match(first).groups(), folder))
        else:
            body.append(f"<p>{_inline(' '.join(block))}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
