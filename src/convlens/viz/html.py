"""A small, accessible HTML page that shows figures with their captions and alt texts."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Entry:
    """One figure on the page: the PNG/SVG file names relative to the page, and its words.

    ``label`` ("Figure 1a") names the figure in its heading and its caption alike; by
    default figures are numbered in page order ("Figure 3" for the third).
    """

    heading: str
    png: str
    svg: str
    caption: str
    alt: str
    label: str = ""


def render_page(title: str, intro: Sequence[str], entries: Sequence[Entry]) -> str:
    """HTML for ``entries``: each an ``<img alt>`` in a ``<figure>`` with a ``<figcaption>``."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title>",
        "<style>",
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
        "color:#1a1a1a;background:#fff;line-height:1.5}",
        "figure{margin:2rem 0;padding:1rem;border:1px solid #ccc;border-radius:6px}",
        "img{max-width:100%;height:auto}",
        "figcaption{margin-top:.5rem}",
        "details{margin-top:.5rem;color:#333}",
        "a{color:#0b5394}",
        "</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{e(title)}</h1>",
    ]
    parts += [f"<p>{e(p)}</p>" for p in intro]
    for n, entry in enumerate(entries, start=1):
        label = entry.label or f"Figure {n}"
        parts += [
            "<figure>",
            f"<h2>{e(label)}: {e(entry.heading)}</h2>",
            f'<img src="{e(entry.png)}" alt="{e(entry.alt)}">',
            f"<figcaption><strong>{e(label)}.</strong> {e(entry.caption)} "
            f'(<a href="{e(entry.svg)}">SVG</a>)</figcaption>',
            f"<details><summary>Text description</summary><p>{e(entry.alt)}</p></details>",
            "</figure>",
        ]
    parts += ["</main>", "</body>", "</html>", ""]
    return "\n".join(parts)
