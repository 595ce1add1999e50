"""Training callbacks: the rich progress bar."""

from __future__ import annotations

from typing import Any, Protocol


class Callback(Protocol):
    def on_start(self, total_steps: int, steps_per_epoch: int) -> None: ...
    def on_step(self, step: int, stats: dict[str, float]) -> None: ...
    def on_epoch(self, record: dict[str, Any]) -> None: ...
    def on_end(self) -> None: ...


class RichProgress:
    """A rich progress bar with loss, accuracy and images/s."""

    def __init__(self, description: str = "training", console: Any = None) -> None:
        self.description = description
        self.console = console
        self._progress: Any = None
        self._task: Any = None

    def on_start(self, total_steps: int, steps_per_epoch: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("acc {task.fields[acc]:.1%}"),
            TextColumn("{task.fields[ips]:,.0f} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.description, total=total_steps, epoch=1, loss=float("nan"), acc=0.0, ips=0.0
        )

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, **stats)

    def on_epoch(self, record: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.console.print(
                f"epoch {record['epoch']:g}: train loss {record['train_loss']:.4f}, "
                f"test loss {record['test_loss']:.4f}, test accuracy {record['test_accuracy']:.2%}"
            )

    def on_end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
