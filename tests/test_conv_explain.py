"""The step-by-step explainer: its sum at (i, j) is the reference convolution's value
there (and torch's), for random set-ups; its window and padding bookkeeping by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from _helpers import CONV_PROFILE
from convlens.conv import explain, output_size, parse_matrix, to_float_image
from convlens.errors import ConfigError

PROFILE = CONV_PROFILE


@st.composite
def setups(draw: st.DrawFn) -> dict[str, Any]:
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return {
        "c": draw(st.integers(1, 3)),
        "hw": (draw(st.integers(2, 9)), draw(st.integers(2, 9))),
        "k": k,
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "padding": draw(st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.just("same"), st.just("valid"))),
        "dilation": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        "padding_mode": draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
        "flip": draw(st.booleans()),
        "pos": (draw(st.integers(0, 20)), draw(st.integers(0, 20))),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@PROFILE
@given(setups())
def test_explained_sum_is_the_convolution_value(s: dict[str, Any]) -> None:
    if s["padding"] == "same":
        s["stride"] = (1, 1)
    try:
        hw_out = output_size(s["hw"], s["k"], s["stride"], s["padding"], s["dilation"], padding_mode=s["padding_mode"])
    except ConfigError:
        assume(False)
        return
    i, j = s["pos"][0] % hw_out[0], s["pos"][1] % hw_out[1]
    rng = np.random.default_rng(s["seed"])
    image, kern = rng.standard_normal((s["c"], *s["hw"])), rng.standard_normal((s["c"], *s["k"]))
    bias = float(rng.standard_normal())
    e = explain(image, kern, (i, j), bias=bias, stride=s["stride"], padding=s["padding"],
                dilation=s["dilation"], padding_mode=s["padding_mode"], flip=s["flip"])
    assert e.total == pytest.approx(float(e.value), rel=1e-12, abs=1e-12)
    # and torch agrees (the true convolution is cross-correlation with the rotated kernel)
    weight = torch.from_numpy(np.flip(kern, (1, 2)).copy() if s["flip"] else kern)[None]
    m = nn.Conv2d(s["c"], 1, s["k"], s["stride"], s["padding"], s["dilation"], padding_mode=s["padding_mode"], dtype=torch.float64)
    m.weight, m.bias = nn.Parameter(weight), nn.Parameter(torch.tensor([bias], dtype=torch.float64))
    with torch.no_grad():
        ref = m(torch.from_numpy(image))[0, i, j].item()
    assert e.total == pytest.approx(ref, rel=1e-12, abs=1e-12)
    # the products are exactly window · kernel, one per tap and channel
    assert e.products.shape == (s["c"], *s["k"])
    np.testing.assert_array_equal(e.products, e.window * e.kernel)


def test_small_matrix_by_hand() -> None:
    x = parse_matrix("1,2,3;4,5,6;7,8,9")
    e = explain(x, parse_matrix("1,0;0,-1"), (0, 0), padding=1, bias=0.5)
    np.testing.assert_array_equal(e.window[0], [[0, 0], [0, 1]])  # the top-left zero padding
    np.testing.assert_array_equal(e.in_image, [[False, False], [False, True]])
    assert e.span == ((-1, 0), (-1, 0)) and e.taps_in_padding == 3
    assert e.total == -0.5 and e.output_shape == (4, 4)
    e2 = e.at(2, 1)  # window rows 1..2, cols 0..1 of the image
    assert e2.total == 4 - 8 + 0.5 and e2.value == e2.total
    terms = e2.terms()
    assert [(t["row"], t["col"], t["product"]) for t in terms] == [(1, 0, 4.0), (1, 1, 0.0), (2, 0, 0.0), (2, 1, -8.0)]
    assert "out[2, 1]" in str(e2) and "0 taps in the padding" in str(e2)


def test_flip_rotates_the_kernel() -> None:
    k = parse_matrix("1,2;3,4")
    e = explain(np.ones((3, 3)), k, (0, 0), flip=True)
    np.testing.assert_array_equal(e.kernel[0], [[4, 3], [2, 1]])


def test_multi_channel_and_dilation() -> None:
    rng = np.random.default_rng(3)
    x, k = rng.standard_normal((2, 7, 7)), rng.standard_normal((2, 3, 3))
    e = explain(x, k, (1, 2), dilation=2, stride=2, padding=1)
    np.testing.assert_array_equal(e.rows, [2, 4, 6])
    np.testing.assert_array_equal(e.cols, [4, 6, 8])
    np.testing.assert_allclose(e.channel_sums.sum() + e.bias, e.total)
    np.testing.assert_array_equal(e.window, e.padded[:, [2, 4, 6]][:, :, [4, 6, 8]])


def test_errors_say_what_is_valid() -> None:
    with pytest.raises(ConfigError, match=r"outside the 2×2 output; rows 0..1"):
        explain(np.ones((3, 3)), np.ones((2, 2)), (2, 0))
    with pytest.raises(ConfigError, match="3 channels but the image has 1"):
        explain(np.ones((3, 3)), np.ones((3, 2, 2)))
    with pytest.raises(ConfigError, match="same number of values"):
        parse_matrix("1,2;3")
    with pytest.raises(ConfigError, match="write numbers"):
        parse_matrix("1,a")


def test_to_float_image_scales_uint8() -> None:
    img = np.array([[[[0, 255], [51, 102]]]], dtype=np.uint8)
    np.testing.assert_allclose(to_float_image(img), [[[0, 1], [0.2, 0.4]]])
    assert to_float_image(np.ones((4, 5))).shape == (1, 4, 5)
