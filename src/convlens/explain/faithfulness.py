"""How far can a heatmap be trusted? Faithfulness metrics and the randomisation sanity check.

* **Deletion and insertion** (Petsiuk et al. 2018, RISE): remove the pixels from the most
  to the least relevant (set them to a baseline) and follow the target's probability;
  or start from a blurred copy and insert the original pixels in that order. A faithful
  map makes the deletion curve fall fast (low AUC) and the insertion curve rise fast
  (high AUC). Curves have ``steps + 1`` points at fractions ``0, 1/steps, ..., 1``; the
  AUC is the trapezoidal area over [0, 1].
* **Average Drop and Increase in Confidence** (Chattopadhyay et al. 2018, Grad-CAM++):
  with ``Y`` the target's probability for the image and ``O`` for the image masked by the
  normalised map (``baseline + map * (x - baseline)``; the paper's ``map ⊙ x`` is baseline
  0), Average Drop = ``100 · mean(max(0, Y - O) / Y)`` (lower is better) and Increase in
  Confidence = ``100 · mean(Y < O)`` (higher is better).
* **Model randomisation** (Adebayo et al. 2018, Sanity Checks for Saliency Maps): the
  Spearman rank correlation between the maps of the trained model and of the same model
  with re-initialised weights. A map that stays the same when the weights are random
  does not depend on what the model learned; correlations at or above ``threshold``
  are flagged.

Every perturbed input runs in batches (``batch_size`` images per forward pass, without
gradients), with a progress bar when the job is slow. Pixels are positions: all channels
of a pixel are removed or inserted together. Ties in relevance keep the pixel order.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens._progress import batches, chunks
from convlens.errors import ConfigError, positive_int
from convlens.explain.base import baseline_like, normalise
from convlens.explain.engine import forward_batches, prepare
from convlens.inspect._state import eval_mode
from convlens.inspect.executors import RayEngine, check_engine, data_length, run_pass

if TYPE_CHECKING:
    import numpy as np

    from convlens.data.dataset import ImageDataset
    from convlens.inspect.targets import Target


class HasModel(Protocol):
    """A run or a model handle: anything with the ``nn.Module`` to explain as ``.model``."""

    @property
    def model(self) -> nn.Module: ...

# --- building blocks ------------------------------------------------------------------------


def _classes(classes: int | Sequence[int] | Tensor, n: int, device: torch.device) -> Tensor:
    cls = torch.as_tensor(classes, dtype=torch.long, device=device).reshape(-1)
    if cls.numel() == 1 and n > 1:
        cls = cls.expand(n)
    if cls.numel() != n:
        raise ConfigError(f"{cls.numel()} target classes for {n} images; give one per image")
    return cls


def _check_maps(x: Tensor, maps: Tensor) -> Tensor:
    maps = torch.as_tensor(maps, device=x.device)
    if maps.shape != (x.shape[0], *x.shape[-2:]):
        raise ConfigError(
            f"maps must be (N, H, W) = {(x.shape[0], *x.shape[-2:])} to match x {tuple(x.shape)}, got "
            f"{tuple(maps.shape)}; pass result.maps of an explanation of x"
        )
    return maps


def blur(x: Tensor, sigma: float = 5.0) -> Tensor:
    """A Gaussian blur of ``x`` ``(N, C, H, W)``, each channel on its own, reflecting at the
    borders: the canvas insertion starts from. The default is RISE's, sigma 5 pixels with a
    kernel of ``2·ceil(sigma) + 1`` = 11 pixels (cut to fit small images). Not scaled with
    the image: on a 28×28 digit a milder blur leaves the digit recognisable, and insertion
    curves would start at the top."""
    h, w = x.shape[-2:]
    s = float(sigma)
    if s <= 0:
        return x.clone()
    radius = min(math.ceil(s), min(h, w) - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / s) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


#: The most points a deletion or insertion curve has (besides its start): each point costs one
#: forward pass per image, and a finer curve changes its area by less than the noise.
MAX_CURVE_STEPS = 256


def check_steps(steps: int) -> int:
    """``steps`` if it is a positive integer of at most :data:`MAX_CURVE_STEPS`."""
    positive_int("steps", steps)
    if steps > MAX_CURVE_STEPS:
        raise ConfigError(
            f"steps={steps} is more than the {MAX_CURVE_STEPS} points a curve takes (each costs one forward "
            f"pass per image); use at most {MAX_CURVE_STEPS} (--steps {MAX_CURVE_STEPS})"
        )
    return steps


def pixel_counts(height: int, width: int, steps: int) -> list[int]:
    """How many pixels are removed (inserted) at each of the ``steps + 1`` points."""
    total = height * width
    return [round(t * total / steps) for t in range(steps + 1)]


def auc(curves: Tensor) -> Tensor:
    """Trapezoidal area under curves ``(..., T + 1)`` sampled evenly on [0, 1]."""
    t = curves.shape[-1] - 1
    return (curves.sum(-1) - (curves[..., 0] + curves[..., -1]) / 2) / t


def perturbation_curves(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    classes: int | Sequence[int] | Tensor,
    *,
    mode: str = "deletion",
    steps: int = 32,
    baseline: float | Tensor = 0.0,
    start: float | Tensor | str = "blur",
    batch_size: int = 256,
    progress: bool | None = None,
) -> Tensor:
    """Deletion (``mode="deletion"``) or insertion curves ``(N, steps + 1)``: the target
    class's probability as the most relevant pixels of ``maps`` ``(N, H, W)`` are set to
    ``baseline`` (deletion), or copied from ``x`` into ``start`` (insertion; ``"blur"``
    is :func:`blur` of ``x``).

    Step ``t`` has ``round(t · H·W / steps)`` pixels removed (inserted), the most relevant
    first; ties keep the pixel order (row-major)."""
    if mode not in ("deletion", "insertion"):
        raise ConfigError(f"unknown mode {mode!r}: use 'deletion' or 'insertion'")
    check_steps(steps)
    x = prepare(model, x)
    maps = _check_maps(x, maps)
    n, _, h, w = x.shape
    cls = _classes(classes, n, x.device)
    if mode == "deletion":
        fill = baseline_like(baseline, x)
    else:
        if isinstance(start, str):
            if start != "blur":
                raise ConfigError(f"unknown start {start!r}: use 'blur', a number or a tensor")
            fill = blur(x)
        else:
            fill = baseline_like(start, x)
    order = maps.reshape(n, -1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=x.device).expand(n, -1))
    counts = torch.tensor(pixel_counts(h, w, steps), device=x.device)
    points = steps + 1

    def make(lo: int, hi: int) -> Tensor:
        flat = torch.arange(lo, hi, device=x.device)
        sample, step = flat // points, flat % points
        done = (ranks[sample] < counts[step].unsqueeze(1)).view(-1, 1, h, w)  # removed / inserted
        if mode == "deletion":
            return torch.where(done, fill[sample], x[sample])
        return torch.where(done, x[sample], fill[sample])

    with eval_mode(model):
        logits = forward_batches(model, n * points, make, batch_size, progress, mode.capitalize())
    probs = logits.softmax(1).gather(1, cls.repeat_interleave(points).unsqueeze(1)).squeeze(1)
    return probs.view(n, points)


def average_drop_increase(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    classes: int | Sequence[int] | Tensor,
    *,
    baseline: float | Tensor = 0.0,
    batch_size: int = 256,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Per image, the relative drop ``max(0, Y - O) / Y`` and whether ``O > Y`` (see the module
    docstring); ``maps`` ``(N, H, W)`` are min-max normalised here. Average Drop and
    Increase in Confidence are 100 times their means."""
    x = prepare(model, x)
    maps = _check_maps(x, maps)
    n = x.shape[0]
    cls = _classes(classes, n, x.device)
    base = baseline_like(baseline, x)
    weight = normalise(maps.to(x.dtype)).unsqueeze(1)
    masked = base + weight * (x - base)
    with eval_mode(model):
        logits = forward_batches(model, 2 * n, lambda lo, hi: torch.cat([x, masked])[lo:hi], batch_size,
                                 progress, "Average Drop")
    p = logits.softmax(1)
    y = p[:n].gather(1, cls.unsqueeze(1)).squeeze(1)
    o = p[n:].gather(1, cls.unsqueeze(1)).squeeze(1)
    return (y - o).clamp_min(0) / y, o > y


# --- the sanity check -----------------------------------------------------------------------


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of the rows of ``a`` and ``b`` ``(N, ...)``, ties given their
    average rank; NaN where a row is constant."""
    ra, rb = _ranks(a.reshape(a.shape[0], -1)), _ranks(b.reshape(b.shape[0], -1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))


def _ranks(v: Tensor) -> Tensor:
    """Average ranks (1-based) of each row of ``v`` ``(N, M)``."""
    v = v.double()
    out = torch.empty_like(v)
    for i in range(v.shape[0]):
        _, inverse, counts = torch.unique(v[i], sorted=True, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        out[i] = (ends - (counts.double() - 1) / 2)[inverse]
    return out


def randomisable(model: nn.Module) -> list[str]:
    """Names of the modules with parameters of their own, from the output back to the input
    (registration order reversed): the order of cascading randomisation."""
    return [name for name, m in reversed(list(model.named_modules())) if any(True for _ in m.parameters(recurse=False))]


def _reinitialise(module: nn.Module, generator_seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(generator_seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            for p in module.parameters(recurse=False):
                p.normal_(0.0, float(p.std()) if p.numel() > 1 else 1.0)
        stats = getattr(module, "reset_running_stats", None)
        if callable(stats):
            stats()


@dataclass
class SanityCheck:
    """The model-randomisation test for one method.

    ``steps[i]`` names the modules randomised after step ``i`` (cumulative, from the output
    back to the input when cascading); ``correlation[i]`` is the mean Spearman correlation
    over the images at that step and ``per_image[i]`` the values for each image.
    """

    method: str
    steps: list[list[str]]
    correlation: list[float]
    per_image: Tensor
    threshold: float

    @property
    def final(self) -> float:
        """The correlation with every module randomised."""
        return self.correlation[-1]

    @property
    def flagged(self) -> bool:
        """True if the map barely changes when the weights are random."""
        return bool(self.final >= self.threshold)

    def message(self) -> str:
        if math.isnan(self.final):
            return (f"{self.method}: the map of the randomised model is constant, so the rank correlation is "
                    "undefined; the map does change")
        if self.flagged:
            return (f"{self.method}: rank correlation {self.final:.2f} with the randomised model (threshold "
                    f"{self.threshold:.2f}): this map does not depend on what the model learned")
        return f"{self.method}: rank correlation {self.final:.2f} with the randomised model: the map depends on the weights"


def sanity_check(
    model: nn.Module,
    x: Tensor,
    method: str = "gradcam",
    *,
    layer: str | Sequence[str] | None = None,
    target: Target = None,
    cascade: bool = False,
    seed: int = 0,
    threshold: float = 0.5,
    **options: object,
) -> SanityCheck:
    """Compare the maps of ``model`` with those of a copy whose weights are re-initialised.

    With ``cascade`` the modules are randomised one at a time from the output back to the
    input, and each step is scored (Adebayo et al.'s cascading test); otherwise all at
    once. The target classes are those of the trained model's explanation, so both maps
    explain the same class. ``model`` itself is never changed (a deep copy is randomised).
    Correlations are between the maps as displayed (``result.maps``).
    """
    from convlens.explain.api import cam

    trained = cam(model, x, method=method, layer=layer, target=target, **options)
    classes = trained.classes[:, 0] if trained.classes.shape[1] == 1 else None
    if classes is None:
        raise ConfigError("the sanity check explains one target per image: use 'pred' or a class, not topK")
    names = randomisable(model)
    if not names:
        raise ConfigError("the model has no parameters to randomise")
    copy_ = copy.deepcopy(model)
    modules = dict(copy_.named_modules())
    groups = [[n] for n in names] if cascade else [names]
    done: list[str] = []
    steps: list[list[str]] = []
    values: list[Tensor] = []
    target_arg = classes if bool((classes >= 0).all()) else target
    for group in groups:
        for i, name in enumerate(group):
            _reinitialise(modules[name], seed + len(done) + i)
        done.extend(group)
        steps.append(list(done))
        random = cam(copy_, x, method=method, layer=layer, target=target_arg, **options)
        values.append(spearman(trained.maps, random.maps))
    per_image = torch.stack(values)
    correlation = [float(v.nanmean()) if bool((~v.isnan()).any()) else float("nan") for v in per_image]
    return SanityCheck(trained.method, steps, correlation, per_image, threshold)


# --- over a dataset --------------------------------------------------------------------------


@dataclass
class MethodScores:
    """Faithfulness of one method over the images of a :class:`FaithfulnessReport`."""

    method: str
    title: str
    deletion_auc: float
    insertion_auc: float
    average_drop: float
    increase_in_confidence: float
    deletion: Tensor  # (steps + 1,) mean curve
    insertion: Tensor
    sanity: SanityCheck | None = None


class ScoreRow(TypedDict):
    """One method's scores in :meth:`FaithfulnessReport.rows`."""

    method: str
    deletion_auc: float
    insertion_auc: float
    average_drop: float
    increase_in_confidence: float
    randomisation_correlation: float | None
    flagged: bool | None


@dataclass
class FaithfulnessReport:
    """:func:`faithfulness` results: one :class:`MethodScores` per method."""

    scores: dict[str, MethodScores]
    n_images: int
    steps: int
    fractions: Tensor = field(repr=False)

    def rows(self) -> list[ScoreRow]:
        """One dict per method, for tables: AUCs, Average Drop (%), Increase in Confidence
        (%), randomisation correlation and whether it is flagged."""
        return [
            {
                "method": s.title,
                "deletion_auc": s.deletion_auc,
                "insertion_auc": s.insertion_auc,
                "average_drop": s.average_drop,
                "increase_in_confidence": s.increase_in_confidence,
                "randomisation_correlation": None if s.sanity is None else s.sanity.final,
                "flagged": None if s.sanity is None else s.sanity.flagged,
            }
            for s in self.scores.values()
        ]

    def to_dict(self) -> dict[str, object]:
        """Everything as plain JSON-ready values: settings, rows, mean curves, sanity steps."""
        return {
            "n_images": self.n_images,
            "steps": self.steps,
            "fractions": self.fractions.tolist(),
            "methods": [
                {**row, "key": s.method, "deletion_curve": s.deletion.tolist(), "insertion_curve": s.insertion.tolist(),
                 "sanity": None if s.sanity is None else {
                     "steps": s.sanity.steps, "correlation": s.sanity.correlation, "threshold": s.sanity.threshold,
                     "message": s.sanity.message()}}
                for row, s in zip(self.rows(), self.scores.values(), strict=True)
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` atomically (a reader never sees half a
        file) and return the path.

        >>> import tempfile
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3))
        >>> report = faithfulness(net, torch.rand(2, 1, 8, 8), ["saliency"], n=2, steps=2, sanity_images=0)
        >>> path = report.save(Path(tempfile.mkdtemp()) / "faithfulness-scores.json")
        >>> json.loads(path.read_text())["methods"][0]["key"]
        'saliency'
        """
        from convlens._atomic import write_text_atomic

        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(dest, json.dumps(self.to_dict(), indent=2) + "\n")
        return dest

    def curves(self) -> dict[str, dict[str, np.ndarray]]:
        """``{title: {"fractions", "deletion", "insertion"}}`` as NumPy arrays (for figures)."""
        f = self.fractions.numpy()
        return {s.title: {"fractions": f, "deletion": s.deletion.numpy(), "insertion": s.insertion.numpy()}
                for s in self.scores.values()}


def _images(data: ImageDataset | Tensor, n: int | None, seed: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(normalised images, labels or None, black pixel per channel or None) for up to ``n``
    images of ``data`` (an ImageDataset, or a tensor of normalised images), a seeded
    random sample if ``n`` is smaller than the data."""
    from convlens.data import ImageDataset
    from convlens.data.stream import StreamingDataset

    if isinstance(data, (ImageDataset, StreamingDataset)):  # a streamed one decodes only the sample
        total = len(data)
        idx = _sample(total, n, seed)
        x = data.normalise(data.images[idx])
        black = (0.0 - torch.tensor(data.mean)) / torch.tensor(data.std)
        return x, data.labels[idx], black
    if isinstance(data, Tensor) and data.dim() == 4:
        idx = _sample(data.shape[0], n, seed)
        return data[idx], None, None
    raise ConfigError(
        f"data must be an ImageDataset (convlens.data.load_dataset) or a tensor (N, C, H, W) of normalised "
        f"images, got {type(data).__name__}"
    )


def _take(data: ImageDataset | Tensor, idx: Tensor) -> ImageDataset | Tensor:
    """The images at ``idx`` of ``data`` (an ImageDataset's subset, or rows of a tensor)."""
    if isinstance(data, Tensor):
        return data[idx]
    return data.subset(idx)


CurveSet = tuple[Tensor, Tensor, Tensor, Tensor]  # per image: deletion, insertion curves, drop, increase


@dataclass
class _Scored:
    parts: list[tuple[int, dict[str, CurveSet]]]  # (first position in the sample, per method)


@dataclass
class FaithfulnessPass:
    """The per-image part of :func:`faithfulness` as a
    :class:`~convlens.inspect.executors.DatasetPass`: its items are the positions of the
    images scored; ``finish`` gives, per method, their curves and scores in sample order.

    In-process the data handed to it are the normalised images themselves (``sample`` is
    None); on Ray, ``sample`` holds their indices in the data set and each worker reads
    its own."""

    names: list[str]
    layer: str | Sequence[str] | None
    target: Target
    options: dict[str, object]
    steps: int
    baseline: float | Tensor
    batch_size: int
    sample: Tensor | None = None
    description: str = "Faithfulness"

    def items(self, data: ImageDataset | Tensor) -> int:
        return len(self.sample) if self.sample is not None else int(_count(data))

    def partial(self, model: nn.Module, data: ImageDataset | Tensor, span: tuple[int, int] | None,
                progress: bool | None) -> _Scored:
        from convlens.explain.api import explain

        lo, hi = span if span is not None else (0, self.items(data))
        if self.sample is None:  # in-process the data are the images
            assert isinstance(data, Tensor)  # for mypy: faithfulness hands this pass the images
            x_all = data if span is None else data[lo:hi]
        else:
            x_all = _images(_take(data, self.sample[lo:hi]), None, 0)[0]
        out: dict[str, list[list[Tensor]]] = {k: [[], [], [], []] for k in self.names}
        inner = max(1, 4 * self.batch_size)
        for a, b in batches(chunks(x_all.shape[0], self.batch_size), self.description, progress):
            x = x_all[a:b]
            results = explain(model, x, self.names, layer=self.layer, target=self.target, **self.options)
            for name, r in results.items():
                if len(r) != len(x) or bool((r.target < 0).any()):
                    raise ConfigError("faithfulness needs one class per image: use target 'pred' or a class index")
                cls, lists = r.target, out[name]
                lists[0].append(perturbation_curves(model, x, r.maps, cls, mode="deletion", steps=self.steps,
                                                    baseline=self.baseline, batch_size=inner, progress=False))
                lists[1].append(perturbation_curves(model, x, r.maps, cls, mode="insertion", steps=self.steps,
                                                    batch_size=inner, progress=False))
                d, i = average_drop_increase(model, x, r.maps, cls, baseline=self.baseline, batch_size=inner,
                                             progress=False)
                lists[2].append(d)
                lists[3].append(i)
        cat = {k: (torch.cat(v[0]), torch.cat(v[1]), torch.cat(v[2]), torch.cat(v[3])) for k, v in out.items()}
        return _Scored([(lo, cat)])

    def merge(self, a: _Scored, b: _Scored) -> _Scored:
        return _Scored(a.parts + b.parts)

    def finish(self, merged: _Scored, model: nn.Module) -> dict[str, CurveSet]:
        parts = [p for _, p in sorted(merged.parts, key=lambda item: item[0])]  # sample order
        if len(parts) == 1:
            return parts[0]
        return {k: (torch.cat([p[k][0] for p in parts]), torch.cat([p[k][1] for p in parts]),
                    torch.cat([p[k][2] for p in parts]), torch.cat([p[k][3] for p in parts]))
                for k in self.names}


def _count(data: ImageDataset | Tensor) -> int:
    return int(data.shape[0]) if isinstance(data, Tensor) else len(data)


def _sample(total: int, n: int | None, seed: int) -> Tensor:
    if n is None or n >= total:
        return torch.arange(total)
    positive_int("n", n)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def faithfulness(
    model: nn.Module | HasModel,
    data: ImageDataset | Tensor,
    methods: str | Iterable[str] = ("gradcam",),
    *,
    n: int | None = 500,
    layer: str | Sequence[str] | None = None,
    target: Target = None,
    steps: int = 32,
    baseline: float | Tensor | None = None,
    sanity_images: int = 32,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool | None = None,
    engine: str | RayEngine = "inprocess",
    address: str | None = None,
    **options: object,
) -> FaithfulnessReport:
    """Score explanation ``methods`` on ``n`` images of ``data`` (a seeded random sample).

    ``model`` is an ``nn.Module`` or a run. ``baseline`` is what deleted pixels become and
    what Average Drop masks towards: by default black for an ImageDataset (its normalised
    zero pixel), else 0. Insertion starts from a blurred copy. The model-randomisation test
    runs on the first ``sanity_images`` images of the sample (0 to skip it). Images are
    explained ``batch_size`` at a time (all methods share each batch's forward pass); the
    perturbed copies run ``4 * batch_size`` at a time.

    ``engine="ray"`` scores the images on a Ray cluster (``address``; see
    :mod:`convlens.inspect.executors`) in partitions of whole batches, each worker reading
    its images from ``data`` (an ImageDataset or a tensor): the same per-image scores, so
    the same report. The sanity check runs here, on the driver.

    >>> report = faithfulness(run, test_set, ["gradcam", "scorecam"], n=200)  # doctest: +SKIP
    >>> report.rows()[0]["deletion_auc"]                                       # doctest: +SKIP
    """
    check_steps(steps)  # before any work
    from convlens.explain.api import method_options
    from convlens.explain.registry import get_method

    m = getattr(model, "model", model)
    if not isinstance(m, nn.Module):
        raise ConfigError(f"expected a model or a run, got {type(model).__name__}")
    names = [methods] if isinstance(methods, str) else list(methods)
    if names == ["all"]:
        from convlens.explain.registry import METHODS

        names = list(METHODS)
    classes = {name: get_method(name) for name in names}
    titles = {k: c.title for k, c in classes.items()}
    check_engine(engine)
    pass_ = FaithfulnessPass(names, layer, target, dict(options), steps, 0.0, batch_size)
    if engine == "inprocess":
        x_all, _, black = _images(data, n, seed)
        pass_.baseline = baseline if baseline is not None else (black if black is not None else 0.0)
        curves = run_pass(pass_, m, x_all, progress=progress)
        count = x_all.shape[0]
        x_sanity = x_all[:sanity_images]
    else:  # the workers read the sample from the data themselves
        total = data_length(data)
        pass_.sample = _sample(total, n, seed)
        x_sanity, _, black = _images(_take(data, pass_.sample[:max(sanity_images, 1)]), None, seed)
        x_sanity = x_sanity[:sanity_images]
        pass_.baseline = baseline if baseline is not None else (black if black is not None else 0.0)
        curves = run_pass(pass_, model, data, engine=engine, address=address)
        count = len(pass_.sample)
    scores: dict[str, MethodScores] = {}
    for name in names:
        dc, ic, drops, incs = curves[name]
        sanity = None
        if sanity_images:
            mine: dict[str, Any] = {k: v for k, v in options.items() if k in method_options(classes[name])}
            sanity = sanity_check(m, x_sanity, name, layer=layer if classes[name].needs_layer else None,
                                  target=target, **mine)
        scores[name] = MethodScores(
            method=name, title=titles[name],
            deletion_auc=float(auc(dc).mean()), insertion_auc=float(auc(ic).mean()),
            average_drop=100 * float(drops.mean()),
            increase_in_confidence=100 * float(incs.double().mean()),
            deletion=dc.mean(0).cpu(), insertion=ic.mean(0).cpu(), sanity=sanity,
        )
    return FaithfulnessReport(scores, count, steps, torch.linspace(0, 1, steps + 1))
