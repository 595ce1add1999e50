"""Dataset-scale passes: stream inputs through a model, reduce each layer's output in place.

A pass runs the model in eval mode without gradients over batches of inputs and hands each
chosen layer's output, as it is computed, to *reducers* (running statistics, a running
top-k, a writer to disk). Nothing is kept per input beyond what the reducers keep, so
memory is bounded by one batch's activations plus the reducers' state, whatever the size
of the dataset.

Inputs can be an :class:`convlens.data.ImageDataset` (its ``batches``), a float tensor
``(N, C, H, W)`` of model inputs, or any iterable of batches (tensors, or ``(x, y, ...)``
tuples whose first element is the input), e.g. a ``DataLoader``.

:func:`stream` is the pass itself; :func:`convlens.inspect.channel_stats`,
:func:`convlens.inspect.topk_examples` and :func:`convlens.inspect.dump_activations`
are streams with their reducers. A reducer of one's own:

>>> import torch
>>> from torch import nn
>>> class Peak:
...     def __init__(self):
...         self.peak = float("-inf")
...     def update(self, key, value, offset, x):
...         self.peak = max(self.peak, value.amax().item())
>>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
>>> peak = Peak()
>>> n, shapes = stream(model, torch.randn(10, 1, 6, 6), ["1"], [peak], batch_size=4, progress=False)
>>> n, shapes, peak.peak >= 0
(10, {'1': (2, 4, 4)}, True)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from convlens._progress import progress_bar
from convlens.errors import ConfigError, DataError, positive_int
from convlens.inspect._state import device_and_dtype, evaluating
from convlens.inspect.capture import CaptureError, observe, resolve_layers

__all__ = ["Data", "HasBatches", "Reducer", "count_inputs", "iter_inputs", "stream"]

#: One batch of an iterable: model inputs, or a ``(x, y, ...)`` tuple or list with ``x`` first.
Batch = Tensor | Sequence[object]


@runtime_checkable
class HasBatches(Protocol):
    """A dataset that batches itself, like :class:`convlens.data.ImageDataset`."""

    def batches(self, batch_size: int) -> Iterable[Batch]: ...


#: What the dataset passes accept as data.
Data = HasBatches | Tensor | Iterable[Batch]


class Reducer(Protocol):
    """Receives each chosen layer's output during a pass."""

    def update(self, key: str, value: Tensor, offset: int, x: Tensor) -> None:
        """``value`` is the live output (do not keep or modify it) for inputs
        ``offset .. offset + len(value) - 1``; ``x`` is that batch of model inputs."""


def _model_input(batch: Batch) -> Tensor:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, Tensor):
        raise ConfigError(f"a batch holds a {type(x).__name__}, not a tensor of model inputs")
    return x


def count_inputs(data: Data) -> int | None:
    """How many inputs ``data`` holds, if it can say."""
    if isinstance(data, Tensor):
        return int(data.shape[0])
    if isinstance(data, HasBatches) and isinstance(data, Sized):
        return len(data)
    return None  # an iterable's length may count batches, not inputs


def iter_inputs(data: Data, batch_size: int = 256) -> Iterator[Tensor]:
    """Model-input batches from a dataset, a tensor or an iterable of batches."""
    batch_size = positive_int("batch_size", batch_size)
    if isinstance(data, HasBatches) and callable(data.batches):
        for batch in data.batches(batch_size):
            yield _model_input(batch)
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
        yield _model_input(batch)


def stream(
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

    def on_value(name: str, value: object) -> None:
        if not isinstance(value, Tensor):
            raise CaptureError(f"layer {name!r} returns a {type(value).__name__}, not a tensor; choose a layer with a tensor output")
        i = calls.get(name, 0)
        calls[name] = i + 1
        key = f"{name}#{i + 1}" if name in repeated else name
        shapes.setdefault(key, tuple(value.shape[1:]))
        for r in reducers:
            r.update(key, value, offset, current[0])

    def count(name: str, value: object) -> None:
        calls[name] = calls.get(name, 0) + 1

    batches = iter_inputs(data, batch_size)
    total = count_inputs(data)
    with evaluating(model), progress_bar(description, total, enabled=progress) as bar:
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
                bar.advance(x.shape[0])
    return offset, shapes
