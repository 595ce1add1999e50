"""The class-activation-map family.

Notation: ``A`` ``(N, K, h, w)`` are the activations of the target layer, ``G`` the
gradients there of the target score (a logit), ``A_k``/``G_k`` one channel, sums over
``i, j`` run over the ``h × w`` positions. Every method returns the signed map *before*
ReLU; the base applies ReLU, upsampling and normalisation (see
:mod:`convlens.explain.base`). Where a peer library deviates from the paper, the
docstring says so.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from convlens.explain.base import (
    Combine,
    GradientCAM,
    LayerMethod,
    Pass,
    Perturbation,
    normalise,
    rows,
    upsample,
)
from convlens.explain.engine import forward_batches
from convlens.explain.registry import register_method
from convlens.inspect.capture import replace_output
from convlens.inspect.targets import call_target


def weighted_sum(w: Tensor, a: Tensor) -> Tensor:
    """``sum_k w[n, k] * a[n, k]``: ``(N, K)`` weights and ``(N, K, h, w)`` maps -> ``(N, h, w)``."""
    return (w[:, :, None, None] * a).sum(1)


def gradcam_map(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM's map ``sum_k w_k A_k`` with ``w_k = mean_ij G_k(i, j)``."""
    return weighted_sum(g.mean((2, 3)), a)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den != 0``, else 0."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), torch.zeros_like(num))


@register_method
class GradCAM(GradientCAM):
    """Grad-CAM: ``sum_k w_k A_k`` with ``w_k = mean_ij G_k(i, j)``."""

    name = "gradcam"
    title = "Grad-CAM"
    reference = "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization"

    def _cam(self, a: Tensor, g: Tensor) -> Tensor:
        return gradcam_map(a, g)


@register_method
class GradCAMPlusPlus(GradientCAM):
    """Grad-CAM++: ``w_k = sum_ij alpha_k(i, j) ReLU(G_k(i, j))`` with
    ``alpha = G^2 / (2 G^2 + (sum_ab A_k(a, b)) G^3)`` (0 where that denominator is 0).

    The closed form of the paper's Eq. 19 for an exponential output, as in the authors'
    code and pytorch-grad-cam (which adds ``1e-6`` to the denominator, enough to move
    the weights by percents when gradients are small). torch-cam 0.5.0 computes
    ``alpha = G^2``, i.e. ``w_k = sum_ij G^2 ReLU(G)``: it divides ``alpha[mask]``, a copy
    made by boolean indexing, in place, so its denominator is never applied.
    ``tests/test_explain_peers.py`` checks both.
    """

    name = "gradcam++"
    title = "Grad-CAM++"
    reference = "Chattopadhyay et al. 2018, Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks"

    def _cam(self, a: Tensor, g: Tensor) -> Tensor:
        g2 = g * g
        alpha = _safe_div(g2, 2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g)
        return weighted_sum((alpha * g.clamp_min(0)).sum((2, 3)), a)


@register_method
class XGradCAM(GradientCAM):
    """XGrad-CAM: ``w_k = sum_ij (A_k(i, j) / sum_ab A_k(a, b)) G_k(i, j)`` (0 if the sum is 0)."""

    name = "xgradcam"
    title = "XGrad-CAM"
    reference = "Fu et al. 2020, Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs"

    def _cam(self, a: Tensor, g: Tensor) -> Tensor:
        return weighted_sum(_safe_div((a * g).sum((2, 3)), a.sum((2, 3))), a)


@register_method
class HiResCAM(GradientCAM):
    """HiResCAM: ``sum_k G_k ⊙ A_k``, element-wise (no averaging of the gradients)."""

    name = "hirescam"
    title = "HiResCAM"
    reference = "Draelos & Carin 2020, Use HiResCAM instead of Grad-CAM for faithful explanations of CNNs"

    def _cam(self, a: Tensor, g: Tensor) -> Tensor:
        return (g * a).sum(1)


@register_method
class LayerCAM(GradientCAM):
    """LayerCAM: ``sum_k ReLU(G_k) ⊙ A_k``, element-wise."""

    name = "layercam"
    title = "LayerCAM"
    reference = "Jiang et al. 2021, LayerCAM: Exploring Hierarchical Class Activation Maps for Localization"

    def _cam(self, a: Tensor, g: Tensor) -> Tensor:
        return (g.clamp_min(0) * a).sum(1)


@register_method
class EigenCAM(LayerMethod):
    """Eigen-CAM: the projection of the activations on their first principal direction.

    With ``M`` the ``(h·w) × K`` matrix of activations (one row per position) and ``v`` its
    first right singular vector, the map is ``M v``. As in the paper, ``M`` is not centred
    (pytorch-grad-cam centres it, which changes the map). The sign of ``v`` is arbitrary;
    convlens picks the one whose map sums to a non-negative value, which for
    non-negative activations (after a ReLU) is the usual all-positive map.
    pytorch-grad-cam keeps whichever sign the SVD returns, so the equally valid
    ``(-U, S, -V^T)`` gives it another map (``tests/test_explain_peers.py``). Needs no
    gradients and ignores the target: the map is the same for every class.
    """

    name = "eigencam"
    title = "Eigen-CAM"
    reference = "Muhammad & Yeasin 2020, Eigen-CAM: Class Activation Map using Principal Components"
    class_specific = False

    def _layer_raw(self, p: Pass, layer: str) -> Tensor:
        a = p.activations[layer]
        n, _, h, w = a.shape
        m = a.flatten(2).transpose(1, 2)  # (N, h*w, K)
        v = torch.linalg.svd(m, full_matrices=False).Vh[:, 0, :]  # (N, K)
        proj = torch.bmm(m, v.unsqueeze(2)).squeeze(2)  # (N, h*w)
        proj = torch.where(proj.sum(1, keepdim=True) < 0, -proj, proj)
        return rows([proj.view(n, h, w)] * p.plan.rounds)


def _live_pairs(a: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Sample and channel indices ``(P,)`` of the (sample, channel) pairs where ``keep``."""
    n_idx, k_idx = keep.nonzero(as_tuple=True)
    return n_idx, k_idx


class ChannelPerturbation(Perturbation, LayerMethod):
    """A CAM ``sum_k w_k A_k`` whose channel weights come from extra forward passes, one
    per (sample, channel) pair worth running: Score-CAM (masked inputs) and Ablation-CAM
    (ablated channels). Subclasses pick the pairs and say how a pass becomes a weight."""

    def __init__(self, model: nn.Module, layer: str | list[str] | None = None, *, batch_size: int = 64,
                 progress: bool | None = None, combine: Combine = "mean") -> None:
        super().__init__(model, layer, combine=combine)
        self._set_batching(batch_size, progress)

    def _weighted(self, p: Pass, a: Tensor, pairs: tuple[Tensor, Tensor], run: Callable[[], Tensor],
                  weight: Callable[[Tensor, int], Tensor]) -> Tensor:
        """The map ``(R, h, w)`` with ``w = weight(run(), j)`` for the ``pairs`` (sample and
        channel indices) in round ``j``, 0 for every other channel. ``run`` is called once,
        only if there are pairs."""
        n_idx, k_idx = pairs
        weights = a.new_zeros(a.shape[0], a.shape[1], p.plan.rounds)
        if n_idx.numel():
            out = run()
            for j in range(p.plan.rounds):
                weights[n_idx, k_idx, j] = weight(out, j)
        return rows([weighted_sum(weights[:, :, j], a) for j in range(p.plan.rounds)])


@register_method
class ScoreCAM(ChannelPerturbation):
    """Score-CAM: ``sum_k w_k A_k`` with ``w_k`` the target's softmax probability for the
    input masked by channel ``k``: ``w_k = softmax(f(X ⊙ s(Up(A_k))))_c``, where ``Up``
    upsamples to the input size (bilinear) and ``s`` min-max scales to [0, 1].

    As in the authors' code, a channel that is constant over the image gives no mask and
    weight 0 (its masked input is not run). ``Up`` uses pixel centres
    (``align_corners=False``); pytorch-grad-cam upsamples its masks with
    ``nn.UpsamplingBilinear2d`` (``align_corners=True``) and takes a softmax over channels
    of the masked logits instead of the class probability. For a function target the weight is that
    function of the masked input's logits. The ``1 + K`` forward passes (the image, then
    its masked copies) run ``batch_size`` masked inputs at a time, without gradients;
    masks are built per batch, so memory is bounded by ``batch_size``.
    """

    name = "scorecam"
    title = "Score-CAM"
    reference = "Wang et al. 2020, Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks"
    uses_gradients = False

    def _layer_raw(self, p: Pass, layer: str) -> Tensor:
        a = p.activations[layer]
        size = (int(p.x.shape[-2]), int(p.x.shape[-1]))
        flat = a.flatten(2)
        n_idx, k_idx = _live_pairs(a, flat.amax(2) > flat.amin(2))

        def make(start: int, stop: int) -> Tensor:
            ni, ki = n_idx[start:stop], k_idx[start:stop]
            masks = normalise(upsample(a[ni, ki], size)).unsqueeze(1)  # (B, 1, H, W)
            return p.x[ni] * masks

        def run() -> Tensor:
            logits = forward_batches(p.model, int(n_idx.numel()), make, self.batch_size, self.progress,
                                     f"{self.title} at {layer}")
            return logits.softmax(1) if p.plan.function is None else logits

        return self._weighted(p, a, (n_idx, k_idx), run, lambda probs, j: score_rows(p, probs, n_idx, j))


def score_rows(p: Pass, values: Tensor, sample: Tensor, j: int) -> Tensor:
    """Round-``j`` scores of rows of ``values`` ``(B, classes)`` belonging to ``sample`` ``(B,)``:
    the target class's entry, or the target function applied to the rows."""
    if p.plan.function is not None:
        return call_target(p.plan.function, values)
    return p.plan.score(values, j, rows=sample)


@register_method
class AblationCAM(ChannelPerturbation):
    """Ablation-CAM: ``sum_k w_k A_k`` with ``w_k = (y_c - y_c^k) / y_c``, where ``y_c`` is
    the target logit and ``y_c^k`` the logit with channel ``k`` of the layer set to zero.

    ``w_k = 0`` where ``y_c = 0`` (the paper's ratio is undefined there) and for channels
    that are already all zero (ablating them changes nothing, so they are not run). The
    ablated passes repeat the input and zero one channel per copy at the layer
    (:func:`convlens.inspect.capture.replace_output`), ``batch_size`` copies at a time, without gradients.
    """

    name = "ablationcam"
    title = "Ablation-CAM"
    reference = "Desai & Ramaswamy 2020, Ablation-CAM: Visual Explanation for Deep Convolutional Network via Gradient-free Localization"
    uses_gradients = False

    def _layer_raw(self, p: Pass, layer: str) -> Tensor:
        a = p.activations[layer]
        k = a.shape[1]
        n_idx, k_idx = _live_pairs(a, a.flatten(2).ne(0).any(2))
        current: list[Tensor] = []

        def run() -> Tensor:
            keep = torch.ones(int(n_idx.numel()), k, 1, 1, dtype=a.dtype, device=a.device)
            keep[torch.arange(len(k_idx), device=a.device), k_idx] = 0

            def make(start: int, stop: int) -> Tensor:
                current[:] = [keep[start:stop]]
                return p.x[n_idx[start:stop]]

            with replace_output(p.model, layer, lambda out: out * current[0]):
                return forward_batches(p.model, int(n_idx.numel()), make, self.batch_size, self.progress,
                                       f"{self.title} at {layer}")

        def weight(logits: Tensor, j: int) -> Tensor:
            y = p.plan.score(p.logits, j)[n_idx]
            return _safe_div(y - score_rows(p, logits, n_idx, j), y)

        return self._weighted(p, a, (n_idx, k_idx), run, weight)
