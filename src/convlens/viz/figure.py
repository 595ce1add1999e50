"""A figure that explains itself, and how it is written to disk."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from convlens._atomic import CHOOSE_OUT, ensure_writable, existing, refuse_existing, write_files
from convlens.errors import OutputError


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


def figure_stem(kind: str, *parts: object) -> str:
    """The file stem of a figure: ``kind`` and what distinguishes it, joined by ``-``.

    Every command names its figures this way, so two figures differ in name whenever
    they differ in input, method, target, layer or stage. Empty parts (``None``, ``""``)
    are left out; a layer keeps its dotted name; any character outside letters, digits,
    ``. _ + =`` becomes ``-`` (``#`` of a repeated call becomes ``-call``).

    >>> figure_stem("maps", "features.4", "relu", "test-digit7")
    'maps-features.4-relu-test-digit7'
    >>> figure_stem("stats", "block#2", None)
    'stats-block-call2'
    """
    words = [kind, *(str(p) for p in parts if p is not None and str(p) != "")]
    slugs = [re.sub(r"[^A-Za-z0-9._+=]+", "-", w.replace("#", "-call")).strip("-.") for w in words]
    return "-".join(s for s in slugs if s)


def figure_files(stem: str, extra: Iterable[str] = ()) -> list[str]:
    """The names :func:`save` writes for ``stem`` (the sidecar last)."""
    return [f"{stem}.png", f"{stem}.svg", *(f"{stem}-{e}" for e in extra), f"{stem}.json"]


def check_figures(out_dir: str | Path, stems: Iterable[str], *, overwrite: bool = False,
                  extra: Iterable[str] = (), files: Iterable[str] = (), fix: str = CHOOSE_OUT) -> Path:
    """Before the work: ``out_dir`` can be written, and (unless ``overwrite``) none of the
    figures ``stems`` (with their ``extra`` files) nor any of ``files`` is there yet.
    :class:`~convlens.errors.OutputError` otherwise."""
    out = Path(out_dir)
    ensure_writable(out, fix=fix)
    if overwrite:
        return out
    extras = list(extra)
    there = [s for s in stems if existing(out, figure_files(s, extras))]
    if there:
        shown = ", ".join(str(out / f"{s}.png") for s in there[:3]) + (
            f" and {len(there) - 3} more" if len(there) > 3 else "")
        verb = "exists" if len(there) == 1 else "exist"
        raise OutputError(f"figure {shown} already {verb}; add --force to replace it (with its .svg and .json), "
                          f"or {fix}")
    refuse_existing(out, files, fix=fix)
    return out


def save(fig: Explained, out_dir: str | Path, stem: str, *, dpi: int = 120, overwrite: bool = False,
         extra: Mapping[str, bytes] | None = None, fix: str = CHOOSE_OUT) -> dict[str, Path]:
    """Write ``stem.png``, ``stem.svg`` and ``stem.json`` (caption, alt text) into ``out_dir``.

    The set is written completely or not at all (:func:`convlens._atomic.write_files`):
    everything is rendered first, and the sidecar, which lists the set's files, goes in
    last. ``extra`` adds files to the set, named ``stem-KEY`` (the faithfulness scores).
    An existing figure of that stem is replaced only with ``overwrite``; otherwise an
    :class:`~convlens.errors.OutputError` says so. Returns the paths by kind (and by
    ``extra`` key).
    """
    extra = dict(extra or {})
    names = {"png": f"{stem}.png", "svg": f"{stem}.svg", **{k: f"{stem}-{k}" for k in extra}}
    sidecar = {
        "title": fig.title,
        "caption": fig.caption,
        "alt": fig.alt,
        "png": names["png"],
        "svg": names["svg"],
        "software": "convlens",
        "files": list(names.values()),
    }
    content = {names["png"]: fig.png_bytes(dpi), names["svg"]: fig.svg_bytes(),
               **{names[k]: data for k, data in extra.items()},
               f"{stem}.json": (json.dumps(sidecar, indent=2) + "\n").encode()}
    written = write_files(out_dir, content, overwrite=overwrite, fix=fix)
    return {**{k: written[n] for k, n in names.items()}, "json": written[f"{stem}.json"]}
