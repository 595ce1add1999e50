"""The class-activation-map family.

Notation: ``A`` ``(N, K, h, w)`` are the activations of the target layer, ``G`` the
gradients of the target score (a logit) with respect to them; ``A_k`` one channel.
Every method returns the signed map before ReLU; the base applies ReLU, upsampling and
normalisation (see :mod:`convlens.explain.base`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from convlens.explain.base import GradientCAM
from convlens.explain.registry import register_method


def weighted_sum(w: Tensor, a: Tensor) -> Tensor:
    """``sum_k w[n, k] * a[n, k]``: ``(N, K)`` weights and ``(N, K, h, w)`` maps -> ``(N, h, w)``."""
    n, _, h, ww = a.shape
    return torch.bmm(w.unsqueeze(1), a.flatten(2)).view(n, h, ww)


@register_method
class GradCAM(GradientCAM):
    """Grad-CAM: ``sum_k w_k A_k`` with ``w_k`` the spatial mean of ``G_k``."""

    name = "gradcam"
    title = "Grad-CAM"
    reference = "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization"

    def _cam(self, a: Tensor, g: Tensor) -> Tensor:
        return weighted_sum(g.mean((2, 3)), a)
