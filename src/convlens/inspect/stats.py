"""Per-channel statistics over a dataset, and which filters are dead or rarely active.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
>>> report = channel_stats(model, torch.randn(20, 1, 8, 8), ["1"], progress=False)
>>> report["1"].mean.shape, report.n_inputs
(torch.Size([3]), 20)

For each channel of each chosen layer, over every activation value the dataset produces
(all inputs and positions): mean, standard deviation (population, ddof 0), minimum,
maximum and the fraction of values at or below ``threshold`` (0: the values a ReLU
zeroes). Per input: the fraction of inputs on which the channel never fires, i.e. all of
its values on that input are at or below ``threshold``. A channel is *dead* when it fires
on no more than ``dead_at`` of the inputs (default 0: never), and *rarely active* when it
fires on fewer than ``rare_below`` of them (default 1%) without being dead.

Sums are accumulated in float64 with Chan's parallel update, batch by batch, so the
numbers match a float64 computation over all activations at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from convlens._tables import ByLayer
from convlens.errors import ConfigError, positive_int
from convlens.inspect.accumulate import Moments
from convlens.inspect.capture import resolve_layers
from convlens.inspect.executors import (
    HasModel,
    RayEngine,
    check_engine,
    data_length,
    run_pass,
    slice_data,
    unwrap,
)
from convlens.inspect.passes import Data, Reducer, stream

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table

__all__ = ["LayerStats", "StatsPass", "StatsReport", "channel_stats"]


@dataclass
class LayerStats:
    """Statistics of one layer's channels; every tensor has one entry per channel."""

    layer: str
    shape: tuple[int, ...]  # one input's output shape, (C, H, W) or (C,)
    n_inputs: int
    mean: Tensor
    std: Tensor
    min: Tensor
    max: Tensor
    zero_fraction: Tensor  # of all values, those <= threshold
    silent_fraction: Tensor  # of inputs, those on which the channel never fires
    threshold: float
    dead_at: float
    rare_below: float

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    @property
    def active_fraction(self) -> Tensor:
        """Fraction of inputs on which the channel fires at least once."""
        return 1.0 - self.silent_fraction

    @property
    def dead(self) -> Tensor:
        """Boolean per channel: fires on at most ``dead_at`` of the inputs."""
        return self.active_fraction <= self.dead_at + 1e-12

    @property
    def rare(self) -> Tensor:
        """Boolean per channel: not dead, but fires on fewer than ``rare_below`` of the inputs."""
        return (self.active_fraction < self.rare_below) & ~self.dead

    @property
    def dead_channels(self) -> list[int]:
        return [int(i) for i in torch.nonzero(self.dead).flatten()]

    @property
    def rare_channels(self) -> list[int]:
        return [int(i) for i in torch.nonzero(self.rare).flatten()]

    def summary(self) -> str:
        """One sentence: channels, value range, dead and rare filters."""
        dead, rare = self.dead_channels, self.rare_channels
        parts = [
            f"{self.layer}: {self.channels} channels over {self.n_inputs:,} inputs, "
            f"values {float(self.min.min()):.3g} to {float(self.max.max()):.3g}"
        ]
        parts.append(f"{len(dead)} dead" + (f" ({_ints(dead)})" if dead else ""))
        parts.append(f"{len(rare)} rarely active" + (f" ({_ints(rare)})" if rare else ""))
        return "; ".join(parts) + "."

    def rows(self) -> list[dict[str, Any]]:
        """One dict per channel, for tables and JSON."""
        out = []
        for c in range(self.channels):
            flag = "dead" if bool(self.dead[c]) else ("rare" if bool(self.rare[c]) else "")
            out.append(
                {
                    "channel": c,
                    "mean": float(self.mean[c]),
                    "std": float(self.std[c]),
                    "min": float(self.min[c]),
                    "max": float(self.max[c]),
                    "zero_fraction": float(self.zero_fraction[c]),
                    "active_fraction": float(self.active_fraction[c]),
                    "flag": flag,
                }
            )
        return out

    def __rich__(self) -> Table:
        from rich.table import Table

        table = Table(title=f"{self.layer}: {self.channels} channels, {self.n_inputs:,} inputs", caption=self.summary())
        for col in ("ch", "mean", "std", "max", "zeros", "fires on", "flag"):
            table.add_column(col, justify="left" if col == "flag" else "right")
        for r in self.rows():
            style = "red" if r["flag"] == "dead" else ("yellow" if r["flag"] == "rare" else None)
            table.add_row(
                str(r["channel"]),
                f"{r['mean']:.4g}",
                f"{r['std']:.4g}",
                f"{r['max']:.4g}",
                f"{r['zero_fraction']:.1%}",
                f"{r['active_fraction']:.1%}",
                r["flag"],
                style=style,
            )
        return table


def _ints(values: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", … ({len(values)} in all)" if len(values) > limit else "")


@dataclass
class StatsReport(ByLayer[LayerStats]):
    """Layer name -> :class:`LayerStats` (``name#2`` for a shared module's second call)."""

    layers: dict[str, LayerStats]
    n_inputs: int
    dump_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __rich__(self) -> Group:
        from rich.console import Group

        return Group(*(s.__rich__() for s in self.layers.values()))


class _Accumulator:
    """One layer's running statistics: float64 moments (:class:`Moments`) and exact
    counts of values and inputs at or below the threshold; mergeable."""

    def __init__(self, channels: int, threshold: float, device: torch.device) -> None:
        self.threshold = threshold
        self.inputs = 0
        self.moments = Moments.empty(channels, device)
        self.zeros = torch.zeros(channels, dtype=torch.int64, device=device)
        self.silent = torch.zeros(channels, dtype=torch.int64, device=device)

    def update(self, value: Tensor) -> None:
        b, c = value.shape[0], value.shape[1]
        v = value.detach().reshape(b, c, -1)  # (B, C, P): P positions per input
        # reduce along the contiguous last axis first, then over the batch: far faster
        # on CPU than one reduction over (0, 2)
        per_input_max = v.amax(dim=2)  # (B, C)
        self.zeros += (v <= self.threshold).sum(dim=2).sum(dim=0)
        self.silent += (per_input_max <= self.threshold).sum(dim=0)
        # per (input, channel) row: float64 mean and variance, then Chan's merge over rows
        self.moments = self.moments.merge(Moments.of_rows(v, per_input_max))
        self.inputs += b

    def merge(self, other: _Accumulator) -> _Accumulator:
        out = _Accumulator.__new__(_Accumulator)
        out.threshold = self.threshold
        out.inputs = self.inputs + other.inputs
        out.moments = self.moments.merge(other.moments)
        out.zeros = self.zeros + other.zeros
        out.silent = self.silent + other.silent
        return out


class _StatsReducer:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.acc: dict[str, _Accumulator] = {}

    def update(self, key: str, value: Tensor, offset: int, x: Tensor) -> None:
        if value.dim() < 2:
            raise ConfigError(f"layer {key!r} outputs shape {tuple(value.shape)}; per-channel statistics need (N, C, ...)")
        acc = self.acc.get(key)
        if acc is None:
            acc = self.acc[key] = _Accumulator(value.shape[1], self.threshold, value.device)
        acc.update(value)


@dataclass
class _StatsPartial:
    n: int
    shapes: dict[str, tuple[int, ...]]
    acc: dict[str, _Accumulator]


@dataclass
class StatsPass:
    """:func:`channel_stats` as a :class:`~convlens.inspect.executors.DatasetPass`."""

    layers: list[str]
    threshold: float = 0.0
    dead_at: float = 0.0
    rare_below: float = 0.01
    batch_size: int = 256
    description: str = "statistics"
    extra: list[Reducer] = field(default_factory=list, repr=False)  # in-process only (a dump writer)

    def items(self, data: Data) -> int:
        return data_length(data)

    def partial(self, model: nn.Module, data: Data, span: tuple[int, int] | None,
                progress: bool | None) -> _StatsPartial:
        part = data if span is None else slice_data(data, *span)
        reducer = _StatsReducer(self.threshold)
        n, shapes = stream(model, part, self.layers, [reducer, *self.extra], batch_size=self.batch_size,
                           progress=progress, description=self.description)
        return _StatsPartial(n, shapes, reducer.acc)

    def merge(self, a: _StatsPartial, b: _StatsPartial) -> _StatsPartial:
        return _StatsPartial(a.n + b.n, {**a.shapes, **b.shapes}, {k: a.acc[k].merge(b.acc[k]) for k in a.acc})

    def finish(self, merged: _StatsPartial, model: nn.Module) -> StatsReport:
        out: dict[str, LayerStats] = {}
        for key, acc in merged.acc.items():
            m = acc.moments
            out[key] = LayerStats(
                layer=key,
                shape=merged.shapes[key],
                n_inputs=acc.inputs,
                mean=m.mean,
                std=m.std,
                min=m.min,
                max=m.max,
                zero_fraction=acc.zeros.double() / m.n,
                silent_fraction=acc.silent.double() / acc.inputs,
                threshold=self.threshold,
                dead_at=self.dead_at,
                rare_below=self.rare_below,
            )
        return StatsReport(out, merged.n)


def channel_stats(
    model: nn.Module | HasModel,
    data: Data,
    layers: str | Sequence[str],
    *,
    batch_size: int = 256,
    threshold: float = 0.0,
    dead_at: float = 0.0,
    rare_below: float = 0.01,
    dump_to: str | Path | None = None,
    dump_dtype: torch.dtype = torch.float32,
    progress: bool | None = None,
    dump_overwrite: bool = False,
    engine: str | RayEngine = "inprocess",
    address: str | None = None,
) -> StatsReport:
    """Per-channel statistics of ``layers`` over ``data``, in one streaming pass.

    ``data`` is an ImageDataset, a float tensor of inputs or an iterable of batches (see
    :mod:`convlens.inspect.passes`). With ``dump_to`` the activations are also written to
    that directory as safetensors shards (see :func:`convlens.inspect.dump.read_activations`);
    an earlier dump there is replaced only with ``dump_overwrite``.
    The model runs in eval mode without gradients and is left as it was.

    ``model`` is an ``nn.Module``, a run or a model handle. ``engine="ray"`` runs the pass
    on a Ray cluster (``address``; see :mod:`convlens.inspect.executors`): same numbers,
    the data split into partitions of whole batches (a dataset or a tensor, not an iterable).
    """
    for name, v in (("threshold", threshold), ("dead_at", dead_at), ("rare_below", rare_below)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{name} must be a number, got {v!r}")
    if not 0.0 <= dead_at < 1.0 or not 0.0 <= rare_below <= 1.0:
        raise ConfigError(f"dead_at must be in [0, 1) and rare_below in [0, 1], got {dead_at} and {rare_below}")
    check_engine(engine, ["dump_to"] if dump_to is not None else [])
    names = list(resolve_layers(unwrap(model), layers))
    pass_ = StatsPass(names, float(threshold), float(dead_at), float(rare_below), positive_int("batch_size", batch_size))
    writer = None
    if dump_to is not None:
        from convlens.inspect.dump import ActivationWriter

        writer = ActivationWriter(dump_to, dtype=dump_dtype, overwrite=dump_overwrite)
        pass_.extra.append(writer)
    try:
        report = run_pass(pass_, model, data, engine=engine, address=address, progress=progress)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close(report.n_inputs, {k: s.shape for k, s in report.items()})
        report.dump_dir = Path(dump_to) if dump_to is not None else None
    return report
