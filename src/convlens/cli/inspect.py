"""Commands of the dataset passes: stats, topk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from convlens.cli._app import app
from convlens.cli._common import (
    console,
    data_dir_option,
    device_option,
    engine_options,
    figures_dest,
    model_source,
    open_source,
    out_option,
    palette_option,
    parse_channels,
    print_written,
)

if TYPE_CHECKING:
    from convlens.viz.palettes import PaletteName


_split = click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
                      help="Which split of the model's dataset to stream.")
_batch = click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)


@app.command()
@model_source
@click.option("--layer", "layer_names", multiple=True, metavar="NAME",
              help="A layer to measure (repeatable) [default: every conv layer].")
@_split
@_batch
@click.option("--threshold", type=float, default=0.0, show_default=True,
              help="A channel fires where its activation is above this.")
@click.option("--rare-below", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Flag channels that fire on fewer than this share of inputs.")
@click.option("--dump", type=click.Path(path_type=Path), default=None,
              help="Also write the activations to this directory (safetensors shards).")
@palette_option
@data_dir_option
@device_option
@out_option()
@engine_options
def stats(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
          layer_names: tuple[str, ...], split: Literal["test", "train"], batch_size: int, threshold: float,
          rare_below: float, dump: Path | None, palette: PaletteName, data_dir: Path | None, device: str,
          out: Path | None, force: bool, engine: str = "inprocess", address: str | None = None) -> None:
    """Per-channel statistics of layers of RUN (or --model) over a dataset; dead filters flagged.

    With --dump the activations go to a directory too; an earlier dump there is replaced
    only with --force."""
    from convlens import views
    from convlens.inspect import channel_stats, layers
    from convlens.viz.figure import figure_stem, save
    from convlens.viz.inspect import stats_figure

    h = open_source(run, spec, weights, dataset, input_shape, device)
    names = list(layer_names) or layers(h.model, h.input_shape).convs
    gray = "gray" if palette == "gray" else None
    dest = figures_dest(h, out, [figure_stem("stats", n, split, gray) for n in names], force)
    ds = views.dataset_for(h, split, data_dir=data_dir)
    report = channel_stats(h, ds, names, batch_size=batch_size, threshold=threshold,
                           rare_below=rare_below, dump_to=dump, progress=None, dump_overwrite=force,
                           engine=engine, address=address)
    con = console()
    for key, layer_stats in report.items():
        con.print(layer_stats)
        fig = stats_figure(layer_stats, palette=palette)
        print_written(save(fig, dest, figure_stem("stats", key, split, gray), overwrite=force), "statistics")
        click.echo(fig.caption)
    if report.dump_dir is not None:
        con.print(f"activations: [bold]{report.dump_dir}[/]")


@app.command()
@model_source
@click.option("--layer", default="conv2", show_default=True, help="The layer whose channels to explain.")
@click.option("--k", "k", type=click.IntRange(min=1), default=9, show_default=True, help="Inputs per channel.")
@click.option("--channels", default=None, metavar="LIST",
              help="Channels to compute and show, e.g. 0-7,12 [default: all computed, the first 16 shown].")
@_split
@_batch
@palette_option
@data_dir_option
@device_option
@out_option()
@engine_options
def topk(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
         layer: str, k: int, channels: str | None, split: Literal["test", "train"], batch_size: int,
         palette: PaletteName, data_dir: Path | None, device: str, out: Path | None, force: bool,
         engine: str = "inprocess", address: str | None = None) -> None:
    """The k inputs that excite each channel of --layer most, with their receptive-field crops."""
    from rich.table import Table

    from convlens import views
    from convlens.viz.figure import figure_stem, save

    h = open_source(run, spec, weights, dataset, input_shape, device)
    chosen = parse_channels(channels)

    def stem(key: str) -> str:
        return figure_stem("topk", key, split, f"k{k}", f"ch{channels}" if channels else None,
                           "gray" if palette == "gray" else None)

    dest = figures_dest(h, out, [stem(layer)], force)
    view = views.topk(h, layer, k=k, channels=chosen, split=split, batch_size=batch_size, data_dir=data_dir,
                      palette=palette, engine=engine, address=address)
    ds, con = view.data, console()
    for key, result in view.report.items():
        table = Table(title=f"{key}: top {result.k} of {result.n_inputs:,} {split} inputs per channel "
                            f"(receptive field {result.rf[0]}×{result.rf[1]})")
        table.add_column("ch", justify="right")
        table.add_column("peak activations", justify="left")
        table.add_column("inputs (index:label)", justify="left")
        for row, ch in enumerate(result.channels):
            vals = " ".join(f"{float(v):.3g}" for v in result.values[row])
            idx = " ".join(f"{int(i)}:{ds.classes[int(ds.labels[int(i)])]}" for i in result.indices[row])
            table.add_row(str(ch), vals, idx)
        con.print(table)
        fig = view.figures[key]
        print_written(save(fig, dest, stem(key), overwrite=force), "top-k gallery")
        click.echo(fig.caption)
