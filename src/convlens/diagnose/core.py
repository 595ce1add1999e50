"""Why is the model wrong? Confusion, calibration, an error gallery and suspected label errors.

:func:`diagnose` streams the data through the model once, in eval mode without gradients,
keeping per input only its class probabilities (``N × C`` numbers). Everything else is
computed from those numbers in a few tensor operations over all inputs, and only the
gallery (and the confusion cells it summarises) is explained, in batches:

* ``confusion`` ``C × C`` counts (rows: the true class, columns: the predicted one), per
  class precision, recall, F1 and support, accuracy and top-k accuracy;
* ``ece``: the expected calibration error over 15 equal-width confidence bins
  ``(0, 1/15], (1/15, 2/15], ...``: ``sum_b n_b / N · |accuracy_b − confidence_b|``
  (Guo et al. 2017), with the bins as ``reliability``;
* ``errors``: the gallery. ``confident_wrong`` (the wrong predictions of highest
  confidence), ``unsure_right`` (the right ones of lowest confidence) and ``ambiguous``
  (the smallest margin between the two most likely classes). Each item has its top-3
  probabilities, the CAM of the predicted and of the true class on one scale (both divided
  by the larger peak of the two) and their difference, the deletion AUC of the
  predicted-class map (:func:`convlens.explain.perturbation_curves`; lower: the map finds
  what the prediction rests on), and its nearest training examples by cosine similarity
  of the penultimate features (the input of the last ``nn.Linear`` that runs), exact;
* ``suspected_label_errors``: confident learning (Northcutt et al. 2021), per-class
  thresholds and pruning by noise rate (see :func:`confident_learning`), ranked by
  self-confidence, the probability of the given label, lowest first. They are kept apart
  from the model's errors: a gallery item says whether its label is suspected;
* ``cells``: per off-diagonal confusion cell (true 4 → predicted 9), its inputs and the mean
  CAM difference of its most confident ones.

>>> d = convlens.diagnose(run.model, test, train=train)      # doctest: +SKIP
>>> d.accuracy, d.ece, d.cell(4, 9).items[:3]                  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from convlens._progress import progress_bar
from convlens.diagnose._data import Source
from convlens.errors import ConfigError, DataError, positive_int
from convlens.inspect._state import device_and_dtype, evaluating

__all__ = ["BINS", "KINDS", "Cell", "Diagnosis", "GalleryItem", "LabelSuspect", "Neighbour", "Reliability",
           "diagnose"]

#: Equal-width confidence bins of the calibration error and the reliability diagram.
BINS = 15
#: The gallery's three kinds of example, in the order they are shown.
KINDS = ("confident_wrong", "unsure_right", "ambiguous")
_KIND_WORDS = {
    "confident_wrong": "most confident wrong",
    "unsure_right": "least confident right",
    "ambiguous": "most ambiguous (smallest top-2 margin)",
}


def _floats(a: Any) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(a, dtype=np.float64).ravel()]


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Neighbour:
    """A training example near a gallery item in the penultimate feature space."""

    index: int
    similarity: float  # cosine
    label: int | None


@dataclass(frozen=True)
class LabelSuspect:
    """An input whose label confident learning doubts."""

    index: int
    given: int  # the label in the data
    suspected: int  # the likeliest class that reaches its per-class threshold
    self_confidence: float  # the probability of the given label
    predicted: int

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "given": self.given, "suspected": self.suspected,
                "self_confidence": round(self.self_confidence, 6), "predicted": self.predicted}


@dataclass(eq=False)
class GalleryItem:
    """One example of the gallery, with its maps (``H × W``, on one scale: both CAMs divided
    by the larger peak of the two; ``cam_difference = cam_pred − cam_true`` in [−1, 1])."""

    index: int
    kind: str
    label: int
    predicted: int
    confidence: float
    margin: float  # top-1 minus top-2 probability
    top3: list[tuple[int, float]]
    suspected_label_error: bool
    x: NDArray[np.float32] = field(repr=False)  # (C, H, W) the model input
    cam_pred: NDArray[np.float32] = field(repr=False)
    cam_true: NDArray[np.float32] = field(repr=False)
    cam_difference: NDArray[np.float32] = field(repr=False)
    deletion: float  # deletion AUC of the predicted-class map (lower: more faithful)
    neighbours: list[Neighbour] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return self.label == self.predicted

    def to_dict(self, *, maps: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index, "kind": self.kind, "label": self.label, "predicted": self.predicted,
            "confidence": round(self.confidence, 6), "margin": round(self.margin, 6),
            "top3": [{"class": c, "probability": round(p, 6)} for c, p in self.top3],
            "suspected_label_error": self.suspected_label_error,
            "deletion_auc": round(self.deletion, 6),
            "neighbours": [{"index": n.index, "similarity": round(n.similarity, 6), "label": n.label}
                           for n in self.neighbours],
        }
        if maps:
            out.update(cam_pred=np.round(self.cam_pred, 4).tolist(), cam_true=np.round(self.cam_true, 4).tolist(),
                       cam_difference=np.round(self.cam_difference, 4).tolist())
        return out


@dataclass(eq=False)
class Cell:
    """The inputs of true class ``true`` predicted as ``predicted`` (``items``, by index), and
    the mean CAM difference (predicted − true) over the ``averaged`` most confident of them
    (``None`` where the cell was not explained)."""

    true: int
    predicted: int
    items: list[int]
    mean_cam_difference: NDArray[np.float32] | None = field(default=None, repr=False)
    averaged: int = 0

    @property
    def count(self) -> int:
        return len(self.items)

    def to_dict(self, *, maps: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"true": self.true, "predicted": self.predicted, "count": self.count,
                               "items": self.items, "averaged": self.averaged}
        if maps and self.mean_cam_difference is not None:
            out["mean_cam_difference"] = np.round(self.mean_cam_difference, 4).tolist()
        return out


@dataclass(frozen=True)
class Reliability:
    """The calibration bins: ``edges`` ``(BINS + 1,)``; per bin the number of inputs, their
    mean confidence and their accuracy (NaN for an empty bin)."""

    edges: NDArray[np.float64]
    counts: NDArray[np.int64]
    confidence: NDArray[np.float64]
    accuracy: NDArray[np.float64]

    def to_dict(self) -> dict[str, Any]:
        return {"edges": _floats(self.edges), "counts": self.counts.tolist(),
                "confidence": _floats(self.confidence), "accuracy": _floats(self.accuracy)}


@dataclass(eq=False)
class Diagnosis:
    """What :func:`diagnose` found (see the module docstring)."""

    n: int
    classes: tuple[str, ...]
    confusion: NDArray[np.int64]
    precision: NDArray[np.float64]
    recall: NDArray[np.float64]
    f1: NDArray[np.float64]
    support: NDArray[np.int64]
    accuracy: float
    top_k: int
    top_k_accuracy: float
    ece: float
    reliability: Reliability
    errors: dict[str, list[GalleryItem]]
    suspected_label_errors: list[LabelSuspect]
    cells: list[Cell]
    probabilities: NDArray[np.float32] = field(repr=False)  # (N, C)
    labels: NDArray[np.int64] = field(repr=False)  # (N,)
    method: str = "gradcam"
    layers: tuple[str, ...] = ()
    feature_layer: str | None = None
    thresholds: NDArray[np.float64] | None = field(default=None, repr=False)  # confident learning, per class
    notes: list[str] = field(default_factory=list)

    @property
    def predictions(self) -> NDArray[np.int64]:
        return self.probabilities.argmax(1).astype(np.int64)

    @property
    def n_errors(self) -> int:
        return int(self.n - np.trace(self.confusion))

    @property
    def gallery_note(self) -> str | None:
        """What the gallery cannot show, in words (``None`` when it is complete)."""
        return self.notes[0] if self.notes else None

    def cell(self, true: int, predicted: int) -> Cell:
        """The confusion cell ``true → predicted`` (an empty one if no input fell there)."""
        for c in self.cells:
            if (c.true, c.predicted) == (true, predicted):
                return c
        c_ = len(self.classes)
        if not (0 <= true < c_ and 0 <= predicted < c_):
            raise ConfigError(f"classes run 0..{c_ - 1}; got cell {true} → {predicted}")
        return Cell(true, predicted, [])

    def summary(self) -> str:
        """A few lines for a terminal."""
        lines = [f"{self.n} inputs, {len(self.classes)} classes: accuracy {self.accuracy:.2%}, top-{self.top_k} "
                 f"{self.top_k_accuracy:.2%}, ECE {self.ece:.4f} ({BINS} bins), {self.n_errors} errors"]
        worst = [c for c in self.cells[:3]]
        if worst:
            lines.append("most confused: " + ", ".join(
                f"{self.classes[c.true]} → {self.classes[c.predicted]} ({c.count})" for c in worst))
        lines.append(f"suspected label errors: {len(self.suspected_label_errors)}" + (
            " (lowest self-confidence first: " + ", ".join(str(s.index) for s in self.suspected_label_errors[:8])
            + ")" if self.suspected_label_errors else ""))
        lines.extend(self.notes)
        return "\n".join(lines)

    def to_dict(self, *, maps: bool = False) -> dict[str, Any]:
        """Everything as JSON-ready values (``maps``: with the CAMs of the gallery and cells)."""
        return {
            "n": self.n,
            "classes": list(self.classes),
            "accuracy": round(self.accuracy, 6),
            "top_k": self.top_k,
            "top_k_accuracy": round(self.top_k_accuracy, 6),
            "ece": round(self.ece, 6),
            "bins": BINS,
            "confusion": self.confusion.tolist(),
            "per_class": [
                {"class": name, "precision": round(float(p), 6), "recall": round(float(r), 6),
                 "f1": round(float(f), 6), "support": int(s)}
                for name, p, r, f, s in zip(self.classes, self.precision, self.recall, self.f1, self.support,
                                            strict=True)
            ],
            "reliability": self.reliability.to_dict(),
            "method": self.method,
            "layers": list(self.layers),
            "feature_layer": self.feature_layer,
            "errors": {kind: [item.to_dict(maps=maps) for item in items] for kind, items in self.errors.items()},
            "suspected_label_errors": [s.to_dict() for s in self.suspected_label_errors],
            "label_thresholds": None if self.thresholds is None else _floats(self.thresholds),
            "cells": [c.to_dict(maps=maps) for c in self.cells],
            "notes": list(self.notes),
        }


# --- the metrics, from counts and probabilities ----------------------------------------------


def per_class(confusion: NDArray[np.int64]) -> tuple[NDArray[np.float64], ...]:
    """Precision, recall and F1 per class from a confusion matrix (0 where undefined)."""
    cm = confusion.astype(np.float64)
    tp = np.diag(cm)
    predicted, actual = cm.sum(0), cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def bin_of(confidence: Tensor) -> Tensor:
    """The calibration bin of each confidence: bin ``b`` holds ``(b/15, (b+1)/15]``."""
    edges = torch.linspace(0.0, 1.0, BINS + 1, dtype=torch.float64, device=confidence.device)
    return torch.bucketize(confidence.to(torch.float64), edges[1:-1], right=False)


def confident_learning(probs: Tensor, labels: Tensor) -> tuple[list[LabelSuspect], Tensor]:
    """Suspected label errors, lowest self-confidence first, and the per-class thresholds.

    Confident learning (Northcutt et al. 2021) with pruning by noise rate: the threshold
    ``t_j`` is the mean probability of ``j`` over the inputs labelled ``j``; the confident
    joint counts, per given label ``i``, the inputs whose likeliest class among those
    reaching their threshold is ``j``; calibrated (each row scaled to the number of inputs
    labelled ``i``) it estimates how many inputs labelled ``i`` truly are ``j``, and that
    many inputs labelled ``i`` with the largest margin ``p_j − p_i`` are suspected (the class
    ``j`` of the largest such margin is the suspected true one).
    """
    c = probs.shape[1]
    p = probs.to(torch.float64)
    counts = torch.bincount(labels, minlength=c).to(torch.float64)
    sums = torch.zeros(c, c, dtype=torch.float64)
    sums.index_add_(0, labels, p)  # row y: the summed probabilities of the inputs labelled y
    inf = torch.full((c,), float("inf"), dtype=torch.float64)
    thresholds = torch.where(counts > 0, sums.diagonal() / counts.clamp_min(1), inf)
    above = p >= thresholds
    likeliest = torch.where(above, p, torch.full_like(p, -1.0)).argmax(1)
    joint = torch.zeros(c * c, dtype=torch.float64)
    has = above.any(1)
    joint.index_add_(0, labels[has] * c + likeliest[has], torch.ones(int(has.sum()), dtype=torch.float64))
    joint = joint.view(c, c)
    rows = joint.sum(1, keepdim=True)
    calibrated = torch.where(rows > 0, joint / rows.clamp_min(1) * counts.unsqueeze(1), torch.zeros_like(joint))
    own = p.gather(1, labels.unsqueeze(1)).squeeze(1)
    margin = p - own.unsqueeze(1)  # (N, C): p_j − p_given
    best = torch.full((p.shape[0],), -float("inf"), dtype=torch.float64)
    suspected = torch.full((p.shape[0],), -1, dtype=torch.long)
    for i in range(c):
        members = (labels == i).nonzero().squeeze(1)
        for j in range(c):
            take = round(float(calibrated[i, j]))
            if i == j or take == 0 or members.numel() == 0:
                continue
            m = margin[members, j]
            chosen = members[torch.sort(-m, stable=True).indices[:take]]
            better = margin[chosen, j] > best[chosen]
            best[chosen[better]] = margin[chosen[better], j]
            suspected[chosen[better]] = j
    idx = (suspected >= 0).nonzero().squeeze(1)
    order = idx[torch.sort(own[idx], stable=True).indices]
    predicted = p.argmax(1)
    suspects = [LabelSuspect(int(i), int(labels[i]), int(suspected[i]), float(own[i]), int(predicted[i]))
                for i in order.tolist()]
    return suspects, thresholds


# --- the pass -------------------------------------------------------------------------------


@dataclass
class _Counts:
    """What the streamed pass keeps (each batch's probabilities and labels), and the counts
    made from them once at the end, over all inputs in a few tensor operations (a dozen
    small operations per batch cost more than the counting)."""

    classes: int
    top_k: int
    probs: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)
    confusion: Tensor = field(init=False)
    bin_count: Tensor = field(init=False)
    bin_confidence: Tensor = field(init=False)
    bin_correct: Tensor = field(init=False)
    top_hits: int = 0

    def update(self, logits: Tensor, y: Tensor) -> None:
        self.probs.append(logits.detach().float().softmax(1).cpu())
        self.labels.append(y.cpu())

    def finish(self) -> tuple[Tensor, Tensor]:
        """Count; returns all probabilities ``(N, C)`` and labels ``(N,)``."""
        probs, y = torch.cat(self.probs), torch.cat(self.labels)
        self.probs, self.labels = [probs], [y]
        conf, pred = probs.max(1)
        c = self.classes
        self.confusion = torch.bincount(y * c + pred, minlength=c * c)
        b = bin_of(conf)
        self.bin_count = torch.bincount(b, minlength=BINS)
        self.bin_confidence = torch.zeros(BINS, dtype=torch.float64).index_add_(0, b, conf.to(torch.float64))
        self.bin_correct = torch.zeros(BINS, dtype=torch.float64).index_add_(0, b, (pred == y).to(torch.float64))
        self.top_hits = int((probs.topk(self.top_k, 1).indices == y.unsqueeze(1)).any(1).sum())
        return probs, y


def _check_logits(logits: object, batch: int, classes: int | None, what: str) -> Tensor:
    if not isinstance(logits, Tensor):
        raise ConfigError(f"the model returned a {type(logits).__name__}; diagnose needs a tensor of scores "
                          "N × classes: wrap the model so that forward returns one")
    if logits.dim() != 2 or logits.shape[0] != batch:
        raise ConfigError(f"the model output has shape {tuple(logits.shape)} for a batch of {batch} inputs; "
                          f"diagnose needs scores N × classes ({batch} × classes)")
    if classes is not None and logits.shape[1] != classes:
        raise ConfigError(f"the model gives {logits.shape[1]} scores per input but {what} has {classes} classes; "
                          "diagnose the model with the data it was trained for")
    return logits


def _labels(y: Tensor | None, classes: int, what: str) -> Tensor:
    if y is None:
        raise DataError(f"{what} carries no labels; diagnose needs the true class of every input")
    y = y.to(torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise DataError(f"{what} has label {bad} but the model gives scores for classes 0..{classes - 1}; "
                        "diagnose the model with the data it was trained for")
    return y


def _stream(model: nn.Module, source: Source, top_k: int, batch_size: int, progress: bool | None) -> _Counts:
    device, dtype = device_and_dtype(model)
    expected = len(source.classes) if source.classes is not None else None
    counts: _Counts | None = None
    with evaluating(model), progress_bar("diagnosing", source.count(), enabled=progress) as bar:
        for x, y in source.batches(batch_size):
            if x.shape[0] == 0:
                continue
            x = x.to(device=device, dtype=dtype)
            logits = _check_logits(model(x), x.shape[0], expected, source.what)
            if counts is None:
                c = int(logits.shape[1])
                counts = _Counts(c, min(top_k, c))
            counts.update(logits, _labels(y, counts.classes, source.what))
            bar.advance(x.shape[0])
    if counts is None:
        raise DataError(f"{source.what} is empty: there are no inputs to diagnose")
    return counts


# --- the gallery ------------------------------------------------------------------------------


def _first(order: Tensor, m: int) -> list[int]:
    return [int(i) for i in order[:m].tolist()]


def select_gallery(probs: Tensor, labels: Tensor, k: int) -> dict[str, list[int]]:
    """Indices of the three kinds of gallery example, ``k`` in all (split evenly; ties:
    the lower index first)."""
    sizes = [k // 3 + (i < k % 3) for i in range(3)]
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().squeeze(1)
    right = (pred == labels).nonzero().squeeze(1)
    top2 = probs.topk(min(2, probs.shape[1]), 1).values
    margin = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0)
    return {
        "confident_wrong": _first(wrong[torch.sort(-conf[wrong], stable=True).indices], sizes[0]),
        "unsure_right": _first(right[torch.sort(conf[right], stable=True).indices], sizes[1]),
        "ambiguous": _first(torch.sort(margin, stable=True).indices, sizes[2]),
    }


def _explain_pairs(model: nn.Module, x: Tensor, pred: Tensor, true: Tensor, method: str,
                   layer: str | list[str] | None, batch_size: int, options: dict[str, Any],
                   ) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """CAMs ``(n, H, W)`` of the predicted and true classes of ``x``, on one scale per input:
    one explained row per input, plus one for each input whose true class differs."""
    from convlens.explain import cam

    wrong = (pred != true).nonzero().squeeze(1)
    sample = torch.cat([torch.arange(x.shape[0]), wrong])
    target = torch.cat([pred, true[wrong]])
    parts: list[Tensor] = []
    layers: tuple[str, ...] = ()
    for start in range(0, sample.numel(), batch_size):
        rows = sample[start:start + batch_size]
        result = cam(model, x[rows], method=method, layer=layer, target=target[start:start + batch_size], **options)
        parts.append(result.maps.detach().float().cpu())
        layers = result.layers
    maps = torch.cat(parts)
    cam_pred = maps[: x.shape[0]].clone()
    cam_true = cam_pred.clone()
    cam_true[wrong] = maps[x.shape[0]:]
    peak = torch.maximum(cam_pred.flatten(1).amax(1), cam_true.flatten(1).amax(1))
    scale = peak.clamp_min(torch.finfo(torch.float32).tiny).view(-1, 1, 1)
    return cam_pred / scale, cam_true / scale, layers


def _deletion(model: nn.Module, x: Tensor, maps: Tensor, classes: Tensor, black: Tensor | None, steps: int,
              batch_size: int) -> Tensor:
    from convlens.explain import auc, perturbation_curves

    baseline: float | Tensor = 0.0 if black is None else black
    curves = perturbation_curves(model, x, maps, classes, mode="deletion", steps=steps, baseline=baseline,
                                 batch_size=batch_size, progress=False)
    return auc(curves).float().cpu()


# --- the penultimate features and nearest neighbours -----------------------------------------


def feature_layer(model: nn.Module, x: Tensor) -> str:
    """The last ``nn.Linear`` to run on ``x`` (one sample is run): its input is the
    penultimate feature vector."""
    from convlens.inspect.capture import observe

    linear = [name for name, m in model.named_modules() if name and isinstance(m, nn.Linear)]
    if not linear:
        raise ConfigError("the model has no nn.Linear whose input could serve as the penultimate features; pass "
                          "feature_layer='name' (a module whose input is the feature vector), or train=None")
    order: list[str] = []
    device, dtype = device_and_dtype(model)
    with evaluating(model), observe(model, linear, lambda name, v: order.append(name), inputs=True):
        model(x[:1].to(device=device, dtype=dtype))
    if not order:
        raise ConfigError("no nn.Linear of the model ran; pass feature_layer='name' (a module whose input is the "
                          "feature vector), or train=None")
    return order[-1]


def features(model: nn.Module, x: Tensor, layer: str) -> Tensor:
    """The input of ``layer`` for ``x``, flattened to ``(N, D)`` (float64, on the CPU)."""
    from convlens.inspect.capture import capture

    device, dtype = device_and_dtype(model)
    with evaluating(model):
        result = capture(model, layer, inputs=True).run(x.to(device=device, dtype=dtype))
    value = result[layer]
    if isinstance(value, list):
        value = value[-1]
    return value.flatten(1).to(torch.float64).cpu()


def _unit(f: Tensor) -> Tensor:
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-300)


def nearest_neighbours(model: nn.Module, queries: Tensor, train: Source, layer: str, m: int, batch_size: int,
                       progress: bool | None) -> tuple[Tensor, Tensor, Tensor]:
    """For each row of ``queries`` ``(G, D)``, the ``m`` training inputs of highest cosine
    similarity, exact, streaming ``train`` once: ``(similarities, indices, labels)``, each
    ``(G, m)``, best first (ties: the lower index first); labels ``-1`` if unknown."""
    from convlens.inspect.capture import observe

    q = _unit(queries)
    g = q.shape[0]
    best = torch.empty(g, 0, dtype=torch.float64)
    best_i = torch.empty(g, 0, dtype=torch.long)
    best_y = torch.empty(g, 0, dtype=torch.long)
    device, dtype = device_and_dtype(model)
    seen: list[Tensor] = []
    offset = 0

    def keep(name: str, value: Any) -> None:
        seen.append(value.flatten(1).to(torch.float64).cpu())

    with evaluating(model), observe(model, layer, keep, inputs=True), \
            progress_bar("neighbours", train.count(), enabled=progress) as bar:
        for x, y in train.batches(batch_size):
            if x.shape[0] == 0:
                continue
            seen.clear()
            model(x.to(device=device, dtype=dtype))
            f = _unit(seen[-1])
            if f.shape[1] != q.shape[1]:
                raise ConfigError(f"the training inputs give {f.shape[1]} features at {layer!r} but the data "
                                  f"{q.shape[1]}; use training data of the same shape")
            sims = q @ f.T  # (G, B)
            idx = torch.arange(offset, offset + f.shape[0]).expand(g, -1)
            lab = (torch.full((f.shape[0],), -1, dtype=torch.long) if y is None else y.to(torch.long).cpu())
            vals = torch.cat([best, sims], 1)  # earlier (lower) indices first: a stable sort keeps them first
            order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :m]
            best = vals.gather(1, order)
            best_i = torch.cat([best_i, idx], 1).gather(1, order)
            best_y = torch.cat([best_y, lab.expand(g, -1)], 1).gather(1, order)
            offset += f.shape[0]
            bar.advance(f.shape[0])
    if offset == 0:
        raise DataError(f"{train.what} is empty: there are no training inputs to find neighbours among")
    return best, best_i, best_y


# --- the front door -------------------------------------------------------------------------


def diagnose(
    model: nn.Module,
    data: Any,
    *,
    method: str = "gradcam",
    layer: str | list[str] | None = None,
    k: int = 24,
    train: Any = None,
    neighbours: int = 5,
    top_k: int = 5,
    cells: int = 10,
    cell_items: int = 16,
    deletion_steps: int = 16,
    feature_layer_name: str | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
    **options: Any,
) -> Diagnosis:
    """Diagnose ``model`` on labelled ``data`` (see the module docstring).

    Args:
        model: any classifier ``nn.Module`` returning scores ``(N, classes)``; left exactly as it came.
        data: an :class:`~convlens.data.ImageDataset`, ``(x, y)`` tensors, or a re-iterable of
            ``(x, y)`` batches (e.g. a ``DataLoader``); 1 or 3 channels, any size.
        method, layer, options: the explanation method of the gallery's CAMs (a name from
            :data:`convlens.explain.METHODS`), its layer (``None``: the last spatial one) and options.
        k: gallery size, split evenly over the three kinds (0: no gallery, no CAMs).
        train: the training data, in any of the forms of ``data`` (labels optional), for each
            gallery item's ``neighbours`` nearest training examples (``None``: none).
        top_k: the k of top-k accuracy.
        cells: how many of the largest confusion cells get a mean CAM difference, each over
            its ``cell_items`` most confident inputs.
        deletion_steps: points of each deletion curve (each costs one forward pass per item).
        feature_layer_name: the module whose input is the penultimate feature vector
            (default: the last ``nn.Linear`` that runs).
        batch_size: inputs per forward pass; progress: a bar (``None``: on a terminal).

    Raises:
        ConfigError, DataError: the model's output is not ``N × classes``, its class count is
            not the data's, the data is empty or not labelled (one line naming the fix).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}; pass the model itself")
    for name, value in (("k", k), ("neighbours", neighbours), ("cells", cells), ("cell_items", cell_items)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a whole number of at least 0, got {value!r}")
    positive_int("top_k", top_k)
    positive_int("deletion_steps", deletion_steps)
    positive_int("batch_size", batch_size)
    from convlens.explain import get_method

    method = get_method(method).name  # an unknown name fails before the pass
    source = Source(data, "the data")
    train_source = Source(train, "the training data", labels_required=False) if train is not None else None

    counts = _stream(model, source, top_k, batch_size, progress)
    probs, labels = counts.finish()
    n, c = probs.shape
    names = source.classes if source.classes is not None else tuple(str(i) for i in range(c))
    confusion = counts.confusion.view(c, c).numpy().astype(np.int64)
    precision, recall, f1 = per_class(confusion)
    bins = counts.bin_count.numpy().astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(bins > 0, counts.bin_confidence.numpy() / np.maximum(bins, 1), np.nan)
        bin_acc = np.where(bins > 0, counts.bin_correct.numpy() / np.maximum(bins, 1), np.nan)
    ece = float(np.nansum(bins / n * np.abs(bin_acc - mean_conf)))
    reliability = Reliability(np.linspace(0.0, 1.0, BINS + 1), bins, mean_conf, bin_acc)
    suspects, thresholds = confident_learning(probs, labels)
    suspected = torch.zeros(n, dtype=torch.bool)
    if suspects:
        suspected[torch.tensor([s.index for s in suspects])] = True

    conf, pred = probs.max(1)
    notes: list[str] = []
    if counts.confusion.sum() == counts.confusion.view(c, c).diagonal().sum():
        notes.append(f"no errors: all {n} inputs are classified correctly, so the gallery has no wrong "
                     "predictions and there are no confusion cells")

    # confusion cells, largest first (ties: the lower true class, then predicted class)
    off = [(int(confusion[i, j]), i, j) for i in range(c) for j in range(c) if i != j and confusion[i, j] > 0]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    cell_list: list[Cell] = []
    for _, i, j in off:
        inside = ((labels == i) & (pred == j)).nonzero().squeeze(1)
        cell_list.append(Cell(i, j, [int(v) for v in inside.tolist()]))

    chosen = select_gallery(probs, labels, k)
    cell_members: list[list[int]] = []
    for cell in cell_list[:cells] if cell_items else []:
        inside = torch.tensor(cell.items)
        top = inside[torch.sort(-conf[inside], stable=True).indices][:cell_items]
        cell_members.append([int(v) for v in top.tolist()])
    wanted = sorted({i for ids in chosen.values() for i in ids} | {i for ids in cell_members for i in ids})
    gallery_ids = sorted({i for ids in chosen.values() for i in ids})

    errors: dict[str, list[GalleryItem]] = {kind: [] for kind in KINDS}
    layers: tuple[str, ...] = ()
    feat_name: str | None = None
    if wanted:
        idx = torch.tensor(wanted)
        x = source.gather(idx, batch_size)
        cam_pred, cam_true, layers = _explain_pairs(model, x, pred[idx], labels[idx], method, layer, batch_size,
                                                    options)
        row = {v: r for r, v in enumerate(wanted)}
        for cell, members in zip(cell_list, cell_members, strict=False):
            rows = torch.tensor([row[v] for v in members])
            cell.mean_cam_difference = (cam_pred[rows] - cam_true[rows]).mean(0).numpy()
            cell.averaged = len(members)
        if gallery_ids:
            g_rows = torch.tensor([row[v] for v in gallery_ids])
            g_idx = torch.tensor(gallery_ids)
            xg = x[g_rows]
            deletion = _deletion(model, xg, cam_pred[g_rows], pred[g_idx], source.black, deletion_steps, batch_size)
            near: tuple[Tensor, Tensor, Tensor] | None = None
            if train_source is not None and neighbours:
                feat_name = feature_layer_name or feature_layer(model, xg)
                near = nearest_neighbours(model, features(model, xg, feat_name), train_source, feat_name,
                                          neighbours, batch_size, progress)
            top3 = probs[g_idx].topk(min(3, c), 1)
            top2 = probs[g_idx].topk(min(2, c), 1).values
            margins = top2[:, 0] - (top2[:, 1] if c > 1 else 0)
            items: dict[int, tuple[int, GalleryItem]] = {}
            for gi, v in enumerate(gallery_ids):
                r = row[v]
                nb = [] if near is None else [
                    Neighbour(int(near[1][gi, t]), float(near[0][gi, t]), None if int(near[2][gi, t]) < 0
                              else int(near[2][gi, t]))
                    for t in range(near[0].shape[1])
                ]
                items[v] = (gi, GalleryItem(
                    index=v, kind="", label=int(labels[v]), predicted=int(pred[v]), confidence=float(conf[v]),
                    margin=float(margins[gi]),
                    top3=[(int(cl), float(p)) for cl, p in zip(top3.indices[gi].tolist(), top3.values[gi].tolist(),
                                                                 strict=True)],
                    suspected_label_error=bool(suspected[v]), x=x[r].detach().float().cpu().numpy(),
                    cam_pred=cam_pred[r].numpy(), cam_true=cam_true[r].numpy(),
                    cam_difference=(cam_pred[r] - cam_true[r]).numpy(), deletion=float(deletion[gi]),
                    neighbours=nb))
            for kind in KINDS:
                errors[kind] = [_as_kind(items[v][1], kind) for v in chosen[kind]]

    return Diagnosis(
        n=n, classes=tuple(names), confusion=confusion, precision=precision, recall=recall, f1=f1,
        support=confusion.sum(1).astype(np.int64), accuracy=float(np.trace(confusion)) / n,
        top_k=counts.top_k, top_k_accuracy=counts.top_hits / n, ece=ece, reliability=reliability,
        errors=errors, suspected_label_errors=suspects, cells=cell_list,
        probabilities=probs.numpy(), labels=labels.numpy().astype(np.int64), method=method, layers=layers,
        feature_layer=feat_name, thresholds=thresholds.numpy(), notes=notes,
    )


def _as_kind(item: GalleryItem, kind: str) -> GalleryItem:
    import dataclasses

    return dataclasses.replace(item, kind=kind)


def describe_kind(kind: str) -> str:
    """The words for a gallery kind (``"most confident wrong"``)."""
    return _KIND_WORDS[kind]

