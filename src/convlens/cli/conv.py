"""``convlens conv``: the convolution itself — shapes, one value step by step, kernels, hyperparameters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from convlens.cli._app import app
from convlens.cli._common import (
    console,
    data_dir_option,
    model_source,
    out_option,
    palette_option,
    print_written,
)

F = TypeVar("F", bound=Callable[..., Any])


@app.group()
def conv() -> None:
    """The convolution itself: output shapes and receptive fields, how one output value
    is made (text, figure, GIF), classic kernels against learned filters, and the effect
    of stride, padding and dilation."""


# ---------------------------------------------------------------- shared options
def _input_options(f: F) -> F:
    f = click.option("--matrix", default=None, metavar="ROWS",
                     help='A small input written as rows, e.g. "1,2,3;4,5,6;7,8,9".')(f)
    f = click.option("--image", type=click.Path(path_type=Path), default=None, help="Use this image file.")(f)
    f = click.option("--index", type=int, default=None, help="Use this example of the split.")(f)
    f = click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)(f)
    f = click.option("--nth", type=click.IntRange(min=0), default=0, show_default=True,
                     help="With --digit: take the nth example of that class.")(f)
    f = click.option("--digit", default=None, help="Use the first test example of this class (e.g. 7).")(f)
    return f


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


def _number(text: str | None, name: str) -> Any:
    """'2' -> 2, '2x1' -> (2, 1), 'same' -> 'same' (parsing only)."""
    if text is None:
        return None
    from convlens.conv import parse_params

    key = {"stride": "s", "padding": "p", "dilation": "d"}[name]
    return parse_params(f"{key}={text}")[name]


def _handle(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None) -> Any:
    if run is None and spec is None:
        return None
    from convlens.cli._common import open_source

    return open_source(run, spec, weights, dataset, input_shape)


def _load_input(handle: Any, *, digit: str | None, index: int | None, image: Path | None, nth: int,
                split: str, matrix: str | None, dataset: str, data_dir: Path | None,
                normalised: bool) -> tuple[Any, str]:
    """The input as float64 C×H×W and its label. Dataset pixels are scaled to [0, 1],
    or normalised as in training when a learned filter will look at them."""
    from convlens.conv import parse_matrix, to_float_image
    from convlens.errors import ConfigError

    given = [k for k, v in (("--digit", digit), ("--index", index), ("--image", image), ("--matrix", matrix)) if v is not None]
    if len(given) != 1:
        raise ConfigError("choose exactly one input: --digit D, --index N, --image FILE or --matrix ROWS")
    if matrix is not None:
        return parse_matrix(matrix)[None], f'input "{matrix.strip()}"'
    d: int | str | None = int(digit) if digit is not None and digit.isdigit() else digit
    if handle is not None and normalised:
        from convlens import views

        chosen = views.choose_input(handle, digit=d, index=index, image=image, nth=nth, split=split, data_dir=data_dir)
        return chosen.x[0].double().numpy(), f"{chosen.label} (normalised as in training)"
    if image is not None:
        from convlens.data import load_image

        return to_float_image(load_image(image).numpy()), f"image {image.name}"
    from convlens.data import load_dataset

    ds = load_dataset(handle.data.name if handle is not None else dataset, split, data_dir=data_dir)
    i = ds.index_of(d, nth) if d is not None else int(index)  # type: ignore[arg-type]
    if not 0 <= i < len(ds):
        from convlens.errors import DataError

        raise DataError(f"--index {i}: the {split} split has examples 0..{len(ds) - 1}")
    return to_float_image(ds.images[i].numpy()), f"{split} {ds.label_kind} {ds.classes[int(ds.labels[i])]} (index {i})"


def _kernel_from(text: str) -> tuple[str, Any]:
    """A classic kernel name or a matrix such as "1,0,-1;2,0,-2;1,0,-1"."""
    from convlens.conv import kernel, parse_matrix

    if any(ch in text for ch in ",;") or text.strip().lstrip("-").replace(".", "").isdigit():
        return f'kernel "{text.strip()}"', parse_matrix(text)
    return text, kernel(text)


def _out_dir(handle: Any, out: Path | None) -> Path:
    if handle is not None:
        return Path(handle.figures_dir(out))
    return out if out is not None else Path("figures")


def _position(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, j = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: write the output position as ROW,COL, e.g. 3,5", param_hint="--at") from None
    return (i, j)


# ---------------------------------------------------------------------- shape
@conv.command()
@model_source
@click.option("--input-size", default=None, metavar="N|H,W", help="Without a model: the input's height and width.")
@click.option("--layer", "layer_specs", multiple=True, metavar="KIND:PARAMS",
              help="Without a model: a layer such as conv:k=5,p=2 or maxpool:k=2 (repeatable, in order). "
                   "Kinds: conv, maxpool, avgpool, transpose; keys: k s p d op ceil in out g.")
def shape(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
          input_size: str | None, layer_specs: tuple[str, ...]) -> None:
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
        from convlens.inspect.receptive import receptive_field

        h = _handle(run, spec, weights, dataset, input_shape)
        table = receptive_field(h.model, h.input_shape)
    else:
        if not layer_specs or input_size is None:
            raise ConfigError("give --input-size and at least one --layer (e.g. --input-size 28 --layer conv:k=5,p=2), or a model (RUN)")
        size = tuple(int(v) for v in input_size.replace("x", ",").split(","))
        table = receptive_field_stack([parse_layer(s) for s in layer_specs], size if len(size) == 2 else size[0])
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
def _prepare(handle: Any, kernel_text: str | None, filter_spec: str | None, x: Any,
             stride: str | None, padding: str | None, dilation: str | None, padding_mode: str | None) -> tuple[Any, float, dict[str, Any], Any, str]:
    """Kernel, bias, conv parameters and the input the kernel sees (parsing and lookups only)."""
    from convlens.errors import ConfigError

    if (kernel_text is None) == (filter_spec is None):
        raise ConfigError("choose one kernel: --kernel NAME|ROWS (e.g. sobel_x) or --filter LAYER:CHANNEL with a RUN")
    params: dict[str, Any] = {}
    if filter_spec is not None:
        if handle is None:
            raise ConfigError("--filter needs a model: give a run directory (RUN) or --model")
        from convlens.inspect.receptive import conv_filter, layer_input

        f = conv_filter(handle.model, filter_spec)
        params = {"stride": f.stride, "padding": f.padding, "dilation": f.dilation, "padding_mode": f.padding_mode}
        layer_x = layer_input(handle.model, f.layer, x)
        weight, bias, name = f.weight, f.bias, f.label
    else:
        name, weight = _kernel_from(str(kernel_text))
        bias, layer_x = 0.0, x
        if x.shape[0] > 1:
            import numpy as np

            weight = np.broadcast_to(weight / x.shape[0], (x.shape[0], *weight.shape)).copy()
    for key, raw in (("stride", stride), ("padding", padding), ("dilation", dilation)):
        if raw is not None:
            params[key] = _number(raw, key)
    if padding_mode is not None:
        params["padding_mode"] = padding_mode
    return weight, bias, params, layer_x, name


@conv.command()
@_input_options
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
@out_option()
def explain(digit: str | None, nth: int, split: str, index: int | None, image: Path | None, matrix: str | None,
            kernel_text: str | None, filter_spec: str | None, run: Path | None, spec: str | None,
            weights: Path | None, dataset: str, input_shape: str | None, stride: str | None, padding: str | None, dilation: str | None,
            padding_mode: str | None, flip: bool, bias: float | None, at: str | None, figure: bool, gif: bool,
            max_frames: int, palette: str, data_dir: Path | None, out: Path | None) -> None:
    """How one output value is made: the window on the padded input, the products, their
    sum plus the bias.

    \b
    Examples:
      convlens conv explain --matrix "1,2,3;4,5,6;7,8,9" --kernel "1,0;0,-1" --padding 1 --at 0,0
      convlens conv explain --digit 7 --kernel sobel_x --padding 1 --figure --gif
      convlens conv explain convlens-demo/run --digit 3 --filter conv1:5 --figure
    """
    from convlens.conv import explain as explain_value
    from convlens.viz.conv import explanation_figure, explanation_gif, explanation_table
    from convlens.viz.figure import save

    handle = _handle(run, spec, weights, dataset, input_shape)
    x, input_label = _load_input(handle, digit=digit, index=index, image=image, nth=nth, split=split, matrix=matrix,
                                 dataset=dataset, data_dir=data_dir, normalised=filter_spec is not None)
    weight, b, params, layer_x, name = _prepare(handle, kernel_text, filter_spec, x, stride, padding, dilation, padding_mode)
    e = explain_value(layer_x, weight, _position(at), bias=b if bias is None else bias, flip=flip, **params)
    con = console()
    con.print(f"[dim]{input_label} ⋆ {name}[/]")
    con.print(explanation_table(e))
    label = f"{input_label} ⋆ {name}"
    stem = f"conv-explain-{e.position[0]}-{e.position[1]}"
    if figure:
        fig = explanation_figure(e, palette=palette, label=label)
        print_written(save(fig, _out_dir(handle, out), stem), "figure")
        click.echo(fig.caption)
    if gif:
        anim = explanation_gif(e, palette=palette, max_frames=max_frames, label=label)
        paths = anim.save(_out_dir(handle, out), f"{stem}-slide")
        con.print(f"animation: [bold]{paths['gif']}[/] ({anim.frames} frames, + .json)")
        click.echo(anim.caption)


# ---------------------------------------------------------------------- apply
@conv.command()
@_input_options
@click.option("--kernel", "kernel_texts", multiple=True, metavar="NAME|ROWS",
              help="A classic kernel or a matrix (repeatable).")
@click.option("--filter", "filter_specs", multiple=True, metavar="LAYER:CHANNEL",
              help="A learned filter of RUN whose layer reads the image, e.g. conv1:3 (repeatable).")
@click.option("--list", "list_only", is_flag=True, help="List the classic kernels and exit.")
@model_source
@_geometry_options("same")
@palette_option
@data_dir_option
@out_option()
def apply(digit: str | None, nth: int, split: str, index: int | None, image: Path | None, matrix: str | None,
          kernel_texts: tuple[str, ...], filter_specs: tuple[str, ...], list_only: bool, run: Path | None,
          spec: str | None, weights: Path | None, dataset: str, input_shape: str | None, stride: str | None, padding: str | None,
          dilation: str | None, padding_mode: str | None, flip: bool, palette: str, data_dir: Path | None,
          out: Path | None) -> None:
    """Classic kernels and learned filters applied to an image, side by side.

    \b
    Examples:
      convlens conv apply --list
      convlens conv apply --digit 7 --kernel sobel_x --kernel sobel_y --kernel gaussian
      convlens conv apply convlens-demo/run --digit 7 --kernel sobel_x --filter conv1:0 --filter conv1:5
    """
    from convlens.conv import KERNELS
    from convlens.errors import ConfigError
    from convlens.viz.conv import kernel_figure
    from convlens.viz.figure import save

    if list_only:
        con = console()
        for name, info in KERNELS.items():
            con.print(f"[bold]{name:10s}[/] {info.description}")
        return
    if not kernel_texts and not filter_specs:
        raise ConfigError("give at least one --kernel NAME (see --list) or --filter LAYER:CHANNEL")
    handle = _handle(run, spec, weights, dataset, input_shape)
    if filter_specs and handle is None:
        raise ConfigError("--filter needs a model: give a run directory (RUN) or --model")
    x, input_label = _load_input(handle, digit=digit, index=index, image=image, nth=nth, split=split, matrix=matrix,
                                 dataset=dataset, data_dir=data_dir, normalised=bool(filter_specs))
    entries: list[tuple[str, Any, float]] = [(*_kernel_from(t), 0.0) for t in kernel_texts]
    if filter_specs:
        from convlens.inspect.receptive import conv_filter

        for fs in filter_specs:
            f = conv_filter(handle.model, fs)
            if f.weight.shape[0] != x.shape[0]:
                raise ConfigError(
                    f"{fs}: {f.layer} reads {f.weight.shape[0]} channels, not the image; "
                    f"use `convlens conv explain --filter {fs}` or `convlens maps` for deeper layers"
                )
            entries.append((f.label, f.weight, f.bias))
    params: dict[str, Any] = {"padding": _number(padding, "padding"), "padding_mode": padding_mode or "zeros", "flip": flip}
    for key, raw in (("stride", stride), ("dilation", dilation)):
        if raw is not None:
            params[key] = _number(raw, key)
    fig = kernel_figure(x, entries, palette=palette, label=input_label, **params)
    names = "-".join(e[0].replace(":", "_") for e in entries)[:60]
    print_written(save(fig, _out_dir(handle, out), f"conv-apply-{names}"), "kernels")
    click.echo(fig.caption)


# ---------------------------------------------------------------------- panel
@conv.command()
@_input_options
@click.option("--kernel", "kernel_text", default=None, metavar="NAME|ROWS", help="A classic kernel or a matrix.")
@click.option("--filter", "filter_spec", default=None, metavar="LAYER:CHANNEL", help="A learned filter of RUN.")
@model_source
@click.option("--setting", "settings", multiple=True, metavar="PARAMS",
              help="One setting such as s=2,p=1,d=1 (repeatable) [default: six instructive settings].")
@palette_option
@data_dir_option
@out_option()
def panel(digit: str | None, nth: int, split: str, index: int | None, image: Path | None, matrix: str | None,
          kernel_text: str | None, filter_spec: str | None, run: Path | None, spec: str | None,
          weights: Path | None, dataset: str, input_shape: str | None, settings: tuple[str, ...], palette: str, data_dir: Path | None, out: Path | None) -> None:
    """One input and one kernel under several stride/padding/dilation settings, each map
    at its true size.

    \b
    Examples:
      convlens conv panel --digit 7 --kernel sobel_x
      convlens conv panel --digit 7 --kernel gaussian --setting s=1,p=2 --setting s=2,p=2 --setting d=2
    """
    from convlens.conv import parse_params
    from convlens.errors import ConfigError
    from convlens.viz.conv import DEFAULT_SETTINGS, hyperparameter_panel
    from convlens.viz.figure import save

    handle = _handle(run, spec, weights, dataset, input_shape)
    x, input_label = _load_input(handle, digit=digit, index=index, image=image, nth=nth, split=split, matrix=matrix,
                                 dataset=dataset, data_dir=data_dir, normalised=filter_spec is not None)
    weight, b, _, layer_x, name = _prepare(handle, kernel_text, filter_spec, x, None, None, None, None)
    parsed = [parse_params(s) for s in settings] if settings else list(DEFAULT_SETTINGS)
    for s in parsed:
        bad = set(s) - {"stride", "padding", "dilation", "padding_mode"}
        if bad:
            raise ConfigError(f"--setting: only s, p, d and mode apply here, not {', '.join(sorted(bad))}")
    fig = hyperparameter_panel(layer_x, weight, parsed, bias=b, palette=palette, label=f"{input_label} ⋆ {name}")
    print_written(save(fig, _out_dir(handle, out), f"conv-panel-{name.replace(':', '_')}"), "panel")
    click.echo(fig.caption)
