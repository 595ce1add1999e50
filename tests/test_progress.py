"""The one progress bar: silent off a terminal, shown when asked or when the job is slow."""

from __future__ import annotations

import io
import sys

import pytest

from convlens import _progress
from convlens._progress import batches, chunks, progress_bar


class _FakeBar:
    def __init__(self, log: list[tuple[str, object]], description: str, total: object) -> None:
        self.log = log
        log.append(("open", (description, total)))

    def __enter__(self) -> _FakeBar:
        return self

    def update(self, *, completed: float | None = None) -> None:
        self.log.append(("at", completed))

    def advance(self, n: float = 1) -> None:
        self.log.append(("advance", n))

    def close(self) -> None:
        self.log.append(("closed", None))


def test_batches_only_when_asked_or_slow_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, object]] = []
    monkeypatch.setattr(_progress, "progress_bar", lambda d, total, enabled: _FakeBar(log, d, total))
    spans = chunks(10, 3)
    assert spans == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert list(batches(spans, "never", progress=False)) == spans
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert list(batches(spans, "fast", progress=None)) == spans  # a quick job: no bar
    assert log == []
    assert list(batches(spans, "slow", progress=None, after=0.0)) == spans  # looks slow: a bar
    assert log[0] == ("open", ("slow", 4)) and log[-1] == ("closed", None)
    assert [e for e in log if e[0] == "advance"] == [("advance", 1)] * 4
    log.clear()
    it = batches(spans, "forced", progress=True)
    next(it)
    with pytest.raises(RuntimeError):  # the bar is closed when the work fails
        it.throw(RuntimeError("boom"))
    assert log[0] == ("open", ("forced", 4)) and log[-1] == ("closed", None)


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, object]] = []
    monkeypatch.setattr(_progress, "progress_bar", lambda d, total, enabled: _FakeBar(log, d, total))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert list(batches(chunks(10, 3), "slow", progress=None, after=0.0)) == chunks(10, 3)
    assert log == []


def test_disabled_bar_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("quiet", total=2, enabled=False) as bar:
        assert not bar.enabled
        bar.advance()
        bar.update(completed=2)
    captured = capsys.readouterr()
    assert captured.err == ""


def test_enabled_bar_draws_on_its_console() -> None:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    with progress_bar("drawing", total=2, enabled=True, console=console, transient=False) as bar:
        bar.advance(2)
    assert "drawing" in out.getvalue() and "2/2" in out.getvalue()
