"""Centred kernel alignment (CKA) between the layers of two models, in one streamed pass.

CKA (Kornblith et al. 2019) says how similar two representations of the same inputs
are: 1 for representations that differ by an orthogonal transform and an isotropic
scaling, near 0 for unrelated ones. With ``X`` (n × p) and ``Y`` (n × q) the centred
features of n inputs and ``K = X Xᵀ``, ``L = Y Yᵀ`` their Gram matrices::

    HSIC(K, L) = tr(K H L H) / (n - 1)²            H = I - 11ᵀ/n
    CKA(K, L)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
               = ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)       (linear kernel)

Estimators (``estimator=``):

* ``"exact"``: the formula above over the whole dataset, accumulated in float64. The
  *feature-space* form keeps ``XᵀY`` for every pair of layers (p × q numbers each); when
  those do not fit ``memory_budget`` the *Gram* form keeps the features and computes the
  n × n Gram matrices in blocks of rows. The form is recorded in ``settings["form"]``.
  ``kernel="rbf"`` (exact only, up to 5,000 inputs) uses ``k(x, y) = exp(-‖x - y‖² / 2σ²)``
  with σ = ``sigma`` × the median distance between the inputs' features.
* ``"minibatch"``: Nguyen et al. (2021): the unbiased HSIC estimator (Song et al. 2012)
  on each minibatch's Gram matrices, averaged over minibatches, then combined as above.
  It is a different estimator from the exact one, not an approximation that converges
  to it; its standard error is a jackknife over minibatches.

Each layer's Gram matrix (or features) is made once per batch and reused for every pair.
Conv outputs are flattened to C·H·W features (``pool="flatten"``) or averaged over
space to C features (``pool="mean"``). A constant layer has no defined CKA: it is
reported as 0 with a warning, never NaN. Values are similarities in [0, 1] (the unbiased
estimator can stray slightly outside; ``raw`` keeps those values, ``matrix`` is clipped).

>>> import torch
>>> from torch import nn
>>> a = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
>>> sim = cka(a, a, torch.randn(64, 1, 8, 8), progress=False)
>>> sim.layers_a, bool(abs(sim.matrix[0, 0] - 1) < 1e-9), sim.settings["form"]
(('0', '2'), True, 'features')
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from convlens.errors import ConfigError, LayerError, positive_int, unknown_name
from convlens.inspect.pair import Side, stream_pair

if TYPE_CHECKING:
    from rich.table import Table

    from convlens.inspect.passes import Data

__all__ = ["CKAWarning", "Estimator", "Kernel", "Pool", "Similarity", "cka", "conv_layers"]

Estimator = Literal["exact", "minibatch"]
Kernel = Literal["linear", "rbf"]
Pool = Literal["flatten", "mean"]

#: The most inputs ``kernel="rbf"`` takes (it keeps n × n Gram matrices).
RBF_MAX_INPUTS = 5000
#: Default memory for the exact estimator's accumulators or kept features, in bytes.
DEFAULT_BUDGET = 2 * 1024**3


class CKAWarning(UserWarning):
    """A CKA value that is defined by convention (a constant layer, a dead channel)."""


def conv_layers(model: nn.Module) -> list[str]:
    """Dotted names of the ``Conv2d`` modules of ``model``: the default layers to compare."""
    names = [n for n, m in model.named_modules() if n and isinstance(m, nn.Conv2d)]
    if not names:
        raise LayerError(f"the model ({type(model).__name__}) has no Conv2d layer; name the layers to compare "
                         "(layers_a=..., layers_b=...)")
    return names


@dataclass
class Similarity:
    """CKA between every layer of model A (rows) and every layer of model B (columns).

    ``matrix`` is always a similarity in [0, 1] (1: the same representation up to an
    orthogonal transform and scale), never a distance. ``stderr`` (minibatch estimator
    with several batches) is the jackknife standard error of each entry, else ``None``.
    ``settings`` records how it was computed (form, pool, kernel options, batches).
    """

    matrix: np.ndarray
    layers_a: tuple[str, ...]
    layers_b: tuple[str, ...]
    estimator: Estimator
    kernel: Kernel
    n_inputs: int
    settings: dict[str, Any] = field(default_factory=dict)
    stderr: np.ndarray | None = None
    raw: np.ndarray | None = None  # before clipping to [0, 1] (the unbiased estimator can stray)
    warnings: tuple[str, ...] = ()

    def __getitem__(self, pair: tuple[str, str]) -> float:
        a, b = pair
        if a not in self.layers_a:
            raise LayerError(unknown_name("layer of model A", a, self.layers_a))
        if b not in self.layers_b:
            raise LayerError(unknown_name("layer of model B", b, self.layers_b))
        return float(self.matrix[self.layers_a.index(a), self.layers_b.index(b)])

    def best_match(self) -> dict[str, str]:
        """For each layer of A, the layer of B most similar to it."""
        return {a: self.layers_b[int(np.argmax(row))] for a, row in zip(self.layers_a, self.matrix, strict=True)}

    def summary(self) -> str:
        """One sentence: what was compared, how, and the diagonal where the layers line up."""
        words = (f"{self.estimator} {self.kernel} CKA of {len(self.layers_a)} × {len(self.layers_b)} layers over "
                 f"{self.n_inputs:,} inputs ({self.settings.get('pool', 'flatten')}")
        words += f", {self.settings['form']} form)" if "form" in self.settings else \
            f", {self.settings.get('batches', 0)} batches of {self.settings.get('batch_size')})"
        if self.layers_a == self.layers_b:
            diag = np.diag(self.matrix)
            words += f"; same-named layers {float(diag.min()):.3f} to {float(diag.max()):.3f}"
        return words + "."

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers."""
        return {
            "estimator": self.estimator, "kernel": self.kernel, "n_inputs": self.n_inputs,
            "layers_a": list(self.layers_a), "layers_b": list(self.layers_b),
            "matrix": self.matrix.tolist(), "raw": None if self.raw is None else self.raw.tolist(),
            "stderr": None if self.stderr is None else self.stderr.tolist(),
            "settings": dict(self.settings), "warnings": list(self.warnings),
        }

    def __rich__(self) -> Table:
        from rich.table import Table

        table = Table(title=f"CKA: rows = model A, columns = model B ({self.estimator}, {self.kernel})",
                      caption=self.summary())
        table.add_column("A \\ B")
        for b in self.layers_b:
            table.add_column(b, justify="right")
        for i, a in enumerate(self.layers_a):
            cells = []
            for j in range(len(self.layers_b)):
                cell = f"{self.matrix[i, j]:.3f}"
                if self.stderr is not None:
                    cell += f" ±{self.stderr[i, j]:.3f}"
                cells.append(cell)
            table.add_row(a, *cells)
        return table


# --- what every estimator shares: features of one batch, constant features ------------------


def _features(side: Side, key: str, value: Tensor, pool: Pool) -> Tensor:
    """``value`` (N, ...) as features (N, D): flattened, or averaged over space.

    They stay in the layer's own dtype (float32 for most models; half precision is
    raised to float32): Gram matrices and products are made at that precision, and every
    sum that a CKA value is made of is accumulated in float64.
    """
    value = value.detach()
    if value.dtype not in (torch.float32, torch.float64):
        value = value.float()
    if pool == "mean":
        if value.dim() < 3:
            raise LayerError(f"layer {key!r} of model {side.upper()} has no spatial output (shape "
                             f"{tuple(value.shape[1:])}); use pool='flatten' for it, or choose a conv layer")
        return value.flatten(2).mean(dim=2)  # (N, C)
    return value.reshape(value.shape[0], -1)  # (N, C·H·W)


class _Constancy:
    """Per feature, the smallest and largest value seen: which features never change."""

    def __init__(self) -> None:
        self.lo: dict[tuple[Side, str], Tensor] = {}
        self.hi: dict[tuple[Side, str], Tensor] = {}
        self.channels: dict[tuple[Side, str], int] = {}

    def update(self, side: Side, key: str, value: Tensor, feats: Tensor) -> None:
        k = (side, key)
        lo, hi = feats.amin(dim=0), feats.amax(dim=0)
        self.lo[k] = torch.minimum(self.lo[k], lo) if k in self.lo else lo
        self.hi[k] = torch.maximum(self.hi[k], hi) if k in self.hi else hi
        self.channels[k] = int(value.shape[1]) if value.dim() >= 2 else 1

    def report(self, layers: dict[Side, list[str]]) -> tuple[set[tuple[Side, str]], list[str]]:
        """The constant layers, and a warning for each layer with constant (dead) channels."""
        constant: set[tuple[Side, str]] = set()
        words: list[str] = []
        for side, names in layers.items():
            for key in names:
                k = (side, key)
                same = (self.hi[k] == self.lo[k]).cpu()
                if bool(same.all()):
                    constant.add(k)
                    words.append(f"layer {key!r} of model {side.upper()} is constant over the data: its CKA is "
                                 "undefined and reported as 0")
                    continue
                c = self.channels[k]
                if same.numel() % c == 0:
                    dead = same.reshape(c, -1).all(dim=1)
                    if bool(dead.any()):
                        words.append(f"layer {key!r} of model {side.upper()} has {int(dead.sum())} of {c} channels "
                                     "constant over the data (dead); they add nothing to its CKA")
        return constant, words


def _ratio(cross: np.ndarray, self_a: np.ndarray, self_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cross / sqrt(self_a ⊗ self_b)``, 0 where a denominator is not positive; and the
    mask of those entries."""
    denom = np.sqrt(np.clip(np.outer(self_a, self_b), 0, None))
    bad = ~(np.outer(self_a > 0, self_b > 0)) | (denom == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(bad, 0.0, cross / np.where(bad, 1.0, denom))
    return out, bad


# --- reducers -------------------------------------------------------------------------------


class _Exact:
    """Full-dataset linear CKA: feature-space accumulators, or kept features for Gram blocks."""

    def __init__(self, layers: dict[Side, list[str]], pool: Pool, n: int | None, budget: int) -> None:
        self.layers, self.pool, self.n_expected, self.budget = layers, pool, n, budget
        self.form = ""  # chosen at the first batch, when the feature sizes are known
        self.memory = 0
        self.const = _Constancy()
        self.batch: dict[tuple[Side, str], Tensor] = {}
        self.shift: dict[tuple[Side, str], Tensor] = {}  # the first batch's mean: sums stay small
        self.sums: dict[tuple[Side, str], Tensor] = {}  # float64
        self.cross: dict[tuple[str, str], Tensor] = {}  # (a, b) -> Σ xaᵀ xb, float64
        self.selfs: dict[tuple[Side, str], Tensor] = {}  # -> Σ xᵀ x, float64
        self.kept: dict[tuple[Side, str], list[Tensor]] = {}  # Gram form: the features, in their dtype
        self.n = 0

    def update(self, side: Side, key: str, value: Tensor, offset: int) -> None:
        feats = _features(side, key, value, self.pool)
        self.const.update(side, key, value, feats)
        k = (side, key)
        if k not in self.shift:
            self.shift[k] = feats.mean(dim=0)
        self.batch[k] = feats - self.shift[k]  # a new tensor: the live output is not kept

    def finish(self, offset: int, x: Tensor, y: Tensor | None, out_a: Tensor, out_b: Tensor) -> None:
        if not self.form:
            dims = {side: [int(self.batch[(side, k)].shape[1]) for k in names] for side, names in self.layers.items()}
            itemsize = max(f.element_size() for f in self.batch.values())
            self.form, self.memory = _choose_form(dims["a"], dims["b"], itemsize, self.n_expected, self.budget)
        self.n += x.shape[0]
        if self.form == "gram" and self.n * self.memory > self.budget:  # an iterable longer than it looked
            raise ConfigError(_too_big(self.n * self.memory, self.budget))
        batch, self.batch = self.batch, {}
        for k, f in batch.items():
            self.sums[k] = self.sums[k] + f.sum(0, dtype=torch.float64) if k in self.sums else f.sum(0, dtype=torch.float64)
            if self.form == "gram":
                self.kept.setdefault(k, []).append(f)
        if self.form == "gram":
            return
        f64 = {k: f.to(torch.float64) for k, f in batch.items()}
        for k, f in f64.items():
            self.selfs[k] = self.selfs[k] + f.T @ f if k in self.selfs else f.T @ f
        for a in self.layers["a"]:
            for b in self.layers["b"]:
                prod = f64[("a", a)].T @ f64[("b", b)]  # (Da, Db)
                self.cross[(a, b)] = self.cross[(a, b)] + prod if (a, b) in self.cross else prod

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(‖XaᵀXb‖², ‖XaᵀXa‖, ‖XbᵀXb‖) per pair / layer, centred; the CKA numerators."""
        la, lb = self.layers["a"], self.layers["b"]
        n = self.n
        if self.form == "features":
            def centred(m: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
                return m - torch.outer(s1, s2) / n  # Σ (x - x̄)(y - ȳ)ᵀ
            self_a = np.array([float(torch.linalg.matrix_norm(centred(self.selfs[("a", a)], self.sums[("a", a)],
                                                                      self.sums[("a", a)]))) for a in la])
            self_b = np.array([float(torch.linalg.matrix_norm(centred(self.selfs[("b", b)], self.sums[("b", b)],
                                                                      self.sums[("b", b)]))) for b in lb])
            cross = np.array([[float(torch.linalg.matrix_norm(centred(self.cross[(a, b)], self.sums[("a", a)],
                                                                      self.sums[("b", b)])) ** 2) for b in lb]
                              for a in la])
            return cross, self_a, self_b
        keys: list[tuple[Side, str]] = [("a", a) for a in la] + [("b", b) for b in lb]
        feats = {}
        for k in keys:  # centred (n, D), in the features' dtype, one layer's batches joined at a time
            kept = torch.cat(self.kept.pop(k))
            kept -= (self.sums[k] / n).to(kept.dtype)
            feats[k] = kept
        d = _gram_products([feats[k] for k in keys]).numpy()
        na = len(la)
        return d[:na, na:], np.sqrt(np.diag(d)[:na]), np.sqrt(np.diag(d)[na:])


#: Gram entries (layers × rows × columns) made at once by the exact Gram form.
GRAM_BLOCK = 2**23


def _gram_products(feats: list[Tensor]) -> Tensor:
    """``tr(Kᵢ Kⱼ) = Σ Kᵢ ⊙ Kⱼ`` for the Gram matrices ``Kᵢ = Xᵢ Xᵢᵀ`` of centred features
    ``Xᵢ`` (n × Dᵢ) without holding any n × n matrix: blocks of rows ``r`` of every
    ``Kᵢ``, from the diagonal block rightwards (the Gram matrices are symmetric, so each
    block right of the diagonal stands for its transpose too and counts twice). Gram
    blocks at the features' precision, their products summed in float64."""
    n = feats[0].shape[0]
    rows = max(1, GRAM_BLOCK // (len(feats) * n))
    sq = torch.zeros(len(feats), len(feats), dtype=torch.float64)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        blocks = [f[start:stop] @ f[start:].T for f in feats]  # rows start..stop, columns start..n of each K
        diag = torch.stack([g[:, :stop - start].flatten() for g in blocks]).to(torch.float64)
        right = torch.stack([g[:, stop - start:].flatten() for g in blocks]).to(torch.float64)
        sq += diag @ diag.T + 2 * (right @ right.T)  # (layers, layers)
    return sq


class _RBF:
    """Exact CKA with a Gaussian kernel: features kept, n × n Gram matrices at the end."""

    def __init__(self, layers: dict[Side, list[str]], pool: Pool, sigma: float) -> None:
        self.layers, self.pool, self.sigma = layers, pool, sigma
        self.const = _Constancy()
        self.kept: dict[tuple[Side, str], list[Tensor]] = {}
        self.n = 0

    def update(self, side: Side, key: str, value: Tensor, offset: int) -> None:
        feats = _features(side, key, value, self.pool)
        self.const.update(side, key, value, feats)
        # float64 (squared distances cancel), a copy: the model may go on in place
        self.kept.setdefault((side, key), []).append(feats.to(torch.float64, copy=True))

    def finish(self, offset: int, x: Tensor, y: Tensor | None, out_a: Tensor, out_b: Tensor) -> None:
        self.n += x.shape[0]
        if self.n > RBF_MAX_INPUTS:
            raise ConfigError(f"kernel='rbf' keeps n × n Gram matrices and takes at most {RBF_MAX_INPUTS:,} inputs; "
                              "pass fewer inputs (e.g. dataset.subset(range(5000))) or use kernel='linear'")

    def centred_gram(self, feats: Tensor) -> Tensor:
        sq = (feats * feats).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2 * feats @ feats.T).clamp_min_(0)  # squared distances
        d2.fill_diagonal_(0)
        n = feats.shape[0]
        iu = torch.triu_indices(n, n, 1)
        median = float(d2[iu[0], iu[1]].sqrt().median()) if n > 1 else 0.0
        if median == 0:
            k = torch.ones_like(d2)  # every input at the same point: a constant kernel
        else:
            k = torch.exp(-d2 / (2 * (self.sigma * median) ** 2))
        k -= k.mean(0, keepdim=True)
        k -= k.mean(1, keepdim=True)
        return k  # H K H

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        la, lb = self.layers["a"], self.layers["b"]
        grams = {k: self.centred_gram(torch.cat(v)) for k, v in self.kept.items()}
        self.kept = {}

        def hsic(k1: tuple[Side, str], k2: tuple[Side, str]) -> float:
            return float((grams[k1] * grams[k2]).sum())

        cross = np.array([[hsic(("a", a), ("b", b)) for b in lb] for a in la])
        self_a = np.array([hsic(("a", a), ("a", a)) for a in la])
        self_b = np.array([hsic(("b", b), ("b", b)) for b in lb])
        return cross, np.sqrt(np.clip(self_a, 0, None)), np.sqrt(np.clip(self_b, 0, None)), self.sigma


class _Minibatch:
    """Nguyen et al.: the unbiased HSIC of each minibatch, kept per batch for the jackknife."""

    def __init__(self, layers: dict[Side, list[str]], pool: Pool) -> None:
        self.layers, self.pool = layers, pool
        self.const = _Constancy()
        self.grams: dict[tuple[Side, str], Tensor] = {}
        self.cross: list[np.ndarray] = []  # per batch: (La, Lb)
        self.self_a: list[np.ndarray] = []
        self.self_b: list[np.ndarray] = []
        self.skipped = 0
        self.n = 0

    def update(self, side: Side, key: str, value: Tensor, offset: int) -> None:
        feats = _features(side, key, value, self.pool)
        self.const.update(side, key, value, feats)
        gram = (feats @ feats.T).to(torch.float64)  # (b, b), made once per layer and batch, at the layer's precision
        gram.fill_diagonal_(0)
        self.grams[(side, key)] = gram

    def finish(self, offset: int, x: Tensor, y: Tensor | None, out_a: Tensor, out_b: Tensor) -> None:
        b = x.shape[0]
        self.n += b
        grams, self.grams = self.grams, {}
        if b < 4:  # the unbiased estimator divides by b (b - 3)
            self.skipped += b
            return

        def stacked(side: Side) -> tuple[Tensor, Tensor, Tensor]:
            g = torch.stack([grams[(side, k)] for k in self.layers[side]])  # (L, b, b)
            rows = g.sum(dim=2)  # K̃1, (L, b)
            return g.flatten(1), rows, rows.sum(dim=1)  # (L, b²), (L, b), 1ᵀK̃1 (L,)

        fa, ra, sa = stacked("a")
        fb, rb, sb = stacked("b")

        def hsic(f1: Tensor, r1: Tensor, s1: Tensor, f2: Tensor, r2: Tensor, s2: Tensor) -> np.ndarray:
            # unbiased HSIC (Song et al. 2012, eq. 5) for every pair at once:
            # [tr(K̃L̃) + 1ᵀK̃1 1ᵀL̃1 / ((b-1)(b-2)) - 2/(b-2) 1ᵀK̃L̃1] / (b(b-3))
            value = f1 @ f2.T + torch.outer(s1, s2) / ((b - 1) * (b - 2)) - 2 * (r1 @ r2.T) / (b - 2)
            return (value / (b * (b - 3))).numpy()

        self.cross.append(hsic(fa, ra, sa, fb, rb, sb))
        self.self_a.append(np.diag(hsic(fa, ra, sa, fa, ra, sa)).copy())
        self.self_b.append(np.diag(hsic(fb, rb, sb, fb, rb, sb)).copy())


# --- the front door -------------------------------------------------------------------------


def _choose_form(da: list[int], db: list[int], itemsize: int, n: int | None, budget: int) -> tuple[str, int]:
    """Which exact form fits ``budget`` bytes for layers of ``da`` and ``db`` features:
    ("features", bytes of the float64 accumulators), else ("gram", bytes of the features
    kept per input, ``itemsize`` bytes a number)."""
    accumulators = 8 * (sum(da) * sum(db) + sum(d * d for d in da) + sum(d * d for d in db))
    if accumulators <= budget:
        return "features", accumulators
    per_input = itemsize * (sum(da) + sum(db))
    if n is None or n * per_input <= budget:
        return "gram", per_input
    raise ConfigError(_too_big(min(accumulators, n * per_input), budget))


def _too_big(needed: int, budget: int) -> str:
    return (f"exact CKA of these layers needs {needed / 2**20:,.1f} MiB (memory_budget is {budget / 2**20:,.1f} MiB); "
            "use pool='mean', estimator='minibatch', fewer layers or inputs, or a larger memory_budget")


def cka(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Data,
    *,
    layers_a: str | Sequence[str] | None = None,
    layers_b: str | Sequence[str] | None = None,
    estimator: Estimator = "exact",
    kernel: Kernel = "linear",
    pool: Pool = "flatten",
    sigma: float = 0.8,
    batch_size: int = 256,
    memory_budget: int = DEFAULT_BUDGET,
    progress: bool | None = None,
) -> Similarity:
    """CKA between every chosen layer of ``model_a`` (rows) and of ``model_b`` (columns).

    Args:
        model_a, model_b: any two ``nn.Module`` reading the same inputs (may be the same one).
        data: an :class:`~convlens.data.ImageDataset`, a float tensor (N, C, H, W) or an
            iterable of batches; streamed once through both models.
        layers_a, layers_b: dotted names (default: every ``Conv2d``; ``layers_b`` defaults
            to ``layers_a`` when model B has those names, else to B's conv layers).
        estimator: ``"exact"`` (full dataset, float64) or ``"minibatch"`` (Nguyen et al.,
            with jackknife standard errors over the minibatches of ``batch_size``).
        kernel: ``"linear"``, or ``"rbf"`` (exact only, at most 5,000 inputs; σ = ``sigma``
            × the median distance).
        pool: ``"flatten"`` (C·H·W features) or ``"mean"`` (average over space: C features).
        memory_budget: bytes the exact estimator may keep (it picks its form to fit).
    """
    if estimator not in ("exact", "minibatch"):
        raise ConfigError(f"unknown estimator {estimator!r}: use 'exact' or 'minibatch'")
    if kernel not in ("linear", "rbf"):
        raise ConfigError(f"unknown kernel {kernel!r}: use 'linear' or 'rbf'")
    if pool not in ("flatten", "mean"):
        raise ConfigError(f"unknown pool {pool!r}: use 'flatten' (C·H·W features) or 'mean' (average over space)")
    if kernel == "rbf" and estimator != "exact":
        raise ConfigError("kernel='rbf' goes with estimator='exact'; the minibatch estimator is linear")
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ConfigError(f"sigma must be a positive fraction of the median distance, got {sigma!r}")
    batch_size = positive_int("batch_size", batch_size)
    memory_budget = positive_int("memory_budget", memory_budget)
    la = _names(model_a, layers_a, conv_layers)
    lb = _names(model_b, layers_b, lambda m: _default_b(m, la, layers_a is not None))
    layers: dict[Side, list[str]] = {"a": la, "b": lb}
    settings: dict[str, Any] = {"pool": pool, "batch_size": batch_size}
    reducer: _Exact | _RBF | _Minibatch
    if estimator == "minibatch":
        reducer = _Minibatch(layers, pool)
    elif kernel == "rbf":
        reducer = _RBF(layers, pool, float(sigma))
        settings["sigma"] = float(sigma)
    else:
        from convlens.inspect.passes import count_inputs

        reducer = _Exact(layers, pool, count_inputs(data), memory_budget)
    n, _ = stream_pair(model_a, model_b, data, la, lb, [reducer], batch_size=batch_size, progress=progress,
                       description="CKA")
    constant, words = reducer.const.report(layers)
    stderr = None
    if isinstance(reducer, _Minibatch):
        raw, stderr, bad = _minibatch_result(reducer)
        settings.update(batches=len(reducer.cross), skipped_inputs=reducer.skipped)
        if reducer.skipped:
            words.append(f"the last {reducer.skipped} inputs formed a batch of fewer than 4 and were left out "
                         "(the unbiased estimator needs 4)")
    elif isinstance(reducer, _RBF):
        cross, na, nb, _ = reducer.result()
        raw, bad = _ratio(cross, na**2, nb**2)
    else:
        settings.update(form=reducer.form, memory_bytes=reducer.memory * (n if reducer.form == "gram" else 1),
                        memory_budget=memory_budget)
        cross, na, nb = reducer.result()
        raw, bad = _ratio(cross, na**2, nb**2)  # ‖XᵀY‖² / (‖XᵀX‖ ‖YᵀY‖)
    for i, a in enumerate(la):
        for j, b in enumerate(lb):
            if ("a", a) in constant or ("b", b) in constant:
                raw[i, j], bad[i, j] = 0.0, True
    if bad.any() and not constant:
        words.append(f"{int(bad.sum())} entries had no positive self-similarity to divide by and are reported as 0")
    for w in words:
        warnings.warn(w, CKAWarning, stacklevel=2)
    if stderr is not None:
        stderr = np.where(bad, 0.0, stderr)
    return Similarity(np.clip(raw, 0.0, 1.0), tuple(la), tuple(lb), estimator, kernel, n, settings, stderr, raw,
                      tuple(words))


def _minibatch_result(r: _Minibatch) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    if not r.cross:
        raise ConfigError("the minibatch estimator needs batches of at least 4 inputs; pass more inputs or a "
                          "larger batch_size")
    cross, sa, sb = np.stack(r.cross), np.stack(r.self_a), np.stack(r.self_b)  # (B, La, Lb), (B, La), (B, Lb)
    value, bad = _ratio(cross.mean(0), sa.mean(0), sb.mean(0))
    nb = cross.shape[0]
    if nb < 2:
        return value, None, bad
    # jackknife over minibatches: the estimate without each batch in turn
    loo = [_ratio((cross.sum(0) - cross[i]) / (nb - 1), (sa.sum(0) - sa[i]) / (nb - 1),
                  (sb.sum(0) - sb[i]) / (nb - 1))[0] for i in range(nb)]
    stack = np.stack(loo)
    stderr = np.sqrt((nb - 1) / nb * ((stack - stack.mean(0)) ** 2).sum(0))
    return value, stderr, bad


def _names(model: nn.Module, given: str | Sequence[str] | None, default: Any) -> list[str]:
    from convlens.inspect.capture import resolve_layers

    if given is None:
        return list(default(model))
    names = [given] if isinstance(given, str) else list(given)
    resolve_layers(model, names)  # unknown names: a LayerError with suggestions
    if len(set(names)) != len(names):
        raise ConfigError(f"layers {names} name a layer twice; name each layer once")
    return names


def _default_b(model_b: nn.Module, la: list[str], chosen: bool) -> list[str]:
    """Model B's layers: A's names when B has them all (two runs of one architecture)."""
    have = {n for n, _ in model_b.named_modules()}
    if all(n in have for n in la):
        return list(la)
    if chosen:
        missing = next(n for n in la if n not in have)
        from convlens.inspect.capture import layer_names

        raise LayerError(unknown_name("layer of model B", missing, layer_names(model_b)) +
                         "; name model B's layers with layers_b=...")
    return conv_layers(model_b)
