"""Classic kernels: published coefficients and their defining properties, applied
through convlens.conv.apply and checked against torch's depthwise convolution."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convlens.conv import KERNELS, apply, kernel, list_kernels
from convlens.errors import ConfigError

EXPECTED = [
    "identity", "box_blur", "gaussian", "sharpen", "sobel_x", "sobel_y", "prewitt_x",
    "prewitt_y", "scharr_x", "scharr_y", "laplacian", "emboss",
]


def test_registry_has_the_classic_kernels() -> None:
    assert list_kernels() == EXPECTED


@pytest.mark.parametrize("name", list(KERNELS))
def test_every_kernel_applies_like_torch_depthwise_conv(name: str) -> None:
    k = kernel(name)
    assert k.sum() == pytest.approx(KERNELS[name].sums_to, abs=1e-12)
    image = np.random.default_rng(0).random((3, 11, 9))
    ref = F.conv2d(
        torch.from_numpy(image)[None], torch.from_numpy(k).expand(3, 1, *k.shape).contiguous(),
        padding="same", groups=3,
    )[0].numpy()
    np.testing.assert_allclose(apply(image, name), ref, rtol=1e-12, atol=1e-12)


def test_derivative_kernels_on_a_ramp() -> None:
    """On the plane I(r, c) = 2c + 5r an x-kernel with column weights w gives
    slope_c · 2 · Σw (the difference of columns c+1 and c-1, weighted): Sobel 2·2·4,
    Prewitt 2·2·3, Scharr 5·2·16 along y. The Laplacian of a plane is 0, of x²+y² is 4."""
    r, c = np.mgrid[0:8, 0:9].astype(float)
    ramp = 2 * c + 5 * r
    valid = {"padding": "valid"}
    np.testing.assert_allclose(apply(ramp, "sobel_x", **valid), 2 * 2 * 4)
    np.testing.assert_allclose(apply(ramp, "sobel_y", **valid), 5 * 2 * 4)
    np.testing.assert_allclose(apply(ramp, "prewitt_x", **valid), 2 * 2 * 3)
    np.testing.assert_allclose(apply(ramp, "scharr_y", **valid), 5 * 2 * 16)
    np.testing.assert_allclose(apply(ramp, "laplacian", **valid), 0, atol=1e-12)
    np.testing.assert_allclose(apply(r**2 + c**2, "laplacian", **valid), 4.0)


def test_smoothing_kernels() -> None:
    g = kernel("gaussian", size=7, sigma=1.5)
    x = np.arange(7) - 3
    expected = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(g, expected / expected.sum(), rtol=1e-12)
    image = np.random.default_rng(1).random((6, 7))
    blurred = apply(image, "box_blur", padding="valid")
    brute = np.array([[image[i : i + 3, j : j + 3].mean() for j in range(5)] for i in range(4)])
    np.testing.assert_allclose(blurred, brute, rtol=1e-12)
    np.testing.assert_allclose(apply(image, "identity"), image)
    assert apply(image, kernel("box_blur", size=5)).shape == image.shape


def test_bad_requests() -> None:
    with pytest.raises(ConfigError, match="unknown kernel 'sobel': did you mean"):
        kernel("sobel")
    with pytest.raises(ConfigError, match="takes no parameters"):
        kernel("sobel_x", size=5)
    with pytest.raises(ConfigError, match="odd size"):
        kernel("identity", size=4)
    with pytest.raises(ConfigError, match="sigma"):
        kernel("gaussian", sigma=0)
    with pytest.raises(ConfigError, match="one 2-D kernel"):
        apply(np.ones((5, 5)), np.ones((1, 3, 3)))


@pytest.mark.parametrize("size", [0, -3, 2.0, True, "3"])
def test_kernel_sizes_are_checked_by_the_one_positive_int(size: object) -> None:
    with pytest.raises(ConfigError, match=f"^gaussian size must be a positive integer, got {re.escape(repr(size))}$"):
        kernel("gaussian", size=size)


def test_numpy_integers_are_integers() -> None:
    from convlens.conv import conv2d

    np.testing.assert_array_equal(kernel("box_blur", size=np.int64(3)), kernel("box_blur", size=3))
    x, w = np.ones((1, 2, 4, 4)), np.ones((2, 1, 3, 3))
    np.testing.assert_array_equal(conv2d(x, w, groups=np.int32(2)), conv2d(x, w, groups=2))
    with pytest.raises(ConfigError, match=r"^groups must be a positive integer, got 0$"):
        conv2d(x, w, groups=np.int64(0))
