"""The statistics figure and the top-k gallery show the library's numbers and say so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from convlens.conv.arithmetic import Geometry
from convlens.errors import ConfigError
from convlens.inspect import channel_stats, topk_examples
from convlens.viz.inspect import stats_figure, topk_gallery
from zoo import SeedCNN, seeded


def _flagged() -> nn.Module:
    conv = nn.Conv2d(1, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 1.0, 1.0, 0.0]).view(4, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, -100.0, -2.5, 0.5]))
    return nn.Sequential(conv, nn.ReLU())


def test_stats_figure_data_and_words() -> None:
    x = torch.zeros(400, 1, 3, 3)
    x[:, 0, 0, 0] = torch.linspace(-1, 1, 400)
    x[5, 0, 1, 1] = 3.0  # channel 2 fires on this input only
    s = channel_stats(_flagged(), x, "1", progress=False)["1"]
    e = stats_figure(s)
    np.testing.assert_allclose(e.data["mean"], s.mean.numpy())
    np.testing.assert_allclose(e.data["active_fraction"], s.active_fraction.numpy())
    assert e.data["dead"] == [1] and e.data["rare"] == [2]
    assert "1 dead, 1 rarely active" in e.caption
    assert "Dead channels: 1." in e.alt and "Rarely active channels: 2." in e.alt
    assert "400 inputs" in e.caption
    assert e.png_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("palette", ["default", "gray"])
def test_gallery_shows_crops_values_and_first_layer_filters(palette: str) -> None:
    m = seeded(SeedCNN())
    x = torch.randn(40, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    fields = {"conv1": Geometry.identity().conv(5, padding=2),
              "conv2": Geometry.identity().conv(5, padding=2).conv(2, stride=2).conv(5, padding=2)}
    rep = topk_examples(m, x, ["conv1", "conv2"], k=3, fields=fields, progress=False)
    g1 = topk_gallery(rep["conv1"], channels=[4, 1], palette=palette)
    np.testing.assert_allclose(g1.data["values"], rep["conv1"].values[[4, 1]].numpy())
    np.testing.assert_allclose(g1.data["filters"], m.conv1.weight.detach()[[4, 1]].numpy())
    assert "filter" in g1.caption and "channels 4 and 1" in g1.caption
    g2 = topk_gallery(rep["conv2"], max_channels=5, palette=palette)
    assert g2.data["channels"] == [0, 1, 2, 3, 4] and g2.data["filters"] is None
    np.testing.assert_array_equal(g2.data["crops"], rep["conv2"].crops[:5].numpy())
    assert "14×14-pixel receptive field" in g2.caption and "channels 0–4" in g2.caption
    best = int(np.argmax(g2.data["values"][:, 0]))
    assert f"{best} (" in g2.alt
    assert ("outside the image" in g2.caption) == bool(np.isnan(g2.data["crops"]).any())
    assert g2.svg_bytes().startswith(b"<?xml")


def test_gallery_needs_crops() -> None:
    m = seeded(SeedCNN())
    t = topk_examples(m, torch.randn(5, 1, 28, 28), "fc", k=2, crops=False, progress=False)["fc"]
    with pytest.raises(ConfigError, match="crops=True"):
        topk_gallery(t)
