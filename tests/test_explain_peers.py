"""What the peer libraries compute, where convlens's docs say they differ (docs/explain.md).

Each test pins one statement of the docs about torch-cam 0.5.0 or pytorch-grad-cam 1.5.4
to numbers on a tiny plain-torch model in float64: the peer equals the formula the docs
give for it, and (where the docs say so) differs from the paper's formula or from
convlens. torch-cam comes with the ``test`` extra; pytorch-grad-cam requires torchvision,
so it is installed apart: ``pip install --no-deps grad-cam==1.5.4 ttach==0.0.3`` and
``pip install opencv-python-headless scipy scikit-learn``. Each test is skipped when its
peer is missing.

pytorch-grad-cam imports torchvision at import time (``utils/image.py`` and
``utils/model_targets.py``) only for names these tests never call; torchvision is not
installed here (it does not work with this torch), so :func:`_grad_cam` imports the
package with an empty stand-in for it, removed again from ``sys.modules`` at once.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlens.explain import cam

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _grad_cam() -> Any:
    """``pytorch_grad_cam``, imported without torchvision (skipped when it is not installed)."""
    for dep in ("ttach", "cv2", "scipy", "sklearn"):
        pytest.importorskip(dep)
    if "pytorch_grad_cam" in sys.modules:
        return sys.modules["pytorch_grad_cam"]
    stand_ins: dict[str, types.ModuleType] = {}
    if "torchvision" not in sys.modules:
        tv = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")
        for name in ("Compose", "Normalize", "ToTensor"):
            setattr(transforms, name, None)
        tv.transforms = transforms  # type: ignore[attr-defined]
        stand_ins = {"torchvision": tv, "torchvision.transforms": transforms}
    sys.modules.update(stand_ins)
    try:
        return pytest.importorskip("pytorch_grad_cam")
    finally:
        for name in stand_ins:
            del sys.modules[name]


class Tiny(nn.Module):
    """conv (8×8) → ReLU → max pool → conv2 (4×4) → tanh → global average → linear: the
    gradients vary with the position, so every CAM formula gives a different map, and
    conv2's map must be upsampled."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.tanh(self.conv2(self.pool(self.relu(self.conv(x)))))
        return self.fc(y.mean((2, 3)))


def _model(inplace: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Tiny(inplace).double().eval()


def _x(n: int = 2, size: int = 8, seed: int = 1) -> Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _a_and_g(model: nn.Module, x: Tensor, layer: str, cls: int) -> tuple[Tensor, Tensor]:
    """The layer's true output and the gradient of logit ``cls`` there (plain torch)."""
    got: dict[str, Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: got.__setitem__("a", o))
    try:
        out = model(x)
    finally:
        handle.remove()
    a = got["a"]
    (g,) = torch.autograd.grad(out[:, cls].sum(), a)
    return a.detach().clone(), g


def _scale(m: Tensor, eps: float) -> Tensor:
    """Min-max scaling per row over the last two axes, with a peer's epsilon."""
    lo = m.amin((-2, -1), keepdim=True)
    m = m - lo
    return m / (m.amax((-2, -1), keepdim=True) + eps)


def _gradcam(a: Tensor, g: Tensor) -> Tensor:
    return (g.mean((2, 3), keepdim=True) * a).sum(1)


# ---------------------------------------------------------------------- torch-cam 0.5.0
def test_torchcam_gradcampp_takes_alpha_from_g_squared() -> None:
    """torch-cam divides ``alpha[mask]``, a copy made by boolean indexing, in place: alpha
    stays ``G²``, so ``w_k = Σ G² ReLU(G)``; neither the paper's closed form (convlens,
    pytorch-grad-cam) nor the denominator torch-cam's code spells out."""
    methods = pytest.importorskip("torchcam.methods")
    m, x, cls = _model(), _x(), 1
    with methods.GradCAMpp(m, "conv", input_shape=(1, 8, 8)) as extractor:
        theirs = extractor(class_idx=cls, scores=m(x), normalized=False)[0]
    a, g = _a_and_g(m, x, "conv", cls)
    g2 = g * g
    from_g2 = torch.relu(((g2 * g.clamp_min(0)).sum((2, 3), keepdim=True) * a).sum(1))
    torch.testing.assert_close(theirs, from_g2, rtol=1e-12, atol=1e-12)
    spelled_out = g2 / (2 * g2 + (a * g2 * g).sum((2, 3), keepdim=True) + 1e-8)
    intended = torch.relu(((spelled_out * g.clamp_min(0)).sum((2, 3), keepdim=True) * a).sum(1))
    ours = cam(m, x, method="gradcam++", layer="conv", target=cls).raw.clamp_min(0)
    for other in (intended, ours):
        assert (_scale(theirs, 0) - _scale(other, 0)).abs().max() > 1e-2


def test_torchcam_fuses_layers_normalised_at_their_own_resolution() -> None:
    """torch-cam ``fuse_cams``: each layer's map is ReLU'd and normalised (``+1e-8``) at its
    resolution, upsampled (bilinear, ``align_corners=False``) to the largest map, then the
    maximum is taken. convlens's ``combine="max"`` upsamples first, then normalises: the
    same rule, other numbers."""
    methods = pytest.importorskip("torchcam.methods")
    m, x, cls = _model(), _x(), 1
    with methods.GradCAM(m, ["conv", "conv2"], input_shape=(1, 8, 8)) as extractor:
        cams = extractor(class_idx=cls, scores=m(x))
        fused = extractor.fuse_cams(cams)
    parts = [_scale(torch.relu(_gradcam(*_a_and_g(m, x, layer, cls))), 1e-8) for layer in ("conv", "conv2")]
    up = F.interpolate(parts[1][:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(fused, torch.maximum(parts[0], up), rtol=1e-12, atol=1e-12)
    ours = cam(m, x, method="gradcam", layer=["conv", "conv2"], target=cls, combine="max")
    assert (ours.maps - fused).abs().max() > 1e-3


# ------------------------------------------------------------------ pytorch-grad-cam 1.5.4
def test_grad_cam_gradcampp_is_the_papers_closed_form_with_an_epsilon() -> None:
    """pytorch-grad-cam's Grad-CAM++ is the paper's Eq. 19 closed form, as convlens's, but
    with ``1e-6`` added to the denominator ``2 G² + (Σ A) G³``: for small gradients
    (here ≤ 0.02) that epsilon is not small beside ``2 G²`` and moves the weights by
    percents; convlens adds none (α = 0 only where the denominator is 0)."""
    pgc = _grad_cam()
    m, x, cls = _model(), _x(), 1
    a, g = _a_and_g(m, x, "conv", cls)
    peer = pgc.GradCAMPlusPlus(m, [m.conv])
    try:
        w = torch.from_numpy(peer.get_cam_weights(x, [m.conv], None, a.numpy(), g.numpy()))
    finally:
        peer.activations_and_grads.release()
    g2 = g * g

    def closed_form(eps: float) -> Tensor:
        alpha = torch.where(g != 0, g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + eps), 0.0)
        return (alpha * g.clamp_min(0)).sum((2, 3))

    torch.testing.assert_close(w, closed_form(1e-6), rtol=1e-12, atol=1e-15)
    ours = cam(m, x, method="gradcam++", layer="conv", target=cls).raw
    torch.testing.assert_close(ours, (closed_form(0.0)[:, :, None, None] * a).sum(1), rtol=1e-10, atol=1e-12)
    # gradients here are at most ~0.02: the epsilon moves the weights by up to a few percent
    assert float(g.abs().max()) < 0.05 and float(((w - closed_form(0.0)).abs() / closed_form(0.0).abs().clamp_min(1e-12)).max()) > 1e-2


def test_grad_cam_scorecam_upsamples_masks_with_align_corners() -> None:
    """pytorch-grad-cam's Score-CAM: masks upsampled by ``nn.UpsamplingBilinear2d``
    (``align_corners=True``), min-max scaled with ``+1e-8``, and ``w = softmax over
    channels`` of the target logit of the masked inputs. With convlens's
    ``align_corners=False`` masks the same formula gives other weights."""
    pgc = _grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m, x, cls = _model(), _x(), 1
    a, _ = _a_and_g(m, x, "conv2", cls)  # 4×4, upsampled to 8×8
    peer = pgc.ScoreCAM(m, [m.conv2])
    try:
        theirs = torch.from_numpy(peer.get_cam_weights(x, m.conv2, [ClassifierOutputTarget(cls)] * len(x), a.numpy(), None))
    finally:
        peer.activations_and_grads.release()

    def weights(align_corners: bool) -> Tensor:
        up = F.interpolate(a, size=(8, 8), mode="bilinear", align_corners=align_corners)
        masks = _scale(up, 1e-8)  # (N, K, H, W)
        with torch.no_grad():
            logits = torch.stack([m(x[i : i + 1] * masks[i][:, None])[:, cls] for i in range(len(x))])
        return logits.softmax(1)

    torch.testing.assert_close(theirs.double(), weights(True), rtol=0, atol=1e-6)  # its scores are float32
    assert (theirs.double() - weights(False)).abs().max() > 1e-4


def test_grad_cam_averages_layers_normalised_at_their_own_resolution() -> None:
    """pytorch-grad-cam with several target layers: each map is ReLU'd and scaled
    (``+1e-7``) at its layer's resolution, resized by OpenCV (bilinear, pixel centres),
    averaged, and scaled again. convlens's ``combine="mean"`` upsamples first, then
    normalises: the same rule, other numbers."""
    pgc = _grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m, x, cls = _model(), _x(), 1
    with pgc.GradCAM(m, [m.conv, m.conv2]) as peer:
        theirs = torch.from_numpy(peer(x, targets=[ClassifierOutputTarget(cls)] * len(x))).double()
    parts = [_scale(torch.relu(_gradcam(*_a_and_g(m, x, layer, cls))), 1e-7) for layer in ("conv", "conv2")]
    up = F.interpolate(parts[1][:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(theirs, _scale((parts[0] + up) / 2, 1e-7), rtol=0, atol=1e-5)  # float32 inside
    ours = cam(m, x, method="gradcam", layer=["conv", "conv2"], target=cls, combine="mean")
    assert (ours.normalised - theirs).abs().max() > 1e-3


def test_peers_read_activations_that_an_inplace_relu_overwrites() -> None:
    """With ``ReLU(inplace=True)`` after the layer, both peers keep a view of the layer's
    output (torch-cam ``output.detach()``; pytorch-grad-cam ``output.cpu().detach()``, a
    view on CPU), which the ReLU then overwrites: they compute the CAM from ReLU(A).
    convlens copies the output when a later call could change it: its CAM uses A."""
    m, x, cls = _model(inplace=True), _x(), 1
    a, g = _a_and_g(_model(inplace=False), x, "conv", cls)  # the same weights, no in-place ReLU
    assert bool((a < 0).any())
    ours = cam(m, x, method="gradcam", layer="conv", target=cls).raw
    torch.testing.assert_close(ours, _gradcam(a, g), rtol=1e-12, atol=1e-12)
    methods = pytest.importorskip("torchcam.methods")
    with methods.GradCAM(m, "conv", input_shape=(1, 8, 8)) as extractor:
        m(x)
        torch.testing.assert_close(extractor.hook_a[0], torch.relu(a), rtol=0, atol=0)
    pgc = _grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with pgc.GradCAM(m, [m.conv]) as peer:
        peer(x, targets=[ClassifierOutputTarget(cls)] * len(x))
        torch.testing.assert_close(peer.activations_and_grads.activations[0], torch.relu(a), rtol=0, atol=0)


def test_grad_cam_eigencam_keeps_the_svds_arbitrary_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    """``(-U, S, -Vᵀ)`` is as valid an SVD as ``(U, S, Vᵀ)``. pytorch-grad-cam projects on
    whichever ``Vᵀ[0]`` LAPACK returns, so the other choice turns its map into another
    one (after its ReLU, the complement). convlens picks the sign whose map sums to a
    non-negative value: its map is the same for both."""
    pgc = _grad_cam()
    m, x = _model(), _x()

    def eigen_maps() -> tuple[np.ndarray, Tensor]:
        with pgc.EigenCAM(m, [m.relu]) as peer:
            theirs = peer(x)
        return theirs, cam(m, x, method="eigencam", layer="relu").raw

    peer_a, ours_a = eigen_maps()
    svd_np, svd_torch = np.linalg.svd, torch.linalg.svd

    def np_flipped(*args: Any, **kwargs: Any) -> Any:
        u, s, vt = svd_np(*args, **kwargs)
        return -u, s, -vt

    def torch_flipped(*args: Any, **kwargs: Any) -> Any:
        u, s, vh = svd_torch(*args, **kwargs)
        return types.SimpleNamespace(U=-u, S=s, Vh=-vh)

    monkeypatch.setattr(np.linalg, "svd", np_flipped)
    monkeypatch.setattr(torch.linalg, "svd", torch_flipped)
    peer_b, ours_b = eigen_maps()
    torch.testing.assert_close(ours_a, ours_b, rtol=1e-12, atol=1e-12)
    assert np.abs(peer_a - peer_b).max() > 0.5
