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
from convlens.errors import ConfigError
from convlens.inspect.passes import Data, Reducer, stream

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table

__all__ = ["LayerStats", "StatsReport", "channel_stats"]


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
    """Chan's parallel mean/variance in float64, plus min, max and firing counts."""

    def __init__(self, channels: int, threshold: float, device: torch.device) -> None:
        f64 = torch.float64
        self.threshold = threshold
        self.n = 0  # values per channel so far
        self.inputs = 0
        self.mean = torch.zeros(channels, dtype=f64, device=device)
        self.m2 = torch.zeros(channels, dtype=f64, device=device)
        self.min = torch.full((channels,), float("inf"), dtype=f64, device=device)
        self.max = torch.full((channels,), float("-inf"), dtype=f64, device=device)
        self.zeros = torch.zeros(channels, dtype=torch.int64, device=device)
        self.silent = torch.zeros(channels, dtype=torch.int64, device=device)

    def update(self, value: Tensor) -> None:
        b, c = value.shape[0], value.shape[1]
        v = value.detach().reshape(b, c, -1)  # (B, C, P): P positions per input
        p = v.shape[2]
        # reduce along the contiguous last axis first, then over the batch: far faster
        # on CPU than one reduction over (0, 2)
        per_input_max = v.amax(dim=2)  # (B, C)
        self.zeros += (v <= self.threshold).sum(dim=2).sum(dim=0)
        self.silent += (per_input_max <= self.threshold).sum(dim=0)
        self.max = torch.maximum(self.max, per_input_max.amax(dim=0).double())
        self.min = torch.minimum(self.min, v.amin(dim=2).amin(dim=0).double())
        # per (input, channel) row: float64 mean and variance, then Chan's merge over rows
        var_r, mean_r = torch.var_mean(v.to(torch.float64), dim=2, correction=0)  # (B, C)
        mean_b = mean_r.mean(dim=0)  # (C,)
        m2_b = (var_r.sum(dim=0) + ((mean_r - mean_b) ** 2).sum(dim=0)) * p
        nb = b * p
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * nb / n)
        self.n = n
        self.inputs += b


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


def channel_stats(
    model: nn.Module,
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
) -> StatsReport:
    """Per-channel statistics of ``layers`` over ``data``, in one streaming pass.

    ``data`` is an ImageDataset, a float tensor of inputs or an iterable of batches (see
    :mod:`convlens.inspect.passes`). With ``dump_to`` the activations are also written to
    that directory as safetensors shards (see :func:`convlens.inspect.dump.read_activations`);
    an earlier dump there is replaced only with ``dump_overwrite``.
    The model runs in eval mode without gradients and is left as it was.
    """
    for name, v in (("threshold", threshold), ("dead_at", dead_at), ("rare_below", rare_below)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{name} must be a number, got {v!r}")
    if not 0.0 <= dead_at < 1.0 or not 0.0 <= rare_below <= 1.0:
        raise ConfigError(f"dead_at must be in [0, 1) and rare_below in [0, 1], got {dead_at} and {rare_below}")
    reducer = _StatsReducer(float(threshold))
    reducers: list[Reducer] = [reducer]
    writer = None
    if dump_to is not None:
        from convlens.inspect.dump import ActivationWriter

        writer = ActivationWriter(dump_to, dtype=dump_dtype, overwrite=dump_overwrite)
        reducers.append(writer)
    try:
        n, shapes = stream(model, data, layers, reducers, batch_size=batch_size, progress=progress, description="statistics")
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close(n, shapes)
    out: dict[str, LayerStats] = {}
    for key, acc in reducer.acc.items():
        out[key] = LayerStats(
            layer=key,
            shape=shapes[key],
            n_inputs=acc.inputs,
            mean=acc.mean,
            std=(acc.m2 / acc.n).sqrt(),
            min=acc.min,
            max=acc.max,
            zero_fraction=acc.zeros.double() / acc.n,
            silent_fraction=acc.silent.double() / acc.inputs,
            threshold=float(threshold),
            dead_at=float(dead_at),
            rare_below=float(rare_below),
        )
    return StatsReport(out, n, Path(dump_to) if dump_to is not None else None)
