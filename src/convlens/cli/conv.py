"""``convlens conv``: the convolution itself — shapes, one value step by step, kernels, hyperparameters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from convlens.cli._app import app
from convlens.cli._common import (
    Inputs,
    console,
    data_dir_option,
    device_option,
    figures_dest,
    input_options,
    model_source,
    out_option,
    palette_option,
    print_written,
)

if TYPE_CHECKING:
    from convlens.conv.arithmetic import IntOrPair
    from convlens.models.handle import ModelHandle
    from convlens.views import ConvInput
    from convlens.viz.palettes import PaletteName

F = TypeVar("F", bound=Callable[..., Any])


@app.group()
def conv() -> None:
    """The convolution itself: output shapes and receptive fields, how one output value
    is made (text, figure, GIF), classic kernels against learned filters, and the effect
    of stride, padding and dilation."""


# ---------------------------------------------------------------- shared options
def _geometry_options(padding_default: str | None) -> Callable[[F], F]:
    def deco(f: F) -> F:
        f = click.option("--flip", is_flag=True, help="True convolution: rotate the kernel by 180° first.")(f)
        f = click.option("--padding-mode", type=click.Choice(["zeros", "reflect", "replicate", "circular"]),
                         default=None, help="How the border is padded [default: zeros, or the layer's].")(f)
        f = click.option("--dilation", default=None, metavar="D|HxW", help="Spacing of the kernel taps [default: 1, or the layer's].")(f)
        f = click.option("--padding", default=padding_default, metavar="P|HxW|same|valid",
                         help="Padding on each side" + (f" [default: {padding_default}, or the layer's]." if padding_default else " [default: 0, or the layer's]."))(f)
        f = click.option("--stride", default=None, metavar="S|HxW", help="Step of the window [default: 1, or the layer's].")(f)
        return f

    return deco


def _number(text: str | None, name: str) -> IntOrPair | str | None:
    """'2' -> 2, '2x1' -> (2, 1), 'same' -> 'same' (parsing only)."""
    if text is None:
        return None
    from convlens.conv import parse_params

    key = {"stride": "s", "padding": "p", "dilation": "d"}[name]
    value: IntOrPair | str = parse_params(f"{key}={text}")[name]
    return value


def _pair(text: str | None, name: str) -> IntOrPair | None:
    value = _number(text, name)
    if isinstance(value, str):
        raise click.BadParameter(f"{text!r}: give a number or HxW", param_hint=f"--{name}")
    return value


def _handle(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
            device: str) -> ModelHandle | None:
    if run is None and spec is None:
        return None
    from convlens.cli._common import open_source

    return open_source(run, spec, weights, dataset, input_shape, device)


def _input(handle: ModelHandle | None, inputs: Inputs, dataset: str, data_dir: Path | None,
           normalised: bool) -> ConvInput:
    from convlens import views

    return views.conv_input(handle, **inputs.choice(), matrix=inputs.matrix, dataset=dataset, data_dir=data_dir,
                            normalised=normalised)




def _position(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, j = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: write the output position as ROW,COL, e.g. 3,5", param_hint="--at") from None
    return (i, j)


def _input_size(text: str) -> int | tuple[int, int]:
    """'28' -> 28, '28,32' or '28x32' -> (28, 32); anything else a ConfigError (parsing only)."""
    from convlens.errors import ConfigError

    parts = text.strip().replace("×", ",").replace("x", ",").split(",")
    try:
        size = tuple(int(v) for v in parts)
    except ValueError:
        size = ()
    if len(size) not in (1, 2) or min(size) < 1:
        raise ConfigError(f"--input-size {text!r} is not a size: give N or H,W in whole pixels, e.g. 28 or 28,32")
    return size[0] if len(size) == 1 else (size[0], size[1])


# ---------------------------------------------------------------------- shape
@conv.command()
@model_source
@device_option
@click.option("--input-size", default=None, metavar="N|H,W", help="Without a model: the input's height and width.")
@click.option("--layer", "layer_specs", multiple=True, metavar="KIND:PARAMS",
              help="Without a model: a layer such as conv:k=5,p=2 or maxpool:k=2 (repeatable, in order). "
                   "Kinds: conv, maxpool, avgpool, transpose; keys: k s p d op ceil in out g.")
def shape(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
          device: str, input_size: str | None, layer_specs: tuple[str, ...]) -> None:
    """Output size, receptive field, jump and start of each layer: for a model (RUN or
    --model), or for a stack given with --layer and --input-size.

    \b
    Examples:
      convlens conv shape --input-size 28 --layer conv:k=5,p=2 --layer maxpool:k=2
      convlens conv shape --input-size 7 --layer transpose:k=3,s=2,p=1,op=1
      convlens conv shape convlens-demo/run
    """
    from rich.table import Table

    from convlens.conv import parse_layer, receptive_field_stack
    from convlens.conv.arithmetic import COLUMNS
    from convlens.errors import ConfigError

    if run is not None or spec is not None:
        if layer_specs or input_size:
            raise ConfigError("give either a model (RUN or --model) or --layer with --input-size, not both")
        from convlens.cli._common import open_source
        from convlens.inspect.receptive import receptive_field

        h = open_source(run, spec, weights, dataset, input_shape, device)
        table = receptive_field(h.model, h.input_shape)
    else:
        if not layer_specs or input_size is None:
            raise ConfigError("give --input-size and at least one --layer (e.g. --input-size 28 --layer conv:k=5,p=2), or a model (RUN)")
        table = receptive_field_stack([parse_layer(s) for s in layer_specs], _input_size(input_size))
    out = Table(title=f"input {'×'.join(str(v) for v in table.input_shape)}", title_justify="left")
    for n, name in enumerate(COLUMNS):
        out.add_column(name, justify="left" if n < 2 else "right")
    for cells in table.cells():
        out.add_row(*cells)
    con = console()
    con.print(out)
    footer = []
    if table.total_params is not None:
        footer.append(f"{table.total_params:,} parameters")
    if table.total_macs is not None:
        footer.append(f"{table.total_macs:,} multiply-accumulates per input")
    if footer:
        con.print(", ".join(footer))
    con.print("rf: receptive field (input pixels one unit sees); jump: input pixels between neighbouring "
              "units; start: centre of unit (0, 0)'s field, in input pixels." + (" (≤): an upper bound." if not all(r.exact for r in table) else ""))


# -------------------------------------------------------------------- explain
@conv.command()
@input_options(matrix=True)
@click.option("--kernel", "kernel_text", default=None, metavar="NAME|ROWS",
              help='A classic kernel (sobel_x, gaussian, ... see `convlens conv apply --list`) or a matrix "1,0;0,-1".')
@click.option("--filter", "filter_spec", default=None, metavar="LAYER:CHANNEL", help="A learned filter of RUN, e.g. conv1:3.")
@model_source
@_geometry_options(None)
@click.option("--bias", type=float, default=None, help="Add this bias [default: 0, or the filter's].")
@click.option("--at", "at", default=None, metavar="ROW,COL", help="The output position [default: the strongest response].")
@click.option("--figure", is_flag=True, help="Also save the explanation as a figure (PNG, SVG, JSON).")
@click.option("--gif", is_flag=True, help="Also save an animated GIF of the window sliding and the map filling in.")
@click.option("--max-frames", type=click.IntRange(min=1), default=120, show_default=True, help="GIF frames at most.")
@palette_option
@data_dir_option
@device_option
@out_option()
def explain(inputs: Inputs, kernel_text: str | None, filter_spec: str | None, run: Path | None, spec: str | None,
            weights: Path | None, dataset: str, input_shape: str | None, stride: str | None, padding: str | None,
            dilation: str | None, padding_mode: str | None, flip: bool, bias: float | None, at: str | None,
            figure: bool, gif: bool, max_frames: int, palette: PaletteName, data_dir: Path | None, device: str,
            out: Path | None, force: bool) -> None:
    """How one output value is made: the window on the padded input, the products, their
    sum plus the bias.

    \b
    Examples:
      convlens conv explain --matrix "1,2,3;4,5,6;7,8,9" --kernel "1,0;0,-1" --padding 1 --at 0,0
      convlens conv explain --digit 7 --kernel sobel_x --padding 1 --figure --gif
      convlens conv explain convlens-demo/run --digit 3 --filter conv1:5 --figure
    """
    from convlens import views
    from convlens.viz.conv import explanation_figure, explanation_gif, explanation_table
    from convlens.viz.figure import figure_stem, save

    handle = _handle(run, spec, weights, dataset, input_shape, device)
    x = _input(handle, inputs, dataset, data_dir, normalised=filter_spec is not None)
    k = views.conv_kernel(x, handle, kernel=kernel_text, filter=filter_spec, stride=_pair(stride, "stride"),
                          padding=_number(padding, "padding"), dilation=_pair(dilation, "dilation"),
                          padding_mode=padding_mode)
    e = k.trace(_position(at), bias=bias, flip=flip)
    label = f"{x.label} ⋆ {k.name}"
    con = console()
    con.print(f"[dim]{label}[/]")
    con.print(explanation_table(e))
    stem = figure_stem("conv-explain", inputs.slug(), k.name[:40], f"at{e.position[0]},{e.position[1]}",
                       "gray" if palette == "gray" else None)
    if figure or gif:
        dest = figures_dest(handle, out, [stem] if figure else [], force,
                            files=(f"{stem}-slide.gif", f"{stem}-slide.json") if gif else ())
    if figure:
        fig = explanation_figure(e, palette=palette, label=label)
        print_written(save(fig, dest, stem, overwrite=force), "figure")
        click.echo(fig.caption)
    if gif:
        anim = explanation_gif(e, palette=palette, max_frames=max_frames, label=label)
        paths = anim.save(dest, f"{stem}-slide", overwrite=force)
        con.print(f"animation: [bold]{paths['gif']}[/] ({anim.frames} frames, + .json)")
        click.echo(anim.caption)


# ---------------------------------------------------------------------- apply
@conv.command()
@input_options(matrix=True)
@click.option("--kernel", "kernel_texts", multiple=True, metavar="NAME|ROWS",
              help="A classic kernel or a matrix (repeatable).")
@click.option("--filter", "filter_specs", multiple=True, metavar="LAYER:CHANNEL",
              help="A learned filter of RUN whose layer reads the image, e.g. conv1:3 (repeatable).")
@click.option("--list", "list_only", is_flag=True, help="List the classic kernels and exit.")
@model_source
@_geometry_options("same")
@palette_option
@data_dir_option
@device_option
@out_option()
def apply(inputs: Inputs, kernel_texts: tuple[str, ...], filter_specs: tuple[str, ...], list_only: bool,
          run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
          stride: str | None, padding: str | None, dilation: str | None, padding_mode: str | None, flip: bool,
          palette: PaletteName, data_dir: Path | None, device: str, out: Path | None, force: bool) -> None:
    """Classic kernels and learned filters applied to an image, side by side.

    \b
    Examples:
      convlens conv apply --list
      convlens conv apply --digit 7 --kernel sobel_x --kernel sobel_y --kernel gaussian
      convlens conv apply convlens-demo/run --digit 7 --kernel sobel_x --filter conv1:0 --filter conv1:5
    """
    from convlens import views
    from convlens.conv import KERNELS
    from convlens.viz.figure import figure_stem, save

    if list_only:
        con = console()
        for name, info in KERNELS.items():
            con.print(f"[bold]{name:10s}[/] {info.description}")
        return
    handle = _handle(run, spec, weights, dataset, input_shape, device)
    x = _input(handle, inputs, dataset, data_dir, normalised=bool(filter_specs))
    fig = views.conv_apply(x, handle, kernels=kernel_texts, filters=filter_specs, stride=_pair(stride, "stride"),
                           padding=_number(padding, "padding"), dilation=_pair(dilation, "dilation"),
                           padding_mode=padding_mode, flip=flip, palette=palette)
    names = "+".join(fig.data["names"])[:60]
    stem = figure_stem("conv-apply", inputs.slug(), names, "gray" if palette == "gray" else None)
    print_written(save(fig, figures_dest(handle, out, [stem], force), stem, overwrite=force), "kernels")
    click.echo(fig.caption)


# ---------------------------------------------------------------------- panel
@conv.command()
@input_options(matrix=True)
@click.option("--kernel", "kernel_text", default=None, metavar="NAME|ROWS", help="A classic kernel or a matrix.")
@click.option("--filter", "filter_spec", default=None, metavar="LAYER:CHANNEL", help="A learned filter of RUN.")
@model_source
@click.option("--setting", "settings", multiple=True, metavar="PARAMS",
              help="One setting such as s=2,p=1,d=1 (repeatable) [default: six instructive settings].")
@palette_option
@data_dir_option
@device_option
@out_option()
def panel(inputs: Inputs, kernel_text: str | None, filter_spec: str | None, run: Path | None, spec: str | None,
          weights: Path | None, dataset: str, input_shape: str | None, settings: tuple[str, ...],
          palette: PaletteName, data_dir: Path | None, device: str, out: Path | None, force: bool) -> None:
    """One input and one kernel under several stride/padding/dilation settings, each map
    at its true size.

    \b
    Examples:
      convlens conv panel --digit 7 --kernel sobel_x
      convlens conv panel --digit 7 --kernel gaussian --setting s=1,p=2 --setting s=2,p=2 --setting d=2
    """
    from convlens import views
    from convlens.conv import parse_params
    from convlens.viz.figure import figure_stem, save

    handle = _handle(run, spec, weights, dataset, input_shape, device)
    x = _input(handle, inputs, dataset, data_dir, normalised=filter_spec is not None)
    k = views.conv_kernel(x, handle, kernel=kernel_text, filter=filter_spec)
    fig = views.conv_panel(k, [parse_params(s) for s in settings] if settings else None, palette=palette,
                           label=f"{x.label} ⋆ {k.name}")
    stem = figure_stem("conv-panel", inputs.slug(), k.name[:40], *settings, "gray" if palette == "gray" else None)
    print_written(save(fig, figures_dest(handle, out, [stem], force), stem, overwrite=force), "panel")
    click.echo(fig.caption)
