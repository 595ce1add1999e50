"""The two-model pass: stream the same inputs through two models, reduce both at once.

The sibling of :func:`convlens.inspect.passes.stream` for comparisons (CKA, filter
matching, disagreement): every batch goes through model A, then through model B, in eval
mode without gradients. A :class:`PairReducer` sees each chosen layer's output of either
model as it is computed (``update``: reduce it there, e.g. to a Gram matrix, once per
layer and batch), then, once both models have run on the batch, both models' outputs and
the batch's labels (``finish``: combine what it made, e.g. every pair of layers).
Memory is bounded by one batch's activations plus the reducers' state.

>>> import torch
>>> from torch import nn
>>> class Agree:
...     def __init__(self):
...         self.same = 0
...     def update(self, side, key, value, offset):
...         pass
...     def finish(self, offset, x, y, out_a, out_b):
...         self.same += int((out_a.argmax(1) == out_b.argmax(1)).sum())
>>> a = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
>>> agree = Agree()
>>> n, shapes = stream_pair(a, a, torch.randn(10, 1, 2, 2), ["1"], ["1"], [agree], batch_size=4, progress=False)
>>> n, shapes["a"], agree.same
(10, {'1': (3,)}, 10)
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from convlens._progress import progress_bar
from convlens.errors import ConfigError, DataError, positive_int
from convlens.inspect._state import device_and_dtype, evaluating
from convlens.inspect.capture import CaptureError, observe, resolve_layers
from convlens.inspect.passes import Data, HasBatches, count_inputs

__all__ = ["PairReducer", "Side", "iter_labelled", "stream_pair"]

#: Which of the two models a value comes from.
Side = Literal["a", "b"]


class PairReducer(Protocol):
    """Receives both models' layer outputs, batch by batch, during a two-model pass."""

    def update(self, side: Side, key: str, value: Tensor, offset: int) -> None:
        """``value`` is the live output of layer ``key`` of model ``side`` (do not keep or
        modify it) for inputs ``offset .. offset + len(value) - 1``."""

    def finish(self, offset: int, x: Tensor, y: Tensor | None, out_a: Tensor, out_b: Tensor) -> None:
        """Both models have run on batch ``x`` (labels ``y`` if the data has them);
        ``out_a`` and ``out_b`` are their outputs."""


def iter_labelled(data: Data, batch_size: int = 256) -> Iterator[tuple[Tensor, Tensor | None]]:
    """``(x, y)`` batches from a dataset, a float tensor or an iterable of batches
    (``y`` is ``None`` where the data has no labels)."""
    batch_size = positive_int("batch_size", batch_size)
    if isinstance(data, HasBatches) and callable(data.batches):
        batches = iter(data.batches(batch_size))
    elif isinstance(data, Tensor):
        if not data.is_floating_point():
            raise DataError(f"input tensor has dtype {data.dtype}; pass float model inputs (normalise uint8 "
                            "images first, e.g. with dataset.normalise(images))")
        batches = (data[i:i + batch_size] for i in range(0, data.shape[0], batch_size))
    else:
        try:
            batches = iter(data)
        except TypeError:
            raise ConfigError(f"cannot stream {type(data).__name__}: pass an ImageDataset, a float tensor "
                              "(N, C, H, W) or an iterable of batches") from None
    for batch in batches:
        x, y = (batch[0], batch[1] if len(batch) > 1 else None) if isinstance(batch, (tuple, list)) else (batch, None)
        if not isinstance(x, Tensor):
            raise ConfigError(f"a batch holds a {type(x).__name__}, not a tensor of model inputs")
        yield x, (y if isinstance(y, Tensor) else None)


def _probe(model: nn.Module, which: str, x: Tensor) -> Tensor:
    """Run one input through ``model``: a model that cannot read it is a one-line error."""
    try:
        out = model(x)
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"model {which} cannot run on inputs of shape {tuple(x.shape[1:])} ({first}); "
            "give both models data shaped like their input, e.g. (N, 1, 28, 28) for MNIST models"
        ) from None
    if not isinstance(out, Tensor):
        raise ConfigError(f"model {which} returned a {type(out).__name__}; a comparison needs a tensor of scores")
    return out


def stream_pair(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Data,
    layers_a: Sequence[str],
    layers_b: Sequence[str],
    reducers: Sequence[PairReducer],
    *,
    batch_size: int = 256,
    progress: bool | None = None,
    description: str = "comparing",
) -> tuple[int, dict[Side, dict[str, tuple[int, ...]]]]:
    """Stream ``data`` once through both models; every reducer sees every chosen layer.

    Both models read the same inputs (moved to each model's device and dtype). Layers
    are dotted names; a module that runs more than once per forward pass is refused
    (compare one call by choosing a submodule that runs once). Returns the number of
    inputs and, per side, the per-sample output shape of each layer.
    """
    sides: dict[Side, tuple[nn.Module, list[str]]] = {
        "a": (model_a, list(resolve_layers(model_a, layers_a)) if layers_a else []),
        "b": (model_b, list(resolve_layers(model_b, layers_b)) if layers_b else []),
    }
    shapes: dict[Side, dict[str, tuple[int, ...]]] = {"a": {}, "b": {}}
    offset = 0

    batches = iter_labelled(data, batch_size)
    total = count_inputs(data)
    with contextlib.ExitStack() as stack:
        for model, _ in sides.values():
            stack.enter_context(evaluating(model))
        bar = stack.enter_context(progress_bar(description, total, enabled=progress))
        first = next(batches, None)
        if first is None:
            raise DataError("no inputs to compare: the data is empty")
        placed = {s: _placed(m, first[0]) for s, (m, _) in sides.items()}
        out_a, out_b = _probe(model_a, "A", placed["a"][:1]), _probe(model_b, "B", placed["b"][:1])
        if out_a.shape[0] != 1 or out_b.shape[0] != 1:
            raise ConfigError("the models must return one row of scores per input")
        same = model_a is model_b  # one forward pass serves both sides
        taps = [_Tap({"a": sides["a"][1], "b": sides["b"][1]} if same else {"a": sides["a"][1]}, shapes, reducers,
                     lambda: offset)]
        if not same:
            taps.append(_Tap({"b": sides["b"][1]}, shapes, reducers, lambda: offset))
        for tap, model in zip(taps, (model_a, model_b), strict=False):
            if tap.names:
                stack.enter_context(observe(model, tap.names, tap))
        for x, y in itertools.chain([first], batches):
            outs = []
            for tap, model in zip(taps, (model_a, model_b), strict=False):
                tap.calls.clear()
                outs.append(model(_placed(model, x)))
            if same:
                outs.append(outs[0])
            for r in reducers:
                r.finish(offset, x, y, outs[0], outs[1])
            offset += x.shape[0]
            bar.advance(x.shape[0])
    return offset, shapes


class _Tap:
    """What the hooks of one model call: check the value, hand it to every reducer for
    each side that chose the layer (both sides when A and B are the same model)."""

    def __init__(self, chosen: dict[Side, list[str]], shapes: dict[Side, dict[str, tuple[int, ...]]],
                 reducers: Sequence[PairReducer], offset: Callable[[], int]) -> None:
        self.chosen, self.shapes, self.reducers, self.offset = chosen, shapes, reducers, offset
        self.names = list(dict.fromkeys(n for names in chosen.values() for n in names))
        self.calls: dict[str, int] = {}

    def __call__(self, name: str, value: object) -> None:
        which = " and ".join(s.upper() for s in self.chosen)
        if not isinstance(value, Tensor):
            raise CaptureError(f"layer {name!r} of model {which} returns a {type(value).__name__}, not a tensor; "
                               "choose a layer with a tensor output")
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] > 1:
            raise CaptureError(f"layer {name!r} of model {which} runs more than once per forward pass; "
                               "compare a submodule that runs once")
        offset = self.offset()
        for side, names in self.chosen.items():
            if name in names:
                self.shapes[side].setdefault(name, tuple(value.shape[1:]))
                for r in self.reducers:
                    r.update(side, name, value, offset)


def _placed(model: nn.Module, x: Tensor) -> Tensor:
    device, dtype = device_and_dtype(model)
    return x.to(device=device, dtype=dtype if x.is_floating_point() else None)


def check_labels(y: Tensor | None, n: int) -> Tensor:
    """Labels of one batch as int64 on the CPU, or a one-line error when the data has none."""
    if y is None:
        raise DataError("the data has no labels; pass an ImageDataset or (x, y) batches to score predictions")
    if y.dim() != 1 or y.shape[0] != n:
        raise DataError(f"labels of shape {tuple(y.shape)} do not match a batch of {n} inputs")
    return y.detach().to("cpu", torch.int64)
