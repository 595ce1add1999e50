"""The self-contained HTML report of a run: everything convlens knows about a model in one file.

>>> html = build_report(load_run("convlens-demo/run"))             # doctest: +SKIP
>>> write_report(load_run("convlens-demo/run"), "report.html")    # doctest: +SKIP

Images are inlined as ``data:`` URIs and nothing points outside the file, so it opens
from ``file://``, can be mailed, and prints. The same inputs give the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from convlens.report.html import GENERATOR, Part, render
from convlens.report.sections import SECTIONS, ReportContext, Section, register

if TYPE_CHECKING:
    from convlens.models.handle import ModelHandle
    from convlens.models.run import Run

__all__ = ["SECTIONS", "ReportContext", "Section", "build_report", "check_report_out", "register", "write_report"]

#: The heatmap methods the report shows by default (one gradient CAM, one perturbation
#: method, one gradient of the input).
DEFAULT_METHODS = ("gradcam", "scorecam", "saliency")


def _handle(source: Run | ModelHandle) -> ModelHandle:
    from convlens.models.handle import ModelHandle

    return source if isinstance(source, ModelHandle) else ModelHandle.from_run(source)


def build_report(source: Run | ModelHandle, *, compare: Run | ModelHandle | None = None,
                 data_dir: str | os.PathLike[str] | None = None, digits: Sequence[int | str] = (7,),
                 methods: Sequence[str] = DEFAULT_METHODS, sections: Sequence[str] | None = None) -> str:
    """The report of ``source`` as HTML text: the registered sections (or those keyed in
    ``sections``) that have data, for the first test example of each of ``digits``."""
    from convlens import views
    from convlens.explain import get_method

    handle = _handle(source)
    chosen = [views.choose_input(handle, digit=d, data_dir=data_dir) for d in digits]
    names = [get_method(m).name for m in methods]  # unknown names: one line naming the nearest
    ctx = ReportContext(handle, chosen, _handle(compare) if compare is not None else None, data_dir, names)
    parts = [Part(s.key, s.title, s.build(ctx)) for s in SECTIONS
             if (sections is None or s.key in sections) and s.available(ctx)]
    where = f"run {handle.path.name}" if handle.path is not None else handle.name
    subtitle = (f"What convlens shows about {handle.name} ({where})"
                + (f", compared with {ctx.compare.name}" if ctx.compare is not None else "")
                + ". Every figure has a caption and a text description generated from the numbers it shows.")
    return render(f"convlens report: {handle.name}", subtitle, parts)


def check_report_out(out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Before the work: ``out`` can be written, and is either new or (with ``overwrite``)
    an earlier convlens report; a file convlens did not write is never replaced."""
    from convlens._atomic import ensure_writable
    from convlens.errors import OutputError

    p = Path(out)
    ensure_writable(p.parent if str(p.parent) else Path("."))
    if p.exists() or p.is_symlink():
        if p.is_symlink() or not p.is_file():
            raise OutputError(f"{p} exists and is not a file; choose another --out")
        with p.open("rb") as fh:
            head = fh.read(4096)
        if f'<meta name="generator" content="{GENERATOR}">'.encode() not in head:
            raise OutputError(f"{p} is not a report convlens wrote, so it is never replaced; choose another --out")
        if not overwrite:
            raise OutputError(f"{p} already exists; add --force to replace it, or choose another --out")
    return p


def write_report(source: Run | ModelHandle, out: str | os.PathLike[str] = "report.html", *,
                 overwrite: bool = False, compare: Run | ModelHandle | None = None,
                 data_dir: str | os.PathLike[str] | None = None, digits: Sequence[int | str] = (7,),
                 methods: Sequence[str] = DEFAULT_METHODS) -> Path:
    """Build the report (:func:`build_report`) and write it to ``out`` atomically, under
    the output policy of :func:`check_report_out`."""
    from convlens._atomic import write_text_atomic

    p = check_report_out(out, overwrite=overwrite)
    text = build_report(source, compare=compare, data_dir=data_dir, digits=digits, methods=methods)
    check_report_out(p, overwrite=overwrite)  # nothing foreign appeared while it was built
    write_text_atomic(p, text)
    return p
