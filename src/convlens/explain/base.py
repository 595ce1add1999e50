"""The template every explanation method fills in, and the result it returns.

One abstract base, :class:`Method`, does everything that is the same for all methods:
the engine (:mod:`convlens.explain.engine`) checks the input, puts the model in eval mode
for the call (and restores every flag afterwards), runs **one forward pass** reading the
layers it needs (through :func:`convlens.capture`), resolves the targets
(:mod:`convlens.inspect.targets`) and runs the backward passes the methods need (one per
target round; a second, guided one only when guided backpropagation is asked for); the
base upsamples and packs an :class:`Explanation`. A method is a small override:

* a CAM method subclasses :class:`GradientCAM` and writes ``_cam(A, G)``, the map from the
  layer's activations ``A`` ``(N, K, h, w)`` and gradients ``G`` (Grad-CAM is two lines);
* a layer method that needs no gradients (Eigen-CAM) or its own forward passes (Score-CAM,
  Ablation-CAM) subclasses :class:`LayerMethod` and writes ``_layer_raw``;
* an input-attribution method (saliency, integrated gradients, occlusion, ...) subclasses
  :class:`InputMethod` and writes ``_attributions``.

Several methods asked for together (:func:`convlens.explain.explain`) share that forward
pass and its backward passes: Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM and
saliency all read the same gradients.

Conventions (the same for every method; see docs/explain.md for how peers differ):

* ``raw``: the map as the method's formula defines it, *before* any ReLU: signed and
  unnormalised, at the layer's resolution (at the input's for input methods), so maps of
  different images can be compared on one scale.
* ``maps``: ``ReLU(raw)`` upsampled to the input size, bilinear with
  ``align_corners=False`` (ReLU first, then upsampling, as in the Grad-CAM paper).
* ``normalised``: ``maps`` min-max scaled to [0, 1], each row on its own (an all-equal
  map becomes all zeros).
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.errors import ConfigError, positive_int
from convlens.explain.engine import Pass, layer_modules, prepare, run_methods
from convlens.inspect.targets import Target, TargetPlan

Combine = Literal["mean", "max"]


# --- the result ---------------------------------------------------------------------------


@dataclass(eq=False)
class Explanation:
    """What an explanation method returns for a batch.

    Rows: with one target per sample, row ``i`` explains sample ``i``; with ``"topK"``
    targets there are ``K`` rows per sample, sample-major (``sample`` and ``target`` say
    which). ``R`` below is the number of rows, ``N`` the batch size. The upsampled and
    normalised maps and the probabilities are computed on first access.

    Attributes:
        method: registry name (``"gradcam"``); ``title`` is the display name.
        layers: the layers the map was read at (empty for input methods).
        logits: ``(N, K)`` the model's output for the batch.
        size: ``(H, W)`` of the input.
        attributions: ``(R, C, H, W)`` per-channel signed attributions (input methods only).
        parts: one :class:`Explanation` per layer when several layers were asked for.
        combine: how ``parts`` were combined (``"mean"`` or ``"max"`` of their
            normalised maps), ``None`` for one layer.
    """

    method: str
    title: str
    layers: tuple[str, ...]
    logits: Tensor
    plan: TargetPlan = field(repr=False)
    size: tuple[int, int]
    _raw: Tensor | None = field(default=None, repr=False)
    _maps: Tensor | None = field(default=None, repr=False)
    attributions: Tensor | None = field(default=None, repr=False)
    parts: dict[str, Explanation] = field(default_factory=dict, repr=False)
    combine: str | None = None

    @property
    def raw(self) -> Tensor:
        """``(R, h, w)`` the signed, unnormalised map at the layer's resolution (at the
        input's for input methods), before any ReLU."""
        if self._raw is None:
            raise ConfigError(
                f"this explanation combines layers {', '.join(self.layers)}, each with its own raw "
                f"map at its own resolution: read result.parts[{self.layers[0]!r}].raw"
            )
        return self._raw

    @cached_property
    def maps(self) -> Tensor:
        """``(R, H, W)`` ``ReLU(raw)`` upsampled to the input size (bilinear,
        ``align_corners=False``), unnormalised; for several layers, their combination."""
        if self._maps is not None:
            return self._maps
        return upsample(self.raw.clamp_min(0), self.size)

    @cached_property
    def normalised(self) -> Tensor:
        """``(R, H, W)`` ``maps`` min-max scaled to [0, 1] per row (all-equal rows become 0)."""
        return normalise(self.maps)

    @cached_property
    def probabilities(self) -> Tensor:
        """``(N, K)`` softmax of the logits."""
        return self.logits.softmax(1)

    @property
    def classes(self) -> Tensor:
        """``(N, k)`` target class per sample and round (``-1``: a function target)."""
        return self.plan.classes

    @property
    def target(self) -> Tensor:
        """``(R,)`` the class each row explains (``-1`` where a function was the target)."""
        return self.plan.classes.reshape(-1)

    @property
    def sample(self) -> Tensor:
        """``(R,)`` the input sample each row explains."""
        n, k = self.plan.classes.shape
        return torch.arange(n, device=self.logits.device).repeat_interleave(k)

    @property
    def target_probability(self) -> Tensor:
        """``(R,)`` the probability of each row's target class (NaN for function targets)."""
        t = self.target
        p = self.probabilities[self.sample, t.clamp_min(0)]
        return torch.where(t >= 0, p, torch.full_like(p, float("nan")))

    def __len__(self) -> int:
        return self.plan.n * self.plan.rounds

    def __repr__(self) -> str:
        where = f" at {', '.join(self.layers)}" if self.layers else ""
        n = len(self)
        return f"Explanation({self.title}{where}, {n} map{'s' * (n != 1)} of {self.size[0]}×{self.size[1]})"


def normalise(maps: Tensor) -> Tensor:
    """Min-max scale each row of ``maps`` ``(R, H, W)`` to [0, 1]; all-equal rows become 0."""
    flat = maps.flatten(1)
    lo = flat.amin(1, keepdim=True)
    span = (flat.amax(1, keepdim=True) - lo).clamp_min(torch.finfo(maps.dtype).tiny)
    return ((flat - lo) / span).view_as(maps)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """``(R, h, w)`` to ``(R, *size)``, bilinear with ``align_corners=False`` (a no-op at size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]


def baseline_like(value: float | Tensor, x: Tensor) -> Tensor:
    """A reference input shaped like ``x`` ``(N, C, H, W)``: a number everywhere, one value
    per channel ``(C,)``, or a tensor ``(C, H, W)`` or ``(N, C, H, W)`` (broadcast, not copied).
    Used by integrated gradients, occlusion and the faithfulness curves."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full_like(x, float(value))
    if isinstance(value, Tensor):
        b = value.to(device=x.device, dtype=x.dtype)
        if b.dim() == 1 and b.numel() == x.shape[1]:  # one value per channel
            return b.view(1, -1, 1, 1).expand_as(x)
        try:
            return b.expand_as(x) if b.dim() == 4 else b.unsqueeze(0).expand_as(x)
        except RuntimeError:
            pass
    raise ConfigError(
        f"baseline must be a number, one value per channel, or a tensor shaped like the images "
        f"{tuple(x.shape[1:])}, got {value!r}"
    )


# --- the default layer --------------------------------------------------------------------

_DEFAULT_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()


def default_layer(model: nn.Module, x: Tensor) -> str:
    """The last layer, in execution order, whose output is ``(N, C, H, W)`` with ``H·W > 1``
    (dropout and identity layers, which hand their input on, are passed over).

    That is the deepest layer that still has a spatial map (``layer4`` of a ResNet,
    ``pool2`` of seed-cnn): :attr:`convlens.inspect.layers` ``(...).target``, remembered per
    model and input shape. On the demo run the gradient CAMs score better at ``pool2`` than
    at the map it reads (``relu2``) in 13 of 15 deletion/insertion/Average Drop comparisons;
    docs/explain.md ("Layers") shows the command and its numbers.
    """
    from convlens.inspect import layers as layer_table

    x = prepare(model, x)
    key = tuple(int(v) for v in x.shape[1:])
    cached = _DEFAULT_LAYERS.get(model, {}).get(key)
    if cached is not None:
        return cached
    name = layer_table(model, key).target
    if name is None:
        raise ConfigError(
            "no layer of this model outputs a spatial map (N, C, H, W) for this input; CAM methods "
            "need one: pass layer=... explicitly, or use an input method such as 'saliency'"
        )
    _DEFAULT_LAYERS.setdefault(model, {})[key] = name
    return name


# --- the methods --------------------------------------------------------------------------


class Method(abc.ABC):
    """An explanation method: build it with a model (and a layer), call it on inputs.

    Capabilities are class attributes, so the CLI, the docs and the tests can ask a method
    what it is without running it:

    * ``needs_layer``: reads a layer of the model (the CAM family, Guided Grad-CAM);
    * ``uses_gradients``: needs backward passes (saliency, Grad-CAM, ...);
    * ``perturbation``: runs extra forward passes on modified inputs or activations
      (Score-CAM, Ablation-CAM, occlusion, SmoothGrad, integrated gradients); those take
      ``batch_size`` (how many modified inputs per forward pass) and ``progress``;
    * ``class_specific``: the map depends on the target (Eigen-CAM's does not).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    needs_layer: ClassVar[bool] = False
    uses_gradients: ClassVar[bool] = False
    perturbation: ClassVar[bool] = False
    class_specific: ClassVar[bool] = True
    # what the shared pass must provide
    wants_layer_gradients: ClassVar[bool] = False
    wants_input_gradients: ClassVar[bool] = False
    wants_guided_gradients: ClassVar[bool] = False

    def __init__(self, model: nn.Module, layer: str | Sequence[str] | None = None, *,
                 combine: Combine = "mean") -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}; pass the model itself")
        if layer is not None and not self.needs_layer:
            raise ConfigError(f"{self.title} attributes to the input and reads no layer; drop layer={layer!r}")
        if combine not in ("mean", "max"):
            raise ConfigError(f"unknown combine {combine!r}: use 'mean' or 'max'")
        self.model = model
        self.layer = layer_modules(model, layer) or None
        self.combine = combine

    def __call__(self, x: Tensor, target: Target = None) -> Explanation:
        """Explain ``x`` ``(N, C, H, W)`` for ``target`` (see :mod:`convlens.inspect.targets`)."""
        return run_methods(self.model, x, [self], target)[0]

    def __repr__(self) -> str:
        where = f", layer={list(self.layer)!r}" if self.layer else ""
        return f"{type(self).__name__}({type(self.model).__name__}{where})"

    def layers_for(self, x: Tensor) -> tuple[str, ...]:
        """The layers this method reads for input ``x`` (the default layer if none was given)."""
        if not self.needs_layer:
            return ()
        return self.layer or (default_layer(self.model, x),)

    @abc.abstractmethod
    def _raw(self, p: Pass, layers: Sequence[str]) -> tuple[dict[str, Tensor], Tensor | None]:
        """Raw maps ``(R, h, w)`` per layer (key ``""`` for input methods), rows
        sample-major, and the per-channel attributions ``(R, C, H, W)`` of input methods
        (else ``None``)."""

    def explain(self, p: Pass, layers: Sequence[str]) -> Explanation:
        """Turn the shared pass into this method's :class:`Explanation` (the template)."""
        raws, attributions = self._raw(p, layers)
        size = (int(p.x.shape[-2]), int(p.x.shape[-1]))
        if len(raws) == 1:
            ((key, raw),) = raws.items()
            return Explanation(self.name, self.title, (key,) if key else (), p.logits, p.plan, size,
                               _raw=raw, attributions=attributions)
        parts = {
            key: Explanation(self.name, self.title, (key,) if key else (), p.logits, p.plan, size,
                             _raw=raw, attributions=attributions)
            for key, raw in raws.items()
        }
        stacked = torch.stack([part.normalised for part in parts.values()])
        combined = stacked.mean(0) if self.combine == "mean" else stacked.amax(0)
        return Explanation(self.name, self.title, tuple(parts), p.logits, p.plan, size,
                           _maps=combined, parts=parts, combine=self.combine)


def rows(per_round: list[Tensor]) -> Tensor:
    """``k`` tensors ``(N, ...)``, one per target round -> ``(N * k, ...)``, sample-major."""
    if len(per_round) == 1:
        return per_round[0]
    return torch.stack(per_round, 1).flatten(0, 1)


class LayerMethod(Method):
    """A method that reads activations of a layer (the CAM family)."""

    needs_layer = True

    def _raw(self, p: Pass, layers: Sequence[str]) -> tuple[dict[str, Tensor], Tensor | None]:
        return {layer: self._layer_raw(p, layer) for layer in layers}, None

    @abc.abstractmethod
    def _layer_raw(self, p: Pass, layer: str) -> Tensor:
        """``(R, h, w)``: the signed map of ``layer``, rows sample-major."""


class GradientCAM(LayerMethod):
    """A CAM computed from a layer's activations and the gradients of the target there.

    Subclasses write :meth:`_cam`; everything else (one forward and one backward pass per
    target round, shared with the other gradient methods) is done here.
    """

    uses_gradients = True
    wants_layer_gradients = True

    def _layer_raw(self, p: Pass, layer: str) -> Tensor:
        a = p.activations[layer]
        return rows([self._cam(a, grads[layer]) for grads in p.layer_gradients])

    @abc.abstractmethod
    def _cam(self, a: Tensor, g: Tensor) -> Tensor:
        """The map ``(N, h, w)`` from activations ``a`` and gradients ``g``, both ``(N, K, h, w)``."""


class InputMethod(Method):
    """A method that attributes the target to input pixels (saliency, integrated gradients, ...).

    ``attributions`` are per channel ``(R, C, H, W)``; ``raw`` reduces them over channels as
    ``channel_reduction`` says: ``"sum"`` (the signed total, what completeness-style
    methods add up to), ``"max_abs"`` (Simonyan et al.'s saliency) or ``"mean"``
    (occlusion, whose channels carry the same value).
    """

    channel_reduction: ClassVar[Literal["sum", "max_abs", "mean"]] = "sum"

    def _raw(self, p: Pass, layers: Sequence[str]) -> tuple[dict[str, Tensor], Tensor | None]:
        attr = self._attributions(p)
        if self.channel_reduction == "sum":
            raw = attr.sum(1)
        elif self.channel_reduction == "max_abs":
            raw = attr.abs().amax(1)
        else:
            raw = attr.mean(1)
        return {layers[0] if layers else "": raw}, attr

    @abc.abstractmethod
    def _attributions(self, p: Pass) -> Tensor:
        """``(R, C, H, W)``: signed per-channel attributions, rows sample-major."""


# --- perturbation methods -----------------------------------------------------------------


class Perturbation:
    """Options shared by methods that run many modified inputs: ``batch_size`` (how many
    per forward pass; memory grows with it) and ``progress`` (``None``: a bar when slow)."""

    perturbation: ClassVar[bool] = True
    batch_size: int
    progress: bool | None

    def _set_batching(self, batch_size: int, progress: bool | None) -> None:
        positive_int("batch_size", batch_size)
        if progress not in (None, True, False):
            raise ConfigError(f"progress must be True, False or None (automatic), got {progress!r}")
        self.batch_size = batch_size
        self.progress = progress
