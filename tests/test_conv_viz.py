"""Figures, GIF and table of the convolution: the numbers they show are the reference
numbers, maps are drawn at their true size, and the words describe the data."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from convlens import views
from convlens.conv import explain, filter_map, kernel, output_size, parse_matrix
from convlens.conv.ops import conv2d
from convlens.errors import ConfigError
from convlens.viz.conv import (
    explanation_figure,
    explanation_gif,
    explanation_table,
    hyperparameter_panel,
    kernel_figure,
)
from convlens.viz.figure import save


def _digit_like() -> np.ndarray:
    img = np.zeros((12, 10))
    img[2:10, 3:5] = 1.0  # a vertical bar
    img[2:4, 3:8] = 0.5
    return img


def test_figure_shows_the_explained_numbers(tmp_path) -> None:
    img = _digit_like()
    e = explain(img, kernel("sobel_x"), (5, 2), padding=1, bias=0.25)
    fig = explanation_figure(e, label="bar ⋆ sobel_x")
    ref = conv2d(img[None, None], kernel("sobel_x")[None, None], [0.25], padding=1)[0, 0]
    np.testing.assert_array_equal(fig.data["output"], ref)
    np.testing.assert_array_equal(fig.data["products"], e.window[0] * kernel("sobel_x"))
    assert fig.data["total"] == pytest.approx(ref[5, 2])
    assert f"{ref[5, 2]:.4g}" in fig.caption and "rows 4–6" in fig.caption and "columns 1–3" in fig.caption
    assert "12×10 input padded to 14×12" in fig.alt
    paths = save(fig, tmp_path, "explain")
    assert paths["png"].stat().st_size > 0 and "sobel_x" in paths["json"].read_text()


def test_figure_of_a_multichannel_filter_shows_the_strongest_channel() -> None:
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((4, 6, 6)), rng.standard_normal((4, 3, 3))
    k[2] *= 10  # channel 2 dominates
    e = explain(x, k, (1, 1))
    fig = explanation_figure(e)
    assert fig.data["channel"] == int(np.argmax(np.abs(e.channel_sums)))
    assert f"channel {fig.data['channel']} of 4" in fig.caption


def _frame_cells(frame: Image.Image, left: int, cell: int, shape: tuple[int, int]) -> np.ndarray:
    rgb = np.asarray(frame.convert("RGB"), dtype=int)
    ys = np.arange(shape[0]) * cell + cell // 2
    xs = left + np.arange(shape[1]) * cell + cell // 2
    return rgb[ys[:, None], xs[None, :]]


def test_gif_fills_the_map_in_reading_order() -> None:
    x = parse_matrix("1,2,3,4,5;5,4,3,2,1;0,1,0,1,0;2,2,2,2,2;9,0,9,0,9")
    e = explain(x, parse_matrix("1,-1;-1,1"), (0, 0))
    anim = explanation_gif(e, cell=10)
    gif = Image.open(io.BytesIO(anim.gif))
    assert gif.n_frames == anim.frames == 16  # one frame per output position
    cell = anim.data["cell"]
    left = e.padded.shape[2] * cell + 2 * cell + 8
    for k in (0, 5, 15):
        gif.seek(k)
        centres = _frame_cells(gif, left, cell, e.output.shape)
        gray = (np.abs(centres - 200).max(axis=-1) <= 12).ravel()  # cells not computed yet
        computed = np.arange(16) <= k
        # computed cells are coloured (the map's colours are never this neutral gray,
        # except a zero value, which is white-ish (247))
        np.testing.assert_array_equal(gray, ~computed)


def test_gif_limits_frames_and_saves_a_sidecar(tmp_path) -> None:
    img = _digit_like()
    anim = explanation_gif(explain(img, kernel("gaussian"), padding=2), max_frames=10)
    assert anim.frames <= 11 and anim.data["stops"][-1] == 12 * 10 - 1
    paths = anim.save(tmp_path, "slide")
    assert Image.open(paths["gif"]).n_frames == anim.frames
    assert "12×10 output positions" in json.loads(paths["json"].read_text())["caption"]
    with pytest.raises(ConfigError):
        explanation_gif(explain(img, kernel("gaussian")), max_frames=0)


def test_panel_draws_every_map_at_its_true_size() -> None:
    img = _digit_like()
    settings = [{"stride": 1, "padding": 0}, {"stride": 2, "padding": 1}, {"dilation": 2, "padding": "same"}, {"stride": 3}]
    fig = views.conv_panel(views.conv_kernel(img[None], kernel="sobel_y"), settings, pixel=0.05)
    for s, m, shape in zip(settings, fig.data["maps"], fig.data["shapes"], strict=True):
        np.testing.assert_array_equal(m, filter_map(img, kernel("sobel_y"), **s))
        assert shape == output_size(img.shape, 3, s.get("stride", 1), s.get("padding", 0), s.get("dilation", 1))
    # the axes on the figure: one value = 0.05 inch, for the input and every map
    fig_w, fig_h = fig.figure.get_size_inches()
    drawn = [(ax.get_position().height * fig_h, ax.get_position().width * fig_w) for ax in fig.figure.axes]
    expected = [img.shape] + [m.shape for m in fig.data["maps"]]
    np.testing.assert_allclose(np.array(drawn), 0.05 * np.array(expected), rtol=1e-9)
    assert "12×10" in fig.caption and "stride 2, pad 1 → 6×5" in fig.caption
    with pytest.raises(ConfigError, match="unknown keys"):
        views.conv_panel(views.conv_kernel(img[None], kernel="sobel_y"), [{"strides": 2}])
    # the drawing alone: maps given, nothing computed
    maps = [np.zeros((4, 4)), np.ones((2, 2))]
    drawn = hyperparameter_panel(img, maps, [{"stride": 1}, {"stride": 2}], kernel_size=(3, 3))
    assert drawn.data["shapes"] == [(4, 4), (2, 2)] and "3×3 kernel" in drawn.caption
    with pytest.raises(ConfigError, match="one map per setting"):
        hyperparameter_panel(img, maps, [{"stride": 1}], kernel_size=(3, 3))


def test_kernel_figure_maps_and_words() -> None:
    img = _digit_like()
    learned = np.random.default_rng(1).standard_normal((1, 5, 5))
    made = [("sobel_x", kernel("sobel_x"), conv2d(img[None, None], kernel("sobel_x")[None, None], padding="same")[0, 0]),
            ("conv1:0", learned, conv2d(img[None, None], learned[None], [0.5], padding="same")[0, 0])]
    fig = kernel_figure(img, made)
    for (_, _, m), drawn in zip(made, fig.data["maps"], strict=True):
        np.testing.assert_array_equal(drawn, m)
    assert "sobel_x (vertical edge" in fig.alt


def test_conv_apply_computes_the_maps_it_draws() -> None:
    img = _digit_like()
    fig = views.conv_apply(views.ConvInput(img[None], "bar"), kernels=["sobel_x", "1,0;0,-1"], stride=2, padding=1)
    np.testing.assert_allclose(fig.data["maps"][0],
                               conv2d(img[None, None], kernel("sobel_x")[None, None], stride=2, padding=1)[0, 0])
    np.testing.assert_allclose(fig.data["maps"][1], filter_map(img, parse_matrix("1,0;0,-1"), stride=2, padding=1))
    assert fig.data["names"] == ["sobel_x", 'kernel "1,0;0,-1"'] and "stride 2, padding 1" in fig.caption


def test_table_lists_every_product_and_the_sum() -> None:
    e = explain(parse_matrix("1,2,3;4,5,6;7,8,9"), parse_matrix("1,0;0,-1"), (0, 0), padding=1, bias=0.5)
    con = Console(record=True, width=200)
    con.print(explanation_table(e))
    text = con.export_text()
    assert "Σ of 4 products = -1;  + bias 0.5  = -0.5" in text
    assert "· marks the 3 taps in the zeros padding" in text and "1×-1" in text
    rng = np.random.default_rng(2)
    many = explain(rng.standard_normal((12, 5, 5)), rng.standard_normal((12, 3, 3)), (1, 1))
    con = Console(record=True, width=200)
    con.print(explanation_table(many, max_channels=2))
    text = con.export_text()
    top = int(np.argmax(np.abs(many.channel_sums)))
    assert f"channel {top}: input×weight" in text and "4 more" in text
