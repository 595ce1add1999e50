"""Layer discovery: every module of a model, with the shape it produces.

>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
>>> table = layers(model, (1, 8, 8))
>>> [(r.name, r.output_shape, r.is_conv) for r in table]
[('0', (4, 6, 6), True), ('1', (4, 6, 6), False), ('2', (4, 1, 1), False)]
>>> table.target  # the last layer with a spatial output: the default CAM layer
'1'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from convlens._tables import RowTable
from convlens.errors import ConfigError
from convlens.inspect._state import device_and_dtype, evaluating
from convlens.inspect.capture import observe

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["LayerRow", "LayerTable", "input_batch", "layers"]

_CONV = (nn.modules.conv._ConvNd,)


@dataclass(frozen=True)
class LayerRow:
    """One module of the model.

    ``output_shape`` excludes the batch dimension and is that of the first call (``None``
    if the module did not run or returned no tensor); ``params`` counts the parameters of
    the module and its children; ``calls`` is how often the dry run called it (more than
    one for a shared module); ``depth`` is the nesting level (0 for children of the model).
    """

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    is_conv: bool
    calls: int
    depth: int

    @property
    def is_spatial(self) -> bool:
        """Output is (C, H, W) with more than one position: feature maps."""
        s = self.output_shape
        return s is not None and len(s) == 3 and s[1] * s[2] > 1


@dataclass
class LayerTable(RowTable[LayerRow]):
    """The rows of :func:`layers`, in ``named_modules()`` order.

    Index by position or by name (``table["conv2"]``). ``target`` is the suggested layer for
    CAMs: the last module, in the order the forward pass finished them, whose output is a
    spatial map (N, C, H, W with H*W > 1). ``str(table)`` is an aligned text table; rich
    renders it as a rich table.
    """

    rows: list[LayerRow]
    input_shape: tuple[int, ...]
    target: str | None
    total_params: int
    order: list[str] = field(default_factory=list)  # names in the order their calls finished

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    @property
    def convs(self) -> list[str]:
        """Names of the convolution layers."""
        return [r.name for r in self.rows if r.is_conv]

    def cells(self) -> list[list[str]]:
        """One row of strings per module: layer, type, output shape, params, mark."""
        out = []
        for r in self.rows:
            shape = "—" if r.output_shape is None else "×".join(str(v) for v in r.output_shape)
            marks = []
            if r.is_conv:
                marks.append("conv")
            if r.calls > 1:
                marks.append(f"called {r.calls}×")
            if r.calls == 0:
                marks.append("not called")
            if r.name == self.target:
                marks.append("← CAM target")
            out.append(["  " * r.depth + r.name, r.type, shape, f"{r.params:,}", ", ".join(marks)])
        return out

    COLUMNS = ("layer", "type", "output shape", "params", "")

    def __str__(self) -> str:
        cells = [list(self.COLUMNS), *self.cells()]
        widths = [max(len(c[i]) for c in cells) for i in range(len(self.COLUMNS))]
        lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(c))).rstrip() for c in cells]
        lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
        shape = "×".join(str(v) for v in self.input_shape)
        lines.append(f"input {shape}; {self.total_params:,} parameters; CAM target: {self.target or 'none'}")
        return "\n".join(lines)

    def __rich__(self) -> Table:
        from rich.table import Table

        shape = "×".join(str(v) for v in self.input_shape)
        table = Table(
            title=f"Layers for input {shape}",
            caption=f"{self.total_params:,} parameters; CAM target: {self.target or 'none'}",
        )
        for col in self.COLUMNS:
            table.add_column(col, justify="right" if col == "params" else "left")
        for r, cells in zip(self.rows, self.cells(), strict=True):
            style = "bold" if r.name == self.target else ("cyan" if r.is_conv else None)
            table.add_row(*cells, style=style)
        return table


def input_batch(model: nn.Module, input_shape: Sequence[int], batch: int = 1) -> Tensor:
    """A zero input batch of ``input_shape`` (C, H, W), on the model's device and dtype."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 0 or any(v < 1 for v in shape):
        raise ConfigError(f"input_shape must be positive sizes like (1, 28, 28), got {tuple(input_shape)}")
    device, dtype = device_and_dtype(model)
    return torch.zeros((batch, *shape), device=device, dtype=dtype)


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def layers(model: nn.Module, input_shape: Sequence[int]) -> LayerTable:
    """List every module of ``model`` with its output shape, after one dry run.

    ``input_shape`` is one sample's shape, e.g. ``(1, 28, 28)`` (no batch dimension). The dry
    run uses a zero batch of one, in eval mode without gradients; the model is left as it was.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}")
    x = input_batch(model, input_shape)
    modules = [(n, m) for n, m in model.named_modules() if n]
    shapes: dict[str, tuple[int, ...] | None] = {}
    calls: dict[str, int] = {n: 0 for n, _ in modules}
    finished: list[str] = []  # one entry per finished call, in order
    last_shape: dict[str, tuple[int, ...]] = {}

    def record(name: str, value: Any) -> None:
        calls[name] += 1
        t = _first_tensor(value)
        if name not in shapes:
            shapes[name] = None if t is None else tuple(t.shape[1:])
        if t is not None:
            finished.append(name)
            last_shape[name] = tuple(t.shape[1:])

    scripted = [n for n, m in modules if isinstance(m, torch.jit.ScriptModule)]
    hookable = [n for n, m in modules if not isinstance(m, torch.jit.ScriptModule)]
    with evaluating(model):
        try:
            if hookable:
                with observe(model, hookable, record):
                    model(x)
            else:
                model(x)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"the model could not run on an input of shape {tuple(x.shape[1:])}: {first}; "
                "pass the shape one sample has, e.g. (1, 28, 28)"
            ) from exc
    rows = []
    for name, module in modules:
        rows.append(
            LayerRow(
                name=name,
                type=type(module).__name__ + (" (TorchScript)" if name in scripted else ""),
                output_shape=shapes.get(name),
                params=sum(p.numel() for p in module.parameters()),
                is_conv=isinstance(module, _CONV) or getattr(module, "original_name", "") in _CONV_NAMES,
                calls=calls[name],
                depth=name.count("."),
            )
        )
    # dropout and identity layers hand their input on: the layer that made it is the target
    passing = {name for name, module in modules
               if isinstance(module, nn.Identity | nn.modules.dropout._DropoutNd)}
    target = None
    for name in reversed(finished):
        s = last_shape[name]
        if len(s) == 3 and s[1] * s[2] > 1 and name not in passing:
            target = name
            break
    return LayerTable(
        rows=rows,
        input_shape=tuple(x.shape[1:]),
        target=target,
        total_params=sum(p.numel() for p in model.parameters()),
        order=list(dict.fromkeys(finished)),
    )


_CONV_NAMES = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"}
