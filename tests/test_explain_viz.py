"""Heatmap figures: where a map concentrates, overlays, comparisons, faithfulness curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from convlens.errors import ConfigError
from convlens.explain import cam, explain
from convlens.views import ChosenInput, cam_view, compare_view
from convlens.viz.explain import (
    comparison_figure,
    faithfulness_figure,
    overlay_figure,
    where,
)
from convlens.viz.figure import save
from zoo import SeedCNN, seeded


def _blob(rows: slice, cols: slice, shape: tuple[int, int] = (20, 20)) -> np.ndarray:
    h = np.zeros(shape)
    h[rows, cols] = 1.0
    return h


# --- where ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heat", "region"),
    [
        (_blob(slice(0, 6), slice(0, 20)), "the upper half"),
        (_blob(slice(14, 20), slice(3, 17)), "the lower half"),
        (_blob(slice(0, 20), slice(15, 20)), "the right half"),
        (_blob(slice(0, 5), slice(0, 5)), "the upper-left quarter"),
        (_blob(slice(15, 20), slice(15, 20)), "the lower-right quarter"),
        (_blob(slice(7, 13), slice(7, 13)), "the centre"),
        (np.ones((20, 20)), "the whole image"),
    ],
)
def test_where_names_the_region_holding_the_mass(heat: np.ndarray, region: str) -> None:
    assert where(heat).region == region


def test_where_fractions_peak_and_centroid() -> None:
    h = np.zeros((4, 4))
    h[0, 1] = 3.0  # upper-left quarter
    h[3, 3] = 1.0  # lower-right
    w = where(h)
    assert w.top_fraction == pytest.approx(0.75) and w.left_fraction == pytest.approx(0.75)
    assert w.peak == (0, 1)
    assert w.centroid == pytest.approx((0.75 * 0 + 0.25 * 3, 0.75 * 1 + 0.25 * 3))
    # an odd size: the middle row counts half to each side
    odd = np.zeros((3, 3))
    odd[1, 1] = 1.0
    assert where(odd).top_fraction == pytest.approx(0.5)


def test_where_mass_on_strokes() -> None:
    image = np.zeros((10, 10))
    image[2:8, 4:6] = 255  # a bar: 12% of the image
    heat = np.zeros((10, 10))
    heat[2:8, 4:6] = 3.0  # 36 units on the bar
    heat[0, 0] = 4.0  # 4 units off it
    w = where(heat, image)
    assert w.on_strokes == pytest.approx(36 / 40)
    assert w.strokes_area == pytest.approx(0.12)
    assert "90% of its mass lies on the digit's strokes" in w.phrase("the digit's strokes")
    assert where(heat, np.zeros((3, 10, 10))).on_strokes is None  # RGB: no strokes
    assert where(heat, np.ones((10, 10))).on_strokes is None  # a blank image has none


def test_where_of_an_empty_map() -> None:
    w = where(np.zeros((5, 5)))
    assert w.empty and "zero everywhere" in w.phrase()


# --- figures ---------------------------------------------------------------------------------


def test_overlay_figure_caption_alt_and_data() -> None:
    image = np.zeros((1, 20, 20), dtype=np.uint8)
    image[0, 2:9, 5:15] = 255
    heat = _blob(slice(2, 8), slice(4, 16))
    fig = overlay_figure(image, heat, method="Grad-CAM", target="class 7", probability=0.981, layer="conv2",
                         input_label="test digit 7 (index 0)", alpha=0.4)
    assert fig.caption.startswith("Grad-CAM for class 7 (p = 0.98) at conv2 concentrates in the upper half; ")
    assert "of its mass lies on the digit's strokes" in fig.caption
    assert "40% opacity" in fig.alt and "viridis" in fig.alt and "row 2, column 4" in fig.alt
    np.testing.assert_array_equal(fig.data["heat"], heat)
    assert fig.data["overlay"].get_alpha() == 0.4
    assert fig.data["overlay"].get_cmap().name == "viridis"
    gray = overlay_figure(image, heat, method="Grad-CAM", target="class 7", palette="gray")
    assert gray.data["overlay"].get_cmap().name == "gray"
    assert fig.png_bytes()[:4] == b"\x89PNG"


def test_overlay_on_an_rgb_image() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (3, 12, 12)).astype(np.uint8)
    fig = overlay_figure(rgb, _blob(slice(0, 12), slice(0, 4), (12, 12)), method="Saliency", target="class 2")
    assert fig.data["image"].shape == (12, 12, 3)
    assert "concentrates in the left half." in fig.caption and "strokes" not in fig.caption


def test_overlay_figure_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="does not match"):
        overlay_figure(np.zeros((20, 20)), np.zeros((10, 10)), method="m", target="t")
    with pytest.raises(ConfigError, match="opacity"):
        overlay_figure(np.zeros((20, 20)), np.zeros((20, 20)), method="m", target="t", alpha=1.5)
    with pytest.raises(ConfigError, match="NaN"):
        overlay_figure(np.zeros((4, 4)), np.full((4, 4), np.nan), method="m", target="t")


def test_comparison_figure_groups_methods_by_region() -> None:
    image = np.zeros((20, 20))
    panels = [
        ("Grad-CAM", _blob(slice(0, 6), slice(0, 20))),
        ("Score-CAM", _blob(slice(0, 5), slice(2, 18))),
        ("Saliency", _blob(slice(15, 20), slice(0, 20))),
        ("Eigen-CAM", np.zeros((20, 20))),
    ]
    probs = np.array([0.1, 0.7, 0.2])
    fig = comparison_figure(image, panels, target="class 1", probabilities=probs, class_names=["a", "b", "c"],
                            layer="conv2")
    assert "The model predicts b (p = 0.70)." in fig.caption
    assert "Grad-CAM and Score-CAM concentrate in the upper half" in fig.caption
    assert "Saliency concentrates in the lower half" in fig.caption
    assert "Eigen-CAM is zero everywhere" in fig.caption
    assert fig.data["titles"] == ["Grad-CAM", "Score-CAM", "Saliency", "Eigen-CAM"]
    np.testing.assert_array_equal(fig.data["probabilities"], probs)
    same = comparison_figure(image, panels[:2], target="class 1")
    assert "Both concentrate in the upper half" in same.caption
    with pytest.raises(ConfigError, match="class names"):
        comparison_figure(image, panels, target="t", probabilities=probs, class_names=["a"])
    with pytest.raises(ConfigError, match="at least one"):
        comparison_figure(image, [], target="t")


def test_faithfulness_figure_reports_trapezoid_aucs() -> None:
    f = np.linspace(0, 1, 5)
    curves = {"Grad-CAM": {"fractions": f, "deletion": 1 - f, "insertion": f ** 2},
              "Saliency": {"fractions": f, "deletion": (1 - f) ** 2, "insertion": f}}
    fig = faithfulness_figure(curves, n_images=10)
    assert fig.data["auc"]["Grad-CAM"]["deletion"] == pytest.approx(0.5)
    assert fig.data["auc"]["Grad-CAM"]["insertion"] == pytest.approx(sum((f[1:] ** 2 + f[:-1] ** 2) / 2 * 0.25))
    assert "Saliency drops fastest" in fig.caption and "Saliency recovers fastest" in fig.caption
    assert "mean over 10 images" in fig.caption


@pytest.mark.parametrize("palette", ["default", "gray"])
def test_faithfulness_curves_of_every_method_are_told_apart_and_not_covered(palette: str) -> None:
    # issue #11, item 10: with --methods all six pairs shared colour and line style, the
    # legend covered the curves, and in gray Grad-CAM and Occlusion were both solid black
    from convlens.explain import METHODS

    f = np.linspace(0, 1, 33)
    curves = {name: {"fractions": f, "deletion": (1 - f) ** (1 + i / 7), "insertion": f ** (1 + i / 7)}
              for i, name in enumerate(METHODS)}
    fig = faithfulness_figure(curves, n_images=10, palette=palette)  # type: ignore[arg-type]
    mpl = fig.figure
    mpl.canvas.draw()
    renderer = mpl.canvas.get_renderer()  # type: ignore[attr-defined]
    for ax in mpl.axes:
        drawn = ax.get_lines()
        assert len(drawn) == len(METHODS)
        # marker and line style alone (what grayscale print keeps) differ for every pair
        assert len({(line.get_linestyle(), line.get_marker()) for line in drawn}) == len(METHODS)
        if palette == "gray":
            assert all(len(set(matplotlib_rgb(line.get_color()))) == 1 for line in drawn)
        legend = ax.get_legend()
        assert legend is not None and len(legend.get_texts()) == len(METHODS)
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def matplotlib_rgb(colour: object) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)  # type: ignore[arg-type]


# --- views on a real digit ------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit(mnist_dir: Path) -> ChosenInput:
    from convlens.data import load_dataset

    ds = load_dataset("mnist", "test", data_dir=mnist_dir)
    i = ds.index_of(7)
    x, y = ds.item(i)
    return ChosenInput(x, ds.images[i], f"test digit 7 (index {i})", i, y)


def test_cam_view_draws_the_normalised_map_of_cam(digit: ChosenInput, tmp_path: Path) -> None:
    model = seeded(SeedCNN())
    fig = cam_view(model, digit, method="gradcam", layer="conv2", target=7)
    expected = cam(model, digit.x, method="gradcam", layer="conv2", target=7)
    np.testing.assert_allclose(fig.data["heat"], expected.normalised[0].numpy(), atol=1e-6)
    p = float(expected.probabilities[0, 7])
    assert fig.caption.startswith(f"Grad-CAM for class 7 (p = {p:.2f}) at conv2 ")
    paths = save(fig, tmp_path, "cam")
    assert paths["png"].stat().st_size > 0 and paths["json"].exists()


def test_cam_view_with_top_k_compares_classes(digit: ChosenInput) -> None:
    model = seeded(SeedCNN())
    fig = cam_view(model, digit, method="gradcam", target="top3")
    order = model(digit.x)[0].argsort(descending=True)[:3].tolist()
    assert [t.split(" (")[0] for t in fig.data["titles"]] == [f"class {c}" for c in order]


def test_compare_view_uses_one_call_for_all_methods(digit: ChosenInput) -> None:
    model = seeded(SeedCNN())
    methods = ["gradcam", "scorecam", "saliency"]
    fig = compare_view(model, digit, methods=methods, target=7)
    results = explain(model, digit.x, methods, target=7)
    assert fig.data["titles"] == [r.title for r in results.values()]
    for heat, r in zip(fig.data["heats"], results.values(), strict=True):
        np.testing.assert_allclose(heat, r.normalised[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(fig.data["probabilities"], torch.softmax(model(digit.x), 1)[0].detach().numpy(),
                               atol=1e-6)
