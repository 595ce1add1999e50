"""Output-size and receptive-field arithmetic for convolution and pooling.

Everything here is plain integer arithmetic on the layer hyperparameters; it is the
single place that decides which configurations are valid, so the NumPy operations in
:mod:`convlens.conv.ops` and :func:`output_size` refuse exactly the same cases, and
exactly the cases PyTorch refuses.

Conventions (per spatial axis, ``k`` kernel size, ``s`` stride, ``p`` padding on each
side, ``d`` dilation):

* convolution and pooling: ``out = floor((n + 2p - d(k-1) - 1) / s) + 1``;
  pooling with ``ceil_mode`` rounds up, but a last window that would start in the
  right padding is dropped (PyTorch's rule);
* transposed convolution: ``out = (n-1)s - 2p + d(k-1) + output_padding + 1``.

Receptive fields use a :class:`Geometry` per tensor: the *jump* (distance in input
pixels between neighbouring units) and the inclusive input rows/columns ``lo .. hi``
seen by unit ``(0, 0)``. Unit ``(i, j)`` sees rows ``lo[0] + i*jump[0] ..
hi[0] + i*jump[0]`` and columns ``lo[1] + j*jump[1] .. hi[1] + j*jump[1]`` (not
clipped to the image; negative or too large indices lie in the padding).

>>> output_size(28, 5, padding=2)
(28, 28)
>>> g = Geometry.identity().conv(5, padding=2).conv(2, stride=2).conv(5, padding=2)
>>> g.rf, g.jump, g.lo
((14, 14), (2, 2), (-6, -6))
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, SupportsIndex, TypeGuard

from convlens._tables import RowTable
from convlens.errors import ConfigError, positive_int, unknown_name

Pair = tuple[int, int]
IntOrPair = int | Sequence[int]
Kind = Literal["conv", "pool", "transpose"]
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


# --------------------------------------------------------------------------- params
def _is_int(v: object) -> TypeGuard[SupportsIndex]:
    """An int or a NumPy integer; bool is refused like in PyTorch."""
    if isinstance(v, int):  # fast path
        return not isinstance(v, bool)
    return isinstance(v, SupportsIndex) and not isinstance(v, float)


def count(name: str, value: object) -> int:
    """:func:`convlens.errors.positive_int` that also takes NumPy integers (``np.int64(3)``),
    as every integer parameter of :mod:`convlens.conv` does.

    >>> import numpy as np
    >>> count("groups", np.int64(2))
    2
    >>> count("groups", 0)
    Traceback (most recent call last):
    ...
    convlens.errors.ConfigError: groups must be a positive integer, got 0
    """
    return positive_int(name, operator.index(value) if _is_int(value) else value)


def pair(value: IntOrPair, name: str) -> Pair:
    """``value`` as an (height, width) pair; an int or a 1-sequence is used twice.

    >>> pair(3, "stride"), pair((2,), "stride"), pair([1, 2], "stride")
    ((3, 3), (2, 2), (1, 2))
    """
    if _is_int(value):
        v = operator.index(value)
        return _bounded((v, v), name)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{name}={value!r}: expected an int or a pair of ints")
    items = list(value)
    if len(items) not in (1, 2) or not all(_is_int(v) for v in items):
        raise ConfigError(f"{name}={value!r}: expected a single int or a pair of ints (height, width)")
    if len(items) == 1:
        return _bounded((int(items[0]), int(items[0])), name)
    return _bounded((int(items[0]), int(items[1])), name)


#: The largest size, stride, padding or dilation (NumPy and PyTorch index with 64-bit
#: integers, and byte offsets multiply these; 2**31 - 1 leaves room for that).
MAX_PARAM = 2**31 - 1


def _bounded(value: Pair, name: str) -> Pair:
    if max(abs(value[0]), abs(value[1])) > MAX_PARAM:
        raise ConfigError(f"{name}={value}: larger than any image or layer (at most {MAX_PARAM:,}); give a smaller value")
    return value


def _positive(value: Pair, name: str, what: str) -> None:
    if min(value) < 1:
        raise ConfigError(f"{name}={value}: {what} must be at least 1 in both directions")


def effective_kernel(kernel_size: Pair, dilation: Pair) -> Pair:
    """Span of a dilated kernel: ``d*(k-1) + 1`` per axis."""
    return (dilation[0] * (kernel_size[0] - 1) + 1, dilation[1] * (kernel_size[1] - 1) + 1)


@dataclass(frozen=True)
class ConvPlan:
    """A validated convolution geometry for one input size.

    ``pad`` is (top, bottom, left, right); bottom/right may exceed top/left for
    ``padding='same'`` with an even effective kernel. Negative entries crop (only
    possible with a non-zero ``padding_mode``, as in PyTorch).
    """

    kernel_size: Pair
    stride: Pair
    dilation: Pair
    pad: tuple[int, int, int, int]
    out: Pair


def plan_conv(
    input_size: Pair,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1,
    padding_mode: str = "zeros",
) -> ConvPlan:
    """Validate a convolution's hyperparameters for an input of ``input_size`` (H, W).

    Raises :class:`~convlens.errors.ConfigError` naming the parameter and the rule, in
    the cases where ``torch.nn.Conv2d`` refuses.
    """
    if padding_mode not in PADDING_MODES:
        raise ConfigError(unknown_name("padding_mode", str(padding_mode), PADDING_MODES))
    k = pair(kernel_size, "kernel_size")
    s = pair(stride, "stride")
    d = pair(dilation, "dilation")
    _positive(s, "stride", "the stride")
    _positive(d, "dilation", "the dilation")
    _positive(k, "kernel_size", "the kernel size")
    eff = effective_kernel(k, d)
    if isinstance(padding, str):
        if padding == "valid":
            pad = (0, 0, 0, 0)
        elif padding == "same":
            if s != (1, 1):
                raise ConfigError(
                    f"padding='same' with stride={s}: 'same' needs stride 1; "
                    "give the padding as numbers for a strided convolution"
                )
            th, tw = eff[0] - 1, eff[1] - 1
            pad = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        else:
            raise ConfigError(f"padding={padding!r}: the only padding strings are 'valid' and 'same'")
    else:
        p = pair(padding, "padding")
        if min(p) < 0 and padding_mode == "zeros":
            raise ConfigError(f"padding={p}: padding must be ≥ 0 (negative padding is only allowed as cropping with a non-zero padding_mode)")
        pad = (p[0], p[0], p[1], p[1])
    h, w = input_size
    if padding_mode == "reflect":
        for size, before, after, axis in ((h, pad[0], pad[1], "height"), (w, pad[2], pad[3], "width")):
            if max(before, after) >= size:
                raise ConfigError(
                    f"padding={max(before, after)} with padding_mode='reflect': reflect padding "
                    f"must be smaller than the input {axis} ({size})"
                )
    if padding_mode == "circular":
        for size, before, after, axis in ((h, pad[0], pad[1], "height"), (w, pad[2], pad[3], "width")):
            if max(before, after) > size:
                raise ConfigError(
                    f"padding={max(before, after)} with padding_mode='circular': circular padding "
                    f"must not exceed the input {axis} ({size}) (it would wrap around more than once)"
                )
    hp, wp = h + pad[0] + pad[1], w + pad[2] + pad[3]
    if eff[0] > hp or eff[1] > wp:
        raise ConfigError(
            f"kernel_size={k}, dilation={d}: the kernel spans {eff[0]}×{eff[1]} pixels but the "
            f"padded input is only {hp}×{wp}; use a smaller kernel or dilation, or more padding"
        )
    out = ((hp - eff[0]) // s[0] + 1, (wp - eff[1]) // s[1] + 1)
    return ConvPlan(kernel_size=k, stride=s, dilation=d, pad=pad, out=out)


@dataclass(frozen=True)
class PoolPlan:
    """A validated pooling geometry. ``extra`` is the padding added beyond ``pad`` at
    the bottom/right so that ``ceil_mode`` windows fit."""

    kernel_size: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    out: Pair
    extra: Pair


def _pool_out(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def plan_pool(
    input_size: Pair,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
) -> PoolPlan:
    """Validate a pooling window for an input of ``input_size`` (H, W), as PyTorch does.

    ``stride=None`` (or an empty sequence) means ``stride = kernel_size``.
    """
    k = pair(kernel_size, "kernel_size")
    if stride is None or (isinstance(stride, Sequence) and not isinstance(stride, str) and len(stride) == 0):
        s = k
    else:
        s = pair(stride, "stride")
    p = pair(padding, "padding")
    d = pair(dilation, "dilation")
    _positive(s, "stride", "the stride")
    _positive(k, "kernel_size", "the kernel size")
    _positive(d, "dilation", "the dilation")
    if min(p) < 0:
        raise ConfigError(f"padding={p}: padding must be ≥ 0")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ConfigError(
            f"padding={p} with kernel_size={k}: pooling padding must be at most half the "
            "kernel size (padding ≤ kernel_size // 2)"
        )
    h, w = input_size
    out = (
        _pool_out(h, k[0], s[0], p[0], d[0], ceil_mode),
        _pool_out(w, k[1], s[1], p[1], d[1], ceil_mode),
    )
    if min(out) < 1:
        raise ConfigError(
            f"kernel_size={k}, dilation={d}, padding={p}: the pooling output for a {h}×{w} input "
            f"would be {out[0]}×{out[1]}; use a smaller window or more padding"
        )
    eff = effective_kernel(k, d)
    need = ((out[0] - 1) * s[0] + eff[0], (out[1] - 1) * s[1] + eff[1])
    extra = (max(0, need[0] - (h + 2 * p[0])), max(0, need[1] - (w + 2 * p[1])))
    return PoolPlan(kernel_size=k, stride=s, padding=p, dilation=d, out=out, extra=extra)


@dataclass(frozen=True)
class TransposePlan:
    """A validated transposed-convolution geometry."""

    kernel_size: Pair
    stride: Pair
    padding: Pair
    output_padding: Pair
    dilation: Pair
    out: Pair


def plan_transpose(
    input_size: Pair,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> TransposePlan:
    """Validate a transposed convolution for an input of ``input_size`` (H, W)."""
    if isinstance(padding, str):
        raise ConfigError(f"padding={padding!r}: conv_transpose2d takes the padding as numbers, not a string")
    k = pair(kernel_size, "kernel_size")
    s = pair(stride, "stride")
    p = pair(padding, "padding")
    op = pair(output_padding, "output_padding")
    d = pair(dilation, "dilation")
    _positive(s, "stride", "the stride")
    _positive(d, "dilation", "the dilation")
    _positive(k, "kernel_size", "the kernel size")
    if min(p) < 0:
        raise ConfigError(f"padding={p}: padding must be ≥ 0")
    if min(op) < 0:
        raise ConfigError(f"output_padding={op}: output_padding must be ≥ 0")
    for axis in (0, 1):
        if op[axis] >= max(s[axis], d[axis]):
            raise ConfigError(
                f"output_padding={op} with stride={s}, dilation={d}: output_padding must be "
                "smaller than the stride or the dilation in each direction"
            )
    h, w = input_size
    out = (
        (h - 1) * s[0] - 2 * p[0] + d[0] * (k[0] - 1) + op[0] + 1,
        (w - 1) * s[1] - 2 * p[1] + d[1] * (k[1] - 1) + op[1] + 1,
    )
    if min(out) < 1:
        raise ConfigError(
            f"padding={p}: the transposed convolution of a {h}×{w} input would be "
            f"{out[0]}×{out[1]}; use less padding"
        )
    return TransposePlan(kernel_size=k, stride=s, padding=p, output_padding=op, dilation=d, out=out)


def output_size(
    input_size: IntOrPair,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = 1,
    padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1,
    *,
    kind: Kind = "conv",
    ceil_mode: bool = False,
    output_padding: IntOrPair = 0,
    padding_mode: str = "zeros",
) -> Pair:
    """Spatial output size ``(H_out, W_out)`` of one layer, exactly as PyTorch computes it.

    ``kind`` is ``"conv"`` (``nn.Conv2d``; ``padding`` may be ``'valid'``/``'same'``),
    ``"pool"`` (``nn.MaxPool2d``/``nn.AvgPool2d``; ``stride=None`` means the kernel
    size; ``ceil_mode`` applies; use ``dilation=1`` for average pooling) or
    ``"transpose"`` (``nn.ConvTranspose2d``; ``output_padding`` applies). Integers
    are used for both directions. Impossible configurations raise
    :class:`~convlens.errors.ConfigError`.

    >>> output_size(28, 5, padding=2)
    (28, 28)
    >>> output_size((28, 28), 2, stride=None, kind="pool")
    (14, 14)
    >>> output_size(7, 3, stride=2, padding=1, output_padding=1, kind="transpose")
    (14, 14)
    """
    size = pair(input_size, "input_size")
    if min(size) < 1:
        raise ConfigError(f"input_size={size}: the input must be at least 1×1")
    if kind == "conv":
        if stride is None:
            raise ConfigError("stride=None: only pooling takes the kernel size as the default stride")
        return plan_conv(size, kernel_size, stride, padding, dilation, padding_mode).out
    if kind == "pool":
        if isinstance(padding, str):
            raise ConfigError(f"padding={padding!r}: pooling takes the padding as numbers, not a string")
        return plan_pool(size, kernel_size, stride, padding, dilation, ceil_mode).out
    if kind == "transpose":
        if stride is None:
            raise ConfigError("stride=None: only pooling takes the kernel size as the default stride")
        if isinstance(padding, str):
            raise ConfigError(f"padding={padding!r}: conv_transpose2d takes the padding as numbers, not a string")
        return plan_transpose(size, kernel_size, stride, padding, output_padding, dilation).out
    raise ConfigError(unknown_name("kind", str(kind), ("conv", "pool", "transpose")))


# ----------------------------------------------------------------- receptive fields
Span = tuple[int, int]
Spans = tuple[Span, ...]
EMPTY: Span = (0, -1)


def _hull(spans: Iterable[Span]) -> Span:
    """The smallest span holding every non-empty one of ``spans`` (:data:`EMPTY` if none)."""
    seen = [s for s in spans if s[0] <= s[1]]
    return (min(s[0] for s in seen), max(s[1] for s in seen)) if seen else EMPTY


def _gather(spans: Spans, sources: Iterable[Iterable[int]]) -> Spans:
    """For each output unit, the hull of the spans of the input units it reads; indices
    outside ``0 .. len(spans) - 1`` are padding and read no pixel."""
    n = len(spans)
    return tuple(_hull(spans[i] for i in taps if 0 <= i < n) for taps in sources)


def _padded_source(q: int, n: int, mode: str) -> int:
    """The unit of an ``n``-long map that position ``q`` of the padded map copies (-1: a constant)."""
    if 0 <= q < n or mode in ("constant", "zeros"):
        return q
    if mode == "replicate":
        return min(max(q, 0), n - 1)
    if mode == "circular":
        return q % n
    period = 2 * (n - 1)  # reflect: ... 2 1 | 0 1 2 ... n-1 | n-2 ...
    m = q % period if period else 0
    return period - m if m >= n else m


@dataclass(frozen=True)
class Geometry:
    """Where the units of one feature map look in the input image.

    ``jump`` is the distance in input pixels between neighbouring units; unit
    ``(i, j)`` sees input rows ``lo[0] + i*jump[0] .. hi[0] + i*jump[0]`` and columns
    ``lo[1] + j*jump[1] .. hi[1] + j*jump[1]`` (inclusive, unclipped): the *nominal*
    window, the same for every unit, whose size and jump are the published ones. A
    jump of ``(0, 0)`` means every unit sees the same region; :meth:`whole` uses it for
    maps that depend on the entire image (after global pooling or flattening).

    ``units``, when known, is the true extent of every unit, per axis: ``units[0][i]``
    the first and last input row that unit row ``i`` depends on, ``units[1][j]`` the
    columns (:data:`EMPTY` = ``(0, -1)`` for a unit that sees only padding). It differs
    from the nominal window at the border: taps that land in an intermediate map's
    padding read no pixel, and a window that reaches past the pixels an earlier layer
    read (a floor in the output size dropped them) does not see them either. It is
    tracked when every step knows its map sizes (:meth:`identity` with a ``size``, then
    ``out_size`` at every step), and :meth:`clipped` uses it.

    ``exact`` is False when the region is a safe over-estimate rather than exact.
    """

    jump: Pair = (1, 1)
    lo: Pair = (0, 0)
    hi: Pair = (0, 0)
    exact: bool = True
    units: tuple[Spans, Spans] | None = field(default=None, repr=False)

    @classmethod
    def identity(cls, size: Pair | None = None) -> Geometry:
        """The input itself: every pixel sees itself. With ``size`` (H, W), the true
        extent of every unit is tracked from here (see ``units``)."""
        if size is None:
            return cls()
        return cls(units=(tuple((i, i) for i in range(size[0])), tuple((j, j) for j in range(size[1]))))

    @classmethod
    def whole(cls, input_size: Pair, exact: bool = True) -> Geometry:
        """Every unit sees the entire ``input_size`` image."""
        return cls(jump=(0, 0), lo=(0, 0), hi=(input_size[0] - 1, input_size[1] - 1), exact=exact)

    @property
    def is_global(self) -> bool:
        return self.jump == (0, 0)

    @property
    def rf(self) -> Pair:
        """Receptive-field size (rows, columns) of one unit."""
        return (self.hi[0] - self.lo[0] + 1, self.hi[1] - self.lo[1] + 1)

    @property
    def start(self) -> tuple[float, float]:
        """Centre of unit (0, 0)'s receptive field, in input pixel coordinates."""
        return ((self.lo[0] + self.hi[0]) / 2, (self.lo[1] + self.hi[1]) / 2)

    def region(self, i: int, j: int) -> tuple[Pair, Pair]:
        """Inclusive input ``((row_lo, row_hi), (col_lo, col_hi))`` of unit (i, j)'s
        nominal window (unclipped; it may reach into the padding)."""
        return (
            (self.lo[0] + i * self.jump[0], self.hi[0] + i * self.jump[0]),
            (self.lo[1] + j * self.jump[1], self.hi[1] + j * self.jump[1]),
        )

    def clipped(self, i: int, j: int, input_size: Pair) -> tuple[Pair, Pair]:
        """The input pixels unit (i, j) sees, inside an image of ``input_size``: its true
        extent where ``units`` is known (for a unit of the map), otherwise :meth:`region`
        clipped to the image. A span with ``lo > hi`` is empty."""
        (r0, r1), (c0, c1) = self.region(i, j)
        if self.units is not None and 0 <= i < len(self.units[0]) and 0 <= j < len(self.units[1]):
            (r0, r1), (c0, c1) = self.units[0][i], self.units[1][j]
        return (
            (max(r0, 0), min(r1, input_size[0] - 1)),
            (max(c0, 0), min(c1, input_size[1] - 1)),
        )

    def _units_from(self, out_size: Pair | None, sources: Callable[[int, int, int], Iterable[int]]) -> tuple[Spans, Spans] | None:
        """``units`` of the next map: output unit ``o`` on ``axis`` reads the input units
        ``sources(axis, o, n_in)``."""
        if self.units is None or out_size is None:
            return None
        rows, cols = self.units
        return (
            _gather(rows, (sources(0, o, len(rows)) for o in range(out_size[0]))),
            _gather(cols, (sources(1, o, len(cols)) for o in range(out_size[1]))),
        )

    def conv(
        self,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        *,
        out_size: Pair | None = None,
    ) -> Geometry:
        """The geometry after a convolution or pooling window.

        ``padding`` is the padding before the first row/column (top, left). Maps
        ``(j, lo, hi)`` to ``(j*s, lo - j*p, hi + j*(d*(k-1) - p))`` per axis. With the
        output's ``out_size`` (H, W), ``units`` follows: output unit ``o`` reads input units
        ``o*s - p + t*d`` for ``t = 0 .. k-1``, those inside the input map only.
        """
        k, s, p, d = (pair(kernel_size, "kernel_size"), pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation"))
        j = self.jump
        return Geometry(
            jump=(j[0] * s[0], j[1] * s[1]),
            lo=(self.lo[0] - j[0] * p[0], self.lo[1] - j[1] * p[1]),
            hi=(self.hi[0] + j[0] * (d[0] * (k[0] - 1) - p[0]), self.hi[1] + j[1] * (d[1] * (k[1] - 1) - p[1])),
            exact=self.exact,
            units=self._units_from(out_size, lambda a, o, n: range(o * s[a] - p[a], o * s[a] - p[a] + d[a] * (k[a] - 1) + 1, d[a])),
        )

    def shift(self, top: int, left: int, *, out_size: Pair | None = None, mode: str = "constant") -> Geometry:
        """The geometry after padding (or, for negative values, cropping) the map.

        With the padded map's ``out_size``, ``units`` follows: ``mode`` is
        ``torch.nn.functional.pad``'s (``constant`` pads see no pixel; ``reflect``,
        ``replicate`` and ``circular`` pads see the units they copy).
        """
        before = (top, left)
        return replace(
            self,
            lo=(self.lo[0] - self.jump[0] * top, self.lo[1] - self.jump[1] * left),
            hi=(self.hi[0] - self.jump[0] * top, self.hi[1] - self.jump[1] * left),
            units=self._units_from(out_size, lambda a, o, n: (_padded_source(o - before[a], n, mode),)),
        )

    def transpose(
        self,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        input_size: Pair | None = None,
        *,
        out_size: Pair | None = None,
    ) -> Geometry:
        """The geometry after a transposed convolution.

        Exact for stride 1 (output unit ``o`` reads input units ``o + p - d(k-1) .. o + p``,
        every ``d``-th, those inside the input map; ``units`` follows with ``out_size``).
        A larger stride makes the jump fractional; the result is then the whole
        image (``exact=False``, a safe over-estimate), which needs ``input_size``.
        """
        k, s, p, d = (pair(kernel_size, "kernel_size"), pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation"))
        if s != (1, 1) or self.is_global:
            if input_size is None:
                raise ConfigError("a strided transposed convolution needs input_size for its (whole-image) receptive field")
            return Geometry.whole(input_size, exact=self.exact and self.is_global)
        j = self.jump
        return Geometry(
            jump=j,
            lo=(self.lo[0] + j[0] * (p[0] - d[0] * (k[0] - 1)), self.lo[1] + j[1] * (p[1] - d[1] * (k[1] - 1))),
            hi=(self.hi[0] + j[0] * p[0], self.hi[1] + j[1] * p[1]),
            exact=self.exact,
            units=self._units_from(out_size, lambda a, o, n: (o + p[a] - t * d[a] for t in range(k[a]))),
        )

    def union(self, other: Geometry, input_size: Pair | None = None) -> Geometry:
        """Geometry of a map that combines two maps unit by unit (residual add, concat).

        With equal jumps: the smallest ``lo`` and largest ``hi``, and unit by unit the
        hull of the two ``units``. Maps with different jumps do not line up unit by unit;
        the result is then the whole image (an over-estimate unless one of them already
        is global), which needs ``input_size``. When only one side tracks ``units`` (or
        their map sizes differ) the result keeps the nominal window, marked inexact.
        """
        if self.jump == other.jump:
            a, b = self.units, other.units
            units = None
            if a is not None and b is not None and (len(a[0]), len(a[1])) == (len(b[0]), len(b[1])):
                units = (
                    tuple(_hull(pq) for pq in zip(a[0], b[0], strict=True)),
                    tuple(_hull(pq) for pq in zip(a[1], b[1], strict=True)),
                )
            return Geometry(
                jump=self.jump,
                lo=(min(self.lo[0], other.lo[0]), min(self.lo[1], other.lo[1])),
                hi=(max(self.hi[0], other.hi[0]), max(self.hi[1], other.hi[1])),
                exact=self.exact and other.exact and (units is not None or (a is None and b is None)),
                units=units,
            )
        if input_size is None:
            raise ConfigError(f"cannot combine maps with jumps {self.jump} and {other.jump} without input_size")
        exact = (self.is_global or other.is_global) and self.exact and other.exact
        return Geometry.whole(input_size, exact=exact)


# ----------------------------------------------------------------- tables of layers
def _fmt_pair(v: tuple[Any, Any]) -> str:
    def one(x: Any) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    return one(v[0]) if v[0] == v[1] else f"{one(v[0])}×{one(v[1])}"


@dataclass
class LayerField:
    """One row of a receptive-field table.

    ``output_shape`` excludes the batch dimension. ``rf``, ``jump``, ``start``,
    ``lo`` and ``hi`` are (height, width) in input pixels as in :class:`Geometry`.
    ``params`` counts the layer's own parameters and ``macs`` its multiply-accumulates
    for one input sample. ``exact`` and ``units`` (the true extent of every unit, used by
    ``geometry.clipped``) are :class:`Geometry`'s.
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    rf: Pair
    jump: Pair
    start: tuple[float, float]
    lo: Pair
    hi: Pair
    params: int = 0
    macs: int = 0
    exact: bool = True
    units: tuple[Spans, Spans] | None = field(default=None, repr=False)

    @classmethod
    def from_geometry(
        cls,
        name: str,
        type: str,
        output_shape: tuple[int, ...],
        geometry: Geometry,
        params: int = 0,
        macs: int = 0,
    ) -> LayerField:
        return cls(
            name=name,
            type=type,
            output_shape=tuple(int(v) for v in output_shape),
            rf=geometry.rf,
            jump=geometry.jump,
            start=geometry.start,
            lo=geometry.lo,
            hi=geometry.hi,
            params=int(params),
            macs=int(macs),
            exact=geometry.exact,
            units=geometry.units,
        )

    @property
    def geometry(self) -> Geometry:
        return Geometry(jump=self.jump, lo=self.lo, hi=self.hi, exact=self.exact, units=self.units)

    def region(self, i: int, j: int) -> tuple[Pair, Pair]:
        """Inclusive input rows and columns seen by output unit (i, j) (unclipped)."""
        return self.geometry.region(i, j)


COLUMNS = ("layer", "type", "output shape", "rf", "jump", "start", "params", "MACs")


@dataclass
class FieldTable(RowTable[LayerField]):
    """Rows of :class:`LayerField`, in the order the layers ran.

    Index by position or by layer name (``table["conv2"]``). ``str(table)`` is an
    aligned text table; :meth:`cells` gives the same strings for other renderers.
    """

    rows: list[LayerField] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()
    total_params: int | None = None
    total_macs: int | None = None

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    def cells(self) -> list[list[str]]:
        """One list of strings per row, matching :data:`COLUMNS`."""
        out = []
        for r in self.rows:
            shape = "×".join(str(v) for v in r.output_shape)
            rf = _fmt_pair(r.rf) + ("" if r.exact else " (≤)")
            jump = "global" if r.jump == (0, 0) else _fmt_pair(r.jump)
            out.append([r.name, r.type, shape, rf, jump, _fmt_pair(r.start), f"{r.params:,}", f"{r.macs:,}"])
        return out

    def __str__(self) -> str:
        table = [list(COLUMNS), *self.cells()]
        widths = [max(len(row[c]) for row in table) for c in range(len(COLUMNS))]
        lines = []
        for n, row in enumerate(table):
            lines.append("  ".join(cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        shape = "×".join(str(v) for v in self.input_shape)
        footer = []
        if self.total_params is not None:
            footer.append(f"{self.total_params:,} parameters")
        if self.total_macs is not None:
            footer.append(f"{self.total_macs:,} MACs per sample")
        text = (f"input {shape}\n" if shape else "") + "\n".join(lines)
        return text + ("\n" + ", ".join(footer) if footer else "")


@dataclass(frozen=True)
class LayerSpec:
    """A layer of a plain stack for :func:`receptive_field_stack`.

    ``kind`` is ``"conv"``, ``"maxpool"``, ``"avgpool"`` or ``"transpose"``. Channel
    counts are optional and only used for parameter and MAC counts.
    """

    kind: str
    kernel_size: IntOrPair
    stride: IntOrPair | None = 1
    padding: IntOrPair | str = 0
    dilation: IntOrPair = 1
    in_channels: int | None = None
    out_channels: int | None = None
    groups: int = 1
    bias: bool = True
    ceil_mode: bool = False
    output_padding: IntOrPair = 0
    name: str = ""


_SPEC_KINDS = ("conv", "maxpool", "avgpool", "transpose")
_KEYS = {
    "k": "kernel_size", "kernel": "kernel_size", "kernel_size": "kernel_size",
    "s": "stride", "stride": "stride",
    "p": "padding", "pad": "padding", "padding": "padding",
    "d": "dilation", "dil": "dilation", "dilation": "dilation",
    "op": "output_padding", "output_padding": "output_padding",
    "mode": "padding_mode", "padding_mode": "padding_mode",
    "ceil": "ceil_mode", "ceil_mode": "ceil_mode",
    "in": "in_channels", "in_channels": "in_channels",
    "out": "out_channels", "out_channels": "out_channels",
    "g": "groups", "groups": "groups",
}


def _value(key: str, raw: str) -> Any:
    raw = raw.strip()
    if key == "padding_mode":
        return raw
    if key == "ceil_mode":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"ceil={raw!r}: use ceil=1 or ceil=0")
        return raw.lower() in ("1", "true", "yes")
    if key == "padding" and raw in ("same", "valid"):
        return raw
    try:
        parts = [int(v) for v in raw.lower().replace("×", "x").split("x")]
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: expected a whole number or HxW, e.g. 3 or 3x1") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and key not in ("in_channels", "out_channels", "groups"):
        return (parts[0], parts[1])
    raise ConfigError(f"{key}={raw!r}: expected a whole number or HxW, e.g. 3 or 3x1")


def parse_params(text: str) -> dict[str, Any]:
    """Parse ``"k=5,s=2,p=1,d=1"`` into keyword arguments (PyTorch's names).

    Short keys: ``k`` kernel_size, ``s`` stride, ``p`` padding (a number, ``HxW``,
    ``same`` or ``valid``), ``d`` dilation, ``op`` output_padding, ``mode``
    padding_mode, ``ceil`` ceil_mode, ``in``/``out`` channels, ``g`` groups.

    >>> parse_params("k=3x1, s=2, p=same")
    {'kernel_size': (3, 1), 'stride': 2, 'padding': 'same'}
    """
    out: dict[str, Any] = {}
    for item in text.replace(";", ",").split(","):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            raise ConfigError(
                f"{item.strip()!r}: write key=value pairs such as k=5,s=2,p=1,d=1 "
                f"(keys: {', '.join(sorted(set(_KEYS) - set(_KEYS.values())))})"
            )
        name = _KEYS[key]
        out[name] = _value(name, raw)
    return out


def parse_layer(text: str) -> LayerSpec:
    """Parse ``"conv:k=5,p=2"``, ``"maxpool:k=2"`` or ``"transpose:k=3,s=2"`` into a
    :class:`LayerSpec` (pooling strides default to the kernel size).

    >>> parse_layer("maxpool:k=2").stride is None
    True
    """
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind not in _SPEC_KINDS:
        raise ConfigError(unknown_name("layer kind", kind, _SPEC_KINDS))
    params = parse_params(rest)
    params.pop("padding_mode", None)
    if "kernel_size" not in params:
        raise ConfigError(f"layer {text!r}: give the kernel size, e.g. {kind}:k=3")
    if kind in ("maxpool", "avgpool"):
        params.setdefault("stride", None)
    return LayerSpec(kind=kind, **params)


def receptive_field_stack(
    layers: Sequence[LayerSpec | Mapping[str, Any]],
    input_size: IntOrPair,
    in_channels: int | None = None,
) -> FieldTable:
    """Output size, receptive field, jump and start of every layer of a plain stack.

    >>> t = receptive_field_stack([
    ...     {"kind": "conv", "kernel_size": 5, "padding": 2},
    ...     {"kind": "maxpool", "kernel_size": 2, "stride": None},
    ... ], 28)
    >>> [(r.output_shape, r.rf, r.jump) for r in t]
    [((28, 28), (5, 5), (1, 1)), ((14, 14), (6, 6), (2, 2))]
    """
    size = pair(input_size, "input_size")
    geo = Geometry.identity(size)
    rows: list[LayerField] = []
    channels = in_channels
    for n, raw in enumerate(layers):
        spec = raw if isinstance(raw, LayerSpec) else LayerSpec(**dict(raw))
        if spec.kind not in _SPEC_KINDS:
            raise ConfigError(unknown_name("layer kind", spec.kind, _SPEC_KINDS))
        name = spec.name or f"{n}"
        params = macs = 0
        if spec.in_channels is not None:
            channels = spec.in_channels
        if spec.kind == "conv":
            if spec.stride is None:
                raise ConfigError(f"layer {name}: stride=None is only valid for pooling")
            plan = plan_conv(size, spec.kernel_size, spec.stride, spec.padding, spec.dilation)
            geo = geo.conv(plan.kernel_size, plan.stride, (plan.pad[0], plan.pad[2]), plan.dilation, out_size=plan.out)
            out = plan.out
            if channels is not None and spec.out_channels is not None:
                _check_groups(channels, spec.out_channels, spec.groups, name)
                k = plan.kernel_size[0] * plan.kernel_size[1] * channels // spec.groups
                params = spec.out_channels * k + (spec.out_channels if spec.bias else 0)
                macs = spec.out_channels * out[0] * out[1] * k
        elif spec.kind == "transpose":
            if isinstance(spec.padding, str) or spec.stride is None:
                raise ConfigError(f"layer {name}: conv_transpose2d takes numeric stride and padding")
            tplan = plan_transpose(size, spec.kernel_size, spec.stride, spec.padding, spec.output_padding, spec.dilation)
            geo = geo.transpose(tplan.kernel_size, tplan.stride, tplan.padding, tplan.dilation, input_size=pair(input_size, "input_size"), out_size=tplan.out)
            out = tplan.out
            if channels is not None and spec.out_channels is not None:
                _check_groups(channels, spec.out_channels, spec.groups, name)
                k = tplan.kernel_size[0] * tplan.kernel_size[1] * spec.out_channels // spec.groups
                params = channels * k + (spec.out_channels if spec.bias else 0)
                macs = channels * size[0] * size[1] * k
        else:
            if isinstance(spec.padding, str):
                raise ConfigError(f"layer {name}: pooling takes the padding as numbers")
            dil = spec.dilation if spec.kind == "maxpool" else 1
            pplan = plan_pool(size, spec.kernel_size, spec.stride, spec.padding, dil, spec.ceil_mode)
            geo = geo.conv(pplan.kernel_size, pplan.stride, pplan.padding, pplan.dilation, out_size=pplan.out)
            out = pplan.out
        if spec.out_channels is not None and spec.kind in ("conv", "transpose"):
            channels = spec.out_channels
        shape = (channels, *out) if channels is not None else out
        rows.append(LayerField.from_geometry(name, spec.kind, shape, geo, params, macs))
        size = out
    start_shape = (in_channels, *pair(input_size, "input_size")) if in_channels is not None else pair(input_size, "input_size")
    return FieldTable(rows, tuple(start_shape))


def _check_groups(in_channels: int, out_channels: int, groups: int, name: str) -> None:
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ConfigError(
            f"layer {name}: groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )


def conv_macs(out_shape: Sequence[int], in_channels: int, kernel_size: Pair, groups: int) -> int:
    """Multiply-accumulates of a convolution producing ``out_shape`` = (C_out, H, W)."""
    c_out, h, w = (int(v) for v in out_shape[-3:])
    return c_out * h * w * (in_channels // groups) * kernel_size[0] * kernel_size[1]


__all__ = [
    "PADDING_MODES",
    "FieldTable",
    "Geometry",
    "LayerField",
    "LayerSpec",
    "effective_kernel",
    "output_size",
    "pair",
    "parse_layer",
    "parse_params",
    "plan_conv",
    "plan_pool",
    "plan_transpose",
    "receptive_field_stack",
]
