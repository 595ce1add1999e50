"""Faithfulness metrics against direct loops, and the model-randomisation sanity check."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlens.data import load_dataset
from convlens.errors import ConfigError
from convlens.explain import (
    auc,
    average_drop_increase,
    blur,
    cam,
    faithfulness,
    perturbation_curves,
    sanity_check,
    spearman,
)
from zoo import SeedCNN, assert_same_state, model_state, seeded


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    ds = load_dataset("mnist", "test", data_dir=mnist_dir)
    model = seeded(SeedCNN()).double()
    return model, ds.normalise(ds.images[:3]).double(), ds.labels[:3]


def _trapezoid(y: list[float]) -> float:
    h = 1 / (len(y) - 1)
    return sum((a + b) / 2 * h for a, b in itertools.pairwise(y))


def _direct_curve(model: nn.Module, x: torch.Tensor, heat: torch.Tensor, cls: int, steps: int,
                  fill: torch.Tensor, insertion: bool) -> list[float]:
    """One image, one step at a time: RISE's loop written out."""
    _, h, w = x.shape
    order = sorted(range(h * w), key=lambda i: (-float(heat.flatten()[i]), i))  # ties: pixel order
    probs = []
    for t in range(steps + 1):
        k = round(t * h * w / steps)
        img = (fill if insertion else x).clone()
        for i in order[:k]:
            r, c = divmod(i, w)
            img[:, r, c] = x[:, r, c] if insertion else fill[:, r, c]
        with torch.no_grad():
            probs.append(float(torch.softmax(model(img[None]), 1)[0, cls]))
    return probs


def test_deletion_and_insertion_equal_a_direct_loop(digits: tuple) -> None:
    model, x, _ = digits
    r = cam(model, x, method="gradcam", layer="conv2")
    steps = 7
    black = torch.full_like(x[0], -0.5)
    blurred = blur(x, 2.0)
    dele = perturbation_curves(model, x, r.maps, r.target, mode="deletion", steps=steps, baseline=-0.5, batch_size=5)
    ins = perturbation_curves(model, x, r.maps, r.target, mode="insertion", steps=steps, start=blurred, batch_size=5)
    for n in range(len(x)):
        d = _direct_curve(model, x[n], r.maps[n], int(r.target[n]), steps, black, insertion=False)
        i = _direct_curve(model, x[n], r.maps[n], int(r.target[n]), steps, blurred[n], insertion=True)
        np.testing.assert_allclose(dele[n].numpy(), d, atol=1e-12)
        np.testing.assert_allclose(ins[n].numpy(), i, atol=1e-12)
        assert float(auc(dele[n])) == pytest.approx(_trapezoid(d), abs=1e-12)
        assert float(auc(ins[n])) == pytest.approx(_trapezoid(i), abs=1e-12)
    # the ends: nothing removed is the image itself, everything removed is the baseline
    p = torch.softmax(model(x), 1).gather(1, r.target[:, None])[:, 0]
    torch.testing.assert_close(dele[:, 0], p.detach())
    torch.testing.assert_close(ins[:, -1], p.detach())


def test_ties_keep_the_pixel_order() -> None:
    lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        lin[1].weight.copy_(torch.tensor([[1.0, 2, 3, 4], [0, 0, 0, 0]]))
        lin[1].bias.zero_()
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    # all pixels equally relevant: removed in the order 0, 1, 2, 3 -> logit0 = 10, 9, 7, 4, 0
    curve = perturbation_curves(lin, x, torch.zeros(1, 2, 2), 0, steps=4)
    expected = torch.sigmoid(torch.tensor([10.0, 9, 7, 4, 0], dtype=torch.float64))
    torch.testing.assert_close(curve[0], expected)


def test_auc_is_the_trapezoid_on_0_1() -> None:
    assert float(auc(torch.linspace(0, 1, 11))) == pytest.approx(0.5)
    assert float(auc(torch.tensor([1.0, 0.0]))) == pytest.approx(0.5)
    assert float(auc(torch.tensor([0.0, 1.0, 1.0]))) == pytest.approx(0.75)


def test_blur_is_a_separable_gaussian_with_reflected_borders() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 8, generator=g, dtype=torch.float64)
    sigma = 1.3
    r = math.ceil(sigma)
    k1 = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k1 /= k1.sum()
    k2 = np.outer(k1, k1)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (r, r), (r, r)), mode="reflect")
    expected = np.zeros_like(x.numpy())
    for i in range(9):
        for j in range(8):
            expected[:, :, i, j] = (padded[:, :, i:i + 2 * r + 1, j:j + 2 * r + 1] * k2).sum((2, 3))
    np.testing.assert_allclose(blur(x, sigma).numpy(), expected, atol=1e-12)
    torch.testing.assert_close(blur(x, 0), x)


def test_average_drop_and_increase_in_confidence_by_hand() -> None:
    # logit0 = sum of the first row, logit1 = 1: masking the second row (map 0 there) changes nothing,
    # masking half the first row lowers class 0's probability
    lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        lin[1].weight.copy_(torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0]]))
        lin[1].bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.tensor([[[[2.0, 2], [5, 5]]], [[[2.0, 2], [5, 5]]]], dtype=torch.float64)
    maps = torch.tensor([[[1.0, 1], [0, 0]], [[1.0, 0], [0, 0]]], dtype=torch.float64)
    drop, inc = average_drop_increase(lin, x, maps, 0)
    y = torch.sigmoid(torch.tensor(4.0 - 1, dtype=torch.float64))  # p0 of the image: logits (4, 1)
    o = torch.sigmoid(torch.tensor([4.0 - 1, 2.0 - 1], dtype=torch.float64))  # masked: (4, 1), (2, 1)
    torch.testing.assert_close(drop, (y - o).clamp_min(0) / y)
    assert inc.tolist() == [False, False]
    drop, inc = average_drop_increase(lin, x, maps, 1)  # class 1 gains when class 0's evidence is masked
    assert inc.tolist() == [False, True] and float(drop[1]) == 0.0


def _average_ranks(v: list[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def test_spearman_against_pearson_of_average_ranks() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (3, 12), generator=g).double()  # many ties
    b = torch.randn(3, 12, generator=g, dtype=torch.float64)
    for i in range(3):
        ra, rb = np.array(_average_ranks(a[i].tolist())), np.array(_average_ranks(b[i].tolist()))
        assert float(spearman(a[i:i + 1], b[i:i + 1])[0]) == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-12)
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1))
    u, v = torch.tensor([[1.0, 2, 3, 4, 5]]), torch.tensor([[2.0, 1, 4, 3, 5]])
    assert float(spearman(u, v)[0]) == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert math.isnan(float(spearman(u, torch.ones(1, 5))[0]))


def test_a_map_that_ignores_the_weights_is_flagged() -> None:
    # Eigen-CAM of a ReLU applied to the input depends on the input only
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 36, 3)).double()
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    check = sanity_check(model, x, "eigencam", layer="0", cascade=True)
    assert check.steps == [["3"], ["3", "1"]]
    assert check.correlation == pytest.approx([1.0, 1.0])
    assert check.flagged and "does not depend on what the model learned" in check.message()


def test_gradcam_depends_on_the_weights_and_the_model_is_left_alone(digits: tuple) -> None:
    model, x, _ = digits
    before = model_state(model)
    rng = torch.get_rng_state()
    check = sanity_check(model, x, "gradcam", layer="conv2", cascade=True, seed=3)
    assert check.steps == [["fc"], ["fc", "conv2"], ["fc", "conv2", "conv1"]]
    assert not check.flagged and check.final < 0.5
    assert check.per_image.shape == (3, 3)
    assert_same_state(before, model_state(model))
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is not consumed
    # the randomised maps are of the same classes as the trained model's
    again = sanity_check(model, x, "gradcam", layer="conv2", seed=3)
    assert again.steps == [["fc", "conv2", "conv1"]]
    assert again.final == pytest.approx(check.final)


def test_faithfulness_over_a_dataset_equals_the_building_blocks(mnist_dir: Path) -> None:
    ds = load_dataset("mnist", "test", data_dir=mnist_dir)
    model = seeded(SeedCNN())
    report = faithfulness(model, ds, ["gradcam", "saliency"], n=6, steps=4, sanity_images=3, batch_size=4, seed=1)
    assert report.n_images == 6 and list(report.scores) == ["gradcam", "saliency"]
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(1))[:6].sort().values
    x = ds.normalise(ds.images[idx])
    black = (0 - torch.tensor(ds.mean)) / torch.tensor(ds.std)
    for name, s in report.scores.items():
        r = cam(model, x, method=name)
        d = perturbation_curves(model, x, r.maps, r.target, steps=4, baseline=black)
        i = perturbation_curves(model, x, r.maps, r.target, mode="insertion", steps=4)
        drop, inc = average_drop_increase(model, x, r.maps, r.target, baseline=black)
        assert s.deletion_auc == pytest.approx(float(auc(d).mean()), abs=1e-6)
        assert s.insertion_auc == pytest.approx(float(auc(i).mean()), abs=1e-6)
        assert s.average_drop == pytest.approx(100 * float(drop.mean()), abs=1e-4)
        assert s.increase_in_confidence == pytest.approx(100 * float(inc.double().mean()))
        torch.testing.assert_close(s.deletion, d.mean(0), atol=1e-6, rtol=0)
        assert s.sanity is not None and s.sanity.per_image.shape[1] == 3
    rows = report.rows()
    assert rows[0]["method"] == "Grad-CAM" and set(rows[0]) >= {"deletion_auc", "flagged"}
    assert report.curves()["Saliency"]["fractions"].tolist() == [0, 0.25, 0.5, 0.75, 1]


def test_faithfulness_errors(mnist_dir: Path) -> None:
    ds = load_dataset("mnist", "test", data_dir=mnist_dir)
    model = seeded(SeedCNN())
    with pytest.raises(ConfigError, match="one class per image"):
        faithfulness(model, ds, ["gradcam"], n=2, target="top2", sanity_images=0)
    with pytest.raises(ConfigError, match="ImageDataset"):
        faithfulness(model, [1, 2], ["gradcam"])
    with pytest.raises(ConfigError, match="maps must be"):
        perturbation_curves(model, ds.normalise(ds.images[:2]), torch.zeros(2, 5, 5), 0)
    with pytest.raises(ConfigError, match="mode"):
        perturbation_curves(model, ds.normalise(ds.images[:2]), torch.zeros(2, 28, 28), 0, mode="both")
    x = ds.normalise(ds.images[:2])
    torch.testing.assert_close(perturbation_curves(model, x, torch.zeros(2, 28, 28), 0, steps=1)[:, 0],
                               F.softmax(model(x), 1)[:, 0].detach())
