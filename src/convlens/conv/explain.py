"""How one output value of a convolution is made, step by step.

:func:`explain` takes an input, a kernel and the layer's hyperparameters and returns
a :class:`Trace` of output position ``(i, j)``: the window the kernel covers on
the padded input, the element-wise products, their sum plus the bias, and the whole
output map (from :func:`convlens.conv.conv2d`, so the two can be compared). The
trace is computed independently of :func:`~convlens.conv.conv2d`, by indexing
the padded input at the kernel taps.

>>> x = np.arange(16.0).reshape(4, 4)
>>> e = explain(x, np.ones((2, 2)), (1, 0), stride=2)
>>> e.window[0]
array([[ 8.,  9.],
       [12., 13.]])
>>> e.total, e.value
(np.float64(42.0), np.float64(42.0))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from convlens.conv.arithmetic import IntOrPair, Pair, plan_conv
from convlens.conv.ops import conv2d, pad2d
from convlens.errors import ConfigError

__all__ = ["Trace", "explain", "parse_kernel", "parse_matrix", "to_float_image"]


@dataclass(frozen=True)
class Trace:
    """Output value ``position`` of ``image`` ⋆ ``kernel``, taken apart.

    Arrays (``C`` input channels, ``kh×kw`` kernel):

    * ``image`` C×H×W, ``padded`` C×Hp×Wp (``pad`` = top, bottom, left, right);
    * ``kernel`` C×kh×kw *as applied* (already rotated by 180° when ``flip``);
    * ``rows``/``cols``: padded-input row/column of each kernel tap (kh and kw values);
    * ``window`` C×kh×kw: the padded input under the taps; ``products`` = window·kernel;
    * ``in_image`` kh×kw: whether each tap lies on the image rather than the padding;
    * ``output`` Ho×Wo: the reference map from :func:`~convlens.conv.conv2d`.

    ``total`` (Σ products + bias) is the explained value; ``value`` is the reference
    map's value at ``position``; the two agree to rounding error. (A trace of the
    arithmetic, not to be confused with the heatmaps of :class:`convlens.explain.Explanation`.)
    """

    image: NDArray[np.float64]
    kernel: NDArray[np.float64]
    bias: float
    stride: Pair
    dilation: Pair
    pad: tuple[int, int, int, int]
    padding_mode: str
    flip: bool
    padded: NDArray[np.float64]
    output: NDArray[np.float64]
    position: Pair
    rows: NDArray[np.int64]
    cols: NDArray[np.int64]
    window: NDArray[np.float64]
    products: NDArray[np.float64]
    in_image: NDArray[np.bool_]

    @property
    def total(self) -> np.float64:
        """Σ products + bias: the value this trace computes."""
        return np.float64(self.products.sum() + self.bias)

    @property
    def value(self) -> np.float64:
        """The reference convolution's value at :attr:`position`."""
        return np.float64(self.output[self.position])

    @property
    def channel_sums(self) -> NDArray[np.float64]:
        """Sum of the products of each input channel (C values)."""
        return np.asarray(self.products.sum(axis=(1, 2)))

    @property
    def image_rows(self) -> NDArray[np.int64]:
        """Rows of the taps in image coordinates (negative or ≥ H: padding)."""
        return self.rows - self.pad[0]

    @property
    def image_cols(self) -> NDArray[np.int64]:
        return self.cols - self.pad[2]

    @property
    def span(self) -> tuple[Pair, Pair]:
        """Inclusive image rows and columns the window spans (unclipped)."""
        r, c = self.image_rows, self.image_cols
        return (int(r[0]), int(r[-1])), (int(c[0]), int(c[-1]))

    @property
    def taps_in_padding(self) -> int:
        return int((~self.in_image).sum())

    @property
    def output_shape(self) -> Pair:
        return (int(self.output.shape[0]), int(self.output.shape[1]))

    def at(self, i: int, j: int) -> Trace:
        """The same set-up explained at output position ``(i, j)``."""
        return _at(self, (i, j))

    def terms(self) -> list[dict[str, Any]]:
        """One dict per product: channel, tap (a, b), image row/col (None in the
        padding), input value, weight, product."""
        out = []
        r_img, c_img = self.image_rows, self.image_cols
        for ch in range(self.kernel.shape[0]):
            for a in range(self.kernel.shape[1]):
                for b in range(self.kernel.shape[2]):
                    inside = bool(self.in_image[a, b])
                    out.append({
                        "channel": ch,
                        "tap": (a, b),
                        "row": int(r_img[a]) if inside else None,
                        "col": int(c_img[b]) if inside else None,
                        "value": float(self.window[ch, a, b]),
                        "weight": float(self.kernel[ch, a, b]),
                        "product": float(self.products[ch, a, b]),
                    })
        return out

    def __str__(self) -> str:
        i, j = self.position
        (r0, r1), (c0, c1) = self.span
        return (
            f"out[{i}, {j}] = Σ {self.products.size} products + bias = "
            f"{float(self.products.sum()):.6g} + {self.bias:.6g} = {float(self.total):.6g} "
            f"(window rows {r0}..{r1}, cols {c0}..{c1}; {self.taps_in_padding} taps in the padding)"
        )


def _as_chw(image: ArrayLike) -> NDArray[np.float64]:
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        return x[None]
    if x.ndim == 4 and x.shape[0] == 1:
        return x[0]
    if x.ndim != 3:
        raise ConfigError(f"image of shape {x.shape}: expected H×W or C×H×W")
    return x


def explain(
    image: ArrayLike,
    kernel: ArrayLike,
    position: tuple[int, int] | None = None,
    *,
    bias: float = 0.0,
    stride: IntOrPair = 1,
    padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> Trace:
    """Explain output ``position`` of the convolution of ``image`` with ``kernel``.

    ``image`` is H×W or C×H×W; ``kernel`` is kh×kw (for one channel) or C×kh×kw;
    the parameters mean what they mean in :func:`convlens.conv.conv2d`. ``position``
    defaults to the strongest response (largest absolute output value, first in
    reading order). A position outside the output map raises
    :class:`~convlens.errors.ConfigError` naming the valid range.
    """
    x = _as_chw(image)
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 2:
        k = k[None]
    if k.ndim != 3:
        raise ConfigError(f"kernel of shape {k.shape}: expected kh×kw or C×kh×kw")
    if k.shape[0] != x.shape[0]:
        raise ConfigError(
            f"kernel of shape {k.shape} has {k.shape[0]} channels but the image has {x.shape[0]}; "
            "they must match"
        )
    plan = plan_conv(x.shape[1:], k.shape[1:], stride, padding, dilation, padding_mode)
    applied = k[:, ::-1, ::-1].copy() if flip else k.copy()
    output = conv2d(x[None], applied[None], [bias], stride, padding, dilation, padding_mode=padding_mode)[0, 0]
    padded = pad2d(x, plan.pad, padding_mode)
    base = Trace(
        image=x, kernel=applied, bias=float(bias), stride=plan.stride, dilation=plan.dilation,
        pad=plan.pad, padding_mode=padding_mode, flip=flip, padded=padded, output=output,
        position=(0, 0), rows=np.zeros(0, np.int64), cols=np.zeros(0, np.int64),
        window=np.zeros(0), products=np.zeros(0), in_image=np.zeros(0, bool),
    )
    if position is None:
        flat = int(np.argmax(np.abs(output)))
        position = (flat // output.shape[1], flat % output.shape[1])
    return _at(base, position)


def _at(e: Trace, position: tuple[int, int]) -> Trace:
    ho, wo = e.output.shape
    try:
        i, j = (int(v) for v in position)
    except (TypeError, ValueError):
        raise ConfigError(f"position {position!r}: expected two integers (row, column)") from None
    if not (0 <= i < ho and 0 <= j < wo):
        raise ConfigError(f"position ({i}, {j}) is outside the {ho}×{wo} output; rows 0..{ho - 1}, columns 0..{wo - 1}")
    kh, kw = e.kernel.shape[1:]
    rows = i * e.stride[0] + np.arange(kh) * e.dilation[0]
    cols = j * e.stride[1] + np.arange(kw) * e.dilation[1]
    window = e.padded[:, rows[:, None], cols[None, :]]
    h, w = e.image.shape[1:]
    r_img, c_img = rows - e.pad[0], cols - e.pad[2]
    in_image = ((r_img >= 0) & (r_img < h))[:, None] & ((c_img >= 0) & (c_img < w))[None, :]
    return replace(
        e, position=(i, j), rows=rows, cols=cols, window=window,
        products=window * e.kernel, in_image=in_image,
    )


def parse_matrix(text: str) -> NDArray[np.float64]:
    """Parse a small matrix written as rows separated by ``;`` and values by ``,``
    (or spaces): ``"1,2,3;4,5,6"`` → a 2×3 array.

    >>> parse_matrix("1,0,-1; 2 0 -2")
    array([[ 1.,  0., -1.],
           [ 2.,  0., -2.]])
    """
    rows = [r for r in text.strip().strip("[]").split(";") if r.strip()]
    try:
        parsed = [[float(v) for v in r.replace(",", " ").split()] for r in rows]
    except ValueError:
        raise ConfigError(f"matrix {text!r}: write numbers, rows separated by ';', e.g. \"1,2,3;4,5,6\"") from None
    if not parsed or not parsed[0] or any(len(r) != len(parsed[0]) for r in parsed):
        raise ConfigError(f"matrix {text!r}: every row needs the same number of values, e.g. \"1,2,3;4,5,6\"")
    return np.array(parsed, dtype=np.float64)


def parse_kernel(text: str) -> tuple[str, NDArray[np.float64]]:
    """``(name, kernel)`` for a classic kernel's name or a matrix written as rows
    (see :func:`parse_matrix`); a matrix is named by its text.

    >>> parse_kernel("sobel_x")[0]
    'sobel_x'
    >>> parse_kernel("1,0;0,-1")
    ('kernel "1,0;0,-1"', array([[ 1.,  0.],
           [ 0., -1.]]))
    """
    from convlens.conv.kernels import kernel

    if any(ch in text for ch in ",;") or text.strip().lstrip("-").replace(".", "").isdigit():
        return f'kernel "{text.strip()}"', parse_matrix(text)
    return text, kernel(text)


def to_float_image(image: ArrayLike) -> NDArray[np.float64]:
    """An image as float64 C×H×W: uint8 pixels are scaled to [0, 1], other numbers kept.

    Accepts H×W, C×H×W or 1×C×H×W (e.g. :func:`convlens.data.load_image`'s output).
    """
    x = np.asarray(image)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return _as_chw(x.astype(np.float64) / scale)
