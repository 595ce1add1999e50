"""convlens against captum, after aligning conventions, on seed-cnn and a plain-torch ResNet-18.

Conventions aligned here (see docs/explain.md):

* captum's LayerGradCam returns ``sum_k mean(G_k) A_k`` without ReLU by default: that is
  convlens's ``raw``; with ``relu_attributions=True`` and
  ``LayerAttribution.interpolate(..., "bilinear")`` (captum's default is "nearest") it is
  convlens's ``maps``.
* captum's attributions are per channel ``(N, C, H, W)``: convlens's ``attributions``.

The models run in float64 so that summation order cannot hide a real difference; the
tolerance is 1e-5 absolute, as the acceptance criteria ask.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from convlens.explain import cam
from zoo import ResNet18, SeedCNN, seeded

TOL = {"atol": 1e-5, "rtol": 0.0}


def _seed_cnn() -> tuple[nn.Module, torch.Tensor, dict[str, str]]:
    m = seeded(SeedCNN()).double()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return m, x, {"default": "pool2", "mid": "conv2"}


def _resnet() -> tuple[nn.Module, torch.Tensor, dict[str, str]]:
    m = seeded(ResNet18(num_classes=10)).double()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return m, x, {"default": "layer4", "mid": "layer3"}


MODELS = {"seed-cnn": _seed_cnn, "resnet-18": _resnet}


@pytest.fixture(scope="module", params=list(MODELS))
def setup(request: pytest.FixtureRequest) -> tuple[nn.Module, torch.Tensor, dict[str, str]]:
    return MODELS[request.param]()


@pytest.mark.parametrize("which", ["default", "mid"])
def test_gradcam_equals_captum_layergradcam(setup: tuple, which: str) -> None:
    m, x, layers = setup
    layer = layers[which]
    modules = dict(m.named_modules())
    targets = m(x).argmax(1)
    ours = cam(m, x, method="gradcam", layer=layer if which == "mid" else None)
    assert ours.layers == (layer,)
    theirs = LayerGradCam(m, modules[layer]).attribute(x, target=targets)
    torch.testing.assert_close(ours.raw, theirs[:, 0], **TOL)
    theirs_relu = LayerGradCam(m, modules[layer]).attribute(x, target=targets, relu_attributions=True)
    up = LayerAttribution.interpolate(theirs_relu, tuple(x.shape[-2:]), "bilinear")
    torch.testing.assert_close(ours.maps, up[:, 0], **TOL)
