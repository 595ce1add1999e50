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
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # captum's notes on requires_grad and hooks


def _seed_cnn() -> tuple[nn.Module, torch.Tensor, dict[str, str]]:
    m = seeded(SeedCNN()).double()
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return m, x, {"default": "pool2", "mid": "conv2"}


def _resnet() -> tuple[nn.Module, torch.Tensor, dict[str, str]]:
    m = seeded(ResNet18(num_classes=10)).double()
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
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


def test_gradcam_of_one_image_equals_captum(setup: tuple) -> None:
    # a single image takes Grad-CAM's own path (plain matrix products instead of batched ones)
    m, x, layers = setup
    module = dict(m.named_modules())[layers["mid"]]
    for i in range(x.shape[0]):
        one = x[i : i + 1]
        ours = cam(m, one, method="gradcam", layer=layers["mid"], target=1)
        theirs = LayerGradCam(m, module).attribute(one, target=1)
        torch.testing.assert_close(ours.raw, theirs[:, 0], **TOL)
    torch.testing.assert_close(cam(m, x, method="gradcam", layer=layers["mid"], target=1).raw[-1], ours.raw[0], **TOL)


def test_saliency_equals_captum(setup: tuple) -> None:
    from captum.attr import Saliency

    m, x, _ = setup
    ours = cam(m, x, method="saliency", target=2)
    theirs = Saliency(m).attribute(x, target=2, abs=False)
    torch.testing.assert_close(ours.attributions, theirs, **TOL)
    torch.testing.assert_close(ours.raw, theirs.abs().amax(1), **TOL)


def test_guided_backprop_and_guided_gradcam_equal_captum(setup: tuple) -> None:
    from captum.attr import GuidedBackprop, GuidedGradCam

    m, x, layers = setup
    layer = layers["mid"]
    ours = cam(m, x, method="guided-backprop", target=2)
    theirs = GuidedBackprop(m).attribute(x, target=2)
    torch.testing.assert_close(ours.attributions, theirs, **TOL)
    ours = cam(m, x, method="guided-gradcam", layer=layer, target=2)
    theirs = GuidedGradCam(m, dict(m.named_modules())[layer]).attribute(x, target=2, interpolate_mode="bilinear")
    torch.testing.assert_close(ours.attributions, theirs, **TOL)


def test_integrated_gradients_equal_captum(setup: tuple) -> None:
    from captum.attr import IntegratedGradients

    m, x, _ = setup
    rules = ("gausslegendre", "riemann_trapezoid") if x.shape[1] == 1 else ("gausslegendre",)
    for rule in rules:
        ours = cam(m, x, method="integrated-gradients", target=1, n_steps=6, rule=rule, batch_size=5)
        theirs = IntegratedGradients(m).attribute(x, target=1, n_steps=6, method=rule)
        torch.testing.assert_close(ours.attributions, theirs, **TOL)


def test_occlusion_equals_captum(setup: tuple) -> None:
    from captum.attr import Occlusion

    m, x, _ = setup
    c, h, _w = x.shape[1:]
    window, stride = (9, 6) if h == 28 else (20, 14)
    ours = cam(m, x, method="occlusion", target=1, window=window, stride=stride, baseline=0.5, batch_size=7)
    theirs = Occlusion(m).attribute(
        x, target=1, sliding_window_shapes=(c, window, window), strides=(c, stride, stride), baselines=0.5,
        perturbations_per_eval=16,
    )
    # captum accumulates occlusion in float32 whatever the input's dtype
    torch.testing.assert_close(ours.attributions, theirs.to(ours.attributions.dtype), **TOL)
