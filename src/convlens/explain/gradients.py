"""Input-attribution methods: saliency, SmoothGrad, guided backpropagation, Guided Grad-CAM,
integrated gradients and occlusion.

Each returns per-channel ``attributions`` ``(R, C, H, W)`` at the input; ``raw`` reduces
them over channels (see :class:`~convlens.explain.base.InputMethod`). Targets are logits,
as in captum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from convlens._progress import batches, chunks
from convlens.errors import ConfigError, positive_int
from convlens.explain.base import (
    Combine,
    InputMethod,
    Pass,
    Perturbation,
    baseline_like,
    rows,
    upsample,
)
from convlens.explain.cams import gradcam_map, score_rows
from convlens.explain.engine import forward_batches
from convlens.explain.registry import register_method


@register_method
class Saliency(InputMethod):
    """Saliency: the gradient of the target with respect to the input pixels; ``raw`` is its
    largest absolute value over the colour channels, as in Simonyan et al. (captum's
    ``Saliency(abs=True)`` keeps the channels: convlens's ``attributions.abs()``)."""

    name = "saliency"
    title = "Saliency"
    reference = "Simonyan et al. 2014, Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps"
    uses_gradients = True
    wants_input_gradients = True
    channel_reduction = "max_abs"

    def _attributions(self, p: Pass) -> Tensor:
        return rows(p.input_gradients)


class _GradientBatches(Perturbation):
    """Gradients of the target at many modified inputs, ``batch_size`` per forward pass.

    ``_gradients(p, sample, inputs)`` returns, for round ``j``, the gradients ``(B, C, H, W)``
    of each row's target at ``inputs`` (rows of ``inputs`` belong to ``sample``).
    """

    def _gradients(self, p: Pass, sample: Tensor, inputs: Tensor) -> list[Tensor]:
        with torch.enable_grad():
            xin = inputs.detach().requires_grad_(True)
            logits = p.model(xin)
            out = []
            for j in range(p.plan.rounds):
                score = score_rows(p, logits, sample, j).sum()
                (g,) = torch.autograd.grad(score, xin, retain_graph=j < p.plan.rounds - 1, allow_unused=True)
                out.append(torch.zeros_like(xin) if g is None else g)
        return out


@register_method
class SmoothGrad(_GradientBatches, InputMethod):
    """SmoothGrad: the input gradient averaged over ``n_samples`` copies of the input with
    Gaussian noise of standard deviation ``noise × (max(x) - min(x))`` (per image; the paper
    recommends 10-20 %). ``raw`` is the largest absolute value over channels, as for
    saliency. The noise for image ``n`` is drawn from a generator seeded with ``seed + n``,
    so results do not depend on the batch size."""

    name = "smoothgrad"
    title = "SmoothGrad"
    reference = "Smilkov et al. 2017, SmoothGrad: removing noise by adding noise"
    uses_gradients = True
    channel_reduction = "max_abs"

    def __init__(self, model: nn.Module, *, n_samples: int = 25, noise: float = 0.15, seed: int = 0,
                 batch_size: int = 64, progress: bool | None = None) -> None:
        super().__init__(model)
        self.n_samples = positive_int("n_samples", n_samples)
        if not (isinstance(noise, (int, float)) and noise >= 0 and math.isfinite(noise)):
            raise ConfigError(f"noise must be a non-negative fraction of the input range, got {noise!r}")
        self.noise = float(noise)
        self.seed = int(seed)
        self._set_batching(batch_size, progress)

    def noise_for(self, x: Tensor, n: int) -> Tensor:
        """The ``(n_samples, C, H, W)`` noise added to image ``x`` (index ``n`` in its batch)."""
        sigma = self.noise * float(x.max() - x.min())
        gen = torch.Generator(device=x.device).manual_seed(self.seed + n)
        return torch.randn((self.n_samples, *x.shape), generator=gen, device=x.device, dtype=x.dtype) * sigma

    def _attributions(self, p: Pass) -> Tensor:
        n, k, draws = p.x.shape[0], p.plan.rounds, self.n_samples
        total = torch.zeros((k, *p.x.shape), dtype=p.x.dtype, device=p.x.device)
        for start, stop in batches(chunks(n * draws, self.batch_size), self.title, self.progress):
            first, last = start // draws, (stop - 1) // draws
            noisy = torch.cat([
                p.x[i] + self.noise_for(p.x[i], i)[(start - i * draws if i == first else 0):
                                                     (stop - i * draws if i == last else draws)]
                for i in range(first, last + 1)
            ])
            sample = torch.arange(start, stop, device=p.x.device) // draws
            for j, g in enumerate(self._gradients(p, sample, noisy)):
                total[j].index_add_(0, sample, g)
        return rows(list(total / draws))


@register_method
class GuidedBackprop(InputMethod):
    """Guided backpropagation: the input gradient with every ReLU's backward pass letting
    only positive gradients through (see :mod:`convlens.explain._guided`); ReLU modules and
    ReLUs applied as functions are both guided. ``raw`` sums over channels."""

    name = "guided-backprop"
    title = "Guided backpropagation"
    reference = "Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net"
    uses_gradients = True
    wants_guided_gradients = True

    def _attributions(self, p: Pass) -> Tensor:
        return rows(p.guided_gradients)


@register_method
class GuidedGradCAM(InputMethod):
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map (ReLU, then upsampled
    to the input size, bilinear), pixel by pixel. Grad-CAM's gradients and the guided ones
    come from the same forward pass. captum's ``GuidedGradCam`` upsamples with "nearest"
    by default; pass ``interpolate_mode="bilinear"`` there to compare."""

    name = "guided-gradcam"
    title = "Guided Grad-CAM"
    reference = "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization"
    needs_layer = True
    uses_gradients = True
    wants_layer_gradients = True
    wants_guided_gradients = True

    def __init__(self, model: nn.Module, layer: str | Sequence[str] | None = None, *,
                 combine: Combine = "mean") -> None:
        super().__init__(model, layer, combine=combine)
        if self.layer is not None and len(self.layer) > 1:
            raise ConfigError(f"Guided Grad-CAM reads one layer, got {list(self.layer)}; pick one")

    def _attributions(self, p: Pass) -> Tensor:
        (layer,) = p.activations if len(p.activations) == 1 else self.layers_for(p.x)
        a = p.activations[layer]
        size = (int(p.x.shape[-2]), int(p.x.shape[-1]))
        out = []
        for grads, guided in zip(p.layer_gradients, p.guided_gradients, strict=True):
            gradcam = gradcam_map(a, grads[layer])
            out.append(guided * upsample(gradcam.clamp_min(0), size).unsqueeze(1))
        return rows(out)


def quadrature(rule: str, n_steps: int) -> tuple[list[float], list[float]]:
    """Points ``alpha`` in [0, 1] and weights of an ``n_steps`` rule for integrating over
    the straight path: ``"gausslegendre"`` (captum's default) or ``"riemann_left"``,
    ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"`` (captum's rules)."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return list(0.5 * (nodes + 1)), list(0.5 * weights)
    if rule.startswith("riemann_") and rule[8:] in ("left", "right", "middle", "trapezoid"):
        if n_steps < 2:
            raise ConfigError("Riemann rules need n_steps >= 2")
        kind = rule[8:]
        step = [1 / n_steps] * n_steps
        if kind == "trapezoid":
            step[0] /= 2
            step[-1] /= 2
            alphas = list(np.linspace(0, 1, n_steps))
        elif kind == "left":
            alphas = list(np.linspace(0, 1 - 1 / n_steps, n_steps))
        elif kind == "right":
            alphas = list(np.linspace(1 / n_steps, 1, n_steps))
        else:
            alphas = list(np.linspace(1 / (2 * n_steps), 1 - 1 / (2 * n_steps), n_steps))
        return [float(a) for a in alphas], step
    raise ConfigError(
        f"unknown integration rule {rule!r}: use 'gausslegendre', 'riemann_left', "
        "'riemann_right', 'riemann_middle' or 'riemann_trapezoid'"
    )


@register_method
class IntegratedGradients(_GradientBatches, InputMethod):
    """Integrated gradients: ``(x - x') ⊙ ∫_0^1 ∂f/∂x (x' + α (x - x')) dα`` with baseline
    ``x'`` (default 0, in the model's input space), the integral taken with ``n_steps``
    points of the quadrature ``rule`` (Gauss-Legendre by default, as in captum, where the
    option is called ``method``). The attributions sum to
    about ``f(x) - f(x')`` (completeness); ``raw`` is that sum over channels per pixel."""

    name = "integrated-gradients"
    title = "Integrated gradients"
    reference = "Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks"
    uses_gradients = True

    def __init__(self, model: nn.Module, *, n_steps: int = 50, rule: str = "gausslegendre",
                 baseline: float | Tensor = 0.0, batch_size: int = 64, progress: bool | None = None) -> None:
        super().__init__(model)
        self.n_steps = positive_int("n_steps", n_steps)
        self.alphas, self.weights = quadrature(rule, self.n_steps)
        self.rule = rule
        self.baseline = baseline
        self._set_batching(batch_size, progress)

    def _attributions(self, p: Pass) -> Tensor:
        n, k, steps = p.x.shape[0], p.plan.rounds, self.n_steps
        base = baseline_like(self.baseline, p.x)
        delta = p.x - base
        alphas = torch.tensor(self.alphas, dtype=p.x.dtype, device=p.x.device)
        weights = torch.tensor(self.weights, dtype=p.x.dtype, device=p.x.device)
        total = torch.zeros((k, *p.x.shape), dtype=p.x.dtype, device=p.x.device)
        for start, stop in batches(chunks(n * steps, self.batch_size), self.title, self.progress):
            flat = torch.arange(start, stop, device=p.x.device)
            sample, step = flat // steps, flat % steps
            path = base[sample] + alphas[step].view(-1, 1, 1, 1) * delta[sample]
            for j, g in enumerate(self._gradients(p, sample, path)):
                total[j].index_add_(0, sample, g * weights[step].view(-1, 1, 1, 1))
        return rows(list(total * delta))


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair: tuple[object, ...] = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ConfigError(f"{what} must be a positive integer or a pair of them, got {value!r}")
    first, second = pair
    assert isinstance(first, int) and isinstance(second, int)  # checked above; for mypy
    return first, second


@register_method
class Occlusion(Perturbation, InputMethod):
    """Occlusion: slide a ``window`` (all channels) over the input with ``stride``, replace
    it by ``baseline``, and credit each pixel with the drop of the target logit,
    ``f(x) - f(x_occluded)``, averaged over the windows that cover it. As in captum, the
    last window in each direction may stick out of the image and is cut at the border;
    ``stride`` defaults to half the window. ``raw`` is the per-pixel value (the channels
    carry the same one)."""

    name = "occlusion"
    title = "Occlusion"
    reference = "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks"
    channel_reduction = "mean"

    def __init__(self, model: nn.Module, *, window: int | Sequence[int] = 8,
                 stride: int | Sequence[int] | None = None, baseline: float | Tensor = 0.0,
                 batch_size: int = 64, progress: bool | None = None) -> None:
        super().__init__(model)
        self.window = _pair(window, "window")
        self.stride = _pair(stride, "stride") if stride is not None else (
            max(1, self.window[0] // 2), max(1, self.window[1] // 2))
        if self.stride[0] > self.window[0] or self.stride[1] > self.window[1]:
            raise ConfigError(f"stride {self.stride} is larger than the window {self.window}: pixels would be skipped")
        self.baseline = baseline
        self._set_batching(batch_size, progress)

    def masks(self, height: int, width: int) -> Tensor:
        """``(windows, H, W)`` bool: where each window position covers the image."""
        (wh, ww), (sh, sw) = self.window, self.stride
        if wh > height or ww > width:
            raise ConfigError(f"window {self.window} is larger than the {height}×{width} input")
        tops = [i * sh for i in range(math.ceil((height - wh) / sh) + 1)]
        lefts = [i * sw for i in range(math.ceil((width - ww) / sw) + 1)]
        out = torch.zeros(len(tops) * len(lefts), height, width, dtype=torch.bool)
        for i, (t, left) in enumerate((t, left) for t in tops for left in lefts):
            out[i, t:t + wh, left:left + ww] = True
        return out

    def _attributions(self, p: Pass) -> Tensor:
        n, k = p.x.shape[0], p.plan.rounds
        h, w = p.x.shape[-2:]
        masks = self.masks(int(h), int(w)).to(p.x.device)
        count = masks.sum(0).to(p.x.dtype)
        windows = masks.shape[0]
        base = baseline_like(self.baseline, p.x)

        def make(start: int, stop: int) -> Tensor:
            flat = torch.arange(start, stop, device=p.x.device)
            sample, win = flat // windows, flat % windows
            return torch.where(masks[win].unsqueeze(1), base[sample], p.x[sample])

        logits = forward_batches(p.model, n * windows, make, self.batch_size, self.progress, self.title)
        sample = torch.arange(n, device=p.x.device).repeat_interleave(windows)
        flat_masks = masks.flatten(1).to(p.x.dtype)  # (windows, H*W)
        out = []
        for j in range(k):
            drop = (p.plan.score(p.logits, j)[sample] - score_rows(p, logits, sample, j)).view(n, windows)
            per_pixel = (drop @ flat_masks).view(n, int(h), int(w)) / count
            out.append(per_pixel.unsqueeze(1).expand_as(p.x))
        return rows(out)
