"""A progress bar that appears only when the work is slow.

Perturbation methods and the faithfulness metrics run many batches. A bar for a job that
ends in a blink is noise, so :func:`batches` times the first batch and opens a rich
progress bar (on stderr, removed when done) only if the whole job looks like it will take
longer than ``after`` seconds. ``progress=True`` always shows it, ``False`` never does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

#: Show the bar when the estimated total time exceeds this many seconds.
SLOW_SECONDS = 2.0


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
    """Yield ``spans``, showing a progress bar if asked (``True``) or if slow (``None``)."""
    if progress is False or (len(spans) <= 1 and progress is None):
        yield from spans
        return
    bar: Any = None
    task: Any = None
    start = time.perf_counter()
    try:
        if progress is True:
            bar, task = _open(description, len(spans))
        for i, span in enumerate(spans):
            yield span
            if bar is None and (time.perf_counter() - start) / (i + 1) * len(spans) > after:
                bar, task = _open(description, len(spans))
            if bar is not None:
                bar.update(task, completed=i + 1)
    finally:
        if bar is not None:
            bar.stop()


def _open(description: str, total: int) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    bar.start()
    return bar, bar.add_task(description, total=total)
