"""Top-k dataset examples: which inputs excite each channel most, and where.

For every channel of a layer, :func:`topk_examples` streams the data once and keeps the k
inputs whose *maximum* activation in that channel is highest, the position (i, j) of that
maximum in the feature map, the input region under its receptive field and the input
patch (crop) there. It answers "what does filter 7 of conv2 respond to?".

The running top-k is exact: per batch the channel maxima are merged with the k kept so
far by a stable sort, so ties go to the earlier input, as in a brute-force
``argsort`` over the whole dataset. Memory is one batch plus ``C x k`` crops.

Receptive fields come from :func:`convlens.inspect.receptive.receptive_field` (rows with
``lo``, ``hi``, ``jump``): unit (i, j) sees input rows ``lo[0] + i*jump[0] .. hi[0] +
i*jump[0]`` and columns likewise, inclusive and unclipped; crop pixels outside the image
are NaN.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens._tables import ByLayer
from convlens.errors import ConfigError, LayerError, positive_int, unknown_name
from convlens.inspect.accumulate import TopKHeap, topk_order
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
from convlens.inspect.passes import Data, stream

__all__ = ["MAX_K", "FieldLike", "TopK", "TopKPass", "TopKReport", "topk_examples"]

#: The most inputs per channel :func:`topk_examples` keeps (its cost, and a gallery's,
#: grows with k; a few dozen already show what a channel likes).
MAX_K = 100


class FieldLike(Protocol):
    """What top-k needs of a receptive-field row: (h, w) tuples ``lo``, ``hi``, ``jump``."""

    @property
    def lo(self) -> tuple[int, int]: ...
    @property
    def hi(self) -> tuple[int, int]: ...
    @property
    def jump(self) -> tuple[int, int]: ...


@dataclass
class TopK:
    """The k most exciting inputs of every channel of one layer.

    ``values`` (C, k): the channel's maximum on each input, highest first (ties: earlier
    input first). ``indices`` (C, k): the inputs' positions in the data. ``locations`` (C,
    k, 2): row and column of the maximum in the feature map. ``regions`` (C, k, 2, 2):
    ``[[row_lo, row_hi], [col_lo, col_hi]]`` of the input under that unit, inclusive and
    unclipped. ``crops`` (C, k, C_in, rf_h, rf_w): the model input there, NaN outside the
    image (None if crops were not kept). ``channels`` lists which channels the rows are.
    ``filters`` holds the layer's weights (C, C_in, kh, kw) when it is a convolution that
    looks at the input directly (the first conv), else None.
    """

    layer: str
    channels: list[int]
    values: Tensor
    indices: Tensor
    locations: Tensor
    regions: Tensor
    crops: Tensor | None
    n_inputs: int
    rf: tuple[int, int]
    jump: tuple[int, int]
    filters: Tensor | None = None

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    def row(self, channel: int) -> int:
        """Row of ``channel`` in the tensors."""
        try:
            return self.channels.index(channel)
        except ValueError:
            raise ConfigError(f"channel {channel} was not computed; computed channels: {self.channels[:12]}") from None


@dataclass
class TopKReport(ByLayer[TopK]):
    """Layer name -> :class:`TopK` (``name#2`` for a shared module's second call)."""

    layers: dict[str, TopK]
    n_inputs: int



def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


class _Running:
    """Running top-k of one layer's channels."""

    def __init__(self, key: str, channels: list[int] | None, k: int, geo: FieldLike | None, keep_crops: bool, budget: int) -> None:
        self.key = key
        self.want = channels
        self.k = k
        self.geo = geo
        self.keep_crops = keep_crops
        self.budget = budget
        self.values: Tensor | None = None

    def _start(self, value: Tensor, x: Tensor) -> None:
        c = value.shape[1]
        if self.want is None:
            self.channels = list(range(c))
        else:
            bad = [ch for ch in self.want if not 0 <= ch < c]
            if bad:
                raise ConfigError(f"layer {self.key!r} has channels 0..{c - 1}; no channel {bad[0]}")
            self.channels = list(dict.fromkeys(self.want))
        self.sel = torch.tensor(self.channels, dtype=torch.long, device=value.device)
        n = len(self.channels)
        dev = value.device
        self.values = torch.full((n, self.k), float("-inf"), device=dev)
        self.indices = torch.full((n, self.k), -1, dtype=torch.long, device=dev)
        self.locations = torch.zeros((n, self.k, 2), dtype=torch.long, device=dev)
        spatial = value.dim() == 4
        in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
        if self.geo is None:
            self.lo, self.hi, self.jump = (0, 0), (in_h - 1, in_w - 1), (0, 0)  # the whole input
        else:
            self.lo, self.hi, self.jump = _pair(self.geo.lo), _pair(self.geo.hi), _pair(self.geo.jump)
        self.rf = (self.hi[0] - self.lo[0] + 1, self.hi[1] - self.lo[1] + 1)
        h, w = (value.shape[2], value.shape[3]) if spatial else (1, 1)
        # padding so every unit's region is inside the padded input
        self.pad = (
            max(0, -self.lo[0]),
            max(0, self.hi[0] + (h - 1) * self.jump[0] - (in_h - 1)),
            max(0, -self.lo[1]),
            max(0, self.hi[1] + (w - 1) * self.jump[1] - (in_w - 1)),
        )
        self.crops: Tensor | None = None
        if self.keep_crops:
            size = n * self.k * x.shape[1] * self.rf[0] * self.rf[1] * 4
            if size > self.budget:
                raise ConfigError(
                    f"crops for {n} channels x {self.k} of {x.shape[1]}x{self.rf[0]}x{self.rf[1]} pixels "
                    f"would take {size / 2**20:.0f} MB; pass channels=[...], a smaller k, or crops=False"
                )
            self.crops = torch.full((n, self.k, x.shape[1], *self.rf), float("nan"), device=dev)

    def update(self, value: Tensor, offset: int, x: Tensor) -> None:
        if self.values is None:
            self._start(value, x)
        assert self.values is not None  # for mypy: set by _start
        b = value.shape[0]
        v = value.detach().index_select(1, self.sel).reshape(b, len(self.channels), -1)  # (B, C', P)
        peak, where = v.max(dim=2)  # first position of the maximum
        peak = peak.t().to(self.values.dtype)  # (C', B)
        where = where.t()
        batch_idx = torch.arange(offset, offset + b, device=v.device).expand_as(peak)
        w = value.shape[3] if value.dim() == 4 else 1
        loc = torch.stack((where // w, where % w), dim=-1)  # (C', B, 2)
        values = torch.cat((self.values, peak), dim=1)
        indices = torch.cat((self.indices, batch_idx), dim=1)
        order = topk_order(values, indices, self.k)  # by (value, input): ties to the earlier input
        self.values = values.gather(1, order)
        self.indices = indices.gather(1, order)
        self.locations = torch.cat((self.locations, loc), dim=1).gather(1, order[..., None].expand(-1, -1, 2))
        if self.crops is not None:
            # kept crops move to their new ranks; entries from this batch get fresh crops
            old = order.clamp(max=self.k - 1)[:, :, None, None, None].expand(-1, -1, *self.crops.shape[2:])
            crops = self.crops.gather(1, old)
            ci, ri = torch.nonzero(order >= self.k, as_tuple=True)
            if ci.numel():
                bi = order[ci, ri] - self.k  # position in the batch
                crops[ci, ri] = self._crop(x, bi, self.locations[ci, ri])
            self.crops = crops

    def merge(self, other: _Running) -> _Running:
        """The running top-k of both parts' inputs (each input has one index in the data)."""
        assert self.values is not None and other.values is not None  # for mypy: both saw a batch
        payload = {"locations": self.locations}
        theirs = {"locations": other.locations}
        if self.crops is not None and other.crops is not None:
            payload["crops"], theirs["crops"] = self.crops, other.crops
        heap = TopKHeap(self.values, self.indices, payload).merge(TopKHeap(other.values, other.indices, theirs))
        out = copy.copy(self)
        out.values, out.indices = heap.values, heap.ids
        out.locations = heap.payload["locations"]
        out.crops = heap.payload.get("crops")
        return out

    def _crop(self, x: Tensor, bi: Tensor, loc: Tensor) -> Tensor:
        pt, _, pl, _ = self.pad
        xp = F.pad(x.to(torch.float32), (self.pad[2], self.pad[3], self.pad[0], self.pad[1]), value=float("nan"))
        top = self.lo[0] + loc[:, 0] * self.jump[0] + pt  # (M,)
        left = self.lo[1] + loc[:, 1] * self.jump[1] + pl
        rows = top[:, None] + torch.arange(self.rf[0], device=x.device)  # (M, rh)
        cols = left[:, None] + torch.arange(self.rf[1], device=x.device)  # (M, rw)
        patch = xp[bi[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (M, rh, rw, C_in)
        return patch.permute(0, 3, 1, 2)

    def result(self, n_inputs: int, filters: Tensor | None) -> TopK:
        assert self.values is not None  # for mypy: every key saw a batch
        k = min(self.k, n_inputs)
        loc = self.locations[:, :k]
        r0 = self.lo[0] + loc[..., 0] * self.jump[0]
        c0 = self.lo[1] + loc[..., 1] * self.jump[1]
        regions = torch.stack(
            (torch.stack((r0, r0 + self.rf[0] - 1), -1), torch.stack((c0, c0 + self.rf[1] - 1), -1)), dim=-2
        )
        return TopK(
            layer=self.key,
            channels=self.channels,
            values=self.values[:, :k].cpu(),
            indices=self.indices[:, :k].cpu(),
            locations=loc.cpu(),
            regions=regions.cpu(),
            crops=None if self.crops is None else self.crops[:, :k].cpu(),
            n_inputs=n_inputs,
            rf=self.rf,
            jump=self.jump,
            filters=filters,
        )


class _TopKReducer:
    def __init__(self, make: Callable[[str, Tensor, bool], _Running], base: int = 0) -> None:
        self.make = make
        self.base = base  # index in the whole data of this part's first input
        self.running: dict[str, _Running] = {}

    def update(self, key: str, value: Tensor, offset: int, x: Tensor) -> None:
        run = self.running.get(key)
        if run is None:
            if value.dim() not in (2, 4):
                raise ConfigError(f"layer {key!r} outputs shape {tuple(value.shape)}; top-k needs (N, C, H, W) or (N, C)")
            run = self.running[key] = self.make(key, x, value.dim() == 4)
        run.update(value, self.base + offset, x)


def check_k(k: object) -> int:
    """``k`` if it is a whole number from 1 to :data:`MAX_K`, else a one-line ConfigError."""
    k = positive_int("k", k)
    if k > MAX_K:
        raise ConfigError(f"k={k} is more than the {MAX_K} inputs per channel top-k keeps; ask for at most {MAX_K} "
                          f"(--k {MAX_K})")
    return k


def _fields(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, FieldLike]:
    from convlens.inspect.receptive import receptive_field

    return {row.name: row for row in receptive_field(model, input_shape)}


@dataclass
class _TopKPartial:
    n: int
    running: dict[str, _Running]


@dataclass
class TopKPass:
    """:func:`topk_examples` as a :class:`~convlens.inspect.executors.DatasetPass`."""

    layers: list[str]
    k: int
    channels: list[int] | None
    crops: bool
    fields: Mapping[str, FieldLike] | None
    budget: int
    batch_size: int = 256
    description: str = "top-k"

    def items(self, data: Data) -> int:
        return data_length(data)

    def partial(self, model: nn.Module, data: Data, span: tuple[int, int] | None,
                progress: bool | None) -> _TopKPartial:
        part = data if span is None else slice_data(data, *span)
        geos: dict[str, FieldLike] = dict(self.fields) if self.fields is not None else {}

        def prepare(x: Tensor) -> None:
            if self.fields is None:  # before the hooks: receptive_field runs the model itself
                geos.update(_fields(model, tuple(x.shape[1:])))

        def make(key: str, x: Tensor, spatial: bool) -> _Running:
            if not spatial:  # (N, C): every unit sees the whole input
                return _Running(key, self.channels, self.k, None, self.crops, self.budget)
            base = key.split("#")[0]
            geo = geos.get(key, geos.get(base))
            if geo is None:
                raise LayerError(unknown_name("layer with a receptive field", base, geos))
            return _Running(key, self.channels, self.k, geo, self.crops, self.budget)

        reducer = _TopKReducer(make, 0 if span is None else span[0])
        n, _ = stream(model, part, self.layers, [reducer], batch_size=self.batch_size, progress=progress,
                      description=self.description, before=prepare)
        return _TopKPartial(n, reducer.running)

    def merge(self, a: _TopKPartial, b: _TopKPartial) -> _TopKPartial:
        return _TopKPartial(a.n + b.n, {key: run.merge(b.running[key]) for key, run in a.running.items()})

    def finish(self, merged: _TopKPartial, model: nn.Module) -> TopKReport:
        modules = dict(model.named_modules())
        out = {}
        for key, run in merged.running.items():
            module = modules[key.split("#")[0]]
            filters = None
            if isinstance(module, nn.Conv2d):
                kh = module.dilation[0] * (module.kernel_size[0] - 1) + 1
                kw = module.dilation[1] * (module.kernel_size[1] - 1) + 1
                if run.rf == (kh, kw) and run.jump == _pair(module.stride):  # it sees the input itself
                    filters = module.weight.detach().index_select(0, run.sel.to(module.weight.device)).cpu().clone()
            out[key] = run.result(merged.n, filters)
        return TopKReport(out, merged.n)


def topk_examples(
    model: nn.Module | HasModel,
    data: Data,
    layers: str | Sequence[str],
    *,
    k: int = 9,
    channels: Sequence[int] | None = None,
    crops: bool = True,
    fields: Mapping[str, FieldLike] | None = None,
    batch_size: int = 256,
    crop_budget_mb: float = 256.0,
    progress: bool | None = None,
    engine: str | RayEngine = "inprocess",
    address: str | None = None,
) -> TopKReport:
    """For each channel of ``layers``, the ``k`` inputs of ``data`` that excite it most.

    ``k`` is at most :data:`MAX_K`. ``channels`` restricts the work to some channels (all by default). ``fields`` maps
    layer names to receptive-field rows (``lo``, ``hi``, ``jump``); by default they are
    computed with :func:`convlens.inspect.receptive.receptive_field` (a layer without a
    row there is an error). Layers with a non-spatial output (N, C) get the whole input
    as their region. The model runs in
    eval mode without gradients and is left as it was.

    ``model`` is an ``nn.Module``, a run or a model handle. ``engine="ray"`` runs the pass
    on a Ray cluster (``address``; see :mod:`convlens.inspect.executors`): the same
    inputs in the same order, ties broken by the input's index as here.

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3))
    >>> report = topk_examples(model, torch.randn(30, 1, 9, 9), "2", k=5, progress=False)
    >>> report["2"].indices[7].shape   # the 5 inputs channel 7 likes most
    torch.Size([5])
    """
    k = check_k(k)
    check_engine(engine)
    names = list(resolve_layers(unwrap(model), layers))
    ch = None if channels is None else [int(c) for c in channels]
    if ch is not None and not ch:
        raise ConfigError("channels is empty; pass channel numbers or None for all")
    pass_ = TopKPass(names, k, ch, crops, dict(fields) if fields is not None else None, int(crop_budget_mb * 2**20),
                     positive_int("batch_size", batch_size))
    return run_pass(pass_, model, data, engine=engine, address=address, progress=progress)
