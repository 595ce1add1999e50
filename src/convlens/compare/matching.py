"""Which filters correspond: match the channels of a layer of A to those of a layer of B.

Li et al. ("Convergent Learning", 2016) match the units of two networks by the
correlation of their activations over the data. Here each channel's activation values
are the samples: one per input and position when both layers have the same spatial
size, else one per input (the channel's spatial mean). The Pearson correlation of every
channel of A with every channel of B is accumulated in float64 in one streamed pass;
the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) then picks the
one-to-one matching with the largest total correlation.

The null: in the same pass, B's activations are paired with A's on *another* image (each
batch shifted by a random number of places), and the same matching is made on those
correlations. A matched pair whose correlation exceeds every matched pair of the null
(``threshold``) has a counterpart beyond what unrelated images give.

>>> import torch
>>> from torch import nn
>>> a = nn.Sequential(nn.Conv2d(1, 3, 3))
>>> b = nn.Sequential(nn.Conv2d(1, 3, 3))
>>> with torch.no_grad():
...     _ = b[0].weight.copy_(a[0].weight[[2, 0, 1]]), b[0].bias.copy_(a[0].bias[[2, 0, 1]])
>>> m = match_filters(a, b, torch.randn(32, 1, 8, 8), "0", progress=False)
>>> m.partner.tolist()  # A's channel i is B's channel partner[i]
[1, 2, 0]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from convlens.errors import positive_int
from convlens.inspect.pair import Side, stream_pair

if TYPE_CHECKING:
    from convlens.inspect.passes import Data

__all__ = ["FilterMatch", "match_filters"]


@dataclass
class FilterMatch:
    """The matching of ``layer_a``'s channels (A) to ``layer_b``'s (B).

    ``correlation[i, j]`` is the correlation of A's channel i with B's channel j;
    ``a_channels[k]`` is matched to ``b_channels[k]`` with correlation ``matched[k]``
    (sorted from the best pair down). ``null_matched`` are the matched correlations
    with images shuffled, ``threshold`` their maximum.
    """

    layer_a: str
    layer_b: str
    correlation: np.ndarray
    a_channels: np.ndarray
    b_channels: np.ndarray
    matched: np.ndarray
    null_correlation: np.ndarray
    null_matched: np.ndarray
    samples: str  # "positions" (every input and position) or "inputs" (spatial means)
    n_inputs: int
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return float(self.null_matched.max()) if self.null_matched.size else 0.0

    @property
    def above_null(self) -> np.ndarray:
        """Per matched pair: is its correlation above every matched pair of the null?"""
        return self.matched > self.threshold

    @property
    def partner(self) -> np.ndarray:
        """For each channel of A, its matched channel of B (-1 if B has fewer channels)."""
        out = np.full(self.correlation.shape[0], -1, dtype=np.int64)
        out[self.a_channels] = self.b_channels
        return out

    def summary(self) -> str:
        n = len(self.matched)
        return (f"{self.layer_a} (A, {self.correlation.shape[0]} channels) ↔ {self.layer_b} (B, "
                f"{self.correlation.shape[1]}): {n} pairs, correlation {float(self.matched.min()):.3f} to "
                f"{float(self.matched.max()):.3f} (median {float(np.median(self.matched)):.3f}); "
                f"{int(self.above_null.sum())} above the shuffled-image null ({self.threshold:.3f}).")

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer_a": self.layer_a, "layer_b": self.layer_b, "samples": self.samples, "n_inputs": self.n_inputs,
            "pairs": [{"a": int(i), "b": int(j), "correlation": float(c), "above_null": bool(c > self.threshold)}
                      for i, j, c in zip(self.a_channels, self.b_channels, self.matched, strict=True)],
            "null_threshold": self.threshold, "null_matched": self.null_matched.tolist(),
            "correlation": self.correlation.tolist(), "warnings": list(self.warnings),
        }


class _Correlations:
    """Σa, Σb, Σa², Σb², Σaᵀb and Σaᵀb_shuffled per channel, in float64."""

    def __init__(self, layer_a: str, layer_b: str, seed: int) -> None:
        self.keys = {"a": layer_a, "b": layer_b}
        self.values: dict[Side, Tensor] = {}
        self.gen = torch.Generator().manual_seed(seed)
        self.samples = ""
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.n = 0

    def update(self, side: Side, key: str, value: Tensor, offset: int) -> None:
        if key == self.keys[side]:
            self.values[side] = value.detach().to("cpu", torch.float64, copy=True)  # the model may go on in place

    def finish(self, offset: int, x: Tensor, y: Tensor | None, out_a: Tensor, out_b: Tensor) -> None:
        va, vb = self.values.pop("a"), self.values.pop("b")
        n = va.shape[0]
        if not self.samples:
            self.samples = "positions" if va.dim() > 2 and va.shape[2:] == vb.shape[2:] else "inputs"
        shift = int(torch.randint(1, n, (1,), generator=self.gen)) if n > 1 else 0
        vs = torch.roll(vb, shifts=shift, dims=0)  # B on another image of the batch: the null
        a, b, s = (self._samples(v) for v in (va, vb, vs))  # (samples, C)
        parts = {"a": a.sum(0), "b": b.sum(0), "aa": (a * a).sum(0), "bb": (b * b).sum(0),
                 "ab": a.T @ b, "as": a.T @ s}
        for k, v in parts.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += a.shape[0]
        self.n += n

    def _samples(self, v: Tensor) -> Tensor:
        if v.dim() <= 2:
            return v.reshape(v.shape[0], -1)
        if self.samples == "positions":
            return v.flatten(2).transpose(1, 2).reshape(-1, v.shape[1])  # (N·H·W, C)
        return v.flatten(2).mean(dim=2)  # (N, C)

    def correlations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        m = self.count
        s = self.sums
        mean_a, mean_b = s["a"] / m, s["b"] / m
        var_a = (s["aa"] / m - mean_a**2).clamp_min(0)
        var_b = (s["bb"] / m - mean_b**2).clamp_min(0)
        sd = torch.outer(var_a.sqrt(), var_b.sqrt())
        dead_a, dead_b = (var_a <= 1e-12 * (1 + mean_a**2)), (var_b <= 1e-12 * (1 + mean_b**2))
        ok = ~(dead_a[:, None] | dead_b[None, :])

        def corr(cross: Tensor) -> np.ndarray:
            cov = cross / m - torch.outer(mean_a, mean_b)
            return torch.where(ok, cov / torch.where(ok, sd, torch.ones_like(sd)), torch.zeros_like(sd)).numpy()

        return corr(s["ab"]), corr(s["as"]), dead_a.numpy(), dead_b.numpy()


def _assign(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(corr, maximize=True)
    return rows, cols


def match_filters(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Data,
    layer_a: str,
    layer_b: str | None = None,
    *,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> FilterMatch:
    """Match the channels of ``layer_a`` of A to those of ``layer_b`` of B (default: the
    same name) by activation correlation over ``data``, one-to-one (Hungarian)."""
    batch_size = positive_int("batch_size", batch_size)
    layer_b = layer_a if layer_b is None else layer_b
    reducer = _Correlations(layer_a, layer_b, seed)
    n, _ = stream_pair(model_a, model_b, data, [layer_a], [layer_b], [reducer], batch_size=batch_size,
                       progress=progress, description="matching filters")
    corr, null, dead_a, dead_b = reducer.correlations()
    words = [f"layer {name!r} of model {side} has {int(d.sum())} constant (dead) channels: their correlations are "
             "reported as 0" for side, name, d in (("A", layer_a, dead_a), ("B", layer_b, dead_b)) if d.any()]
    for w in words:
        warnings.warn(w, UserWarning, stacklevel=2)
    rows, cols = _assign(corr)
    order = np.argsort(-corr[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    nr, nc = _assign(null)
    return FilterMatch(layer_a, layer_b, corr, rows, cols, corr[rows, cols], null, np.sort(null[nr, nc])[::-1].copy(),
                       reducer.samples, n, tuple(words))
