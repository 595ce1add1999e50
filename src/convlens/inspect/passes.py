"""Dataset-scale passes: stream inputs through a model, reduce each layer's output in place.

A pass runs the model in eval mode without gradients over batches of inputs and hands each
chosen layer's output, as it is computed, to *reducers* (running statistics, a running
top-k, a writer to disk). Nothing is kept per input beyond what the reducers keep, so
memory is bounded by one batch's activations plus the reducers' state, whatever the size
of the dataset.

Inputs can be an :class:`convlens.data.ImageDataset` (its ``batches``), a float tensor
``(N, C, H, W)`` of model inputs, or any iterable of batches (tensors, or ``(x, y, ...)``
tuples whose first element is the input), e.g. a ``DataLoader``.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from torch import Tensor, nn

from convlens.errors import ConfigError, DataError, positive_int
from convlens.inspect._state import device_and_dtype, evaluating
from convlens.inspect.capture import CaptureError, observe, resolve_layers

__all__ = ["Reducer", "count_inputs", "iter_inputs", "run_pass"]

#: What the dataset passes accept as data.
Data = Any


class Reducer(Protocol):
    """Receives each chosen layer's output during a pass."""

    def update(self, key: str, value: Tensor, offset: int, x: Tensor) -> None:
        """``value`` is the live output (do not keep or modify it) for inputs
        ``offset .. offset + len(value) - 1``; ``x`` is that batch of model inputs."""


def count_inputs(data: Data) -> int | None:
    """How many inputs ``data`` holds, if it can say."""
    if isinstance(data, Tensor):
        return int(data.shape[0])
    try:
        n = len(data)
    except TypeError:
        return None
    return int(n) if hasattr(data, "batches") else None


def iter_inputs(data: Data, batch_size: int = 256) -> Iterator[Tensor]:
    """Model-input batches from a dataset, a tensor or an iterable of batches."""
    batch_size = positive_int("batch_size", batch_size)
    if hasattr(data, "batches") and callable(data.batches):
        for batch in data.batches(batch_size):
            yield batch[0] if isinstance(batch, (tuple, list)) else batch
        return
    if isinstance(data, Tensor):
        if not data.is_floating_point():
            raise DataError(
                f"input tensor has dtype {data.dtype}; pass float model inputs (normalise "
                "uint8 images first, e.g. with dataset.normalise(images))"
            )
        for start in range(0, data.shape[0], batch_size):
            yield data[start:start + batch_size]
        return
    if not isinstance(data, Iterable):
        raise ConfigError(
            f"cannot stream {type(data).__name__}: pass an ImageDataset, a float tensor "
            "(N, C, H, W) or an iterable of batches"
        )
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, Tensor):
            raise ConfigError(f"a batch holds a {type(x).__name__}, not a tensor of model inputs")
        yield x


def _progress(enabled: bool | None, description: str, total: int | None) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if enabled is None:
        enabled = sys.stderr.isatty()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )
    task = progress.add_task(description, total=total)
    return progress, task


def run_pass(
    model: nn.Module,
    data: Data,
    layers: str | Sequence[str],
    reducers: Sequence[Reducer],
    *,
    batch_size: int = 256,
    progress: bool | None = None,
    description: str = "inputs",
    before: Callable[[Tensor], None] | None = None,
) -> tuple[int, dict[str, tuple[int, ...]]]:
    """Stream ``data`` through ``model`` once; every reducer sees every chosen layer output.

    A module that runs several times per forward pass (a shared module) is reported
    under ``name#1``, ``name#2``, ... (one key per call); otherwise under its name. Returns
    the number of inputs and the per-sample output shape under each key. ``before`` is
    called with the first batch before any hook is in place (to prepare what the reducers
    need, e.g. receptive fields, without the reducers seeing that work).
    """
    names = list(resolve_layers(model, layers))
    device, dtype = device_and_dtype(model)
    offset = 0
    current: list[Tensor] = []
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    repeated: set[str] = set()

    def on_value(name: str, value: Any) -> None:
        if not isinstance(value, Tensor):
            raise CaptureError(f"layer {name!r} returns a {type(value).__name__}, not a tensor; choose a layer with a tensor output")
        i = calls.get(name, 0)
        calls[name] = i + 1
        key = f"{name}#{i + 1}" if name in repeated else name
        shapes.setdefault(key, tuple(value.shape[1:]))
        for r in reducers:
            r.update(key, value, offset, current[0])

    def count(name: str, value: Any) -> None:
        calls[name] = calls.get(name, 0) + 1

    batches = iter_inputs(data, batch_size)
    total = count_inputs(data)
    bar, task = _progress(progress, description, total)
    with evaluating(model), bar:
        first = next(batches, None)
        if first is None:
            raise DataError("no inputs to stream: the data is empty")
        first = first.to(device=device, dtype=dtype if first.is_floating_point() else None)
        if before is not None:
            before(first)
        # one sample first, to learn which modules run more than once per forward pass
        with observe(model, names, count):
            model(first[:1])
        repeated.update(n for n, c in calls.items() if c > 1)
        with observe(model, names, on_value):
            for x in itertools.chain([first], batches):
                x = x.to(device=device, dtype=dtype if x.is_floating_point() else None)
                current[:] = [x]
                calls.clear()
                model(x)
                offset += x.shape[0]
                bar.update(task, advance=x.shape[0])
    return offset, shapes
