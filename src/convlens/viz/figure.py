"""A figure that explains itself, and how it is written to disk."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from convlens._atomic import write_bytes_atomic, write_text_atomic


@dataclass
class Explained:
    """A matplotlib figure with the words that describe it.

    ``caption`` is the sentence printed under the figure; ``alt`` is the text for
    readers who cannot see it (screen readers, the HTML ``alt`` attribute); ``data``
    holds the numbers the figure shows, so tests and other faces can check them.
    """

    figure: Figure
    caption: str
    alt: str
    data: dict[str, Any] = field(default_factory=dict)
    title: str = ""

    def png_bytes(self, dpi: int = 120) -> bytes:
        return _render(self, "png", dpi)

    def svg_bytes(self) -> bytes:
        return _render(self, "svg", 72)


def new_figure(width: float, height: float) -> Figure:
    """A ``Figure`` with an Agg canvas, independent of pyplot (thread safe)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _render(fig: Explained, fmt: str, dpi: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        metadata = {
            "Title": fig.title or fig.caption.split(".")[0],
            "Description": fig.caption,
            "Alt": fig.alt,
            "Software": "convlens",
        }
    else:
        metadata = {"Title": fig.title or fig.caption.split(".")[0], "Description": fig.caption}
    fig.figure.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()


def save(fig: Explained, out_dir: str | Path, stem: str, *, dpi: int = 120) -> dict[str, Path]:
    """Write ``stem.png``, ``stem.svg`` and ``stem.json`` (caption, alt text) into ``out_dir``.

    Each file is written atomically. Returns the paths by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / f"{stem}.png", "svg": out / f"{stem}.svg", "json": out / f"{stem}.json"}
    write_bytes_atomic(paths["png"], fig.png_bytes(dpi))
    write_bytes_atomic(paths["svg"], fig.svg_bytes())
    sidecar = {
        "title": fig.title,
        "caption": fig.caption,
        "alt": fig.alt,
        "png": paths["png"].name,
        "svg": paths["svg"].name,
    }
    write_text_atomic(paths["json"], json.dumps(sidecar, indent=2) + "\n")
    return paths
