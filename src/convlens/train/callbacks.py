"""Training callbacks: the progress bar with loss, accuracy and images/s.

>>> import io
>>> from rich.console import Console
>>> con = Console(file=io.StringIO())  # not a terminal: no bar, only the epoch lines
>>> bar = RichProgress("seed-cnn", console=con)
>>> bar.on_start(10, 5)
>>> bar.on_epoch({"epoch": 1, "train_loss": 0.5, "test_loss": 0.4, "test_accuracy": 0.9})
>>> bar.on_end()
>>> con.file.getvalue()
'epoch 1: train loss 0.5000, test loss 0.4000, test accuracy 90.00%\\n'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from convlens._progress import Bar, progress_bar

if TYPE_CHECKING:
    from rich.console import Console


class Callback(Protocol):
    """What the training loop calls. A callback may also define ``on_model(model, out,
    test_data)``: the loop then shows it the model it trains, the run directory and the
    test data before ``on_start`` (see :class:`convlens.train.tracking.Tracker`)."""

    def on_start(self, total_steps: int, steps_per_epoch: int) -> None: ...
    def on_step(self, step: int, stats: dict[str, float]) -> None: ...
    def on_epoch(self, record: dict[str, Any]) -> None: ...
    def on_end(self) -> None: ...


def _columns() -> tuple[Any, ...]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("acc {task.fields[acc]:.1%}"),
        TextColumn("{task.fields[ips]:,.0f} img/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


class RichProgress:
    """Training progress through :func:`convlens._progress.progress_bar`: a bar with loss,
    accuracy and images/s on a terminal, nothing elsewhere; one line per epoch always
    (on ``console``, or stdout without one)."""

    def __init__(self, description: str = "training", console: Console | None = None) -> None:
        self.description = description
        self.console = console
        self._bar: Bar | None = None

    def on_start(self, total_steps: int, steps_per_epoch: int) -> None:
        self._bar = progress_bar(
            self.description, total_steps, columns=_columns(), console=self.console, transient=False,
            fields={"epoch": 1, "loss": float("nan"), "acc": 0.0, "ips": 0.0},
        ).__enter__()

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.update(completed=step, **stats)

    def on_epoch(self, record: dict[str, Any]) -> None:
        line = (f"epoch {record['epoch']:g}: train loss {record['train_loss']:.4f}, "
                f"test loss {record['test_loss']:.4f}, test accuracy {record['test_accuracy']:.2%}")
        if self._bar is not None and self._bar.enabled:
            self._bar.print(line)
        elif self.console is not None:
            self.console.print(line, highlight=False)
        else:
            print(line)

    def on_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
