"""eval/report.html: the report a person opens in a browser, one file that needs nothing else.

It is report.md rendered by markdown-it-py (already installed with rich), with every plot inlined as a
data URI: no network, no sibling files, so the page survives being mailed, attached or published.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

REPORT_HTML = "report.html"
_IMAGE = re.compile(r'src="(?P<name>[\w.-]+\.png)"')

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d1d1f; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 13px; }
th, td { border: 1px solid #d0d0d7; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f2f2f6; }
tr:nth-child(even) td { background: #fafafc; }
img { max-width: 100%; display: block; margin: 1rem 0; }
code { background: #f2f2f6; padding: 0 0.2rem; }
"""


def _inline(directory: Path, found: re.Match[str]) -> str:
    path = directory / found.group("name")
    if not path.is_file():
        return found.group(0)
    return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'


def render(markdown_text: str, directory: Path, title: str) -> str:
    from markdown_it import MarkdownIt

    # Raw HTML in the markdown stays text: model outputs are quoted in it and must not become markup.
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)
    body = _IMAGE.sub(lambda m: _inline(directory, m), body)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


def write(markdown_text: str, directory: Path, title: str) -> Path:
    path = directory / REPORT_HTML
    path.write_text(render(markdown_text, directory, title), encoding="utf-8")
    return path
