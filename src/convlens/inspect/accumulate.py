"""Mergeable accumulators: what a dataset pass keeps, in pieces that combine exactly.

A dataset pass (:mod:`convlens.inspect.executors`) may run over its data in one go or in
partitions on several workers; each partition's accumulators are merged afterwards.
Whatever the split and the order of the merges, the result is the one-shot computation:

* :class:`Moments`: per-channel count, mean, sum of squared deviations (``m2``), min and
  max, in float64, merged with Chan, Golub and LeVeque's parallel update (the mean and
  ``m2`` of a union from those of its parts), so the merge order moves the last bits only.
* Counts are int64 tensors added exactly (values at or below a threshold, silent inputs).
* :class:`TopKHeap`: the ``k`` best entries of each row keyed by ``(score, sample id)``:
  highest score first, ties to the smaller sample id, so a merge of partial top-k lists
  gives the top-k of the whole data set, ties broken the same way everywhere.

>>> import torch
>>> v = torch.arange(12.0).reshape(2, 1, 6)              # (inputs, channels, positions)
>>> parts = Moments.of_rows(v[:1]).merge(Moments.of_rows(v[1:]))
>>> parts.n, float(parts.mean[0]), round(float(parts.var[0]), 12)   # 0..11: variance 143/12
(12, 5.5, 11.916666666667)
>>> a = TopKHeap.of(torch.tensor([[3.0, 1.0]]), torch.tensor([[0, 1]]), k=2)
>>> b = TopKHeap.of(torch.tensor([[3.0, 2.0]]), torch.tensor([[5, 4]]), k=2)
>>> a.merge(b).ids.tolist()                               # 3.0 twice: sample 0 before 5
[[0, 5]]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Moments", "TopKHeap", "topk_order"]

_F64 = torch.float64


@dataclass
class Moments:
    """Moments of every channel over ``n`` values each: all tensors ``(C,)``, float64."""

    n: int
    mean: Tensor
    m2: Tensor  # sum of squared deviations from the mean
    min: Tensor
    max: Tensor

    @classmethod
    def empty(cls, channels: int, device: torch.device | str | None = None) -> Moments:
        z = torch.zeros(channels, dtype=_F64, device=device)
        return cls(0, z, z.clone(), torch.full_like(z, float("inf")), torch.full_like(z, float("-inf")))

    @classmethod
    def of_rows(cls, v: Tensor, row_max: Tensor | None = None) -> Moments:
        """Moments of ``v`` ``(B, C, P)`` over its B·P values per channel.

        Each (input, channel) row gets a float64 mean and variance first, then the rows are
        combined; ``row_max`` is ``v.amax(dim=2)`` if the caller has it already."""
        b, _, p = v.shape
        var_r, mean_r = torch.var_mean(v.to(_F64), dim=2, correction=0)  # (B, C)
        mean = mean_r.mean(dim=0)
        m2 = (var_r.sum(dim=0) + ((mean_r - mean) ** 2).sum(dim=0)) * p
        peak = (row_max if row_max is not None else v.amax(dim=2)).amax(dim=0).to(_F64)
        low = v.amin(dim=2).amin(dim=0).to(_F64)
        return cls(b * p, mean, m2, low, peak)

    def merge(self, other: Moments) -> Moments:
        """The moments of both parts' values together (Chan et al.'s update)."""
        n = self.n + other.n
        if other.n == 0 or n == 0:
            return Moments(self.n, self.mean, self.m2, torch.minimum(self.min, other.min),
                           torch.maximum(self.max, other.max))
        delta = other.mean - self.mean
        return Moments(
            n,
            self.mean + delta * (other.n / n),
            self.m2 + other.m2 + delta**2 * (self.n * other.n / n),
            torch.minimum(self.min, other.min),
            torch.maximum(self.max, other.max),
        )

    @property
    def var(self) -> Tensor:
        """Population variance (ddof 0)."""
        return self.m2 / self.n

    @property
    def std(self) -> Tensor:
        return self.var.sqrt()


def topk_order(values: Tensor, ids: Tensor, k: int) -> Tensor:
    """Positions ``(R, min(k, M))`` of the ``k`` best entries of each row of ``values``
    ``(R, M)``: highest value first, equal values by ascending ``ids`` ``(R, M)``; entries
    with a negative id (empty slots) come after every real one."""
    key = torch.where(ids < 0, torch.iinfo(torch.int64).max, ids)
    by_id = torch.sort(key, dim=1, stable=True).indices
    by_value = torch.sort(values.gather(1, by_id), dim=1, descending=True, stable=True).indices[:, :k]
    return by_id.gather(1, by_value)


@dataclass
class TopKHeap:
    """The ``k`` best ``(score, sample id)`` entries of each of R rows, with per-entry
    payload tensors ``(R, k, ...)`` (a location, a crop) that travel with them.

    Empty slots hold score ``-inf`` and id ``-1``."""

    values: Tensor  # (R, k)
    ids: Tensor  # (R, k) int64
    payload: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Tensor, ids: Tensor, k: int, payload: Mapping[str, Tensor] | None = None) -> TopKHeap:
        """The top ``k`` of candidates ``values`` and ``ids`` ``(R, M)`` (payload ``(R, M, ...)``)."""
        empty = cls(
            torch.full((values.shape[0], k), float("-inf"), dtype=values.dtype, device=values.device),
            torch.full((values.shape[0], k), -1, dtype=torch.int64, device=values.device),
            {name: torch.zeros((values.shape[0], k, *p.shape[2:]), dtype=p.dtype, device=p.device)
             for name, p in (payload or {}).items()},
        )
        return empty.merge(cls(values, ids, dict(payload or {})))

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    def merge(self, other: TopKHeap) -> TopKHeap:
        """The top k of both heaps' entries (k of this heap), payload included."""
        if set(self.payload) != set(other.payload):
            raise ValueError(f"cannot merge top-k heaps with payloads {sorted(self.payload)} and {sorted(other.payload)}")
        values = torch.cat((self.values, other.values.to(self.values.dtype)), dim=1)
        ids = torch.cat((self.ids, other.ids), dim=1)
        order = topk_order(values, ids, self.k)
        payload = {}
        for name, mine in self.payload.items():
            both = torch.cat((mine, other.payload[name]), dim=1)
            idx = order.reshape(*order.shape, *([1] * (both.dim() - 2))).expand(-1, -1, *both.shape[2:])
            payload[name] = both.gather(1, idx)
        return TopKHeap(values.gather(1, order), ids.gather(1, order), payload)
