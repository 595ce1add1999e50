"""Classic hand-made kernels, for contrast with the filters a network learns.

Every kernel is a cross-correlation kernel (what ``nn.Conv2d`` applies): the
derivative kernels respond *positively* where intensity increases to the right
(``*_x``) or downwards (``*_y``), in image coordinates with row 0 at the top.

>>> kernel("sobel_x")
array([[-1.,  0.,  1.],
       [-2.,  0.,  2.],
       [-1.,  0.,  1.]])
>>> list_kernels()[:4]
['identity', 'box_blur', 'gaussian', 'sharpen']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from convlens.conv.arithmetic import IntOrPair, count
from convlens.conv.ops import conv2d
from convlens.errors import ConfigError, unknown_name

__all__ = ["KERNELS", "KernelInfo", "apply", "filter_map", "kernel", "list_kernels", "register_kernel"]


@dataclass(frozen=True)
class KernelInfo:
    """A registered kernel: how to build it and what it does."""

    name: str
    build: Callable[..., NDArray[np.float64]]
    description: str
    sums_to: float  # 1 for smoothing/preserving kernels, 0 for derivative kernels


KERNELS: dict[str, KernelInfo] = {}


def register_kernel(name: str, description: str, sums_to: float) -> Callable[[Callable[..., NDArray[np.float64]]], Callable[..., NDArray[np.float64]]]:
    """Decorator: add a kernel builder to :data:`KERNELS` (the CLI and tests use it)."""

    def deco(build: Callable[..., NDArray[np.float64]]) -> Callable[..., NDArray[np.float64]]:
        KERNELS[name] = KernelInfo(name, build, description, sums_to)
        return build

    return deco


def _fixed(rows: list[list[float]]) -> Callable[[], NDArray[np.float64]]:
    def build() -> NDArray[np.float64]:
        return np.array(rows, dtype=np.float64)

    return build


def _odd_size(size: int, name: str) -> int:
    return count(f"{name} size", size)


@register_kernel("identity", "keeps the image unchanged (a single 1 in the centre)", 1.0)
def _identity(size: int = 3) -> NDArray[np.float64]:
    size = _odd_size(size, "identity")
    if size % 2 == 0:
        raise ConfigError(f"identity size={size}: needs an odd size so there is a centre")
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


@register_kernel("box_blur", "mean of the size×size neighbourhood", 1.0)
def _box_blur(size: int = 3) -> NDArray[np.float64]:
    size = _odd_size(size, "box_blur")
    return np.full((size, size), 1.0 / (size * size))


@register_kernel("gaussian", "Gaussian-weighted mean, exp(-(x²+y²)/(2σ²)), normalised to sum 1", 1.0)
def _gaussian(size: int = 5, sigma: float = 1.0) -> NDArray[np.float64]:
    size = _odd_size(size, "gaussian")
    if not sigma > 0:
        raise ConfigError(f"gaussian sigma={sigma!r}: sigma must be positive")
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()


register_kernel("sharpen", "identity plus the negative Laplacian: boosts edges", 1.0)(
    _fixed([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
)
register_kernel("sobel_x", "horizontal gradient (vertical edges), smoothed vertically 1-2-1", 0.0)(
    _fixed([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
)
register_kernel("sobel_y", "vertical gradient (horizontal edges), smoothed horizontally 1-2-1", 0.0)(
    _fixed([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
)
register_kernel("prewitt_x", "horizontal gradient, unweighted smoothing", 0.0)(
    _fixed([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])
)
register_kernel("prewitt_y", "vertical gradient, unweighted smoothing", 0.0)(
    _fixed([[-1, -1, -1], [0, 0, 0], [1, 1, 1]])
)
register_kernel("scharr_x", "horizontal gradient with better rotational symmetry (3-10-3)", 0.0)(
    _fixed([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]])
)
register_kernel("scharr_y", "vertical gradient with better rotational symmetry (3-10-3)", 0.0)(
    _fixed([[-3, -10, -3], [0, 0, 0], [3, 10, 3]])
)
register_kernel("laplacian", "sum of second derivatives: responds to blobs and thin lines", 0.0)(
    _fixed([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
)
register_kernel("emboss", "directional relief: light from the top left", 1.0)(
    _fixed([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
)


def list_kernels() -> list[str]:
    """Names of the registered kernels, in registration order."""
    return list(KERNELS)


def kernel(name: str, **params: float) -> NDArray[np.float64]:
    """The kernel called ``name`` as a float64 array (kh×kw).

    ``box_blur``, ``identity`` and ``gaussian`` take ``size``; ``gaussian`` also
    ``sigma``. Unknown names raise :class:`~convlens.errors.ConfigError` listing the
    valid ones.

    >>> kernel("gaussian", size=3, sigma=1.0).sum().round(12)
    np.float64(1.0)
    """
    info = KERNELS.get(name)
    if info is None:
        raise ConfigError(unknown_name("kernel", name, KERNELS))
    try:
        return info.build(**params)
    except TypeError:
        raise ConfigError(f"kernel {name!r} takes no parameters {sorted(params)}") from None


def apply(
    image: ArrayLike,
    kernel_: str | ArrayLike,
    *,
    stride: IntOrPair = 1,
    padding: IntOrPair | str = "same",
    dilation: IntOrPair = 1,
    padding_mode: str = "zeros",
    flip: bool = False,
    bias: float = 0.0,
) -> NDArray[Any]:
    """Apply one 2-D kernel to every channel of ``image`` (H×W, C×H×W or N×C×H×W).

    ``kernel_`` is a registered name (see :func:`list_kernels`) or a kh×kw array. The
    result has the shape of ``image`` with the spatial size given by stride, padding
    (``'same'`` by default) and dilation; channels are filtered independently (a
    depthwise convolution). Integer images are computed in float64.

    >>> img = np.zeros((5, 5)); img[:, 3:] = 1.0      # a vertical edge
    >>> apply(img, "sobel_x", padding="valid")
    array([[0., 4., 4.],
           [0., 4., 4.],
           [0., 4., 4.]])
    """
    k = kernel(kernel_) if isinstance(kernel_, str) else np.asarray(kernel_, dtype=np.float64)
    if k.ndim != 2:
        raise ConfigError(f"kernel of shape {k.shape}: apply() takes one 2-D kernel (kh×kw)")
    x = np.asarray(image)
    if x.ndim not in (2, 3, 4):
        raise ConfigError(f"image of shape {x.shape}: expected H×W, C×H×W or N×C×H×W")
    batch = x if x.ndim == 4 else x[None] if x.ndim == 3 else x[None, None]
    c = batch.shape[1]
    weight = np.broadcast_to(k, (c, 1, *k.shape))
    out = conv2d(
        batch, weight, np.full(c, bias), stride=stride, padding=padding, dilation=dilation,
        groups=c, padding_mode=padding_mode, flip=flip,
    )
    return out if x.ndim == 4 else out[0] if x.ndim == 3 else out[0, 0]


def filter_map(
    image: ArrayLike,
    weight: ArrayLike,
    bias: float = 0.0,
    *,
    stride: IntOrPair = 1,
    padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> NDArray[Any]:
    """The single feature map one filter makes from ``image`` (H×W or C×H×W).

    ``weight`` is a full filter C×kh×kw (a learned filter: the channels are summed,
    as in ``nn.Conv2d``) or a kh×kw kernel, which is then applied to the mean of the
    channels (for one channel, simply to the image).

    >>> filter_map(np.ones((2, 4, 4)), np.ones((3, 3)))
    array([[9., 9.],
           [9., 9.]])
    """
    x = np.asarray(image)
    x = x[None] if x.ndim == 2 else x
    if x.ndim != 3:
        raise ConfigError(f"image of shape {x.shape}: expected H×W or C×H×W")
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 2:
        w = np.broadcast_to(w / x.shape[0], (x.shape[0], *w.shape))
    if w.ndim != 3:
        raise ConfigError(f"filter of shape {w.shape}: expected kh×kw or C×kh×kw")
    if w.shape[0] != x.shape[0]:
        raise ConfigError(
            f"filter of shape {w.shape} has {w.shape[0]} input channels but the image has "
            f"{x.shape[0]}; a learned filter applies to its own layer's input"
        )
    out = conv2d(x[None], w[None], [bias], stride, padding, dilation, padding_mode=padding_mode, flip=flip)
    return out[0, 0]
