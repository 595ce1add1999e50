"""The one progress bar of convlens: rich on a terminal, silent everywhere else.

Every long job (dataset passes, perturbation methods, faithfulness, drawing many figures,
training) reports through :func:`progress_bar` or :func:`batches`. The bar writes to
stderr and only when stderr is a terminal (``enabled=None``), so a server, a notebook
log or a CI job that uses the library gets no clipped bar lines; ``enabled=True`` forces
it, ``False`` turns it off.

>>> with progress_bar("work", total=3, enabled=False) as bar:
...     for _ in range(3):
...         bar.advance()
>>> list(batches(chunks(5, 2), "work", progress=False))
[(0, 2), (2, 4), (4, 5)]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

#: With ``progress=None``, :func:`batches` shows a bar when the job looks longer than this.
SLOW_SECONDS = 2.0


class Bar:
    """One task on a rich progress display (or nothing, when disabled)."""

    def __init__(self, description: str, total: float | None, enabled: bool | None,
                 fields: dict[str, Any] | None = None, columns: Sequence[Any] = (),
                 transient: bool = True, console: Any = None) -> None:
        self._progress: Any = None
        self._task: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty() if console is None else bool(getattr(console, "is_terminal", False))
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        cols = columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn())
        self._progress = Progress(*cols, console=console or Console(stderr=True), transient=transient)
        self._task = self._progress.add_task(description, total=total, **(fields or {}))

    @property
    def enabled(self) -> bool:
        return self._progress is not None

    def __enter__(self) -> Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n)

    def update(self, *, completed: float | None = None, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, **fields)

    def print(self, text: str) -> None:
        """A line above the bar (or on stdout when there is no bar)."""
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def progress_bar(description: str, total: float | None = None, enabled: bool | None = None, **kwargs: Any) -> Bar:
    """A :class:`Bar` to use as a context manager: ``bar.advance(n)`` as work is done."""
    return Bar(description, total, enabled, **kwargs)


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(total)`` in pieces of at most ``size``."""
    return [(i, min(i + size, total)) for i in range(0, total, size)]


def batches(
    spans: list[tuple[int, int]],
    description: str,
    progress: bool | None = None,
    *,
    after: float = SLOW_SECONDS,
) -> Iterator[tuple[int, int]]:
    """Yield ``spans``; show a bar if asked (``True``), or (``None``) on a terminal once the
    job looks longer than ``after`` seconds."""
    if progress is False or (progress is None and (len(spans) <= 1 or not sys.stderr.isatty())):
        yield from spans
        return
    bar: Bar | None = progress_bar(description, len(spans), True) if progress else None
    start = time.perf_counter()
    try:
        if bar is not None:
            bar.__enter__()
        for i, span in enumerate(spans):
            yield span
            if bar is None and (time.perf_counter() - start) / (i + 1) * len(spans) > after:
                bar = progress_bar(description, len(spans), True).__enter__()
                bar.update(completed=i)
            if bar is not None:
                bar.advance()
    finally:
        if bar is not None:
            bar.close()
