"""Commands of feature visualisation: featvis, evolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from convlens.cli._app import app
from convlens.cli._common import (
    data_dir_option,
    device_option,
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


@app.command()
@model_source
@click.option("--layer", default="conv2", show_default=True, help="Any layer whose output has channels.")
@click.option("--channels", default=None, metavar="LIST",
              help="Only these channels, e.g. 0-7,12 [default: all; a figure draws at most 64].")
@click.option("--steps", type=int, default=256, show_default=True, help="Optimisation steps (Adam).")
@click.option("--param", type=click.Choice(["fourier", "pixels"]), default="fourier", show_default=True,
              help="Optimise the image's spectrum (decorrelated colour with 3 channels) or its pixels.")
@click.option("--k", type=int, default=6, show_default=True, help="Natural top-k examples shown beside each.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Where the natural examples come from.")
@click.option("--seed", type=int, default=0, show_default=True)
@palette_option
@data_dir_option
@device_option
@out_option()
def featvis(run: Path | None, spec: str | None, weights: Path | None, dataset: str, input_shape: str | None,
            layer: str, channels: str | None, steps: int, param: Literal["fourier", "pixels"], k: int,
            split: Literal["test", "train"], seed: int, palette: PaletteName, data_dir: Path | None, device: str,
            out: Path | None, force: bool) -> None:
    """What each channel of a layer of RUN (or --model) responds to most: an input
    optimised to excite it, beside its natural top-k examples, with reliability scores."""
    from convlens import views
    from convlens.viz.figure import figure_stem, save

    h = open_source(run, spec, weights, dataset, input_shape, device)
    picked = parse_channels(channels)
    stem = figure_stem("featvis", layer, f"ch{channels}" if channels else None, param if param != "fourier" else None,
                       f"seed{seed}" if seed else None, "gray" if palette == "gray" else None)
    dest = figures_dest(h, out, [stem], force, extra=("scores.json",))
    view = views.featvis_view(h, layer, picked, steps=steps, k=k, split=split, seed=seed, param=param,
                              data_dir=data_dir, palette=palette)
    # the figure listed by stem, as compare.json and diagnosis.json list theirs (the report and app read it)
    listed = {**view.to_dict(), "figures": {stem: {"caption": view.figure.caption, "alt": view.figure.alt}}}
    scores = (json.dumps(listed, indent=2) + "\n").encode()
    print_written(save(view.figure, dest, stem, overwrite=force, extra={"scores.json": scores}),
                  "feature visualisation")
    click.echo(view.figure.caption)


@app.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--frames", type=click.IntRange(min=2), default=40, show_default=True,
              help="At most this many evenly spaced steps (the first and the last always).")
@palette_option
@out_option()
def evolution(run: Path, frames: int, palette: PaletteName, out: Path | None, force: bool) -> None:
    """An animation (GIF) of RUN's first conv layer from step 0 to the end, beside the
    number of edge-like filters and the weight change over the steps."""
    from convlens import views
    from convlens.models.handle import ModelHandle
    from convlens.models.run import load_run
    from convlens.viz.figure import figure_stem, save

    r = load_run(run)
    h = ModelHandle.from_run(r)
    stem = figure_stem("evolution", r.snapshot_layer or "conv1", "gray" if palette == "gray" else None)
    dest = figures_dest(h, out, [stem], force, extra=("animation.gif", "kinds.json"))
    view = views.evolution_view(r, max_frames=frames, palette=palette)
    kinds = (json.dumps(view.to_dict(), indent=2) + "\n").encode()
    paths = save(view.figure, dest, stem, overwrite=force, extra={"animation.gif": view.gif, "kinds.json": kinds})
    click.echo(f"animation: {paths['animation.gif']} ({len(view.steps)} frames, from the run's {view.source})")
    print_written(paths, "last frame")
    first, last = view.kinds[0], view.kinds[-1]
    click.echo(f"step {view.steps[0]}: {first.summary()}")
    click.echo(f"step {view.steps[-1]}: {last.summary()}")
