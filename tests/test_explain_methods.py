"""Every explanation method against its paper's formula, worked out by hand on a tiny model.

The tiny model (``Tiny``) has fixed small-integer weights so that every intermediate value
can be written down. Input ``X`` (1×1×3×3) and the conv layer (two 2×2 kernels):

    X = [[1, 0, 2],      k0 = [[1, 0],   bias 0     A0 = [[2, 0],      (conv output,
         [0, 1, 0],            [0, 1]]                    [0, 2]]       the CAM layer)
         [3, 0, 1]]      k1 = [[0, 1],   bias -1    A1 = [[-1, 2],
                               [1, 0]]                    [3, -1]]

ReLU gives R0 = [[2, 0], [0, 2]], R1 = [[0, 2], [3, 0]]; the head is a linear layer on the
flattened ReLU output (channel-major) with rows

    W0 = [1, 2, 0, 3,  0.5, 1, -2, 2]      -> logit0 = 2 + 6 + 2 - 6 = 4
    W1 = [0, 1, 1, 0,  -1, 0, 1, 0.5]      -> logit1 = 3

so the predicted class is 0. The gradient of logit c with respect to A is W_c (reshaped
to 2×2×2) times the ReLU mask (A > 0): for class 0, G0 = [[1, 0], [0, 3]] and
G1 = [[0, 1], [-2, 0]]. Maps are upsampled from the layer's 2×2 to the input's 3×3,
bilinear with align_corners=False, which takes
[[a, b], [c, d]] to

    [[a,       (a+b)/2,       b      ],
     [(a+c)/2, (a+b+c+d)/4,   (b+d)/2],
     [c,       (c+d)/2,       d      ]].
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convlens.explain as ex
from convlens.errors import ConfigError, ConvlensError, LayerError
from convlens.explain import METHODS, cam
from zoo import BasicBlock, SeedCNN, assert_same_state, model_state, seeded

X = torch.tensor([[[[1.0, 0, 2], [0, 1, 0], [3, 0, 1]]]], dtype=torch.float64)
A0 = torch.tensor([[2.0, 0], [0, 2]], dtype=torch.float64)
A1 = torch.tensor([[-1.0, 2], [3, -1]], dtype=torch.float64)


class MiniResNet(nn.Module):
    """A small residual network: batch norm, dropout, in-place and functional ReLUs, a
    module called twice per block (as in torchvision's ResNet)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, 2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(self.drop(F.relu(x).mean((2, 3))))


class Tiny(nn.Module):
    """conv (2 channels) -> ReLU (module, or F.relu with functional=True) -> linear (2 classes)."""

    def __init__(self, functional: bool | str = False) -> None:
        super().__init__()
        self.functional = functional
        self.conv = nn.Conv2d(1, 2, 2)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1.0, 0], [0, 1]]], [[[0.0, 1], [1, 0]]]]))
            self.conv.bias.copy_(torch.tensor([0.0, -1.0]))
            self.fc.weight.copy_(torch.tensor([[1, 2, 0, 3, 0.5, 1, -2, 2], [0, 1, 1, 0, -1, 0, 1, 0.5]]))
            self.fc.bias.zero_()
        self.double().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        kind = self.functional
        if kind == "inplace":
            r = F.relu(a, inplace=True)
        elif kind == "torch.relu_":
            r = torch.relu_(a)
        elif kind == "method":
            r = a.relu()
        else:
            r = F.relu(a) if kind else self.relu(a)
        return self.fc(r.flatten(1))


def up(m: torch.Tensor) -> torch.Tensor:
    """The 2×2 -> 3×3 bilinear upsampling of the module docstring, by hand."""
    a, b, c, d = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    return torch.stack([
        torch.stack([a, (a + b) / 2, b]),
        torch.stack([(a + c) / 2, (a + b + c + d) / 4, (b + d) / 2]),
        torch.stack([c, (c + d) / 2, d]),
    ])


def close(actual: torch.Tensor, expected: torch.Tensor | list, atol: float = 1e-12) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# --- the fixture itself -------------------------------------------------------------------


def test_tiny_model_is_what_the_docstring_says() -> None:
    m = Tiny()
    close(m.conv(X)[0, 0], A0)
    close(m.conv(X)[0, 1], A1)
    close(m(X)[0], [4.0, 3.0])
    assert torch.equal(Tiny(functional=True)(X), m(X))


def test_upsampling_by_hand_matches_torch() -> None:
    m = torch.tensor([[1.0, 2], [3, 5]], dtype=torch.float64)
    close(ex.upsample(m[None], (3, 3))[0], up(m))


# --- Grad-CAM -----------------------------------------------------------------------------


def test_gradcam_by_hand() -> None:
    # class 0: w0 = mean(G0) = (1 + 3) / 4 = 1; w1 = mean(G1) = (1 - 2) / 4 = -0.25
    r = cam(Tiny(), X, method="gradcam", layer="conv", target=0)
    raw = 1.0 * A0 - 0.25 * A1  # [[2.25, -0.5], [-0.75, 2.25]]
    close(r.raw[0], raw)
    close(r.maps[0], up(raw.clamp_min(0)))
    close(r.normalised[0], up(raw.clamp_min(0)) / 2.25)
    assert r.target.tolist() == [0] and r.sample.tolist() == [0]
    close(r.probabilities[0], torch.softmax(torch.tensor([4.0, 3.0], dtype=torch.float64), 0))


def test_gradcam_by_hand_other_class() -> None:
    # class 1: G0 = [[0, 1], [1, 0]] * mask [[1, 0], [0, 1]] = 0 -> w0 = 0;
    #          G1 = [[-1, 0], [1, 0.5]] * mask [[0, 1], [1, 0]] = [[0, 0], [1, 0]] -> w1 = 0.25
    r = cam(Tiny(), X, layer="conv", target=1)
    close(r.raw[0], 0.25 * A1)


def test_default_target_is_the_prediction_and_default_layer_the_last_spatial_one() -> None:
    r = cam(Tiny(), X)
    assert r.layers == ("relu",)  # the last module with a (N, C, H, W) output
    assert r.target.tolist() == [0]


def test_default_layer_skips_dropout_and_identity_for_the_layer_that_made_their_input() -> None:
    # a dropout (identity in eval mode) after the last conv stage would name the CAM after
    # "dropout"; the map is the pooled one, so the default is the pool
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout2d(0.2), nn.Identity(),
                          nn.Flatten(), nn.Linear(4 * 13 * 13, 3)).eval()
    r = cam(model, torch.randn(2, 1, 28, 28), method="gradcam")
    assert r.layers == ("2",)
    from convlens.inspect import layers

    assert layers(model, (1, 28, 28)).target == "2"


def test_top_k_targets_give_one_row_per_class_sample_major() -> None:
    x = torch.cat([X, X.flip(-1)])
    r = cam(Tiny(), x, layer="conv", target="top2")
    logits = Tiny()(x)
    assert r.sample.tolist() == [0, 0, 1, 1]
    assert r.target.tolist() == logits.argsort(1, descending=True).flatten().tolist()
    for row, (n, c) in enumerate(zip(r.sample.tolist(), r.target.tolist(), strict=True)):
        close(r.raw[row], cam(Tiny(), x[n:n + 1], layer="conv", target=c).raw[0])
    close(r.target_probability, logits.softmax(1).sort(1, descending=True).values.flatten())


def test_function_target_is_differentiated() -> None:
    # logit0 - logit1 is linear: its Grad-CAM is the class-0 map minus the class-1 map
    r = cam(Tiny(), X, layer="conv", target=lambda z: z[:, 0] - z[:, 1])
    close(r.raw[0], (1.0 * A0 - 0.25 * A1) - 0.25 * A1)
    assert r.target.tolist() == [-1]
    assert torch.isnan(r.target_probability).all()


def test_per_sample_targets() -> None:
    x = torch.cat([X, X])
    r = cam(Tiny(), x, layer="conv", target=[0, 1])
    close(r.raw[0], 1.0 * A0 - 0.25 * A1)
    close(r.raw[1], 0.25 * A1)


def test_several_layers_one_map_each_and_a_combined_map() -> None:
    m = seeded(SeedCNN())
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    r = cam(m, x, layer=["conv1", "conv2"], target=3)
    one = {name: cam(m, x, layer=name, target=3) for name in ("conv1", "conv2")}
    for name in one:
        close(r.parts[name].raw, one[name].raw, atol=1e-6)
    close(r.maps, (one["conv1"].normalised + one["conv2"].normalised) / 2, atol=1e-6)
    rmax = cam(m, x, layer=["conv1", "conv2"], target=3, combine="max")
    close(rmax.maps, torch.maximum(one["conv1"].normalised, one["conv2"].normalised), atol=1e-6)
    with pytest.raises(ConfigError, match=r"parts\['conv1'\]\.raw"):
        _ = r.raw


def test_a_layer_modified_in_place_downstream_is_read_before_the_change() -> None:
    # InplaceCNN-like: conv followed by ReLU(inplace=True) overwrites the conv output
    class Inplace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)
            self.fc = nn.Linear(3 * 6 * 6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.relu(self.conv(x)).flatten(1))

    m = seeded(Inplace())
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    a = m.conv(x).detach().requires_grad_(True)
    score = m.fc(F.relu(a).flatten(1))[:, 1].sum()
    (g,) = torch.autograd.grad(score, a)
    expected = (g.mean((2, 3))[:, :, None, None] * a.detach()).sum(1)
    for _ in range(2):  # the first call learns that the output is modified in place
        r = cam(m, x, layer="conv", target=1)
        close(r.raw, expected, atol=1e-6)
        assert (r.raw < 0).any()  # pre-ReLU values: the in-place ReLU did not reach them


def test_frozen_model_still_gets_gradients() -> None:
    m = Tiny()
    for p in m.parameters():
        p.requires_grad_(False)
    close(cam(m, X, layer="conv", target=0).raw[0], 1.0 * A0 - 0.25 * A1)
    assert not any(p.requires_grad for p in m.parameters())


def test_input_is_cast_to_the_models_dtype_and_a_single_image_is_a_batch_of_one() -> None:
    r = cam(Tiny(), X[0].float(), layer="conv", target=0)
    assert r.raw.dtype == torch.float64 and r.raw.shape == (1, 2, 2)


def test_training_mode_model_is_explained_in_eval_mode() -> None:
    m = seeded(MiniResNet()).train()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    r_train = cam(m, x, layer="layer2", target=1)
    r_eval = cam(m.eval(), x, layer="layer2", target=1)
    close(r_train.raw, r_eval.raw, atol=0)


# --- the other CAM methods ----------------------------------------------------------------
# class 0 throughout: G0 = [[1, 0], [0, 3]], G1 = [[0, 1], [-2, 0]]; sum A0 = 4, sum A1 = 3


def test_gradcam_plus_plus_by_hand() -> None:
    # alpha = G^2 / (2 G^2 + (sum A) G^3); w = sum alpha ReLU(G)
    # ch0: (0,0) g=1: 1/(2+4) = 1/6;  (1,1) g=3: 9/(18+4*27) = 1/14  -> w0 = 1/6 + 3/14 = 8/21
    # ch1: (0,1) g=1: 1/(2+3) = 1/5;  (1,0) g=-2: ReLU(g) = 0      -> w1 = 1/5
    r = cam(Tiny(), X, method="gradcam++", layer="conv", target=0)
    close(r.raw[0], 8 / 21 * A0 + 1 / 5 * A1)


def test_xgradcam_by_hand() -> None:
    # w = sum (A / sum A) G: w0 = (2*1 + 2*3) / 4 = 2; w1 = (2*1 + 3*(-2)) / 3 = -4/3
    r = cam(Tiny(), X, method="xgradcam", layer="conv", target=0)
    close(r.raw[0], 2 * A0 - 4 / 3 * A1)


def test_hirescam_by_hand() -> None:
    # sum_k G_k * A_k = [[2, 0], [0, 6]] + [[0, 2], [-6, 0]]
    r = cam(Tiny(), X, method="hirescam", layer="conv", target=0)
    close(r.raw[0], [[2.0, 2], [-6, 6]])


def test_layercam_by_hand() -> None:
    # sum_k ReLU(G_k) * A_k = [[2, 0], [0, 6]] + [[0, 2], [0, 0]]
    r = cam(Tiny(), X, method="layercam", layer="conv", target=0)
    close(r.raw[0], [[2.0, 2], [0, 6]])


def test_eigencam_by_hand() -> None:
    # M (positions x channels) = [[2, -1], [0, 2], [0, 3], [2, -1]]; M^T M = [[8, -4], [-4, 15]]
    # largest eigenvalue l = (23 + sqrt(113)) / 2, eigenvector (4, 8 - l); map = M v / |v|,
    # signed so that it sums to >= 0
    lam = (23 + 113**0.5) / 2
    v = torch.tensor([4.0, 8 - lam], dtype=torch.float64)
    v = v / v.norm()
    m = torch.stack([A0.flatten(), A1.flatten()], 1)
    proj = m @ v
    proj = -proj if proj.sum() < 0 else proj
    for target in (0, 1):  # class-agnostic
        r = cam(Tiny(), X, method="eigencam", layer="conv", target=target)
        close(r.raw[0], proj.view(2, 2))


def test_scorecam_by_hand() -> None:
    # masks: A0 upsampled [[2, 1, 0], [1, 1, 1], [0, 1, 2]] / 2;
    #        A1 upsampled [[-1, .5, 2], [1, .75, .5], [3, 1, -1]], (. + 1) / 4
    m0 = torch.tensor([[1, 0.5, 0], [0.5, 0.5, 0.5], [0, 0.5, 1]], dtype=torch.float64)
    m1 = torch.tensor([[0, 0.375, 0.75], [0.5, 0.4375, 0.375], [1, 0.5, 0]], dtype=torch.float64)
    close(ex.normalise(ex.upsample(torch.stack([A0, A1]), (3, 3))), torch.stack([m0, m1]))
    # X*m0 = [[1,0,0],[0,.5,0],[0,0,1]]: A0 = [[1.5,0],[0,1.5]], A1 <= 0 -> logits (6, 0)
    # X*m1 = [[0,0,1.5],[0,.4375,0],[3,0,0]]: A0 = [[.4375,0],[0,.4375]],
    #        R1 = [[0,.9375],[2.4375,0]] -> logits (.4375*4 + .9375 - 2*2.4375, 2.4375) = (-2.1875, 2.4375)
    close(Tiny()(X * m0)[0], [6.0, 0.0])
    close(Tiny()(X * m1)[0], [-2.1875, 2.4375])
    w0 = 1 / (1 + torch.exp(torch.tensor(-6.0, dtype=torch.float64)))
    w1 = 1 / (1 + torch.exp(torch.tensor(2.4375 + 2.1875, dtype=torch.float64)))
    for batch_size in (1, 2):
        r = cam(Tiny(), X, method="scorecam", layer="conv", target=0, batch_size=batch_size)
        close(r.raw[0], w0 * A0 + w1 * A1)


def test_ablationcam_by_hand() -> None:
    # zero channel 0: logit0 = 0.5*0 + 1*2 - 2*3 + 2*0 = -4 -> w0 = (4 - (-4)) / 4 = 2
    # zero channel 1: logit0 = 1*2 + 3*2 = 8               -> w1 = (4 - 8) / 4 = -1
    for batch_size in (1, 64):
        r = cam(Tiny(), X, method="ablationcam", layer="conv", target=0, batch_size=batch_size)
        close(r.raw[0], 2 * A0 - A1)


# --- input-attribution methods (class 0) -------------------------------------------------
# dlogit0/dx: each active conv unit passes its head weight to the two pixels its kernel reads:
#   A0(0,0) w=1 -> x00, x11;  A0(1,1) w=3 -> x11, x22;  A1(0,1) w=1 -> x02, x11;  A1(1,0) w=-2 -> x11, x20
DX = [[1.0, 0, 1], [0, 1 + 3 + 1 - 2, 0], [-2, 0, 3]]


def test_saliency_by_hand() -> None:
    r = cam(Tiny(), X, method="saliency", target=0)
    close(r.attributions[0, 0], DX)
    close(r.raw[0], torch.tensor(DX).abs())  # max |.| over the one channel


@pytest.mark.parametrize("functional", [False, True, "inplace", "torch.relu_", "method"],
                         ids=["relu-module", "F.relu", "F.relu-inplace", "torch.relu_", "Tensor.relu"])
def test_guided_backprop_by_hand(functional: bool | str) -> None:
    # the gradient reaching the ReLU output is W0: ch0 [[1, 2], [0, 3]], ch1 [[0.5, 1], [-2, 2]];
    # guided: its positive part (ch1 -> [[0.5, 1], [0, 2]]) times the ReLU mask
    # -> ch0 [[1, 0], [0, 3]], ch1 [[0, 1], [0, 0]]; back through the conv:
    expected = [[1.0, 0, 1], [0, 1 + 3 + 1, 0], [0, 0, 3]]
    r = cam(Tiny(functional=functional), X, method="guided-backprop", target=0)
    close(r.attributions[0, 0], expected)
    close(r.raw[0], expected)


def test_guided_relus_are_only_guided_inside_the_call() -> None:
    # after guided backpropagation, ordinary gradients of the same model are ordinary again
    m = Tiny(functional=True)
    cam(m, X, method="guided-backprop", target=0)
    x = X.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m(x)[0, 0], x)
    close(g[0, 0], DX)


def test_guided_gradcam_by_hand() -> None:
    guided = torch.tensor([[1.0, 0, 1], [0, 5, 0], [0, 0, 3]], dtype=torch.float64)
    gradcam = up((1.0 * A0 - 0.25 * A1).clamp_min(0))  # [[2.25, 1.125, 0], [1.125, ...], [0, 1.125, 2.25]]
    r = cam(Tiny(), X, method="guided-gradcam", layer="conv", target=0)
    close(r.attributions[0, 0], guided * gradcam)
    close(r.raw[0], [[2.25, 0, 0], [0, 5.625, 0], [0, 0, 6.75]])


def test_integrated_gradients_by_hand() -> None:
    # along a*X (baseline 0) the units switch on at a = 0 (A0), 1/3 (A1(0,1) = 3a - 1) and
    # 1/4 (A1(1,0) = 4a - 1), so IG_i = x_i * sum_units w * (1 - a_on) * [pixel i read by unit]:
    #   x00: 1*1;  x22: 1*3;  x02: 2*1*(2/3);  x20: 3*(-2)*(3/4);  x11: 1*(1 + 3 + 2/3 - 2*3/4)
    # the midpoint rule with 12 steps never lands on 1/4 or 1/3 and counts them exactly
    expected = [[1.0, 0, 4 / 3], [0, 19 / 6, 0], [-4.5, 0, 3]]
    r = cam(Tiny(), X, method="integrated-gradients", target=0, n_steps=12, rule="riemann_middle")
    close(r.attributions[0, 0], expected)
    assert float(r.raw.sum()) == pytest.approx(4.0)  # completeness: f(X) - f(0) = 4 - 0


def test_occlusion_by_hand() -> None:
    # one pixel at a time set to 0: logit0 becomes 3, -, 2 / -, 1, - / 10, -, 1 (zeros change nothing)
    r = cam(Tiny(), X, method="occlusion", target=0, window=1, stride=1)
    close(r.attributions[0, 0], [[1.0, 0, 2], [0, 3, 0], [-6, 0, 3]])


def test_occlusion_windows_average_over_the_windows_covering_a_pixel() -> None:
    # a linear model: the drop for a window is sum(w * x) over it, so each pixel gets the
    # mean over its covering windows of those window sums
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 1)).double()
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    wx = (lin[1].weight.view(4, 4) * x[0, 0]).detach()
    expected = torch.zeros(4, 4, dtype=torch.float64)
    count = torch.zeros(4, 4, dtype=torch.float64)
    for top in (0, 2, 4):  # window 3, stride 2: the last window sticks out and is cut
        for left in (0, 2, 4):
            expected[top:top + 3, left:left + 3] += wx[top:top + 3, left:left + 3].sum()
            count[top:top + 3, left:left + 3] += 1
    r = cam(lin, x, method="occlusion", target=0, window=3, stride=2)
    close(r.raw[0], expected / count)


def test_smoothgrad_without_noise_is_saliency_and_on_a_linear_model_is_the_weights() -> None:
    r0 = cam(Tiny(), X, method="smoothgrad", target=0, noise=0.0, n_samples=4)
    close(r0.attributions[0, 0], DX)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(9, 2)).double()
    r = cam(lin, X, method="smoothgrad", target=1, n_samples=8, noise=0.3)
    close(r.attributions[0, 0], lin[1].weight[1].view(3, 3).detach())


def test_smoothgrad_averages_gradients_at_the_noisy_inputs() -> None:
    class Square(nn.Module):  # f(x) = sum c x^2, gradient 2 c x
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Parameter(torch.arange(9, dtype=torch.float64).view(1, 1, 3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.c * x * x).flatten(1).sum(1, keepdim=True)

    m = Square()
    x = torch.cat([X, 2 * X])
    method = ex.make_method("smoothgrad", m, n_samples=5, noise=0.2, seed=3, batch_size=3)
    r = method(x, target=0)
    for n in range(2):
        noisy = x[n] + method.noise_for(x[n], n)  # (5, 1, 3, 3)
        close(r.attributions[n], (2 * m.c[0] * noisy).mean(0).detach(), atol=1e-12)
        assert float(method.noise_for(x[n], n).std()) == pytest.approx(0.2 * float(x[n].max() - x[n].min()), rel=0.5)
    # the batch size changes nothing
    again = ex.make_method("smoothgrad", m, n_samples=5, noise=0.2, seed=3, batch_size=100)(x, target=0)
    close(again.attributions, r.attributions, atol=1e-12)


def _seed(n: int = 3) -> tuple[nn.Module, torch.Tensor]:
    m = seeded(SeedCNN()).double()
    return m, torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def test_scorecam_equals_its_unbatched_definition() -> None:
    m, x = _seed(2)
    target = m(x).argmax(1)
    a = m.conv2(m.pool1(m.relu1(m.conv1(x)))).detach()
    expected = torch.zeros(len(x), 14, 14, dtype=torch.float64)
    with torch.no_grad():
        for n in range(len(x)):
            for k in range(a.shape[1]):
                up = F.interpolate(a[n, k][None, None], size=(28, 28), mode="bilinear", align_corners=False)[0, 0]
                if up.max() == up.min():
                    continue  # a constant channel gives no mask: weight 0
                mask = (up - up.min()) / (up.max() - up.min())
                p = torch.softmax(m(x[n:n + 1] * mask), 1)[0, target[n]]
                expected[n] += p * a[n, k]
    for batch_size in (7, 1000):
        r = cam(m, x, method="scorecam", layer="conv2", batch_size=batch_size)
        close(r.raw, expected, atol=1e-10)


def test_ablationcam_equals_its_unbatched_definition() -> None:
    m, x = _seed(2)
    with torch.no_grad():
        logits = m(x)
        target = logits.argmax(1)
        a = m.conv2(m.pool1(m.relu1(m.conv1(x))))
        tail = lambda z: m.fc(torch.flatten(m.pool2(m.relu2(z)), 1))  # noqa: E731
        expected = torch.zeros(len(x), 14, 14, dtype=torch.float64)
        for n in range(len(x)):
            y = logits[n, target[n]]
            for k in range(a.shape[1]):
                z = a[n:n + 1].clone()
                z[0, k] = 0
                expected[n] += (y - tail(z)[0, target[n]]) / y * a[n, k]
    r = cam(m, x, method="ablationcam", layer="conv2", batch_size=9)
    close(r.raw, expected, atol=1e-10)


def test_gradient_cams_share_one_forward_and_one_backward_pass() -> None:
    m, x = _seed(2)
    forwards = []
    handle = m.register_forward_hook(lambda mod, args, out: forwards.append(1))
    try:
        names = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]
        together = ex.explain(m, x, names, layer="conv2", target=1)
    finally:
        handle.remove()
    assert len(forwards) == 1
    for name in names:
        close(together[name].raw, cam(m, x, method=name, layer="conv2", target=1).raw, atol=1e-12)


def test_no_reference_to_the_model_is_kept() -> None:
    import gc
    import weakref

    m = MiniResNet()
    x = torch.randn(1, 3, 8, 8)
    for name in ("gradcam", "scorecam", "guided-backprop"):
        cam(m, x, method=name, layer="layer1.conv1" if METHODS[name].needs_layer else None)
    cam(m, x)  # the default layer is remembered per model, weakly
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "gradcamm"}, ConfigError, "did you mean 'gradcam'"),
        ({"layer": "conv3"}, LayerError, "unknown layer 'conv3'"),
        ({"layer": "fc"}, ConfigError, "not a spatial map"),
        ({"target": 5}, ConfigError, "out of range"),
        ({"target": "top9"}, ConfigError, "top1..top2"),
        ({"target": "best"}, ConfigError, "unknown target 'best'"),
        ({"target": [0, 1]}, ConfigError, "2 target classes for a batch of 1"),
        ({"target": lambda z: z.sum()}, ConfigError, "one score per row"),
        ({"batch_sz": 3}, ConfigError, "has no option 'batch_sz'"),
        ({"combine": "median"}, ConfigError, "unknown combine"),
    ],
)
def test_user_errors_are_one_clear_line(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cam(Tiny(), X, **{"layer": "conv", **kwargs})


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match=r"shape \(N, C, H, W\)"):
        cam(Tiny(), X[0, 0, 0])
    with pytest.raises(ConfigError, match="float tensor"):
        cam(Tiny(), X.long())
    with pytest.raises(ConfigError, match=r"torch\.nn\.Module"):
        cam("model", X)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="inference_mode"), torch.inference_mode():
        cam(Tiny(), X, layer="conv")
    assert issubclass(ConfigError, ConvlensError) and issubclass(ConfigError, ValueError)


# --- every registered method --------------------------------------------------------------


def _options(name: str) -> dict:
    """Small settings so that the registry-wide tests stay fast."""
    opts = ex.method_options(METHODS[name])
    out: dict = {}
    if "n_samples" in opts:
        out["n_samples"] = 3
    if "n_steps" in opts:
        out["n_steps"] = 4
    if "window" in opts:
        out["window"] = 6
    return out


@pytest.mark.parametrize("name", list(METHODS))
def test_registry_entry_is_complete(name: str) -> None:
    cls = METHODS[name]
    assert cls.name == name and cls.title and cls.reference
    assert isinstance(cls.needs_layer, bool) and isinstance(cls.perturbation, bool)
    assert ex.get_method(name) is cls


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_returns_the_documented_shapes(name: str) -> None:
    m = seeded(SeedCNN()).double()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layer = "conv2" if METHODS[name].needs_layer else None
    r = cam(m, x, method=name, layer=layer, target="top2", **_options(name))
    assert r.method == name and len(r) == 4
    assert r.maps.shape == r.normalised.shape == (4, 28, 28)
    assert r.raw.shape == ((4, 14, 14) if issubclass(METHODS[name], ex.LayerMethod) else (4, 28, 28))
    assert r.layers == ((layer,) if layer else ())
    assert (r.maps >= 0).all() and r.normalised.min() >= 0 and r.normalised.max() <= 1
    assert torch.isfinite(r.raw).all()
    if not METHODS[name].needs_layer:
        assert r.attributions is not None and r.attributions.shape == (4, 1, 28, 28)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_leaves_the_model_as_it_came(name: str) -> None:
    # the torch-cam state test: hooks, training flags, requires_grad, .grad and weights
    m = seeded(MiniResNet())
    m.train()
    m.layer1.train(False)  # mixed flags must come back mixed
    m.fc.weight.requires_grad_(False)
    m.stem[0].weight.grad = torch.full_like(m.stem[0].weight, 0.5)
    before = model_state(m)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    layer = "layer2" if METHODS[name].needs_layer else None
    cam(m, x, method=name, layer=layer, target=1, **_options(name))
    assert_same_state(before, model_state(m))

    # and after failures half-way: a target function that raises after the forward pass ...
    def bad(z: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    if METHODS[name].class_specific:
        with pytest.raises(RuntimeError, match="boom"):
            cam(m, x, method=name, layer=layer, target=bad, **_options(name))
        assert_same_state(before, model_state(m))

    # ... and a model whose forward pass fails on the n-th call (inside the pass's hooks)
    for fail_at in (1, 2):
        calls: list[int] = []

        def explode(mod: nn.Module, args: tuple, out: torch.Tensor, fail_at: int = fail_at,
                    calls: list[int] = calls) -> None:
            calls.append(1)
            if len(calls) == fail_at:
                raise RuntimeError("forward failed")

        handle = m.layer2.register_forward_hook(explode)
        try:
            cam(m, x, method=name, layer=layer, target=1, **_options(name))
        except RuntimeError as exc:
            assert "forward failed" in str(exc)
        finally:
            handle.remove()
        assert_same_state(before, model_state(m))


@pytest.mark.parametrize(("n", "channels"), [(1, 1), (1, 3), (2, 3)])
def test_scorecam_definition_for_one_or_many_images_and_colour(n: int, channels: int) -> None:
    """The in-place mask path (one image, gray), the broadcast one (colour) and the gather one."""
    torch.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(channels, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(5 * 4 * 4, 4)).double().eval()
    x = torch.randn(n, channels, 8, 8, dtype=torch.float64)
    target = m(x).argmax(1)
    a = m[1](m[0](x)).detach()
    expected = torch.zeros(n, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        for i in range(n):
            for k in range(5):
                up = a[i, k]  # the layer is at input resolution: no upsampling
                if up.max() == up.min():
                    continue
                mask = (up - up.min()) / (up.max() - up.min())
                expected[i] += torch.softmax(m(x[i:i + 1] * mask), 1)[0, target[i]] * a[i, k]
    r = cam(m, x, method="scorecam", layer="1", batch_size=3)
    close(r.raw, expected, atol=1e-10)
    assert torch.equal(x, x.clone())  # the input was not written into


def test_a_model_registered_inside_itself_is_walked_once() -> None:
    m = seeded(SeedCNN()).train()
    m.fc.owner = m  # a back-reference registered as a submodule: a cycle in the module tree
    before = [mm.training for mm in m.modules()]
    r = cam(m, torch.randn(1, 1, 28, 28), layer="conv2", target=1)
    assert r.raw.shape == (1, 14, 14)
    assert [mm.training for mm in m.modules()] == before


class _LateInplace(nn.Module):
    """conv -> (in place, only once switched on) ReLU -> linear: the same model first
    leaves the conv output alone, then changes it in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 6 * 6, 2)
        self.inplace = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = y.relu_() if self.inplace else y.relu()
        return self.fc(y.flatten(1))


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "guided-gradcam"])
def test_a_layer_changed_in_place_only_later_is_explained_right_every_time(method: str) -> None:
    torch.manual_seed(0)
    m = _LateInplace().eval()
    x = torch.randn(2, 1, 6, 6)
    for _ in range(2):  # nothing changes the conv output in place
        cam(m, x, method=method, layer="conv", target=1)
    m.inplace = True
    fresh = _LateInplace().eval()
    fresh.load_state_dict(m.state_dict())
    fresh.inplace = True
    expected = cam(fresh, x, method=method, layer="conv", target=1)  # never seen: copies at once
    got = cam(m, x, method=method, layer="conv", target=1)
    close(got.raw, expected.raw)
    assert (m.conv(x) < 0).any()  # the conv output has negatives the in-place ReLU would erase


@pytest.mark.parametrize("method", ["integrated-gradients", "occlusion"])
def test_a_baseline_per_channel_equals_the_same_baseline_written_out(method: str) -> None:
    torch.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    per_channel = torch.tensor([0.5, -1.0, 2.0])
    full = per_channel.view(3, 1, 1).expand(3, 6, 6).clone()
    opts = {"window": 2, "stride": 2} if method == "occlusion" else {}
    a = cam(m, x, method=method, target=1, baseline=per_channel, **opts)
    b = cam(m, x, method=method, target=1, baseline=full, **opts)
    close(a.attributions, b.attributions)
    zero = cam(m, x, method=method, target=1, **opts)
    assert not torch.equal(a.attributions, zero.attributions)  # the default baseline 0 differs
    with pytest.raises(ConfigError, match=r"baseline must be .*\(3, 6, 6\)"):
        cam(m, x, method=method, target=1, baseline=torch.zeros(5), **opts)
