"""Figures 1 and 2, the training curve and the filter evolution: the plotted values are
the weights and activations (read back from the figure's images and checked against
the model's tensors and a hand-written forward pass), the colour scales are what the
captions say, and the words name what is shown. Saving carries the words into the PNG
metadata and the JSON sidecar."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from _helpers import Recording, mnist_full, mnist_path, small_run
from convlens import views
from convlens.errors import ConfigError, LayerError
from convlens.views import conv_weight
from convlens.viz.curves import training_curve
from convlens.viz.describe import fmt
from convlens.viz.figure import Explained, save
from convlens.viz.filters import filters_figure
from convlens.viz.maps import maps_figure


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return small_run(tmp_path_factory)


def all_images(fig: Explained) -> list:
    return [im for ax in fig.figure.axes for im in ax.get_images()]


# --- Figure 1: filters ---------------------------------------------------------------------------


def test_filters_show_the_weights_on_one_symmetric_scale(shared: Recording) -> None:
    w = shared.run.model.conv1.weight.detach().double().numpy()  # (16, 1, 5, 5)
    fig = views.filters(shared.run, "conv1")
    images = fig.data["images"]
    assert len(images) == 16 == len(all_images(fig))
    vmax = float(np.abs(w).max())
    for i, im in enumerate(images):
        np.testing.assert_array_equal(np.asarray(im.get_array()), w[i, 0])
        assert im.get_clim() == (-vmax, vmax)
        assert im.get_cmap().name == "RdBu_r"
        assert im.axes.get_title() == str(i)
    assert fig.data["vmax"] == vmax
    # a colourbar labelled "weight" on the same symmetric range
    bars = [ax for ax in fig.figure.axes if ax.get_ylabel() == "weight"]
    assert len(bars) == 1
    assert bars[0].get_ylim() == pytest.approx((-vmax, vmax))
    # the words
    assert "conv1" in fig.title and "16 filters 5×5" in fig.title
    assert "16" in fig.caption and "conv1" in fig.caption and "symmetric around zero" in fig.caption
    assert fig.alt.startswith("Grid of 16 filters of layer conv1, each 5×5 pixels")
    assert f"from {fmt(float(w.min()))} to {fmt(float(w.max()))}" in fig.alt
    norms = np.sqrt((w**2).sum(axis=(1, 2, 3)))
    strongest = [int(i) for i in np.argsort(-norms, kind="stable")[:3]]
    assert fig.data["strongest"] == strongest
    assert f"Strongest filters by weight norm: {strongest[0]} (" in fig.alt


def test_per_filter_scale_is_per_filter_and_says_so(shared: Recording) -> None:
    w = shared.run.model.conv1.weight.detach().double().numpy()
    fig = views.filters(shared.run, "conv1", scale="per-filter")
    for i, im in enumerate(fig.data["images"]):
        np.testing.assert_array_equal(np.asarray(im.get_array()), w[i, 0])
        m = float(np.abs(w[i]).max())
        assert im.get_clim() == (-m, m)
    assert len({im.get_clim() for im in fig.data["images"]}) > 1
    assert "per-filter" in fig.title and "per-filter" in fig.caption
    assert "not comparable" in fig.caption
    assert not [ax for ax in fig.figure.axes if ax.get_ylabel() == "weight"]  # no shared colourbar


def test_gray_palette(shared: Recording) -> None:
    fig = views.filters(shared.run, "conv1", palette="gray")
    assert {im.get_cmap().name for im in fig.data["images"]} == {"gray"}
    assert "grayscale" in fig.caption
    with pytest.raises(ConfigError, match=r"unknown palette 'grey'.*did you mean 'gray'"):
        views.filters(shared.run, "conv1", palette="grey")


def test_three_channel_filters_are_drawn_as_rgb() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3, 4, 4))
    fig = filters_figure(w, "stem")
    images = all_images(fig)
    assert len(images) == 6
    m = np.abs(w).max()
    for i, im in enumerate(images):
        rgb = np.asarray(im.get_array())
        assert rgb.shape == (4, 4, 3)
        # zero is mid-gray, the largest magnitude reaches 0 or 1: one symmetric scale for all
        np.testing.assert_allclose(rgb, 0.5 + w[i].transpose(1, 2, 0) / (2 * m), rtol=0, atol=1e-12)
    assert "as RGB images" in fig.caption
    assert fig.alt.startswith("Grid of 6 filters of layer stem, each 4×4 pixels.")


def test_multichannel_filters_one_tile_per_input_channel() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 3, 3, 3))
    fig = filters_figure(w, "block", rgb=False)
    (im,) = fig.data["images"]  # one mosaic image: block (i, c) is filter i, input channel c
    drawn = np.asarray(im.get_array())
    assert drawn.shape == (4 * 4 - 1, 3 * 4 - 1)
    vmax = float(np.abs(w).max())
    for i in range(4):
        for c in range(3):
            np.testing.assert_array_equal(drawn[i * 4:i * 4 + 3, c * 4:c * 4 + 3], w[i, c])
    assert np.isnan(drawn[3::4, :]).all() and np.isnan(drawn[:, 3::4]).all()  # separators
    assert im.get_clim() == (-vmax, vmax)
    per = filters_figure(w, "block", rgb=False, scale="per-filter")
    scaled = np.asarray(per.data["images"][0].get_array())
    for i in range(4):
        np.testing.assert_allclose(scaled[i * 4:i * 4 + 3, 0:3], w[i, 0] / np.abs(w[i]).max(), rtol=0, atol=1e-15)
    assert per.data["images"][0].get_clim() == (-1.0, 1.0)
    assert "4 filters of layer block" in fig.alt and "3 input channels" in fig.alt
    assert "one column per input channel (3)" in fig.caption
    with pytest.raises(ConfigError, match="rgb=True needs 3 input channels"):
        filters_figure(rng.normal(size=(4, 2, 3, 3)), "block", rgb=True)


def test_conv2_filters_show_every_input_channel(shared: Recording) -> None:
    w = conv_weight(shared.run.model, "conv2")
    np.testing.assert_array_equal(w, shared.run.model.conv2.weight.detach().double().numpy())
    fig = filters_figure(w[:3], "conv2")  # three filters, 16 input channels each
    drawn = np.asarray(fig.data["images"][0].get_array())
    for i in range(3):
        for c in range(16):
            np.testing.assert_array_equal(drawn[i * 6:i * 6 + 5, c * 6:c * 6 + 5], w[i, c])
    assert "3 filters of layer conv2" in fig.alt and "16 input channels" in fig.alt


def test_conv_weight_errors(shared: Recording) -> None:
    with pytest.raises(LayerError) as info:
        conv_weight(shared.run.model, "conv3")
    assert "unknown layer 'conv3'" in str(info.value) and "conv1" in str(info.value) and "conv2" in str(info.value)
    with pytest.raises(LayerError, match=r"'relu1' is a ReLU, not a Conv2d; conv layers are conv1 and conv2"):
        conv_weight(shared.run.model, "relu1")


def test_all_zero_filters_do_not_break_the_scale() -> None:
    fig = filters_figure(np.zeros((2, 1, 3, 3)), "z")
    assert fig.data["images"][0].get_clim() == (-1.0, 1.0)
    with pytest.raises(ConfigError, match="4-D"):
        filters_figure(np.zeros((2, 3, 3)), "z")


# --- Figure 2: feature maps ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seven(shared: Recording) -> views.ChosenInput:
    return views.choose_input(shared.run, digit=7, data_dir=mnist_path())


def test_the_chosen_input_is_the_first_test_seven(seven: views.ChosenInput) -> None:
    _, test = mnist_full()
    labels = test.labels.numpy()
    first = int(np.flatnonzero(labels == 7)[0])
    assert seven.index == first and seven.true_class == 7
    assert torch.equal(seven.pixels, test.images[first])
    expected = (test.images[first:first + 1].double() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(seven.x.double(), expected, rtol=0, atol=1e-6)
    assert seven.label == f"test digit 7 (index {first})"


def test_the_input_can_come_from_a_split_in_memory(shared: Recording, seven: views.ChosenInput) -> None:
    train, test = mnist_full()
    given = views.choose_input(shared.run, digit=7, data=test)
    assert given.label == seven.label and torch.equal(given.x, seven.x)
    with pytest.raises(ConfigError, match="the data given is mnist train, not mnist test"):
        views.choose_input(shared.run, digit=7, data=train)


def _by_hand(model: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Oracle: the seed CNN's first two stages written out with torch.nn.functional."""
    out = {}
    with torch.no_grad():
        h = F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=2)
        out["conv1/conv"] = h
        h = F.relu(h)
        out["conv1/relu"] = h
        h = F.max_pool2d(h, 2)
        out["conv1/pool"] = h
        h = F.conv2d(h, model.conv2.weight, model.conv2.bias, padding=2)
        out["conv2/conv"] = h
        h = F.relu(h)
        out["conv2/relu"] = h
        out["conv2/pool"] = F.max_pool2d(h, 2)
    return out


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
@pytest.mark.parametrize("stage", ["conv", "relu", "pool"])
def test_maps_show_the_activations(shared: Recording, seven: views.ChosenInput, layer: str, stage: str) -> None:
    expected = _by_hand(shared.run.model, seven.x)[f"{layer}/{stage}"][0].double().numpy()
    fig = views.maps(shared.run, seven, layer, stage=stage)
    c, h, w = expected.shape
    np.testing.assert_allclose(fig.data["maps"], expected, rtol=0, atol=1e-5)
    images = fig.data["images"]
    assert len(images) == c
    lo, hi = float(expected.min()), float(expected.max())
    for ch, im in enumerate(images):
        np.testing.assert_array_equal(np.asarray(im.get_array()), fig.data["maps"][ch])
        assert im.get_clim() == pytest.approx((lo, hi), abs=1e-5)
        assert im.get_cmap().name == "viridis"
        assert im.axes.get_title() == f"{ch}: max {fmt(float(fig.data['maps'][ch].max()))}"
    # the input is drawn beside the maps, in gray
    inputs = [im for im in all_images(fig) if im not in images]
    assert len(inputs) == 1
    np.testing.assert_array_equal(np.asarray(inputs[0].get_array()), seven.pixels[0].double().numpy())
    assert inputs[0].get_cmap().name == "gray"
    # the words
    assert f"{layer} ({stage}): {c} feature maps {h}×{w}" == fig.title
    assert f"grid of {c} feature maps of layer {layer} ({stage}), each {h}×{w} pixels" in fig.alt
    assert seven.label.lower() in fig.alt.lower() and seven.label in fig.caption
    maxima = expected.reshape(c, -1).max(axis=1)
    top = [int(i) for i in np.argsort(-maxima, kind="stable")[:3]]
    assert f"Strongest channels: {top[0]} (max {fmt(float(maxima[top[0]]))})" in fig.alt
    silent = [i for i in range(c) if (expected[i] <= 0).all()]
    assert fig.data["silent"] == silent
    if silent:
        assert f"{len(silent)} channel" in fig.alt


def test_sort_orders_the_maps_by_their_maximum(shared: Recording, seven: views.ChosenInput) -> None:
    expected = _by_hand(shared.run.model, seven.x)["conv1/relu"][0].double().numpy()
    maxima = expected.reshape(16, -1).max(axis=1)
    order = [int(i) for i in np.argsort(-maxima, kind="stable")]
    fig = views.maps(shared.run, seven, "conv1", stage="relu", sort=True)
    assert fig.data["order"] == order
    shown_max = []
    for pos, im in enumerate(fig.data["images"]):
        ch = order[pos]
        np.testing.assert_allclose(np.asarray(im.get_array()), expected[ch], rtol=0, atol=1e-5)
        assert im.axes.get_title().startswith(f"{ch}: max ")
        shown_max.append(float(np.asarray(im.get_array()).max()))
    assert shown_max == sorted(shown_max, reverse=True)
    assert "ordered by maximum activation" in fig.caption


def test_per_map_scale(seven: views.ChosenInput) -> None:
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(5, 6, 6)) * np.arange(1, 6)[:, None, None]
    fig = maps_figure(seven.pixels.numpy(), maps, "L", scale="per-map")
    for ch, im in enumerate(fig.data["images"]):
        assert im.get_clim() == (maps[ch].min(), maps[ch].max())
    assert "per-map colour scales" in fig.caption
    with pytest.raises(ConfigError, match="C×H×W"):
        maps_figure(seven.pixels.numpy(), maps[0], "L")


def test_choose_exactly_one_input(shared: Recording) -> None:
    with pytest.raises(ConfigError, match="exactly one input"):
        views.choose_input(shared.run, digit=7, index=3, data_dir=mnist_path())
    with pytest.raises(ConfigError, match="exactly one input"):
        views.choose_input(shared.run, data_dir=mnist_path())


def test_maps_of_a_user_image(shared: Recording, tmp_path: Path) -> None:
    _, test = mnist_full()
    digit = test.images[0, 0].numpy()
    Image.fromarray(digit).save(tmp_path / "mine.png")
    chosen = views.choose_input(shared.run, image=tmp_path / "mine.png")
    assert chosen.label == "image mine.png"
    x = (torch.from_numpy(digit).double()[None, None] / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(chosen.x.double(), x, rtol=0, atol=1e-6)
    fig = views.maps(shared.run, chosen, "conv1", stage="conv")
    np.testing.assert_allclose(fig.data["maps"], _by_hand(shared.run.model, chosen.x)["conv1/conv"][0].numpy(),
                               rtol=0, atol=1e-5)


# --- saving --------------------------------------------------------------------------------------


def test_save_writes_png_svg_and_sidecar_with_the_words(shared: Recording, tmp_path: Path) -> None:
    fig = views.filters(shared.run, "conv1")
    paths = save(fig, tmp_path / "figs", "filters-conv1")
    assert {k: p.name for k, p in paths.items()} == {
        "png": "filters-conv1.png", "svg": "filters-conv1.svg", "json": "filters-conv1.json"}
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG" and im.size[0] > 100
        text = dict(im.text)
    assert text["Description"] == fig.caption
    assert text["Alt"] == fig.alt
    assert text["Title"] == fig.title
    sidecar = json.loads(paths["json"].read_text())
    assert sidecar["caption"] == fig.caption and sidecar["alt"] == fig.alt
    assert sidecar["png"] == "filters-conv1.png" and sidecar["svg"] == "filters-conv1.svg"
    root = ET.parse(paths["svg"]).getroot()
    assert root.tag.endswith("svg")
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "filters-conv1.json", "filters-conv1.png", "filters-conv1.svg"]


# --- training curve and filter evolution ---------------------------------------------------------


def test_training_curve_plots_the_metrics(shared: Recording) -> None:
    m = shared.run.metrics
    fig = training_curve(m)
    epochs = m["epochs"]
    assert fig.data["epochs"] == [e["epoch"] for e in epochs]
    assert fig.data["train_loss"] == [e["train_loss"] for e in epochs]
    assert fig.data["test_loss"] == [e["test_loss"] for e in epochs]
    assert fig.data["test_accuracy"] == [100 * e["test_accuracy"] for e in epochs]
    lines = {str(line.get_label()): line for ax in fig.figure.axes for line in ax.get_lines()}
    assert list(np.asarray(lines["train loss (epoch mean)"].get_ydata())) == [e["train_loss"] for e in epochs]
    assert list(np.asarray(lines["test loss"].get_ydata())) == [e["test_loss"] for e in epochs]
    assert list(np.asarray(lines["test accuracy"].get_ydata())) == [100 * e["test_accuracy"] for e in epochs]
    assert list(np.asarray(lines["test loss"].get_xdata())) == [1, 2]
    assert f"Final test accuracy {100 * epochs[-1]['test_accuracy']:.2f}%" in fig.caption
    assert "over 2 epochs" in fig.alt
    with pytest.raises(ConfigError, match="no completed epoch"):
        training_curve({"epochs": []})


def test_filter_evolution_shows_the_snapshots(shared: Recording) -> None:
    snaps = shared.run.snapshots()
    fig = views.evolution(shared.run)
    steps = sorted(snaps)
    assert fig.data["steps"] == steps and len(steps) <= 8
    images = all_images(fig)
    assert len(images) == len(steps) * 8
    for k, im in enumerate(images):
        r, i = divmod(k, 8)
        np.testing.assert_array_equal(np.asarray(im.get_array()), snaps[steps[r]][i, 0].double().numpy())
    vmax = max(float(snaps[s][:8].abs().max()) for s in steps)
    assert images[0].get_clim() == pytest.approx((-vmax, vmax))
    assert "conv1" in fig.caption and f"{steps[0]} to {steps[-1]}" in fig.caption
