"""Receptive fields of any ``nn.Module``, from one dry run.

:func:`receptive_field` runs the model once on a zero input and follows the geometry
(:class:`convlens.conv.Geometry`: jump, the nominal window of unit (0, 0), and the true
extent of every unit) through the *tensors* rather than assuming a structure: a
``torch.overrides.TorchFunctionMode`` sees every torch call and maps each tensor it
produces to the geometry of each of its channels, and forward hooks attribute the
results to module names. A row's region is the union over the map's channels.

How calls change the geometry:

* ``conv2d``, ``max_pool2d``, ``avg_pool2d`` and ``pad`` apply the exact arithmetic;
  ``adaptive_*_pool2d`` too when the input divides evenly into the bins;
  ``conv_transpose2d`` is exact for stride 1. Unit by unit, taps that land in padding
  read no pixel, so border units see only what the map's units saw (a floor in an
  earlier output size, dilated taps in the padding); ``reflect``, ``replicate`` and
  ``circular`` padding see the pixels they copy;
* ``cat`` along channels keeps each input's channels; indexing, ``narrow``,
  ``index_select`` and splits along channels pick theirs; a convolution combines the
  channels of each group; pooling, padding, activations and arithmetic act channel by
  channel. Any other call on channels that differ sees their union (``exact=False``);
* calls with several spatial inputs of the same size (residual ``+``, gating) take the
  union of their inputs' regions;
* calls that keep the spatial size and do not mix positions (activations, batch norm,
  dropout, channel-wise ops) pass the geometry on;
* anything else that changes or mixes the spatial layout (global pooling, flatten,
  interpolate, cropping, attention, strided transposed convolution, combining maps of
  different jumps) makes every unit see the whole image. Global reductions are exact;
  the others are marked as upper bounds (``exact=False``).

Checked against the gradient support of single units (positive weights, float64) in
``tests/test_conv_receptive.py``, border units included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from convlens.conv.arithmetic import FieldTable, Geometry, LayerField, pair
from convlens.errors import ConfigError, LayerError, unknown_name
from convlens.inspect._state import evaluating
from convlens.inspect.capture import hooked, observe
from convlens.inspect.table import input_batch

__all__ = ["ConvFilter", "conv_filter", "layer_input", "receptive_field"]

Pair = tuple[int, int]

# torch functions by __name__ (the same function can arrive as torch.conv2d,
# torch.nn.functional.conv2d or a boolean-dispatch wrapper)
_CONV = {"conv2d"}
_CONV_T = {"conv_transpose2d"}
_MAX_POOL = {"max_pool2d", "max_pool2d_with_indices", "_max_pool2d"}
_AVG_POOL = {"avg_pool2d"}
_ADAPTIVE = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "_adaptive_max_pool2d"}
_PAD = {"pad", "_pad"}
_CANONICAL = {
    "_max_pool2d": "max_pool2d",
    "max_pool2d_with_indices": "max_pool2d",
    "_pad": "pad",
    "_adaptive_max_pool2d": "adaptive_max_pool2d",
    "adaptive_max_pool2d_with_indices": "adaptive_max_pool2d",
}
_FUNCTIONAL_ROWS = _CONV | _CONV_T | _MAX_POOL | _AVG_POOL | _ADAPTIVE | _PAD | {"interpolate", "upsample"}
# calls that keep the shape but mix positions along the axes given by ``dim``
_ALONG_DIM = {
    "softmax", "log_softmax", "softmin", "cumsum", "cumprod", "cummax", "cummin",
    "logcumsumexp", "sort", "argsort", "flip", "roll", "normalize",
}
_ALWAYS_MIX = {"matmul", "mm", "bmm", "einsum", "fliplr", "flipud", "rot90", "tensordot", "__matmul__", "__rmatmul__"}
_MOVE_AXES = {"transpose", "swapaxes", "swapdims", "permute", "movedim", "moveaxis"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "logsumexp", "std", "var", "norm", "nansum", "nanmean", "prod"}
_MACS = {"linear", "matmul", "mm", "bmm", "__matmul__", "addmm"}
# channel structure: concatenation and selection along the channel axis, ops that act on
# each channel alone (the others mix channels, or might)
_CAT = {"cat", "concat", "concatenate"}
_SELECT = {"__getitem__", "narrow", "index_select", "split", "chunk", "tensor_split", "split_with_sizes"}
_PER_CHANNEL = _MAX_POOL | _AVG_POOL | _ADAPTIVE | _PAD | {"interpolate", "upsample"}
_POINTWISE = {
    "add", "sub", "mul", "div", "true_divide", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "square", "pow",
    "reciprocal", "maximum", "minimum", "clamp", "clamp_min", "clamp_max", "clip", "where", "masked_fill",
    "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__",
    "__truediv__", "__rtruediv__", "__itruediv__", "__neg__", "__pow__", "__abs__",
    "add_", "sub_", "mul_", "div_", "clamp_", "clamp_min_",
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu",
    "gelu", "silu", "mish", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardsigmoid", "hardswish", "softplus",
    "prelu", "threshold", "threshold_", "logsigmoid", "softsign", "tanhshrink", "erf",
    "batch_norm", "dropout", "dropout_", "dropout1d", "dropout2d", "alpha_dropout", "feature_alpha_dropout",
    "contiguous", "clone", "detach", "to", "float", "double", "half", "type", "cpu", "cuda",
}

Chans = tuple[Geometry, ...]
"""The geometry of a tensor's channels (axis -3): one per channel, or one for them all."""

# positional parameter names of the functions whose arguments we read
_SIGNATURES = {
    "conv2d": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv_transpose2d": ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool2d": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "adaptive": ("input", "output_size"),
    "pad": ("input", "pad", "mode", "value"),
}


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], sig: str, name: str, default: Any) -> Any:
    names = _SIGNATURES[sig]
    i = names.index(name)
    if i < len(args):
        return args[i]
    return kwargs.get(name, default)


def _spatial(t: Tensor) -> Pair | None:
    return (int(t.shape[-2]), int(t.shape[-1])) if t.dim() >= 3 else None


def _dims(value: Any, ndim: int) -> list[int] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, int) else list(value)
    return [int(d) % ndim if ndim else int(d) for d in items]


@dataclass
class _Frame:
    """A module call in progress: its name, whether it has children, MACs so far."""

    name: str
    container: bool
    macs: int = 0


@dataclass
class _Tracker:
    """The geometry of every live tensor of the dry run, and the MAC counts."""

    input_hw: Pair
    batch: int
    geo: WeakIdKeyDictionary = field(default_factory=WeakIdKeyDictionary)  # tensor -> Chans
    stack: list[_Frame] = field(default_factory=list)
    rows: list[tuple[str, str, Tensor, int, int]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    total_macs: int = 0

    def label(self, name: str) -> str:
        self.calls[name] = self.calls.get(name, 0) + 1
        return name if self.calls[name] == 1 else f"{name}#{self.calls[name]}"

    def whole(self, exact: bool) -> Geometry:
        return Geometry.whole(self.input_hw, exact=exact)

    def union(self, geos: Sequence[Geometry]) -> Geometry:
        out = geos[0]
        for g in geos[1:]:
            out = out.union(g, input_size=self.input_hw)
        return out

    def merged(self, chans: Chans) -> Geometry:
        """The geometry of a unit position over all channels: the union of theirs."""
        return self.union(list({id(g): g for g in chans}.values()))

    # -------------------------------------------------- channels with different geometries
    def apply(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], known: list[tuple[Tensor, Chans]], outs: list[Tensor]) -> list[Chans]:
        """The channel geometries of every output of one call.

        While every channel of every input shares one geometry (the common case), the
        rules below see that geometry. Channels differ after a concatenation of branches
        (Inception); then selections along the channel axis pick their channels, a
        convolution combines the channels of each group, per-channel ops (pooling,
        padding, activations, arithmetic) act channel by channel, and any other call sees
        the union over channels, marked inexact unless the result is global.
        """
        first, chans = known[0]
        out = outs[0]
        if name in _CAT:
            got = self.concat(args, kwargs, out)
            if got is not None:
                return [got] * len(outs)
        if name in _SELECT:
            picked = self.select(name, args, kwargs, first, chans, outs)
            if picked is not None:
                return picked
        if all(len(c) == 1 for _, c in known):
            return [(self.rule(name, args, kwargs, first, [c[0] for _, c in known], out),)] * len(outs)
        if name in _CONV or name in _CONV_T:
            return [self.grouped(name, args, kwargs, first, chans, out)] * len(outs)
        if name in _PER_CHANNEL or name in _POINTWISE:
            c_out = int(out.shape[-3]) if out.dim() >= 3 else 0
            spread = [_spread(c, v, c_out, self) for v, c in known]
            if c_out and all(s is not None for s in spread):
                cache: dict[tuple[int, ...], Geometry] = {}
                per = []
                for c in range(c_out):
                    geos = [s[c] for s in spread if s is not None]
                    key = tuple(id(g) for g in geos)
                    if key not in cache:
                        cache[key] = self.rule(name, args, kwargs, first, geos, out)
                    per.append(cache[key])
                return [_collapse(per)] * len(outs)
        g = self.rule(name, args, kwargs, first, [self.merged(c) for _, c in known], out)
        if not g.is_global:
            g = replace(g, exact=False)  # which channels feed which is not known
        return [(g,)] * len(outs)

    def concat(self, args: tuple[Any, ...], kwargs: dict[str, Any], out: Tensor) -> Chans | None:
        """``cat`` along the channel axis: the channels of the inputs, in order."""
        tensors = args[0] if args else kwargs.get("tensors")
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        nd = out.dim()
        if nd < 3 or not isinstance(dim, int) or dim % nd != nd - 3 or not isinstance(tensors, (list, tuple)):
            return None
        parts: list[Geometry] = []
        for v in tensors:
            if not isinstance(v, Tensor) or v not in self.geo or v.dim() != nd:
                return None  # a constant part: leave it to the generic rule
            parts.extend(_channels(self.geo[v], v))
        return _collapse(parts) if len(parts) == int(out.shape[-3]) else None

    def select(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], first: Tensor, chans: Chans, outs: list[Tensor]) -> list[Chans] | None:
        """Channels picked by indexing, ``narrow``, ``index_select`` or a split along the
        channel axis (or any selection along a batch axis, which keeps them all)."""
        nd = first.dim()
        if nd < 3 or any(o.dim() != nd or _spatial(o) != _spatial(first) for o in outs):
            return None
        every = _channels(chans, first)
        if name == "__getitem__":
            index = args[1] if len(args) > 1 else None
            items = list(index) if isinstance(index, tuple) else [index]
            if items and items[0] is Ellipsis:
                items = [slice(None)] * (nd - len(items) + 1) + items[1:]
            if len(items) > nd or not all(isinstance(i, slice) for i in items):
                return None
            slices = [i for i in items if isinstance(i, slice)] + [slice(None)] * (nd - len(items))
            if any(i != slice(None) for i in slices[nd - 2:]):
                return None
            picked = every[slices[nd - 3]]
            return [_collapse(picked)] if len(picked) == int(outs[0].shape[-3]) else None
        dim_pos = {"narrow": 1, "index_select": 1}.get(name, 2)
        dim = kwargs.get("dim", args[dim_pos] if len(args) > dim_pos else 0)
        if not isinstance(dim, int):
            return None
        axis = dim % nd
        if axis < nd - 3:
            return [chans] * len(outs)
        if axis != nd - 3:
            return None
        if name == "narrow":
            start, length = int(args[2]), int(args[3])
            return [_collapse(every[start % len(every):][:length])]
        if name == "index_select":
            index = args[2] if len(args) > 2 else kwargs.get("index")
            if not isinstance(index, Tensor):
                return None
            return [_collapse(tuple(every[int(i)] for i in index.reshape(-1).tolist()))]
        result, offset = [], 0
        for o in outs:  # the pieces of a split are consecutive along the axis
            size = int(o.shape[-3])
            result.append(_collapse(every[offset:offset + size]))
            offset += size
        return result if offset == len(every) else None

    def grouped(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], first: Tensor, chans: Chans, out: Tensor) -> Chans:
        """A convolution: every output channel of group ``g`` combines the input channels of group ``g``."""
        groups = int(_arg(args, kwargs, "conv2d" if name in _CONV else "conv_transpose2d", "groups", 1))
        every = _channels(chans, first)
        c_in, c_out = len(every), int(out.shape[-3])
        if groups < 1 or c_in % groups or c_out % groups:
            raise ValueError("groups do not divide the channels")
        per: list[Geometry] = []
        for gi in range(groups):
            part = every[gi * c_in // groups:(gi + 1) * c_in // groups]
            per.extend([self.rule(name, args, kwargs, first, [self.merged(part)], out)] * (c_out // groups))
        return _collapse(per)

    # ------------------------------------------------------------------ the rules
    def rule(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], first: Tensor, known: list[Geometry], out: Tensor) -> Geometry:
        g = known[0]
        if name in _CONV:
            weight = _arg(args, kwargs, "conv2d", "weight", None)
            k = (int(weight.shape[-2]), int(weight.shape[-1]))
            s = pair(_arg(args, kwargs, "conv2d", "stride", 1), "stride")
            d = pair(_arg(args, kwargs, "conv2d", "dilation", 1), "dilation")
            p_raw = _arg(args, kwargs, "conv2d", "padding", 0)
            if p_raw == "same":
                p = ((d[0] * (k[0] - 1)) // 2, (d[1] * (k[1] - 1)) // 2)
            elif p_raw == "valid":
                p = (0, 0)
            else:
                p = pair(p_raw, "padding")
            return g.conv(k, s, p, d, out_size=_spatial(out))
        if name in _CONV_T:
            weight = _arg(args, kwargs, "conv_transpose2d", "weight", None)
            k = (int(weight.shape[-2]), int(weight.shape[-1]))
            return g.transpose(
                k,
                _arg(args, kwargs, "conv_transpose2d", "stride", 1),
                _arg(args, kwargs, "conv_transpose2d", "padding", 0),
                _arg(args, kwargs, "conv_transpose2d", "dilation", 1),
                input_size=self.input_hw,
                out_size=_spatial(out),
            )
        if name in _MAX_POOL or name in _AVG_POOL:
            sig = "max_pool2d" if name in _MAX_POOL else "avg_pool2d"
            k = pair(_arg(args, kwargs, sig, "kernel_size", None), "kernel_size")
            s_raw = _arg(args, kwargs, sig, "stride", None)
            s = k if s_raw is None or (isinstance(s_raw, (list, tuple)) and len(s_raw) == 0) else pair(s_raw, "stride")
            p = pair(_arg(args, kwargs, sig, "padding", 0), "padding")
            d = pair(_arg(args, kwargs, sig, "dilation", 1), "dilation") if sig == "max_pool2d" else (1, 1)
            return g.conv(k, s, p, d, out_size=_spatial(out))
        if name in _ADAPTIVE:
            size_in, size_out = _spatial(first), _spatial(out)
            if size_in is None or size_out is None:
                return self.whole(False)
            if size_out == (1, 1):
                return self.whole(g.exact)
            if size_in[0] % size_out[0] == 0 and size_in[1] % size_out[1] == 0:
                k = (size_in[0] // size_out[0], size_in[1] // size_out[1])
                return g.conv(k, k, out_size=size_out)
            return self.whole(False)
        if name == "linear":
            return self.whole(first.dim() <= 2)
        if name in _PAD:
            amounts = [int(v) for v in _arg(args, kwargs, "pad", "pad", ())]
            left = amounts[0] if len(amounts) >= 2 else 0
            top = amounts[2] if len(amounts) >= 4 else 0
            mode = str(_arg(args, kwargs, "pad", "mode", "constant"))
            return g.shift(top, left, out_size=_spatial(out), mode=mode)
        return self.generic(name, args, kwargs, first, known, out)

    def generic(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], first: Tensor, known: list[Geometry], out: Tensor) -> Geometry:
        size_in, size_out = _spatial(first), _spatial(out)
        ndim = first.dim()
        if name in _REDUCE and not any(isinstance(a, Tensor) for a in args[1:]):  # not max(a, b)
            dims = _dims(kwargs.get("dim", args[1] if len(args) > 1 else None), ndim)
            if ndim >= 3 and ((dims is None and out.dim() == 0) or (dims is not None and {ndim - 2, ndim - 1} <= set(dims))):
                return self.whole(all(g.exact for g in known))
        if size_in is None or size_out is None or size_in != size_out or out.dim() != ndim:
            return self.whole(False)
        if name in _ALWAYS_MIX:
            return self.whole(False)
        spatial_axes = {ndim - 2, ndim - 1}
        if name in _ALONG_DIM:
            raw = kwargs.get("dim", kwargs.get("dims", args[1] if len(args) > 1 else None))
            if name == "roll":
                raw = kwargs.get("dims", args[2] if len(args) > 2 else None)
                if raw is None:
                    return self.whole(False)
            dims = _dims(raw, ndim)
            if dims is None or spatial_axes & set(dims):
                return self.whole(False)
        if name in _MOVE_AXES:
            rest = [a for a in args[1:] if not isinstance(a, Tensor)]
            if name == "permute":
                perm = _dims(rest[0] if len(rest) == 1 and not isinstance(rest[0], int) else rest, ndim)
                if perm is None or perm[-2:] != [ndim - 2, ndim - 1]:
                    return self.whole(False)
            else:
                dims = _dims(rest or [kwargs.get(k) for k in ("dim0", "dim1") if k in kwargs], ndim)
                if dims and spatial_axes & set(dims) and len(set(dims)) > 1:
                    return self.whole(False)
        return self.union(known)


class _GeometryMode(TorchFunctionMode):
    """Maps every tensor a torch call produces to its :class:`Geometry`."""

    def __init__(self, tracker: _Tracker) -> None:
        super().__init__()
        self.t = tracker

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in ("__get__", "__set__", "dim", "size", "numel", "__len__", "__repr__", "__format__"):
            return out
        t = self.t
        flat_in = [v for v in _tensors((args, kwargs))]
        outs = [v for v in _tensors(out)]
        known: list[tuple[Tensor, Chans]] = [(v, t.geo[v]) for v in flat_in if v in t.geo]
        if name in _MACS and outs:
            self._count_macs(name, args, outs[0])
        if not known or not outs:
            return out
        first = known[0][0]
        macs = 0
        if name in _CONV or name in _CONV_T:
            macs = self._count_conv_macs(name, args, kwargs, first, outs[0])
        try:
            geos = t.apply(name, args, kwargs, known, outs)
        except (ConfigError, TypeError, ValueError, IndexError, AttributeError):
            geos = [(t.whole(False),)] * len(outs)  # an argument form we do not read: stay safe
        for v, chans in zip(outs, geos, strict=True):
            t.geo[v] = chans
        if name in _FUNCTIONAL_ROWS and t.stack and t.stack[-1].container:
            op = _CANONICAL.get(name, name)
            parent = t.stack[-1].name
            label = t.label(f"{parent}.{op}()" if parent else f"{op}()")
            t.rows.append((label, f"F.{op}", outs[0], 0, macs))
        return out

    def _credit(self, macs: int) -> None:
        for frame in self.t.stack:
            frame.macs += macs

    def _count_conv_macs(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor, y: Tensor) -> int:
        weight = _arg(args, kwargs, "conv2d" if name in _CONV else "conv_transpose2d", "weight", None)
        if not isinstance(weight, Tensor) or weight.dim() != 4:
            return 0
        taps = int(weight.shape[1]) * int(weight.shape[2]) * int(weight.shape[3])
        macs = (y.numel() if name in _CONV else x.numel()) * taps // self.t.batch
        self._credit(macs)
        return macs

    def _count_macs(self, name: str, args: tuple[Any, ...], y: Tensor) -> None:
        a = args[0] if args else None
        if name == "addmm" and len(args) > 1:
            a = args[1]
        if isinstance(a, Tensor) and a.dim() >= 1:
            self._credit(y.numel() * int(a.shape[-1]) // self.t.batch)


def _tensors(value: Any) -> Iterator[Tensor]:
    """Every tensor in ``value`` (a tensor, or tuples, lists and dicts of them), in order."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list, dict)):
        for v in value.values() if isinstance(value, dict) else value:
            yield from _tensors(v)


def _channels(chans: Chans, t: Tensor) -> Chans:
    """``chans`` with one geometry per channel of ``t`` (axis -3)."""
    return chans * int(t.shape[-3]) if len(chans) == 1 and t.dim() >= 3 else chans


def _spread(chans: Chans, t: Tensor, c_out: int, tracker: _Tracker) -> Chans | None:
    """The geometry that each of ``c_out`` output channels takes from input ``t``: its own
    channel's, or the union over its channels where ``t`` broadcasts along the channel axis."""
    if t.dim() >= 3 and int(t.shape[-3]) == c_out:
        return _channels(chans, t)
    if t.dim() < 3 or int(t.shape[-3]) == 1:
        return (tracker.merged(chans),) * c_out
    return None


def _collapse(chans: Sequence[Geometry]) -> Chans:
    """One geometry for all channels when they share it."""
    head = chans[0]
    return (head,) if all(g is head or g == head for g in chans) else tuple(chans)


def _first_tensor(value: Any) -> Tensor | None:
    return next(_tensors(value), None)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _hooked(model: nn.Module, tracker: _Tracker) -> contextlib.AbstractContextManager[None]:
    """A pre-hook and a hook on every module (through :func:`convlens.inspect.capture.hooked`)."""
    modules = dict(model.named_modules())
    containers = {name for name, module in modules.items() if name == "" or any(True for _ in module.children())}

    def pre(name: str, module: nn.Module, args: Any) -> None:
        tracker.stack.append(_Frame(name, name in containers))

    def post(name: str, module: nn.Module, args: Any, output: Any) -> None:
        frame = tracker.stack.pop() if tracker.stack and tracker.stack[-1].name == name else _Frame(name, False)
        if name == "":
            tracker.total_macs = frame.macs
            return
        y = _first_tensor(output)
        if y is not None:
            tracker.rows.append((tracker.label(name), type(module).__name__, y, _params(module), frame.macs))

    return hooked(modules, before=pre, after=post, always_call=True)


def receptive_field(model: nn.Module, input_shape: Sequence[int]) -> FieldTable:
    """Receptive field, jump, output shape, parameters and MACs of every layer.

    ``input_shape`` is one sample's shape, e.g. ``(1, 28, 28)``. The model runs once on
    a zero batch of one, in eval mode without gradients; hooks and the torch-function
    mode are removed on every exit path and every ``training`` flag is restored.

    Rows come in the order the calls finished: every module (containers after their
    children; a module called twice appears as ``name`` and ``name#2``), plus
    geometry-changing torch functions called directly in a container's ``forward``
    (e.g. ``max_pool2d()`` for ``F.max_pool2d`` in the model's own ``forward``).
    ``params`` counts a module's parameters including its children's; ``macs`` counts
    the multiply-accumulates of convolutions and matrix products inside the call, for
    one sample.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.MaxPool2d(2), nn.Conv2d(4, 8, 5, padding=2))
    >>> table = receptive_field(net, (1, 28, 28))
    >>> [(r.name, r.rf, r.jump, r.lo) for r in table]
    [('0', (5, 5), (1, 1), (-2, -2)), ('1', (6, 6), (2, 2), (-2, -2)), ('2', (14, 14), (2, 2), (-6, -6))]
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) < 2:
        raise ConfigError(f"input_shape={tuple(input_shape)}: give one sample's shape with its height and width, e.g. (1, 28, 28)")
    x = input_batch(model, shape)
    tracker = _Tracker(input_hw=(shape[-2], shape[-1]), batch=1)
    tracker.geo[x] = (Geometry.identity(tracker.input_hw),)
    with evaluating(model), _hooked(model, tracker):
        try:
            with _GeometryMode(tracker):
                model(x)
        except Exception as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            raise ConfigError(
                f"the model failed on an input of shape {shape}: {type(exc).__name__}: {first_line}; "
                "check input_shape"
            ) from exc
    rows = []
    for label, type_name, y, params, macs in tracker.rows:
        chans = tracker.geo.get(y)
        if chans is not None:
            geo = tracker.merged(chans)
            rows.append(LayerField.from_geometry(label, type_name, tuple(y.shape[1:]), geo, params, macs))
    return FieldTable(rows, shape, total_params=_params(model), total_macs=tracker.total_macs)


# ------------------------------------------------------------- learned filters
@dataclass(frozen=True)
class ConvFilter:
    """One output channel of a model's ``nn.Conv2d``, as NumPy arrays.

    ``weight`` is (C_in/groups, kh, kw); ``stride``, ``padding``, ``dilation`` and
    ``padding_mode`` are the layer's, so the filter can be replayed exactly with
    :func:`convlens.conv.conv2d`.
    """

    layer: str
    channel: int
    weight: np.ndarray
    bias: float
    stride: Pair
    padding: Pair | str
    dilation: Pair
    padding_mode: str
    in_channels: int
    groups: int

    @property
    def label(self) -> str:
        return f"{self.layer}:{self.channel}"


def conv_filter(model: nn.Module, spec: str) -> ConvFilter:
    """The filter ``"layer:channel"`` (e.g. ``"conv1:3"``) of ``model``'s ``nn.Conv2d``.

    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
    >>> conv_filter(net, "0:2").weight.shape
    (1, 3, 3)
    """
    layer, sep, channel = spec.rpartition(":")
    if not sep or not layer:
        raise ConfigError(f"filter {spec!r}: write it as layer:channel, e.g. conv1:3")
    names = dict(model.named_modules())
    convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d)]
    if layer not in names:
        raise LayerError(unknown_name("layer", layer, convs))
    module = names[layer]
    if not isinstance(module, nn.Conv2d):
        raise ConfigError(f"layer {layer!r} is a {type(module).__name__}, not a Conv2d; filters live in {', '.join(convs) or 'no layer'}")
    try:
        c = int(channel)
    except ValueError:
        raise ConfigError(f"filter {spec!r}: the channel must be a number, e.g. {layer}:0") from None
    if not 0 <= c < module.out_channels:
        raise ConfigError(f"filter {spec!r}: {layer} has channels 0..{module.out_channels - 1}")
    with torch.no_grad():
        weight = module.weight[c].detach().to("cpu", torch.float64).numpy().copy()
        bias = float(module.bias[c]) if module.bias is not None else 0.0
    padding = module.padding if isinstance(module.padding, str) else pair(module.padding, "padding")
    return ConvFilter(
        layer=layer,
        channel=c,
        weight=weight,
        bias=bias,
        stride=pair(module.stride, "stride"),
        padding=padding,
        dilation=pair(module.dilation, "dilation"),
        padding_mode=module.padding_mode,
        in_channels=module.in_channels,
        groups=module.groups,
    )



class _Reached(Exception):
    """Raised by a one-shot pre-hook to stop the forward pass at the layer."""


def layer_input(model: nn.Module, layer: str, x: Any) -> np.ndarray:
    """The tensor ``layer`` receives when ``model`` runs on one sample ``x``, as float64 C×H×W.

    ``x`` is C×H×W or 1×C×H×W (a tensor or an array, already normalised as the model
    expects). The forward pass stops at the layer; the model runs in eval mode without
    gradients and is left as it was.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 4, 3))
    >>> layer_input(net, "2", torch.zeros(1, 8, 8)).shape
    (2, 3, 3)
    """
    names = dict(model.named_modules())
    if layer not in names or layer == "":
        raise LayerError(unknown_name("layer", layer, [n for n in names if n]))
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4 or t.shape[0] != 1:
        raise ConfigError(f"input of shape {tuple(t.shape)}: expected one sample C×H×W")
    got: dict[str, Tensor] = {}

    def grab(name: str, value: Any) -> None:
        got["x"] = value.detach()
        raise _Reached

    param = next(iter(model.parameters()), None)
    if param is not None:
        t = t.to(param.device, param.dtype if param.is_floating_point() else t.dtype)
    try:
        with evaluating(model), contextlib.suppress(_Reached), observe(model, layer, grab, inputs=True):
            model(t)
    except Exception as exc:
        raise ConfigError(
            f"the model failed on an input of shape {tuple(t.shape[1:])} before reaching {layer!r}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if "x" not in got:
        raise ConfigError(f"layer {layer!r} did not run in the forward pass")
    return got["x"][0].to("cpu", torch.float64).numpy().copy()
