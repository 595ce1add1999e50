"""Reference convolution and pooling in NumPy, with PyTorch's semantics.

Every function takes batches ``N×C×H×W`` (or one unbatched ``C×H×W`` sample, like
PyTorch) and the parameters of the matching ``torch.nn.functional`` function. The
results agree with PyTorch to rounding error; invalid configurations raise
:class:`~convlens.errors.ConfigError` (a ``ValueError``) in the cases PyTorch refuses.

Floating-point inputs keep their precision (float32 stays float32); integer inputs
are computed in float64 (max pooling keeps integers). Unlike PyTorch, mixed dtypes
are promoted rather than refused.

No Python loop runs over output positions. A convolution gathers the kernel windows
through a strided view into an im2col matrix and does one matrix product (per group
and batch chunk): on whole padded rows for stride-1 layers whose padding adds few
columns, otherwise on a channels-last copy. Pooling reduces over the ``kh*kw``
kernel offsets. Transposed convolution does one matrix product and scatters it with
one strided addition per kernel offset.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import ArrayLike, NDArray

from convlens.conv.arithmetic import (
    IntOrPair,
    count,
    plan_conv,
    plan_pool,
    plan_transpose,
)
from convlens.errors import ConfigError, unknown_name

__all__ = ["avg_pool2d", "conv2d", "conv_transpose2d", "max_pool2d", "pad2d"]

# im2col materialises C*kh*kw*Ho*Wo values per sample; batches are split so that one
# chunk's buffer stays below this many elements (4 MiB of float32): the gathered
# columns are then still in cache when the matrix product reads them, and memory use
# stays bounded for large batches. (Measured on the benchmark layers: 2^18..2^21 are
# equally fast, 2^24 is 1.5-2x slower.)
_IM2COL_BUDGET = 1 << 20
_NP_PAD_MODE: dict[str, Literal["reflect", "edge", "wrap"]] = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}

# Work buffers (padded input, im2col columns) are kept per thread and reused across
# calls, up to this many elements each (at most 2 × 16 MiB per thread in float64): touching freshly mapped memory costs page faults that, on small layers,
# take several times longer than the arithmetic.
_SCRATCH_KEEP = 1 << 21
_scratch_pool = threading.local()


#: The most values one padded input (or work buffer) of the NumPy engine holds: 2**27,
#: 1 GiB in float64. Padding or dilation beyond that is refused, not attempted.
MAX_ELEMENTS = 2**27


def check_size(size: int, what: str = "the padded input") -> None:
    """Refuse an array of ``size`` values above :data:`MAX_ELEMENTS` in one line."""
    if size > MAX_ELEMENTS:
        raise ConfigError(
            f"{what} would hold {size:,} values, more than the {MAX_ELEMENTS:,} convlens's NumPy "
            "convolution allocates; use less padding (--padding) or a smaller image"
        )


def _scratch(name: str, size: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    """A 1-D work buffer of ``size`` elements, reused by later calls in this thread.

    Its content is undefined; it must never be handed to the caller."""
    check_size(size)
    if size > _SCRATCH_KEEP:
        return np.empty(size, dtype=dtype)
    pool: dict[str, NDArray[Any]] | None = getattr(_scratch_pool, "buffers", None)
    if pool is None:
        pool = _scratch_pool.buffers = {}
    buf = pool.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = pool[name] = np.empty(size, dtype=dtype)
    return buf[:size]


def _float_dtype(*arrays: NDArray[Any] | None) -> np.dtype[Any]:
    present = [a for a in arrays if a is not None]
    dt = np.result_type(*present)
    if np.issubdtype(dt, np.complexfloating) or not (np.issubdtype(dt, np.number) or dt == np.bool_):
        raise ConfigError(f"dtype {dt}: the reference convolution works on real numbers only")
    if dt == np.float32 or dt == np.float64:
        return dt
    if dt == np.float16:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _batched(x: NDArray[Any], op: str) -> tuple[NDArray[Any], bool]:
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:
        return x[None], True
    raise ConfigError(f"input of shape {tuple(x.shape)}: {op} expects N×C×H×W (batched) or C×H×W (unbatched)")


def pad2d(
    x: ArrayLike,
    pad: tuple[int, int, int, int],
    mode: str = "zeros",
    value: float = 0.0,
) -> NDArray[Any]:
    """Pad the last two axes by ``pad = (top, bottom, left, right)``.

    ``mode`` is ``zeros`` (or ``constant`` with ``value``), ``reflect`` (mirror without
    repeating the edge), ``replicate`` (repeat the edge) or ``circular`` (wrap around),
    like ``torch.nn.functional.pad``. Negative amounts crop.

    >>> pad2d(np.arange(3.0).reshape(1, 3), (0, 0, 2, 1), "reflect")
    array([[2., 1., 0., 1., 2., 1.]])
    """
    a = np.asarray(x)
    if a.ndim < 2:
        raise ConfigError(f"input of shape {a.shape}: padding needs at least two axes")
    top, bottom, left, right = (int(v) for v in pad)
    h, w = a.shape[-2:]
    a = a[..., max(0, -top) : h - max(0, -bottom), max(0, -left) : w - max(0, -right)]
    top, bottom, left, right = max(top, 0), max(bottom, 0), max(left, 0), max(right, 0)
    check_size(int(np.prod(a.shape[:-2], dtype=np.int64)) * (a.shape[-2] + top + bottom) * (a.shape[-1] + left + right))
    if mode in ("zeros", "constant"):
        out = np.full((*a.shape[:-2], a.shape[-2] + top + bottom, a.shape[-1] + left + right), value, dtype=a.dtype)
        out[..., top : top + a.shape[-2], left : left + a.shape[-1]] = a
        return out
    if mode not in _NP_PAD_MODE:
        raise ConfigError(unknown_name("padding mode", mode, ["zeros", *_NP_PAD_MODE]))
    widths = [(0, 0)] * (a.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(a, widths, mode=_NP_PAD_MODE[mode])


def _check_conv_channels(
    op: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], groups: object, *, transposed: bool
) -> int:
    groups = count("groups", groups)
    if len(w_shape) != 4:
        raise ConfigError(f"weight of shape {w_shape}: {op} needs a 4-D weight")
    c = x_shape[1]
    if w_shape[0] < groups or w_shape[0] % groups:
        raise ConfigError(
            f"groups={groups}: the weight's first dimension ({w_shape[0]}) must be a positive "
            f"multiple of groups"
        )
    if transposed:
        if c != w_shape[0]:
            raise ConfigError(
                f"weight of shape {w_shape}: conv_transpose2d expects the input to have "
                f"{w_shape[0]} channels (weight.shape[0]) but it has {c}"
            )
        if w_shape[1] < 1:
            raise ConfigError(f"weight of shape {w_shape}: weight.shape[1] (output channels per group) must be at least 1")
    elif c != w_shape[1] * groups:
        raise ConfigError(
            f"groups={groups}, weight of shape {w_shape}: the input must have "
            f"weight.shape[1]*groups = {w_shape[1] * groups} channels but it has {c}"
        )
    return groups


def _check_bias(bias: NDArray[Any] | None, n_out: int, w_shape: tuple[int, ...]) -> None:
    if bias is not None and bias.shape != (n_out,):
        raise ConfigError(
            f"bias of shape {tuple(bias.shape)}: with a weight of shape {w_shape} the bias must "
            f"be 1-D with {n_out} values"
        )


def _check_spatial(x: NDArray[Any], op: str) -> None:
    n, c, h, w = x.shape
    if n > 0 and c > 0 and (h == 0 or w == 0):
        raise ConfigError(f"input of shape {tuple(x.shape)}: {op} needs a non-empty image (H, W ≥ 1)")


def conv2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> NDArray[Any]:
    """2-D convolution of ``x`` (N×C×H×W or C×H×W) with ``weight`` (C_out×C/groups×kh×kw).

    With ``flip=False`` (the default) this is cross-correlation, exactly what
    ``torch.nn.Conv2d`` computes::

        out[n, o, i, j] = bias[o] + Σ_c Σ_m Σ_n x_pad[n, c, i*s + m*d, j*s + n*d] · w[o, c, m, n]

    With ``flip=True`` the kernel is rotated by 180° first, which is the true
    (textbook) convolution ``Σ_m Σ_n I(i-m, j-n) K(m, n)`` aligned to the same output
    grid. ``padding`` is an int, a pair, ``'valid'`` or ``'same'``; ``padding_mode``
    is ``zeros``, ``reflect``, ``replicate`` or ``circular`` (as in ``nn.Conv2d``).

    The result is the view of the matrix product's own buffer that has the N×C×H×W
    shape, so it need not be C-contiguous (use ``np.ascontiguousarray`` if a
    consumer requires that); copying it into place would cost more than the
    arithmetic on small layers.

    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> conv2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[10., 18.],
           [42., 50.]])
    """
    xa, wa = np.asarray(x), np.asarray(weight)
    ba = None if bias is None else np.asarray(bias)
    dtype = _float_dtype(xa, wa, ba)
    xb, unbatched = _batched(xa, "conv2d")
    groups = _check_conv_channels("conv2d", xb.shape, wa.shape, groups, transposed=False)
    c_out, _, kh, kw = wa.shape
    _check_bias(ba, c_out, wa.shape)
    plan = plan_conv(xb.shape[2:], (kh, kw), stride, padding, dilation, padding_mode)
    _check_spatial(xb, "conv2d")
    xf = xb.astype(dtype, copy=False)
    w = wa.astype(dtype, copy=False)
    if flip:
        w = w[..., ::-1, ::-1]
    b = None if ba is None else ba.astype(dtype, copy=False)
    n, w_in = xb.shape[0], xb.shape[3]
    wp = w_in + plan.pad[2] + plan.pad[3]
    if n == 0 or c_out == 0:
        out = np.zeros((n, c_out, *plan.out), dtype=dtype)
    elif plan.stride == (1, 1) and wp <= 1.25 * plan.out[1]:
        out = _correlate_rows(xf, w, b, plan.pad, padding_mode, plan.dilation, groups, plan.out)
    else:
        out = _correlate_nhwc(xf, w, b, plan.pad, padding_mode, plan.stride, plan.dilation, groups, plan.out)
    return out[0] if unbatched else out


def _fill_border(xp: NDArray[Any], top: int, bottom: int, left: int, right: int) -> None:
    """Zero the padding frame of ``xp`` (…×Hp×Wp); the interior is written next."""
    hp, wp = xp.shape[-2:]
    xp[..., :top, :] = 0
    xp[..., hp - bottom :, :] = 0
    xp[..., :, :left] = 0
    xp[..., :, wp - right :] = 0


def _correlate_rows(
    x: NDArray[Any],
    w: NDArray[Any],
    bias: NDArray[Any] | None,
    pad: tuple[int, int, int, int],
    mode: str,
    dilation: tuple[int, int],
    groups: int,
    out_hw: tuple[int, int],
) -> NDArray[Any]:
    """Stride-1 cross-correlation on whole padded rows (NCHW).

    Output pixel ``(i, j)`` is computed at position ``p = i*Wp + j`` of the flattened
    padded image; kernel tap (a, b) then reads position ``p + a*dh*Wp + b*dw``, so
    for every (channel, tap, sample) the im2col row is one contiguous run of
    ``Ho*Wp`` values (cheap to gather). The ``Wp - Wo`` extra columns per row are
    computed and dropped, which is why this path is used only when they are few.
    One matrix product per group and batch chunk:
    ``(C_out/G, C/G·kh·kw) @ (C/G·kh·kw, samples·Ho·Wp)``, written straight into the
    result buffer (C_out, N, Ho, Wp); the result is a view of it without the extra
    columns, so no copy follows the product.
    """
    n, c, h, w_in = x.shape
    c_out, cg, kh, kw = w.shape
    ho, wo = out_hw
    top, bottom, left, right = pad
    hp, wp = h + top + bottom, w_in + left + right
    # one spare row at the very end: the last run of the last plane reads up to
    # (kw-1)*dw values past its plane (into columns that are dropped)
    flat = _scratch("padded", n * c * hp * wp + wp, x.dtype)
    flat[n * c * hp * wp :] = 0
    xp = flat[: n * c * hp * wp].reshape(n, c, hp, wp)
    if mode == "zeros":
        _fill_border(xp, top, bottom, left, right)
        xp[:, :, top : top + h, left : left + w_in] = x
    else:
        xp[...] = pad2d(x, pad, mode)
    length = ho * wp
    cog, k = c_out // groups, cg * kh * kw
    s_n, s_c = xp.strides[:2]
    item = xp.itemsize
    view = as_strided(
        xp,
        shape=(groups, cg, kh, kw, n, length),
        strides=(cg * s_c, s_c, dilation[0] * wp * item, dilation[1] * item, s_n, item),
        writeable=False,
    )
    # the bias rides along in the product as an extra input row of ones
    wmat = np.zeros((groups, cog, k + 1), dtype=x.dtype)
    wmat[:, :, :k] = w.reshape(groups, cog, k)
    if bias is not None:
        wmat[:, :, k] = bias.reshape(groups, cog)
    step = max(1, _IM2COL_BUDGET // max(c * kh * kw * length, 1))
    cols_buf = _scratch("cols", groups * (k + 1) * min(step, n) * length, x.dtype)
    full = np.empty((groups, cog, n * length), dtype=x.dtype)  # = (C_out, N, Ho, Wp)
    for n0 in range(0, n, step):
        m = min(n, n0 + step) - n0
        cols = cols_buf[: groups * (k + 1) * m * length].reshape(groups, k + 1, m * length)
        np.copyto(cols[:, :k].reshape(groups, cg, kh, kw, m, length), view[:, :, :, :, n0 : n0 + m])
        cols[:, k] = 1
        np.matmul(wmat, cols, out=full[:, :, n0 * length : (n0 + m) * length])
    return full.reshape(c_out, n, ho, wp)[:, :, :, :wo].transpose(1, 0, 2, 3)


def _correlate_nhwc(
    x: NDArray[Any],
    w: NDArray[Any],
    bias: NDArray[Any] | None,
    pad: tuple[int, int, int, int],
    mode: str,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    out_hw: tuple[int, int],
) -> NDArray[Any]:
    """General cross-correlation via an exact im2col on a channels-last copy.

    The padded input is laid out N×Hp×Wp×C, so one output pixel's window is
    ``kh`` runs of ``kw·C/G`` contiguous values (for dilation 1). One matrix product
    per group and batch chunk: ``(samples·Ho·Wo, kh·kw·C/G) @ (kh·kw·C/G, C_out/G)``,
    written straight into a channels-last result (N, Ho, Wo, C_out); the result is
    its N×C_out×Ho×Wo view, so no copy follows the product.
    """
    n, c, h, w_in = x.shape
    c_out, cg, kh, kw = w.shape
    ho, wo = out_hw
    top, bottom, left, right = pad
    hp, wp = h + top + bottom, w_in + left + right
    xt = _scratch("padded", n * hp * wp * c, x.dtype).reshape(n, hp, wp, c)  # channels last
    if mode == "zeros":
        _fill_border(xt.transpose(0, 3, 1, 2), top, bottom, left, right)
        xt[:, top : top + h, left : left + w_in, :] = x.transpose(0, 2, 3, 1)
    else:
        xt[...] = pad2d(x, pad, mode).transpose(0, 2, 3, 1)
    cog, k, pixels = c_out // groups, kh * kw * cg, ho * wo
    s_n, s_h, s_w, s_c = xt.strides
    view = as_strided(
        xt,
        shape=(groups, n, ho, wo, kh, kw, cg),
        strides=(cg * s_c, s_n, stride[0] * s_h, stride[1] * s_w, dilation[0] * s_h, dilation[1] * s_w, s_c),
        writeable=False,
    )
    # (G, kh·kw·C/G + 1, C_out/G), rows ordered like the window (a, b, c), then the bias
    wmat = np.zeros((groups, k + 1, cog), dtype=x.dtype)
    wmat[:, :k] = w.reshape(groups, cog, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(groups, k, cog)
    if bias is not None:
        wmat[:, k] = bias.reshape(groups, cog)
    step = max(1, _IM2COL_BUDGET // max(c * kh * kw * pixels, 1))
    cols_buf = _scratch("cols", groups * min(step, n) * pixels * (k + 1), x.dtype)
    full = np.empty((n * pixels, groups, cog), dtype=x.dtype)  # = (N, Ho, Wo, C_out)
    for n0 in range(0, n, step):
        m = min(n, n0 + step) - n0
        cols = cols_buf[: groups * m * pixels * (k + 1)].reshape(groups, m * pixels, k + 1)
        np.copyto(cols[:, :, :k].reshape(groups, m, ho, wo, kh, kw, cg), view[:, n0 : n0 + m])
        cols[:, :, k] = 1
        np.matmul(cols, wmat, out=full[n0 * pixels : (n0 + m) * pixels].transpose(1, 0, 2))
    return full.reshape(n, ho, wo, c_out).transpose(0, 3, 1, 2)


def conv_transpose2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> NDArray[Any]:
    """Transposed convolution (the gradient of :func:`conv2d` with respect to its input).

    ``weight`` is C_in×(C_out/groups)×kh×kw, as in ``torch.nn.ConvTranspose2d``. Each
    input value scatters ``value · kernel`` into the output at stride ``stride``;
    ``padding`` removes rows/columns from both borders and ``output_padding`` adds
    them back at the bottom/right. The argument order matches
    ``torch.nn.functional.conv_transpose2d``.

    >>> conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """
    xa, wa = np.asarray(x), np.asarray(weight)
    ba = None if bias is None else np.asarray(bias)
    dtype = _float_dtype(xa, wa, ba)
    xb, unbatched = _batched(xa, "conv_transpose2d")
    groups = _check_conv_channels("conv_transpose2d", xb.shape, wa.shape, groups, transposed=True)
    c_in, cog, kh, kw = wa.shape
    c_out = cog * groups
    _check_bias(ba, c_out, wa.shape)
    plan = plan_transpose(xb.shape[2:], (kh, kw), stride, padding, output_padding, dilation)
    _check_spatial(xb, "conv_transpose2d")
    n, _, h, w_in = xb.shape
    (sh, sw), (dh, dw), (ph, pw), (ho, wo) = plan.stride, plan.dilation, plan.padding, plan.out
    cig = c_in // groups
    xg = xb.astype(dtype, copy=False).reshape(n, groups, cig, h * w_in)
    # (G, C_out/G·kh·kw, C_in/G): every input value times every kernel tap, one product
    wt = wa.astype(dtype, copy=False).reshape(groups, cig, cog * kh * kw).transpose(0, 2, 1)
    taps = np.matmul(wt, xg).reshape(n, c_out, kh, kw, h, w_in)
    full_h = max((h - 1) * sh + dh * (kh - 1) + 1, ph + ho)
    full_w = max((w_in - 1) * sw + dw * (kw - 1) + 1, pw + wo)
    full = np.zeros((n, c_out, full_h, full_w), dtype=dtype)
    for a in range(kh):
        for b in range(kw):
            r0, c0 = a * dh, b * dw
            full[:, :, r0 : r0 + (h - 1) * sh + 1 : sh, c0 : c0 + (w_in - 1) * sw + 1 : sw] += taps[:, :, a, b]
    out = full[:, :, ph : ph + ho, pw : pw + wo].copy()
    if ba is not None:
        out += ba.astype(dtype, copy=False)[:, None, None]
    return out[0] if unbatched else out


def _check_pool_input(x: NDArray[Any], op: str) -> tuple[NDArray[Any], bool]:
    xb, unbatched = _batched(x, op)
    if min(xb.shape[1:]) == 0:
        raise ConfigError(
            f"input of shape {tuple(x.shape)}: {op} needs at least one channel and a non-empty image "
            "(only the batch may be empty)"
        )
    return xb, unbatched


def _window_slices(
    offset: tuple[int, int], stride: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[slice, slice]:
    (r0, c0), (sh, sw), (ho, wo) = offset, stride, out_hw
    return slice(r0, r0 + (ho - 1) * sh + 1, sh), slice(c0, c0 + (wo - 1) * sw + 1, sw)


@overload
def max_pool2d(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair | Sequence[int] | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
) -> NDArray[Any]: ...
@overload
def max_pool2d(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair | Sequence[int] | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    *,
    return_indices: Literal[True],
) -> tuple[NDArray[Any], NDArray[np.int64]]: ...
@overload
def max_pool2d(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair | Sequence[int] | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> NDArray[Any] | tuple[NDArray[Any], NDArray[np.int64]]: ...
def max_pool2d(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair | Sequence[int] | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> NDArray[Any] | tuple[NDArray[Any], NDArray[np.int64]]:
    """Max pooling with PyTorch's semantics (padding never wins; NaN propagates).

    ``stride`` defaults to ``kernel_size``. With ``return_indices`` also returns the
    flat index ``row*W + col`` of each maximum in its input plane (the first maximum
    in scan order), like ``torch.nn.functional.max_pool2d``. A dilated window whose
    taps all fall in the padding gives ``-inf`` and, as in PyTorch, an index past the
    end of the plane (PyTorch's backward pass then writes out of bounds).

    >>> max_pool2d(np.arange(16.0).reshape(1, 4, 4), 2)[0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    xa = np.asarray(x)
    if not (np.issubdtype(xa.dtype, np.number) or xa.dtype == np.bool_) or np.issubdtype(xa.dtype, np.complexfloating):
        raise ConfigError(f"dtype {xa.dtype}: max pooling works on real numbers only")
    xb, unbatched = _check_pool_input(xa, "max_pool2d")
    plan = plan_pool(xb.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    n, c, h, w = xb.shape
    (kh, kw), (dh, dw), (ph, pw), (eh, ew) = plan.kernel_size, plan.dilation, plan.padding, plan.extra
    if np.issubdtype(xb.dtype, np.floating):
        low: Any = -np.inf
    elif xb.dtype == np.bool_:
        low = False
    else:
        low = np.iinfo(xb.dtype).min
    xp = pad2d(xb, (ph, ph + eh, pw, pw + ew), "constant", low)
    out = np.full((n, c, *plan.out), low, dtype=xb.dtype)
    idx = None
    if return_indices:
        # first in-bounds tap of every window (PyTorch's initial index)
        rows = np.arange(plan.out[0]) * plan.stride[0] - ph
        cols = np.arange(plan.out[1]) * plan.stride[1] - pw
        rows = np.where(rows < 0, rows + (-rows + dh - 1) // dh * dh, rows)
        cols = np.where(cols < 0, cols + (-cols + dw - 1) // dw * dw, cols)
        idx = np.broadcast_to(rows[:, None] * w + cols[None, :], out.shape).astype(np.int64)
    for a in range(kh):
        for b in range(kw):
            rs, cs = _window_slices((a * dh, b * dw), plan.stride, plan.out)
            v = xp[:, :, rs, cs]
            if idx is None:
                np.maximum(out, v, out=out)
                continue
            better = v > out
            if np.issubdtype(v.dtype, np.floating):
                better |= np.isnan(v)
            row = np.arange(plan.out[0]) * plan.stride[0] - ph + a * dh
            col = np.arange(plan.out[1]) * plan.stride[1] - pw + b * dw
            inside = ((row >= 0) & (row < h))[:, None] & ((col >= 0) & (col < w))[None, :]
            better &= inside
            out = np.where(better, v, out)
            idx = np.where(better, (row[:, None] * w + col[None, :]), idx)
    if unbatched:
        out = out[0]
        idx = None if idx is None else idx[0]
    if idx is None:
        return out
    return out, idx


def avg_pool2d(
    x: ArrayLike,
    kernel_size: IntOrPair,
    stride: IntOrPair | Sequence[int] | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> NDArray[Any]:
    """Average pooling with PyTorch's semantics.

    Each window's sum is divided by ``divisor_override`` if given; otherwise by the
    window's size clipped to the padded input (``count_include_pad=True``) or by the
    number of real input values under it (``count_include_pad=False``).

    >>> avg_pool2d(np.ones((1, 3, 3)), 2, padding=1, count_include_pad=True)[0]
    array([[0.25, 0.5 ],
           [0.5 , 1.  ]])
    """
    xa = np.asarray(x)
    dtype = _float_dtype(xa)
    xb, unbatched = _check_pool_input(xa, "avg_pool2d")
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer)):
            raise ConfigError(f"divisor_override={divisor_override!r}: expected an int")
        if divisor_override == 0:
            raise ConfigError("divisor_override=0: the divisor must not be zero")
    plan = plan_pool(xb.shape[2:], kernel_size, stride, padding, 1, ceil_mode)
    n, c, h, w = xb.shape
    (kh, kw), (ph, pw), (eh, ew), (sh, sw) = plan.kernel_size, plan.padding, plan.extra, plan.stride
    xp = pad2d(xb.astype(dtype, copy=False), (ph, ph + eh, pw, pw + ew), "zeros")
    total = np.zeros((n, c, *plan.out), dtype=dtype)
    for a in range(kh):
        for b in range(kw):
            rs, cs = _window_slices((a, b), plan.stride, plan.out)
            total += xp[:, :, rs, cs]
    if divisor_override is not None:
        total /= dtype.type(divisor_override)
    else:

        def counts(n_out: int, size: int, k: int, s: int, p: int) -> tuple[NDArray[Any], NDArray[Any]]:
            start = np.arange(n_out) * s - p
            end = np.minimum(start + k, size + p)
            pooled = end - start
            real = np.minimum(end, size) - np.maximum(start, 0)
            return pooled, real

        pool_h, real_h = counts(plan.out[0], h, kh, sh, ph)
        pool_w, real_w = counts(plan.out[1], w, kw, sw, pw)
        div = (pool_h[:, None] * pool_w[None, :]) if count_include_pad else (real_h[:, None] * real_w[None, :])
        total /= div.astype(dtype)
    return total[0] if unbatched else total
