"""The building blocks of the self-contained report: figures inlined as ``data:`` URIs,
tables, the table of contents, and one stylesheet (screen and print).

Everything is deterministic: the same blocks give the same bytes (PNG images carry no
date, attributes and rows come in a fixed order), and nothing points outside the file.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from convlens.viz.figure import Explained

#: Marks a file as a convlens report: ``--force`` replaces only files that carry it.
GENERATOR = "convlens report"

CSS = """
:root{color-scheme:light}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:62rem;margin:0 auto;padding:1rem;
color:#1a1a1a;background:#fff;line-height:1.5}
a{color:#0b5394}
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.25rem}
header{border-bottom:2px solid #0b5394;margin-bottom:1rem}
nav ol{columns:2;padding-left:1.5rem}
section{margin:2rem 0}
figure{margin:1.5rem 0;padding:.75rem;border:1px solid #bbb;border-radius:6px;break-inside:avoid}
img{max-width:100%;height:auto;display:block}
figcaption{margin-top:.5rem}
details{margin-top:.4rem;color:#333}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem;break-inside:avoid}
caption{text-align:left;font-weight:600;padding:.25rem 0}
th,td{border:1px solid #bbb;padding:.2rem .5rem;text-align:right}
th[scope=row],td.text,th.text{text-align:left}
thead th{background:#eef3f8}
.note{color:#333;font-size:.95rem}
@media print{
 body{max-width:none;padding:0;font-size:10pt}
 nav,.skip{display:none}
 a{color:#000;text-decoration:none}
 section{break-before:auto}
 h2{break-after:avoid}
 figure{border:none;padding:0}
}
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


@dataclass
class Figure:
    """A figure of the report: drawn once, inlined as a PNG."""

    explained: Explained
    heading: str = ""
    dpi: int = 100


@dataclass
class Table:
    """A table: ``header`` cells, then rows; the first cell of each row names it."""

    caption: str
    header: Sequence[str]
    rows: Sequence[Sequence[object]]


@dataclass
class Text:
    paragraphs: Sequence[str]


@dataclass
class PngFigure:
    """A figure written earlier (PNG bytes with its caption and alt text)."""

    png: bytes
    caption: str
    alt: str
    heading: str = ""


Block = Figure | Table | Text | PngFigure


@dataclass
class Part:
    """One section of the report, as laid out: an id for the table of contents, a title, blocks."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(number: int, png: bytes, heading: str, caption: str, alt: str) -> str:
    label = f"Figure {number}"
    return "\n".join([
        f'<figure id="figure-{number}" aria-labelledby="figure-{number}-caption">',
        f"<h3>{esc(label)}{': ' + esc(heading) if heading else ''}</h3>",
        f'<img src="{_png_uri(png)}" alt="{esc(alt)}">',
        f'<figcaption id="figure-{number}-caption"><strong>{esc(label)}.</strong> {esc(caption)}</figcaption>',
        f"<details><summary>Text description of {esc(label)}</summary><p>{esc(alt)}</p></details>",
        "</figure>",
    ])


def _table(t: Table) -> str:
    head = "".join(f'<th scope="col"{" class=text" if n == 0 else ""}>{esc(h)}</th>' for n, h in enumerate(t.header))
    body = []
    for row in t.rows:
        cells = [f'<th scope="row">{esc(row[0])}</th>', *(f"<td>{esc(c)}</td>" for c in row[1:])]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join([f"<table><caption>{esc(t.caption)}</caption>", f"<thead><tr>{head}</tr></thead>",
                      "<tbody>", *body, "</tbody></table>"])


def render(title: str, subtitle: str, parts: Sequence[Part]) -> str:
    """The whole report as one HTML document (figures numbered in page order)."""
    out = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="{GENERATOR}">',
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        '<a class="skip" href="#content">Skip to the report</a>',
        "<header>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">{esc(subtitle)}</p>',
        "</header>",
        '<nav aria-label="Table of contents"><h2>Contents</h2><ol>',
        *(f'<li><a href="#{esc(p.id)}">{esc(p.title)}</a></li>' for p in parts),
        "</ol></nav>",
        '<main id="content">',
    ]
    number = 0
    for part in parts:
        out += [f'<section id="{esc(part.id)}" aria-labelledby="{esc(part.id)}-title">',
                f'<h2 id="{esc(part.id)}-title">{esc(part.title)}</h2>']
        for block in part.blocks:
            if isinstance(block, Text):
                out += [f"<p>{esc(p)}</p>" for p in block.paragraphs]
            elif isinstance(block, Table):
                out.append(_table(block))
            elif isinstance(block, Figure):
                number += 1
                fig = block.explained
                out.append(_figure(number, fig.png_bytes(block.dpi), block.heading, fig.caption, fig.alt))
            else:
                number += 1
                out.append(_figure(number, block.png, block.heading, block.caption, block.alt))
        out.append("</section>")
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)
